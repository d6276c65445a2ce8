"""Group commit (hub/ingest/group_commit.py): concurrent changes share
transactions, yet each person's changes keep their order, a duplicate is
answered with the first answer, and one failing unit never takes the others'
changes with it."""

from __future__ import annotations

import asyncio
import gc as collector
import random
from datetime import date

from sqlalchemy import func, select

from hub.ingest.group_commit import GroupCommit
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import bus_messages, ingest_results, register_changes


async def count(engine, table) -> int:  # noqa: ANN001
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def test_concurrent_people_share_transactions_and_each_keeps_its_order(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    people = [detention_to_move_scenario(random.Random(s), f"gc-{s}", date(2025, 1, 6)) for s in range(12)]

    async def send(changes: list[dict]) -> list[dict]:
        out = []
        for c in changes:  # one person's changes, in order, as a trust's interface would
            r = await app_hub.http.post("/v1/register-changes", headers=h, json=c)
            assert r.status_code == 202, r.text
            out.append(r.json())
        return out

    answers = await asyncio.gather(*(send(p) for p in people))
    gc = app_hub.hub.ingest._commit
    assert gc.units == 48
    assert gc.batches < gc.units  # some changes shared a transaction (one fsync)
    # Each person's events are those of the scenario sent alone: entitlement
    # starts when they leave hospital, the move comes after it.
    for person in answers:
        assert [e["event_type"] for e in person[2]["events"]].count("s117-entitlement-started") == 1
        assert "s117-moved-out-of-area" in [e["event_type"] for e in person[3]["events"]]
        assert len({a["person_id"] for a in person}) == 1
    # The outbox holds every event once, in the order each person's changes were accepted.
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.key, bus_messages.c.event_id)
                                   .order_by(bus_messages.c.offset))).all()
    for person in answers:
        pid = person[0]["person_id"]
        assert [r.event_id for r in rows if r.key == pid] == [e["event_id"] for a in person for e in a["events"]]
    assert await count(app_hub.hub.engine, register_changes) == 48


async def test_the_same_message_sent_concurrently_is_recorded_once(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    change = detention_to_move_scenario(random.Random(5), "gc-dup", date(2025, 1, 6))[0]
    others = [detention_to_move_scenario(random.Random(s), f"gc-o{s}", date(2025, 1, 6))[0] for s in range(6)]
    rs = await asyncio.gather(*(app_hub.http.post("/v1/register-changes", headers=h, json=c)
                                for c in [change] * 5 + others))
    assert all(r.status_code == 202 for r in rs)
    dup = [r.json() for r in rs[:5]]
    assert len({a["change_id"] for a in dup}) == 1
    assert sum(1 for a in dup if not a.get("duplicate")) == 1
    assert await count(app_hub.hub.engine, register_changes) == 7
    assert await count(app_hub.hub.engine, ingest_results) == 7


def _broken_at_3(t, i: int, accepted=None, broken=None):  # noqa: ANN001, ANN202
    """A unit inserting row `i` (counting `accepted`); unit 3 then fails (counting `broken` first)."""
    async def run(conn):  # noqa: ANN001, ANN202
        await conn.execute(t.insert(), {"id": i, "v": str(i)})
        if accepted is not None:
            conn.count(accepted)
        if i == 3:
            if broken is not None:
                conn.count(broken)
            raise ValueError("unit 3 is broken")
        return i
    return run


def _undone(t, i: int, accepted=None):  # noqa: ANN001, ANN202
    """A unit that inserts row `i` (counting 100 `accepted`) and rolls its own transaction back."""
    async def run(conn):  # noqa: ANN001, ANN202
        async with conn.begin() as tx:
            await conn.execute(t.insert(), {"id": i, "v": "undo"})
            if accepted is not None:
                conn.count(accepted, 100)
            await tx.rollback()
            return "rolled back"
    return run


async def test_a_failing_unit_fails_alone_and_the_rest_commit(table_engine):
    engine, t = table_engine
    gc = GroupCommit(engine, max_wait=0.01)

    results = await asyncio.gather(*(gc.run(_broken_at_3(t, i), keys=[i]) for i in range(8)),
                                   gc.run(_undone(t, 50), keys=[50]), return_exceptions=True)
    assert isinstance(results[3], ValueError)
    assert [r for i, r in enumerate(results[:8]) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
    assert results[8] == "rolled back"
    async with engine.connect() as conn:
        ids = (await conn.execute(select(t.c.id).order_by(t.c.id))).scalars().all()
    assert ids == [0, 1, 2, 4, 5, 6, 7]


async def test_units_with_the_same_key_never_share_a_batch(table_engine):
    engine, t = table_engine
    gc = GroupCommit(engine, max_wait=0.01)
    batches: list[list[int]] = []

    def unit(i: int, key: str):  # noqa: ANN202
        async def run(conn):  # noqa: ANN001, ANN202
            batches[-1].append(i)
            await conn.execute(t.insert(), {"id": i, "v": key})
            return i
        return run

    take = gc._take

    def watched():  # noqa: ANN202
        batches.append([])
        return take()

    gc._take = watched
    keys = ["a", "b", "a", "c", "a", "b"]
    results = await asyncio.gather(*(gc.run(unit(i, k), keys=[k]) for i, k in enumerate(keys)))
    assert results == list(range(6))
    for batch in batches:
        assert len({keys[i] for i in batch}) == len(batch), batches
    ran = [i for batch in batches for i in batch]
    assert [i for i in ran if keys[i] == "a"] == [0, 2, 4]  # in the order sent
    assert [i for i in ran if keys[i] == "b"] == [1, 5]
    assert len(batches[0]) > 1  # different keys did share a batch
    async with engine.connect() as conn:
        rows = (await conn.execute(select(t.c.id, t.c.v).order_by(t.c.id))).all()
    assert [(r.id, r.v) for r in rows] == list(enumerate(keys))


async def test_a_read_only_connection_does_not_wait_for_a_writer(table_engine):
    from hub.store.db import read_only

    engine, t = table_engine
    async with engine.begin() as writer:  # holds SQLite's write lock until the block ends
        await writer.execute(t.insert(), {"id": 1, "v": "uncommitted"})

        async def read() -> list[int]:
            async with read_only(engine) as conn:
                return (await conn.execute(select(t.c.id))).scalars().all()

        # A BEGIN IMMEDIATE reader would wait (busy timeout 30 s) for the writer's commit.
        assert await asyncio.wait_for(read(), 5) == []  # the last committed snapshot


async def test_a_writer_waiting_for_the_sqlite_lock_never_holds_up_the_event_loop(table_engine):
    """On a SQLite file the group commit writes on its own connection: its
    BEGIN IMMEDIATE waits for another writer's lock in a worker thread, so the
    loop (every other request) keeps running meanwhile, and the batch commits
    once the lock is free."""
    engine, t = table_engine
    gc = GroupCommit(engine, max_wait=0.0)
    assert gc._inline is not None  # the SQLite writer path is the one under test
    ticks: list[float] = []
    loop = asyncio.get_running_loop()

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    async def unit(conn):  # noqa: ANN001, ANN202
        await conn.execute(t.insert(), {"id": 1, "v": "after"})
        return "written"

    stop = asyncio.Event()
    # What is measured is the writer's wait; a full collection of the whole
    # test session's objects (it happened: a 0.26 s gap) is not part of it.
    collector.disable()
    try:
        tick_task = asyncio.create_task(ticker(stop))
        async with engine.begin() as other:  # another writer holds the lock for 0.4 s
            await other.execute(t.insert().values(id=0, v="first"))
            pending = asyncio.create_task(gc.run(unit, keys=["k"]))
            await asyncio.sleep(0.4)
            assert not pending.done()  # still waiting for the lock
        assert await asyncio.wait_for(pending, 10) == "written"
        stop.set()
        await tick_task
    finally:
        collector.enable()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) > 20 and max(gaps) < 0.2, max(gaps)
    async with engine.connect() as conn:
        assert (await conn.execute(select(t.c.v).order_by(t.c.id))).scalars().all() == ["first", "after"]
    gc.close()


async def test_senders_that_wait_for_their_answer_are_not_kept_waiting_for_more(table_engine):
    """Eight senders each waiting for its answer before sending again (an
    interface engine's MLLP connections): once all eight are queued, the
    batch goes, rather than waiting out the fill time for senders that
    cannot come. The fill time here is 5 s: a wait for more would show."""
    engine, t = table_engine
    gc = GroupCommit(engine, max_batch=64, max_wait=5.0)
    sizes: list[int] = []
    take = gc._take

    def watched():  # noqa: ANN202
        got = take()
        sizes.append(len(got))
        return got

    gc._take = watched

    def unit(i: int):  # noqa: ANN202
        async def run(conn):  # noqa: ANN001, ANN202
            await conn.execute(t.insert(), {"id": i, "v": "x"})
            return i
        return run

    async def sender(n: int) -> None:
        for r in range(3):
            assert await gc.run(unit(r * 8 + n), keys=[n]) == r * 8 + n

    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(asyncio.gather(*(sender(n) for n in range(8))), timeout=30)
    assert loop.time() - started < 2.5, sizes  # not one 5 s wait
    assert sizes == [8, 8, 8]
    assert await count(engine, t) == 24


async def test_a_deferred_upsert_runs_once_for_the_batch_after_its_inserts_and_fails_with_its_unit(table_engine):
    """`WriteBehind.defer` (the register counts' upsert): written with the
    batch's inserts, in the order first seen, so it sees the rows inserted
    before it; a unit that fails takes its deferred statement with it."""
    from sqlalchemy.dialects.sqlite import insert as upsert

    engine, t = table_engine
    gc = GroupCommit(engine, max_wait=0.01)
    ins = upsert(t)
    stmt = ins.on_conflict_do_update(index_elements=[t.c.id], set_={"v": ins.excluded.v + "+"})
    executed: list[int] = []

    def unit(i: int):  # noqa: ANN202
        async def run(conn):  # noqa: ANN001, ANN202
            await conn.execute(t.insert(), {"id": i, "v": str(i)})
            await conn.defer(stmt, {"id": i, "v": f"u{i}"})  # conflicts with the insert above: an update
            executed.append(i)
            if i == 2:
                raise ValueError("unit 2 is broken")
            return i
        return run

    results = await asyncio.gather(*(gc.run(unit(i), keys=[i]) for i in range(5)), return_exceptions=True)
    assert isinstance(results[2], ValueError) and [r for i, r in enumerate(results) if i != 2] == [0, 1, 3, 4]
    async with engine.connect() as conn:
        rows = dict((await conn.execute(select(t.c.id, t.c.v).order_by(t.c.id))).all())
    assert rows == {0: "u0+", 1: "u1+", 3: "u3+", 4: "u4+"}  # each upsert ran after its insert, once


def test_the_write_behinds_plain_insert_is_made_once_per_table_and_is_table_insert() -> None:
    from sqlalchemy.dialects import sqlite

    from hub.ingest.group_commit import _plain_insert
    from hub.store.schema import persons, register_changes

    for table in (persons, register_changes):
        made = _plain_insert(table)
        assert made is _plain_insert(table) and made.table is table
        assert str(made.compile(dialect=sqlite.dialect())) == str(table.insert().compile(dialect=sqlite.dialect()))


class _Tally:
    """A counter's `inc`, recorded."""

    def __init__(self) -> None:
        self.total = 0.0
        self.calls = 0

    def inc(self, amount: float = 1) -> None:
        self.total += amount
        self.calls += 1


async def test_counts_are_added_once_committed_and_only_for_what_was_kept(table_engine):
    engine, t = table_engine
    gc = GroupCommit(engine, max_wait=0.01)
    accepted, broken = _Tally(), _Tally()

    # Unit 3 fails its batch: every unit of it runs again alone.
    results = await asyncio.gather(*(gc.run(_broken_at_3(t, i, accepted, broken), keys=[i]) for i in range(8)),
                                   gc.run(_undone(t, 50, accepted), keys=[50]), return_exceptions=True)
    assert isinstance(results[3], ValueError) and results[8] == "rolled back"
    # Seven units committed, each counted once: not the failed batch's counts, not unit 3's, not the undone one's.
    assert accepted.total == 7 and broken.total == 0

    # A batch that commits adds each counter once, with its total, before its callers are answered.
    accepted.total = accepted.calls = 0

    def counted(i: int):  # noqa: ANN202
        async def run(conn):  # noqa: ANN001, ANN202
            await conn.execute(t.insert(), {"id": 100 + i, "v": "ok"})
            conn.count(accepted)
            return i
        return run

    async def answered(i: int) -> float:
        await gc.run(counted(i), keys=[100 + i])
        return accepted.total

    seen = await asyncio.gather(*(answered(i) for i in range(6)))
    assert accepted.total == 6 and all(s > 0 for s in seen)
    assert accepted.calls < 6  # changes that shared a transaction were added together


async def test_a_unit_alone_that_rolls_back_keeps_nothing_on_either_writer(table_engine):
    """Run alone, a unit's `tx.rollback()` rolls its real transaction back,
    through the inline SQLite writer (a file) and through the async engine
    (the PostgreSQL path: here the same file without the inline writer);
    the next unit commits as usual, and nothing of the first is counted."""
    from prometheus_client import CollectorRegistry, Counter

    engine, t = table_engine
    for inline in (True, False):
        gc = GroupCommit(engine, max_wait=0)
        if not inline:
            gc._inline = None  # the engine's own transactions, as on PostgreSQL
        assert (gc._inline is not None) is inline
        base = 100 if inline else 200
        accepted = Counter("accepted", "units counted", registry=CollectorRegistry())
        assert await gc.run(_undone(t, base, accepted), keys=[base]) == "rolled back"
        assert await gc.run(_broken_at_3(t, base + 1, accepted), keys=[base + 1]) == base + 1
        async with engine.connect() as conn:
            rows = (await conn.execute(select(t.c.id, t.c.v).where(t.c.id >= base, t.c.id < base + 100))).all()
        assert [tuple(r) for r in rows] == [(base + 1, str(base + 1))]
        assert accepted._value.get() == 1
