"""A dispute case resolved by a source's `dispute-resolved` register change is
reopened when that change is retracted as recorded in error
(POST /v1/register-changes/{id}/retraction; hub/workflows/service.py
`_retracted_resolutions`): back at the stage it was resolved at, its clock
started again, the outcome gone, its agreed interim arrangements in force
again, the parties told once, its Task `in-progress`; the transfer case the
resolution's hand-over opened is withdrawn. A case the parties resolved by
agreement is untouched by retracting another change.

In process on SQLite: real ingest, dispatcher, workflows' consumer and clock
scanner, driven through the API (the fixtures of the withdrawal's tests).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import select

from hub.clients import add_client
from hub.domain.agreements import AreaAgreement
from hub.domain.workflows import machine
from hub.domain.workflows.model import (
    CLOCK_ACTOR,
    DETERMINATION_ACTOR,
    DISPUTE_REOPENED_REASON,
    REGISTER_ACTOR,
    DisputeState,
    WorkflowRefusal,
)
from hub.money.responsibility import load_interims
from hub.store.schema import workflow_cases
from tests.unit.test_dispute_withdrawn_on_retraction import (
    BUCKS,
    WORCS,
    _case,
    _raise_on_register,
    _record,
    _told,
    _transitions,
    disputed_hub,  # noqa: F401  (the fixture)
    drain,
    h,
)


async def _resolve_on_register(app: Any, dispute_id: str, responsible: str) -> tuple[str, str]:
    """Each council records the same outcome on the register (with its own client): the second
    record completes it (every party has recorded it: the engine's rule). The two change ids."""
    ids = []
    for org in (BUCKS, WORCS):
        if f"rw-{org}" not in app.keys:
            app.keys[f"rw-{org}"] = (await add_client(app.hub.engine, f"rw-{org}", org, "council",
                                                      ["register:write"]))[1]
        body = {"source_system": "Mosaic", "source_message_id": f"resolve-{dispute_id}-{org}",
                "change_type": "dispute-resolved", "effective_date": "2025-09-15", "person": app.person,
                "dispute": {"dispute_id": dispute_id, "kind": "council", "parties": [BUCKS, WORCS],
                            "resolved_responsible": responsible}}
        r = await app.http.post("/v1/register-changes", headers={"X-API-Key": app.keys[f"rw-{org}"]}, json=body)
        assert r.status_code == 202, r.text
        ids.append(r.json()["change_id"])
    return ids[0], ids[1]


async def _retract_as(app: Any, key: str, change_id: str) -> Any:
    return await app.http.post(f"/v1/register-changes/{change_id}/retraction", headers={"X-API-Key": app.keys[key]},
                               json={"reason": "recorded against the wrong dispute"})


async def _transfer_cases(app: Any) -> dict[str, str]:
    async with app.hub.engine.connect() as conn:
        rows = (await conn.execute(select(workflow_cases.c.case_id, workflow_cases.c.state).where(
            workflow_cases.c.kind == "transfer"))).all()
    return {r.case_id: r.state for r in rows}


async def test_a_dispute_resolved_on_the_register_is_reopened_when_its_resolution_is_retracted(disputed_hub):  # noqa: F811
    app, http, hub = disputed_hub, disputed_hub.http, disputed_hub.hub
    await _raise_on_register(app, "REG-R1")
    await drain(app)
    [item] = (await http.get("/v1/disputes", headers=h(app, BUCKS))).json()["items"]
    case_id = item["case_id"]
    terms = {"lead_body": WORCS, "shares": {BUCKS: 40, WORCS: 60}}
    for org in (BUCKS, WORCS):
        r = await http.post(f"/v1/disputes/{case_id}/interim", headers=h(app, org), json=terms)
        assert r.status_code == 200, r.text
    r = await http.post(f"/v1/disputes/{case_id}/escalate", headers=h(app, BUCKS))
    assert r.status_code == 200 and r.json()["state"] == "escalated", r.text
    bucks_record, completing = await _resolve_on_register(app, "REG-R1", WORCS)
    await drain(app)
    resolved = await _case(app, case_id)
    assert (resolved["state"], resolved["responsible"], resolved["resolved_by_change"]) == \
        ("resolved", WORCS, completing)
    resolved_on = date.fromisoformat(resolved["resolved_on"])
    # The resolution moved the council's responsibility to Worcestershire: a transfer binding on both.
    transfers = await _transfer_cases(app)
    assert list(transfers.values()) == ["accepted"], transfers
    # The agreed interim arrangements ended the day before the resolution (agreed the same day: none left).
    async with hub.engine.connect() as conn:
        spans = (await load_interims(conn, [app.person_id])).get(app.person_id, ())
    assert all(span.last is not None and span.last < resolved_on for span in spans), spans
    told_before = await _told(app, case_id)
    steps_before = await _transitions(app, case_id)

    # Bucks's own record of the outcome retracted twelve days on: the outcome no longer has every
    # party's record, so the case is open again at the stage it was resolved at.
    hub.workflows.clock.offset_days = 12
    reopened_on = hub.workflows.clock.today()
    r = await _retract_as(app, f"rw-{BUCKS}", bucks_record)
    assert r.status_code == 200, r.text
    await drain(app)
    case = await _case(app, case_id)
    assert case["state"] == "escalated" and case["stage_index"] == 1
    assert case["responsible"] is None and case["resolved_on"] is None and case["resolved_by_change"] == ""
    assert case["reopened_on"] == reopened_on.isoformat()
    assert case["clock"]["started_on"] == reopened_on.isoformat() and not case["clock"]["breached"]
    last = case["history"][-1]
    assert (last["action"], last["from_state"], last["to_state"], last["actor"]) == \
        ("reopen", "resolved", "escalated", REGISTER_ACTOR)
    assert DISPUTE_REOPENED_REASON in last["explanation"] and "retracted" in last["citation"]
    assert await _transitions(app, case_id) == [*steps_before, "reopen"]
    stage = case["stage_history"][-1]
    assert (stage["outcome"], stage["ended_on"], stage["due_on"]) == (None, None, case["clock"]["due_on"])
    # Listed as escalated again, not as resolved.
    r = await http.get("/v1/disputes?state=resolved", headers=h(app, WORCS))
    assert r.status_code == 200 and r.json()["items"] == []

    # Each party told once: the Task in progress again, saying why, with no outcome.
    told = await _told(app, case_id)
    for org in (BUCKS, WORCS):
        new = told[org][len(told_before[org]):]
        assert [t["status"] for t in new] == ["in-progress"], (org, new)
        notes = [n["text"] for n in new[0]["note"]]
        assert any(DISPUTE_REOPENED_REASON in n for n in notes) and not any(n.startswith("resolved") for n in notes)
    r = await http.get(f"/v1/fhir/Task/{case['fhir_task_id']}", headers=h(app, WORCS))
    assert r.status_code == 200 and r.json()["status"] == "in-progress"

    # The hand-over the resolution told is gone: its transfer case is withdrawn.
    assert set((await _transfer_cases(app)).values()) == {"withdrawn"}
    # The agreed interim arrangements are in force again (open-ended).
    async with hub.engine.connect() as conn:
        [span] = (await load_interims(conn, [app.person_id]))[app.person_id]
    assert (span.lead_body, span.last) == (WORCS, None)

    # The parties act on it again: they resolve it by agreement.
    for org in (BUCKS, WORCS):
        r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, org),
                            json={"responsible": BUCKS, "responsible_from": "2025-09-01"})
        assert r.status_code in (200, 202), r.text
    await drain(app)
    case = await _case(app, case_id)
    assert (case["state"], case["responsible"]) == ("resolved", BUCKS)

    # Retracted again, the log replayed: the parties' resolution stands, nobody is told again.
    steps = await _transitions(app, case_id)
    told = await _told(app, case_id)
    r = await _retract_as(app, f"rw-{BUCKS}", bucks_record)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    async with hub.engine.begin() as conn:
        assert await hub.workflows.on_retracted(conn, app.person_id, bucks_record) == []
    await hub.bus.rewind("workflows", "s117.events", 0)
    await drain(app)
    assert await _transitions(app, case_id) == steps
    assert await _told(app, case_id) == told
    assert (await _case(app, case_id))["state"] == "resolved"


async def test_a_resolution_by_the_parties_is_untouched_by_retracting_another_change(disputed_hub):  # noqa: F811
    app, http = disputed_hub, disputed_hub.http
    await _raise_on_register(app, "REG-R2")
    wrong_move = await _record(app, "wrong-move-r2", "moved", residence_la_gss=BUCKS)
    await drain(app)
    [item] = (await http.get("/v1/disputes", headers=h(app, BUCKS))).json()["items"]
    case_id = item["case_id"]
    for org in (BUCKS, WORCS):
        r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, org),
                            json={"responsible": BUCKS, "responsible_from": "2025-09-01"})
        assert r.status_code in (200, 202), r.text
    await drain(app)
    steps, told = await _transitions(app, case_id), await _told(app, case_id)
    r = await _retract_as(app, "trust", wrong_move)
    assert r.status_code == 200, r.text
    await drain(app)
    case = await _case(app, case_id)
    assert (case["state"], case["responsible"], case["reopened_on"]) == ("resolved", BUCKS, None)
    assert await _transitions(app, case_id) == steps and await _told(app, case_id) == told


def test_only_the_hub_reopens_and_only_a_resolution_recorded_on_the_register() -> None:
    area, holidays = AreaAgreement(name="test", acknowledgement_working_days=10), frozenset[date]()
    case, _ = machine.raise_dispute(case_id="c1", person_id="p1", kind="council", parties=(BUCKS, WORCS),
                                    raised_by=REGISTER_ACTOR, on=date(2025, 9, 1), reason="on the register",
                                    meeting_needs=BUCKS, area=area, holidays=holidays, dispute_id="REG-1")
    with pytest.raises(WorkflowRefusal) as refused:
        machine.reopen(case, date(2025, 9, 2), holidays)
    assert (refused.value.status, refused.value.rule) == (409, "not-resolved")
    on_register, _ = machine.resolve(case, REGISTER_ACTOR, date(2025, 9, 3), WORCS, date(2025, 9, 1),
                                     by_change="chg-1")
    for actor in (BUCKS, WORCS, CLOCK_ACTOR, DETERMINATION_ACTOR):
        with pytest.raises(WorkflowRefusal) as refused:
            machine.reopen(on_register, date(2025, 9, 4), holidays, actor=actor)
        assert refused.value.status == 403
    after, step = machine.reopen(on_register, date(2025, 9, 4), holidays)
    assert (after.state, after.responsible, after.resolved_by_change, step.to_state) == \
        (DisputeState.OPEN, None, "", "open")
    assert after.clock is not None and after.clock.started_on == date(2025, 9, 4)
    # A party's attempt on a resolved case is told the case is closed, never offered the hub's reopening.
    with pytest.raises(WorkflowRefusal) as refused:
        machine.escalate(on_register, BUCKS, date(2025, 9, 4), holidays)
    assert "reopen" not in refused.value.detail and "closed" in refused.value.detail
    # Resolved by the parties' agreement: the hub does not reopen it.
    proposed, _ = machine.resolve(case, BUCKS, date(2025, 9, 3), WORCS, date(2025, 9, 1))
    agreed, _ = machine.resolve(proposed, WORCS, date(2025, 9, 3), WORCS, date(2025, 9, 1))
    assert agreed.state == DisputeState.RESOLVED
    with pytest.raises(WorkflowRefusal) as refused:
        machine.reopen(agreed, date(2025, 9, 4), holidays)
    assert (refused.value.status, refused.value.rule) == (409, "not-resolved-on-register")
