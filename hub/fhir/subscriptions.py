"""FHIR topic-based subscriptions (Subscriptions R5 Backport IG, in the hub's
FHIR version R4B): the hub's SubscriptionTopics, reading a Subscription
resource, and the `subscription-notification` Bundles it sends.

R4B has SubscriptionTopic, SubscriptionStatus and the `subscription-notification`
Bundle type natively; its Subscription is the R4 one, so the topic goes in
`criteria`, the payload content (`id-only` / `full-resource`) and the
heartbeat period in the backport extensions. One topic per S117 event type;
the subscriber's organisation is implicit (its API key), and what it receives
is limited by its data-sharing agreement like every other channel.

Notifications: `SubscriptionStatus` first (status, type `handshake` /
`heartbeat` / `event-notification` / `query-status` / `query-event`,
`eventsSinceSubscriptionStart`, one `notificationEvent` per event with its
`eventNumber` and the S117 message as `focus`), then, for `full-resource`,
the S117 FHIR message Bundle itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hub.ids import uuid4
from hub.domain.model import EventType
from hub.fhir.namespaces import HUB_FHIR_BASE

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
PAYLOAD_CONTENT_EXT = f"{BACKPORT}/backport-payload-content"
HEARTBEAT_EXT = f"{BACKPORT}/backport-heartbeat-period"
TIMEOUT_EXT = f"{BACKPORT}/backport-timeout"
SUBSCRIPTION_PROFILE = f"{BACKPORT}/backport-subscription"
NOTIFICATION_PROFILE = f"{BACKPORT}/backport-subscription-notification"
TOPIC_BASE = f"{HUB_FHIR_BASE}/SubscriptionTopic"  # under the default canonical base (tests, documents)
CONTENTS = ("id-only", "full-resource")
MAX_HEARTBEAT_SECONDS = 24 * 3600


def topic_url(event_type: str, fhir_base: str = HUB_FHIR_BASE) -> str:
    """A topic's canonical URL under the hub's FHIR base (`Settings.namespaces().fhir_base`: the
    operator's `S117_CANONICAL_BASE`), as every URL the hub mints."""
    return f"{fhir_base}/SubscriptionTopic/{event_type}"


def topics(fhir_base: str = HUB_FHIR_BASE) -> list[dict[str, Any]]:
    """The hub's SubscriptionTopic resources, one per S117 event type."""
    out = []
    for e in EventType:
        out.append({
            "resourceType": "SubscriptionTopic", "id": e.value, "url": topic_url(e.value, fhir_base),
            "title": f"S117 {e.value.removeprefix('s117-').replace('-', ' ')}", "status": "active",
            "description": f"An S117 event message ({e.value}) for an organisation that must hear of it, "
                           "within its data-sharing agreement. The focus is the hub's FHIR message Bundle.",
            "eventTrigger": [{"description": f"The S117 rules derive a {e.value} event",
                              "event": {"coding": [{"system": f"{fhir_base}/CodeSystem/s117-event",
                                                    "code": e.value}]},
                              "resource": "http://hl7.org/fhir/StructureDefinition/Bundle"}],
            "notificationShape": [{"resource": "Bundle"}],
        })
    return out


@dataclass(frozen=True)
class SubscriptionRequest:
    event_type: str
    endpoint: str
    content: str
    heartbeat_seconds: int | None
    reason: str


class SubscriptionInvalid(ValueError):
    def __init__(self, issues: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {why}" for where, why in issues))
        self.issues = issues


def _ext(element: dict[str, Any] | None, url: str) -> Any:
    for ext in (element or {}).get("extension", []) or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


def read_subscription(resource: Any, fhir_base: str = HUB_FHIR_BASE) -> SubscriptionRequest:
    """A Subscription resource as the hub accepts it, or SubscriptionInvalid
    naming each FHIR location and why."""
    issues: list[tuple[str, str]] = []
    if not isinstance(resource, dict) or resource.get("resourceType") != "Subscription":
        raise SubscriptionInvalid([("Subscription", "must be a FHIR Subscription resource")])
    from fhir.resources.R4B.subscription import Subscription
    from pydantic import ValidationError

    try:
        Subscription.model_validate(resource)
    except ValidationError as exc:
        raise SubscriptionInvalid([("Subscription." + ".".join(str(p) for p in err["loc"]), err["msg"])
                                   for err in exc.errors(include_url=False)]) from exc
    criteria = resource.get("criteria") or ""
    topic_base = f"{fhir_base}/SubscriptionTopic/"
    event_type = criteria.removeprefix(topic_base) if criteria.startswith(topic_base) else None
    if event_type not in {e.value for e in EventType}:
        issues.append(("Subscription.criteria", f"must be one of the hub's topics ({topic_base}<event type>)"))
    channel = resource.get("channel") or {}
    if channel.get("type") != "rest-hook":
        issues.append(("Subscription.channel.type", "only rest-hook is offered"))
    endpoint = channel.get("endpoint") or ""
    if not endpoint.startswith(("https://", "http://")):
        issues.append(("Subscription.channel.endpoint", "must be an http(s) URL"))
    if channel.get("payload") not in (None, "application/fhir+json"):
        issues.append(("Subscription.channel.payload", "must be application/fhir+json"))
    content = _ext(channel.get("_payload"), PAYLOAD_CONTENT_EXT) or "id-only"
    if content not in CONTENTS:
        issues.append(("Subscription.channel.payload.extension(backport-payload-content)",
                       "must be id-only or full-resource"))
    heartbeat = _ext(channel, HEARTBEAT_EXT)
    # A whole JSON number: true is an int in Python (it was taken as a heartbeat every second).
    if heartbeat is not None and (isinstance(heartbeat, bool) or not isinstance(heartbeat, int)
                                  or not 1 <= heartbeat <= MAX_HEARTBEAT_SECONDS):
        issues.append(("Subscription.channel.extension(backport-heartbeat-period)",
                       f"must be 1 to {MAX_HEARTBEAT_SECONDS} seconds"))
    if resource.get("end"):
        issues.append(("Subscription.end", "not supported: delete the subscription to end it"))
    if channel.get("header"):
        issues.append(("Subscription.channel.header", "not supported: notifications are signed (S117-Signature)"))
    if issues:
        raise SubscriptionInvalid(issues)
    return SubscriptionRequest(event_type=str(event_type), endpoint=endpoint, content=content,
                               heartbeat_seconds=heartbeat, reason=str(resource.get("reason") or ""))


def subscription_resource(*, subscription_id: str, hub_endpoint: str, fhir: dict[str, Any], active: bool,
                          fhir_base: str = HUB_FHIR_BASE) -> dict:
    """The stored subscription as a FHIR Subscription (backport profile)."""
    channel: dict[str, Any] = {
        "type": "rest-hook", "endpoint": fhir["endpoint"], "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": PAYLOAD_CONTENT_EXT, "valueCode": fhir["content"]}]},
    }
    if fhir.get("heartbeat_seconds"):
        channel["extension"] = [{"url": HEARTBEAT_EXT, "valueUnsignedInt": fhir["heartbeat_seconds"]}]
    status = fhir.get("status", "requested") if active else "off"
    return {"resourceType": "Subscription", "id": subscription_id, "meta": {"profile": [SUBSCRIPTION_PROFILE]},
            "status": status, "reason": fhir.get("reason") or "S117 aftercare events",
            "criteria": topic_url(fhir["event_type"], fhir_base), "channel": channel,
            **({"error": fhir["error"]} if fhir.get("error") and status == "error" else {})}


@dataclass(frozen=True)
class Event:
    number: int
    message: bytes | None  # the S117 FHIR message Bundle, JSON; None: not needed (id-only), or purged by retention
    message_id: str
    at: datetime


def notification(*, kind: str, subscription_id: str, hub_endpoint: str, fhir: dict[str, Any], since_start: int,
                 events: list[Event] = (), content: str | None = None, status: str = "active",
                 bundle_type: str = "subscription-notification", fhir_base: str = HUB_FHIR_BASE) -> dict[str, Any]:
    """A notification Bundle (`kind`: handshake, heartbeat, event-notification,
    query-status, query-event). Event messages are spliced in as parsed JSON."""
    import orjson

    content = content or fhir["content"]
    status_id = uuid4()
    notification_events = []
    entries: list[dict[str, Any]] = []
    for e in events:
        full_url = f"urn:uuid:{e.message_id}"
        # full-resource: the message in the Bundle, referred to by its fullUrl; id-only, or a message the
        # retention purge has emptied (nothing left to give): its number and id only.
        full = content == "full-resource" and e.message is not None
        notification_events.append({"eventNumber": str(e.number), "timestamp": _instant(e.at),
                                    "focus": {"reference": full_url if full else f"Bundle/{e.message_id}"}})
        if full:
            entries.append({"fullUrl": full_url, "resource": orjson.loads(e.message)})
    subscription_status = {
        "resourceType": "SubscriptionStatus", "id": status_id, "status": status, "type": kind,
        "eventsSinceSubscriptionStart": str(since_start),
        "subscription": {"reference": f"{hub_endpoint.rstrip('/')}/Subscription/{subscription_id}"},
        "topic": topic_url(fhir["event_type"], fhir_base),
        **({"notificationEvent": notification_events} if notification_events else {}),
    }
    return {"resourceType": "Bundle", "id": uuid4(), "meta": {"profile": [NOTIFICATION_PROFILE]},
            "type": bundle_type, "timestamp": _instant(datetime.now(UTC)),
            "entry": [{"fullUrl": f"urn:uuid:{status_id}", "resource": subscription_status}, *entries]}


def _instant(dt: datetime) -> str:
    dt = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
