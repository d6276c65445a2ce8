"""FHIR topic-based subscriptions end to end: the hub as a real process, a
real HTTP receiver: handshake, heartbeat, an event notification carrying the
S117 message, $status and $events; refusals as OperationOutcomes."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.subscription import Subscription

from hub.crypto import verify_webhook_request
from hub.fhir.subscriptions import HEARTBEAT_EXT, PAYLOAD_CONTENT_EXT, TOPIC_BASE
from hub.fhir.validate import validate_message
from tests.e2e.conftest import SECRET, make_clients
from tests.e2e.test_subscriptions import _Http
from tests.support import HubProcess, Receiver, push_scenario

pytestmark = pytest.mark.e2e
COUNCIL = "E06000060"
TOPIC = f"{TOPIC_BASE}/s117-entitlement-started"


def _subscription(endpoint: str, topic: str = TOPIC, kind: str = "rest-hook") -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "S117 register",
            "criteria": topic,
            "channel": {"type": kind, "endpoint": endpoint, "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": PAYLOAD_CONTENT_EXT, "valueCode": "full-resource"}]},
                        "extension": [{"url": HEARTBEAT_EXT, "valueUnsignedInt": 1}]}}


def _status(body: bytes) -> dict:
    bundle = orjson.loads(body)
    Bundle.model_validate(bundle)  # R4B
    assert bundle["type"] == "subscription-notification"
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "SubscriptionStatus"
    return status


async def test_handshake_heartbeat_and_notifications_reach_a_real_receiver(tmp_path, sharing_file):
    receiver = Receiver(secret=SECRET)
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await receiver.start()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            h = {"X-API-Key": keys[COUNCIL], "Content-Type": "application/fhir+json"}
            topics = (await http.get("/v1/fhir/SubscriptionTopic", headers=h)).json()
            Bundle.model_validate(topics)
            assert TOPIC in {e["resource"]["url"] for e in topics["entry"]}

            r = await http.post("/v1/fhir/Subscription", headers=h,
                                content=orjson.dumps(_subscription(receiver.url(COUNCIL))))
            assert r.status_code == 201, r.text
            sub = r.json()
            Subscription.model_validate(sub)
            assert sub["status"] == "active" and sub["criteria"] == TOPIC
            secret = r.headers["S117-Webhook-Secret"]
            handshake = _status(receiver.received[0].body)
            assert handshake["type"] == "handshake" and handshake["eventsSinceSubscriptionStart"] == "0"
            assert handshake["subscription"]["reference"].endswith(f"/Subscription/{sub['id']}")

            await receiver.wait_for(lambda: any(_status(x.body)["type"] == "heartbeat" for x in receiver.received),
                                    timeout=15)
            await push_scenario(_Http(http, keys), seed=61)
            await receiver.wait_for(
                lambda: any(_status(x.body)["type"] == "event-notification" for x in receiver.received), timeout=30)
            for x in receiver.received:
                assert verify_webhook_request(secret, x.headers, x.body)
            note = next(x for x in receiver.received if _status(x.body)["type"] == "event-notification")
            status = _status(note.body)
            assert status["eventsSinceSubscriptionStart"] == "1" and status["topic"] == TOPIC
            assert [e["eventNumber"] for e in status["notificationEvent"]] == ["1"]
            message = orjson.loads(note.body)["entry"][1]["resource"]
            validate_message(message)
            assert status["notificationEvent"][0]["focus"]["reference"] == orjson.loads(note.body)["entry"][1]["fullUrl"]
            assert note.headers["s117-event-number"] == "1"

            st = (await http.get(f"/v1/fhir/Subscription/{sub['id']}/$status", headers=h)).json()
            Bundle.model_validate(st)
            assert st["entry"][0]["resource"]["type"] == "query-status"
            # At least the one seen (the dispatcher may have queued more of this topic since).
            assert int(st["entry"][0]["resource"]["eventsSinceSubscriptionStart"]) >= 1
            ev = (await http.get(f"/v1/fhir/Subscription/{sub['id']}/$events?eventsSinceNumber=1&eventsUntilNumber=1",
                                 headers=h)).json()
            assert _status(orjson.dumps(ev))["type"] == "query-event"
            assert ev["entry"][1]["resource"] == message

            # Heartbeats keep coming while nothing is sent, each with the count so far.
            seen = len(receiver.received)
            deadline = time.monotonic() + 10
            while len(receiver.received) == seen and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            later = _status(receiver.received[-1].body)
            assert later["type"] in {"heartbeat", "event-notification"} and int(later["eventsSinceSubscriptionStart"]) >= 1

            other = await http.get(f"/v1/fhir/Subscription/{sub['id']}/$status",
                                   headers={"X-API-Key": keys["QU9"]})
            assert other.status_code == 404 and other.json()["resourceType"] == "OperationOutcome"
    finally:
        hub.stop()
        await receiver.stop()


async def test_subscriptions_outside_the_offer_or_the_agreement_are_refused(tmp_path, sharing_file):
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            h = {"X-API-Key": keys[COUNCIL], "Content-Type": "application/fhir+json"}
            r = await http.post("/v1/fhir/Subscription", headers=h,
                                content=orjson.dumps(_subscription("http://127.0.0.1:9/h", kind="websocket")))
            assert r.status_code == 422
            assert r.json()["issue"][0]["expression"] == ["Subscription.channel.type"]
            r = await http.post("/v1/fhir/Subscription", headers=h,
                                content=orjson.dumps(_subscription("http://127.0.0.1:9/h", topic=TOPIC_BASE + "/nope")))
            assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Subscription.criteria"]
            # Worcestershire's agreement covers only the move notice.
            worcs = {**h, "X-API-Key": keys["E10000034"]}
            r = await http.post("/v1/fhir/Subscription", headers=worcs,
                                content=orjson.dumps(_subscription("http://127.0.0.1:9/h")))
            assert r.status_code == 422 and r.json()["issue"][0]["code"] == "forbidden"
            # An endpoint that refuses the handshake: the subscription is in error and gets nothing.
            r = await http.post("/v1/fhir/Subscription", headers=h,
                                content=orjson.dumps(_subscription("http://127.0.0.1:9/h")))
            assert r.status_code == 201 and r.json()["status"] == "error"
            # A private address (not on the operator's allow-list) is refused at once.
            r = await http.post("/v1/fhir/Subscription", headers=h,
                                content=orjson.dumps(_subscription("http://10.1.2.3/h")))
            assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]
    finally:
        hub.stop()
