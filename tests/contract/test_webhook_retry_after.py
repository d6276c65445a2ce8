"""A subscriber that asks the hub to wait (429 or 503 with `Retry-After`) is
waited for, up to the backoff cap; a subscriber whose answer's head never
ends is dropped once it passes its bound, not read for the whole deadline
(hub/delivery/http1.py, hub/delivery/leases.py). Real sockets, a real store."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime
from email.utils import format_datetime

import pytest
from sqlalchemy import select

from hub.delivery.http1 import ANSWER_HEAD_MAX, AnswerError, HostClients, parse_retry_after
from hub.delivery.leases import aware
from hub.delivery.webhook import WebhookDeliverer
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import deliveries
from tests.contract.test_webhook_http1 import Subscriber, post
from tests.e2e.conftest import SECRET
from tests.support import subscribe_webhook

COUNCIL = "E06000060"


def _answer(status: int, retry_after: str | None) -> bytes:
    extra = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    return f"HTTP/1.1 {status} X\r\n{extra}Content-Length: 0\r\n\r\n".encode()


@pytest.mark.parametrize(("status", "header", "asked"), [
    (429, "120", 120.0), (503, " 7 ", 7.0), (429, None, None), (429, "soon", None),
    (500, "120", None),  # Retry-After means nothing on a 500
    (301, "120", None),
])
async def test_the_answers_retry_after_is_read_on_429_and_503(status: int, header: str | None,
                                                              asked: float | None) -> None:
    sub = await Subscriber(answer=lambda n: _answer(status, header)).start()
    clients = HostClients(timeout=5.0, allowed_hosts=["127.0.0.1"])
    try:
        answer = await clients.post(f"http://127.0.0.1:{sub.port}/hook", content=b"{}", headers={})
        assert answer.status_code == status
        assert answer.retry_after == asked
    finally:
        await clients.aclose()
        await sub.stop()


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(b"Sun, 01 Mar 2026 12:01:30 GMT", now) == 90.0
    assert parse_retry_after(b"Sun, 01 Mar 2026 11:00:00 GMT", now) == 0.0  # past: at once
    assert parse_retry_after(b"99999999999999999999", now) == 1e9
    assert parse_retry_after(b"-5", now) is None


async def test_an_answer_head_that_never_ends_is_refused_not_read_until_the_deadline() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Pad: ")
        try:
            while True:  # one header value, written as fast as it is read, until the hub hangs up
                writer.write(b"a" * 16384)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        writer.close()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = HostClients(timeout=60.0, allowed_hosts=["127.0.0.1"])
    try:
        with pytest.raises(AnswerError):  # not TimeoutError: the head is dropped past its bound
            await post(clients, port)
    finally:
        await clients.aclose()
        server.close()
        await server.wait_closed()


async def test_many_short_headers_past_the_bound_are_refused_too() -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(ANSWER_HEAD_MAX // 8))
    sub = await Subscriber(answer=lambda n: b"HTTP/1.1 204 No Content\r\n" + many + b"\r\n").start()
    clients = HostClients(timeout=5.0, allowed_hosts=["127.0.0.1"])
    try:
        with pytest.raises(AnswerError):
            await post(clients, sub.port)
        sub.answer = lambda n: b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"
        assert await post(clients, sub.port) == 204  # a new connection, a clean start
    finally:
        await clients.aclose()
        await sub.stop()


async def _head_wait(store_hub, retry_after: str, cap: float) -> tuple[float, str]:  # noqa: ANN001
    """A council webhook answering 429 with `retry_after`: seconds until its head's next attempt, its error."""
    hub = store_hub.hub
    sub = await Subscriber(answer=lambda n: _answer(429, retry_after)).start()
    clients = HostClients(timeout=5.0, allowed_hosts=["127.0.0.1"])
    try:
        sid = await subscribe_webhook(store_hub, COUNCIL, f"http://127.0.0.1:{sub.port}/hooks/{COUNCIL}", SECRET)
        for c in detention_to_move_scenario(random.Random(7), "retry-after", date(2025, 1, 6)):
            r = await store_hub.http.post("/v1/register-changes", headers={"X-API-Key": store_hub.keys["trust"]},
                                          json=c)
            assert r.status_code == 202, r.text
        while await hub.dispatcher.run_once():
            pass
        deliverer = WebhookDeliverer(hub.engine, hub.protector, clients, 0.01, cap, 0, 5.0, timeout_seconds=2.0)
        assert await deliverer.run_once() == 1  # the head failed; the rest wait behind it
        before = datetime.now(UTC)
        async with hub.engine.connect() as conn:
            head = (await conn.execute(select(deliveries.c.next_attempt_at, deliveries.c.last_error)
                                       .where(deliveries.c.subscription_id == sid, deliveries.c.attempts > 0))).one()
            await conn.rollback()
        assert len(sub.requests) == 1
        return (aware(head.next_attempt_at) - before).total_seconds(), head.last_error
    finally:
        await clients.aclose()
        await sub.stop()


@pytest.mark.integration
async def test_a_429_with_retry_after_is_not_tried_again_before_it(store_hub) -> None:  # noqa: ANN001
    wait, error = await _head_wait(store_hub, "120", cap=300.0)
    assert error == "HTTP 429"
    assert 110 < wait <= 120  # the backoff alone (base 0.01 s) would have tried again at once


@pytest.mark.integration
async def test_a_retry_after_past_the_backoff_cap_waits_only_the_cap(store_hub) -> None:  # noqa: ANN001
    wait, _ = await _head_wait(store_hub, "86400", cap=30.0)
    assert 20 < wait <= 30
