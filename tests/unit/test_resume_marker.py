"""A resume is a line the subscription's requests in flight cannot cross
(hub/delivery/leases.py, "Suspension": `subscriptions.suspension_epoch`).

* A `410 Gone` answering a request sent before the subscription's latest
  resume (a FHIR heartbeat, or a delivery batch leased before it) does not
  suspend it again: the subscriber resumed it after that request went out.
  It is logged as stale; the delivery it answered is sent again at once (and
  a 410 to that, sent after the resume, suspends it as usual).
* A resume while a delivery batch is in flight (a heartbeat's 410 suspended the
  subscription meanwhile) gives that batch's deliveries the fresh retry budget
  too, and the batch's outcome, recorded after the resume, keeps it: the one
  that failed is not dead-lettered on the attempts it had before the resume,
  and those it did not send are given back due at once (not left leased until
  the lease runs out), so delivery goes on promptly, in order, nothing lost.

The app in process on SQLite, a real local HTTP receiver on a socket whose
answers the test holds back and releases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlalchemy import select
from structlog.testing import capture_logs

from hub.delivery.fhir_rest_hook import FhirRestHookDeliverer
from hub.delivery.http1 import HostClients
from hub.delivery.webhook import EVENT_NUMBER_HEADER, GONE
from hub.observability import metrics
from hub.observability.logging import ALLOWED_KEYS
from hub.store.schema import deliveries
from tests.support import read_http_request
from tests.unit.test_fhir_heartbeat_gone import _subscribe, _views
from tests.unit.test_webhook_gone_after_resume import _queue

COUNCIL = "E06000060"
LEASE = 30.0  # far longer than any test here waits: a delivery left leased would stall it
STALE_LINE = "410 Gone to a request sent before the subscription was resumed: not suspended again"


class GatedReceiver:
    """A local HTTP/1.1 endpoint. Each request is recorded as it arrives
    ("heartbeat", or a delivery's event number) and answered with the status
    its `answer(kind)` coroutine returns: the test holds an answer back by
    making that coroutine wait."""

    def __init__(self, answer: Callable) -> None:  # noqa: ANN001
        self.answer = answer
        self.seen: list[str] = []
        self.answered: list[tuple[str, int]] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                headers, _ = await read_http_request(reader)
                kind = headers.get("s117-notification-type") or headers.get(EVENT_NUMBER_HEADER.lower()) or "?"
                self.seen.append(kind)
                status = await self.answer(kind)
                self.answered.append((kind, status))
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % status)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def arrived(self, kind: str, count: int = 1) -> None:
        async with asyncio.timeout(5):
            while self.seen.count(kind) < count:
                await asyncio.sleep(0.005)

    def close(self) -> None:
        self.server.close()


class Gate:
    """What the receiver answers, per kind of request, and whether it holds the answer back."""

    def __init__(self) -> None:
        self.status = {"handshake": 200, "heartbeat": 200, "delivery": 200}
        self.held: dict[str, asyncio.Event] = {}

    def hold(self, kind: str) -> None:
        self.held[kind] = asyncio.Event()

    def release(self, kind: str, status: int) -> None:
        self.status[kind] = status
        self.held.pop(kind).set()

    async def __call__(self, kind: str) -> int:
        key = kind if kind in ("handshake", "heartbeat") else "delivery"
        gate = self.held.get(key)
        if gate is not None:
            await gate.wait()
        return self.status[key]


def _deliverer(app_hub, client: HostClients, max_attempts: int = 0) -> FhirRestHookDeliverer:  # noqa: ANN001
    hub = app_hub.hub
    return FhirRestHookDeliverer(hub.engine, hub.protector, client, 0.0001, 0.0001, max_attempts, LEASE,
                                 timeout_seconds=5.0, per_subscription_batch=100,
                                 hub_endpoint=hub.settings.hub_endpoint)


def _start_heartbeat(deliverer: FhirRestHookDeliverer, sid: str) -> None:
    deliverer._last_sent[sid] = time.monotonic() - 5  # its period (1 s) has passed


async def _heartbeat(deliverer: FhirRestHookDeliverer, sid: str) -> None:
    _start_heartbeat(deliverer, sid)
    assert await deliverer.send_heartbeats() == 1
    await asyncio.gather(*deliverer._heartbeats)


async def _rows(app_hub, sid: str) -> list[tuple]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(deliveries.c.event_number, deliveries.c.status, deliveries.c.attempts,
                                          deliveries.c.last_error)
                                   .where(deliveries.c.subscription_id == sid)
                                   .order_by(deliveries.c.delivery_seq))).all()
        await conn.rollback()
    return [tuple(r) for r in rows]


async def _resume(app_hub, sid: str) -> None:  # noqa: ANN001
    r = await app_hub.http.post(f"/v1/subscriptions/{sid}/resume", headers={"X-API-Key": app_hub.keys[COUNCIL]})
    assert r.status_code == 200, r.text


async def _state(app_hub, sid: str) -> str:  # noqa: ANN001
    fhir, plain = await _views(app_hub, sid)
    assert (fhir["status"] == "error") == (plain["state"] == "suspended"), (fhir, plain)
    return plain["state"]


async def _setup(app_hub, messages: int):  # noqa: ANN001, ANN202
    gate = Gate()
    receiver = GatedReceiver(gate)
    port = await receiver.start()
    client = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    r = await _subscribe(app_hub, f"http://127.0.0.1:{port}/hook", heartbeat=1)
    assert r.status_code == 201 and r.json()["status"] == "active", r.text
    sid = r.json()["id"]
    for _ in range(messages):
        await _queue(app_hub, sid)
    return gate, receiver, client, sid


def _stale_lines(logs: list[dict]) -> list[dict]:
    return [line for line in logs if line["event"] == STALE_LINE]


async def test_a_heartbeats_410_that_comes_back_after_a_resume_does_not_suspend_it_again(app_hub) -> None:  # noqa: ANN001
    """Heartbeat sent while active; a delivery's 410 suspends; the subscriber resumes; then the
    heartbeat's 410 comes back: it answered a request sent before the resume, so it is stale."""
    gate, receiver, client, sid = await _setup(app_hub, messages=1)
    try:
        deliverer = _deliverer(app_hub, client)
        gate.hold("heartbeat")
        _start_heartbeat(deliverer, sid)
        assert await deliverer.send_heartbeats() == 1
        await receiver.arrived("heartbeat")  # in flight, its answer held back

        gate.status["delivery"] = 410
        assert await deliverer.run_once() == 1  # the delivery's 410 suspends it
        assert await _state(app_hub, sid) == "suspended"
        gate.status["delivery"] = 204
        await _resume(app_hub, sid)
        assert await _state(app_hub, sid) == "active"

        with capture_logs() as logs:
            gate.release("heartbeat", 410)  # the answer to the heartbeat sent before the resume
            await asyncio.gather(*deliverer._heartbeats)
        assert await _state(app_hub, sid) == "active"  # not suspended again
        assert not [line for line in logs if line["event"].startswith("webhook subscription suspended")]
        stale = _stale_lines(logs)
        assert len(stale) == 1 and set(stale[0]) - {"log_level"} <= ALLOWED_KEYS
        assert (stale[0]["subscription_id"], stale[0]["error_kind"], stale[0]["channel"]) == (sid, "HTTP 410", "fhir")

        # Delivery goes on; and a heartbeat sent after the resume and answered 410 suspends it.
        assert await deliverer.run_once() == 1
        assert await _rows(app_hub, sid) == [(1, "delivered", 1, None)]
        await _heartbeat(deliverer, sid)
        assert gate.status["heartbeat"] == 410 and receiver.answered[-1] == ("heartbeat", 410)
        assert await _state(app_hub, sid) == "suspended"
    finally:
        metrics.SUBSCRIPTIONS_SUSPENDED.labels(reason="gone").set(0)
        await client.aclose()
        receiver.close()


async def test_a_deliverys_410_that_comes_back_after_a_resume_does_not_suspend_it_again(app_hub) -> None:  # noqa: ANN001
    """A batch leased while active; a heartbeat's 410 suspends; the subscriber resumes; then the
    in-flight delivery's 410 comes back: stale. The delivery is sent again at once, in order."""
    gate, receiver, client, sid = await _setup(app_hub, messages=2)
    try:
        deliverer = _deliverer(app_hub, client)
        gate.hold("delivery")
        in_flight = asyncio.create_task(deliverer.run_once())
        await receiver.arrived("1")  # event 1 sent, its answer held back; event 2 leased behind it

        gate.status["heartbeat"] = 410
        await _heartbeat(deliverer, sid)
        assert await _state(app_hub, sid) == "suspended"
        await _resume(app_hub, sid)

        with capture_logs() as logs:
            gate.release("delivery", 410)  # the answer to the delivery sent before the resume
            assert await asyncio.wait_for(in_flight, 5) == 1
        assert await _state(app_hub, sid) == "active"  # not suspended again
        assert not [line for line in logs if line["event"].startswith("webhook subscription suspended")]
        stale = _stale_lines(logs)
        assert len(stale) == 1 and set(stale[0]) - {"log_level"} <= ALLOWED_KEYS
        assert (stale[0]["subscription_id"], stale[0]["event_number"], stale[0]["error_kind"]) == (sid, 1, "HTTP 410")
        # Pending, due at once, the stale attempt not counted (made before the resume: the fresh budget's).
        assert await _rows(app_hub, sid) == [(1, "pending", 0, "HTTP 410"), (2, "pending", 0, None)]

        gate.status["delivery"] = 204
        async with asyncio.timeout(5):
            while await deliverer.run_once():
                pass
        assert await _rows(app_hub, sid) == [(1, "delivered", 1, None), (2, "delivered", 1, None)]
        assert [k for k in receiver.seen if k not in ("handshake", "heartbeat")] == ["1", "1", "2"]
    finally:
        metrics.SUBSCRIPTIONS_SUSPENDED.labels(reason="gone").set(0)
        await client.aclose()
        receiver.close()


async def test_a_resume_while_a_batch_is_in_flight_goes_on_at_once_with_the_fresh_budget(app_hub) -> None:  # noqa: ANN001
    """Event 1 has failed once (503) of its two attempts; its retry is leased with events 2 and 3
    behind it and in flight when a heartbeat's 410 suspends the subscription, and the subscriber
    resumes it. The retry's 503 then comes back: recorded after the resume, it does not use up the
    fresh budget (not dead-lettered), and events 2 and 3, not sent, are given back due at once, not
    left leased for the lease's 30 s. Then all three go, in order, each once."""
    gate, receiver, client, sid = await _setup(app_hub, messages=3)
    try:
        deliverer = _deliverer(app_hub, client, max_attempts=2)
        gate.status["delivery"] = 503
        assert await deliverer.run_once() == 1
        assert await _rows(app_hub, sid) == [(1, "pending", 1, "HTTP 503"), (2, "pending", 0, None),
                                             (3, "pending", 0, None)]
        await asyncio.sleep(0.01)  # its backoff (a tenth of a millisecond) has run out

        gate.hold("delivery")
        in_flight = asyncio.create_task(deliverer.run_once())
        await receiver.arrived("1", 2)  # its second (and last) attempt in flight; 2 and 3 leased behind it
        gate.status["heartbeat"] = 410
        await _heartbeat(deliverer, sid)
        assert await _state(app_hub, sid) == "suspended"
        await _resume(app_hub, sid)

        gate.release("delivery", 503)  # the last attempt of the old budget failed, after the resume
        assert await asyncio.wait_for(in_flight, 5) == 1
        rows = await _rows(app_hub, sid)
        assert [r[1] for r in rows] == ["pending"] * 3, rows  # not dead-lettered: the resume's fresh budget
        assert [r[2] for r in rows] == [0, 0, 0], rows  # attempts made before the resume do not count

        gate.status["delivery"] = 204
        started = time.monotonic()
        async with asyncio.timeout(5):
            while (await _rows(app_hub, sid))[-1][1] != "delivered":
                await deliverer.run_once()
                await asyncio.sleep(0.01)
        assert time.monotonic() - started < LEASE / 10  # promptly: nothing waited out the in-flight lease
        assert await _rows(app_hub, sid) == [(1, "delivered", 1, None), (2, "delivered", 1, None),
                                             (3, "delivered", 1, None)]
        assert [k for k in receiver.seen if k not in ("handshake", "heartbeat")] == ["1", "1", "1", "2", "3"]
        assert await _state(app_hub, sid) == "active"
    finally:
        metrics.SUBSCRIPTIONS_SUSPENDED.labels(reason="gone").set(0)
        await client.aclose()
        receiver.close()
