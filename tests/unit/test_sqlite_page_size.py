"""SQLite's page size: a database file the hub creates gets the configured
size (`S117_SQLITE_PAGE_SIZE`, 4 KB by default), an existing file keeps its
own and goes on working, and every WAL threshold counts bytes, so a file of
either size checkpoints at the same WAL size (hub/store/db.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, text

from hub.settings import Settings
from hub.store import db as store_db
from hub.store.db import (AUTOCHECKPOINT_BYTES, DEFAULT_PAGE_SIZE, WRITER_AUTOCHECKPOINT_BYTES, close_inline,
                          create_engine, create_schema, inline_writer, read_only, write_transaction)
from hub.store.schema import bus_messages


def _header_page_size(path: Path) -> int:
    """The page size written in the database file's header (bytes 16-17; 1 means 65536)."""
    size = int.from_bytes(path.read_bytes()[16:18], "big")
    return 65536 if size == 1 else size


async def _write(engine, n: int, start: int = 0) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    async with write_transaction(engine) as conn:
        await conn.execute(bus_messages.insert(), [
            {"topic": "t", "key": "k", "event_id": f"e{start + i}", "payload": {"i": start + i}, "headers": {},
             "created_at": now} for i in range(n)])


async def _thresholds(engine) -> tuple[int, int, int]:  # noqa: ANN001
    """(page size, a pooled connection's wal_autocheckpoint, the shared writer's)."""
    async with read_only(engine) as conn:
        page_size = (await conn.execute(text("PRAGMA page_size"))).scalar_one()
        pooled = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
    async with write_transaction(engine) as conn:
        writer = conn.sync_connection.connection.dbapi_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    return page_size, pooled, writer


@pytest.mark.parametrize("page_size", [DEFAULT_PAGE_SIZE, 8192, 16384])
async def test_a_new_file_gets_the_page_size_and_thresholds_in_bytes(tmp_path: Path, page_size: int) -> None:
    path = tmp_path / "hub.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}", sqlite_page_size=page_size)
    try:
        await create_schema(engine)
        await _write(engine, 3)
        assert inline_writer(engine) is not None
        got, pooled, writer = await _thresholds(engine)
        assert got == page_size == _header_page_size(path)
        # The same WAL bytes at any page size: 1,000 and 10,000 pages of 4 KB.
        assert pooled * page_size == AUTOCHECKPOINT_BYTES == 1000 * 4096
        assert writer * page_size == WRITER_AUTOCHECKPOINT_BYTES == 10_000 * 4096
    finally:
        close_inline(engine)
        await engine.dispose()


async def test_the_default_for_a_new_file_is_4_kb(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        await create_schema(engine)
        assert await _thresholds(engine) == (4096, 1000, 10_000)
    finally:
        close_inline(engine)
        await engine.dispose()
    assert Settings().sqlite_page_size == DEFAULT_PAGE_SIZE == 4096


async def test_an_existing_4_kb_wal_file_keeps_its_pages_and_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    old = create_engine(f"sqlite+aiosqlite:///{path}", sqlite_page_size=4096)  # as a hub before this made it
    try:
        await create_schema(old)
        await _write(old, 50)
    finally:
        close_inline(old)
        await old.dispose()
    assert _header_page_size(path) == 4096

    engine = create_engine(f"sqlite+aiosqlite:///{path}", sqlite_page_size=16384)  # asking for 16 KB
    try:
        await create_schema(engine)  # idempotent on an existing store
        await _write(engine, 50, start=50)
        async with read_only(engine) as conn:
            assert (await conn.execute(select(func.count()).select_from(bus_messages))).scalar_one() == 100
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await conn.execute(text("PRAGMA integrity_check"))).scalar_one() == "ok"
        page_size, pooled, writer = await _thresholds(engine)
        # Its own 4 KB pages, and the thresholds of a 4 KB file (not 16 KB's quarter).
        assert (page_size, pooled, writer) == (4096, 1000, 10_000)
    finally:
        close_inline(engine)
        await engine.dispose()
    assert _header_page_size(path) == 4096


async def test_a_16_kb_file_stays_16_kb_when_opened_asking_for_4_kb(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}", sqlite_page_size=16384)
    await create_schema(engine)
    await engine.dispose()
    again = create_engine(f"sqlite+aiosqlite:///{path}", sqlite_page_size=4096)
    try:
        await _write(again, 1)
        assert await _thresholds(again) == (16384, 250, 2500)
    finally:
        close_inline(again)
        await again.dispose()


def test_the_writer_without_the_checkpoint_thread_uses_sqlites_own_threshold_in_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.setattr(store_db, "CHECKPOINT_THREAD", False)

    async def go() -> tuple[int, int, int]:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", sqlite_page_size=16384)
        try:
            await create_schema(engine)
            return await _thresholds(engine)
        finally:
            close_inline(engine)
            await engine.dispose()

    assert asyncio.run(go()) == (16384, 250, 250)


@pytest.mark.parametrize("bad", [0, 1000, 4095, 256, 131072])
def test_a_page_size_that_sqlite_would_ignore_is_refused(bad: int) -> None:
    with pytest.raises(ValidationError, match="sqlite_page_size"):
        Settings(sqlite_page_size=bad)


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S117_SQLITE_PAGE_SIZE", "8192")
    assert Settings().sqlite_page_size == 8192
