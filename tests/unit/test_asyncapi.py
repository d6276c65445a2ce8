"""/asyncapi.json is a valid AsyncAPI 3.0 document (checked against the
official schema, tests/fixtures/asyncapi/PROVENANCE.md), and its outbound
message headers are exactly those hub.delivery.kafka_topic writes. The same
document is checked against records read back from a real broker in
tests/contract/test_kafka_topic_channel.py."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import orjson

from hub.delivery.kafka_topic import record_headers
from hub.fhir.namespaces import HUB_PERSON_ID_SYSTEM

SCHEMA = Path(__file__).resolve().parent.parent / "fixtures" / "asyncapi" / "asyncapi-3.0.0.schema.json"


def test_the_schema_copy_is_the_one_recorded():
    recorded = (SCHEMA.parent / "PROVENANCE.md").read_text()
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() in recorded


async def test_asyncapi_document_is_valid_asyncapi_3(app_hub):
    r = await app_hub.http.get("/asyncapi.json")
    assert r.status_code == 200
    doc = r.json()
    schema = json.loads(SCHEMA.read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
    assert errors == [], [e.message[:200] for e in errors[:5]]
    # A document that breaks the spec is caught: the check has teeth.
    broken = {**doc, "channels": {"x": {"address": 5}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


async def test_documented_headers_are_the_ones_written(app_hub):
    doc = (await app_hub.http.get("/asyncapi.json")).json()
    headers_schema = doc["components"]["messages"]["S117EventMessage"]["headers"]
    person = str(uuid.uuid4())
    body = orjson.dumps({"resourceType": "Bundle", "type": "message", "timestamp": "2026-11-30T12:00:00.000Z",
                         "entry": [{"resource": {"resourceType": "Patient", "identifier": [
                             {"system": HUB_PERSON_ID_SYSTEM, "value": person}]}}]})
    row = SimpleNamespace(event_id=str(uuid.uuid4()), message_id=str(uuid.uuid4()),
                          event_type="s117-entitlement-started", correlation_id="c-1", event_number=7,
                          created_at=datetime.now(UTC))
    for epoch in ("0", str(uuid.uuid4())):  # never restored; restored from a backup (hub/store/restores.py)
        written = {k: v.decode() for k, v in record_headers(row, body, "https://hub.example/fhir", epoch)}
        assert set(written) == set(headers_schema["properties"]) == set(headers_schema["required"])
        jsonschema.validate(written, headers_schema, format_checker=jsonschema.FormatChecker())
        assert written["event_number"] == "7" and written["ce_time"] == "2026-11-30T12:00:00.000Z"
        assert written["restore_epoch"] == epoch


def test_each_cluster_says_how_it_is_reached_and_the_document_stays_valid():
    """A subscriber reading its `s117.out.<org>` topic must know whether the cluster wants TLS and which
    credential: each server says `kafka-secure` over TLS and names the security schemes its clients use
    (the SASL mechanism, a client certificate), never a user name, password or file."""
    from hub.asyncapi import asyncapi_document
    from hub.bus.kafka_security import KafkaSecurity

    schema = json.loads(SCHEMA.read_text())
    plain = asyncapi_document(version="1", kafka_servers="127.0.0.1:9092", outbound_servers="127.0.0.1:9092")
    assert {s["protocol"] for s in plain["servers"].values()} == {"kafka"}
    assert "securitySchemes" not in plain["components"]
    assert not any("security" in s for s in plain["servers"].values())

    bus = KafkaSecurity(protocol="SASL_SSL", ca_file=Path("/etc/ca.pem"), sasl_mechanism="SCRAM-SHA-512",
                        sasl_username="hub-user", sasl_password="s3cret-pw")
    outbound = KafkaSecurity(prefix="S117_KAFKA_OUTBOUND_", protocol="SSL", ca_file=Path("/etc/ca.pem"),
                             cert_file=Path("/etc/hub.pem"), key_file=Path("/etc/hub.key"))
    doc = asyncapi_document(version="1", kafka_servers="kafka-1.hub.nhs.uk:9093,kafka-2.hub.nhs.uk:9093",
                            outbound_servers="out.hub.nhs.uk:9093", bus_security=bus, outbound_security=outbound)
    assert list(jsonschema.Draft7Validator(schema).iter_errors(doc)) == []
    assert doc["servers"]["bus"]["protocol"] == doc["servers"]["outbound"]["protocol"] == "kafka-secure"
    assert doc["servers"]["bus"]["security"] == [{"$ref": "#/components/securitySchemes/saslScramSha512"}]
    assert doc["servers"]["outbound"]["security"] == [{"$ref": "#/components/securitySchemes/mutualTls"}]
    assert doc["components"]["securitySchemes"] == {
        "mutualTls": {"type": "X509", "description": "A client certificate the brokers' CA signed (mutual TLS)"},
        "saslScramSha512": {"type": "scramSha512", "description": "SASL/SCRAM-SHA-512: a user name and password"}}
    text = json.dumps(doc)
    assert "hub-user" not in text and "s3cret-pw" not in text and "/etc/" not in text
    # Every scheme a server names is defined (the schema does not follow the references).
    assert all(ref["$ref"].rsplit("/", 1)[1] in doc["components"]["securitySchemes"]
               for server in doc["servers"].values() for ref in server["security"])


async def test_the_served_document_carries_the_hubs_own_cluster_security(tmp_path):
    """GET /asyncapi.json reads the hub's settings: a SASL_SSL bus is documented as such."""
    import httpx

    from hub.api.app import create_app
    from tests.conftest import test_settings

    from tests.tls_certs import CertAuthority

    ca = CertAuthority.make(tmp_path).pem
    settings = test_settings(tmp_path, bus_url="kafka://127.0.0.1:9092",
                             kafka_security_protocol="SASL_SSL", kafka_ssl_ca_file=ca,
                             kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u", kafka_sasl_password="p")
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
        doc = (await http.get("/asyncapi.json")).json()
    assert doc["servers"]["bus"]["protocol"] == "kafka-secure"
    assert doc["servers"]["bus"]["security"] == [{"$ref": "#/components/securitySchemes/saslPlain"}]
    assert doc["components"]["securitySchemes"]["saslPlain"]["type"] == "plain"
