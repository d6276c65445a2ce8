"""Webhook delivery: signed POSTs, in order per subscription, retried with
exponential backoff until the subscriber is back.

Order: only the oldest undelivered message of a subscription is attempted, so
a subscriber that was down receives everything in the order it was queued.
Signature: `S117-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`
under the subscription's secret (see hub.crypto.verify_webhook).
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.crypto import DataProtector, sign_webhook
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.schema import deliveries, subscriptions

log = get_logger("hub.webhook")
SIGNATURE_HEADER = "S117-Signature"


def backoff_seconds(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [base*2^(n-1)/2, base*2^(n-1)], capped."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    r = (rng or random).random()
    return ceiling / 2 + r * ceiling / 2


class WebhookDeliverer:
    def __init__(
        self, engine: AsyncEngine, protector: DataProtector, client: httpx.AsyncClient,
        backoff_base: float = 1.0, backoff_cap: float = 300.0, max_attempts: int = 0, lease_seconds: float = 60.0,
    ) -> None:
        self._lease = lease_seconds
        self._engine = engine
        self._protector = protector
        self._client = client
        self._base = backoff_base
        self._cap = backoff_cap
        self._max_attempts = max_attempts

    async def run_once(self) -> int:
        """Attempt the head delivery of every subscription that has one due."""
        now = datetime.now(UTC)
        async with self._engine.connect() as conn:
            heads = (await conn.execute(
                select(func.min(deliveries.c.delivery_seq))
                .where(deliveries.c.status == "pending")
                .group_by(deliveries.c.subscription_id)
            )).scalars().all()
            rows = (await conn.execute(
                select(deliveries, subscriptions.c.url, subscriptions.c.secret, subscriptions.c.org_code)
                .join(subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
                .where(deliveries.c.delivery_seq.in_(heads), subscriptions.c.active.is_(True),
                       subscriptions.c.channel == "webhook")
            )).all() if heads else []
            pending = (await conn.execute(
                select(func.count()).select_from(deliveries).join(
                    subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
                .where(deliveries.c.status == "pending", subscriptions.c.channel == "webhook")
            )).scalar_one()
            await conn.rollback()
        metrics.PENDING_DELIVERIES.set(pending)
        due = [r for r in rows if _aware(r.next_attempt_at) <= now]
        if due:
            await asyncio.gather(*(self._attempt(r) for r in due))
        return len(due)

    async def _attempt(self, row) -> None:  # noqa: ANN001
        attempts = row.attempts + 1
        # Lease the delivery before sending (compare-and-set on the attempt
        # count): another hub instance on the same store then leaves it alone,
        # and if this one dies mid-POST the lease runs out and it is sent again.
        async with self._engine.begin() as conn:
            claimed = await conn.execute(
                deliveries.update()
                .where(deliveries.c.delivery_seq == row.delivery_seq, deliveries.c.status == "pending",
                       deliveries.c.attempts == row.attempts)
                .values(attempts=attempts, next_attempt_at=datetime.now(UTC) + timedelta(seconds=self._lease)))
        if claimed.rowcount != 1:
            return
        body = self._protector.decrypt(row.payload)
        secret = self._protector.decrypt(row.secret).decode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/fhir+json",
            SIGNATURE_HEADER: f"t={ts},v1={sign_webhook(secret, ts, body)}",
            "S117-Event-Id": row.event_id,
            "S117-Message-Id": row.message_id,
            "S117-Delivery-Id": row.delivery_id,
            "S117-Event-Type": row.event_type,
            "X-Correlation-Id": row.correlation_id,
        }
        started = time.perf_counter()
        error: str | None = None
        try:
            resp = await self._client.post(row.url, content=body, headers=headers)
            if 200 <= resp.status_code < 300:
                outcome = "delivered"
            else:
                outcome, error = "failed", f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            outcome, error = "failed", type(exc).__name__
        metrics.DELIVERY_SECONDS.observe(time.perf_counter() - started)
        metrics.DELIVERY.labels(outcome=outcome).inc()
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            if outcome == "delivered":
                await conn.execute(deliveries.update().where(deliveries.c.delivery_seq == row.delivery_seq)
                                   .values(status="delivered", attempts=attempts, delivered_at=now, last_error=None))
                log.info("webhook delivered", delivery_id=row.delivery_id, event_id=row.event_id,
                         recipient=row.org_code, attempt=attempts, correlation_id=row.correlation_id,
                         url_host=urlsplit(row.url).hostname)
                return
            if self._max_attempts and attempts >= self._max_attempts:
                await conn.execute(deliveries.update().where(deliveries.c.delivery_seq == row.delivery_seq)
                                   .values(status="dead", attempts=attempts, last_error=error))
                metrics.DEAD_LETTERS.labels(handler="webhook").inc()
                log.error("webhook delivery dead-lettered", delivery_id=row.delivery_id, recipient=row.org_code,
                          attempt=attempts, error_kind=error, correlation_id=row.correlation_id)
                return
            wait = backoff_seconds(attempts, self._base, self._cap)
            await conn.execute(deliveries.update().where(deliveries.c.delivery_seq == row.delivery_seq)
                               .values(attempts=attempts, last_error=error,
                                       next_attempt_at=now + timedelta(seconds=wait)))
        log.warning("webhook delivery failed, will retry", delivery_id=row.delivery_id, recipient=row.org_code,
                    attempt=attempts, error_kind=error, next_attempt_in=round(wait, 2),
                    correlation_id=row.correlation_id)


def _aware(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything the hub writes is UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


async def run_deliverer(deliverer: WebhookDeliverer, poll_seconds: float, stop: asyncio.Event) -> None:
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
