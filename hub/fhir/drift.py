"""The `s117-reconciliation-drift` message: a FHIR R4 message Bundle telling a
body that its own s117 list has drifted from the hub's register past the
threshold in its data-sharing agreement.

The first hub message about a body rather than a person, so it carries
counts only: no Patient, no person id, no NHS number, no local id.

* MessageHeader: eventCoding `s117-reconciliation-drift` from the hub's
  s117-event CodeSystem; destination the body; focus the Basic below;
  Extension-S117-EventOccurred the day the comparison finished.
* Basic (profile S117-ReconciliationDrift): `code` the same event code,
  `subject` the body (logical reference by GSS / ODS code), `created` the
  day of the comparison, `identifier` the snapshot id, and extensions:
  S117-DriftCount per kind of difference (all six, zeros included: the open
  items of that kind), S117-DriftSummary (open total, people on the body's
  list, the list's as-of date), S117-DriftThreshold (what the agreement set)
  and S117-ReconciliationReport (the URL of GET /v1/reconciliations/{id}).

Why Basic: the message is a summary of counts about an organisation, which
no clinical resource describes. DetectedIssue and Communication are about a
patient's care (and would carry the counts only as text); MeasureReport
needs a computable Measure whose populations the validator checks against
person-level subjects. Basic with the hub's own extensions keeps every count
typed and coded (the kinds are a hub CodeSystem), and the profile makes the
receiver's validator check it like every other hub message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from hashlib import blake2b
from html import escape
from typing import Any, Final

from hub.domain.drift import DriftThreshold
from hub.domain.model import EventType, Org
from hub.domain.reconciliation import Kind
from hub.fhir.messages import EVENT_DISPLAYS, HUB_SENDER_ID, PROFILES, _org_endpoint  # one org endpoint rule
from hub.fhir.namespaces import DEFAULT_NAMESPACES, Namespaces, org_identifier_system

DRIFT_EVENT: Final = EventType.RECONCILIATION_DRIFT
def snapshot_id_system(ns: Namespaces) -> str:
    return f"{ns.fhir_base}/Id/reconciliation-snapshot"


def report_url(ns: Namespaces, snapshot_id: str) -> str:
    return f"{ns.base}/v1/reconciliations/{snapshot_id}"


@dataclass(frozen=True, slots=True)
class DriftCounts:
    """What the message says: counts and ids, nothing about any person."""

    body: Org
    snapshot_id: str
    as_of: date  # the date of the body's list
    compared_on: date
    listed: int  # people on the body's list (rows accepted)
    open_by_kind: dict[str, int]  # Kind value -> open (open + explained) items
    threshold: DriftThreshold

    @property
    def open_total(self) -> int:
        return sum(self.open_by_kind.values())


def _uuid(message_id: str, part: str) -> str:
    s = blake2b(f"{message_id}/{part}".encode(), digest_size=16).hexdigest()
    return f"{s[0:8]}-{s[8:12]}-4{s[13:16]}-{'89ab'[int(s[16], 16) & 3]}{s[17:20]}-{s[20:32]}"


def _org_ref(org: Org) -> dict[str, Any]:
    return {"identifier": {"system": org_identifier_system(org.kind), "value": org.code}, "display": org.name}


def _summary_text(counts: DriftCounts) -> str:
    limits = []
    if counts.threshold.open_items is not None:
        limits.append(f"{counts.threshold.open_items} open differences")
    if counts.threshold.percent_of_list is not None:
        limits.append(f"{counts.threshold.percent_of_list.normalize():f}% of the list")
    return (f"{counts.body.name} ({counts.body.code}): {counts.open_total} open differences between its list of "
            f"{counts.listed} people as of {counts.as_of.isoformat()} and the register, at or past the agreed "
            f"threshold ({' or '.join(limits)}). Snapshot {counts.snapshot_id}.")


def _narrative(text: str) -> dict[str, str]:
    # Counts and codes only; generated from the structured content (dom-6: a resource should have narrative).
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{escape(text)}</p></div>'}


def build_drift_message(*, counts: DriftCounts, message_id: str, sent_at: datetime, source_endpoint: str,
                        ns: Namespaces = DEFAULT_NAMESPACES) -> dict[str, Any]:
    """The message Bundle for one body and one snapshot (byte-identical for
    the same inputs: entry ids derive from the message id)."""
    if sent_at.tzinfo is None or sent_at.utcoffset() is None:
        raise ValueError("sent_at must be timezone-aware (FHIR instant)")
    header_id, basic_id = _uuid(message_id, "header"), _uuid(message_id, "drift")
    display = EVENT_DISPLAYS[DRIFT_EVENT]
    coding = {"system": ns.event_codesystem, "code": DRIFT_EVENT.value, "display": display}
    summary = _summary_text(counts)
    header = {
        "resourceType": "MessageHeader", "id": header_id, "meta": {"profile": [ns.profile(PROFILES["MessageHeader"])]},
        "text": _narrative(f"{display}: {summary}"),
        "extension": [{"url": ns.extension("S117-EventOccurred"), "valueDate": counts.compared_on.isoformat()}],
        "eventCoding": dict(coding),
        "destination": [{"name": counts.body.name, "endpoint": _org_endpoint(counts.body),
                         "receiver": _org_ref(counts.body)}],
        "sender": {"identifier": {"system": ns.system_id_system, "value": HUB_SENDER_ID}, "display": "S117 Hub"},
        "source": {"name": "S117 Hub", "endpoint": source_endpoint},
        "focus": [{"reference": f"urn:uuid:{basic_id}"}],
    }
    extensions: list[dict[str, Any]] = [
        {"url": ns.extension("S117-DriftCount"), "extension": [
            {"url": "kind", "valueCode": kind.value},
            {"url": "open", "valueUnsignedInt": int(counts.open_by_kind.get(kind.value, 0))},
        ]} for kind in Kind
    ]
    extensions.append({"url": ns.extension("S117-DriftSummary"), "extension": [
        {"url": "open", "valueUnsignedInt": counts.open_total},
        {"url": "listed", "valueUnsignedInt": counts.listed},
        {"url": "asOf", "valueDate": counts.as_of.isoformat()},
    ]})
    threshold: list[dict[str, Any]] = []
    if counts.threshold.open_items is not None:
        threshold.append({"url": "openItems", "valueUnsignedInt": counts.threshold.open_items})
    if counts.threshold.percent_of_list is not None:
        threshold.append({"url": "percentOfList", "valueDecimal": float(counts.threshold.percent_of_list)})
    extensions.append({"url": ns.extension("S117-DriftThreshold"), "extension": threshold})
    extensions.append({"url": ns.extension("S117-ReconciliationReport"),
                       "valueUrl": report_url(ns, counts.snapshot_id)})
    basic = {
        "resourceType": "Basic", "id": basic_id, "meta": {"profile": [ns.profile(PROFILES["Basic"])]},
        "text": _narrative(summary + " By kind: " + ", ".join(
            f"{kind.value} {int(counts.open_by_kind.get(kind.value, 0))}" for kind in Kind) + "."),
        "extension": extensions,
        "identifier": [{"system": snapshot_id_system(ns), "value": counts.snapshot_id}],
        "code": {"coding": [dict(coding)], "text": display},
        "subject": _org_ref(counts.body),
        "created": counts.compared_on.isoformat(),
    }
    timestamp = sent_at.isoformat()
    if timestamp.endswith("+00:00"):
        timestamp = timestamp[:-6] + "Z"
    return {
        "resourceType": "Bundle", "id": message_id, "meta": {"profile": [ns.profile(PROFILES["Bundle"])]},
        "type": "message", "timestamp": timestamp,
        "entry": [{"fullUrl": f"urn:uuid:{header_id}", "resource": header},
                  {"fullUrl": f"urn:uuid:{basic_id}", "resource": basic}],
    }


def read_drift(bundle: dict[str, Any]) -> dict[str, Any]:
    """The counts a drift message carries, as a receiver reads them."""
    basic = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Basic")
    out: dict[str, Any] = {"by_kind": {}, "snapshot_id": basic["identifier"][0]["value"],
                           "body": basic["subject"]["identifier"]["value"]}
    for ext in basic.get("extension", []):
        name = ext["url"].rsplit("Extension-", 1)[-1]
        parts = {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext.get("extension", [])}
        if name == "S117-DriftCount":
            out["by_kind"][parts["kind"]] = parts["open"]
        elif name == "S117-DriftSummary":
            out.update(open=parts["open"], listed=parts["listed"], as_of=parts["asOf"])
        elif name == "S117-DriftThreshold":
            out["threshold"] = parts
        elif name == "S117-ReconciliationReport":
            out["report"] = ext["valueUrl"]
    return out


def drift_example() -> dict[str, Any]:
    """The package's example (and the validator test's): Buckinghamshire's list past 10 open differences."""
    from hub.fhir.examples import BUCKS_COUNCIL  # noqa: PLC0415

    counts = DriftCounts(
        body=BUCKS_COUNCIL, snapshot_id="7c1f4e2a-5b8d-4e0f-9a3c-117000000d01", as_of=date(2025, 6, 30),
        compared_on=date(2025, 7, 1), listed=120,
        open_by_kind={Kind.MISSING_ON_BODY_LIST.value: 4, Kind.MISSING_ON_HUB_REGISTER.value: 3,
                      Kind.ENTITLEMENT_DIFFERS.value: 2, Kind.RESPONSIBLE_BODY_DIFFERS.value: 1,
                      Kind.DATES_DIFFER.value: 1, Kind.REVIEW_OVERDUE.value: 0},
        threshold=DriftThreshold(open_items=10, percent_of_list=Decimal("5")),
    )
    return {"counts": counts, "message_id": "3d0b6f5e-2c7a-4f1e-8b9d-117000000d02",
            "sent_at": datetime(2025, 7, 1, 2, 30, tzinfo=UTC), "source_endpoint": "https://s117-hub.localhost/fhir"}
