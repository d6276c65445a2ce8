"""The inline SQLite writer (hub/store/db.py `InlineWriter`), which the
ingest group commit and the dispatcher write through on a SQLite file:
savepoints roll back alone, after-commit callbacks run only once the COMMIT
has returned (and never for a rolled-back transaction), and the SQL event
log's readers are woken by an inline commit, not before it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, select

from hub.bus.port import BusMessage
from hub.bus.sql import SqlLog, publish
from hub.store.db import InlineWriter, create_engine, create_schema, read_only


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


async def test_a_lock_held_elsewhere_is_waited_for_off_the_loop_and_the_writer_stays_usable(table_engine) -> None:  # noqa: ANN001
    """BEGIN IMMEDIATE is tried at once on the loop; when another connection
    holds the write lock it is waited for (the loop runs on), the connection
    is left as it was (its busy timeout 0: the writer waits on the loop, and
    raises it only for its last wait in a thread) and later transactions
    begin at once again."""
    import asyncio

    engine, t = table_engine
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    async def tick(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    async def write(i: int) -> None:
        async with writer.transaction() as conn:
            await conn.execute(t.insert(), {"id": i, "v": "w"})

    stop = asyncio.Event()
    ticker = asyncio.create_task(tick(stop))
    async with engine.begin() as other:  # another connection holds the lock for 0.3 s
        await other.execute(t.insert(), {"id": 0, "v": "other"})
        pending = asyncio.create_task(write(1))
        await asyncio.sleep(0.3)
        assert not pending.done()
    await asyncio.wait_for(pending, 10)
    await write(2)
    stop.set()
    await ticker
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 0.2
    assert await rows(engine, t) == [0, 1, 2]
    # The writer's connection keeps a busy timeout of 0 (set once): it waits on the loop, not in SQLite.
    dbapi = writer._conn.connection.dbapi_connection
    assert dbapi.execute("PRAGMA busy_timeout").fetchone()[0] == 0
    writer.close()


async def test_inserts_on_the_driver_store_what_sqlalchemy_would(tmp_path) -> None:  # noqa: ANN001
    """The inline writer's compiled-once INSERT (SyncConn's fast path) and
    SQLAlchemy's own execution store the same values: JSON (also JSON null),
    dates and datetimes, booleans and bytes; a column default falls back to SQLAlchemy."""
    from datetime import date

    from sqlalchemy import JSON, Boolean, Date, DateTime, LargeBinary

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    md = MetaData()
    t = Table("t", md, Column("id", Integer, primary_key=True), Column("doc", JSON, nullable=True),
              Column("on", Date), Column("at", DateTime(timezone=True)), Column("ok", Boolean),
              Column("raw", LargeBinary), Column("n", Integer, default=7))
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
    at = datetime(2026, 12, 1, 3, 4, 5, 678901, tzinfo=UTC)
    row = {"doc": {"a": [1, "é"]}, "on": date(2026, 2, 3), "at": at, "ok": True, "raw": b"\x00\x01"}
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    async with writer.transaction() as conn:
        fast = await conn.execute(t.insert(), [{"id": 1, **row}, {"id": 2, **row, "doc": None}])
        assert fast.rowcount == 2
        await conn.execute(t.insert(), {"id": 3, **row})  # no "n": its default, through SQLAlchemy
    async with engine.begin() as conn:  # SQLAlchemy's own execution, for comparison
        await conn.execute(t.insert(), [{"id": 11, **row, "n": 7}, {"id": 12, **row, "doc": None, "n": 7}])
        raw = {r[0]: r[1:] for r in (await conn.exec_driver_sql(
            "SELECT id, doc, \"on\", at, ok, raw, n FROM t")).all()}
        typed = {r.id: r for r in (await conn.execute(select(t))).all()}
    assert raw[1] == raw[11] and raw[2] == raw[12]  # byte for byte what SQLAlchemy writes
    assert raw[3][-1] == 7
    assert typed[1].doc == {"a": [1, "é"]} and typed[1].on == date(2026, 2, 3) and typed[1].ok is True
    assert typed[1].raw == b"\x00\x01" and typed[2].doc is None
    writer.close()
    await engine.dispose()


async def test_the_write_lock_is_tried_on_the_driver_and_a_transaction_holds_it_from_its_begin(table_engine) -> None:  # noqa: ANN001
    """While another connection holds the write lock, the writer's tries
    (every few milliseconds) are made on the driver: none goes through
    SQLAlchemy's error handling, which cost about 0.1 ms of CPU each. Once
    begun, the transaction holds the lock from its BEGIN (IMMEDIATE: another
    writer is refused before the first statement), and SQLAlchemy's own BEGIN
    is not issued twice."""
    import asyncio
    import sqlite3

    from sqlalchemy import event

    from hub.store.db import BEGUN_ON_DRIVER

    engine, t = table_engine
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    wrapped: list[str] = []
    event.listen(writer._engine, "handle_error", lambda ctx: wrapped.append(type(ctx.original_exception).__name__))
    path = engine.url.database

    async with engine.begin() as other:  # another connection holds the lock for 0.2 s
        await other.execute(t.insert(), {"id": 0, "v": "other"})
        pending = asyncio.create_task(_insert(writer, t, 1))
        await asyncio.sleep(0.2)
        assert not pending.done()
    await asyncio.wait_for(pending, 10)
    assert wrapped == []  # every failed try was the driver's own error, not SQLAlchemy's

    async with writer.transaction() as conn:
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            probe.execute("BEGIN IMMEDIATE")  # the lock is held before any statement
        probe.close()
        await conn.execute(t.insert(), {"id": 2, "v": "w"})
    assert BEGUN_ON_DRIVER not in writer._conn.info  # taken up by the begin event
    assert await rows(engine, t) == [0, 1, 2]
    writer.close()


async def _insert(writer: InlineWriter, t, i: int) -> None:  # noqa: ANN001
    async with writer.transaction() as conn:
        await conn.execute(t.insert(), {"id": i, "v": "w"})


async def test_a_claim_makes_the_groups_offset_row_once_and_then_only_reads_it(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """`SqlLog.claim_batch` (the dispatcher's, once a batch): the group's
    offset row is made at its first claim, at offset 0; after that a claim is
    one statement (the row read, locked on PostgreSQL), not an INSERT ... ON
    CONFLICT DO NOTHING before it. The offset it returns is the committed one."""
    import hub.bus.sql as sql

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_schema(engine)
    log = SqlLog(engine)
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    ran: list[str] = []
    real = sql.execute_prepared

    async def counting(conn, prepared, params=None):  # noqa: ANN001, ANN202
        ran.append("claim" if prepared is sql._CLAIM else "write")
        return await real(conn, prepared, params)

    monkeypatch.setattr(sql, "execute_prepared", counting)
    async with writer.transaction() as conn:
        assert await log.claim_batch(conn, "g", "s117.events") == 0
    assert ran == ["claim", "write", "claim"]  # not there: made, then read
    async with writer.transaction() as conn:
        await log.commit("g", "s117.events", 7, conn)
    ran.clear()
    async with writer.transaction() as conn:
        assert await log.claim_batch(conn, "g", "s117.events") == 7
        assert await log.claim(conn, "g", "s117.events", 6) is False
    assert ran == ["claim", "claim"]
    writer.close()
    await engine.dispose()


def test_a_worker_letting_the_front_through_sleeps_between_looks_on_uvloop(tmp_path) -> None:  # noqa: ANN001
    """`WriterTurns.let_through` (a worker process waiting, up to `most`,
    while the front waits for the write lock) sleeps between its looks at
    the byte. On uvloop, which rounds a timer's delay to whole milliseconds,
    a poll under 1 ms was a timer due at once: the loop turned without
    sleeping, thousands of looks (and a core's CPU) in 30 ms."""
    import asyncio
    import time

    uvloop = pytest.importorskip("uvloop")
    from hub.store.db import WriterTurns

    turns = WriterTurns(str(tmp_path / "hub.db"))
    looks = 0

    class Byte:  # the shared byte, set (the front waiting) all along; counts the worker's looks
        def __getitem__(self, i: int) -> int:
            nonlocal looks
            looks += 1
            return 1

    turns._map = Byte()  # type: ignore[assignment]

    async def wait() -> float:
        began = time.monotonic()
        await turns.let_through(asyncio.get_running_loop(), most=0.03)
        return time.monotonic() - began

    waited = uvloop.run(wait())
    assert waited >= 0.02  # it waited about as long as it was asked (the front never went; uvloop's clock is in ms)
    assert looks <= 40, looks  # about one look a millisecond, not one a turn of the loop
