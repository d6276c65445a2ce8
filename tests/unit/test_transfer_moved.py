"""A hand-over that later-arriving history moves to another date, and
transfer cases already accepted or contested when later history shows no
hand-over at all.

Through the real path (REST ingest, the dispatcher, the workflows' consumer,
the case store, the API) on SQLite (tests/contract/test_transfer_moved_store.py:
SQLite and PostgreSQL). The history is tests/unit/test_transfer_withdrawn.py's:
detained in Buckinghamshire, left hospital, moved to Worcestershire (day 150),
"re-detained" from there on day 200: the council moves (Worcs 4.3.3) and a
transfer case opens for day 200. Heard late: the person was in fact detained
again from Worcestershire on day 180 and still in hospital on day 200, so the
hand-over is on day 180. One hand-over is one case: the day-200 case is
withdrawn, superseded by the day-180 one (both bodies told, its FHIR Task
`cancelled`), and exactly one case stays open.

An accepted case is not left standing when later history shows no hand-over
(or shows it on another date): the hub withdraws it too, both bodies told, the
acceptance kept in its history. A contested case is left to the dispute its
contest opened."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from hub.domain.workflows.model import SUPERSEDED_REASON, WITHDRAWN_REASON
from hub.fhir.validate import validate_message
from hub.store.schema import workflow_cases
from tests.unit.test_transfer_withdrawn import (
    BUCKS,
    LEFT_BEFORE,
    STILL_IN_HOSPITAL,
    WORCS,
    _on,
    _post,
    _told,
    drain,
    h,
    moved_and_redetained_on,
)

OPEN = ("awaiting-acknowledgement", "overdue")
# Heard late: detained again under s3 from Worcestershire on day 180 (the
# hospital's trust reports it), still in hospital on day 200: the day-200
# "re-detention" is the same period of detention, and the hand-over is on day 180.
REDETAINED_EARLIER = {"change_type": "detained", "effective_date": _on(180), "legal_status_code": "03",
                      "hospital_ods": "R1A", "residence_la_gss": WORCS}


async def transfer_cases(hub) -> list[dict]:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(workflow_cases.c.case_id, workflow_cases.c.state, workflow_cases.c.data)
                                   .where(workflow_cases.c.kind == "transfer")
                                   .order_by(workflow_cases.c.opened_on, workflow_cases.c.case_id))).all()
        await conn.rollback()
    return [{"case_id": r.case_id, "state": r.state, "role": r.data["role"], "outgoing": r.data["outgoing"],
             "incoming": r.data["incoming"], "handover_on": r.data.get("handover_on")} for r in rows]


def open_cases(cases: list[dict]) -> list[dict]:
    return [c for c in cases if c["state"] in OPEN]


def check_told_cancelled(told: dict[str, list[dict]], reason: str) -> None:
    """Both bodies told once, each a valid message with the case's Task `cancelled` for `reason`."""
    assert {org: len(b) for org, b in told.items() if org in (BUCKS, WORCS)} == {BUCKS: 1, WORCS: 1}, \
        {org: len(b) for org, b in told.items()}
    for org in (BUCKS, WORCS):
        for bundle in told[org]:
            validate_message(bundle)
            [task] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task"]
            assert (task["status"], task["businessStatus"]["text"]) == ("cancelled", "withdrawn")
            assert task["statusReason"]["text"] == reason


async def moved_late(app_hub) -> None:  # noqa: ANN001
    await _post(app_hub, "R1A", {**app_hub.base, **REDETAINED_EARLIER, "source_message_id": "wd-earlier"})
    await drain(app_hub)


async def check_moved(app_hub, first: dict) -> dict:  # noqa: ANN001
    """After the late day-180 detention: the first case superseded, one case open for day 180."""
    http, hub = app_hub.http, app_hub.hub
    cases = await transfer_cases(hub)
    [still] = open_cases(cases)  # one hand-over, one open case
    assert (still["role"], still["outgoing"], still["incoming"], still["handover_on"]) == (
        "council", BUCKS, WORCS, _on(180))
    [old] = [c for c in cases if c["case_id"] == first["case_id"]]
    assert old["state"] == "withdrawn"
    body = (await http.get(f"/v1/transfers/{first['case_id']}", headers=h(app_hub, WORCS))).json()
    assert body["superseded_by_handover_on"] == _on(180)
    last = body["history"][-1]
    assert (last["action"], last["to_state"], last["actor"]) == ("withdraw", "withdrawn", "hub:register")
    assert SUPERSEDED_REASON in last["explanation"] and _on(180) in last["explanation"]
    task = (await http.get(f"/v1/fhir/Task/{body['fhir_task_id']}", headers=h(app_hub, WORCS))).json()
    assert task["status"] == "cancelled" and task["statusReason"]["text"] == SUPERSEDED_REASON
    check_told_cancelled(await _told(hub, first["case_id"], "withdrawn"), SUPERSEDED_REASON)
    # The person's position names the open case once, and the superseded one as such.
    position = (await http.get(f"/v1/persons/{app_hub.person_id}/s117", headers=h(app_hub, BUCKS))).json()
    shown = {t["case_id"]: t for t in position["transfers"]}
    assert shown[still["case_id"]]["state"] == "awaiting-acknowledgement"
    assert shown[first["case_id"]]["state"] == "withdrawn" and "superseded" in shown[first["case_id"]]["text"]
    return still


async def accepted_first(app_hub) -> dict:  # noqa: ANN001
    """The person's one transfer case, accepted by Worcestershire (the incoming body), the acceptance dispatched."""
    [first] = await transfer_cases(app_hub.hub)
    r = await app_hub.http.post(f"/v1/transfers/{first['case_id']}/accept", headers=h(app_hub, WORCS))
    assert r.status_code == 200, r.text
    await drain(app_hub)
    return first


@pytest.fixture
async def redetained(app_hub):  # noqa: ANN001
    return await moved_and_redetained_on(app_hub)


async def test_a_hand_over_late_history_moves_to_another_date_leaves_one_open_case(redetained):
    app_hub = redetained
    hub = app_hub.hub
    [first] = await transfer_cases(hub)
    assert (first["state"], first["handover_on"]) == ("awaiting-acknowledgement", _on(200))
    await moved_late(app_hub)
    still = await check_moved(app_hub, first)
    # Replaying the log through the workflows' group changes nothing and tells nobody again.
    told = await _told(hub, first["case_id"], "withdrawn")
    before = await transfer_cases(hub)
    await hub.bus.rewind("workflows", "s117.events", 0)
    await drain(app_hub)
    assert await transfer_cases(hub) == before
    assert {o: len(b) for o, b in (await _told(hub, first["case_id"], "withdrawn")).items()} == \
        {o: len(b) for o, b in told.items()}
    assert open_cases(before) == [still]


async def test_an_accepted_hand_over_moved_by_late_history_is_superseded(redetained):
    """Worcestershire accepted the day-200 hand-over; the history as corrected
    hands over on day 180. The accepted case is withdrawn (its acceptance kept
    in its history), both told; the day-180 hand-over is a case of its own to
    accept (the date is what changed: who pays for days 180-200)."""
    app_hub = redetained
    http, hub = app_hub.http, app_hub.hub
    first = await accepted_first(app_hub)
    await moved_late(app_hub)
    await check_moved(app_hub, first)
    body = (await http.get(f"/v1/transfers/{first['case_id']}", headers=h(app_hub, BUCKS))).json()
    assert [s["action"] for s in body["history"]] == ["open", "accept", "withdraw"]
    assert "accepted" in body["history"][-1]["explanation"]


async def test_an_accepted_transfer_late_history_shows_never_happened_is_withdrawn_and_both_told(redetained):
    app_hub = redetained
    http, hub = app_hub.http, app_hub.hub
    first = await accepted_first(app_hub)
    await _post(app_hub, "trust", {**app_hub.base, **STILL_IN_HOSPITAL, "source_message_id": "wd-late"})
    await drain(app_hub)
    [case] = await transfer_cases(hub)
    assert case["state"] == "withdrawn"
    body = (await http.get(f"/v1/transfers/{first['case_id']}", headers=h(app_hub, BUCKS))).json()
    assert [s["action"] for s in body["history"]] == ["open", "accept", "withdraw"]
    assert body["history"][-1]["from_state"] == "accepted"
    assert WITHDRAWN_REASON in body["history"][-1]["explanation"]
    assert body.get("superseded_by_handover_on") is None
    check_told_cancelled(await _told(hub, first["case_id"], "withdrawn"), WITHDRAWN_REASON)
    r = await http.post(f"/v1/transfers/{first['case_id']}/accept", headers=h(app_hub, WORCS))
    assert r.status_code == 409 and r.json()["rule"] == "transfer-withdrawn"


async def test_a_contested_transfer_is_left_to_the_dispute_its_contest_opened(redetained):
    """The contest opened a dispute, and the dispute carries the question:
    while it is open, ingest holds a change that would move the responsible
    council (Worcs 8.5: a 409, quarantined), unless it is a new qualifying
    detention, a legal event recorded whatever the dispute (Worcs 4.3.3,
    17.1, 19.2, 19.6, 15.1). The hub never withdraws a contested case nor
    settles a dispute for its parties (one party never resolves alone; nor
    does the hub)."""
    app_hub = redetained
    http, hub = app_hub.http, app_hub.hub
    [first] = await transfer_cases(hub)
    r = await http.post(f"/v1/transfers/{first['case_id']}/contest", headers=h(app_hub, WORCS),
                        json={"reason": "not ordinarily resident here"})
    assert r.status_code == 200, r.text
    await drain(app_hub)
    # Heard late: detained again under s3 from Buckinghamshire on day 140 and still in hospital on day 200.
    # It begins a qualifying detention, so it is recorded (it was held before: 409 held-open-dispute), and
    # Buckinghamshire is responsible again: the history holds no hand-over any more.
    r = await http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                        json={**app_hub.base, **STILL_IN_HOSPITAL, "source_message_id": "wd-late"})
    assert r.status_code == 202, r.text
    await drain(app_hub)
    # Any other change that would move the council is still held: the person left hospital on day 170, which
    # would make day 200 a re-detention from Worcestershire again (a left-hospital change, not a detention).
    r = await http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                        json={**app_hub.base, **LEFT_BEFORE, "source_message_id": "wd-left"})
    assert r.status_code == 409 and r.json()["rule"] == "held-open-dispute", r.text
    await drain(app_hub)
    # The contested case is left to the dispute, which stays open.
    assert [c["state"] for c in await transfer_cases(hub)] == ["contested"]
    async with hub.engine.connect() as conn:
        disputes = (await conn.execute(select(workflow_cases.c.state).where(workflow_cases.c.kind == "dispute"))
                    ).scalars().all()
        await conn.rollback()
    assert disputes == ["open"]


# ------------------------------------------------------------- the machine


def test_the_machine_supersedes_a_moved_hand_over_and_withdraws_an_accepted_one():
    from hub.domain.workflows import machine as m
    from hub.domain.workflows.model import TransferState
    from hub.workflows.fhir_task import build_task
    from tests.unit.test_transfer_withdrawn import AREA, DAY0, HOLIDAYS

    day200, day180 = date(2025, 7, 25), date(2025, 7, 5)
    case, _ = m.open_transfer(case_id="t1", person_id="p1", role="council", outgoing=BUCKS, incoming=WORCS,
                              on=DAY0, basis="Worcs 4.3.3", area=AREA, holidays=HOLIDAYS, handover_on=day200)
    assert case.handover_on == day200
    after, step = m.withdraw(case, DAY0, moved_to=day180)
    assert after.state == TransferState.WITHDRAWN and after.superseded_by_handover_on == day180
    assert SUPERSEDED_REASON in step.explanation and day180.isoformat() in step.explanation
    task = build_task(after)
    assert task["status"] == "cancelled" and task["statusReason"]["text"] == SUPERSEDED_REASON
    accepted, _ = m.accept(case, WORCS, DAY0)
    after, step = m.withdraw(accepted, DAY0)
    assert (step.from_state, after.state) == ("accepted", "withdrawn") and "accepted by" in step.explanation
    assert build_task(after)["statusReason"]["text"] == WITHDRAWN_REASON


async def test_a_change_in_its_turn_is_passed_over_unread_by_the_workflows(redetained, monkeypatch):
    """Accepted cases stay withdrawable for good, so every later change of the person would make the
    workflows' consumer read and evaluate their history in a write transaction. Only late history can
    withdraw a case: a change in its turn (its recorded event's header `late` "0") is passed over
    unread, and a late one still withdraws."""
    app_hub = redetained
    hub = app_hub.hub
    first = await accepted_first(app_hub)
    read: list[str] = []
    real = hub.workflows.on_history_changed

    async def counted(conn, person_id, event_id):  # noqa: ANN001, ANN202
        read.append(event_id)
        return await real(conn, person_id, event_id)

    monkeypatch.setattr(hub.workflows, "on_history_changed", counted)
    await _post(app_hub, "R1A", {**app_hub.base, "change_type": "left-hospital", "effective_date": _on(260),
                                 "hospital_ods": "R1A", "source_message_id": "wd-in-turn"})
    await drain(app_hub)
    assert read == [] and [c["state"] for c in await transfer_cases(hub)] == ["accepted"]
    await moved_late(app_hub)
    assert len(read) == 1
    assert [c["state"] for c in await transfer_cases(hub) if c["case_id"] == first["case_id"]] == ["withdrawn"]
