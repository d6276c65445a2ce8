"""The workflows' consumer takes the events topic's publish lock before it locks a person's cases, as every
writer that locks both does (hub/corrections.py: a merge, a retraction's reversal take the topic's lock, then
the person's row, then the person's cases). On PostgreSQL a consumer that locked the cases first and the
topic's lock when it published (hub/workflows/service.py `_publish`) would deadlock with a reversal or a
merge of the same person made at the same moment: the server aborts one (40P01), and a reversal aborted so
would answer the trust with an error for a request that was right.

Real PostgreSQL (the session's server, tests/servers/postgres.py): a transaction holds the topic's lock, as a
reversal does between taking it and locking the cases; the consumer, handling a retraction that withdraws a
dispute case, must then wait for the topic's lock without holding the case, so the first transaction can
lock the case (NOWAIT: a lock the consumer held would refuse at once, where a reversal would wait: the
deadlock). The same for a party's action on a case (`POST /v1/disputes/{id}/interim`), which publishes
its step too."""

from __future__ import annotations

import asyncio
import random
from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from hub.bus.port import EVENTS_TOPIC
from hub.bus.sql import lock_topic
from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import workflow_cases
from hub.workflows.consumer import WorkflowConsumer

BUCKS, WORCS = "E06000060", "E10000034"


async def _drain(app) -> None:  # noqa: ANN001
    consumer = WorkflowConsumer(app.hub.workflows, app.hub.bus, app.hub.engine)
    while (await app.hub.dispatcher.run_once()) + (await consumer.run_once()):
        pass


async def _disputed(app) -> tuple[str, str, str]:  # noqa: ANN001
    """A person on the register with a dispute case raised on the register (Bucks and Worcestershire):
    the person's id, the case's id, the raising change's id."""
    hub = app.hub
    app.keys[WORCS] = (await add_client(hub.engine, WORCS, WORCS, "council", ["s117:read", "workflows:write"]))[1]
    app.keys["bucks-wf"] = (await add_client(hub.engine, BUCKS, BUCKS, "council",
                                             ["s117:read", "workflows:write"]))[1]
    changes = detention_to_move_scenario(random.Random(11), "lock-order", date(2025, 1, 6))
    for c in changes:
        r = await app.http.post("/v1/register-changes", headers={"X-API-Key": app.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    person_id = r.json()["person_id"]
    raised = {"source_system": "Mosaic", "source_message_id": "raise-LO1", "change_type": "dispute-raised",
              "effective_date": "2025-09-01", "person": changes[0]["person"],
              "dispute": {"dispute_id": "LO1", "kind": "council", "parties": [BUCKS, WORCS]}}
    r = await app.http.post("/v1/register-changes", headers={"X-API-Key": app.keys["trust"]}, json=raised)
    assert r.status_code == 202, r.text
    await _drain(app)
    async with hub.engine.connect() as conn:
        [(case_id, state)] = (await conn.execute(select(workflow_cases.c.case_id, workflow_cases.c.state)
                                                 .where(workflow_cases.c.person_id == person_id))).all()
    assert state == "open"
    return person_id, case_id, r.json()["change_id"]


async def _case_lockable_while_the_topic_is_held(app, person_id: str, case_id: str, work) -> None:  # noqa: ANN001
    """Hold the topic's lock as a reversal does, start `work` (a coroutine that locks the person's case and
    publishes), and lock the case NOWAIT: `work` must be waiting for the topic's lock without it."""
    async with app.hub.engine.connect() as holder:
        await holder.begin()
        await lock_topic(holder, EVENTS_TOPIC)
        working = asyncio.create_task(work)
        await asyncio.sleep(1.0)  # `work` is in its write transaction
        assert not working.done()  # waiting for the topic's lock
        try:
            locked = (await holder.execute(select(workflow_cases.c.case_id).where(
                workflow_cases.c.person_id == person_id).with_for_update(nowait=True))).scalars().all()
        except DBAPIError as exc:  # 55P03: `work` holds the case while it waits for the topic's lock
            working.cancel()
            pytest.fail(f"the case was locked before the topic's lock: {exc.orig!r}"[:300])
        assert locked == [case_id]
        await holder.commit()
    await asyncio.wait_for(working, 30)


async def _state(app, case_id: str) -> str:  # noqa: ANN001
    async with app.hub.engine.connect() as conn:
        return (await conn.execute(select(workflow_cases.c.state)
                                   .where(workflow_cases.c.case_id == case_id))).scalar_one()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_the_consumer_waits_for_the_topics_lock_before_it_locks_a_persons_cases(store_hub) -> None:  # noqa: ANN001
    app = store_hub
    person_id, case_id, raised = await _disputed(app)
    r = await app.http.post(f"/v1/register-changes/{raised}/retraction",
                            headers={"X-API-Key": app.keys["trust"]}, json={"reason": "recorded in error"})
    assert r.status_code == 200, r.text
    consumer = WorkflowConsumer(app.hub.workflows, app.hub.bus, app.hub.engine)
    await _case_lockable_while_the_topic_is_held(app, person_id, case_id, consumer.run_once())
    assert await _state(app, case_id) == "withdrawn"  # the retraction's work done once the lock was free


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
async def test_a_partys_action_waits_for_the_topics_lock_before_it_locks_the_case(store_hub) -> None:  # noqa: ANN001
    app = store_hub
    person_id, case_id, _ = await _disputed(app)
    terms = {"lead_body": WORCS, "shares": {BUCKS: 40, WORCS: 60}}

    async def propose() -> None:
        r = await app.http.post(f"/v1/disputes/{case_id}/interim", headers={"X-API-Key": app.keys["bucks-wf"]},
                                json=terms)
        assert r.status_code == 200, r.text

    await _case_lockable_while_the_topic_is_held(app, person_id, case_id, propose())
