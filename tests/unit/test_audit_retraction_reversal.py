"""A retraction's reversal in the audit as a retraction is (hub/audit.py, POST /v1/ops/audit/person).

The operator retracts a trust's change and reverses the retraction: the audit chain holds both access
decisions (`retract`, `reinstate`: kind `write`, indexed by the person) and both operator actions
(`register-change-retract`, `register-change-reinstate`: kind `operator`, naming the change); the subject
access answer lists what each body was told of each (the retraction's correction and the reversal's,
under the event that set each off) and neither reason; `audit verify` finds the chain intact. No source
change was needed for this: nothing in the audit filters or labels actions by name (a guard, not a fix).
"""

from __future__ import annotations

import random
from datetime import date

from sqlalchemy import select

from hub.clients import add_client
from hub.delivery.dispatcher import view_event_id_for
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import access_decisions, audit_chain, operator_actions

BUCKS = "E06000060"
REASONS = ("recorded against the wrong patient", "the retraction named the wrong change")


async def _drain(hub) -> None:  # noqa: ANN001
    while await hub.dispatcher.run_once():
        pass


async def test_a_reversal_is_audited_where_a_retraction_is(app_hub):
    hub, http = app_hub.hub, app_hub.http
    admin = {"X-API-Key": (await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    r = await http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[BUCKS]}, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    changes = detention_to_move_scenario(random.Random(11), "aud", date(2025, 1, 6))
    for c in changes:
        r = await http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    moved, person_id = r.json()["change_id"], r.json()["person_id"]
    await _drain(hub)
    answers = []
    for path, reason in zip(("retraction", "retraction/reversal"), REASONS, strict=True):
        r = await http.post(f"/v1/register-changes/{moved}/{path}", headers=admin, json={"reason": reason})
        assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
        answers.append(r.json())
        await _drain(hub)
    while await hub.audit.extend():
        pass

    async with hub.engine.connect() as conn:
        decided = (await conn.execute(
            select(access_decisions.c.action, audit_chain.c.kind, audit_chain.c.person_id)
            .join(audit_chain, (audit_chain.c.source == "access_decisions")
                  & (audit_chain.c.source_id == access_decisions.c.decision_id))
            .where(access_decisions.c.action.in_(("retract", "reinstate")))
            .order_by(audit_chain.c.seq))).all()
        acted = (await conn.execute(
            select(operator_actions.c.action, operator_actions.c.target, operator_actions.c.detail, audit_chain.c.kind)
            .join(audit_chain, (audit_chain.c.source == "operator_actions")
                  & (audit_chain.c.source_id == operator_actions.c.action_id))
            .where(operator_actions.c.action.like("register-change-%"))
            .order_by(audit_chain.c.seq))).all()
    assert [tuple(d) for d in decided] == [("retract", "write", person_id), ("reinstate", "write", person_id)]
    assert [(a.action, a.target, a.kind) for a in acted] == \
        [("register-change-retract", moved, "operator"), ("register-change-reinstate", moved, "operator")]
    assert acted[1].detail["person_id"] == person_id and not set(REASONS) & set(map(str, acted[1].detail.values()))

    r = await http.post("/v1/ops/audit/person", headers=admin,
                        json={"nhs_number": changes[0]["person"]["nhs_number"]})
    assert r.status_code == 200, r.text
    assert not any(reason in r.text for reason in REASONS)
    told = {(e["recipient"], e["event_id"]) for e in r.json()["disclosures"] if e["decision"] == "allowed"}
    for answer in answers:  # Buckinghamshire, told of the move, told of each correction (in its own message)
        assert told & {(BUCKS, answer["event_id"]), (BUCKS, view_event_id_for(answer["event_id"], BUCKS))}, answer
    r = await http.get("/v1/ops/audit/verify", headers=admin)
    assert r.status_code == 200 and r.json()["ok"] is True, r.text
