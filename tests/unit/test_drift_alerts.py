"""Drift alerts through the in-process app and a real SQLite store: a body's
open differences crossing the threshold in its agreement send one
s117-reconciliation-drift message through the delivery queue (event numbers
shared with its other messages, no gaps), audited; the same crossing is not
alerted again; falling back below (items fixed by register changes) re-arms;
no threshold, no alert; an agreement that does not grant the event: denied,
audited, nothing sent."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import delete, select

from hub.drift_alerts import DriftAlerts, event_id_for
from hub.fhir.drift import read_drift
from hub.fhir.validate import validate_message
from hub.reconciliation import ItemWatcher, Reconciler
from hub.sharing import AgreementFileError, SharingAgreements
from hub.store.schema import audit_chain, deliveries, disclosures, drift_alerts, reconciliation_snapshots
from tests.unit.test_reconciliation_api import detention, ndjson, send

DRIFT = "s117-reconciliation-drift"
BUCKS = "E06000060"
GROUPS = ["identity", "demographics", "address", "legal-status", "responsibility", "explanations", "workflow"]


def nhs_numbers(n: int, start: int = 770000) -> list[str]:
    """Valid synthetic NHS numbers from the 999 test range (modulus 11 check digit)."""
    out = []
    i = start
    while len(out) < n:
        base = f"999{i:06d}"
        check = 11 - sum(int(d) * (10 - k) for k, d in enumerate(base)) % 11
        if check != 10:
            out.append(base + str(0 if check == 11 else check))
        i += 1
    return out


X = nhs_numbers(6)


def sharing(bucks: dict[str, Any]) -> SharingAgreements:
    return SharingAgreements.from_document({"version": 1, "agreements": [
        {"id": "DSA-DRIFT-TEST", "valid_from": "2020-01-01", "recipients": [
            {"org_code": BUCKS, "field_groups": GROUPS, **bucks}]}]})


def listing(numbers: list[str]) -> bytes:
    return ndjson([{"nhs_number": n, "local_id": f"SW-{n[-4:]}", "entitled": True, "responsible_council": BUCKS}
                   for n in numbers])


class Night:
    """One body's nightly snapshot, compared with drift alerts on."""

    def __init__(self, app_hub, alerts: DriftAlerts) -> None:  # noqa: ANN001
        self.app_hub = app_hub
        hub = app_hub.hub
        self.alerts = alerts
        self.reconciler = Reconciler(hub.engine, hub.ref, hub.agreements, hub.reconciliation, alerts=alerts)
        self.watcher = ItemWatcher(hub.engine, hub.bus, hub.ref, hub.agreements, alerts=alerts)

    async def snapshot(self, numbers: list[str]) -> str:
        snap = await send(self.app_hub, self.app_hub.keys[BUCKS], listing(numbers))
        await self.reconciler.run_once()
        return snap["snapshot_id"]

    async def watch(self) -> None:
        while await self.watcher.run_once():
            pass


def alerts_for(app_hub, doc: dict[str, Any]) -> DriftAlerts:  # noqa: ANN001
    hub = app_hub.hub
    return DriftAlerts(sharing(doc), hub.protector, hub.ref, hub.settings.hub_endpoint, hub.settings.namespaces())


async def rows(app_hub, table, *where) -> list[Any]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return list((await conn.execute(select(table).where(*where))).all())


async def subscribe(app_hub, **body: Any) -> str:  # noqa: ANN001
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[BUCKS]}, json=body)
    assert r.status_code == 201, r.text
    return r.json()["subscription_id"]


async def feed(app_hub, sub: str) -> list[dict]:  # noqa: ANN001
    r = await app_hub.http.get(f"/v1/feeds/{sub}?limit=100", headers={"X-API-Key": app_hub.keys[BUCKS]})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def register(app_hub, nhs: str) -> None:  # noqa: ANN001
    for change in detention(nhs, f"reg-{nhs}"):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
        assert r.status_code == 202, r.text


async def test_crossing_alerts_once_falling_below_rearms_and_the_next_crossing_alerts_again(app_hub) -> None:  # noqa: ANN001
    alerts = alerts_for(app_hub, {"events": ["*"], "reconciliation": {"drift_alert_open_items": 3}})
    night = Night(app_hub, alerts)
    sub = await subscribe(app_hub, channel="feed")
    other = await subscribe(app_hub, channel="webhook", url="http://127.0.0.1:9/hook",
                            event_types=["s117-entitlement-started"])  # does not take drift alerts

    # Night 1: two people the hub has never heard of: 2 open differences, under 3.
    await night.snapshot(X[:2])
    assert await feed(app_hub, sub) == []
    # Night 2: four: crossed.
    sid2 = await night.snapshot(X[:4])
    items = await feed(app_hub, sub)
    assert [(i["event_number"], i["event_type"]) for i in items] == [(1, DRIFT)]
    message = items[0]["message"]
    validate_message(message)
    got = read_drift(message)
    assert (got["snapshot_id"], got["body"], got["open"], got["listed"]) == (sid2, BUCKS, 4, 4)
    assert got["by_kind"] == {"missing-on-body-list": 0, "missing-on-hub-register": 4, "entitlement-differs": 0,
                              "responsible-body-differs": 0, "dates-differ": 0, "review-overdue": 0}
    assert got["threshold"] == {"openItems": 3}
    assert got["report"].endswith(f"/v1/reconciliations/{sid2}")
    text = orjson.dumps(message).decode()
    assert "Patient" not in text and not any(n in text for n in X)
    assert items[0]["event_id"] == event_id_for(BUCKS, sid2)
    assert await rows(app_hub, deliveries, deliveries.c.subscription_id == other) == []
    audit = await rows(app_hub, disclosures, disclosures.c.event_type == DRIFT)
    assert [(d.decision, d.person_id, d.recipient_org, d.channel, d.agreement_id) for d in audit] == [
        ("allowed", None, BUCKS, "feed", "DSA-DRIFT-TEST")]

    # The operator's console data shows the body above its threshold, alerted.
    r = await app_hub.http.get("/v1/ops/reconciliation", headers={"X-API-Key": await _admin_key(app_hub)})
    (alert,) = [a for a in r.json()["alerts"] if a["body"] == BUCKS]
    assert (alert["above"], alert["open"], alert["last_alert_snapshot_id"]) == (True, 4, sid2)

    # Night 3: the same drift and more: the same crossing, no second alert.
    await night.snapshot(X[:5])
    assert len(await feed(app_hub, sub)) == 1
    # A replay of night 2's completion, even with the alert state lost, queues nothing new.
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(delete(drift_alerts))
        snap2 = (await conn.execute(select(reconciliation_snapshots)
                                    .where(reconciliation_snapshots.c.snapshot_id == sid2))).one()
        await alerts.after_comparison(conn, snap2)
    assert len(await rows(app_hub, deliveries, deliveries.c.event_type == DRIFT)) == 1
    await night.snapshot(X[:5])  # back to "above" after the lost state

    # The trust reports three of them: the watcher closes their items, 2 open: back below, re-armed.
    for n in X[:3]:
        await register(app_hub, n)
    await night.watch()
    (state,) = await rows(app_hub, drift_alerts, drift_alerts.c.body_org == BUCKS)
    assert (state.above, state.open_total) == (False, 2)
    # The dispatcher tells the council of the people now on the register, on the same feed, numbered on.
    while await app_hub.hub.dispatcher.run_once():
        pass
    person_messages = len(await feed(app_hub, sub)) - 1
    assert person_messages >= 3

    # Night 4: six on the list, three the hub does not know: crossed again, a new alert.
    sid4 = await night.snapshot(X)
    items = await feed(app_hub, sub)
    assert [i["event_number"] for i in items] == list(range(1, len(items) + 1))  # no gaps, one sequence
    drift = [i for i in items if i["event_type"] == DRIFT]
    assert [i["event_id"] for i in drift] == [event_id_for(BUCKS, sid2), event_id_for(BUCKS, sid4)]
    assert read_drift(drift[1]["message"])["by_kind"]["missing-on-hub-register"] == 3


async def test_no_threshold_in_the_agreement_no_alert(app_hub) -> None:  # noqa: ANN001
    night = Night(app_hub, alerts_for(app_hub, {"events": ["*"]}))
    sub = await subscribe(app_hub, channel="feed")
    await night.snapshot(X)
    assert await feed(app_hub, sub) == []
    assert await rows(app_hub, disclosures, disclosures.c.event_type == DRIFT) == []


async def test_an_agreement_that_does_not_grant_the_event_is_denied_and_audited_once(app_hub) -> None:  # noqa: ANN001
    night = Night(app_hub, alerts_for(app_hub, {"events": ["s117-entitlement-started"],
                                                "reconciliation": {"drift_alert_percent": 10}}))
    sub = await subscribe(app_hub, channel="feed")
    sid = await night.snapshot(X[:2])
    await night.snapshot(X[:3])  # the same crossing: not audited again
    assert await feed(app_hub, sub) == []
    audit = await rows(app_hub, disclosures, disclosures.c.event_type == DRIFT)
    assert [(d.decision, d.event_id, d.person_id, d.channel) for d in audit] == [
        ("denied", event_id_for(BUCKS, sid), None, None)]
    assert "does not cover event type s117-reconciliation-drift" in audit[0].reason
    # The refusal joins the tamper-evident audit chain like every disclosure decision, with no person.
    chain = app_hub.hub.audit
    assert await chain.extend() >= 1
    async with app_hub.hub.engine.connect() as conn:
        entry = (await conn.execute(select(audit_chain).where(audit_chain.c.source == "disclosures",
                                                              audit_chain.c.source_id == audit[0].disclosure_id))).one()
    assert (entry.kind, entry.person_id, entry.org) == ("refusal", None, BUCKS)
    assert (await chain.verify())["ok"]
    # The operator's withheld view lists it like any other withheld disclosure.
    admin = await _admin_key(app_hub)
    r = await app_hub.http.get("/v1/ops/withheld", headers={"X-API-Key": admin})
    assert r.status_code == 200 and DRIFT in r.text, r.text


async def test_allowed_but_no_subscription_is_audited(app_hub) -> None:  # noqa: ANN001
    night = Night(app_hub, alerts_for(app_hub, {"events": [DRIFT], "reconciliation": {"drift_alert_open_items": 1}}))
    await night.snapshot(X[:1])
    audit = await rows(app_hub, disclosures, disclosures.c.event_type == DRIFT)
    assert [(d.decision, d.recipient_org) for d in audit] == [("no-subscription", BUCKS)]


async def _admin_key(app_hub) -> str:  # noqa: ANN001
    from hub.clients import add_client

    return (await add_client(app_hub.hub.engine, "Operator", "S117HUB", "hub", ["hub:admin"]))[1]


@pytest.mark.parametrize(("recipient", "message"), [
    ({"reconciliation": {"drift_alert_open_items": 0}},
     "agreement DSA-DRIFT-TEST recipients[0].reconciliation.drift_alert_open_items: must be a whole number"),
    ({"reconciliation": {"drift_alert_percent": "high"}},
     "recipients[0].reconciliation.drift_alert_percent: must be a percentage"),
    ({"reconciliation": {"threshold": 5}}, "recipients[0].reconciliation.threshold: unknown setting"),
    ({"reconciliation": 5}, "recipients[0].reconciliation: must be a mapping"),
])
def test_a_bad_threshold_in_the_agreements_file_is_named_when_agreements_load(recipient: dict, message: str) -> None:
    with pytest.raises(AgreementFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sharing(recipient)


async def test_the_file_channel_appends_the_alert_as_an_ndjson_line(app_hub, tmp_path) -> None:  # noqa: ANN001
    from datetime import UTC, datetime

    from hub.delivery.file_export import FileExportDeliverer, export_path

    night = Night(app_hub, alerts_for(app_hub, {"events": ["*"], "reconciliation": {"drift_alert_percent": 50}}))
    await subscribe(app_hub, channel="file")
    sid = await night.snapshot(X[:2])  # 2 of 2 on the list unknown to the hub: 100%
    deliverer = FileExportDeliverer(app_hub.hub.engine, app_hub.hub.protector, tmp_path / "exports",
                                    backoff_base=0.0, backoff_cap=0.0)
    while await deliverer.run_once():
        pass
    lines = [orjson.loads(line) for line in
             export_path(tmp_path / "exports", BUCKS, datetime.now(UTC)).read_bytes().splitlines()]
    assert [(line["event_number"], line["event_type"], line["event_id"]) for line in lines] == [
        (1, DRIFT, event_id_for(BUCKS, sid))]
    got = read_drift(lines[0]["message"])
    assert (got["open"], got["listed"], got["threshold"]) == (2, 2, {"percentOfList": 50.0})


async def test_people_named_by_rows_rejected_for_another_field_count_on_the_list_for_the_percentage(app_hub) -> None:  # noqa: ANN001
    """A row rejected for a bad date still names its person: the body listed them (hub/reconciliation.py), and
    the oversight report counts them on its list. The percentage threshold's list did not: four open
    differences among ten people listed were taken as four of four (100%, alerted at 50%)."""
    night = Night(app_hub, alerts_for(app_hub, {"events": ["*"], "reconciliation": {"drift_alert_percent": 50}}))
    sub = await subscribe(app_hub, channel="feed")
    numbers = nhs_numbers(10, start=771000)
    rows_ = [{"nhs_number": n, "local_id": f"SW-{n[-4:]}", "entitled": True, "responsible_council": BUCKS}
             for n in numbers]
    for r in rows_[4:]:
        r["entitlement_start"] = "2025-13-40"
    snap = await send(app_hub, app_hub.keys[BUCKS], ndjson(rows_))
    await night.reconciler.run_once()
    (done,) = await rows(app_hub, reconciliation_snapshots, reconciliation_snapshots.c.snapshot_id == snap["snapshot_id"])
    assert done.summary["row_rejected"] == 6 and done.differences == 4
    assert await feed(app_hub, sub) == []  # 4 of 10: under 50%
    (state,) = await rows(app_hub, drift_alerts, drift_alerts.c.body_org == BUCKS)
    assert (state.above, state.open_total) == (False, 4)
