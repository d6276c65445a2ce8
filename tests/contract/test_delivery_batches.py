"""Batches, on both stores: the dispatcher handles the waiting events in one
transaction with a savepoint each, and the deliverers lease, send and record
a subscription's deliveries a batch at a time. A poison event is rolled back
alone, retried, then dead-lettered while the rest of its batch goes through;
a crash between sending and recording sends again and never skips; order
and event numbers are those of the queue."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date

import httpx
import pytest
from sqlalchemy import func, select

import hub.delivery.leases as leases
from hub.bus.port import EVENTS_TOPIC
from hub.delivery.dispatcher import GROUP, _Retry
from hub.delivery.webhook import HostClients, WebhookDeliverer
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import dead_letters, deliveries, dispatched_events, recipient_views
from tests.e2e.conftest import SECRET
from tests.support import Receiver, subscribe_webhook

pytestmark = pytest.mark.integration
COUNCIL = "E06000060"


async def _subscribe(store_hub, url: str) -> str:  # noqa: ANN001
    return await subscribe_webhook(store_hub, COUNCIL, url, SECRET)


async def _post_people(store_hub, seeds: list[int]) -> list[dict]:  # noqa: ANN001
    """Every change of each person, posted and not yet dispatched; the events the hub reported."""
    events = []
    for seed in seeds:
        for c in detention_to_move_scenario(random.Random(seed), f"batch-{seed}", date(2025, 1, 6)):
            r = await store_hub.http.post("/v1/register-changes", headers={"X-API-Key": store_hub.keys["trust"]},
                                          json=c)
            assert r.status_code == 202, r.text
            events += r.json()["events"]
    return events


async def _rows(engine, query):  # noqa: ANN001, ANN202
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        await conn.rollback()
    return rows


@dataclass
class _Queued:
    receiver: Receiver
    clients: HostClients
    sub: str
    expected: list[str]  # the subscription's queued event ids, in queue order


@asynccontextmanager
async def _queued(store_hub, seeds: list[int]) -> AsyncIterator[_Queued]:  # noqa: ANN001
    """A council webhook on a real receiver, these people's changes posted and dispatched (at least four
    deliveries queued); the receiver and the HTTP clients closed afterwards."""
    hub = store_hub.hub
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    clients = HostClients(timeout=1.0, allowed_hosts=["127.0.0.1"])
    try:
        sub = await _subscribe(store_hub, receiver.url(COUNCIL))
        await _post_people(store_hub, seeds)
        while await hub.dispatcher.run_once():
            pass
        expected = [r.event_id for r in await _rows(hub.engine, select(deliveries.c.event_id)
                    .where(deliveries.c.subscription_id == sub).order_by(deliveries.c.delivery_seq))]
        assert len(expected) >= 4
        yield _Queued(receiver, clients, sub, expected)
    finally:
        await clients.aclose()
        await receiver.stop()


async def test_a_poison_event_is_retried_then_dead_lettered_alone_and_the_batch_goes_through(store_hub):
    hub = store_hub.hub
    sub = await _subscribe(store_hub, "http://127.0.0.1:9/hook")
    events = await _post_people(store_hub, [41, 42])
    assert len(events) >= 6
    poison = events[len(events) // 2]["event_id"]
    real = hub.dispatcher.handle
    tries: list[str] = []

    async def handle(conn, msg, *batch):  # noqa: ANN001, ANN002, ANN202
        await real(conn, msg, *batch)  # its writes (views, deliveries, numbers) must all be rolled back
        if msg.event_id == poison:
            tries.append(msg.event_id)
            raise RuntimeError("renderer bug")

    hub.dispatcher.handle = handle
    # A batch is first worked out without savepoints (on a SQLite file, on a
    # snapshot; on PostgreSQL, locked): a failure there is not counted, and
    # the batch is done again under the lock, a savepoint per message, where it is.
    runs = 2
    before = []
    for attempt in (1, 2):
        with pytest.raises(_Retry):
            await hub.dispatcher.run_once()
        assert tries == [poison] * attempt * runs
        # What came before the poison event is committed; it and what follows wait.
        done = {r.event_id for r in await _rows(hub.engine, select(dispatched_events.c.event_id))}
        before = [e["event_id"] for e in events[:len(events) // 2]]
        assert done == set(before)
        assert await hub.bus.lag(GROUP, EVENTS_TOPIC) == len(events) - len(before)
    assert await hub.dispatcher.run_once() == len(events) - len(before)  # the third failure: dead-lettered
    assert tries == [poison] * 3 * runs
    assert await hub.bus.lag(GROUP, EVENTS_TOPIC) == 0
    [dead] = await _rows(hub.engine, select(dead_letters))
    assert dead.event_id == poison and dead.reason.startswith("RuntimeError after 3 attempts")
    done = {r.event_id for r in await _rows(hub.engine, select(dispatched_events.c.event_id))}
    assert done == {e["event_id"] for e in events} - {poison}
    queued = await _rows(hub.engine, select(deliveries.c.event_id, deliveries.c.event_number)
                         .where(deliveries.c.subscription_id == sub).order_by(deliveries.c.delivery_seq))
    assert queued and poison not in {q.event_id for q in queued}
    # The poison event's rolled-back queuing gave its numbers back: 1..n, no gap.
    assert [q.event_number for q in queued] == list(range(1, len(queued) + 1))
    views = await _rows(hub.engine, select(recipient_views.c.last_event_id))
    assert poison not in {v.last_event_id for v in views}

    # Replayed by an operator once fixed, it is queued after the others.
    hub.dispatcher.handle = real
    r = await store_hub.http.post(f"/v1/ops/dead-letters/{dead.dead_letter_id}/replay",
                                  headers={"X-API-Key": (await _admin(hub))})
    assert r.status_code == 200, r.text
    assert poison in {r.event_id for r in await _rows(hub.engine, select(dispatched_events.c.event_id))}


async def test_a_batch_that_goes_through_takes_no_savepoint_and_is_handled_once(store_hub):
    """A savepoint per message is only for a batch in which one failed: a
    clean batch handles each message once, outside any savepoint (on
    PostgreSQL a SAVEPOINT and a RELEASE were four round trips a message)."""
    hub = store_hub.hub
    await _subscribe(store_hub, "http://127.0.0.1:9/hook")
    events = await _post_people(store_hub, [43, 44])
    real = hub.dispatcher.handle
    seen: list[tuple[str, bool]] = []

    async def handle(conn, msg, *batch):  # noqa: ANN001, ANN002, ANN202
        sync = getattr(conn, "sync_connection", None)
        seen.append((msg.event_id, bool(sync is not None and sync.in_nested_transaction())))
        await real(conn, msg, *batch)

    hub.dispatcher.handle = handle
    assert await hub.dispatcher.run_once() == len(events)
    assert sorted(e for e, _ in seen) == sorted(e["event_id"] for e in events)  # each once
    assert not any(nested for _, nested in seen)
    done = {r.event_id for r in await _rows(hub.engine, select(dispatched_events.c.event_id))}
    assert done == {e["event_id"] for e in events}


async def _admin(hub) -> str:  # noqa: ANN001
    from hub.clients import add_client
    return (await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]


async def test_a_batch_sent_but_not_recorded_is_sent_again_in_order_never_skipped(store_hub, monkeypatch):
    hub = store_hub.hub
    async with _queued(store_hub, [51, 52]) as q:
        receiver, clients, sub, expected, n = q.receiver, q.clients, q.sub, q.expected, len(q.expected)
        real = leases.record_batch
        crashes = {"n": 0}

        async def crash_before_recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            crashes["n"] += 1
            raise ConnectionError("the hub died after sending")

        monkeypatch.setattr(leases, "record_batch", crash_before_recording)
        # Half-second deadline, a lease of 2 s: every delivery leased in one batch, and
        # sent while a whole attempt still fits in the lease (all of them, unless the machine is slow).
        deliverer = WebhookDeliverer(hub.engine, hub.protector, clients, 0.05, 0.2, 0, 2.0, timeout_seconds=0.5,
                                     per_subscription_batch=100)
        with pytest.raises(ConnectionError):
            await deliverer.run_once()
        sent = len(receiver.received)
        assert crashes["n"] == 1 and 1 <= sent <= n
        assert receiver.event_ids() == expected[:sent]
        assert await deliverer.run_once() == 0  # leased: nothing sent twice while the lease runs
        pending = await _rows(hub.engine, select(deliveries.c.status, deliveries.c.attempts)
                              .where(deliveries.c.subscription_id == sub))
        assert {(p.status, p.attempts) for p in pending} == {("pending", 1)}

        monkeypatch.setattr(leases, "record_batch", real)
        await asyncio.sleep(2.1)  # the lease runs out
        assert await deliverer.run_once() == n
        # Everything again, in the same order with the same numbers; nothing skipped.
        assert receiver.event_ids() == expected[:sent] + expected
        numbers = [int(r.headers["s117-event-number"]) for r in receiver.received]
        assert numbers == list(range(1, sent + 1)) + list(range(1, n + 1))
        assert all(r.signature_ok for r in receiver.received)
        done = await _rows(hub.engine, select(deliveries.c.status, deliveries.c.attempts)
                           .where(deliveries.c.subscription_id == sub))
        assert {(d.status, d.attempts) for d in done} == {("delivered", 2)}


async def test_a_failure_mid_batch_records_what_went_gives_back_the_rest_and_resumes_at_it(store_hub):
    hub = store_hub.hub
    async with _queued(store_hub, [61, 62]) as q:
        receiver, clients, sub, expected, n = q.receiver, q.clients, q.sub, q.expected, len(q.expected)

        class FailThird:
            """The real endpoint, except that the third POST gets a 503."""

            def __init__(self) -> None:
                self.posts = 0

            async def post(self, url, **kwargs):  # noqa: ANN001, ANN003, ANN201
                self.posts += 1
                if self.posts == 3:
                    return httpx.Response(503)
                return await clients.post(url, **kwargs)

        deliverer = WebhookDeliverer(hub.engine, hub.protector, FailThird(), 0.05, 0.1, 0, 5.0, timeout_seconds=1.0,
                                     per_subscription_batch=100)
        assert await deliverer.run_once() == 3  # two delivered, the third failed, the rest not tried
        rows = await _rows(hub.engine, select(deliveries.c.event_number, deliveries.c.status,
                                              deliveries.c.attempts, deliveries.c.last_error)
                           .where(deliveries.c.subscription_id == sub).order_by(deliveries.c.delivery_seq))
        assert [(r.status, r.attempts) for r in rows[:3]] == [("delivered", 1), ("delivered", 1), ("pending", 1)]
        assert rows[2].last_error == "HTTP 503"
        # Given back untouched: not attempted, due as soon as the head is.
        assert {(r.status, r.attempts) for r in rows[3:]} == {("pending", 0)}
        await asyncio.sleep(0.15)  # the backoff
        assert await deliverer.run_once() == n - 2
        assert receiver.event_ids() == expected  # the 503 never reached the receiver: each once, in order
        async with hub.engine.connect() as conn:
            delivered = (await conn.execute(select(func.count()).select_from(deliveries).where(
                deliveries.c.subscription_id == sub, deliveries.c.status == "delivered"))).scalar_one()
        assert delivered == n


async def test_event_numbers_taken_in_a_rolled_back_savepoint_are_given_back(engine):
    from datetime import UTC, datetime

    from hub.delivery.queue import EventNumbers, create_counter
    from hub.store.schema import subscription_counters, subscriptions

    async with engine.begin() as conn:
        for sid in ("sub-a", "sub-b"):
            await conn.execute(subscriptions.insert().values(
                subscription_id=sid, org_code="E06000060", client_id="c", channel="webhook",
                url="https://council.invalid/hook", secret=b"x", active=True, created_at=datetime.now(UTC)))
            await create_counter(conn, sid)
    numbers = EventNumbers()
    async with engine.begin() as conn:
        assert await numbers.take(conn, "sub-a") == 1
        before = numbers.snapshot()
        with pytest.raises(RuntimeError):
            async with conn.begin_nested():
                assert await numbers.take(conn, "sub-a") == 2
                assert await numbers.take(conn, "sub-b") == 1  # first read inside the savepoint
                raise RuntimeError("this event failed")
        numbers.restore(before)
        moved = 0
        if engine.dialect.name == "postgresql":
            # The rollback released sub-b's row lock: another instance queues 5 for it meanwhile.
            async with engine.begin() as other:
                await other.execute(subscription_counters.update().where(
                    subscription_counters.c.subscription_id == "sub-b").values(last_event_number=5))
            moved = 5
        assert await numbers.take(conn, "sub-b") == moved + 1  # read (and locked) again, not remembered
        assert await numbers.take(conn, "sub-a") == 2
        await numbers.flush(conn)
    counters = dict((await _rows(engine, select(subscription_counters.c.subscription_id,
                                                subscription_counters.c.last_event_number))))
    assert counters == {"sub-a": 2, "sub-b": moved + 1}


async def test_each_next_batch_is_leased_with_the_last_ones_outcomes(store_hub):
    """Draining in batches of two, the next batch is leased in the transaction
    that records the last one's outcomes: one for the first lease, then one
    per batch (the last finding nothing more), every delivery once, in order."""
    from hub.delivery.ledger import ledger_for

    hub = store_hub.hub
    async with _queued(store_hub, [81]) as q:
        deliverer = WebhookDeliverer(hub.engine, hub.protector, q.clients, 0.05, 0.1, 0, 30.0, timeout_seconds=1.0,
                                     per_subscription_batch=100)
        deliverer._claim_max = 2
        ledger = ledger_for(hub.engine)
        before = ledger.transactions
        n = len(q.expected)
        assert await deliverer.run_once() == n
        assert ledger.transactions - before == 1 + (n + 1) // 2  # a lease apart for each batch: 2 + n
        assert q.receiver.event_ids() == q.expected
        done = await _rows(hub.engine, select(deliveries.c.status, deliveries.c.attempts)
                           .where(deliveries.c.subscription_id == q.sub))
        assert {(d.status, d.attempts) for d in done} == {("delivered", 1)}
