"""FHIR topic-based subscriptions, rest-hook channel: the webhook deliverer
(same queue, order, leases, backoff, signature, per-subscription tasks) with
each queued S117 message wrapped in a `subscription-notification` Bundle
(hub.fhir.subscriptions), plus the handshake and heartbeats.

Heartbeats: while the hub serves, a subscription with a heartbeat period gets
a `heartbeat` notification whenever nothing was sent to it for that long.
They carry `eventsSinceSubscriptionStart`, so a receiver learns of a gap even
when no new event comes. They are not queued (no event number, not retried):
the next one follows a period later. Two instances on one store may each send
one; receivers take heartbeats as idempotent.

Gone: a heartbeat answered `410 Gone` suspends the subscription as a
delivery's 410 does (hub.delivery.leases, "Suspension": the same reason,
`s117_subscriptions_suspended{reason="gone"}`, the same warning line); a
suspended subscription's status is `error`, so it gets no heartbeats until it
is resumed. A 410 to a heartbeat sent before the subscription's latest resume
(it was suspended and resumed while the heartbeat was in flight) is stale: it
suspends nothing and is logged as such (`suspension_epoch`, read when the
heartbeat starts). Any other failure of a heartbeat is logged and not retried. A
handshake answered 410 is a failed handshake, as any other failure of it: the
subscription is in error and off, nothing queued (hub/api/fhir_subscriptions.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.crypto import DataProtector
from hub.delivery.leases import STALE_GONE, suspend_subscription
from hub.delivery.webhook import GONE, GONE_ERROR, WebhookDeliverer, log_suspended, signed_headers
from hub.fhir.namespaces import HUB_FHIR_BASE
from hub.fhir.subscriptions import Event, notification
from hub.observability.logging import get_logger
from hub.store.db import Prepared, execute_prepared, snapshot
from hub.store.schema import subscription_counters, subscriptions

log = get_logger("hub.fhir_rest_hook")
CHANNEL = "fhir"
# Polled by every deliverer pass (hub.store.db.Prepared: on SQLite compiled once, run on the driver).
_HEARTBEAT_ROWS = Prepared(
    select(subscriptions.c.subscription_id, subscriptions.c.url, subscriptions.c.secret,
           subscriptions.c.fhir, subscriptions.c.suspension_epoch, subscription_counters.c.last_event_number)
    .join(subscription_counters, subscription_counters.c.subscription_id == subscriptions.c.subscription_id,
          isouter=True)
    .where(subscriptions.c.channel == CHANNEL, subscriptions.c.active.is_(True)))


async def post_notification(client: Any, url: str, secret: str, bundle: dict, deadline: float,
                            kind: str) -> str | None:
    """POST one notification Bundle; None if the endpoint took it (2xx), else why not."""
    body = orjson.dumps(bundle)
    # Not an event: no S117-Event-Id, so the event id signed is empty.
    headers = signed_headers(secret, "", body, {"S117-Notification-Type": kind})
    try:
        async with asyncio.timeout(deadline):
            resp = await client.post(url, content=body, headers=headers)
    except TimeoutError:
        return "Timeout"
    except Exception as exc:  # noqa: BLE001 - any transport failure is an answer here
        return type(exc).__name__
    return None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"


class FhirRestHookDeliverer(WebhookDeliverer):
    channel = CHANNEL

    def __init__(self, engine: AsyncEngine, protector: DataProtector, client: Any, *args: Any,
                 hub_endpoint: str, fhir_base: str = HUB_FHIR_BASE, **kwargs: Any) -> None:
        super().__init__(engine, protector, client, *args, **kwargs)
        self._hub_endpoint = hub_endpoint
        self._fhir_base = fhir_base  # the topics' URLs (S117_CANONICAL_BASE)
        self._last_sent: dict[str, float] = {}
        self._heartbeats: set[asyncio.Task] = set()

    def _body(self, row: Any, message: bytes) -> bytes:
        fhir = row.fhir or {}
        self._last_sent[row.subscription_id] = time.monotonic()
        bundle = notification(kind="event-notification", subscription_id=row.subscription_id,
                              hub_endpoint=self._hub_endpoint,
                              fhir_base=self._fhir_base, fhir=fhir, since_start=row.event_number or 0,
                              events=[Event(row.event_number or 0, message, row.message_id, row.created_at)])
        return orjson.dumps(bundle)

    heartbeat_check_seconds = 1.0  # heartbeat periods are whole seconds: checked at most this often
    _heartbeats_checked = float("-inf")

    async def _observe(self) -> None:
        now = time.monotonic()
        if now - self._heartbeats_checked >= self.heartbeat_check_seconds:
            self._heartbeats_checked = now
            await self.send_heartbeats()

    async def send_heartbeats(self) -> int:
        """Start a heartbeat for every active subscription whose period has passed
        since it was last sent anything; returns how many were started."""
        now = time.monotonic()
        async with snapshot(self._engine) as conn:  # every poll: a snapshot (inline on SQLite), no write lock
            rows = (await execute_prepared(conn, _HEARTBEAT_ROWS)).all()
        started = 0
        for r in rows:
            period = (r.fhir or {}).get("heartbeat_seconds")
            if not period or (r.fhir or {}).get("status") != "active":
                continue
            last = self._last_sent.setdefault(r.subscription_id, now)
            if now - last < period:
                continue
            self._last_sent[r.subscription_id] = now
            task = asyncio.create_task(self._heartbeat(r))
            self._heartbeats.add(task)
            task.add_done_callback(self._heartbeats.discard)
            started += 1
        return started

    async def _heartbeat(self, r: Any) -> None:
        bundle = notification(kind="heartbeat", subscription_id=r.subscription_id, hub_endpoint=self._hub_endpoint,
                              fhir_base=self._fhir_base,
                              fhir=r.fhir, since_start=int(r.last_event_number or 0))
        secret = self._protector.decrypt(r.secret).decode()
        error = await post_notification(self._client, r.url, secret, bundle, self._deadline, "heartbeat")
        if error == GONE_ERROR:
            # Gone for good: suspended as a delivery answered 410 would suspend it (its status `error`,
            # no more heartbeats), its queue kept, until the subscriber or an operator resumes it; unless
            # it was resumed after this heartbeat was sent (its epoch, read before: stale).
            done = await suspend_subscription(self._engine, r.subscription_id, GONE, r.suspension_epoch)
            if done.row is not None:
                log_suspended(subscription_id=r.subscription_id, recipient=done.row.org_code,
                              channel=done.row.channel, url=done.row.url, error=error)
                # s117_subscriptions_suspended: set from the store by the webhook deliverer's poll (both channels').
            elif done.stale:
                log.info(STALE_GONE, subscription_id=r.subscription_id, channel=CHANNEL, error_kind=error)
        elif error:
            log.warning("heartbeat not taken", subscription_id=r.subscription_id, error_kind=error)
