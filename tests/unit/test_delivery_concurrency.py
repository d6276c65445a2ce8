"""The per-subscription tasks keep at most `max_in_flight` attempts going at
once, and do run subscriptions side by side up to that bound."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from hub.delivery.webhook import WebhookDeliverer
from hub.store.schema import deliveries
from tests.support import push_scenario


class SlowEndpoints:
    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.calls = 0

    async def post(self, url: str, content: bytes, headers: dict) -> httpx.Response:  # noqa: ARG002
        self.in_flight += 1
        self.calls += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.1)
            return httpx.Response(204)
        finally:
            self.in_flight -= 1


async def test_in_flight_attempts_are_bounded_across_subscriptions(app_hub):
    h = {"X-API-Key": app_hub.keys["E06000060"]}
    for i in range(5):
        r = await app_hub.http.post("/v1/subscriptions", headers=h,
                                    json={"url": f"http://127.0.0.1:{9100 + i}/hook", "secret": "s" * 32})
        assert r.status_code == 201
    await push_scenario(app_hub, seed=71)
    async with app_hub.hub.engine.connect() as conn:
        queued = (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one()
    endpoints = SlowEndpoints()
    deliverer = WebhookDeliverer(app_hub.hub.engine, app_hub.hub.protector, endpoints, 0.05, 0.1, 0, 5.0,
                                 timeout_seconds=2.0, max_in_flight=2)
    stop = asyncio.Event()
    worker = asyncio.create_task(deliverer.serve(0.02, stop))
    try:
        async with asyncio.timeout(30):
            while endpoints.calls < queued:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await worker
    assert endpoints.calls == queued
    assert endpoints.most == 2
