"""A dispute case raised by a source's `dispute-raised` register change is
withdrawn when that change is retracted as recorded in error
(POST /v1/register-changes/{id}/retraction; hub/workflows/service.py
`on_retracted`): a final state, its clock stopped, the parties told once with
the reason, its Task `cancelled`, no party action taken on it any more, its
agreed interim arrangements ended. A dispute a body raised through the API is
not touched by the retraction of another change.

In process on SQLite: real ingest, dispatcher, workflows' consumer and clock
scanner, driven through the API.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from hub.clients import add_client
from hub.domain.agreements import AreaAgreement
from hub.domain.workflows import machine
from hub.domain.workflows.model import (
    CLOCK_ACTOR,
    DETERMINATION_ACTOR,
    DISPUTE_WITHDRAWN_REASON,
    REGISTER_ACTOR,
    DisputeState,
    WorkflowRefusal,
)
from hub.fhir.validate import validate_message
from hub.money.responsibility import load_interims
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import deliveries, deliveries_with_messages, delivery_messages, subscriptions, \
    workflow_transitions
from hub.workflows.consumer import WorkflowConsumer
from hub.domain.dates import england_day

BUCKS, WORCS = "E06000060", "E10000034"
START = date(2025, 1, 6)
UPDATED = "s117-dispute-updated"


async def drain(app_hub: Any) -> None:
    consumer = WorkflowConsumer(app_hub.hub.workflows, app_hub.hub.bus, app_hub.hub.engine)
    while (await app_hub.hub.dispatcher.run_once()) + (await consumer.run_once()):
        pass


def h(app_hub: Any, org: str) -> dict[str, str]:
    return {"X-API-Key": app_hub.keys[f"wf-{org}"]}


@pytest.fixture
async def disputed_hub(app_hub):  # noqa: ANN001
    """A person detained from Buckinghamshire who later moved to Worcestershire (Bucks stays
    responsible): no transfer case, so nothing but a dispute case can make a retraction matter
    to the workflows. Both councils subscribe to a feed."""
    hub = app_hub.hub
    for org in (BUCKS, WORCS):
        app_hub.keys[f"wf-{org}"] = (await add_client(hub.engine, org, org, "council",
                                                      ["s117:read", "workflows:write", "subscriptions:write"]))[1]
        r = await app_hub.http.post("/v1/subscriptions", headers=h(app_hub, org), json={"channel": "feed"})
        assert r.status_code == 201, r.text
    app_hub.keys["admin"] = (await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]
    changes = detention_to_move_scenario(random.Random(11), "dwr", START)
    for c in changes:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    await drain(app_hub)
    app_hub.person_id = r.json()["person_id"]
    app_hub.person = changes[0]["person"]
    async with hub.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(workflow_transitions))).scalar_one() == 0
    return app_hub


async def _record(app: Any, message_id: str, change_type: str, **fields: Any) -> str:
    body = {"source_system": "Mosaic", "source_message_id": message_id, "change_type": change_type,
            "effective_date": "2025-09-01", "person": app.person, **fields}
    r = await app.http.post("/v1/register-changes", headers={"X-API-Key": app.keys["trust"]}, json=body)
    assert r.status_code == 202, r.text
    return r.json()["change_id"]


async def _raise_on_register(app: Any, dispute_id: str) -> str:
    return await _record(app, f"raise-{dispute_id}", "dispute-raised",
                         dispute={"dispute_id": dispute_id, "kind": "council", "parties": [BUCKS, WORCS]})


async def _retract(app: Any, change_id: str) -> Any:
    return await app.http.post(f"/v1/register-changes/{change_id}/retraction",
                               headers={"X-API-Key": app.keys["trust"]},
                               json={"reason": "recorded against the wrong patient"})


async def _case(app: Any, case_id: str) -> dict[str, Any]:
    r = await app.http.get(f"/v1/disputes/{case_id}", headers=h(app, BUCKS))
    assert r.status_code == 200, r.text
    return r.json()


async def _told(app: Any, case_id: str) -> dict[str, list[dict[str, Any]]]:
    """Per council, the Tasks of this case each `s117-dispute-updated` message it was sent carried."""
    async with app.hub.engine.connect() as conn:
        rows = (await conn.execute(
            select(subscriptions.c.org_code, delivery_messages.c.payload)
            .select_from(deliveries_with_messages.join(
                subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id))
            .where(deliveries.c.event_type == UPDATED).order_by(deliveries.c.delivery_seq))).all()
    out: dict[str, list[dict[str, Any]]] = {BUCKS: [], WORCS: []}
    for row in rows:
        bundle = orjson.loads(app.hub.protector.decrypt(row.payload))
        tasks = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task"
                 and e["resource"]["identifier"][0]["value"] == case_id]
        if tasks:
            validate_message(bundle)
            out[row.org_code].extend(tasks)
    return out


async def _transitions(app: Any, case_id: str) -> list[str]:
    async with app.hub.engine.connect() as conn:
        return list((await conn.execute(select(workflow_transitions.c.action).where(
            workflow_transitions.c.case_id == case_id).order_by(workflow_transitions.c.seq))).scalars())


async def test_a_dispute_raised_on_the_register_is_withdrawn_when_its_change_is_retracted(disputed_hub):
    app, http, hub = disputed_hub, disputed_hub.http, disputed_hub.hub
    change_id = await _raise_on_register(app, "REG-W1")
    await drain(app)
    [item] = (await http.get("/v1/disputes", headers=h(app, BUCKS))).json()["items"]
    case_id = item["case_id"]
    assert (item["state"], item["raised_by"]) == ("open", "hub:register")
    due = date.fromisoformat(item["clock"]["due_on"])
    # The councils agree interim terms (money charges them), and Bucks proposes an outcome.
    terms = {"lead_body": WORCS, "shares": {BUCKS: 40, WORCS: 60}}
    for org in (BUCKS, WORCS):
        r = await http.post(f"/v1/disputes/{case_id}/interim", headers=h(app, org), json=terms)
        assert r.status_code == 200, r.text
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, BUCKS),
                        json={"responsible": WORCS, "responsible_from": "2025-09-01"})
    assert r.status_code == 202, r.text
    await drain(app)
    told_before = await _told(app, case_id)
    assert all(told_before[org] for org in (BUCKS, WORCS))

    # Retracted ten days on: the case is withdrawn by the hub.
    hub.workflows.clock.offset_days = 10
    withdrawn_on = hub.workflows.clock.today()
    r = await _retract(app, change_id)
    assert r.status_code == 200, r.text
    await drain(app)
    case = await _case(app, case_id)
    assert case["state"] == "withdrawn" and case["clock"] is None and case["resolution"] is None
    assert case["withdrawn_on"] == withdrawn_on.isoformat()
    last = case["history"][-1]
    assert (last["action"], last["from_state"], last["to_state"], last["actor"]) == \
        ("withdraw", "open", "withdrawn", REGISTER_ACTOR)
    assert "retracted as recorded in error" in last["citation"] and DISPUTE_WITHDRAWN_REASON in last["explanation"]
    assert case["stage_history"][-1]["outcome"] == "withdrawn"
    assert case["stage_history"][-1]["ended_on"] == withdrawn_on.isoformat()
    # Listed as withdrawn, no longer as open.
    r = await http.get("/v1/disputes?state=withdrawn", headers=h(app, WORCS))
    assert r.status_code == 200 and [c["case_id"] for c in r.json()["items"]] == [case_id]
    assert (await http.get("/v1/disputes?state=open", headers=h(app, WORCS))).json()["items"] == []

    # Each party told once, with the reason: the Task cancelled.
    told = await _told(app, case_id)
    for org in (BUCKS, WORCS):
        new = told[org][len(told_before[org]):]
        assert [t["status"] for t in new] == ["cancelled"], (org, new)
        assert new[0]["statusReason"]["text"] == DISPUTE_WITHDRAWN_REASON
        assert new[0]["businessStatus"]["text"] == "withdrawn"
    r = await http.get(f"/v1/fhir/Task/{case['fhir_task_id']}", headers=h(app, WORCS))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["statusReason"]["text"] == DISPUTE_WITHDRAWN_REASON and "owner" not in r.json()

    # No party (nor the determination) acts on it any more.
    for org in (BUCKS, WORCS):
        for path, body in (("escalate", None),
                           ("resolve", {"responsible": WORCS, "responsible_from": "2025-09-01"}),
                           ("interim", terms)):
            r = await http.post(f"/v1/disputes/{case_id}/{path}", headers=h(app, org), json=body)
            assert r.status_code == 409, (org, path, r.text)
            assert r.json()["rule"] == "dispute-withdrawn" and "retracted" in r.json()["detail"]
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers={"X-API-Key": app.keys["admin"]},
                        json={"responsible": WORCS, "responsible_from": "2025-09-01", "determination": "SoS/1"})
    assert r.status_code == 409 and r.json()["rule"] == "dispute-withdrawn"

    # Its agreed interim arrangements end the day before the withdrawal.
    async with hub.engine.connect() as conn:
        spans = (await load_interims(conn, [app.person_id])).get(app.person_id, ())
    assert [(s.dispute_id, s.lead_body, s.last) for s in spans] == \
        [("REG-W1", WORCS, withdrawn_on - timedelta(days=1))]

    # Its clock is stopped: long after the stage's deadline the scanner sends nothing for it.
    steps = await _transitions(app, case_id)
    hub.workflows.clock.offset_days = (due - england_day()).days + 400
    assert await hub.workflows.scan() == {"reminders": 0, "breaches": 0}
    await drain(app)
    assert await _transitions(app, case_id) == steps
    async with hub.engine.connect() as conn:
        deadlines = (await conn.execute(select(func.count()).select_from(deliveries).where(
            deliveries.c.event_type == "s117-workflow-deadline"))).scalar_one()
    assert deadlines == 0

    # Retracted again, the event read again, the log replayed: nothing changes, nobody is told again.
    r = await _retract(app, change_id)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    async with hub.engine.begin() as conn:
        assert await hub.workflows.on_retracted(conn, app.person_id, change_id) == []
    await hub.bus.rewind("workflows", "s117.events", 0)
    await drain(app)
    assert await _transitions(app, case_id) == steps
    assert await _told(app, case_id) == told
    assert (await _case(app, case_id))["state"] == "withdrawn"


async def test_a_dispute_a_body_raised_is_untouched_by_retracting_another_change(disputed_hub):
    """Bucks raises a dispute through the API; the source's own dispute on the register and a move
    recorded in error are retracted: only the register's dispute is withdrawn."""
    app, http = disputed_hub, disputed_hub.http
    r = await http.post("/v1/disputes", headers=h(app, BUCKS),
                        json={"person_id": app.person_id, "kind": "council", "parties": [BUCKS, WORCS],
                              "reason": "ordinary residence before the detention"})
    assert r.status_code == 201, r.text
    api_case = r.json()["case_id"]
    register_change = await _raise_on_register(app, "REG-W2")
    wrong_move = await _record(app, "wrong-move", "moved", residence_la_gss=BUCKS)
    await drain(app)
    by_id = {c["dispute_id"]: c["case_id"] for c in
             (await http.get("/v1/disputes", headers=h(app, BUCKS))).json()["items"]}
    assert set(by_id) == {"REG-W2", (await _case(app, api_case))["dispute_id"]}
    steps = await _transitions(app, api_case)
    told = await _told(app, api_case)

    for change_id in (wrong_move, register_change):
        r = await _retract(app, change_id)
        assert r.status_code == 200, r.text
        await drain(app)
    assert (await _case(app, by_id["REG-W2"]))["state"] == "withdrawn"
    case = await _case(app, api_case)
    assert case["state"] == "open" and case["clock"] is not None and case["withdrawn_on"] is None
    assert await _transitions(app, api_case) == steps
    assert await _told(app, api_case) == told
    r = await http.post(f"/v1/disputes/{api_case}/escalate", headers=h(app, WORCS))
    assert r.status_code == 200 and r.json()["state"] == "escalated"


def test_only_the_hub_withdraws_a_dispute_and_only_once() -> None:
    area, holidays = AreaAgreement(name="test", acknowledgement_working_days=10), frozenset[date]()
    case, _ = machine.raise_dispute(case_id="c1", person_id="p1", kind="council", parties=(BUCKS, WORCS),
                                    raised_by=REGISTER_ACTOR, on=date(2025, 9, 1), reason="on the register",
                                    meeting_needs=BUCKS, area=area, holidays=holidays, dispute_id="REG-1")
    escalated, _ = machine.escalate(case, BUCKS, date(2025, 9, 2), holidays)
    for before in (case, escalated):
        for actor in (BUCKS, WORCS, CLOCK_ACTOR, DETERMINATION_ACTOR):
            with pytest.raises(WorkflowRefusal) as refused:
                machine.withdraw_dispute(before, date(2025, 9, 3), actor=actor)
            assert refused.value.status == 403
        after, step = machine.withdraw_dispute(before, date(2025, 9, 3))
        assert after.state == DisputeState.WITHDRAWN and after.clock is None and step.to_state == "withdrawn"
        with pytest.raises(WorkflowRefusal) as refused:
            machine.withdraw_dispute(after, date(2025, 9, 4))
        assert (refused.value.status, refused.value.rule) == (409, "already-withdrawn")
