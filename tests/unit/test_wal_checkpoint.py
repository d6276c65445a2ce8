"""The WAL of a SQLite store is checkpointed by a thread of its own
(hub.store.db.WalCheckpointer), not inside the shared writer's COMMIT on the
event loop; the writer's own automatic checkpoint is only a backstop."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

from hub.store import db as store_db
from hub.store.db import close_inline, create_engine, create_schema, inline_writer, write_transaction
from hub.store.schema import bus_messages


async def _write(engine, rows: int, start: int = 0) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    async with write_transaction(engine) as conn:
        await conn.execute(bus_messages.insert(), [
            {"topic": "t", "key": "k", "event_id": f"e{start + i}", "payload": {"pad": "x" * 4000}, "headers": {},
             "created_at": now} for i in range(rows)])


async def _grown(path: Path, size: int, within: float) -> bool:
    for _ in range(int(within / 0.05)):
        if path.stat().st_size > size:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_committed_pages_reach_the_database_file_from_the_checkpointer_thread(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await create_schema(engine)
    try:
        await _write(engine, 1)  # the writer opens its connection, and the checkpointer starts
        writer = inline_writer(engine)
        assert writer is not None and writer._checkpointer is not None
        checkpointer = writer._checkpointer
        assert any(t.name == "s117-wal-checkpoint" for t in threading.enumerate())
        dbapi = writer._conn.connection.dbapi_connection
        backstop = dbapi.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert backstop * dbapi.execute("PRAGMA page_size").fetchone()[0] == store_db.WRITER_AUTOCHECKPOINT_BYTES
        await asyncio.sleep(checkpointer.interval * 3)  # the first row's checkpoint done
        size, before = path.stat().st_size, checkpointer.checkpoints
        # About 200 pages: far below the writer's own threshold, so only the thread can copy them in.
        await _write(engine, 200, start=1)
        assert await _grown(path, size, within=5.0), "the database file never took the WAL's pages"
        for _ in range(100):  # the file grows while the checkpoint runs; it is counted once it returns
            if checkpointer.checkpoints > before:
                break
            await asyncio.sleep(0.05)
        assert checkpointer.checkpoints > before
        idle = checkpointer.checkpoints
        await asyncio.sleep(checkpointer.interval * 3)
        assert checkpointer.checkpoints == idle  # nothing committed: no checkpoint
    finally:
        close_inline(engine)
        await engine.dispose()
    assert not checkpointer._thread.is_alive()  # stopped with the writer


def test_a_checkpointer_never_makes_a_database_where_the_file_is_gone(tmp_path: Path) -> None:
    gone = tmp_path / "gone.db"
    checkpointer = store_db.WalCheckpointer(str(gone))
    checkpointer.interval = 0.01
    try:
        checkpointer.committed()
        for _ in range(100):
            if not gone.exists() and checkpointer.checkpoints == 0:
                threading.Event().wait(0.01)
        assert not gone.exists() and checkpointer.checkpoints == 0
    finally:
        checkpointer.close()


def test_a_writer_dropped_without_close_stops_its_checkpointer(tmp_path: Path) -> None:
    import gc

    from hub.store.db import InlineWriter, sqlite_writer_engine

    async def run() -> store_db.WalCheckpointer:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
        await create_schema(engine)
        writer = InlineWriter(sqlite_writer_engine(engine))
        async with writer.transaction() as conn:
            await conn.execute(bus_messages.insert(), {"topic": "t", "key": "k", "event_id": "e", "payload": {},
                                                       "headers": {}, "created_at": datetime.now(UTC)})
        checkpointer = writer._checkpointer
        writer._conn.close()
        await engine.dispose()
        return checkpointer

    checkpointer = asyncio.run(run())
    gc.collect()
    checkpointer._thread.join(timeout=5)
    assert not checkpointer._thread.is_alive()


def _observed(histogram) -> float:  # noqa: ANN001
    """How many observations a prometheus_client Histogram has had (its _count sample)."""
    return next(s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_count"))


async def test_each_commit_and_checkpoint_is_timed_for_the_operators(tmp_path: Path) -> None:
    """`s117_store_commit_seconds` and `s117_store_checkpoint_seconds`: a slow
    disk (a COMMIT's fsync held for hundreds of milliseconds, the event loop
    with it) shows in /metrics. A rolled-back transaction is not a commit."""
    from hub.observability import metrics

    path = tmp_path / "hub.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await create_schema(engine)
    try:
        commits, checkpoints = _observed(metrics.STORE_COMMIT_SECONDS), _observed(metrics.STORE_CHECKPOINT_SECONDS)
        await _write(engine, 1)
        await _write(engine, 1, start=1)
        assert _observed(metrics.STORE_COMMIT_SECONDS) == commits + 2
        try:
            async with write_transaction(engine) as conn:
                await conn.execute(bus_messages.insert(), {"topic": "t", "key": "k", "event_id": "rolled-back",
                                                           "payload": {}, "headers": {},
                                                           "created_at": datetime.now(UTC)})
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        assert _observed(metrics.STORE_COMMIT_SECONDS) == commits + 2
        writer = inline_writer(engine)
        assert writer is not None and writer._checkpointer is not None
        for _ in range(100):  # the checkpointer's thread, within an interval or two
            if _observed(metrics.STORE_CHECKPOINT_SECONDS) > checkpoints:
                break
            await asyncio.sleep(0.05)
        assert _observed(metrics.STORE_CHECKPOINT_SECONDS) > checkpoints
    finally:
        close_inline(engine)
        await engine.dispose()
