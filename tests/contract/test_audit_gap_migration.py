"""Migration 0027 (audit_gaps), on SQLite and PostgreSQL: a record an older
hub's chain read past without chaining (its cursor beyond the record's id, no
entry for it) is chained once after the upgrade, and every record already
chained stays chained once; after a purge (an anchor) nothing is read again."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from hub.audit import AuditChain, record_operator_action
from hub.store.db import create_engine, create_schema
from hub.store.schema import audit_chain, audit_cursors, audit_gaps
from tests.contract.test_migrations import _migrate

pytestmark = pytest.mark.integration


async def _skipped_record(engine) -> int:  # noqa: ANN001
    """Three operator actions chained, then (the schema back at 0026) a fourth whose id the cursor is
    past with no entry for it: what the old chain left when a record committed after a higher id."""
    chain = AuditChain(engine, b"k" * 32)
    async with engine.begin() as conn:
        for n in range(3):
            await record_operator_action(conn, "ops", "replay", f"sub-{n}")
    assert await chain.extend() == 3
    async with engine.begin() as conn:
        await conn.run_sync(_migrate, "downgrade", "0026")
        await record_operator_action(conn, "ops", "retry", "sub-late")
        skipped = (await conn.execute(select(func.max(audit_cursors.c.last_id)))).scalar_one() + 1
        await conn.execute(audit_cursors.update().where(audit_cursors.c.source == "operator_actions")
                           .values(last_id=skipped))
    return skipped


async def _chained(engine) -> Counter:  # noqa: ANN001
    async with engine.connect() as conn:
        got = Counter((await conn.execute(select(audit_chain.c.source_id)
                                          .where(audit_chain.c.source == "operator_actions"))).scalars())
        await conn.rollback()
    return got


async def test_0027_chains_a_record_the_old_chain_read_past_once(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        await create_schema(engine)
        skipped = await _skipped_record(engine)
        await create_schema(engine)  # 0027: every source read again up to its cursor, as a gap no one holds
        chain = AuditChain(engine, b"k" * 32)
        assert await chain.extend() == 1
        assert await chain.extend() == 0
        assert await _chained(engine) == Counter({1: 1, 2: 1, 3: 1, skipped: 1})
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(audit_gaps))).scalar_one() == 0
        result = await chain.verify()
        assert result["ok"], result
    finally:
        await engine.dispose()


async def test_0027_reads_nothing_again_once_the_chain_was_purged(store_url: str) -> None:
    """After a purge an entry's absence does not tell a record never chained from one whose entry
    was purged: nothing is read again (a purged record's entry is never made twice)."""
    engine = create_engine(store_url)
    try:
        await create_schema(engine)
        skipped = await _skipped_record(engine)
        async with engine.begin() as conn:
            await conn.execute(audit_cursors.insert().values(source="(anchor)", last_id=0, anchor_hash="0" * 64))
        await create_schema(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(audit_gaps))).scalar_one() == 0
        assert await AuditChain(engine, b"k" * 32).extend() == 0
        assert skipped not in await _chained(engine)
    finally:
        await engine.dispose()


async def test_0027_downgrade_drops_the_gaps_and_keeps_the_chain(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            await record_operator_action(conn, "ops", "replay", "sub-1")
        assert await AuditChain(engine, b"k" * 32).extend() == 1
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "downgrade", "0026")
            tables = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
            kept = (await conn.execute(select(func.count()).select_from(audit_chain))).scalar_one()
        assert "audit_gaps" not in tables and kept == 1
        await create_schema(engine)
        assert await AuditChain(engine, b"k" * 32).extend() == 0  # re-read, found chained: nothing twice
        assert (await _chained(engine)) == Counter({1: 1})
    finally:
        await engine.dispose()
