"""Webhook delivery: signed POSTs, in order per subscription, retried with
exponential backoff until the subscriber is back.

Order: only the oldest undelivered message of a subscription is attempted, so
a subscriber that was down receives everything in the order it was queued.
Signature: `S117-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.event_id.body">`
under the subscription's secret (see hub.crypto.verify_webhook and the README).
Targets: the HTTP client's network backend refuses private addresses at every
connection (hub.delivery.targets).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.crypto import DataProtector, signature_header
from hub.delivery.leases import (
    RetryPolicy,
    backoff_seconds,
    claim,
    due,
    mark_delivered,
    mark_failed,
    pending_heads,
    run_deliverer,
)
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.schema import deliveries, subscriptions

__all__ = ["SIGNATURE_HEADER", "WebhookDeliverer", "backoff_seconds", "run_deliverer"]

log = get_logger("hub.webhook")
SIGNATURE_HEADER = "S117-Signature"


class WebhookDeliverer:
    def __init__(
        self, engine: AsyncEngine, protector: DataProtector, client: httpx.AsyncClient,
        backoff_base: float = 1.0, backoff_cap: float = 300.0, max_attempts: int = 0, lease_seconds: float = 60.0,
    ) -> None:
        self._engine = engine
        self._protector = protector
        self._client = client
        self._base = backoff_base
        self._cap = backoff_cap
        self._max_attempts = max_attempts
        self._lease = lease_seconds

    @property
    def _policy(self) -> RetryPolicy:
        return RetryPolicy(self._base, self._cap, self._max_attempts, self._lease)

    async def run_once(self) -> int:
        """Attempt the head delivery of every subscription that has one due."""
        async with self._engine.connect() as conn:
            rows = await pending_heads(conn, "webhook")
            pending = (await conn.execute(
                select(func.count()).select_from(deliveries).join(
                    subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
                .where(deliveries.c.status == "pending", subscriptions.c.channel == "webhook")
            )).scalar_one()
            await conn.rollback()
        metrics.PENDING_DELIVERIES.set(pending)
        ready = due(rows)
        if ready:
            await asyncio.gather(*(self._attempt(r) for r in ready))
        return len(ready)

    async def _attempt(self, row) -> None:  # noqa: ANN001
        # Lease the delivery before sending (hub.delivery.leases.claim): another
        # hub instance on the same store then leaves it alone, and if this one
        # dies mid-POST the lease runs out and it is sent again.
        attempts = await claim(self._engine, row, self._policy.lease_seconds)
        if attempts is None:
            return
        body = self._protector.decrypt(row.payload)
        secret = self._protector.decrypt(row.secret).decode()
        headers = {
            "Content-Type": "application/fhir+json",
            SIGNATURE_HEADER: signature_header(secret, row.event_id, body),
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
        if outcome == "delivered":
            await mark_delivered(self._engine, row, attempts, "webhook")
            log.info("webhook delivered", delivery_id=row.delivery_id, event_id=row.event_id,
                     recipient=row.org_code, attempt=attempts, correlation_id=row.correlation_id,
                     url_host=urlsplit(row.url).hostname)
            return
        wait = await mark_failed(self._engine, row, attempts, error or "failed", self._policy, handler="webhook")
        if wait is None:
            log.error("webhook delivery dead-lettered", delivery_id=row.delivery_id, recipient=row.org_code,
                      attempt=attempts, error_kind=error, correlation_id=row.correlation_id)
            return
        log.warning("webhook delivery failed, will retry", delivery_id=row.delivery_id, recipient=row.org_code,
                    attempt=attempts, error_kind=error, next_attempt_in=round(wait, 2),
                    correlation_id=row.correlation_id)
