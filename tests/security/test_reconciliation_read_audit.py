"""Reconciliation reports name the hub's person ids (and the register's values) for the people a body
has a part in: a read of each of those people. It left no `access_decisions` row (the outside review of
session 26: one Buckinghamshire report of 9 items, 0 rows). Now each read of a report (JSON or CSV) is
recorded, one row for each hub person it names (channel `reconciliation`, action `read`, what was read in
the change type), so the subject-access look-up finds the body's reads; a report naming no one (in
progress) is one row naming no one; a refused read (another body's report, or no such report) one row
denied. The item decision route answers with the item (person id, register's value): recorded the same,
and cut to the body's agreement as the report is (it was not: the explanation went to a body whose
agreement does not grant `explanations`)."""

from __future__ import annotations

from sqlalchemy import select

from hub.clients import add_client
from hub.store.schema import access_decisions
from tests.unit.test_reconciliation_api import (  # noqa: F401 - the fixture
    PEOPLE, compared, ndjson, register, register_as_list, send,
)

UNKNOWN = "00000000-0000-0000-0000-000000000000"


async def _rows(hub) -> list:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(access_decisions).where(access_decisions.c.channel == "reconciliation")
                                   .order_by(access_decisions.c.decision_id))).all()


async def _seeded(app_hub, register) -> tuple[str, str, dict]:  # noqa: ANN001, F811
    """Bucks' list with A's ICB wrong, B's entitlement wrong, C missing, D unknown to the hub."""
    key = app_hub.keys["E06000060"]
    rows = await register_as_list(app_hub, key, register)
    by = {r["local_id"]: r for r in rows}
    by["SW-A"]["responsible_icb"] = "QHL"
    by["SW-B"]["entitled"] = False
    del by["SW-C"]
    by["SW-D"] = {"nhs_number": PEOPLE["D"], "local_id": "SW-D", "entitled": True, "responsible_council": "E06000060"}
    snap = await send(app_hub, key, ndjson(list(by.values())))
    return key, snap["snapshot_id"], by


async def test_each_report_read_is_recorded_per_person_named(app_hub, register) -> None:  # noqa: ANN001, F811
    hub = app_hub.hub
    key, sid, _ = await _seeded(app_hub, register)
    # In progress: no items yet, a read naming no one.
    r = await app_hub.http.get(f"/v1/reconciliations/{sid}", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["state"] == "comparing", r.text
    [progress] = await _rows(hub)
    assert (progress.org_code, progress.action, progress.decision, progress.change_type, progress.person_id) == (
        "E06000060", "read", "allowed", "report", None)

    report = await compared(app_hub, key, sid)
    named = {i["person_id"] for i in report["items"]} - {None}
    assert named == {register["A"], register["B"], register["C"]}  # D: not on the register, no person id
    rows = (await _rows(hub))[1:]
    assert sorted(r.person_id for r in rows) == sorted(named)
    assert {(r.org_code, r.channel, r.action, r.decision, r.rule, r.change_type) for r in rows} == {
        ("E06000060", "reconciliation", "read", "allowed", "allowed", "report")}
    assert all(r.correlation_id and r.agreement_id and "responsibility" in r.field_groups for r in rows)
    assert len({r.correlation_id for r in rows}) == 1  # one request

    r = await app_hub.http.get(f"/v1/reconciliations/{sid}?format=csv", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    csv_rows = [row for row in await _rows(hub) if row.change_type == "report-csv"]
    assert sorted(row.person_id for row in csv_rows) == sorted(named)

    # The subject-access look-up finds the body's reads of the person.
    _, admin = await add_client(hub.engine, "Hub operator", "HUB", "hub-operator", ["hub:admin"])
    r = await app_hub.http.post("/v1/ops/audit/person", headers={"X-API-Key": admin},
                                json={"nhs_number": PEOPLE["C"]})
    assert r.status_code == 200, r.text
    reads = [e for e in r.json()["disclosures"] if e.get("channel") == "reconciliation"]
    assert [(e["recipient"], e["decision"]) for e in reads] == [("E06000060", "allowed")] * 2


async def test_a_refused_report_read_is_recorded_denied(app_hub, register) -> None:  # noqa: ANN001, F811
    hub = app_hub.hub
    _, sid, _ = await _seeded(app_hub, register)
    await compared(app_hub, app_hub.keys["E06000060"], sid)
    before = len(await _rows(hub))
    other = app_hub.keys["E08000025"]
    for url in (f"/v1/reconciliations/{sid}", f"/v1/reconciliations/{sid}?format=csv",
                f"/v1/reconciliations/{UNKNOWN}"):
        r = await app_hub.http.get(url, headers={"X-API-Key": other})
        assert r.status_code == 404, r.text
    rows = (await _rows(hub))[before:]
    assert [(r.org_code, r.decision, r.rule, r.change_type, r.person_id, r.field_groups) for r in rows] == [
        ("E08000025", "denied", "no-relationship", "report", None, []),
        ("E08000025", "denied", "no-relationship", "report-csv", None, []),
        ("E08000025", "denied", "no-relationship", "report", None, []),
    ]
    assert all(r.correlation_id for r in rows)


async def test_an_item_decision_is_recorded_and_shown_within_the_agreement(app_hub, register) -> None:  # noqa: ANN001, F811
    hub = app_hub.hub
    key, sid, _ = await _seeded(app_hub, register)
    report = await compared(app_hub, key, sid)
    a = next(i for i in report["items"] if i["local_id"] == "SW-A")
    before = len(await _rows(hub))
    r = await app_hub.http.post(f"/v1/reconciliations/items/{a['item_id']}", headers={"X-API-Key": app_hub.keys["E08000025"]},
                                json={"state": "accepted", "reason": "not ours"})
    assert r.status_code == 404, r.text  # another body's item
    r = await app_hub.http.post(f"/v1/reconciliations/items/{a['item_id']}", headers={"X-API-Key": key},
                                json={"state": "accepted", "reason": "ICB recharge agreed locally"})
    assert r.status_code == 200 and r.json()["person_id"] == register["A"], r.text
    got = [(r.org_code, r.decision, r.change_type, r.person_id) for r in (await _rows(hub))[before:]]
    assert got == [("E08000025", "denied", "item-decision", None),
                   ("E06000060", "allowed", "item-decision", register["A"])]

    # Worcestershire's agreement grants responsibility but not explanations: the report shows no
    # explanation, nor does the decision's answer.
    _, worcs = await add_client(hub.engine, "Worcestershire", "E10000034", "council", ["s117:read"])
    snap = await send(app_hub, worcs, ndjson([{"nhs_number": PEOPLE["D"], "local_id": "W-2", "entitled": True,
                                               "responsible_council": "E10000034"}]))
    [item] = (await compared(app_hub, worcs, snap["snapshot_id"]))["items"]
    assert item["explanation"] is None
    r = await app_hub.http.post(f"/v1/reconciliations/items/{item['item_id']}", headers={"X-API-Key": worcs},
                                json={"state": "explained", "reason": "new referral"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "explained" and r.json()["explanation"] is None
