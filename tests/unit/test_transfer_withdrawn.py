"""A transfer case the hub withdraws: later-arriving history shows the
hand-over it was opened for never happened.

The state machine: `withdrawn` is final, reached from every state that is not
(by the hub only), and nothing can be done to a withdrawn case. Through the
consumer and the API on SQLite: an in-order re-detention from a new home
opens the transfer; a late change (the person had been detained again in
the old area before the move, and was still in hospital when "re-detained":
one period of detention, one determination, Worcs 4.3.1) shows
responsibility never changed hands, and the case is withdrawn, both bodies told, accepting it is a named 409, a replay of the log
withdraws nothing twice and opens nothing, and history that shows the
hand-over again opens a new case."""

from __future__ import annotations

import random
from datetime import date, timedelta

import orjson
import pytest
from sqlalchemy import select

from hub.clients import add_client
from hub.domain.agreements import AreaAgreement
from hub.domain.workflows import machine as m
from hub.domain.workflows.model import (
    CLOCK_ACTOR,
    FINAL_STATES,
    REGISTER_ACTOR,
    WITHDRAWN_REASON,
    Action,
    TransferState,
    WorkflowRefusal,
)
from hub.fhir.validate import validate_message
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import (
    bus_messages,
    deliveries,
    deliveries_with_messages,
    delivery_messages,
    subscriptions,
    workflow_cases,
    workflow_transitions,
)
from hub.workflows.consumer import WorkflowConsumer
from hub.workflows.fhir_task import build_task

BUCKS, WORCS = "E06000060", "E10000034"
HOLIDAYS = frozenset({date(2025, 5, 5)})
AREA = AreaAgreement(name="test", acknowledgement_working_days=10, reminder_working_days=2)
DAY0 = date(2025, 4, 28)  # due 13 May
LATE = date(2025, 5, 14)
START = date(2025, 1, 6)
OPEN = (TransferState.AWAITING, TransferState.OVERDUE)


def _in(state: TransferState):
    case, _ = m.open_transfer(case_id="t1", person_id="p1", role="council", outgoing=BUCKS, incoming=WORCS,
                              on=DAY0, basis="Worcs 4.3.3", area=AREA, holidays=HOLIDAYS)
    if state is TransferState.OVERDUE:
        case, _ = m.transfer_breach(case, LATE, AREA)
    elif state is TransferState.ACCEPTED:
        case, _ = m.accept(case, WORCS, DAY0)
    elif state is TransferState.CONTESTED:
        case, _ = m.contest(case, WORCS, DAY0, "not ordinarily resident here")
    elif state is TransferState.WITHDRAWN:
        case, _ = m.withdraw(case, DAY0)
    return case


# ------------------------------------------------------------- the machine


def test_withdrawn_is_a_final_transfer_state():
    assert TransferState.WITHDRAWN in FINAL_STATES
    assert {s for s in TransferState if s not in FINAL_STATES} == set(OPEN)


@pytest.mark.parametrize("state", OPEN)
def test_the_hub_withdraws_a_transfer_from_each_state_not_final(state):
    case = _in(state)
    on = LATE if state is TransferState.OVERDUE else DAY0
    after, step = m.withdraw(case, on, "a late change")
    assert after.state == TransferState.WITHDRAWN == step.to_state
    assert step.from_state == state and step.action is Action.WITHDRAW and step.actor == REGISTER_ACTOR
    assert after.clock is None  # the clock stops
    assert WITHDRAWN_REASON in step.explanation and "a late change" in step.explanation
    assert "Worcs 4.3.3" in step.citation and "UK GDPR Art. 16, 19" in step.citation
    # Nothing else of the case changes: the same bodies, role and basis.
    assert (after.outgoing, after.incoming, after.role, after.basis) == (case.outgoing, case.incoming, case.role,
                                                                         case.basis)


@pytest.mark.parametrize(("state", "rule"), [(TransferState.CONTESTED, "case-closed"),
                                             (TransferState.WITHDRAWN, "already-withdrawn")])
def test_a_contested_or_withdrawn_transfer_is_never_withdrawn(state, rule):
    """A contested case is left to the dispute its contest opened; a withdrawn one is final."""
    with pytest.raises(WorkflowRefusal) as refused:
        m.withdraw(_in(state), DAY0)
    assert (refused.value.status, refused.value.rule) == (409, rule)


@pytest.mark.parametrize("actor", [WORCS, BUCKS, CLOCK_ACTOR])
def test_only_the_hub_withdraws(actor):
    with pytest.raises(WorkflowRefusal) as refused:
        m.withdraw(_in(TransferState.AWAITING), DAY0, actor=actor)
    assert (refused.value.status, refused.value.rule) == (403, "register-only")


@pytest.mark.parametrize(("action", "rule"), [("accept", "transfer-withdrawn"), ("contest", "transfer-withdrawn"),
                                              ("breach", "case-closed")])
def test_nothing_is_done_to_a_withdrawn_transfer(action, rule):
    case = _in(TransferState.WITHDRAWN)
    with pytest.raises(WorkflowRefusal) as refused:
        if action == "accept":
            m.accept(case, WORCS, DAY0)
        elif action == "contest":
            m.contest(case, WORCS, DAY0, "not ordinarily resident here")
        else:
            m.transfer_breach(case, LATE, AREA)
    assert (refused.value.status, refused.value.rule) == (409, rule)
    assert "withdrawn" in refused.value.detail and refused.value.citation


def test_a_withdrawn_transfer_is_a_cancelled_task_with_its_reason():
    task = build_task(_in(TransferState.WITHDRAWN))
    assert task["status"] == "cancelled" and task["businessStatus"]["text"] == "withdrawn"
    assert task["statusReason"]["text"] == WITHDRAWN_REASON
    assert "restriction" not in task  # no clock
    from fhir.resources.R4B.task import Task

    Task.model_validate(task)


# ------------------------------------------------- through the consumer and the API


async def drain(app_hub) -> None:  # noqa: ANN001
    consumer = WorkflowConsumer(app_hub.hub.workflows, app_hub.hub.bus, app_hub.hub.engine)
    while (await app_hub.hub.dispatcher.run_once()) + (await consumer.run_once()):
        pass


def h(app_hub, org: str) -> dict:  # noqa: ANN001
    return {"X-API-Key": app_hub.keys[f"wf-{org}"]}


async def _post(app_hub, key: str, change: dict) -> dict:  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys[key]}, json=change)
    assert r.status_code == 202, r.text
    return r.json()


def _on(days: int) -> str:
    return (START + timedelta(days=days)).isoformat()


@pytest.fixture
async def moved_and_redetained(app_hub):  # noqa: ANN001
    return await moved_and_redetained_on(app_hub)


async def moved_and_redetained_on(app_hub):  # noqa: ANN001
    """Detained in Buckinghamshire, s3, left hospital, moved to Worcestershire
    (day 150), re-detained under s3 from there (day 200): the council moves
    (Worcs 4.3.3) and a transfer case opens, in order."""
    hub = app_hub.hub
    for org in (BUCKS, WORCS):
        app_hub.keys[f"wf-{org}"] = (await add_client(hub.engine, org, org, "council",
                                                      ["s117:read", "workflows:write", "subscriptions:write"]))[1]
        r = await app_hub.http.post("/v1/subscriptions", headers=h(app_hub, org), json={"channel": "feed"})
        assert r.status_code == 201, r.text
    app_hub.keys["R1A"] = (await add_client(hub.engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1]
    changes = detention_to_move_scenario(random.Random(11), "wd", START)
    for c in changes:
        body = await _post(app_hub, "trust", c)
    app_hub.base = {k: changes[0][k] for k in ("source_system", "person")}
    await _post(app_hub, "R1A", {**app_hub.base, **REDETAINED, "source_message_id": "wd-5"})
    await drain(app_hub)
    app_hub.person_id = body["person_id"]
    return app_hub


# The re-detention in Worcestershire, reported by the trust that runs that hospital (the access policy).
REDETAINED = {"change_type": "detained", "effective_date": _on(200), "legal_status_code": "03", "hospital_ods": "R1A",
              "residence_la_gss": WORCS}
# Heard late: detained again under s3 in Buckinghamshire on day 140, before the move. Still in hospital on
# day 200, the "re-detention" is the same period of detention: no new determination, Buckinghamshire keeps it.
STILL_IN_HOSPITAL = {"change_type": "detained", "effective_date": _on(140), "legal_status_code": "03",
                     "hospital_ods": "RNU", "residence_la_gss": BUCKS}
# Heard later still: the person left hospital on day 170, so day 200 was a re-detention from Worcestershire after all.
LEFT_BEFORE = {"change_type": "left-hospital", "effective_date": _on(170), "hospital_ods": "RNU"}


async def _cases(hub) -> list[dict]:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(workflow_cases.c.case_id, workflow_cases.c.state)
                                   .where(workflow_cases.c.kind == "transfer")
                                   .order_by(workflow_cases.c.opened_on, workflow_cases.c.case_id))).all()
        await conn.rollback()
    return [{"case_id": r.case_id, "state": r.state} for r in rows]


async def _told(hub, case_id: str, state: str) -> dict[str, list[dict]]:  # noqa: ANN001
    """Each organisation's messages about `case_id` in `state` (its FHIR Bundles, decrypted)."""
    async with hub.engine.connect() as conn:
        events = {r.event_id for r in (await conn.execute(select(bus_messages.c.event_id, bus_messages.c.payload)
                                                          .where(bus_messages.c.topic == "s117.events"))).all()
                  if r.payload.get("event", {}).get("details", {}).get("case_id") == case_id
                  and r.payload["event"]["details"].get("state") == state}
        rows = (await conn.execute(select(deliveries.c.event_id, delivery_messages.c.payload, subscriptions.c.org_code)
                                   .select_from(deliveries_with_messages.join(
                                       subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id))
                                   )).all()
        await conn.rollback()
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r.event_id in events:
            out.setdefault(r.org_code, []).append(orjson.loads(hub.protector.decrypt(r.payload)))
    return out


async def test_late_history_showing_no_hand_over_withdraws_the_transfer_and_tells_both_bodies(moved_and_redetained):
    app_hub = moved_and_redetained
    http, hub = app_hub.http, app_hub.hub
    [opened] = (await http.get("/v1/transfers", headers=h(app_hub, WORCS))).json()["items"]
    assert (opened["outgoing"], opened["incoming"], opened["role"], opened["state"]) == (
        BUCKS, WORCS, "council", "awaiting-acknowledgement")
    case_id = opened["case_id"]

    # A change in its turn (a review asked for) takes nothing away: the case stays open.
    await _post(app_hub, "trust", {**app_hub.base, "source_message_id": "wd-review", "change_type": "review-requested",
                                   "effective_date": _on(210)})
    await drain(app_hub)
    assert (await _cases(hub)) == [{"case_id": case_id, "state": "awaiting-acknowledgement"}]

    # Heard late: Buckinghamshire stayed responsible; no hand-over ever happened.
    await _post(app_hub, "trust", {**app_hub.base, **STILL_IN_HOSPITAL, "source_message_id": "wd-late"})
    await drain(app_hub)
    case = (await http.get(f"/v1/transfers/{case_id}", headers=h(app_hub, BUCKS))).json()
    assert case["state"] == "withdrawn" and case["clock"] is None
    last = case["history"][-1]
    assert (last["action"], last["from_state"], last["to_state"], last["actor"]) == (
        "withdraw", "awaiting-acknowledgement", "withdrawn", "hub:register")
    assert WITHDRAWN_REASON in last["explanation"] and "Worcs 4.3.3" in last["citation"] and last["event_id"]
    assert [s["action"] for s in case["history"]] == ["open", "withdraw"]
    assert (await http.get(f"/v1/transfers?state=withdrawn", headers=h(app_hub, WORCS))).json()["items"]
    task = (await http.get(f"/v1/fhir/Task/{case['fhir_task_id']}", headers=h(app_hub, WORCS))).json()
    assert task["status"] == "cancelled" and task["statusReason"]["text"] == WITHDRAWN_REASON

    # Both bodies hear of it, as of the case's other transitions: the change of state in a Task.
    told = await _told(hub, case_id, "withdrawn")
    assert set(told) >= {BUCKS, WORCS}
    for org in (BUCKS, WORCS):
        for bundle in told[org]:
            validate_message(bundle)
            [found] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task"]
            assert found["status"] == "cancelled" and found["businessStatus"]["text"] == "withdrawn"
    # The person's position says so, to a party (Buckinghamshire, responsible all along).
    position = (await http.get(f"/v1/persons/{app_hub.person_id}/s117", headers=h(app_hub, BUCKS))).json()
    [shown] = position["transfers"]
    assert shown["state"] == "withdrawn" and "withdrawn" in shown["text"]

    # Nothing is left to accept or contest: a named 409, as for the other illegal transitions.
    r = await http.post(f"/v1/transfers/{case_id}/accept", headers=h(app_hub, WORCS))
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["rule"] == "transfer-withdrawn" and "withdrawn" in r.json()["detail"]
    r = await http.post(f"/v1/transfers/{case_id}/contest", headers=h(app_hub, WORCS), json={"reason": "residence"})
    assert r.status_code == 409 and r.json()["rule"] == "transfer-withdrawn"
    r = await http.patch(f"/v1/fhir/Task/{case['fhir_task_id']}", headers=h(app_hub, WORCS),
                         json=[{"op": "replace", "path": "/status", "value": "accepted"}])
    assert r.status_code == 409 and "transfer-withdrawn" in r.json()["issue"][0]["diagnostics"]

    # Replaying the whole log through the workflows' group: nothing withdrawn twice, nothing opened.
    async with hub.engine.connect() as conn:
        steps_before = (await conn.execute(select(workflow_transitions.c.seq))).scalars().all()
        await conn.rollback()
    await hub.bus.rewind("workflows", "s117.events", 0)
    await drain(app_hub)
    assert (await _cases(hub)) == [{"case_id": case_id, "state": "withdrawn"}]
    async with hub.engine.connect() as conn:
        assert (await conn.execute(select(workflow_transitions.c.seq))).scalars().all() == steps_before
        await conn.rollback()
    assert {org: len(b) for org, b in (await _told(hub, case_id, "withdrawn")).items()} == \
        {org: len(b) for org, b in told.items()}


async def test_a_hand_over_the_history_shows_again_opens_a_new_case(moved_and_redetained):
    app_hub = moved_and_redetained
    hub = app_hub.hub
    [first] = await _cases(hub)
    await _post(app_hub, "trust", {**app_hub.base, **STILL_IN_HOSPITAL, "source_message_id": "wd-late"})
    await drain(app_hub)
    assert await _cases(hub) == [{**first, "state": "withdrawn"}]
    await _post(app_hub, "trust", {**app_hub.base, **LEFT_BEFORE, "source_message_id": "wd-left"})
    await drain(app_hub)
    cases = await _cases(hub)
    assert len(cases) == 2 and {"withdrawn", "awaiting-acknowledgement"} == {c["state"] for c in cases}
    [again] = [c for c in cases if c["case_id"] != first["case_id"]]
    body = (await app_hub.http.get(f"/v1/transfers/{again['case_id']}", headers=h(app_hub, WORCS))).json()
    assert (body["outgoing"], body["incoming"], body["state"]) == (BUCKS, WORCS, "awaiting-acknowledgement")
    # A replay keeps it that way.
    await hub.bus.rewind("workflows", "s117.events", 0)
    await drain(app_hub)
    assert await _cases(hub) == cases


async def test_a_batch_that_opens_and_then_withdraws_a_transfer(app_hub):  # noqa: ANN001
    """The consumer behind: the re-detention and the late change that shows no
    hand-over are in one batch. The case opens, then is withdrawn."""
    hub = app_hub.hub
    app_hub.keys["R1A"] = (await add_client(hub.engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1]
    changes = detention_to_move_scenario(random.Random(12), "wb", START)
    base = {k: changes[0][k] for k in ("source_system", "person")}
    for c in changes:
        await _post(app_hub, "trust", c)
    await _post(app_hub, "R1A", {**base, **REDETAINED, "source_message_id": "wb-5"})
    await _post(app_hub, "trust", {**base, **STILL_IN_HOSPITAL, "source_message_id": "wb-late"})
    consumer = WorkflowConsumer(hub.workflows, hub.bus, hub.engine)
    while await consumer.run_once(limit=1000):
        pass
    [case] = await _cases(hub)
    assert case["state"] == "withdrawn"
