"""A webhook subscriber that answers `410 Gone` has said its endpoint is gone
for good: the delivery stays pending (its event number kept), the
subscription is suspended (hub/delivery/leases.py, "Suspension") and nothing
more is sent to it, by this deliverer or another on the same store, until it
is resumed. Every other failure is retried as before. A real local HTTP
receiver (tests/unit/test_webhook_pipeline.py's), a SQLite store."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from structlog.testing import capture_logs

from hub.crypto import DataProtector
from hub.delivery.http1 import HostClients
from hub.delivery.leases import pending_heads
from hub.delivery.queue import create_counter, queue_delivery
from hub.delivery.webhook import GONE, WebhookDeliverer
from hub.observability import metrics
from hub.observability.logging import ALLOWED_KEYS
from hub.store.db import create_engine, create_schema
from hub.store.schema import deliveries, subscriptions
from tests.unit.test_webhook_pipeline import Receiver

ORG = "E06000060"


async def _store(tmp_path, port: int, messages: int, pipeline: int = 1):  # noqa: ANN001, ANN202
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_schema(engine)
    protector = DataProtector(Fernet.generate_key())
    sid = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(subscriptions.insert().values(
            subscription_id=sid, org_code=ORG, client_id="t", channel="webhook",
            url=f"http://127.0.0.1:{port}/hook", secret=protector.encrypt(b"s" * 32), active=True,
            created_at=datetime.now(UTC), pipeline=pipeline))
        await create_counter(conn, sid)
        for _ in range(messages):
            eid = str(uuid.uuid4())
            await queue_delivery(conn, subscription_id=sid, event_id=eid, message_id=eid,
                                 event_type="s117-entitlement-started", payload=protector.encrypt(b"{}"),
                                 correlation_id="c")
    return engine, protector, sid


def _gauge() -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("s117_subscriptions_suspended", {"reason": "gone"})


def _deliverer(engine, protector, client: HostClients, batch: int = 1) -> WebhookDeliverer:  # noqa: ANN001
    # Backoff of a tenth of a millisecond: a failed head is due again at once, so a second pass retries it.
    return WebhookDeliverer(engine, protector, client, 0.0001, 0.0001, 0, 5.0, timeout_seconds=2.0,
                            per_subscription_batch=batch)


async def _rows(engine) -> dict[int, tuple]:  # noqa: ANN001
    async with engine.connect() as conn:
        rows = (await conn.execute(select(deliveries.c.event_number, deliveries.c.status, deliveries.c.attempts,
                                          deliveries.c.last_error))).all()
    return {r.event_number: (r.status, r.attempts, r.last_error) for r in rows}


async def _subscription(engine, sid: str):  # noqa: ANN001, ANN202
    async with engine.connect() as conn:
        return (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == sid))).one()


async def test_a_410_keeps_the_delivery_pending_and_suspends_the_subscription_for_every_instance(tmp_path) -> None:  # noqa: ANN001
    receiver = Receiver(answer=lambda n, seen: 410)
    port = await receiver.start()
    engine, protector, sid = await _store(tmp_path, port, 3)
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    other_engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")  # a second hub on the store
    other_client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    try:
        deliverer = _deliverer(engine, protector, client)
        with capture_logs() as logs:
            assert await deliverer.run_once() == 1
        # Not delivered, not dead, nothing lost: pending with its attempt and why; those behind it untouched.
        assert await _rows(engine) == {1: ("pending", 1, "HTTP 410"), 2: ("pending", 0, None),
                                       3: ("pending", 0, None)}
        sub = await _subscription(engine, sid)
        assert sub.active is True and sub.suspended_at is not None and sub.suspended_reason == GONE
        # One warning, ids and codes only.
        warned = [line for line in logs if line["log_level"] == "warning"]
        assert [w["event"].split(":")[0] for w in warned] == ["webhook subscription suspended"]
        assert set(warned[0]) - {"log_level"} <= ALLOWED_KEYS
        assert warned[0]["subscription_id"] == sid and warned[0]["error_kind"] == "HTTP 410"
        assert not [line for line in logs if line["log_level"] == "error"]  # not dead-lettered either

        # Due (the backoff is a tenth of a millisecond), and yet not taken again: by this deliverer,
        # by its polls, nor by another instance's deliverer on the same store.
        await asyncio.sleep(0.01)
        assert await deliverer.run_once() == 0
        assert await _deliverer(other_engine, protector, other_client).run_once() == 0
        async with engine.connect() as conn:
            assert await pending_heads(conn, "webhook") == []
        assert receiver.seen == ["1"]
        assert await _rows(engine) == {1: ("pending", 1, "HTTP 410"), 2: ("pending", 0, None),
                                       3: ("pending", 0, None)}
    finally:
        await client.aclose()
        await other_client.aclose()
        receiver.close()
        await other_engine.dispose()
        await engine.dispose()


async def test_the_suspended_subscriptions_are_counted_by_reason(tmp_path) -> None:  # noqa: ANN001
    receiver = Receiver(answer=lambda n, seen: 410)
    port = await receiver.start()
    engine, protector, sid = await _store(tmp_path, port, 1)
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    try:
        deliverer = _deliverer(engine, protector, client)
        await deliverer.run_once()
        assert _gauge() == 0  # set by the poll before the 410
        await deliverer.run_once()  # the next poll reads the store
        assert _gauge() == 1
        async with engine.begin() as conn:  # resumed (as the API does): counted no more
            await conn.execute(subscriptions.update().values(suspended_at=None, suspended_reason=None))
        receiver.answer = lambda n, seen: 204
        assert await deliverer.run_once() == 1
        assert _gauge() == 0
        assert await _rows(engine) == {1: ("delivered", 2, None)}
    finally:
        metrics.SUBSCRIPTIONS_SUSPENDED.labels(reason="gone").set(0)
        await client.aclose()
        receiver.close()
        await engine.dispose()


@pytest.mark.parametrize("status", [400, 404, 409, 429, 500, 503])
async def test_every_other_failure_is_retried_as_before(tmp_path, status: int) -> None:  # noqa: ANN001
    receiver = Receiver(answer=lambda n, seen: status if len(seen) == 1 else 204)
    port = await receiver.start()
    engine, protector, sid = await _store(tmp_path, port, 2)
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    try:
        deliverer = _deliverer(engine, protector, client, batch=5)
        assert await deliverer.run_once() == 1
        assert (await _rows(engine))[1] == ("pending", 1, f"HTTP {status}")
        assert (await _subscription(engine, sid)).suspended_at is None
        await asyncio.sleep(0.01)  # the backoff (a tenth of a millisecond) is over
        assert await deliverer.run_once() == 2
        assert await _rows(engine) == {1: ("delivered", 2, None), 2: ("delivered", 1, None)}
        assert receiver.seen == ["1", "1", "2"]
    finally:
        await client.aclose()
        receiver.close()
        await engine.dispose()


async def test_in_a_pipelined_window_those_behind_a_410_that_were_taken_are_delivered(tmp_path) -> None:  # noqa: ANN001
    """The window's first failure decides (hub/delivery/leases.py, "Order"): 2 answered 410 suspends the
    subscription; 3, taken behind it, is delivered (it overtook 2: the subscriber's choice); 4, failed
    behind it, is given back as it was, and 5 was never sent."""
    answers = {"1": 204, "2": 410, "3": 204, "4": 500}
    receiver = Receiver(answer=lambda n, seen: answers.get(n, 204), hold=4)
    port = await receiver.start()
    engine, protector, sid = await _store(tmp_path, port, 5, pipeline=4)
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    try:
        deliverer = _deliverer(engine, protector, client, batch=10)
        assert await deliverer.run_once() == 3  # 1 and 3 delivered, 2 failed
        assert await _rows(engine) == {1: ("delivered", 1, None), 2: ("pending", 1, "HTTP 410"),
                                       3: ("delivered", 1, None), 4: ("pending", 0, None),
                                       5: ("pending", 0, None)}
        assert (await _subscription(engine, sid)).suspended_reason == GONE
        await asyncio.sleep(0.01)
        assert await deliverer.run_once() == 0
        assert receiver.seen == ["1", "2", "3", "4"]
    finally:
        await client.aclose()
        receiver.close()
        await engine.dispose()


async def test_a_410_behind_an_earlier_failure_in_its_window_is_given_back_not_suspending(tmp_path) -> None:  # noqa: ANN001
    answers = {"1": 503, "2": 410}
    receiver = Receiver(answer=lambda n, seen: answers.get(n, 204) if len(seen) <= 2 else 204, hold=2)
    port = await receiver.start()
    engine, protector, sid = await _store(tmp_path, port, 2, pipeline=2)
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    try:
        deliverer = _deliverer(engine, protector, client, batch=10)
        assert await deliverer.run_once() == 1
        assert await _rows(engine) == {1: ("pending", 1, "HTTP 503"), 2: ("pending", 0, None)}
        assert (await _subscription(engine, sid)).suspended_at is None
        await asyncio.sleep(0.01)
        assert await deliverer.run_once() == 2  # retried, both delivered: 2's 410 was never recorded
        assert await _rows(engine) == {1: ("delivered", 2, None), 2: ("delivered", 1, None)}
    finally:
        await client.aclose()
        receiver.close()
        await engine.dispose()


async def test_a_suspended_subscription_is_not_also_reported_as_failing(tmp_path) -> None:  # noqa: ANN001
    """A suspension has its own gauge and alert (S117SubscriptionSuspended); `s117_subscription_failing_seconds`
    (S117SubscriberFailing: "failed every delivery for over an hour") counts the subscriptions still being
    retried, so an operator is told once, with the right runbook."""
    from datetime import timedelta

    from prometheus_client import REGISTRY

    from hub.timeseries import Sampler

    class Bus:  # the sampler's consumer lag: not what this test is about
        async def lag(self, group: str, topic: str) -> int:
            return 0

    def failing() -> float | None:
        return REGISTRY.get_sample_value("s117_subscription_failing_seconds", {"org_code": ORG, "channel": "webhook"})

    answers = {"status": 503}
    receiver = Receiver(answer=lambda n, seen: answers["status"])
    port = await receiver.start()
    engine, protector, sid = await _store(tmp_path, port, 1)
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    later = datetime.now(UTC) + timedelta(hours=2)
    try:
        deliverer, sampler = _deliverer(engine, protector, client), Sampler(engine, Bus())
        await deliverer.run_once()  # a 503: retried, so failing
        await sampler.sample(later)
        assert failing() is not None and failing() > 3600
        answers["status"] = 410
        await asyncio.sleep(0.01)
        await deliverer.run_once()  # now gone: suspended
        assert (await _subscription(engine, sid)).suspended_at is not None
        await sampler.sample(later + timedelta(minutes=1))
        assert failing() == 0
    finally:
        metrics.SUBSCRIPTION_FAILING.labels(org_code=ORG, channel="webhook").set(0)
        metrics.SUBSCRIPTIONS_SUSPENDED.labels(reason="gone").set(0)
        await client.aclose()
        receiver.close()
        await engine.dispose()
