"""The log's readers that most events need nothing from (the workflows
consumer, the reconciliation item watcher) move past such a batch without a
write transaction of its own (`SqlLog.pass_over`): the offset is written
within `passed_commit_seconds`, or with the next batch that needs
something; what needs something is still handled at once."""

from __future__ import annotations

import random
from datetime import date

from hub.reconciliation import ItemWatcher
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import workflow_cases
from hub.workflows.consumer import WorkflowConsumer
from sqlalchemy import func, select

TOPIC = "s117.events"


async def _post(app_hub, change: dict) -> None:  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
    assert r.status_code == 202, r.text


async def _cases(hub) -> int:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(workflow_cases))).scalar_one()
        await conn.rollback()
    return int(n)


async def test_events_no_workflow_wants_are_passed_over_and_their_offset_written_within_its_age(app_hub):  # noqa: ANN001
    hub = app_hub.hub
    changes = detention_to_move_scenario(random.Random(3), "pass", date(2025, 1, 6))
    for c in changes[:2]:  # a detention and its discharge: nothing a workflow acts on
        await _post(app_hub, c)
    consumer = WorkflowConsumer(hub.workflows, hub.bus, hub.engine)
    consumer.passed_commit_seconds = 3600.0
    lag = await hub.bus.lag("workflows", TOPIC)
    assert lag > 0
    assert await consumer.run_once() == lag  # read
    assert await consumer.run_once() == 0  # and not read again
    assert await hub.bus.lag("workflows", TOPIC) == lag  # but the offset not written yet
    consumer.passed_commit_seconds = 0.0
    assert await consumer.run_once() == 0  # nothing new: the passed-over offset is written now
    assert await hub.bus.lag("workflows", TOPIC) == 0

    # A dispute raised: handled at once and committed with the batch, passed-over events before it included.
    consumer.passed_commit_seconds = 3600.0
    await _post(app_hub, changes[2])
    assert await consumer.run_once() > 0
    base = {k: changes[0][k] for k in ("source_system", "person")}
    await _post(app_hub, {**base, "source_message_id": "pass-dispute", "change_type": "dispute-raised",
                          "effective_date": "2025-09-01",
                          "dispute": {"dispute_id": "REG-PASS-1", "kind": "commissioner", "parties": ["QU9", "QGH"]}})
    before = await _cases(hub)
    assert await consumer.run_once() > 0
    assert await _cases(hub) == before + 1
    # Committed with its batch, not left for `passed_commit_seconds`: what is
    # still after the offset is only what the workflow published since.
    assert "s117-dispute-raised" not in await _types_after_offset(hub, "workflows")
    while await consumer.run_once():
        pass
    consumer.passed_commit_seconds = 0.0
    await consumer.run_once()
    assert await hub.bus.lag("workflows", TOPIC) == 0


async def _types_after_offset(hub, group: str) -> list[str]:  # noqa: ANN001
    from hub.store.schema import bus_messages, consumer_offsets

    async with hub.engine.connect() as conn:
        start = (await conn.execute(select(consumer_offsets.c.next_offset).where(
            consumer_offsets.c.group_id == group, consumer_offsets.c.topic == TOPIC))).scalar_one()
        rows = (await conn.execute(select(bus_messages.c.headers).where(
            bus_messages.c.topic == TOPIC, bus_messages.c.offset >= start))).scalars().all()
        await conn.rollback()
    return [h.get("event_type") for h in rows]


async def test_the_item_watcher_passes_over_people_with_no_open_item(app_hub):  # noqa: ANN001
    hub = app_hub.hub
    for c in detention_to_move_scenario(random.Random(4), "watch", date(2025, 1, 6))[:2]:
        await _post(app_hub, c)
    watcher = ItemWatcher(hub.engine, hub.bus, hub.ref, hub.agreements)
    watcher.passed_commit_seconds = 3600.0
    lag = await hub.bus.lag("reconciliation", TOPIC)
    assert lag > 0 and await watcher.run_once() == lag
    assert await watcher.run_once() == 0
    assert await hub.bus.lag("reconciliation", TOPIC) == lag  # nobody has an item: not written yet
    watcher.passed_commit_seconds = 0.0
    await watcher.run_once()
    assert await hub.bus.lag("reconciliation", TOPIC) == 0
