"""The inline SQLite writer (hub/store/db.py `InlineWriter`), which the
ingest group commit and the dispatcher write through on a SQLite file:
savepoints roll back alone, after-commit callbacks run only once the COMMIT
has returned (and never for a rolled-back transaction), and the SQL event
log's readers are woken by an inline commit, not before it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select

from hub.bus.port import BusMessage
from hub.bus.sql import SqlLog, publish
from hub.store.db import InlineWriter, create_engine, create_schema, read_only


@pytest.fixture
async def table_engine(tmp_path):  # noqa: ANN001
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    md = MetaData()
    t = Table("t", md, Column("id", Integer, primary_key=True), Column("v", String(10), nullable=False))
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
    yield engine, t
    await engine.dispose()


async def rows(engine, t) -> list[int]:  # noqa: ANN001
    async with read_only(engine) as conn:  # a WAL snapshot: never waits for the writer
        return list((await conn.execute(select(t.c.id).order_by(t.c.id))).scalars())


async def test_a_failed_savepoint_rolls_back_alone(table_engine) -> None:  # noqa: ANN001
    engine, t = table_engine
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    async with writer.transaction() as conn:
        await conn.execute(t.insert(), {"id": 1, "v": "kept"})
        with pytest.raises(RuntimeError):
            async with conn.begin_nested():
                await conn.execute(t.insert(), {"id": 2, "v": "undone"})
                raise RuntimeError("handler failed")
        async with conn.begin_nested():
            await conn.execute(t.insert(), {"id": 3, "v": "kept"})
    assert await rows(engine, t) == [1, 3]
    writer.close()


async def test_after_commit_runs_once_committed_and_never_on_rollback(table_engine) -> None:  # noqa: ANN001
    engine, t = table_engine
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    calls: list[str] = []
    async with writer.transaction() as conn:
        await conn.execute(t.insert(), {"id": 1, "v": "a"})
        conn.after_commit(lambda: calls.append("first"))
        conn.after_commit(lambda: calls.append("second"))
        assert calls == []
        assert await rows(engine, t) == []  # another connection: not yet committed
    assert calls == ["first", "second"]
    assert await rows(engine, t) == [1]

    with pytest.raises(ValueError):
        async with writer.transaction() as conn:
            await conn.execute(t.insert(), {"id": 2, "v": "b"})
            conn.after_commit(lambda: calls.append("rolled back"))
            raise ValueError
    assert calls == ["first", "second"]
    assert await rows(engine, t) == [1]
    writer.close()


async def test_the_sql_log_wakes_its_readers_when_an_inline_publish_commits(tmp_path) -> None:  # noqa: ANN001
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_schema(engine)
    log = SqlLog(engine)
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    async with writer.transaction() as conn:
        await publish(conn, BusMessage(topic="s117.events", key="p1", event_id="e1",
                                       payload={"at": datetime.now(UTC).isoformat()}, headers={}))
        assert not log._new.is_set()  # a reader woken now would fetch before the row is visible
    assert log._new.is_set()
    assert [m.event_id for m in await log.fetch("g", "s117.events", 10)] == ["e1"]
    writer.close()
    await engine.dispose()
