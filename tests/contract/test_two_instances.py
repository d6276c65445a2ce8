"""Two hub instances on one store: each event is dispatched once and each
webhook delivery sent once, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import date

import pytest
from sqlalchemy import func, select

from hub.bus.sql import SqlLog
from hub.delivery.dispatcher import Dispatcher
from hub.delivery.webhook import WebhookDeliverer
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import deliveries, disclosures

pytestmark = pytest.mark.integration


async def test_two_dispatchers_and_two_deliverers_do_each_piece_of_work_once(store_hub):
    hub = store_hub.hub
    await store_hub.http.post("/v1/subscriptions", headers={"X-API-Key": store_hub.keys["E06000060"]},
                              json={"url": "http://127.0.0.1:9/hook", "secret": "s" * 32})
    for seed in range(3):
        for c in detention_to_move_scenario(random.Random(seed), f"two-{seed}", date(2025, 1, 6)):
            r = await store_hub.http.post("/v1/register-changes", headers={"X-API-Key": store_hub.keys["trust"]}, json=c)
            assert r.status_code == 202
    # A second instance: its own log reader and dispatcher over the same database.
    other = Dispatcher(hub.engine, SqlLog(hub.engine), hub.ref, hub.sharing, hub.protector, "https://other",
                       agreements=hub.agreements)
    for _ in range(20):
        a, b = await asyncio.gather(hub.dispatcher.run_once(), other.run_once())
        if not a and not b:
            break
    async with hub.engine.connect() as conn:
        audited = (await conn.execute(select(disclosures.c.event_id, disclosures.c.recipient_org, func.count())
                                      .group_by(disclosures.c.event_id, disclosures.c.recipient_org)
                                      .having(func.count() > 1))).all()
        queued = (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one()
    assert audited == [], "an event was dispatched twice"
    assert queued > 0
    # Event numbers from the two dispatchers' transactions: 1..n per subscription, no gap, none twice.
    async with hub.engine.connect() as conn:
        numbers = (await conn.execute(select(deliveries.c.event_number).order_by(deliveries.c.delivery_seq))).scalars().all()
    assert numbers == list(range(1, queued + 1))

    # Two deliverers racing for the same head deliveries: each is attempted once per round.
    sent: list[str] = []

    class Recorder:
        async def post(self, url, content, headers):  # noqa: ANN001, ANN201
            sent.append(headers["S117-Delivery-Id"])
            await asyncio.sleep(0.01)
            raise __import__("httpx").ConnectError("subscriber down")

    d1 = WebhookDeliverer(hub.engine, hub.protector, Recorder(), 60, 60)
    d2 = WebhookDeliverer(hub.engine, hub.protector, Recorder(), 60, 60)
    await asyncio.gather(d1.run_once(), d2.run_once())
    assert len(sent) == len(set(sent)) == 1  # one subscription: only its head, and only once
