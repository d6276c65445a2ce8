"""Pipelined webhook POSTs (a subscription's `pipeline` > 1): the hub's
client writes a window of requests at once on one kept-alive connection and
reads the answers in order; the deliverer records each outcome. With the
default (1) a subscriber receives each message only after the one before it
was accepted; pipelined, a failed message may be overtaken by those sent
behind it, and every message still arrives (at least once)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from hub.crypto import DataProtector
from hub.delivery.http1 import AnswerError, HostClients
from hub.delivery.queue import create_counter, queue_delivery
from hub.delivery.webhook import EVENT_NUMBER_HEADER, WebhookDeliverer
from hub.store.db import create_engine, create_schema
from hub.store.schema import deliveries, subscriptions
from tests.support import read_http_request


class Receiver:
    """A local HTTP/1.1 server: records each request's event number (or body)
    in arrival order and answers with `answer(n, seen)` (a status, or None:
    close the connection); a connection's first `hold` requests are read
    before any is answered (so they can only have come pipelined)."""

    def __init__(self, answer=lambda n, seen: 204, hold: int = 1, hang_after: int | None = None,  # noqa: ANN001
                 close_each: bool = False) -> None:
        self.answer, self.hold, self.hang_after, self.close_each = answer, hold, hang_after, close_each
        self.seen: list[str] = []
        self.accepted: list[str] = []
        self.connections = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _read(self, reader: asyncio.StreamReader) -> str:
        headers, body = await read_http_request(reader)
        return headers.get(EVENT_NUMBER_HEADER.lower()) or body.decode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            hold = self.hold  # the connection's first requests: answered only once all are in
            while True:
                batch = [await self._read(reader)]
                while len(batch) < hold:
                    batch.append(await self._read(reader))
                hold = 1
                for n in batch:
                    self.seen.append(n)
                    if self.hang_after is not None and len(self.seen) > self.hang_after:
                        await asyncio.sleep(30)
                    status = self.answer(n, self.seen)
                    if status is None:
                        writer.close()
                        return
                    if 200 <= status < 300:
                        self.accepted.append(n)
                    if self.close_each:  # no keep-alive: one request a connection, the rest left unread
                        writer.write(b"HTTP/1.1 %d X\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" % status)
                        await writer.drain()
                        return
                    writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % status)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self.server.close()


async def test_a_window_is_written_at_once_and_its_answers_read_in_order() -> None:
    receiver = Receiver(answer=lambda n, seen: 500 if n == "b" else 204, hold=3)  # answers only once all 3 are in
    port = await receiver.start()
    client = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    url = f"http://127.0.0.1:{port}/hook"
    answers = await asyncio.wait_for(client.post_window(url, [(x.encode(), {}) for x in "abc"], 5.0), 5)
    assert answers == [204, 500, 204]
    assert receiver.seen == ["a", "b", "c"]
    # The connection is kept and used again.
    assert await client.post_window(url, [(x.encode(), {}) for x in "def"], 5.0) == [204, 204, 204]
    assert receiver.connections == 1
    await client.aclose()
    receiver.close()


async def test_a_connection_closed_mid_window_fails_the_rest_and_a_deadline_the_unanswered() -> None:
    closing = Receiver(answer=lambda n, seen: None if n == "b" else 204)
    port = await closing.start()
    client = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    answers = await client.post_window(f"http://127.0.0.1:{port}/hook", [(x.encode(), {}) for x in "abc"], 5.0)
    assert answers[0] == 204 and all(isinstance(a, AnswerError) for a in answers[1:])
    closing.close()

    hanging = Receiver(hang_after=1)  # answers the first, then never
    port = await hanging.start()
    answers = await client.post_window(f"http://127.0.0.1:{port}/hook", [(x.encode(), {}) for x in "abc"], 0.3)
    assert answers[0] == 204 and all(isinstance(a, TimeoutError) for a in answers[1:])
    await client.aclose()
    hanging.close()


async def test_an_answer_too_long_to_read_stands_for_its_own_request_only() -> None:
    """The first answer's body is longer than the client reads: its status
    stands, the connection is dropped, and the requests behind it have no
    outcome (left to be sent again), never that status."""
    from hub.delivery.http1 import ANSWER_READ_MAX

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (ANSWER_READ_MAX * 4)
                     + b"x" * (ANSWER_READ_MAX * 2))
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    answers = await client.post_window(f"http://127.0.0.1:{port}/hook", [(b"a", {}), (b"b", {})], 5.0)
    assert answers == [200]
    await client.aclose()
    server.close()


async def _register(tmp_path, port: int, pipeline: int, messages: int,  # noqa: ANN001, ANN202
                    correlation_id=lambda i: "c"):  # noqa: ANN001
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_schema(engine)
    protector = DataProtector(Fernet.generate_key())
    sid = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(subscriptions.insert().values(
            subscription_id=sid, org_code="E06000060", client_id="t", channel="webhook",
            url=f"http://127.0.0.1:{port}/hook", secret=protector.encrypt(b"s" * 32), active=True,
            created_at=datetime.now(UTC), pipeline=pipeline))
        await create_counter(conn, sid)
        for i in range(messages):
            eid = str(uuid.uuid4())
            await queue_delivery(conn, subscription_id=sid, event_id=eid, message_id=eid,
                                 event_type="s117-entitlement-started", payload=protector.encrypt(b"{}"),
                                 correlation_id=correlation_id(i))
    return engine, protector


async def _deliver_all(engine, protector, messages: int) -> list:  # noqa: ANN001
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    deliverer = WebhookDeliverer(engine, protector, client, 0.01, 0.02, 0, 5.0, timeout_seconds=2.0)
    stop = asyncio.Event()
    worker = asyncio.create_task(deliverer.serve(0.02, stop))
    try:
        async with asyncio.timeout(20):
            while True:
                async with engine.connect() as conn:
                    rows = (await conn.execute(select(deliveries.c.event_number, deliveries.c.status,
                                                      deliveries.c.attempts))).all()
                if sum(r.status == "delivered" for r in rows) == messages:
                    return rows
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await worker
        await client.aclose()


@pytest.mark.parametrize("pipeline", [1, 4])
async def test_every_message_arrives_and_only_a_pipelined_subscription_sees_a_failed_one_overtaken(
        tmp_path, pipeline: int) -> None:  # noqa: ANN001
    failed_once: set[str] = set()

    def answer(n: str, seen: list[str]) -> int:
        if n == "3" and n not in failed_once:  # event number 3 fails the first time
            failed_once.add(n)
            return 503
        return 204

    receiver = Receiver(answer=answer, hold=min(pipeline, 4))
    port = await receiver.start()
    engine, protector = await _register(tmp_path, port, pipeline, 10)
    rows = await _deliver_all(engine, protector, 10)
    receiver.close()
    await engine.dispose()
    numbers = [str(i) for i in range(1, 11)]
    assert sorted(receiver.accepted, key=int) == numbers  # every message accepted once
    assert {r.event_number: r.attempts for r in rows}[3] == 2  # the failed one was retried
    if pipeline == 1:
        assert receiver.accepted == numbers  # strictly in order: nothing sent while 3 waited
        assert receiver.seen == ["1", "2", "3", *numbers[2:]]
    else:
        # 4 was in the same window as 3 and was taken; 5 onwards waited for 3.
        assert receiver.accepted == ["1", "2", "4", "3", *numbers[4:]]
        assert receiver.seen[:4] == ["1", "2", "3", "4"]


async def test_a_subscription_asks_for_pipelining_and_bad_values_are_refused_by_name(app_hub) -> None:  # noqa: ANN001
    h = {"X-API-Key": app_hub.keys["E06000060"]}
    url = "http://127.0.0.1:9199/hook"
    r = await app_hub.http.post("/v1/subscriptions", headers=h, json={"url": url, "secret": "s" * 32})
    assert r.status_code == 201 and r.json()["pipeline"] == 1  # the default: one at a time
    r = await app_hub.http.post("/v1/subscriptions", headers=h, json={"url": url, "secret": "s" * 32, "pipeline": 8})
    assert r.status_code == 201 and r.json()["pipeline"] == 8
    listed = {s["subscription_id"]: s for s in (await app_hub.http.get("/v1/subscriptions", headers=h)).json()["items"]}
    assert listed[r.json()["subscription_id"]]["pipeline"] == 8
    for body, field in (({"url": url, "pipeline": 0}, "pipeline"), ({"url": url, "pipeline": 17}, "pipeline"),
                        ({"channel": "feed", "pipeline": 2}, None)):
        r = await app_hub.http.post("/v1/subscriptions", headers=h, json=body)
        assert r.status_code == 422, body
        assert "pipeline" in r.text  # the field named, whichever check refused it


async def test_a_subscriber_that_closes_after_each_answer_loses_nothing_and_fails_nothing(tmp_path) -> None:  # noqa: ANN001
    """Pipelined to a server without keep-alive: each answer says
    `Connection: close`, so the requests written behind it were not taken.
    They are given back (no attempt counted, no backoff) and sent again on a
    new connection: every message once, in order."""
    receiver = Receiver(close_each=True)
    port = await receiver.start()
    engine, protector = await _register(tmp_path, port, 4, 6)
    rows = await _deliver_all(engine, protector, 6)
    receiver.close()
    await engine.dispose()
    assert receiver.accepted == [str(i) for i in range(1, 7)]
    assert all(r.attempts == 1 for r in rows)  # none failed


async def test_a_refused_target_is_each_request_s_outcome_not_an_exception() -> None:
    """A pipelined window to an address the hub must not reach (no allow list:
    loopback and private ranges refused) comes back as each request's
    outcome, so the deliverer records a failure rather than losing its task."""
    from hub.delivery.targets import WebhookTargetRefused

    client = HostClients(5.0)
    answers = await client.post_window("http://127.0.0.1:9/hook", [(b"a", {}), (b"b", {})], 5.0)
    assert len(answers) == 2 and all(isinstance(a, WebhookTargetRefused) for a in answers)
    answers = await client.post_window("ftp://example.org/hook", [(b"a", {})], 5.0)
    assert isinstance(answers[0], WebhookTargetRefused)
    await client.aclose()


@pytest.mark.parametrize("pipeline", [1, 4])
async def test_deliveries_recorded_together_share_one_log_line_naming_each(tmp_path, pipeline: int) -> None:  # noqa: ANN001
    """The deliveries recorded delivered in one turn of the event loop (here a
    batch of six, claimed and recorded at once) are reported by one
    "webhook delivered" line whose parallel lists name each one: its delivery
    id, event id, correlation id, recipient and event number. A search for a
    correlation id finds its delivery."""
    from structlog.testing import capture_logs

    from hub.observability.logging import ALLOWED_KEYS

    receiver = Receiver()
    port = await receiver.start()
    engine, protector = await _register(tmp_path, port, pipeline, 6, correlation_id=lambda i: f"corr-{i}")
    with capture_logs() as logs:
        await _deliver_all(engine, protector, 6)
        await asyncio.sleep(0)  # the line is written at the end of the turn that recorded them
    async with engine.connect() as conn:
        queued = (await conn.execute(select(deliveries.c.delivery_id, deliveries.c.event_id,
                                            deliveries.c.correlation_id, deliveries.c.event_number)
                                     .order_by(deliveries.c.event_number))).all()
    receiver.close()
    await engine.dispose()
    lines = [line for line in logs if line["event"] == "webhook delivered"]
    assert len(lines) == 1 and lines[0]["count"] == 6
    line = lines[0]
    assert set(line) - {"log_level"} <= ALLOWED_KEYS
    assert list(zip(line["delivery_ids"], line["event_ids"], line["correlation_ids"], line["event_numbers"],
                    strict=True)) == [tuple(r) for r in queued]
    assert line["recipients"] == ["E06000060"] * 6 and line["attempts"] == [1] * 6
    assert line["url_hosts"] == ["127.0.0.1"] * 6


def test_a_queued_delivery_row_is_inserted_whole_its_message_apart() -> None:
    """`insert_deliveries` names the columns it writes (built once, on the
    store's driver path): every key of a `delivery_row` but its message is
    one of them, so nothing a row carries is left out of `deliveries`."""
    from hub.delivery import queue

    row = queue.delivery_row(subscription_id="s", event_id="e", message_id="m", event_type="t", payload=b"p",
                             correlation_id="c", event_number=1, now=datetime.now(UTC))
    assert set(row) - {"payload"} == set(queue._QUEUED)


@pytest.mark.parametrize("pipeline", [1, 4])
async def test_outcomes_the_store_cannot_take_are_held_not_sent_again(tmp_path, monkeypatch, pipeline: int) -> None:  # noqa: ANN001
    """The subscriber took the messages, then the store failed as the deliverer recorded it (its disk
    full or failing: tests/e2e/test_store_faults.py): the outcomes are held and recorded once the store
    takes writes again. Before, they were dropped with the error, the lease ran out, and the subscriber
    was sent the same messages again."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from hub.delivery import leases

    real, failures = leases.record_batch, []

    async def failing(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if len(failures) < 3:  # the disk fails three times in a row, then takes writes again
            failures.append(1)
            raise OperationalError("UPDATE deliveries ...", {}, sqlite3.OperationalError("disk I/O error"))
        return await real(*args, **kwargs)

    monkeypatch.setattr(leases, "record_batch", failing)
    receiver = Receiver(hold=min(pipeline, 4))
    port = await receiver.start()
    engine, protector = await _register(tmp_path, port, pipeline, 6)
    rows = await _deliver_all(engine, protector, 6)
    receiver.close()
    await engine.dispose()
    assert len(failures) == 3
    assert sorted(receiver.seen, key=int) == [str(i) for i in range(1, 7)]  # each sent once: none again
    assert all(r.status == "delivered" and r.attempts == 1 for r in rows)


async def test_an_error_not_of_the_store_is_not_held(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Only a store fault is waited out: a fault of the hub's own ends the batch as before (the delivery
    task's error, logged; the lease runs out and it is sent again), never tried for ever."""
    from hub.delivery import leases

    async def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise ValueError("a bug")

    monkeypatch.setattr(leases, "record_batch", broken)
    receiver = Receiver()
    port = await receiver.start()
    engine, protector = await _register(tmp_path, port, 1, 1)
    client = HostClients(2.0, allowed_hosts=["127.0.0.1"])
    deliverer = WebhookDeliverer(engine, protector, client, 0.01, 0.02, 0, 5.0, timeout_seconds=2.0)
    async with engine.connect() as conn:
        sid = (await conn.execute(select(subscriptions.c.subscription_id))).scalar_one()
    with pytest.raises(ValueError):
        await asyncio.wait_for(deliverer._drain(sid, None), 5)
    await client.aclose()
    receiver.close()
    await engine.dispose()
