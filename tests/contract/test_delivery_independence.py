"""Each subscription drains its own queue: an endpoint that never answers in
time holds up only its own subscription, over real HTTP, on both stores; the
messages carry their gap-free event numbers in order; a delivery whose lease
holder died is taken up as soon as its lease runs out."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from hub.delivery.webhook import HostClients, WebhookDeliverer
from hub.store.schema import deliveries
from tests.e2e.conftest import SECRET
from tests.support import Receiver, push_scenario, subscribe_webhook

pytestmark = pytest.mark.integration
COUNCIL = "E06000060"


async def _subscribe(store_hub, url: str) -> str:  # noqa: ANN001
    return await subscribe_webhook(store_hub, COUNCIL, url, SECRET)


async def test_an_endpoint_that_hangs_does_not_hold_up_another(store_hub):
    fast, hanging = Receiver(secret=SECRET), Receiver(secret=SECRET, delay=3.0)
    await fast.start()
    await hanging.start()
    clients = HostClients(timeout=1.0, allowed_hosts=["127.0.0.1"])
    stop = asyncio.Event()
    try:
        await _subscribe(store_hub, hanging.url(COUNCIL))  # created first: its deliveries are queued first
        fast_sub = await _subscribe(store_hub, fast.url(COUNCIL))
        await push_scenario(store_hub, seed=31)
        await push_scenario(store_hub, seed=32)
        async with store_hub.hub.engine.connect() as conn:
            expected = (await conn.execute(select(deliveries.c.event_id).where(
                deliveries.c.subscription_id == fast_sub).order_by(deliveries.c.delivery_seq))).scalars().all()
        assert len(expected) >= 6
        # One-second deadline per attempt, a lease of two, quick backoff.
        deliverer = WebhookDeliverer(store_hub.hub.engine, store_hub.hub.protector, clients, 0.05, 0.2, 0, 2.0,
                                     timeout_seconds=1.0)
        started = time.monotonic()
        worker = asyncio.create_task(deliverer.serve(0.05, stop))
        await fast.wait_for(lambda: len(fast.received) >= len(expected), timeout=20)
        took = time.monotonic() - started
        # Lockstep rounds would have waited a whole deadline per message (>= 1 s each).
        assert took < len(expected) * 0.5, f"{len(expected)} messages took {took:.1f}s"
        assert hanging.received and all(r.headers["s117-event-number"] == "1" for r in hanging.received)
        assert fast.event_ids() == list(expected)
        assert [int(r.headers["s117-event-number"]) for r in fast.received] == list(range(1, len(expected) + 1))
        assert all(r.signature_ok for r in fast.received)
        # The receiver has each message before the deliverer has its answer and
        # records it: the status follows within moments (the last outcomes are
        # written once their responses are in).
        deadline = time.monotonic() + 10
        while True:
            status = (await store_hub.http.get(f"/v1/subscriptions/{fast_sub}/status",
                                               headers={"X-API-Key": store_hub.keys[COUNCIL]})).json()
            if status["last_event_number_acknowledged"] == len(expected) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert status["events_since_subscription_start"] == status["last_event_number_acknowledged"] == len(expected)
        assert status["pending"] == 0 and status["head"] is None
    finally:
        stop.set()
        if "worker" in locals():
            await worker
        await clients.aclose()
        await fast.stop()
        await hanging.stop()


async def test_a_delivery_leased_by_a_dead_instance_goes_once_the_lease_ends(store_hub):
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    clients = HostClients(timeout=1.0, allowed_hosts=["127.0.0.1"])
    stop = asyncio.Event()
    try:
        sub = await _subscribe(store_hub, receiver.url(COUNCIL))
        await push_scenario(store_hub, seed=33)
        # An instance that died mid-POST: the head is leased (attempt 1) for another 1.5 s.
        lease_ends = datetime.now(UTC) + timedelta(seconds=1.5)
        async with store_hub.hub.engine.begin() as conn:
            head = (await conn.execute(select(deliveries.c.delivery_seq).where(deliveries.c.subscription_id == sub)
                                       .order_by(deliveries.c.delivery_seq).limit(1))).scalar_one()
            await conn.execute(deliveries.update().where(deliveries.c.delivery_seq == head)
                               .values(attempts=1, next_attempt_at=lease_ends))
        deliverer = WebhookDeliverer(store_hub.hub.engine, store_hub.hub.protector, clients, 0.05, 0.2, 0, 2.0,
                                     timeout_seconds=1.0)
        worker = asyncio.create_task(deliverer.serve(0.05, stop))
        await receiver.wait_for(lambda: receiver.received, timeout=10)
        first = datetime.now(UTC)
        assert first >= lease_ends - timedelta(milliseconds=50), "nothing may overtake or steal a live lease"
        assert first - lease_ends < timedelta(seconds=1), "picked up as soon as the lease ran out"
        assert receiver.received[0].headers["s117-event-number"] == "1"
    finally:
        stop.set()
        if "worker" in locals():
            await worker
        await clients.aclose()
        await receiver.stop()
