"""The shared SQLite writer's page cache while council files are processed
(hub/file_jobs.py `roomier_writer`); its checkpoints stay the checkpointer
thread's, its own automatic one the backstop (hub/store/db.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.file_jobs import FILE_CACHE_KIB, roomier_writer
from hub.store.db import DEFAULT_PAGE_SIZE, WRITER_AUTOCHECKPOINT_BYTES, close_inline, create_engine, write_transaction

WRITER_AUTOCHECKPOINT_PAGES = WRITER_AUTOCHECKPOINT_BYTES // DEFAULT_PAGE_SIZE  # a new file's pages


async def _settings(engine) -> tuple[int, int]:  # noqa: ANN001
    async with write_transaction(engine) as conn:
        dbapi = conn.sync_connection.connection.dbapi_connection
        return (dbapi.execute("PRAGMA cache_size").fetchone()[0],
                dbapi.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


@pytest.fixture
async def engine(tmp_path: Path):  # noqa: ANN201
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    yield engine
    close_inline(engine)
    await engine.dispose()


async def test_raised_while_held_and_put_back_by_the_last_holder(engine) -> None:  # noqa: ANN001
    before = await _settings(engine)
    assert before == (-2000, WRITER_AUTOCHECKPOINT_PAGES)  # SQLite's page cache; the writer's backstop
    async with roomier_writer(engine):
        assert await _settings(engine) == (-FILE_CACHE_KIB, WRITER_AUTOCHECKPOINT_PAGES)
        async with roomier_writer(engine):  # a second file at once
            assert await _settings(engine) == (-FILE_CACHE_KIB, WRITER_AUTOCHECKPOINT_PAGES)
        assert await _settings(engine) == (-FILE_CACHE_KIB, WRITER_AUTOCHECKPOINT_PAGES)  # the first is still processed
    assert await _settings(engine) == before


async def test_put_back_when_processing_fails(engine) -> None:  # noqa: ANN001
    before = await _settings(engine)
    with pytest.raises(RuntimeError):
        async with roomier_writer(engine):
            raise RuntimeError("chunk failed")
    assert await _settings(engine) == before


async def test_nothing_without_an_inline_writer() -> None:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with roomier_writer(engine):
            pass
    finally:
        await engine.dispose()
