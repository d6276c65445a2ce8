"""A subscriber whose endpoint answers `410 Gone` is suspended, shown as
suspended to the subscriber and the operator, and resumed by either; the
delivery then goes on from the oldest pending message, in order, with the
same event numbers (hub/delivery/leases.py, "Suspension";
hub/api/subscriptions.py, hub/api/ops.py). A FHIR rest-hook subscription
shows `error` with the reason while suspended. The app in process on SQLite
and PostgreSQL, a real HTTP subscriber on a socket."""

from __future__ import annotations

from sqlalchemy import select

from hub.clients import add_client
from hub.delivery.fhir_rest_hook import FhirRestHookDeliverer
from hub.delivery.http1 import HostClients
from hub.delivery.webhook import WebhookDeliverer
from hub.fhir.subscriptions import PAYLOAD_CONTENT_EXT, TOPIC_BASE
from hub.store.schema import operator_actions
from tests.contract.test_webhook_http1 import Subscriber
from tests.e2e.conftest import SECRET
from tests.support import push_scenario, subscribe_webhook

COUNCIL = "E06000060"
GONE = "gone (HTTP 410)"


def _answer(status: int) -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode()


class _Endpoint:
    """A Subscriber whose answer is switched by the test: `status` for every request."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.sub = Subscriber(answer=lambda n: _answer(self.status))

    async def start(self) -> "_Endpoint":
        await self.sub.start()
        return self

    def url(self) -> str:
        return f"http://127.0.0.1:{self.sub.port}/hooks/{COUNCIL}"

    def event_numbers(self) -> list[int]:
        out = []
        for head, _ in self.sub.requests:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"s117-event-number:"):
                    out.append(int(line.split(b":", 1)[1]))
        return out


async def _drain(deliverer) -> int:  # noqa: ANN001
    total = 0
    while sent := await deliverer.run_once():
        total += sent
    return total


async def test_a_gone_subscriber_is_suspended_shown_and_resumed_from_its_oldest_pending_message(store_hub) -> None:  # noqa: ANN001
    hub, http = store_hub.hub, store_hub.http
    h = {"X-API-Key": store_hub.keys[COUNCIL]}
    admin = {"X-API-Key": (await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    other = {"X-API-Key": (await add_client(hub.engine, "BOB ICB", "QU9", "icb", ["subscriptions:write"]))[1]}
    endpoint = await _Endpoint(410).start()
    clients = HostClients(timeout=5.0, allowed_hosts=["127.0.0.1"])
    deliverer = WebhookDeliverer(hub.engine, hub.protector, clients, 0.0001, 0.0001, 0, 5.0, timeout_seconds=2.0,
                                 per_subscription_batch=100)
    try:
        sid = await subscribe_webhook(store_hub, COUNCIL, endpoint.url(), SECRET)
        await push_scenario(store_hub, seed=71)
        queued = (await http.get(f"/v1/subscriptions/{sid}/status", headers=h)).json()["pending"]
        assert queued >= 2

        assert await deliverer.run_once() == 1  # answered 410: nothing more is sent
        assert await deliverer.run_once() == 0
        assert endpoint.event_numbers() == [1]

        # The subscriber sees it suspended, and why, on its subscription, its list and its status.
        one = (await http.get(f"/v1/subscriptions/{sid}", headers=h)).json()
        assert (one["state"], one["active"], one["suspended_reason"]) == ("suspended", True, GONE)
        assert one["suspended_at"] is not None
        listed = {s["subscription_id"]: s for s in (await http.get("/v1/subscriptions", headers=h)).json()["items"]}
        assert listed[sid]["state"] == "suspended" and listed[sid]["suspended_reason"] == GONE
        status = (await http.get(f"/v1/subscriptions/{sid}/status", headers=h)).json()
        assert (status["state"], status["pending"], status["dead"]) == ("suspended", queued, 0)
        assert status["head"]["event_number"] == 1 and status["head"]["last_error"] == "HTTP 410"
        # The operator too, where subscriptions are listed.
        flows = (await http.get("/v1/ops/flows", headers=admin)).json()
        entry = next(s for s in flows["subscriptions"] if s["subscription_id"] == sid)
        assert (entry["state"], entry["suspended_reason"], entry["pending"]) == ("suspended", GONE, queued)

        # Only its own organisation resumes it.
        assert (await http.get(f"/v1/subscriptions/{sid}", headers=other)).status_code == 404
        assert (await http.post(f"/v1/subscriptions/{sid}/resume", headers=other)).status_code == 404

        endpoint.status = 204  # the endpoint is back
        r = await http.post(f"/v1/subscriptions/{sid}/resume", headers=h)
        assert r.status_code == 200, r.text
        assert (r.json()["state"], r.json()["suspended_reason"]) == ("active", None)
        again = await http.post(f"/v1/subscriptions/{sid}/resume", headers=h)
        assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
        assert again.json()["type"].endswith("/not-suspended") and again.json()["errors"][0]["field"] == "state"

        # From the oldest pending message, in order, the same numbers: 1 (answered 410 before) first.
        assert await _drain(deliverer) == queued
        assert endpoint.event_numbers() == [1, *range(1, queued + 1)]
        status = (await http.get(f"/v1/subscriptions/{sid}/status", headers=h)).json()
        assert (status["state"], status["pending"], status["last_event_number_acknowledged"]) == \
            ("active", 0, queued)

        # Gone again: suspended again; the operator resumes it (hub:admin only), and that is audited.
        endpoint.status = 410
        await push_scenario(store_hub, seed=72)
        assert await deliverer.run_once() == 1
        assert (await http.get(f"/v1/subscriptions/{sid}", headers=h)).json()["state"] == "suspended"
        assert (await http.post(f"/v1/ops/subscriptions/{sid}/resume", headers=h)).status_code == 403
        r = await http.post(f"/v1/ops/subscriptions/{sid}/resume", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json() == {"subscription_id": sid, "state": "active", "was": GONE}
        async with hub.engine.connect() as conn:
            audited = (await conn.execute(select(operator_actions.c.action, operator_actions.c.target)
                                          .where(operator_actions.c.action == "resume-subscription"))).all()
            await conn.rollback()
        assert [tuple(a) for a in audited] == [("resume-subscription", sid)]
        r = await http.post(f"/v1/ops/subscriptions/{sid}/resume", headers=admin)
        assert r.status_code == 409 and r.json()["type"].endswith("/not-suspended")
        assert (await http.post("/v1/ops/subscriptions/no-such/resume", headers=admin)).status_code == 404

        # A suspended subscription stopped (DELETE) is stopped, not suspended, and is not resumed.
        assert await deliverer.run_once() == 1
        assert (await http.delete(f"/v1/subscriptions/{sid}", headers=h)).status_code == 200
        one = (await http.get(f"/v1/subscriptions/{sid}", headers=h)).json()
        assert (one["state"], one["active"], one["suspended_reason"]) == ("stopped", False, None)
        r = await http.post(f"/v1/subscriptions/{sid}/resume", headers=h)
        assert r.status_code == 409 and r.json()["type"].endswith("/subscription-stopped")
    finally:
        await clients.aclose()
        await endpoint.sub.stop()


async def test_a_fhir_subscription_shows_error_while_suspended_and_active_once_resumed(store_hub) -> None:  # noqa: ANN001
    import orjson

    hub, http = store_hub.hub, store_hub.http
    h = {"X-API-Key": store_hub.keys[COUNCIL]}
    endpoint = await _Endpoint(200).start()  # takes the handshake
    clients = HostClients(timeout=5.0, allowed_hosts=["127.0.0.1"])
    deliverer = FhirRestHookDeliverer(hub.engine, hub.protector, clients, 0.0001, 0.0001, 0, 5.0,
                                      timeout_seconds=2.0, per_subscription_batch=100,
                                      hub_endpoint=hub.settings.hub_endpoint)
    try:
        resource = {"resourceType": "Subscription", "status": "requested", "reason": "S117 register",
                    "criteria": f"{TOPIC_BASE}/s117-entitlement-started",
                    "channel": {"type": "rest-hook", "endpoint": endpoint.url(), "payload": "application/fhir+json",
                                "_payload": {"extension": [{"url": PAYLOAD_CONTENT_EXT, "valueCode": "id-only"}]}}}
        r = await http.post("/v1/fhir/Subscription", headers={**h, "Content-Type": "application/fhir+json"},
                            content=orjson.dumps(resource))
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        await push_scenario(store_hub, seed=73)
        endpoint.status = 410
        assert await deliverer.run_once() == 1
        assert await deliverer.run_once() == 0

        sub = (await http.get(f"/v1/fhir/Subscription/{sid}", headers=h)).json()
        assert sub["status"] == "error" and GONE in sub["error"][0]["text"]
        st = (await http.get(f"/v1/fhir/Subscription/{sid}/$status", headers=h)).json()
        assert st["entry"][0]["resource"]["status"] == "error"
        assert (await http.get(f"/v1/subscriptions/{sid}", headers=h)).json()["state"] == "suspended"

        endpoint.status = 200
        assert (await http.post(f"/v1/subscriptions/{sid}/resume", headers=h)).status_code == 200
        sub = (await http.get(f"/v1/fhir/Subscription/{sid}", headers=h)).json()
        assert sub["status"] == "active" and "error" not in sub
        sent = await _drain(deliverer)
        assert sent >= 1
        assert (await http.get(f"/v1/subscriptions/{sid}/status", headers=h)).json()["pending"] == 0
    finally:
        await clients.aclose()
        await endpoint.sub.stop()
