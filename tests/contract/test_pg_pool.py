"""PostgreSQL connections: reads outside a transaction, and a pooled
connection cut while idle replaced before it is used (the pool pings only
connections idle for `PING_AFTER_IDLE_SECONDS`, not every checkout)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

import hub.store.db as db
from hub.store.db import create_engine, read_only, snapshot

pytestmark = pytest.mark.integration


async def _backend_pids(engine) -> set[int]:  # noqa: ANN001
    """Every server process behind the engine's pooled connections (checked out one by one, held together)."""
    held = []
    try:
        for _ in range(2):
            conn = await engine.connect()
            held.append(conn)
        return {(await c.execute(text("SELECT pg_backend_pid()"))).scalar_one() for c in held}
    finally:
        for c in held:
            await c.close()


async def _terminate(url: str, pids: set[int]) -> None:
    other = create_engine(url)
    try:
        async with other.connect() as conn:
            for pid in pids:
                assert (await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})).scalar_one()
    finally:
        await other.dispose()


async def test_reads_begin_no_transaction(pg_engine) -> None:  # noqa: ANN001
    for reads in (read_only(pg_engine), snapshot(pg_engine), snapshot(pg_engine, consistent=True)):
        async with reads as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            raw = await conn.get_raw_connection()
            assert not raw.driver_connection.is_in_transaction()
    async with pg_engine.connect() as conn:  # an ordinary connection still begins one
        await conn.execute(text("SELECT 1"))
        assert (await conn.get_raw_connection()).driver_connection.is_in_transaction()
        await conn.rollback()


async def test_a_connection_cut_while_idle_is_replaced_before_use(pg_engine, postgres_database_url,  # noqa: ANN001
                                                                   monkeypatch) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.2)
    cut = await _backend_pids(pg_engine)
    await _terminate(postgres_database_url, cut)  # as a restart or an idle timeout would
    await asyncio.sleep(0.3)
    for _ in range(3):  # every pooled connection: each pinged, found cut and replaced
        async with read_only(pg_engine) as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            assert pid not in cut
    async with pg_engine.begin() as conn:
        assert (await conn.execute(text("SELECT 2"))).scalar_one() == 2


async def test_a_connection_in_use_a_moment_ago_is_not_pinged(pg_engine, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 60.0)
    pings = 0
    async with pg_engine.connect() as conn:
        raw = (await conn.get_raw_connection()).dbapi_connection
        real = type(raw).ping

        def counting(self):  # noqa: ANN001, ANN202
            nonlocal pings
            pings += 1
            return real(self)

        monkeypatch.setattr(type(raw), "ping", counting)
    for _ in range(5):
        async with read_only(pg_engine) as conn:
            await conn.execute(text("SELECT 1"))
    assert pings == 0
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    async with read_only(pg_engine) as conn:
        await conn.execute(text("SELECT 1"))
    assert pings == 1
