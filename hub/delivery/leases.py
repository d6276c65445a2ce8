"""What every push deliverer (webhook, Kafka topic, file export) shares: the
head of each subscription's queue, the lease, the outcome, the backoff, and
the per-subscription tasks that drain the queues (`SubscriptionDeliverer`).

* Order: a subscription's deliveries go out one at a time, oldest first; only
  the oldest pending one (its *head*) is ever attempted, so a failure holds the
  rest back rather than letting a later message overtake it.
* Lease: before sending, a deliverer claims the head by compare-and-set on its
  attempt count and pushes `next_attempt_at` out by the lease. Another hub
  instance on the same store then leaves it alone; if this one dies mid-send,
  the lease runs out and the delivery is sent again (at least once). The
  lease is sized to the attempt it covers (the channel's hard deadline for one
  attempt plus a margin, see hub.bootstrap), so after a crash the delivery is
  picked up by the next poll once that lease has run out.
* Outcome: delivered (after the channel has made it durable: an HTTP 2xx, a
  Kafka acknowledgement, an fsync), or failed with capped full-jitter
  exponential backoff, or dead after `max_attempts` failures when that is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.schema import deliveries, subscriptions

log = get_logger("hub.delivery")


def backoff_seconds(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [base*2^(n-1)/2, base*2^(n-1)], capped."""
    # The exponent is bounded so that a delivery retried for weeks cannot overflow the float.
    ceiling = min(cap, base * (2 ** min(max(0, attempts - 1), 60)))
    r = (rng or random).random()
    return ceiling / 2 + r * ceiling / 2


@dataclass(frozen=True)
class RetryPolicy:
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    max_attempts: int = 0  # 0 = retry until it goes through
    lease_seconds: float = 60.0


def aware(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything the hub writes is UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


async def pending_heads(conn: AsyncConnection, channel: str, subscription_id: str | None = None,
                        columns_only: bool = False, subscription_ids: list[str] | None = None) -> list[Any]:
    """The oldest pending delivery of every active subscription on `channel`
    (or of one subscription), with the subscription's url, secret and org code
    (`columns_only`: just subscription_id and next_attempt_at).
    Not filtered by `next_attempt_at`: see `due`."""
    q = (select(func.min(deliveries.c.delivery_seq))
         .join(subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
         .where(deliveries.c.status == "pending", subscriptions.c.active.is_(True), subscriptions.c.channel == channel)
         .group_by(deliveries.c.subscription_id))
    if subscription_id is not None:
        q = q.where(deliveries.c.subscription_id == subscription_id)
    if subscription_ids is not None:
        q = q.where(deliveries.c.subscription_id.in_(subscription_ids))
    heads = (await conn.execute(q)).scalars().all()
    if not heads:
        return []
    if columns_only:
        return list((await conn.execute(
            select(deliveries.c.subscription_id, deliveries.c.next_attempt_at)
            .where(deliveries.c.delivery_seq.in_(heads)).order_by(deliveries.c.delivery_seq))).all())
    return list((await conn.execute(
        select(deliveries, subscriptions.c.url, subscriptions.c.topic, subscriptions.c.secret, subscriptions.c.org_code,
               subscriptions.c.fhir)
        .join(subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
        .where(deliveries.c.delivery_seq.in_(heads))
        .order_by(deliveries.c.delivery_seq)
    )).all())


async def next_head(engine: AsyncEngine, channel: str, subscription_id: str) -> Any | None:
    """The head of one subscription now, if it is due."""
    async with engine.connect() as conn:
        rows = await pending_heads(conn, channel, subscription_id)
        await conn.rollback()
    rows = due(rows)
    return rows[0] if rows else None


def due(rows: list[Any], now: datetime | None = None) -> list[Any]:
    now = now or datetime.now(UTC)
    return [r for r in rows if aware(r.next_attempt_at) <= now]


_WRITERS: "weakref.WeakKeyDictionary[Any, asyncio.Lock]" = weakref.WeakKeyDictionary()


def _write_turn(engine: AsyncEngine) -> Any:
    """SQLite has one writer at a time, and a writer that finds the lock taken
    sleeps and polls (busy_timeout), so under many concurrent subscription
    tasks some would starve for seconds. In-process they take turns in FIFO
    order instead. PostgreSQL needs no turn: these are single-row updates."""
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    lock = _WRITERS.get(engine.sync_engine)
    if lock is None:
        lock = _WRITERS[engine.sync_engine] = asyncio.Lock()
    return lock


async def claim(engine: AsyncEngine, row: Any, lease_seconds: float) -> int | None:
    """Lease `row` (compare-and-set on its attempt count). The new attempt
    number if this caller holds the lease, None if another got there first."""
    attempts = row.attempts + 1
    async with _write_turn(engine), engine.begin() as conn:
        claimed = await conn.execute(
            deliveries.update()
            .where(deliveries.c.delivery_seq == row.delivery_seq, deliveries.c.status == "pending",
                   deliveries.c.attempts == row.attempts)
            .values(attempts=attempts, next_attempt_at=datetime.now(UTC) + timedelta(seconds=lease_seconds)))
    return attempts if claimed.rowcount == 1 else None


async def mark_delivered(engine: AsyncEngine, row: Any, attempts: int, channel: str) -> None:
    metrics.DELIVERY.labels(channel=channel, outcome="delivered").inc()
    async with _write_turn(engine), engine.begin() as conn:
        await conn.execute(deliveries.update().where(deliveries.c.delivery_seq == row.delivery_seq)
                           .values(status="delivered", attempts=attempts, delivered_at=datetime.now(UTC),
                                   last_error=None))


async def mark_failed(engine: AsyncEngine, row: Any, attempts: int, error: str, policy: RetryPolicy,
                      handler: str) -> float | None:
    """Record a failed attempt: dead (returns None) once `policy.max_attempts`
    is reached, else due again after a backoff (returns the wait in seconds).
    `error` is a status code or an exception type, never a body."""
    error = error[:200]
    metrics.DELIVERY.labels(channel=handler, outcome="failed").inc()
    async with _write_turn(engine), engine.begin() as conn:
        if policy.max_attempts and attempts >= policy.max_attempts:
            await conn.execute(deliveries.update().where(deliveries.c.delivery_seq == row.delivery_seq)
                               .values(status="dead", attempts=attempts, last_error=error))
            metrics.DEAD_LETTERS.labels(handler=handler).inc()
            return None
        wait = backoff_seconds(attempts, policy.backoff_base, policy.backoff_cap)
        await conn.execute(deliveries.update().where(deliveries.c.delivery_seq == row.delivery_seq)
                           .values(attempts=attempts, last_error=error,
                                   next_attempt_at=datetime.now(UTC) + timedelta(seconds=wait)))
    return wait


class SubscriptionDeliverer:
    """A push channel whose subscriptions each drain their own ordered queue.

    `serve` (the running hub) keeps one asyncio task per active subscription
    that has a due head: the task sends that subscription's deliveries one
    after the other, oldest first, and ends when its queue is empty or its head
    is backing off; the next poll starts it again. Subscriptions never wait for
    each other: one endpoint's latency, timeouts or outage only holds up its own
    queue. In-flight attempts are bounded overall by `max_in_flight`.

    `run_once` is one awaited pass (up to `_batch` per subscription), for tests
    and the lockstep baseline of bench/bench_delivery.py.

    Subclasses set `channel`, `_engine` and `_batch` and implement `_attempt`
    (True sent, False failed, None leased by another instance)."""

    channel: str
    _engine: AsyncEngine
    _batch: int = 100
    _max_in_flight: int = 100
    _slots: asyncio.Semaphore | None = None
    stop_grace_seconds: float = 5.0

    async def _due_heads(self, busy: Any = ()) -> list[Any]:
        """The due head of every subscription on this channel, except those in `busy`."""
        async with self._engine.connect() as conn:
            heads = due(await pending_heads(conn, self.channel, columns_only=True))
            wanted = [h.subscription_id for h in heads if h.subscription_id not in busy]
            rows = await pending_heads(conn, self.channel, subscription_ids=wanted) if wanted else []
            await conn.rollback()
        return due(rows)

    async def run_once(self) -> int:
        """Drain every subscription with a due head (up to a batch each) and
        wait for all of them; returns how many deliveries were attempted."""
        heads = await self._due_heads()
        if not heads:
            return 0
        return sum(await asyncio.gather(*(self._drain(h.subscription_id, self._batch, first=h) for h in heads)))

    async def serve(self, poll_seconds: float, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set: one task per subscription with work."""
        tasks: dict[str, asyncio.Task] = {}
        wake = asyncio.Event()

        def finished(sid: str, task: asyncio.Task) -> None:
            tasks.pop(sid, None)
            if not task.cancelled() and task.exception() is not None:
                log.error("delivery task error", channel=self.channel, subscription_id=sid,
                          exc_type=type(task.exception()).__name__)
            wake.set()

        try:
            while not stop.is_set():
                wake.clear()
                try:
                    heads = await self._due_heads(busy=tasks)
                    await self._observe()
                except Exception as exc:  # noqa: BLE001 - the store may be briefly unavailable: log, poll again
                    log.error("delivery loop error", channel=self.channel, exc_type=type(exc).__name__)
                    heads = []
                for head in heads:
                    sid = head.subscription_id
                    if sid not in tasks:
                        task = asyncio.create_task(self._drain(sid, None, stop, first=head),
                                                   name=f"{self.channel}:{sid}")
                        tasks[sid] = task
                        task.add_done_callback(lambda t, sid=sid: finished(sid, t))
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
                try:
                    await asyncio.wait(waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
        finally:
            # Drain: attempts in flight finish (up to a grace period); the
            # leases of any cut short run out and they are sent again.
            pending = list(tasks.values())
            if pending:
                _, late = await asyncio.wait(pending, timeout=self.stop_grace_seconds)
                for t in late:
                    t.cancel()
                await asyncio.gather(*late, return_exceptions=True)

    async def _observe(self) -> None:
        """Hook for per-poll metrics."""

    async def _drain(self, subscription_id: str, limit: int | None, stop: asyncio.Event | None = None,
                     first: Any = None) -> int:
        attempted = 0
        row = first
        while limit is None or attempted < limit:
            if stop is not None and stop.is_set():
                break
            if row is None:
                row = await next_head(self._engine, self.channel, subscription_id)
            if row is None:
                break  # empty, or the head is backing off
            if self._slots is None:
                self._slots = asyncio.Semaphore(self._max_in_flight)
            async with self._slots:
                outcome = await self._attempt(row)
            row = None
            if outcome is None:
                break  # another instance holds it
            attempted += 1
            if not outcome:
                break  # failed: the rest wait behind it, until the backoff runs out
        return attempted

    async def _attempt(self, row: Any) -> bool | None:
        raise NotImplementedError


class Deliverer(Protocol):
    async def run_once(self) -> int: ...


async def run_deliverer(deliverer: Deliverer, poll_seconds: float, stop: asyncio.Event) -> None:
    """Run `deliverer` until `stop` is set: its own per-subscription tasks
    (`serve`) if it has them, else a loop of `run_once`, sleeping
    `poll_seconds` when idle. Work in progress finishes before it ends (drain)."""
    serve = getattr(deliverer, "serve", None)
    if serve is not None:
        await serve(poll_seconds, stop)
        return
    while not stop.is_set():
        try:
            sent = await deliverer.run_once()
        except Exception as exc:  # noqa: BLE001 - keep delivering; the failure is logged, not swallowed
            log.error("delivery loop error", exc_type=type(exc).__name__)
            sent = 0
        if not sent:
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
            except TimeoutError:
                pass
