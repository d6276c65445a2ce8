"""What every push deliverer (webhook, Kafka topic, file export) shares: the
head of each subscription's queue, the lease, the outcome, the backoff.

* Order: a subscription's deliveries go out one at a time, oldest first; only
  the oldest pending one (its *head*) is ever attempted, so a failure holds the
  rest back rather than letting a later message overtake it.
* Lease: before sending, a deliverer claims the head by compare-and-set on its
  attempt count and pushes `next_attempt_at` out by the lease. Another hub
  instance on the same store then leaves it alone; if this one dies mid-send,
  the lease runs out and the delivery is sent again (at least once).
* Outcome: delivered (after the channel has made it durable: an HTTP 2xx, a
  Kafka acknowledgement, an fsync), or failed with capped full-jitter
  exponential backoff, or dead after `max_attempts` failures when that is set.
"""

from __future__ import annotations

import asyncio
import random
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


async def pending_heads(conn: AsyncConnection, channel: str, subscription_id: str | None = None) -> list[Any]:
    """The oldest pending delivery of every active subscription on `channel`
    (or of one subscription), with the subscription's url, secret and org code.
    Not filtered by `next_attempt_at`: see `due`."""
    q = (select(func.min(deliveries.c.delivery_seq))
         .join(subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
         .where(deliveries.c.status == "pending", subscriptions.c.active.is_(True), subscriptions.c.channel == channel)
         .group_by(deliveries.c.subscription_id))
    if subscription_id is not None:
        q = q.where(deliveries.c.subscription_id == subscription_id)
    heads = (await conn.execute(q)).scalars().all()
    if not heads:
        return []
    return list((await conn.execute(
        select(deliveries, subscriptions.c.url, subscriptions.c.topic, subscriptions.c.secret, subscriptions.c.org_code)
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


async def claim(engine: AsyncEngine, row: Any, lease_seconds: float) -> int | None:
    """Lease `row` (compare-and-set on its attempt count). The new attempt
    number if this caller holds the lease, None if another got there first."""
    attempts = row.attempts + 1
    async with engine.begin() as conn:
        claimed = await conn.execute(
            deliveries.update()
            .where(deliveries.c.delivery_seq == row.delivery_seq, deliveries.c.status == "pending",
                   deliveries.c.attempts == row.attempts)
            .values(attempts=attempts, next_attempt_at=datetime.now(UTC) + timedelta(seconds=lease_seconds)))
    return attempts if claimed.rowcount == 1 else None


async def mark_delivered(engine: AsyncEngine, row: Any, attempts: int, channel: str) -> None:
    metrics.DELIVERY.labels(channel=channel, outcome="delivered").inc()
    async with engine.begin() as conn:
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
    async with engine.begin() as conn:
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


class OrderedBatchDeliverer:
    """A push channel that sends each subscription's backlog in order, up to a
    batch at a time: the next delivery only after the previous one landed, and
    a failure holds the rest back. Subclasses set `channel`, `_engine` and
    `_batch` and implement `_attempt` (True sent, False failed, None leased
    by another instance)."""

    channel: str
    _engine: AsyncEngine
    _batch: int

    async def run_once(self) -> int:
        """Drain every subscription with a due head; returns how many were attempted."""
        async with self._engine.connect() as conn:
            rows = await pending_heads(conn, self.channel)
            await conn.rollback()
        ready = due(rows)
        if not ready:
            return 0
        return sum(await asyncio.gather(*(self._drain(r) for r in ready)))

    async def _drain(self, row: Any) -> int:
        attempted = 0
        while row is not None and attempted < self._batch:
            outcome = await self._attempt(row)
            if outcome is None:
                break  # another instance holds it
            attempted += 1
            if not outcome:
                break  # failed: the rest wait behind it
            row = await next_head(self._engine, self.channel, row.subscription_id)
        return attempted

    async def _attempt(self, row: Any) -> bool | None:
        raise NotImplementedError


class Deliverer(Protocol):
    async def run_once(self) -> int: ...


async def run_deliverer(deliverer: Deliverer, poll_seconds: float, stop: asyncio.Event) -> None:
    """Run `deliverer` until `stop` is set; sleep `poll_seconds` when idle.
    A run in progress finishes before the loop ends (drain)."""
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
