"""PostgreSQL: the event topic's publish lock (hub/bus/sql.py `lock_topic`)
is taken once per transaction, held until it ends, and taken again in a
savepoint (whose rollback would release a lock taken after it)."""

from __future__ import annotations

import pytest
from sqlalchemy import event, text

from hub.bus.port import EVENTS_TOPIC
from hub.bus.sql import lock_topic

pytestmark = pytest.mark.integration


async def _held(conn) -> int:  # noqa: ANN001
    return (await conn.execute(text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
    ))).scalar_one()


async def test_the_topic_lock_is_taken_once_a_transaction_and_again_in_a_savepoint(pg_engine) -> None:  # noqa: ANN001
    taken = 0

    def count(_conn, _cursor, statement, *_rest):  # noqa: ANN001, ANN002, ANN202
        nonlocal taken
        taken += "pg_advisory_xact_lock" in statement

    event.listen(pg_engine.sync_engine, "before_cursor_execute", count)
    async with pg_engine.begin() as conn:
        await lock_topic(conn, EVENTS_TOPIC)
        await lock_topic(conn, EVENTS_TOPIC)
        assert taken == 1 and await _held(conn) == 1
        await lock_topic(conn, "another.topic")
        assert taken == 2 and await _held(conn) == 2
        async with conn.begin_nested():
            await lock_topic(conn, EVENTS_TOPIC)  # inside the savepoint: taken again
            assert taken == 3
        await lock_topic(conn, EVENTS_TOPIC)  # released savepoint: the outer transaction's is not known to it
        assert taken == 4
    async with pg_engine.begin() as conn:  # a new transaction: the last one's lock went with it
        assert await _held(conn) == 0
        await lock_topic(conn, EVENTS_TOPIC)
        assert taken == 5 and await _held(conn) == 1
