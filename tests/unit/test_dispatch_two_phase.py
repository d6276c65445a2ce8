"""The dispatcher on a SQLite file works a batch out on a snapshot and makes
its writes under the write lock afterwards (hub/delivery/dispatcher.py
`_two_phase`, hub/store/recording.py): a change posted meanwhile commits at
once; if what the batch read moves meanwhile (an event counter, the
subscriptions, the claim on the log), the batch is done again under the lock
and its event numbers stay unique and gap-free."""

from __future__ import annotations

import asyncio
import random
from datetime import date

from prometheus_client import REGISTRY
from sqlalchemy import select

from hub.delivery import queue
from hub.delivery.dispatcher import Dispatcher
from hub.sample_data import detention_to_move_scenario
from hub.store.db import write_transaction
from hub.store.schema import deliveries
from tests.support import push_scenario, subscribe_webhook


def _redone(reason: str) -> float:
    return REGISTRY.get_sample_value("s117_dispatch_batches_redone_total", {"reason": reason}) or 0.0


async def _subscribe(app_hub, port: int) -> str:  # noqa: ANN001
    return await subscribe_webhook(app_hub, "E06000060", f"http://127.0.0.1:{port}/hook", "s" * 32)


async def _post_all(app_hub, changes: list[dict]) -> None:  # noqa: ANN001
    for c in changes:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text


async def _numbers(app_hub, sid: str) -> list[int]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return list((await conn.execute(select(deliveries.c.event_number).where(
            deliveries.c.subscription_id == sid).order_by(deliveries.c.delivery_seq))).scalars())


def _scenario(seed: int, run: str) -> list[dict]:
    return detention_to_move_scenario(random.Random(seed), run, date(2025, 1, 6))


def _meanwhile(monkeypatch, action) -> list:  # noqa: ANN001
    """Run `action()` once, while the dispatcher works out its next batch
    (before its first message is handled); returns what it gave, once run."""
    real_handle = Dispatcher.handle
    got: list = []

    async def handle(self, conn, msg, cache=None):  # noqa: ANN001, ANN202
        if not got:
            got.append(await action())
        return await real_handle(self, conn, msg, cache)

    monkeypatch.setattr(Dispatcher, "handle", handle)
    return got


async def test_a_change_posted_while_a_batch_is_worked_out_commits_at_once(app_hub, monkeypatch) -> None:  # noqa: ANN001
    sid = await _subscribe(app_hub, 9201)
    await push_scenario(app_hub, seed=71)  # a first batch, dispatched
    before = await _numbers(app_hub, sid)
    assert before, "the scenario's council subscribes: its messages are queued"
    await _post_all(app_hub, _scenario(72, "two-phase-a"))

    async def post() -> int:
        # Locked for the whole batch, this POST would wait for the batch's end (and time out here).
        r = await asyncio.wait_for(app_hub.http.post(
            "/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
            json=_scenario(73, "two-phase-b")[0]), timeout=5)
        return r.status_code

    posted = _meanwhile(monkeypatch, post)
    failed, moved = _redone("failed"), _redone("moved")
    while await app_hub.hub.dispatcher.run_once():
        pass
    assert posted == [202]
    assert (_redone("failed"), _redone("moved")) == (failed, moved)
    after = await _numbers(app_hub, sid)
    assert len(after) > len(before)
    assert after == list(range(1, len(after) + 1))  # unique, in queue order, no gap


async def test_a_counter_moved_meanwhile_makes_the_batch_be_done_again(app_hub, monkeypatch) -> None:  # noqa: ANN001
    sid = await _subscribe(app_hub, 9202)
    await push_scenario(app_hub, seed=71)
    await _post_all(app_hub, _scenario(72, "two-phase-c"))

    async def take_one() -> int:
        # Another writer (a drift alert, a workflow notice) takes a number on the same subscription.
        async with write_transaction(app_hub.hub.engine) as other:
            return await queue.next_event_number(other, sid)

    taken = _meanwhile(monkeypatch, take_one)
    moved = _redone("moved")
    while await app_hub.hub.dispatcher.run_once():
        pass
    assert _redone("moved") == moved + 1
    numbers = await _numbers(app_hub, sid)
    assert taken and taken[0] not in numbers
    assert sorted([*numbers, *taken]) == list(range(1, len(numbers) + 2))  # still gap-free and unique


async def test_a_subscription_made_meanwhile_gets_the_batch(app_hub, monkeypatch) -> None:  # noqa: ANN001
    first = await _subscribe(app_hub, 9203)
    await push_scenario(app_hub, seed=71)
    await _post_all(app_hub, _scenario(72, "two-phase-d"))
    made = _meanwhile(monkeypatch, lambda: _subscribe(app_hub, 9204))
    before_first = len(await _numbers(app_hub, first))
    moved = _redone("moved")
    while await app_hub.hub.dispatcher.run_once():
        pass
    assert _redone("moved") == moved + 1
    new_count = len(await _numbers(app_hub, first)) - before_first
    assert new_count > 0
    # The batch read the organisation's subscriptions before the second was
    # made; done again, the second is sent the same messages as the first.
    assert await _numbers(app_hub, made[0]) == list(range(1, new_count + 1))


async def test_only_the_sql_log_is_worked_out_on_a_snapshot(app_hub) -> None:  # noqa: ANN001
    """Kafka's offsets are committed once the transaction given to `commit`
    has committed: that must be the real one, never a snapshot's. With a log
    that has no claim to check (Kafka's), the dispatcher on a SQLite file
    works each batch under the lock, as on PostgreSQL."""
    hub = app_hub.hub
    assert hub.dispatcher._two_phases  # SQLite file, SQL log

    class KafkaShaped:  # what the dispatcher looks for: no claim_batch
        async def fetch(self, *args, **kwargs) -> list:  # noqa: ANN002, ANN003
            return []

    other = Dispatcher(hub.engine, KafkaShaped(), hub.ref, hub.sharing, hub.protector, "urn:test",
                       agreements=hub.agreements)
    assert other._inline and not other._two_phases


async def test_writes_refused_under_the_lock_make_the_batch_be_done_again(app_hub, monkeypatch) -> None:  # noqa: ANN001
    """If making the kept writes fails (whatever the reason), they are all
    rolled back and the batch is done again under the lock: nothing is lost
    or written twice."""
    from hub.store.recording import RecordingConn

    sid = await _subscribe(app_hub, 9205)
    await push_scenario(app_hub, seed=71)
    await _post_all(app_hub, _scenario(72, "two-phase-e"))
    real_replay = RecordingConn.replay
    replays: list[int] = []

    async def replay(self, conn):  # noqa: ANN001, ANN202
        replays.append(len(self.records))
        if len(replays) == 1:
            await real_replay(self, conn)  # every write made, then the transaction fails: all rolled back
            raise RuntimeError("disk full")
        return await real_replay(self, conn)

    monkeypatch.setattr(RecordingConn, "replay", replay)
    failed = _redone("failed")
    while await app_hub.hub.dispatcher.run_once():
        pass
    assert replays and _redone("failed") == failed + 1
    numbers = await _numbers(app_hub, sid)
    assert numbers == list(range(1, len(numbers) + 1))  # each message queued once, no gap
    assert app_hub.hub.dispatcher._failures == {}


async def test_a_small_batch_is_done_under_the_lock_unless_a_worker_process_shares_the_file(
        app_hub, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    """In one process a batch of fewer than `two_phase_from` messages is
    handled in one locked transaction (a snapshot would cost more than it
    spares); with the front and a worker process sharing the file, on a
    snapshot. Either way each message is queued once, numbers gap-free."""
    from hub.store.db import WriterTurns, inline_writer

    hub = app_hub.hub
    sid = await _subscribe(app_hub, 9206)
    await push_scenario(app_hub, seed=71)
    snapshots: list[int] = []
    real = Dispatcher._work

    async def spy(self, conn, batch, **kw):  # noqa: ANN001, ANN003, ANN202
        if kw.get("keep"):  # worked out on a snapshot
            snapshots.append(len(batch))
        return await real(self, conn, batch, **kw)

    monkeypatch.setattr(Dispatcher, "_work", spy)
    changes = _scenario(74, "two-phase-small")
    await _post_all(app_hub, changes[:1])
    assert await hub.dispatcher.run_once(limit=1) == 1
    assert snapshots == []  # one message: locked at once
    writer = inline_writer(hub.engine)
    writer.turns = WriterTurns(str(tmp_path / "shared.db"))
    try:
        await _post_all(app_hub, changes[1:2])
        assert await hub.dispatcher.run_once(limit=1) == 1
        assert snapshots == [1]
    finally:
        writer.turns = None
    while await hub.dispatcher.run_once():
        pass
    numbers = await _numbers(app_hub, sid)
    assert numbers == list(range(1, len(numbers) + 1))


def test_a_batch_works_out_a_persons_views_once_per_status():
    """_BatchCache.truth_for: the views of one status are worked out once for
    the person's messages in a batch, and again for another status or once an
    organisation is held that they do not name (told since, as not involved)."""
    import dataclasses

    from hub.delivery.dispatcher import _BatchCache, _Held
    from hub.domain.views import NOT_INVOLVED, views_for
    from tests.unit.domain.builders import detained, left, moved, status
    from tests.unit.domain.fakes import BUCKINGHAMSHIRE, BUCKS_PRACTICE, HARROW, OXFORDSHIRE

    s = status([detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE),
                left("2024-03-01"), moved("2024-04-01", HARROW)], "2024-05-01")
    asked: list[str] = []

    def groups(org: str) -> frozenset[str]:
        asked.append(org)
        return frozenset({"responsibility"})

    cache = _BatchCache(today=date(2024, 5, 1))
    held: dict[str, _Held] = {}
    first = cache.truth_for("p1", s, held, groups)
    assert first == views_for(s, held, lambda org: frozenset({"responsibility"})) and HARROW in first
    worked = len(asked)
    assert cache.truth_for("p1", s, held, groups) is first and len(asked) == worked  # kept
    held[OXFORDSHIRE] = _Held(1, dict(NOT_INVOLVED), "e1")  # told since; not in the views kept
    again = cache.truth_for("p1", s, held, groups)
    assert again is not first and again[OXFORDSHIRE] == NOT_INVOLVED and len(asked) > worked
    assert cache.truth_for("p1", dataclasses.replace(s), held, groups) is not again  # another status
    assert cache.truth_for("p2", s, held, groups) is not cache.truth["p1"][1]  # another person


async def test_a_batch_is_fetched_and_worked_out_in_one_snapshot(app_hub, monkeypatch) -> None:  # noqa: ANN001
    """The fetch and the snapshot's work share one read transaction (one
    snapshot a batch, the offset read once): the messages fetched are those
    the work reads the histories of, at the same moment; the writes are the
    same as when each had its own (numbers gap-free, each message queued once)."""
    import hub.delivery.dispatcher as dispatcher_module
    from hub.bus.sql import SqlLog

    hub = app_hub.hub
    sid = await _subscribe(app_hub, 9207)
    await push_scenario(app_hub, seed=71)
    await _post_all(app_hub, _scenario(75, "two-phase-one-snapshot"))
    opened: list[bool] = []
    real_snapshot = dispatcher_module.snapshot

    def counting(engine, consistent=False):  # noqa: ANN001, ANN202
        opened.append(consistent)
        return real_snapshot(engine, consistent)

    async def no_fetch(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a snapshot of its own for the fetch")

    monkeypatch.setattr(dispatcher_module, "snapshot", counting)
    monkeypatch.setattr(SqlLog, "fetch", no_fetch)
    committed = []
    real_committed = SqlLog.committed

    async def counting_committed(self, conn, group_id, topic):  # noqa: ANN001, ANN202
        committed.append(group_id)
        return await real_committed(self, conn, group_id, topic)

    monkeypatch.setattr(SqlLog, "committed", counting_committed)
    batches = 0
    while await hub.dispatcher.run_once():
        batches += 1
    assert batches > 0 and opened == [True] * (batches + 1)  # the last: an empty fetch
    assert committed == []  # the offset read once, by the fetch
    numbers = await _numbers(app_hub, sid)
    assert numbers and numbers == list(range(1, len(numbers) + 1))


async def test_subscriptions_and_counters_are_taken_from_the_last_batch_and_a_change_between_is_seen(
        app_hub, monkeypatch) -> None:  # noqa: ANN001
    """A batch worked out on a snapshot takes the subscriptions and event
    counters the last committed batch left, rather than reading them again;
    a subscription made, or a number taken by another writer, between two
    batches is still seen at once: the check under the lock finds it moved
    and the batch is done again, locked, reading afresh (every message then
    queued to the new subscription, numbers gap-free and unique)."""
    from hub.store import db

    hub = app_hub.hub
    first = await _subscribe(app_hub, 9208)
    await push_scenario(app_hub, seed=71)  # dispatched: the council's subscriptions and counter known
    assert hub.dispatcher._known_subscriptions and hub.dispatcher._known_numbers
    read: list[str] = []
    real = db.execute_prepared

    async def counting(conn, prepared, params=None):  # noqa: ANN001, ANN202
        if prepared in (queue._ACTIVE, queue._COUNTER):
            read.append("subscriptions" if prepared is queue._ACTIVE else "counter")
        return await real(conn, prepared, params)

    monkeypatch.setattr(queue, "execute_prepared", counting)
    await _post_all(app_hub, _scenario(76, "two-phase-known-a"))
    moved = _redone("moved")
    while await hub.dispatcher.run_once():
        pass
    assert _redone("moved") == moved
    known_orgs = set(hub.dispatcher._known_subscriptions)
    assert all(r == "subscriptions" for r in read) and "counter" not in read  # the council's: not read again
    numbers = await _numbers(app_hub, first)
    assert numbers == list(range(1, len(numbers) + 1))

    # Between two batches: a second subscription for the council, and a number taken on the first.
    second = await _subscribe(app_hub, 9209)
    async with write_transaction(hub.engine) as other:
        taken = await queue.next_event_number(other, first)
    await _post_all(app_hub, _scenario(77, "two-phase-known-b"))
    while await hub.dispatcher.run_once():
        pass
    assert _redone("moved") == moved + 1  # caught under the lock, done again
    after = await _numbers(app_hub, first)
    assert sorted([*after, taken]) == list(range(1, len(after) + 2))  # gap-free and unique
    got = await _numbers(app_hub, second)
    assert got and got == list(range(1, len(got) + 1))  # the new subscription had every later message
    assert known_orgs <= set(hub.dispatcher._known_subscriptions)
