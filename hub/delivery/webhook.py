"""Webhook delivery: signed POSTs, in order per subscription, retried with
exponential backoff until the subscriber is back.

Order: only the oldest undelivered message of a subscription is attempted, so
a subscriber that was down receives everything in the order it was queued.
A subscription created with `pipeline` N > 1 has windows of up to N POSTs
written at once on one connection (`HostClients.post_window`), the answers
read in order: a failed one can be overtaken by those behind it in its
window (hub.delivery.leases, "Order").
Independence: each subscription drains its own queue in its own task
(hub.delivery.leases.SubscriptionDeliverer), and each endpoint origin has its
own connection pool (`HostClients`, hub/delivery/http1.py: kept-alive
HTTP/1.1, a per-host connection limit), so a slow, timing-out or
unreachable endpoint holds up only its own subscriptions.
Deadline: an attempt (connection, waiting for a pooled connection, sending,
the answer) has one hard deadline, `timeout_seconds`; the lease is longer.
Signature: `S117-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.event_id.body">`
under the subscription's secret (see hub.crypto.verify_webhook and the README).
Targets: every pool refuses private addresses at every connection
(hub.delivery.targets).
Event number: `S117-Event-Number`, the subscription's gap-free sequence
(hub.delivery.queue). Restore epoch: `S117-Restore-Epoch`, "0" until the
store is first restored from a backup, then that restore's id
(hub/store/restores.py); like the event number, not under the signature,
which covers the timestamp, the event id and the body as before.
Gone: an answer `410 Gone` says the endpoint is gone for good. It is not
retried: the delivery stays pending (its event number kept) and the
subscription is suspended until the subscriber or an operator resumes it
(hub.delivery.leases, "Suspension"); one warning is logged, and
`s117_subscriptions_suspended{reason="gone"}` counts the suspended
subscriptions (a FHIR rest-hook subscription whose heartbeat is answered 410
is suspended the same way: `log_suspended`, the same line). Every other
failure (4xx, 5xx, a timeout) is retried as before.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.crypto import DataProtector, signature_header
from hub.delivery.http1 import HostClients
from hub.delivery.leases import RetryPolicy, SubscriptionDeliverer, backoff_seconds, run_deliverer
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.db import read_only
from hub.store.restores import EPOCH_HEADER, NO_RESTORE
from hub.store.schema import deliveries, subscriptions

__all__ = ["EVENT_NUMBER_HEADER", "GONE", "GONE_ERROR", "SIGNATURE_HEADER", "HostClients", "WebhookDeliverer",
           "backoff_seconds", "log_suspended", "run_deliverer"]

log = get_logger("hub.webhook")
SIGNATURE_HEADER = "S117-Signature"
EVENT_NUMBER_HEADER = "S117-Event-Number"
# The answer that suspends a subscription, and why it is recorded as suspended
# (`subscriptions.suspended_reason`; its metric label is "gone").
GONE_ERROR = "HTTP 410"
GONE = "gone (HTTP 410)"
_SUSPENSION_LABELS = {GONE: "gone"}


def signed_headers(secret: str, event_id: str, body: bytes, extra: dict[str, str]) -> dict[str, str]:
    """Content type and `S117-Signature` (hub.crypto's signing of `t.event_id.body`) for a POST of `body`."""
    return {"Content-Type": "application/fhir+json", SIGNATURE_HEADER: signature_header(secret, event_id, body),
            **extra}


class WebhookDeliverer(SubscriptionDeliverer):
    channel = "webhook"
    handler = "webhook"
    # The store's restore epoch, set when the hub starts (hub/store/restores.py): `S117-Restore-Epoch`.
    restore_epoch = NO_RESTORE

    def __init__(
        self, engine: AsyncEngine, protector: DataProtector, client: Any,
        backoff_base: float = 1.0, backoff_cap: float = 300.0, max_attempts: int = 0, lease_seconds: float = 60.0,
        *, timeout_seconds: float | None = None, max_in_flight: int = 100, per_subscription_batch: int = 1,
        claim_max: int = 100,
    ) -> None:
        """`client`: a HostClients, or anything with an httpx-like `post` used for every endpoint."""
        self._engine = engine
        self._protector = protector
        self._client = client
        self._base = backoff_base
        self._cap = backoff_cap
        self._max_attempts = max_attempts
        self._lease = lease_seconds
        # The hard deadline of one attempt; must stay below the lease.
        self._deadline = min(timeout_seconds or lease_seconds, lease_seconds)
        self._max_in_flight = max_in_flight
        self._batch = per_subscription_batch  # run_once: attempts per subscription per pass
        self._claim_max = claim_max  # deliveries leased (and recorded) per transaction
        self._last_gauge = 0.0
        self._secrets: dict[bytes, str] = {}  # subscription secret token -> secret
        self._delivered: list[Any] = []  # recorded delivered, for this turn's "webhook delivered" line
        # delivery_seq -> the seconds a failed answer's Retry-After asked for (429/503), until recorded
        self._asked_wait: dict[int, float] = {}

    @property
    def _policy(self) -> RetryPolicy:
        return RetryPolicy(self._base, self._cap, self._max_attempts, self._lease)

    async def _observe(self) -> None:
        now = time.monotonic()
        if now - self._last_gauge < 5.0:
            return
        self._last_gauge = now
        async with read_only(self._engine) as conn:
            pending = (await conn.execute(
                select(func.count()).select_from(deliveries).join(
                    subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
                .where(deliveries.c.status == "pending", subscriptions.c.channel == "webhook")
            )).scalar_one()
            # Every push channel's (webhook and FHIR rest-hook): this deliverer's poll sets it for both.
            suspended = dict((await conn.execute(
                select(subscriptions.c.suspended_reason, func.count())
                .where(subscriptions.c.active.is_(True), subscriptions.c.suspended_at.is_not(None))
                .group_by(subscriptions.c.suspended_reason))).all())
        metrics.PENDING_DELIVERIES.set(pending)
        for reason, label in _SUSPENSION_LABELS.items():
            metrics.SUBSCRIPTIONS_SUSPENDED.labels(reason=label).set(suspended.get(reason, 0))

    def _body(self, row: Any, message: bytes) -> bytes:
        """What is POSTed for a queued message: the FHIR message itself."""
        return message

    async def run_once(self) -> int:
        """Attempt the head delivery of every subscription that has one due."""
        self._last_gauge = 0.0
        await self._observe()
        return await super().run_once()

    def _request(self, row: Any) -> tuple[bytes, dict[str, str]]:
        """The POST's body and signed headers for a leased delivery."""
        body = self._body(row, self._protector.decrypt(row.payload))
        secret = self._secrets.get(row.secret)
        if secret is None:  # keyed by the stored token: a changed secret is a new key
            if len(self._secrets) > 10_000:
                self._secrets.clear()
            secret = self._secrets[row.secret] = self._protector.decrypt(row.secret).decode()
        return body, signed_headers(secret, row.event_id, body, {
            "S117-Event-Id": row.event_id,
            EVENT_NUMBER_HEADER: str(row.event_number or ""),
            "S117-Message-Id": row.message_id,
            "S117-Delivery-Id": row.delivery_id,
            "S117-Event-Type": row.event_type,
            "X-Correlation-Id": row.correlation_id,
            EPOCH_HEADER: self.restore_epoch,
        })

    def _window_of(self, row: Any) -> int:
        # Pipelining needs the hub's own client (HostClients.post_window).
        pipeline = getattr(row, "pipeline", 1) or 1
        return pipeline if pipeline > 1 and hasattr(self._client, "post_window") else 1

    async def _send_window(self, rows: list[Any]) -> list[str | None]:
        requests = [self._request(row) for row in rows]
        started = time.perf_counter()
        answers = await self._client.post_window(rows[0].url, requests, self._deadline)
        metrics.DELIVERY_SECONDS.observe(time.perf_counter() - started)
        errors: list[str | None] = []
        for row, answer in zip(rows, answers):
            if isinstance(answer, int):
                if not 200 <= answer < 300 and all(e is None for e in errors):  # the failure recorded
                    self._note_wait(row, answer)
                errors.append(None if 200 <= answer < 300 else f"HTTP {answer}")
            elif isinstance(answer, TimeoutError):
                errors.append("Timeout")
            else:  # the subscriber or the path to it (a refused target too)
                errors.append(type(answer).__name__)
        return errors

    async def _send(self, row: Any) -> str | None:
        # Leased by hub.delivery.leases.claim_batch before this: another hub
        # instance leaves it alone, and if this one dies mid-POST the lease
        # runs out and it is sent again.
        body, headers = self._request(row)
        started = time.perf_counter()
        error: str | None = None
        try:
            if isinstance(self._client, HostClients):  # the hub's own client keeps the deadline on its one timer
                resp = await self._client.post(row.url, content=body, headers=headers, deadline=self._deadline)
            else:
                async with asyncio.timeout(self._deadline):
                    resp = await self._client.post(row.url, content=body, headers=headers)
            if not 200 <= resp.status_code < 300:
                error = f"HTTP {resp.status_code}"
                self._note_wait(row, resp)
        except TimeoutError:
            error = "Timeout"
        except (httpx.HTTPError, OSError) as exc:  # the subscriber or the path to it (a refused target too)
            error = type(exc).__name__
        metrics.DELIVERY_SECONDS.observe(time.perf_counter() - started)
        return error

    def _note_wait(self, row: Any, answer: Any) -> None:
        """Keep the wait a failed answer's `Retry-After` asked for (hub.delivery.http1.WebhookAnswer)."""
        asked = getattr(answer, "retry_after", None)
        if asked is not None:
            if len(self._asked_wait) > 10_000:
                self._asked_wait.clear()
            self._asked_wait[row.delivery_seq] = asked

    def _retry_after(self, row: Any) -> float | None:
        return self._asked_wait.pop(row.delivery_seq, None)

    def _suspension(self, error: str | None) -> str | None:
        return GONE if error == GONE_ERROR else None

    def _suspended(self, row: Any, error: str | None, reason: str) -> None:
        log_suspended(subscription_id=row.subscription_id, recipient=row.org_code, channel=self.channel,
                      url=row.url, error=error, delivery_id=row.delivery_id, event_number=row.event_number,
                      attempt=row.attempts + 1, correlation_id=row.correlation_id)
        self._last_gauge = 0.0  # the next poll sets s117_subscriptions_suspended from the store

    def _outcome(self, row: Any, error: str | None, wait: float | None) -> None:
        attempts = row.attempts + 1
        if error is None:
            if not self._delivered:
                asyncio.get_running_loop().call_soon(self._log_delivered)
            self._delivered.append(row)
        elif wait is None:
            log.error("webhook delivery dead-lettered", delivery_id=row.delivery_id, recipient=row.org_code,
                      attempt=attempts, error_kind=error, correlation_id=row.correlation_id)
        else:
            log.warning("webhook delivery failed, will retry", delivery_id=row.delivery_id, recipient=row.org_code,
                        attempt=attempts, error_kind=error, next_attempt_in=round(wait, 2),
                        correlation_id=row.correlation_id)

    def _log_delivered(self) -> None:
        """One "webhook delivered" line for every delivery recorded delivered
        in this turn of the event loop: the subscriptions' outcomes recorded
        in one ledger transaction (hub.delivery.ledger) resume their tasks in
        the same turn, so a change's deliveries, or a batch's, share a line.
        A line a delivery was about a tenth of the deliverer's CPU (bench/JOURNAL.md,
        "Sixteenth session"). Each field is a list, in the same order (the
        i-th delivery id went with the i-th event id, correlation id, ...), so
        a search for a correlation id or delivery id still finds its delivery."""
        rows, self._delivered = self._delivered, []
        if not rows:
            return
        log.info("webhook delivered", count=len(rows), delivery_ids=[r.delivery_id for r in rows],
                 event_ids=[r.event_id for r in rows], correlation_ids=[r.correlation_id for r in rows],
                 recipients=[r.org_code for r in rows], event_numbers=[r.event_number for r in rows],
                 attempts=[r.attempts + 1 for r in rows], url_hosts=[_host_of(r.url) for r in rows])


def log_suspended(*, subscription_id: str, recipient: str, channel: str, url: str | None, error: str | None,
                  delivery_id: str | None = None, event_number: int | None = None, attempt: int | None = None,
                  correlation_id: str | None = None) -> None:
    """The one warning that a subscription was suspended (its endpoint answered 410 Gone), with the same
    keys wherever the 410 came: a delivery (its id, event number, attempt, correlation id), or a FHIR
    subscription's heartbeat (hub.delivery.fhir_rest_hook: those four null, no message was sent). Ids, codes and the status only: the org code as on every
    delivery line, never the URL's path."""
    log.warning("webhook subscription suspended: the subscriber answered 410 Gone; resume it once the "
                "endpoint is back", subscription_id=subscription_id, recipient=recipient, channel=channel,
                delivery_id=delivery_id, event_number=event_number, attempt=attempt, error_kind=error,
                url_host=_host_of(url) if url else None, correlation_id=correlation_id)


@functools.lru_cache(maxsize=4096)
def _host_of(url: str) -> str | None:
    """The URL's host for the log line, parsed once per URL (a subscription's is always the same)."""
    return urlsplit(url).hostname
