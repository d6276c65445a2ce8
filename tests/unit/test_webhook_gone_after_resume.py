"""The attempt a subscriber answered `410 Gone` does not use up the delivery's
retry budget (S117_WEBHOOK_MAX_ATTEMPTS): a resume, by the subscriber or the
operator, gives the subscription's pending deliveries a fresh budget
(hub/delivery/leases.py, "Suspension"), so a subscriber that was gone and came
back gets the full number of attempts for the message it missed, and going
and coming back never pushes it to dead-letter sooner. Webhook and FHIR
rest-hook alike. The app in process on SQLite, a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from hub.clients import add_client
from hub.delivery.fhir_rest_hook import FhirRestHookDeliverer
from hub.delivery.http1 import HostClients
from hub.delivery.queue import queue_delivery
from hub.delivery.webhook import GONE, WebhookDeliverer
from hub.fhir.subscriptions import PAYLOAD_CONTENT_EXT, TOPIC_BASE
from hub.observability.logging import ALLOWED_KEYS
from hub.store.schema import deliveries
from tests.unit.test_webhook_pipeline import Receiver

COUNCIL = "E06000060"
MAX_ATTEMPTS = 2


async def _subscribe(app_hub, channel: str, url: str) -> str:  # noqa: ANN001
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    if channel == "webhook":
        r = await app_hub.http.post("/v1/subscriptions", headers=h, json={"url": url})
        assert r.status_code == 201, r.text
        return r.json()["subscription_id"]
    resource = {"resourceType": "Subscription", "status": "requested", "reason": "S117 register",
                "criteria": f"{TOPIC_BASE}/s117-entitlement-started",
                "channel": {"type": "rest-hook", "endpoint": url, "payload": "application/fhir+json",
                            "_payload": {"extension": [{"url": PAYLOAD_CONTENT_EXT, "valueCode": "id-only"}]}}}
    r = await app_hub.http.post("/v1/fhir/Subscription", headers={**h, "Content-Type": "application/fhir+json"},
                                content=orjson.dumps(resource))
    assert r.status_code == 201 and r.json()["status"] == "active", r.text
    return r.json()["id"]


async def _queue(app_hub, sid: str) -> None:  # noqa: ANN001
    hub = app_hub.hub
    async with hub.engine.begin() as conn:
        eid = str(uuid.uuid4())
        await queue_delivery(conn, subscription_id=sid, event_id=eid, message_id=eid,
                             event_type="s117-entitlement-started", payload=hub.protector.encrypt(b"{}"),
                             correlation_id="c")


def _deliverer(app_hub, channel: str, client: HostClients) -> WebhookDeliverer:  # noqa: ANN001
    hub = app_hub.hub
    # Backoff of a tenth of a millisecond: a failed head is due again at once. At most two attempts.
    args = (hub.engine, hub.protector, client, 0.0001, 0.0001, MAX_ATTEMPTS, 5.0)
    if channel == "webhook":
        return WebhookDeliverer(*args, timeout_seconds=2.0)
    return FhirRestHookDeliverer(*args, timeout_seconds=2.0, hub_endpoint=hub.settings.hub_endpoint)


async def _head(app_hub, sid: str) -> tuple:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        row = (await conn.execute(select(deliveries.c.status, deliveries.c.attempts, deliveries.c.last_error)
                                  .where(deliveries.c.subscription_id == sid))).one()
        await conn.rollback()
    return tuple(row)


async def _resume(app_hub, route: str, sid: str) -> None:  # noqa: ANN001
    if route == "subscriber":
        r = await app_hub.http.post(f"/v1/subscriptions/{sid}/resume", headers={"X-API-Key": app_hub.keys[COUNCIL]})
    else:
        admin = (await add_client(app_hub.hub.engine, f"ops-{uuid.uuid4().hex[:6]}", "HUB", "hub-operator",
                                  ["hub:admin"]))[1]
        r = await app_hub.http.post(f"/v1/ops/subscriptions/{sid}/resume", headers={"X-API-Key": admin})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("route", ["subscriber", "operator"])
@pytest.mark.parametrize("channel", ["webhook", "fhir"])
async def test_after_a_resume_the_pending_message_has_its_full_number_of_attempts(app_hub, channel: str,
                                                                                   route: str) -> None:  # noqa: ANN001
    status = {"now": 200}  # the FHIR handshake is taken
    receiver = Receiver(answer=lambda n, seen: status["now"])
    port = await receiver.start()
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    try:
        sid = await _subscribe(app_hub, channel, f"http://127.0.0.1:{port}/hook")
        await _queue(app_hub, sid)
        deliverer = _deliverer(app_hub, channel, client)

        status["now"] = 410  # gone: suspended, the delivery pending with the attempt it made
        assert await deliverer.run_once() == 1
        assert await _head(app_hub, sid) == ("pending", 1, "HTTP 410")
        sub = (await app_hub.http.get(f"/v1/subscriptions/{sid}", headers={"X-API-Key": app_hub.keys[COUNCIL]}))
        assert sub.json()["suspended_reason"] == GONE

        status["now"] = 503  # back, but failing for now
        await _resume(app_hub, route, sid)
        assert await deliverer.run_once() == 1
        # The first of its MAX_ATTEMPTS (2) after the resume: retried, not dead-lettered.
        assert await _head(app_hub, sid) == ("pending", 1, "HTTP 503")
        await asyncio.sleep(0.01)
        status["now"] = 204
        assert await deliverer.run_once() == 1
        assert await _head(app_hub, sid) == ("delivered", 2, None)
    finally:
        await client.aclose()
        receiver.close()


@pytest.mark.parametrize("channel", ["webhook", "fhir"])
async def test_the_budget_is_max_attempts_after_a_resume_and_going_again_never_dead_letters_it(
        app_hub, channel: str) -> None:  # noqa: ANN001
    """Gone and resumed three times over (more 410s than MAX_ATTEMPTS): still pending; then the fresh
    budget is exactly MAX_ATTEMPTS (two 5xx: dead), not unlimited."""
    status = {"now": 200}
    receiver = Receiver(answer=lambda n, seen: status["now"])
    port = await receiver.start()
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    try:
        sid = await _subscribe(app_hub, channel, f"http://127.0.0.1:{port}/hook")
        await _queue(app_hub, sid)
        deliverer = _deliverer(app_hub, channel, client)
        status["now"] = 410
        for _ in range(3):
            assert await deliverer.run_once() == 1
            assert await _head(app_hub, sid) == ("pending", 1, "HTTP 410")
            await _resume(app_hub, "subscriber", sid)
        status["now"] = 500
        with capture_logs() as logs:
            assert await deliverer.run_once() == 1
            assert await _head(app_hub, sid) == ("pending", 1, "HTTP 500")
            await asyncio.sleep(0.01)
            assert await deliverer.run_once() == 1
        assert await _head(app_hub, sid) == ("dead", MAX_ATTEMPTS, "HTTP 500")
        assert [line["event"] for line in logs if line["log_level"] == "error"] == ["webhook delivery dead-lettered"]
    finally:
        await client.aclose()
        receiver.close()


async def test_both_resumes_write_one_and_the_same_resumed_line(app_hub) -> None:  # noqa: ANN001
    """The subscriber's and the operator's resume go through one function (hub/api/subscriptions.py
    `resume`): one "subscription resumed" line each, with the same keys; the operator's is also audited."""
    status = {"now": 410}
    receiver = Receiver(answer=lambda n, seen: status["now"])
    port = await receiver.start()
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    try:
        sid = await _subscribe(app_hub, "webhook", f"http://127.0.0.1:{port}/hook")
        deliverer = _deliverer(app_hub, "webhook", client)
        lines = {}
        for route in ("subscriber", "operator"):
            await _queue(app_hub, sid)
            assert await deliverer.run_once() == 1  # 410: suspended
            with capture_logs() as logs:
                await _resume(app_hub, route, sid)
            resumed = [line for line in logs if line["event"] == "subscription resumed"]
            assert len(resumed) == 1, logs
            assert set(resumed[0]) <= ALLOWED_KEYS | {"log_level"}
            assert (resumed[0]["subscription_id"], resumed[0]["was"], resumed[0]["recipient"]) == (sid, GONE, COUNCIL)
            lines[route] = resumed[0]
        assert set(lines["subscriber"]) == set(lines["operator"])
        assert lines["subscriber"]["source"] != lines["operator"]["source"]  # who resumed it
    finally:
        await client.aclose()
        receiver.close()
