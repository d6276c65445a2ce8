"""A FHIR rest-hook subscription whose endpoint answers `410 Gone` to a
heartbeat (hub.delivery.fhir_rest_hook) is suspended as a delivery answered 410 would
suspend it (hub/delivery/leases.py, "Suspension"): the same reason, counted in
`s117_subscriptions_suspended{reason="gone"}`, the same warning line; status
`error` (no more heartbeats), its messages queued and kept, until the
subscriber resumes it. Any other failure is as before, and a handshake
answered 410 is a failed handshake (in error and off, nothing queued). The app in process on
SQLite, a real local HTTP receiver on a socket."""

from __future__ import annotations

import asyncio
import time

import orjson
from sqlalchemy import select
from structlog.testing import capture_logs

from hub.delivery.fhir_rest_hook import FhirRestHookDeliverer
from hub.delivery.http1 import HostClients
from hub.delivery.webhook import GONE, GONE_ERROR
from hub.fhir.subscriptions import HEARTBEAT_EXT, PAYLOAD_CONTENT_EXT, TOPIC_BASE
from hub.observability import metrics
from hub.observability.logging import ALLOWED_KEYS
from hub.store.schema import deliveries
from tests.unit.test_webhook_gone_after_resume import _queue
from tests.unit.test_webhook_pipeline import Receiver

COUNCIL = "E06000060"
SUSPENDED_LINE = "webhook subscription suspended"


def _gauge() -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("s117_subscriptions_suspended", {"reason": "gone"})


def _kind(seen: str) -> str:
    """What the receiver got: a notification's SubscriptionStatus type, or an event's number."""
    if not seen.startswith("{"):
        return seen
    return orjson.loads(seen)["entry"][0]["resource"]["type"]


async def _subscribe(app_hub, url: str, heartbeat: int | None = None):  # noqa: ANN001, ANN202
    channel = {"type": "rest-hook", "endpoint": url, "payload": "application/fhir+json",
               "_payload": {"extension": [{"url": PAYLOAD_CONTENT_EXT, "valueCode": "id-only"}]}}
    if heartbeat is not None:
        channel["extension"] = [{"url": HEARTBEAT_EXT, "valueUnsignedInt": heartbeat}]
    resource = {"resourceType": "Subscription", "status": "requested", "reason": "S117 register",
                "criteria": f"{TOPIC_BASE}/s117-entitlement-started", "channel": channel}
    return await app_hub.http.post("/v1/fhir/Subscription", content=orjson.dumps(resource),
                                   headers={"X-API-Key": app_hub.keys[COUNCIL], "Content-Type": "application/fhir+json"})


async def _statuses(app_hub, sid: str) -> list[str]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(deliveries.c.status).where(deliveries.c.subscription_id == sid)
                                   .order_by(deliveries.c.delivery_seq))).all()
        await conn.rollback()
    return [r.status for r in rows]


async def _views(app_hub, sid: str) -> tuple[dict, dict]:  # noqa: ANN001
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    fhir = (await app_hub.http.get(f"/v1/fhir/Subscription/{sid}", headers=h)).json()
    plain = (await app_hub.http.get(f"/v1/subscriptions/{sid}", headers=h)).json()
    return fhir, plain


def _deliverer(app_hub, client: HostClients) -> FhirRestHookDeliverer:  # noqa: ANN001
    hub = app_hub.hub
    return FhirRestHookDeliverer(hub.engine, hub.protector, client, 0.0001, 0.0001, 0, 5.0, timeout_seconds=2.0,
                                 per_subscription_batch=100, hub_endpoint=hub.settings.hub_endpoint)


async def _heartbeat(deliverer: FhirRestHookDeliverer, sid: str) -> int:
    """Send the heartbeats due once the subscription's period (1 s) has passed; wait for them."""
    deliverer._last_sent[sid] = time.monotonic() - 5  # its period (1 s) has passed
    started = await deliverer.send_heartbeats()
    await asyncio.gather(*deliverer._heartbeats)
    return started


async def _suspended_gauge(app_hub) -> float | None:  # noqa: ANN001
    await app_hub.hub.deliverer.run_once()  # the hub's webhook deliverer's poll sets it from the store
    return _gauge()


def _suspension_lines(logs: list[dict]) -> list[dict]:
    return [line for line in logs if line["log_level"] == "warning" and line["event"].startswith(SUSPENDED_LINE)]


async def test_a_heartbeat_answered_410_suspends_the_subscription_as_a_delivery_would(app_hub) -> None:  # noqa: ANN001
    status = {"now": 200}
    receiver = Receiver(answer=lambda n, seen: status["now"])
    port = await receiver.start()
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    try:
        r = await _subscribe(app_hub, f"http://127.0.0.1:{port}/hook", heartbeat=1)
        assert r.status_code == 201 and r.json()["status"] == "active", r.text
        sid = r.json()["id"]
        await _queue(app_hub, sid)  # a message waiting (its head due later: not what a heartbeat sends)
        deliverer = _deliverer(app_hub, client)
        assert await _heartbeat(deliverer, sid) == 1  # taken: nothing changes
        assert (await _views(app_hub, sid))[1]["state"] == "active"

        status["now"] = 410
        with capture_logs() as logs:
            assert await _heartbeat(deliverer, sid) == 1
        assert [_kind(n) for n in receiver.seen] == ["handshake", "heartbeat", "heartbeat"]
        fhir, plain = await _views(app_hub, sid)
        assert (plain["state"], plain["active"], plain["suspended_reason"]) == ("suspended", True, GONE)
        assert plain["suspended_at"] is not None
        assert fhir["status"] == "error" and GONE in fhir["error"][0]["text"]
        assert await _statuses(app_hub, sid) == ["pending"]  # its queue kept
        warned = _suspension_lines(logs)
        assert len(warned) == 1 and set(warned[0]) - {"log_level"} <= ALLOWED_KEYS
        assert (warned[0]["subscription_id"], warned[0]["recipient"], warned[0]["channel"],
                warned[0]["error_kind"], warned[0]["url_host"]) == (sid, COUNCIL, "fhir", "HTTP 410", "127.0.0.1")
        assert await _suspended_gauge(app_hub) == 1

        # Suspended: no more heartbeats, no deliveries, until it is resumed.
        assert await _heartbeat(deliverer, sid) == 0
        assert await deliverer.run_once() == 0
        assert len(receiver.seen) == 3

        status["now"] = 200
        assert (await app_hub.http.post(f"/v1/subscriptions/{sid}/resume", headers=h)).status_code == 200
        fhir, plain = await _views(app_hub, sid)
        assert (fhir["status"], plain["state"]) == ("active", "active") and "error" not in fhir
        assert await _suspended_gauge(app_hub) == 0
        assert await deliverer.run_once() == 1
        assert await _statuses(app_hub, sid) == ["delivered"]
        assert await _heartbeat(deliverer, sid) == 1  # heartbeats again

        # The line is the one a delivery answered 410 writes: the same keys.
        status["now"] = 410
        await _queue(app_hub, sid)
        with capture_logs() as logs:
            assert await deliverer.run_once() == 1
        from_delivery = _suspension_lines(logs)
        assert len(from_delivery) == 1 and set(from_delivery[0]) == set(warned[0])
        assert from_delivery[0]["event"] == warned[0]["event"]
    finally:
        metrics.SUBSCRIPTIONS_SUSPENDED.labels(reason="gone").set(0)
        await client.aclose()
        receiver.close()


async def test_a_heartbeat_that_fails_otherwise_suspends_nothing(app_hub) -> None:  # noqa: ANN001
    status = {"now": 200}
    receiver = Receiver(answer=lambda n, seen: status["now"])
    port = await receiver.start()
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    try:
        r = await _subscribe(app_hub, f"http://127.0.0.1:{port}/hook", heartbeat=1)
        sid = r.json()["id"]
        deliverer = _deliverer(app_hub, client)
        for failing in (404, 500, 503):
            status["now"] = failing
            with capture_logs() as logs:
                assert await _heartbeat(deliverer, sid) == 1
            assert [line["event"] for line in logs if line["log_level"] == "warning"] == ["heartbeat not taken"]
            fhir, plain = await _views(app_hub, sid)
            assert (fhir["status"], plain["state"]) == ("active", "active")
    finally:
        await client.aclose()
        receiver.close()


async def test_a_handshake_answered_410_leaves_it_in_error_and_off_with_nothing_queued(app_hub) -> None:  # noqa: ANN001
    """A handshake answered 410 is a failed handshake like any other: the subscription is made
    in error and off, not suspended, so nothing about anyone is queued for an endpoint that was
    gone before it was ever used (a suspension is for one that worked and went away)."""
    receiver = Receiver(answer=lambda n, seen: 410)
    port = await receiver.start()
    try:
        with capture_logs() as logs:
            r = await _subscribe(app_hub, f"http://127.0.0.1:{port}/hook", heartbeat=1)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "error" and r.json()["error"][0]["text"] == f"handshake failed: {GONE_ERROR}"
        fhir, plain = await _views(app_hub, r.json()["id"])
        assert (plain["state"], plain["active"], plain["suspended_reason"]) == ("stopped", False, None)
        assert not _suspension_lines(logs)
        assert await _suspended_gauge(app_hub) == 0
    finally:
        receiver.close()


async def test_a_handshake_that_fails_otherwise_leaves_it_in_error_and_off(app_hub) -> None:  # noqa: ANN001
    receiver = Receiver(answer=lambda n, seen: 503)
    port = await receiver.start()
    try:
        with capture_logs() as logs:
            r = await _subscribe(app_hub, f"http://127.0.0.1:{port}/hook")
        assert r.status_code == 201 and r.json()["status"] == "error"
        assert r.json()["error"][0]["text"] == "handshake failed: HTTP 503"
        fhir, plain = await _views(app_hub, r.json()["id"])
        assert (plain["state"], plain["active"], plain["suspended_reason"]) == ("stopped", False, None)
        assert not _suspension_lines(logs)
    finally:
        receiver.close()
