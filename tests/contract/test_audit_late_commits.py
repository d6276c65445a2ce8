"""PostgreSQL: an audit record that commits after a record with a higher id
is still chained, once.

A serial id is drawn at INSERT and becomes visible at COMMIT, so two writers
can commit out of id order: A draws 1, B draws 2, B commits, the chain reads
2 and moves its cursor past 1, then A commits. `AuditChain.extend` keeps
the ids it passed over unseen as an open gap of the source, with the
transactions that were writing the table then, and reads the gap again
until those have all ended: A's record is chained when A commits, a gap
whose writer rolled back closes with nothing, and no writer waits for
another (no lock on the sources)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.audit import AuditChain
from hub.delivery.queue import disclosure_row
from hub.retention import Purger, RetentionPolicy
from hub.store.db import create_engine, create_schema
from hub.store.schema import access_decisions, audit_chain, audit_gaps, disclosures, operator_actions

pytestmark = pytest.mark.integration

KEY = b"k" * 32
TABLES = {"disclosures": (disclosures, disclosures.c.disclosure_id),
          "access_decisions": (access_decisions, access_decisions.c.decision_id),
          "operator_actions": (operator_actions, operator_actions.c.action_id)}


@pytest.fixture
async def engine(pg_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    await create_schema(pg_engine)
    yield pg_engine


def _row(name: str, n: int, at: datetime | None = None) -> dict:
    at = at or datetime.now(UTC)
    if name == "disclosures":
        return disclosure_row(event_id=f"e-{n}", person_id=f"p-{n}", event_type="s117-entitlement-started",
                              recipient_org="E06000060", decision="allowed", agreement_id="A1",
                              field_groups=["core"], reason="in force", channel="webhook", at=at)
    if name == "access_decisions":
        return dict(at=at, client_id="c", org_code="RNU", channel="rest", action="read", person_id=f"p-{n}",
                    decision="allowed", rule="responsible", role="responsible")
    return dict(at=at, client_id="ops", action="replay", target=f"t-{n}", detail={})


async def _insert(conn: AsyncConnection, name: str, n: int, at: datetime | None = None) -> int:
    table, idcol = TABLES[name]
    return (await conn.execute(table.insert().values(**_row(name, n, at)).returning(idcol))).scalar_one()


async def _chained(engine: AsyncEngine) -> Counter:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(audit_chain.c.source, audit_chain.c.source_id))).all()
        await conn.rollback()
    return Counter((r.source, r.source_id) for r in rows)


async def _all_records(engine: AsyncEngine) -> set[tuple[str, int]]:
    out = set()
    async with engine.connect() as conn:
        for name, (table, idcol) in TABLES.items():
            out |= {(name, i) for i in (await conn.execute(select(idcol))).scalars()}
        await conn.rollback()
    return out


async def _drain(chain: AuditChain) -> int:
    added = 0
    while n := await chain.extend():
        added += n
    return added


async def _open_gaps(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(audit_gaps))).scalar_one()
        await conn.rollback()
    return n


@pytest.mark.parametrize("name", list(TABLES))
async def test_a_record_committed_after_a_higher_id_is_chained_once(engine: AsyncEngine, name: str) -> None:
    chain = AuditChain(engine, KEY)
    async with engine.connect() as a, engine.connect() as b:
        await a.begin()
        first = await _insert(a, name, 1)  # drawn first, committed last
        await b.begin()
        second = await _insert(b, name, 2)
        await b.commit()
        assert first < second
        assert await _drain(chain) == 1  # the second only: the first is not visible yet
        assert await _drain(chain) == 0  # still open: nothing to chain, the gap stays
        assert (name, first) not in await _chained(engine)
        await a.commit()
    assert await _drain(chain) == 1
    chained = await _chained(engine)
    assert chained == Counter({(name, first): 1, (name, second): 1}), chained
    assert await _open_gaps(engine) == 0  # its writer ended: the gap is closed
    assert await _drain(chain) == 0
    result = await chain.verify()
    assert result["ok"], result


async def test_a_gap_whose_writer_rolled_back_closes_with_nothing_chained(engine: AsyncEngine) -> None:
    chain = AuditChain(engine, KEY)
    async with engine.connect() as a, engine.connect() as b:
        await a.begin()
        lost = await _insert(a, "disclosures", 1)
        await b.begin()
        kept = await _insert(b, "disclosures", 2)
        await b.commit()
        assert await _drain(chain) == 1
        assert await _open_gaps(engine) == 1
        await a.rollback()
    assert await _drain(chain) == 0
    assert await _open_gaps(engine) == 0
    assert await _chained(engine) == Counter({("disclosures", kept): 1})
    assert lost < kept
    result = await chain.verify()
    assert result["ok"], result


async def test_many_writers_committing_out_of_order_around_two_chains(engine: AsyncEngine,
                                                                      postgres_database_url: str) -> None:
    """Two hub processes (two engines) extend while writers of every source commit in the reverse of
    the order they drew their ids: every record ends up chained exactly once, and the chain verifies."""
    other = create_engine(postgres_database_url)
    chains = [AuditChain(engine, KEY), AuditChain(other, KEY)]
    try:
        for rnd in range(3):
            conns = [await engine.connect() for _ in range(6)]
            try:
                for i, conn in enumerate(conns):
                    await conn.begin()
                    for name in TABLES:
                        await _insert(conn, name, rnd * 10 + i)
                for conn in reversed(conns):  # the highest ids commit first
                    await conn.commit()
                    await asyncio.gather(*(c.extend() for c in chains))
            finally:
                for conn in conns:
                    await conn.close()
        await asyncio.gather(*(_drain(c) for c in chains))
        await _drain(chains[0])
        chained = await _chained(engine)
        assert set(chained) == await _all_records(engine)
        assert set(chained.values()) == {1}, [k for k, v in chained.items() if v > 1]
        assert await _open_gaps(engine) == 0
        result = await chains[1].verify()
        assert result["ok"], result
    finally:
        await other.dispose()


async def test_an_old_record_in_an_open_gap_is_not_purged_before_it_is_chained(engine: AsyncEngine) -> None:
    """Retention deletes a record only once chained and its entry purged: a record the chain has
    passed over while its transaction was still open is kept, whatever its date."""
    chain = AuditChain(engine, KEY)
    old = datetime.now(UTC) - timedelta(days=400)
    async with engine.connect() as a, engine.connect() as b:
        await a.begin()
        late = await _insert(a, "operator_actions", 1, at=old)
        await b.begin()
        await _insert(b, "operator_actions", 2, at=old)
        await b.commit()
        await _drain(chain)
        await chain.checkpoint(datetime.now(UTC).date())
        await a.commit()
    # The purge chains nothing itself: the record is in the open gap, unchained, dated long ago.
    done = await Purger(engine, chain, RetentionPolicy(0, 0, 0, 365)).run_once()
    assert done["audit"] == 1 and done["audit_operator_actions"] == 0, done
    async with engine.connect() as conn:
        kept = (await conn.execute(select(func.count()).select_from(operator_actions)
                                   .where(operator_actions.c.action_id == late))).scalar_one()
        await conn.rollback()
    assert kept == 1
    assert await _drain(chain) == 1
    assert (await _chained(engine))[("operator_actions", late)] == 1
    result = await chain.verify()
    assert result["ok"], result
