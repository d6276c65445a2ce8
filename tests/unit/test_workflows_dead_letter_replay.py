"""A dead-lettered workflows event replayed by an engineer (POST
/v1/ops/dead-letters/{id}/replay, the console's Replay button) runs the
workflows' handler, not the dispatcher's: the dispute case opens once, the
replay is audited, and replaying again or re-reading the log opens nothing more."""

from __future__ import annotations

from sqlalchemy import select

from hub.store.schema import operator_actions, workflow_cases
from hub.workflows.consumer import WorkflowConsumer
from tests.unit.test_workflows_api import drain, h, workflow_hub  # noqa: F401 - the fixture

DISPUTE = {"dispute_id": "REG-DL-1", "kind": "commissioner", "parties": ["QU9", "QGH"]}


async def _dispute_cases(hub) -> list:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(workflow_cases.c.case_id).where(
            workflow_cases.c.kind == "dispute"))).all()
        await conn.rollback()
    return rows


async def test_a_dead_lettered_workflows_event_is_replayed_through_the_workflows_handler_once(
        workflow_hub, monkeypatch):  # noqa: F811
    http, hub = workflow_hub.http, workflow_hub.hub
    admin = {"X-API-Key": workflow_hub.keys["admin"]}
    real = hub.workflows.on_event

    async def broken(conn, payload, event_id):  # noqa: ANN001, ANN202
        raise RuntimeError("workflow bug")

    monkeypatch.setattr(hub.workflows, "on_event", broken)
    raised = {"source_system": "Mosaic", "person": {"nhs_number": workflow_hub.person["nhs_number"]},
              "source_message_id": "dl-d-1", "change_type": "dispute-raised", "effective_date": "2025-09-01",
              "dispute": DISPUTE}
    r = await http.post("/v1/register-changes", headers={"X-API-Key": workflow_hub.keys["trust"]}, json=raised)
    assert r.status_code == 202, r.text
    while await hub.dispatcher.run_once():
        pass
    consumer = WorkflowConsumer(hub.workflows, hub.bus, hub.engine, max_attempts=3)
    for _ in range(5):  # tried three times, then dead-lettered; the flow goes on past it
        await consumer.run_once()
    assert await hub.bus.lag("workflows", "s117.events") == 0
    assert await _dispute_cases(hub) == []
    dead = [d for d in (await http.get("/v1/ops/dead-letters", headers=admin)).json()["handlers"]
            if d["handler"] == "workflows"]
    assert len(dead) == 1 and dead[0]["group"] == "workflows"
    assert dead[0]["reason"] == "RuntimeError after 3 attempts"
    replay = f"/v1/ops/dead-letters/{dead[0]['dead_letter_id']}/replay"

    # Only engineers replay (the access policy of every ops action): a council's key is refused.
    r = await http.post(replay, headers=h(workflow_hub, "QU9"))
    assert r.status_code == 403
    # The handler still failing: a 422 that names it, the dead letter kept for another go.
    r = await http.post(replay, headers=admin)
    assert r.status_code == 422 and r.json()["type"].endswith("replay-failed")
    assert await _dispute_cases(hub) == []

    monkeypatch.setattr(hub.workflows, "on_event", real)
    r = await http.post(replay, headers=admin)
    assert r.status_code == 200 and r.json() == {"dead_letter_id": dead[0]["dead_letter_id"], "replayed": True,
                                                 "handler": "workflows"}
    items = (await http.get("/v1/disputes", headers=h(workflow_hub, "QU9"))).json()["items"]
    assert [(i["dispute_id"], i["raised_by"]) for i in items] == [("REG-DL-1", "hub:register")]
    async with hub.engine.connect() as conn:
        actions = (await conn.execute(select(operator_actions.c.action, operator_actions.c.target,
                                             operator_actions.c.detail))).all()
        await conn.rollback()
    assert [(a.action, a.target, a.detail["handler"]) for a in actions if a.action == "replay-dead-letter"] == [
        ("replay-dead-letter", str(dead[0]["dead_letter_id"]), "workflows")]

    # Once: a second replay is refused, and the log read again by the workflows' group opens nothing more.
    assert (await http.post(replay, headers=admin)).status_code == 409
    await hub.bus.rewind("workflows", "s117.events", 0)
    await drain(workflow_hub)
    assert len(await _dispute_cases(hub)) == 1
    flows = (await http.get("/v1/ops/flows", headers=admin)).json()
    assert flows["dead_letters_open"] == 0


async def test_a_dead_letter_of_a_handler_this_hub_cannot_run_is_refused_by_name_and_kept(workflow_hub):  # noqa: F811
    from datetime import UTC, datetime

    from hub.store.schema import bus_messages, dead_letters
    hub = workflow_hub.hub
    admin = {"X-API-Key": workflow_hub.keys["admin"]}
    async with hub.engine.begin() as conn:
        msg = (await conn.execute(select(bus_messages.c.topic, bus_messages.c.offset, bus_messages.c.event_id)
                                  .limit(1))).one()
        dl_id = (await conn.execute(dead_letters.insert().values(
            topic=msg.topic, group_id="elsewhere", offset=msg.offset, event_id=msg.event_id, handler="elsewhere",
            reason="test", at=datetime.now(UTC)).returning(dead_letters.c.dead_letter_id))).scalar_one()
    r = await workflow_hub.http.post(f"/v1/ops/dead-letters/{dl_id}/replay", headers=admin)
    assert r.status_code == 409 and r.json()["rule"] == "not-replayable"
    assert r.json()["errors"] == [{"field": "handler", "reason": "not replayable here"}]
    open_ = [d for d in (await workflow_hub.http.get("/v1/ops/dead-letters", headers=admin)).json()["handlers"]
             if d["dead_letter_id"] == dl_id]
    assert open_[0]["replayed_at"] is None
