"""The Kafka outbox relay against a real broker: an outage and a crash.

- Kafka unreachable when the relay starts: the register changes' events wait
  in the outbox (nothing is lost, the relay loop keeps going), and are relayed,
  in order, once Kafka can be reached.
- The relay crashes after Kafka acknowledged but before it marked the rows:
  the next relay sends the same events again (at least once), and a consumer
  that records its work under the unique (subscription_id, event_id) key, as
  the dispatcher does, ends with each event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.bus.kafka import KafkaLog, KafkaRelay, ensure_topic, run_relay
from hub.bus.port import BusMessage
from hub.bus.sql import publish
from hub.store.db import create_engine, create_schema, write_transaction
from hub.store.schema import deliveries, subscriptions

pytestmark = pytest.mark.integration


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    await create_schema(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = f"relay.{uuid.uuid4().hex[:12]}"
    await ensure_topic(kafka_bootstrap, name, partitions=3)
    return name


def events(topic: str, n: int, key: str = "person-1") -> list[BusMessage]:
    return [BusMessage(topic=topic, key=key, event_id=str(uuid.uuid4()), payload={"n": i},
                       headers={"correlation_id": f"corr-{i}", "event_type": "entitlement-started"})
            for i in range(n)]


async def publish_committed(engine: AsyncEngine, msgs: list[BusMessage]) -> None:
    async with engine.begin() as conn:
        for m in msgs:
            await publish(conn, m)


async def read_all(bootstrap: str, topic: str, count: int, group: str | None = None) -> list[BusMessage]:
    bus = KafkaLog(bootstrap, fetch_timeout_ms=300)
    group = group or f"reader-{uuid.uuid4().hex[:8]}"
    got: list[BusMessage] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < count:
            assert time.monotonic() < deadline, f"{len(got)} of {count} arrived"
            for m in await bus.fetch(group, topic, 100):
                got.append(m)
                await bus.commit(group, topic, m.offset + 1)
    finally:
        await bus.close()
    return got


class LoopbackProxy:
    """A TCP forwarder on a fixed loopback port, to play a Kafka that is down, then up.

    Only the bootstrap connection goes through it: the broker's metadata then
    names its own address, which the client uses from there on.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def wait_until(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_events_wait_in_the_outbox_while_kafka_is_unreachable_then_flow(
    outbox: AsyncEngine, kafka_bootstrap: str, topic: str,
) -> None:
    proxy = LoopbackProxy(int(kafka_bootstrap.rsplit(":", 1)[1]))  # not listening yet: Kafka is "down"
    relay = KafkaRelay(outbox, f"127.0.0.1:{proxy.port}", producer_options={"request_timeout_ms": 5000})
    stop = asyncio.Event()
    loop_task = asyncio.create_task(run_relay(relay, poll_seconds=0.05, stop=stop, max_backoff_seconds=0.3))
    try:
        sent = events(topic, 3, "person-a") + events(topic, 2, "person-b")
        await publish_committed(outbox, sent)
        await asyncio.sleep(1.5)  # several failed runs
        assert await relay.pending() == 5, "nothing may leave the outbox while Kafka is down"
        assert not loop_task.done(), "the relay loop must survive Kafka being down"

        await proxy.start()  # Kafka is back
        await wait_until(lambda: _none_pending(relay))
        got = await read_all(kafka_bootstrap, topic, len(sent))
        for key in ("person-a", "person-b"):
            assert [m.event_id for m in got if m.key == key] == [m.event_id for m in sent if m.key == key]
        assert {m.event_id: m.payload for m in got} == {m.event_id: m.payload for m in sent}
    finally:
        stop.set()
        await loop_task
        await relay.close()
        await proxy.stop()


async def _none_pending(relay: KafkaRelay) -> bool:
    return await relay.pending() == 0


async def test_a_relay_crash_before_marking_resends_and_the_consumer_deduplicates(
    outbox: AsyncEngine, kafka_bootstrap: str, topic: str,
) -> None:
    sent = events(topic, 4)
    await publish_committed(outbox, sent)

    crashing = KafkaRelay(outbox, kafka_bootstrap)

    async def crash(*_args: object) -> None:
        raise RuntimeError("relay process died after Kafka acknowledged")

    crashing._mark_relayed = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await crashing.run_once()
    await crashing.close()
    assert await crashing.pending() == 4  # Kafka has them, the outbox does not know

    relay = KafkaRelay(outbox, kafka_bootstrap)  # the restarted relay
    try:
        assert await relay.run_once() == 4
        assert await relay.pending() == 0
    finally:
        await relay.close()

    # Kafka now holds every event twice, in order: at least once.
    # A consumer recording its work under the unique (subscription_id, event_id)
    # key, in one transaction with its commit, as the dispatcher does:
    subscription_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    async with outbox.begin() as conn:
        await conn.execute(subscriptions.insert().values(
            subscription_id=subscription_id, org_code="E06000060", client_id="c", channel="webhook",
            url="http://127.0.0.1:9/hook", secret=b"x", event_types=None, active=True, created_at=now,
        ))
    bus, group = KafkaLog(kafka_bootstrap, fetch_timeout_ms=300), f"dispatcher-{uuid.uuid4().hex[:8]}"
    received: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < 2 * len(sent):
            assert time.monotonic() < deadline, f"{len(received)} of {2 * len(sent)} arrived"
            for m in await bus.fetch(group, topic, 100):
                received.append(m.event_id)
                async with outbox.begin() as conn:
                    exists = (await conn.execute(select(deliveries.c.delivery_id).where(
                        deliveries.c.subscription_id == subscription_id, deliveries.c.event_id == m.event_id,
                    ))).first()
                    if not exists:
                        await conn.execute(deliveries.insert().values(
                            delivery_id=str(uuid.uuid4()), subscription_id=subscription_id, event_id=m.event_id,
                            message_id=str(uuid.uuid4()), event_type="entitlement-started", status="pending", attempts=0, next_attempt_at=now, correlation_id="c",
                            created_at=now,
                        ))
                    await bus.commit(group, topic, m.offset + 1, conn)
        assert received == [m.event_id for m in sent] * 2
        assert await bus.lag(group, topic) == 0
    finally:
        await bus.close()
    async with outbox.connect() as conn:
        rows = (await conn.execute(
            select(deliveries.c.event_id, func.count()).group_by(deliveries.c.event_id)
        )).all()
    assert sorted(rows) == sorted((m.event_id, 1) for m in sent)


async def test_a_row_kafka_refuses_is_dead_lettered_and_does_not_hold_up_the_person(
        outbox: AsyncEngine, kafka_bootstrap: str, topic: str) -> None:
    """Too large for the producer's max request size: refused for good (non-retriable). The person's later
    event still reaches Kafka; the refused one waits in the dead letters with the reason."""
    from hub.store.schema import bus_messages, dead_letters

    msgs = events(topic, 3)
    msgs[1] = BusMessage(topic=topic, key="person-1", event_id=msgs[1].event_id, payload={"blob": "x" * 20_000},
                         headers=msgs[1].headers)
    await publish_committed(outbox, msgs)
    relay = KafkaRelay(outbox, kafka_bootstrap, producer_options={"max_request_size": 8_000})
    try:
        assert await relay.run_once() == 2
    finally:
        await relay.close()
    got = await read_all(kafka_bootstrap, topic, 2)
    assert [m.event_id for m in got] == [msgs[0].event_id, msgs[2].event_id]
    async with outbox.connect() as conn:
        [dl] = (await conn.execute(select(dead_letters))).all()
        waiting = (await conn.execute(select(func.count()).select_from(bus_messages)
                                      .where(bus_messages.c.relayed_at.is_(None)))).scalar_one()
    assert (dl.event_id, dl.handler, waiting) == (msgs[1].event_id, "kafka-relay", 0)
    assert "MessageSizeTooLargeError" in dl.reason


async def test_rows_this_process_commits_are_relayed_at_once_not_at_the_next_poll(
    outbox: AsyncEngine, kafka_bootstrap: str, topic: str,
) -> None:
    """The relay polls for other processes' rows; this process's commits wake it
    (hub.bus.sql.publish_signal), so a change reaches Kafka without waiting a poll."""
    relay = KafkaRelay(outbox, kafka_bootstrap)
    await relay.start()
    stop = asyncio.Event()
    loop_task = asyncio.create_task(run_relay(relay, poll_seconds=30.0, stop=stop))
    try:
        await asyncio.sleep(0.5)  # the first run found nothing: the loop waits its poll
        for round_ in range(3):
            started = time.monotonic()
            async with write_transaction(outbox) as conn:  # as the hub's writers commit (after-commit hooks)
                for m in events(topic, 2, f"person-{round_}"):
                    await publish(conn, m)
            await wait_until(lambda: _none_pending(relay), timeout=5.0)
            assert time.monotonic() - started < 5.0
        got = await read_all(kafka_bootstrap, topic, 6)
        assert len(got) == 6
    finally:
        stop.set()
        await loop_task
        await relay.close()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_the_relay_sends_each_payload_as_the_json_it_was_stored_as(
        store: str, outbox: AsyncEngine, pg_engine: AsyncEngine, kafka_bootstrap: str, topic: str) -> None:
    """The relay sends the outbox's stored JSON text as the record's value: the
    very bytes it sent when it decoded each payload and encoded it again."""
    import orjson
    from aiokafka import AIOKafkaConsumer

    engine = outbox if store == "sqlite" else pg_engine
    if store == "postgresql":
        await create_schema(engine)
    payloads = [{"n": i, "text": "Ysbyty Gwynedd – ŵ", "nested": {"list": [1, 2.5, None, True]}, "z": "last"}
                for i in range(5)]
    msgs = [BusMessage(topic=topic, key=f"person-{i % 2}", event_id=str(uuid.uuid4()), payload=p,
                       headers={"correlation_id": f"c-{i}", "event_type": "entitlement-started"})
            for i, p in enumerate(payloads)]
    await publish_committed(engine, msgs)
    relay = KafkaRelay(engine, kafka_bootstrap)
    try:
        assert await relay.run_once() == len(msgs)
    finally:
        await relay.close()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        values: dict[str, bytes] = {}
        deadline = time.monotonic() + 30
        while len(values) < len(msgs) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    values[dict(r.headers)["event_id"].decode()] = r.value
    finally:
        await consumer.stop()
    assert values == {m.event_id: orjson.dumps(m.payload) for m in msgs}
