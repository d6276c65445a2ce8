"""The AsyncAPI 3.0 document of every Kafka topic the hub writes, served at
GET /asyncapi.json.

* `s117.out.{orgCode}`: a council's or ICB's `kafka` subscription
  (hub.delivery.kafka_topic): FHIR R4 message Bundles, key = hub person id,
  CloudEvents 1.0 binary-mode headers plus the hub's own (the restore epoch
  among them).
* `s117.events`: the hub's internal event log in Kafka mode (hub.bus.kafka
  KafkaRelay): the domain event, the register change and the S117 status
  (without its history: hub/bus/payload.py) as JSON, key = hub person id.
  Only the hub consumes it; listed so operators know what is on their cluster.

tests/contract/test_kafka_topic_channel.py reads records back from a real
broker and validates their headers, key and value against this document, so
the document cannot drift from what the hub produces.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hub.bus.kafka_security import KafkaSecurity
from hub.bus.port import EVENTS_TOPIC
from hub.delivery.kafka_topic import CE_TYPE_PREFIX, CONTENT_TYPE
from hub.domain.model import EventType

_UUID = {"type": "string", "format": "uuid"}
_TEXT = {"type": "string"}
EVENT_TYPES = [e.value for e in EventType]

OUTBOUND_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "Kafka record headers, UTF-8 strings. CloudEvents 1.0 Kafka protocol binding, binary "
                   "content mode: the ce_ headers are the event's attributes, the record value its data.",
    "properties": {
        "event_id": {**_UUID, "description": "The hub's event id (the same for every recipient); de-duplicate by it"},
        "message_id": {**_UUID, "description": "The FHIR MessageHeader id (event id and recipient)"},
        "event_type": {"type": "string", "enum": EVENT_TYPES},
        "correlation_id": {**_TEXT, "description": "Trace id of the register change that caused the event"},
        "event_number": {"type": "string", "pattern": "^[1-9][0-9]*$",
                         "description": "The subscription's gap-free, strictly increasing event number: a "
                                        "jump means missed messages; fetch them with GET "
                                        "/v1/subscriptions/{id}/events?from=N&to=M"},
        "ce_specversion": {"const": "1.0"},
        "ce_id": {**_UUID, "description": "CloudEvents id: the message id"},
        "ce_type": {"type": "string", "enum": [CE_TYPE_PREFIX + e for e in EVENT_TYPES]},
        "ce_source": {"type": "string", "minLength": 1, "description": "The hub's endpoint (S117_HUB_ENDPOINT)"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"anyOf": [_UUID, {"const": ""}],
                       "description": "The hub person id (never an NHS number); empty for an event about a "
                                      "body itself (s117-reconciliation-drift: counts, no person)"},
        "content-type": {"const": CONTENT_TYPE},
        "restore_epoch": {"type": "string", "minLength": 1,
                          "description": "\"0\" until the hub's store is restored from a backup, then that "
                                         "restore's id (compare for equality only). A new value: what the hub "
                                         "recorded after the backup is gone from it (its sources send it "
                                         "again, as new events), the event numbers given after the backup "
                                         "are skipped, never given again, and messages may come again with "
                                         "their event_id: reconcile (README, Backup and restore)"},
    },
    "required": ["event_id", "message_id", "event_type", "correlation_id", "event_number", "ce_specversion",
                 "ce_id", "ce_type", "ce_source", "ce_time", "ce_subject", "content-type", "restore_epoch"],
    "additionalProperties": False,
}

FHIR_MESSAGE_BUNDLE: dict[str, Any] = {
    "type": "object",
    "description": "A FHIR R4 (UK Core) message Bundle: MessageHeader first, then the focus resources; "
                   "fields limited by the recipient's data-sharing agreement.",
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"const": "message"},
        "id": _TEXT,
        "timestamp": {"type": "string", "format": "date-time"},
        "entry": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["resource"]}},
    },
    "required": ["resourceType", "type", "timestamp", "entry"],
}

INTERNAL_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event_id": _UUID,
        "event_type": {"type": "string", "enum": EVENT_TYPES},
        "correlation_id": _TEXT,
        "source": {**_TEXT, "description": "The API client (or the review scheduler) that caused the event"},
        "later_events": {**_TEXT, "description": "The events of the same register change published after this "
                         "one: '<event type>=<bodies it tells besides the responsible ones, comma-separated>', "
                         "joined by ';'"},
    },
    "required": ["event_id", "event_type", "correlation_id"],
}

INTERNAL_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "properties": {"event": {"type": "object"}, "change": {"type": "object"},
                   "status": {"type": "object", "description": "The person's S117 status after the change, "
                              "without its history (the register's changes are that)"}},
    "required": ["event", "change", "status"],
}

PERSON_KEY = {**_UUID, "description": "The hub person id: one person's records stay on one partition, in order "
                                      "(an event about a body itself, s117-reconciliation-drift: its message id)"}


# How a client proves who it is to each cluster (S117_KAFKA_SASL_MECHANISM, a client certificate), as AsyncAPI
# 3.0's security scheme types name them; a subscriber reading its topic needs the same kind of credential.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "saslPlain": {"type": "plain", "description": "SASL/PLAIN: a user name and password, over TLS"},
    "saslScramSha256": {"type": "scramSha256", "description": "SASL/SCRAM-SHA-256: a user name and password"},
    "saslScramSha512": {"type": "scramSha512", "description": "SASL/SCRAM-SHA-512: a user name and password"},
    "mutualTls": {"type": "X509", "description": "A client certificate the brokers' CA signed (mutual TLS)"},
}
_BY_MECHANISM = {"PLAIN": "saslPlain", "SCRAM-SHA-256": "saslScramSha256", "SCRAM-SHA-512": "saslScramSha512"}
# SASL/OAUTHBEARER: AsyncAPI's `oauth2` with the client-credentials flow and the cluster's token endpoint, one
# scheme a server (the two clusters may have their own identity providers).
_OAUTH = {"bus": "saslOauthBearer", "outbound": "saslOauthBearerOutbound"}


def _oauth_scheme(security: KafkaSecurity) -> dict[str, Any]:
    """The cluster's OAUTHBEARER as an `oauth2` client-credentials scheme: its token endpoint (scheme, host,
    port and path: never a query) and the scope the hub asks for; never the client id or secret."""
    parts = urlsplit(security.oauth_token_url or "")
    scopes = (security.oauth_scope or "").split()
    return {"type": "oauth2",
            "description": "SASL/OAUTHBEARER: an access token from the token endpoint by the OAuth 2.0 "
                           "client-credentials grant (a client id and secret the identity provider issued)",
            "flows": {"clientCredentials": {"tokenUrl": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
                                            "availableScopes": {s: "asked for by the hub" for s in scopes}}},
            **({"scopes": scopes} if scopes else {})}


def _server(servers: str, description: str, security: KafkaSecurity | None,
            cluster: str = "bus") -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """One cluster as an AsyncAPI server: `kafka-secure` over TLS, and the schemes its clients authenticate
    with (none named: the cluster asks for none), with their definitions. Never a user name, password or
    file."""
    security = security or KafkaSecurity()
    server: dict[str, Any] = {"host": servers.split(",")[0], "protocol": "kafka-secure" if security.tls else "kafka",
                              "description": description}
    schemes: dict[str, dict[str, Any]] = {}
    if security.sasl and security.sasl_mechanism in _BY_MECHANISM:
        name = _BY_MECHANISM[security.sasl_mechanism]
        schemes[name] = SECURITY_SCHEMES[name]
    if security.oauth:
        schemes[_OAUTH[cluster]] = _oauth_scheme(security)
    if security.tls and security.cert_file is not None:
        schemes["mutualTls"] = SECURITY_SCHEMES["mutualTls"]
    if schemes:
        server["security"] = [{"$ref": f"#/components/securitySchemes/{name}"} for name in schemes]
    return server, schemes


def asyncapi_document(*, version: str, kafka_servers: str | None, outbound_servers: str | None,
                      bus_security: KafkaSecurity | None = None,
                      outbound_security: KafkaSecurity | None = None) -> dict[str, Any]:
    """The document; each cluster's security (hub/bus/kafka_security.py) says how its server is reached."""
    servers: dict[str, Any] = {}
    schemes: dict[str, dict[str, Any]] = {}
    if kafka_servers:
        servers["bus"], used = _server(kafka_servers, "The hub's event bus (S117_BUS_URL)", bus_security, "bus")
        schemes |= used
    if outbound_servers:
        servers["outbound"], used = _server(outbound_servers, "Where `kafka` subscriptions are published",
                                            outbound_security, "outbound")
        schemes |= used
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "S117 Hub Kafka topics",
            "version": version,
            "description": "Every topic the S117 Hub writes. Councils and ICBs read their own "
                           "`s117.out.<org code>` topic (a `kafka` subscription: POST /v1/subscriptions "
                           '{"channel": "kafka"}); delivery is at least once and in order per person.',
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": {
            "councilOutbound": {
                "address": "s117.out.{orgCode}",
                "title": "A subscriber's topic",
                "description": "The default topic of a `kafka` subscription; a subscription may name another "
                               "(s117.out.<org>.<suffix>, or a name outside s117.*) with the same messages.",
                "parameters": {"orgCode": {"description": "The subscriber's ODS / ONS code, lower case"}},
                "messages": {"s117Event": {"$ref": "#/components/messages/S117EventMessage"}},
            },
            "internalEvents": {
                "address": EVENTS_TOPIC,
                "title": "The hub's internal event log (Kafka mode)",
                "messages": {"busEvent": {"$ref": "#/components/messages/BusEvent"}},
            },
        },
        "operations": {
            "sendCouncilOutbound": {
                "action": "send", "channel": {"$ref": "#/channels/councilOutbound"},
                "summary": "One FHIR message per event the subscriber's agreement allows",
                "messages": [{"$ref": "#/channels/councilOutbound/messages/s117Event"}],
            },
            "sendInternalEvents": {
                "action": "send", "channel": {"$ref": "#/channels/internalEvents"},
                "summary": "The outbox relayed to Kafka (acks=all, idempotent producer)",
                "messages": [{"$ref": "#/channels/internalEvents/messages/busEvent"}],
            },
        },
        "components": {
            "messages": {
                "S117EventMessage": {
                    "name": "S117EventMessage", "title": "S117 event (FHIR message, CloudEvent)",
                    "contentType": CONTENT_TYPE,
                    "headers": OUTBOUND_HEADERS,
                    "payload": FHIR_MESSAGE_BUNDLE,
                    "bindings": {"kafka": {"key": PERSON_KEY, "bindingVersion": "0.5.0"}},
                },
                "BusEvent": {
                    "name": "BusEvent", "title": "Internal domain event", "contentType": "application/json",
                    "headers": INTERNAL_HEADERS,
                    "payload": INTERNAL_PAYLOAD,
                    "bindings": {"kafka": {"key": PERSON_KEY, "bindingVersion": "0.5.0"}},
                },
            },
        },
    }
    if servers:
        doc["servers"] = servers
        if schemes:
            doc["components"]["securitySchemes"] = {name: schemes[name] for name in sorted(schemes)}
    return doc
