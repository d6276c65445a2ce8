"""After-commit callbacks on both stores (hub.store.db.after_commit_hook):
what waits on a publish (the Kafka relay, hub.bus.sql.publish_signal) is told
once the rows can be read, never before, and never for a rollback; ingest's
status cache is filled once a change is committed, on PostgreSQL as on SQLite."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import date

import pytest
from sqlalchemy import func, select

from hub.bus.port import BusMessage
from hub.bus.sql import publish, publish_signal
from hub.sample_data import detention_to_move_scenario
from hub.store.db import begin_with_hooks, write_transaction
from hub.store.schema import bus_messages

pytestmark = pytest.mark.integration


def _message() -> BusMessage:
    return BusMessage(topic="s117.events", key="p1", event_id=str(uuid.uuid4()), payload={"n": 1},
                      headers={"event_type": "x"})


async def test_a_publish_is_told_once_its_rows_can_be_read(engine) -> None:  # noqa: ANN001
    signal = publish_signal()
    seen: list[tuple[bool, int]] = []
    writer: list = []

    async def relay() -> None:  # what the Kafka relay does when told: read the outbox
        await signal.wait()
        still_open = writer[0].in_transaction()
        async with engine.connect() as conn:
            seen.append((still_open, (await conn.execute(select(func.count()).select_from(bus_messages))).scalar_one()))

    task = asyncio.create_task(relay())
    async with write_transaction(engine) as conn:
        writer.append(conn.sync_connection)
        await publish(conn, _message())
        await asyncio.sleep(0.05)
        assert not task.done(), "told before the COMMIT"
    await asyncio.wait_for(task, 5)
    assert seen == [(False, 1)], "told while the transaction was still open, or the reader found nothing"


async def test_callbacks_run_after_commit_and_not_after_a_rollback(engine) -> None:  # noqa: ANN001
    from hub.store.db import after_commit_hook
    ran: list[str] = []
    async with engine.connect() as conn:
        with pytest.raises(RuntimeError):
            async with begin_with_hooks(conn):
                after_commit_hook(conn)(lambda: ran.append("rolled back"))
                raise RuntimeError("the unit of work failed")
        async with begin_with_hooks(conn):
            hook = after_commit_hook(conn)
            hook(lambda: ran.append("committed"))
            assert ran == []
        assert ran == ["committed"]
        assert after_commit_hook(conn) is None, "a hook outlived its transaction"


async def test_ingest_fills_the_status_cache_once_committed(store_hub) -> None:  # noqa: ANN001
    hub, http, key = store_hub.hub, store_hub.http, {"X-API-Key": store_hub.keys["trust"]}
    changes = detention_to_move_scenario(random.Random(5), "ac-1", date(2025, 1, 6))
    for change in changes[:2]:
        r = await http.post("/v1/register-changes", headers=key, json=change)
        assert r.status_code == 202, r.text
    statuses = hub.ingest.statuses
    before = statuses.hits
    r = await http.post("/v1/register-changes", headers=key, json=changes[2])
    assert r.status_code == 202, r.text
    assert statuses.hits > before, "the person's status after the last change was not kept"
