"""The resume marker (`subscriptions.suspension_epoch`, hub/delivery/leases.py
"Suspension") on each store backend: migration 0032 gives the subscriptions
already in the table 0 and its downgrade drops it; a resume moves it on; a
410 to a request sent before the latest resume suspends nothing (the
suspending UPDATE's compare-and-set), from a FHIR heartbeat
(`suspend_subscription`) or a delivery batch leased before it
(`record_batch`); and that batch's outcomes keep the resume's fresh budget
(given back at 0, due at once), so the next claim takes the whole queue, in order."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, select

from hub.delivery.leases import RetryPolicy, claim_batch, lift_suspension, record_batch, suspend_subscription
from hub.delivery.queue import create_counter, queue_delivery
from hub.delivery.webhook import GONE, GONE_ERROR
from hub.store.db import create_engine
from hub.store.schema import deliveries, subscriptions
from tests.contract.test_migrations import _migrate

pytestmark = pytest.mark.integration
LEASE = 60.0


async def _subscription(engine, messages: int) -> str:  # noqa: ANN001
    sid = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(subscriptions.insert().values(
            subscription_id=sid, org_code="E06000060", client_id="c", channel="webhook",
            url="https://example.org/hook", secret=b"s", active=True, created_at=datetime.now(UTC)))
        await create_counter(conn, sid)
        for _ in range(messages):
            eid = str(uuid.uuid4())
            await queue_delivery(conn, subscription_id=sid, event_id=eid, message_id=eid,
                                 event_type="s117-entitlement-started", payload=b"m", correlation_id="c")
    return sid


async def _resume(engine, sid: str) -> bool:  # noqa: ANN001
    async with engine.begin() as conn:
        row = (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == sid))).one()
        return await lift_suspension(conn, row)


async def _sub(engine, sid: str):  # noqa: ANN001, ANN202
    async with engine.connect() as conn:
        row = (await conn.execute(select(subscriptions.c.suspended_at, subscriptions.c.suspension_epoch)
                                  .where(subscriptions.c.subscription_id == sid))).one()
        await conn.rollback()
    return row


async def _queue(engine, sid: str) -> list[tuple]:  # noqa: ANN001
    async with engine.connect() as conn:
        rows = (await conn.execute(select(deliveries.c.event_number, deliveries.c.status, deliveries.c.attempts,
                                          deliveries.c.next_attempt_at)
                                   .where(deliveries.c.subscription_id == sid)
                                   .order_by(deliveries.c.delivery_seq))).all()
        await conn.rollback()
    return rows


async def test_0032_gives_existing_subscriptions_0_and_its_downgrade_drops_it(store_url):
    engine = create_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "upgrade", "0031")
            await conn.execute(subscriptions.insert().values(  # no suspension_epoch: the 0031 table
                subscription_id="sub-1", org_code="E06000060", client_id="c", channel="webhook",
                url="https://example.org/hook", active=True, created_at=datetime(2026, 12, 1, tzinfo=UTC)))
            await conn.run_sync(_migrate, "upgrade", "0032")
            assert (await conn.execute(select(subscriptions.c.suspension_epoch))).scalar_one() == 0
            await conn.run_sync(_migrate, "downgrade", "0031")
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("subscriptions")})
            assert "suspension_epoch" not in columns and "suspended_at" in columns
            await conn.run_sync(_migrate, "upgrade", "head")
    finally:
        await engine.dispose()


async def test_a_410_to_a_request_sent_before_the_latest_resume_suspends_nothing(engine):  # noqa: ANN001
    sid = await _subscription(engine, messages=3)
    assert (await _sub(engine, sid)).suspension_epoch == 0
    # A batch leased (in flight) at epoch 0; a heartbeat sent at epoch 0 is answered 410: suspended.
    leased = await claim_batch(engine, "webhook", sid, 100, LEASE)
    assert [r.event_number for r in leased] == [1, 2, 3] and {r.suspension_epoch for r in leased} == {0}
    done = await suspend_subscription(engine, sid, GONE, 0)
    assert done.row is not None and not done.stale
    assert await _resume(engine, sid)
    assert (await _sub(engine, sid)).suspension_epoch == 1
    # Another heartbeat sent at epoch 0 answered 410 after the resume: stale, not suspended.
    done = await suspend_subscription(engine, sid, GONE, 0)
    assert done.row is None and done.stale
    # The batch's head answered 410 (sent before the resume), the rest not sent: stale; given back at once.
    recorded = await record_batch(engine, [], leased[0], GONE_ERROR, leased[1:], RetryPolicy(lease_seconds=LEASE),
                                  "webhook", suspend=GONE)
    assert (recorded.suspended, recorded.stale, recorded.wait) == (False, True, None)
    assert (await _sub(engine, sid)).suspended_at is None
    now = datetime.now(UTC)
    queue = await _queue(engine, sid)
    assert [(r.status, r.attempts) for r in queue] == [("pending", 0)] * 3
    assert all((r.next_attempt_at if r.next_attempt_at.tzinfo else r.next_attempt_at.replace(tzinfo=UTC)) <= now
               for r in queue)  # due at once: none left leased
    # The next claim takes the whole queue, in order, each at its first attempt of the fresh budget.
    again = await claim_batch(engine, "webhook", sid, 100, LEASE)
    assert [(r.event_number, r.attempts, r.suspension_epoch) for r in again] == [(1, 0, 1), (2, 0, 1), (3, 0, 1)]
    # A 410 to a request sent after the resume suspends it.
    recorded = await record_batch(engine, [], again[0], GONE_ERROR, again[1:], RetryPolicy(lease_seconds=LEASE),
                                  "webhook", suspend=GONE)
    assert (recorded.suspended, recorded.stale) == (True, False)
    assert (await _sub(engine, sid)).suspended_at is not None
    assert [(r.status, r.attempts) for r in await _queue(engine, sid)] == [("pending", 1), ("pending", 0),
                                                                          ("pending", 0)]
    # Suspended and not resumed since: a heartbeat's 410 at the current epoch changes nothing, and is not stale.
    done = await suspend_subscription(engine, sid, GONE, 1)
    assert done.row is None and not done.stale


async def test_a_batch_recorded_after_a_resume_is_not_dead_lettered_on_its_old_budget(engine):  # noqa: ANN001
    sid = await _subscription(engine, messages=2)
    policy = RetryPolicy(backoff_base=0.0001, backoff_cap=0.0001, max_attempts=1, lease_seconds=LEASE)
    leased = await claim_batch(engine, "webhook", sid, 100, LEASE)  # its only attempt in flight
    assert (await suspend_subscription(engine, sid, GONE, 0)).row is not None  # a heartbeat's 410
    assert await _resume(engine, sid)
    recorded = await record_batch(engine, [], leased[0], "HTTP 503", leased[1:], policy, "webhook")
    assert recorded.wait is not None and not recorded.stale  # retried, not dead
    assert [(r.status, r.attempts) for r in await _queue(engine, sid)] == [("pending", 0), ("pending", 0)]
    # Not resumed since: the budget applies as always (one attempt: dead).
    await asyncio.sleep(0.01)
    again = await claim_batch(engine, "webhook", sid, 100, LEASE)
    recorded = await record_batch(engine, [], again[0], "HTTP 503", again[1:], policy, "webhook")
    assert recorded.wait is None
    assert [(r.status, r.attempts) for r in await _queue(engine, sid)] == [("dead", 1), ("pending", 0)]


async def _waiting_on_a_lock(engine, timeout: float = 5.0) -> None:  # noqa: ANN001
    """Until another session of the database waits on a lock (PostgreSQL's pg_stat_activity)."""
    from sqlalchemy import text
    async with asyncio.timeout(timeout):
        while True:
            async with engine.connect() as conn:
                n = (await conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                             "current_database() AND wait_event_type = 'Lock'"))).scalar_one()
                await conn.rollback()
            if n:
                return
            await asyncio.sleep(0.02)


async def test_a_record_and_a_resume_at_the_same_time_never_deadlock_on_postgresql(pg_engine):  # noqa: ANN001
    """A batch's record (one delivered, one failed, one not sent) while a resume holds the
    subscription's row: the record reads and locks the subscription before it writes any delivery row,
    in the resume's own order (`lift_suspension`: the subscription, then its deliveries), so it waits
    for the resume and then records on its fresh budget. It marked the delivered one first, holding
    that row while it waited for the subscription, and the resume's update of the deliveries waited
    for that row: PostgreSQL's deadlock detector aborted one of them."""
    from hub.store.db import create_schema
    engine = pg_engine
    await create_schema(engine)
    sid = await _subscription(engine, messages=3)
    leased = await claim_batch(engine, "webhook", sid, 100, LEASE)
    assert (await suspend_subscription(engine, sid, GONE, 0)).row is not None  # a heartbeat's 410
    async with engine.connect() as conn:
        await conn.begin()
        row = (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == sid)
                                  .with_for_update())).one()  # the resume has the subscription's row
        record = asyncio.create_task(record_batch(engine, [leased[0]], leased[1], "HTTP 503", [leased[2]],
                                                  RetryPolicy(lease_seconds=LEASE), "webhook"))
        await _waiting_on_a_lock(engine)  # the record waits for the subscription
        assert await lift_suspension(conn, row)
        await conn.commit()
    recorded = await asyncio.wait_for(record, 10)
    assert recorded.wait is not None and not recorded.stale
    assert [(r.status, r.attempts) for r in await _queue(engine, sid)] == [
        ("delivered", 0), ("pending", 0), ("pending", 0)]  # all three sent before the resume: its fresh budget
    assert (await _sub(engine, sid)).suspension_epoch == 1
