"""A package line handed over with responsibility (README "Packages and money",
"Roles and access"): when both the council and the ICB move (a re-detention
from another area moves the council, Worcs 4.3.3; a resolved dispute between
ICBs moves the ICB, Worcs 4.4.8), the line's days from the move are charged to
the new pair, and a change or an end of it is written by a body of the pair it
is charged to on the change's day (an end: the line's last day). The new pair
names a line another body recorded with `line_recorded_by` (the person query's
`recorded_by`); the old pair keeps its days before the move; anyone else gets
the unknown person's answer, audited, nothing kept."""

from __future__ import annotations

from datetime import date

import yaml
from sqlalchemy import select

from hub.clients import add_client
from hub.settings import REPO_ROOT
from hub.sharing import SharingAgreements
from hub.store.schema import access_decisions, care_packages, ingest_results, quarantine
from hub.domain.dates import england_day
from tests.unit.test_money_moves_api import BUCKS, QGH, QU9, WORCS, _lines, _person, _statement
from tests.unit.test_packages_api import start

BRUM = "E08000025"  # Birmingham: never responsible for this person
MOVE = "2026-10-15"


def _on(app_hub, day: str | None) -> None:  # noqa: ANN001
    app_hub.hub.workflows.clock.offset_days = 0 if day is None else (
        date.fromisoformat(day) - england_day()).days


async def _clients(app_hub) -> dict[str, tuple[str, str]]:  # noqa: ANN001
    """org -> (client id, key); every body holds `funding` (Birmingham too, in an agreement of its own)."""
    out = {}
    for org, kind in ((BUCKS, "council"), (QU9, "icb"), (QGH, "icb"), (WORCS, "council"), (BRUM, "council")):
        out[org] = await add_client(app_hub.hub.engine, f"{org} finance", org, kind,
                                    ["packages:write", "s117:read", "workflows:write"])
    doc = yaml.safe_load((REPO_ROOT / "contracts" / "data-sharing-agreements.yaml").read_text())
    for ag in doc["agreements"]:
        for rec in ag.get("recipients") or []:
            if rec["org_code"] in (WORCS, QGH):
                rec["field_groups"] = sorted({*rec["field_groups"], "responsibility", "funding"})
    doc["agreements"].append({
        "id": "DSA-TEST-BRUM", "title": "Birmingham (test)", "legal_basis": "test", "valid_from": "2024-04-01",
        "recipients": [{"org_code": BRUM, "events": [], "field_groups": ["identity", "responsibility", "funding"]}]})
    app_hub.hub.sharing = SharingAgreements.from_document(doc)
    return out


async def _both_moved(app_hub, key: dict[str, str], seed: int, resolved_from: str = MOVE) -> str:  # noqa: ANN001
    """Bucks and BOB ICB (QU9) responsible when Bucks starts line L1 on 1 September 2026 (700.00 a week);
    from 15 October 2026 Worcestershire (re-detained from there) and H&W ICB (QGH, a dispute resolved that
    day, found responsible from `resolved_from`: for money from the day it was resolved)."""
    pid, person = await _person(app_hub, seed, moved=True)
    r = await _post(app_hub, key[BUCKS], start(pid, f"b-{seed}", "L1", effective_date="2026-09-01"))
    assert r.status_code == 201 and (r.json()["council"], r.json()["icb"]) == (BUCKS, QU9), r.text
    again = {"source_system": "RiO (demo)", "person": person, "source_message_id": f"ho-{seed}-re",
             "change_type": "detained", "effective_date": MOVE, "legal_status_code": "03",
             "hospital_ods": "RNU", "gp_practice_ods": "M81001", "residence_la_gss": WORCS}
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=again)
    assert r.status_code == 202, r.text
    _on(app_hub, MOVE)
    r = await app_hub.http.post("/v1/disputes", headers={"X-API-Key": key[QU9]}, json={
        "person_id": pid, "kind": "commissioner", "parties": [QU9, QGH], "reason": "GP registration at detention"})
    assert r.status_code == 201, r.text
    outcome = {"responsible": QGH, "responsible_from": resolved_from}
    for org in (QU9, QGH):
        r = await app_hub.http.post(f"/v1/disputes/{r.json()['case_id']}/resolve",
                                    headers={"X-API-Key": key[org]}, json=outcome)
        assert r.status_code in (200, 202), r.text
    assert r.status_code == 200
    _on(app_hub, None)
    return pid


def _post(app_hub, key: str, body: dict):  # noqa: ANN001, ANN202
    return app_hub.http.post("/v1/packages", headers={"X-API-Key": key}, json=body)


def _end(pid: str, smid: str, day: str, **kw) -> dict:
    return {"source_message_id": smid, "action": "end", "package_id": "L1", "person_id": pid,
            "effective_date": day, **kw}


def _change(pid: str, smid: str, day: str, pence: int, **kw) -> dict:
    return {"source_message_id": smid, "action": "change", "package_id": "L1", "person_id": pid,
            "effective_date": day, "weekly_cost_pence": pence, **kw}


async def _rows(app_hub, table, *where) -> list:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(table).where(*where))).all()
        await conn.rollback()
    return rows


async def _line(app_hub, pid: str) -> list[tuple]:  # noqa: ANN001
    rows = await _rows(app_hub, care_packages, care_packages.c.person_id == pid)
    return sorted((r.version, r.council, r.icb, r.weekly_cost_pence, r.start_date, r.end_date) for r in rows)


async def _periods(app_hub, key: str, month: str, council: str, icb: str) -> list[tuple]:  # noqa: ANN001
    r = await _statement(app_hub, key, month, council, icb)
    assert r.status_code == 200, r.text
    return [(i["from"], i["to"], i["days"], i["cost_pence"]) for i in _lines(r.json())]


async def test_the_new_pair_changes_and_ends_the_line_it_is_charged_from_the_move(app_hub):
    clients = await _clients(app_hub)
    key = {org: k for org, (_, k) in clients.items()}
    pid = await _both_moved(app_hub, key, 61)
    old_sept = await _periods(app_hub, key[QU9], "2026-09", BUCKS, QU9)
    old_oct = await _periods(app_hub, key[QU9], "2026-10", BUCKS, QU9)
    assert old_oct == [("2026-10-01", "2026-10-14", 14, 140_000)]
    assert await _periods(app_hub, key[QGH], "2026-10", WORCS, QGH) == [("2026-10-15", "2026-10-31", 17, 170_000)]

    # The new pair sees the line charged to it, and who recorded it: how it names the line.
    r = await app_hub.http.get(f"/v1/persons/{pid}/s117?as_of=2026-11-01", headers={"X-API-Key": key[WORCS]})
    (seen,) = r.json()["funding"]["packages"]
    assert (seen["package_id"], seen["recorded_by"], seen["council"], seen["icb"]) == ("L1", BUCKS, BUCKS, QU9)

    # H&W ICB changes its cost from 1 November, Worcestershire ends it on 10 November: each allowed as a body
    # of the pair the line is charged to on that day, the line keeping its key (Bucks' source, next version).
    r = await _post(app_hub, key[QGH], _change(pid, "q-1", "2026-11-01", 84_000, line_recorded_by=BUCKS))
    assert r.status_code == 201, r.text
    assert (r.json()["versions"], r.json()["line_recorded_by"]) == ([1, 2], BUCKS)
    r = await _post(app_hub, key[WORCS], _end(pid, "w-1", "2026-11-10", line_recorded_by=BUCKS))
    assert r.status_code == 201 and r.json()["versions"] == [2], r.text
    assert await _line(app_hub, pid) == [
        (1, BUCKS, QU9, 70_000, date(2026, 9, 1), date(2026, 10, 31)),
        (2, BUCKS, QU9, 84_000, date(2026, 11, 1), date(2026, 11, 10))]
    rows = await _rows(app_hub, care_packages, care_packages.c.person_id == pid)
    assert {r.source for r in rows} == {clients[BUCKS][0]}  # one line, Bucks' key
    assert sorted(r.source_message_id for r in rows) == ["b-61", "q-1"]

    # Statements: the new pair is charged to the end at the new cost from its day and nothing after; the old
    # pair's months are as they were, and so is the new pair's October.
    assert await _periods(app_hub, key[QGH], "2026-11", WORCS, QGH) == [("2026-11-01", "2026-11-10", 10, 120_000)]
    assert await _periods(app_hub, key[QGH], "2026-12", WORCS, QGH) == []
    assert await _periods(app_hub, key[QGH], "2026-10", WORCS, QGH) == [("2026-10-15", "2026-10-31", 17, 170_000)]
    assert await _periods(app_hub, key[QU9], "2026-10", BUCKS, QU9) == old_oct
    assert await _periods(app_hub, key[QU9], "2026-09", BUCKS, QU9) == old_sept
    assert await _periods(app_hub, key[QU9], "2026-11", BUCKS, QU9) == []

    # Who wrote each: the writer's own audit row and answer (its client id and source_message_id).
    for org, smid, change_type, role in ((QGH, "q-1", "package-change", "responsible-commissioner"),
                                         (WORCS, "w-1", "package-end", "responsible-council")):
        (audit,) = await _rows(app_hub, access_decisions, access_decisions.c.client_id == clients[org][0],
                               access_decisions.c.change_type.like("package-%"))
        assert (audit.change_type, audit.decision, audit.role, audit.person_id) == (change_type, "allowed", role,
                                                                                    pid)
        (kept,) = await _rows(app_hub, ingest_results, ingest_results.c.source == clients[org][0])
        assert (kept.source_message_id, kept.status_code, kept.body["line_recorded_by"]) == (smid, 201, BUCKS)


async def test_the_old_pair_writes_only_its_days_before_the_move(app_hub):
    clients = await _clients(app_hub)
    key = {org: k for org, (_, k) in clients.items()}
    pid = await _both_moved(app_hub, key, 62)
    unknown = await _post(app_hub, key[BUCKS], _end("no-such-person", "b-0", "2026-10-20"))
    assert unknown.status_code == 404

    # After the move the line is charged to Worcestershire and QGH: Bucks' own line, or QU9 naming it, is
    # not theirs to change or end then.
    for org, body in ((BUCKS, _end(pid, "x-1", "2026-10-20")), (BUCKS, _change(pid, "x-2", MOVE, 1)),
                      (QU9, _end(pid, "x-3", "2026-11-30", line_recorded_by=BUCKS)),
                      (QU9, _change(pid, "x-4", "2026-12-01", 1, line_recorded_by=BUCKS))):
        r = await _post(app_hub, key[org], body)
        assert (r.status_code, r.json()) == (404, unknown.json()), (org, body)
    assert [v[0] for v in await _line(app_hub, pid)] == [1]

    # Its days before the move are its own: QU9 changes the cost from 1 October, Bucks ends the line the day
    # before the move. Nothing is left for the new pair.
    r = await _post(app_hub, key[QU9], _change(pid, "x-5", "2026-10-01", 77_000, line_recorded_by=BUCKS))
    assert r.status_code == 201 and r.json()["versions"] == [1, 2], r.text
    r = await _post(app_hub, key[BUCKS], _end(pid, "x-6", "2026-10-14"))
    assert r.status_code == 201 and r.json()["versions"] == [2], r.text
    assert await _line(app_hub, pid) == [
        (1, BUCKS, QU9, 70_000, date(2026, 9, 1), date(2026, 9, 30)),
        (2, BUCKS, QU9, 77_000, date(2026, 10, 1), date(2026, 10, 14))]
    assert await _periods(app_hub, key[QU9], "2026-10", BUCKS, QU9) == [("2026-10-01", "2026-10-14", 14, 154_000)]
    assert await _periods(app_hub, key[QGH], "2026-10", WORCS, QGH) == []
    assert await _rows(app_hub, quarantine) == []
    denied = [r for r in await _rows(app_hub, access_decisions, access_decisions.c.decision == "denied",
                                     access_decisions.c.person_id == pid)]
    assert sorted((r.org_code, r.change_type, r.rule) for r in denied) == sorted([
        (BUCKS, "package-end", "no-relationship"), (BUCKS, "package-change", "no-relationship"),
        (QU9, "package-end", "no-relationship"), (QU9, "package-change", "no-relationship")])


async def test_a_body_not_charged_the_line_gets_the_unknown_answer_and_nothing_is_kept(app_hub):
    clients = await _clients(app_hub)
    key = {org: k for org, (_, k) in clients.items()}
    pid = await _both_moved(app_hub, key, 63)
    unknown = await _post(app_hub, key[BRUM], _end("no-such-person", "m-0", "2026-11-10", line_recorded_by=BUCKS))
    assert unknown.status_code == 404

    # Birmingham, holding `funding` but never responsible: refused before its body is read, malformed or not.
    for body in (_end(pid, "m-1", "2026-11-10", line_recorded_by=BUCKS),
                 _change(pid, "m-2", "2026-11-01", 1, line_recorded_by=BUCKS),
                 {**_change(pid, "m-3", "2026-11-01", 1, line_recorded_by=BUCKS), "weekly_cost_pence": "1"}):
        r = await _post(app_hub, key[BRUM], body)
        assert (r.status_code, r.json()) == (404, unknown.json())
    # The new pair naming a line nobody recorded (QGH's own "L1", Worcestershire's "L2"): the same answer,
    # not a problem with the line, so it cannot tell a line it is not charged from one that does not exist.
    r = await _post(app_hub, key[WORCS], _end(pid, "w-2", "2026-11-10", line_recorded_by=QGH))
    assert (r.status_code, r.json()["detail"]) == (404, unknown.json()["detail"])
    r = await _post(app_hub, key[WORCS], {**_end(pid, "w-3", "2026-11-10", line_recorded_by=BUCKS),
                                          "package_id": "L2"})
    assert (r.status_code, r.json()["detail"]) == (404, unknown.json()["detail"])
    # Without line_recorded_by, the line is the writer's own: Worcestershire has none called L1.
    r = await _post(app_hub, key[WORCS], _end(pid, "w-4", "2026-11-10"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "package_id"

    assert [v[0] for v in await _line(app_hub, pid)] == [1]
    assert (await _line(app_hub, pid))[0][-1] is None
    assert [r.source_message_id for r in await _rows(app_hub, quarantine)] == ["w-4"]
    assert await _rows(app_hub, ingest_results, ingest_results.c.source == clients[BRUM][0]) == []
    assert {(r.decision, r.rule) for r in await _rows(
        app_hub, access_decisions, access_decisions.c.client_id == clients[BRUM][0])} == {
        ("denied", "no-relationship")}
    # A start never names another body's line.
    r = await _post(app_hub, key[WORCS], start(pid, "w-5", "W1", effective_date="2026-11-01",
                                                line_recorded_by=BUCKS))
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["line_recorded_by"]


async def test_a_handover_write_sent_again_gets_its_first_answer_per_writer(app_hub):
    clients = await _clients(app_hub)
    key = {org: k for org, (_, k) in clients.items()}
    pid = await _both_moved(app_hub, key, 64)
    body = _end(pid, "same-id", "2026-11-10", line_recorded_by=BUCKS)
    first = await _post(app_hub, key[QGH], body)
    assert first.status_code == 201, first.text
    again = await _post(app_hub, key[QGH], {**body, "person_id": pid})
    assert again.status_code == 201 and again.json() == {**first.json(), "duplicate": True}
    other = await _post(app_hub, key[QGH], {**body, "effective_date": "2026-11-11"})
    assert other.status_code == 409 and other.json()["errors"][0]["field"] == "source_message_id"
    # The id is the writer's own: Bucks using it for its own line before the move is another event.
    r = await _post(app_hub, key[BUCKS], _change(pid, "same-id", "2026-10-01", 77_000))
    assert r.status_code == 201 and r.json()["versions"] == [1, 2], r.text
    assert await _line(app_hub, pid) == [
        (1, BUCKS, QU9, 70_000, date(2026, 9, 1), date(2026, 9, 30)),
        (2, BUCKS, QU9, 77_000, date(2026, 10, 1), date(2026, 11, 10))]
    assert await _rows(app_hub, quarantine) == []


async def test_a_resolution_hands_the_line_over_from_the_day_it_is_made(app_hub):
    """A resolution counts for money from the day it is made (README "Interim dispute shares"): QGH, found
    responsible from 1 October on 15 October, is not charged the days before 15 October (they are settled by
    reimbursement) and writes none of them; QU9 writes its own line's days up to the 14th, QGH from the 15th."""
    clients = await _clients(app_hub)
    key = {org: k for org, (_, k) in clients.items()}
    pid, _ = await _person(app_hub, 65, moved=True)
    r = await _post(app_hub, key[QU9], {**start(pid, "q-0", "Q1", effective_date="2026-09-01"), "package_id": "Q1"})
    assert r.status_code == 201, r.text
    pid = await _both_moved(app_hub, key, 65, resolved_from="2026-10-01")
    q1 = {"action": "change", "package_id": "Q1", "person_id": pid, "weekly_cost_pence": 77_000}
    r = await _post(app_hub, key[QU9], {**q1, "source_message_id": "q-1", "effective_date": "2026-10-05"})
    assert r.status_code == 201 and r.json()["versions"] == [1, 2], r.text
    r = await _post(app_hub, key[QGH], {**q1, "source_message_id": "g-1", "effective_date": "2026-10-06",
                                        "line_recorded_by": QU9})
    assert r.status_code == 404, r.text
    r = await _post(app_hub, key[QU9], {**q1, "source_message_id": "q-2", "effective_date": MOVE})
    assert r.status_code == 404, r.text
    r = await _post(app_hub, key[QGH], {**q1, "source_message_id": "g-2", "effective_date": MOVE,
                                        "line_recorded_by": QU9})
    assert r.status_code == 201 and r.json()["versions"] == [2, 3], r.text
    assert sorted(await _periods(app_hub, key[QU9], "2026-10", BUCKS, QU9)) == [  # L1, and Q1 at each cost
        ("2026-10-01", "2026-10-04", 4, 40_000), ("2026-10-01", "2026-10-14", 14, 140_000),
        ("2026-10-05", "2026-10-14", 10, 110_000)]
