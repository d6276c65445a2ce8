"""One contract for every bus backend (the Subscriber port of hub.bus.port).

Each backend is the whole path a message takes, from the register transaction
to a consumer group:

- `sql`:   publish into the SQL log (SQLite in tmp_path) -> SqlLog
- `kafka`: publish into the same SQL outbox -> KafkaRelay -> Kafka (the
           session's real broker, a 3-partition topic) -> KafkaLog

Contract: what a committed transaction published reaches a group, in order
per key; a rolled-back publish never does; a group resumes after its last
commit when a new consumer takes over; what was not committed is delivered
again (at least once), also on the next fetch of the same consumer; a commit
made inside a transaction counts only if that transaction commits; groups are
independent; lag counts what a group has not committed and reaches 0.
Random topics and groups per test, so nothing is shared or truncated.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.bus.port import BusMessage, Subscriber
from hub.bus.sql import SqlLog, publish
from hub.store.db import create_engine, create_schema

pytestmark = pytest.mark.integration

BACKENDS = ["sql", "kafka"]
PARTITIONS = 3
DEADLINE = 30.0  # seconds to wait for messages that must arrive


@dataclass
class BusUnderTest:
    backend: str
    engine: AsyncEngine  # the store: publishing joins its transactions (the outbox)
    topic: str
    make_subscriber: Callable[[], Subscriber]
    pump: Callable[[], Awaitable[None]]  # moves committed messages to where subscribers read
    opened: list[Subscriber] = field(default_factory=list)

    def subscriber(self) -> Subscriber:
        """A new consumer (a restarted process, as far as the bus can tell)."""
        sub = self.make_subscriber()
        self.opened.append(sub)
        return sub

    async def publish_committed(self, *msgs: BusMessage) -> None:
        async with self.engine.begin() as conn:
            for m in msgs:
                await publish(conn, m)
        await self.pump()

    async def publish_rolled_back(self, *msgs: BusMessage) -> None:
        async with self.engine.connect() as conn:
            tx = await conn.begin()
            for m in msgs:
                await publish(conn, m)
            await tx.rollback()
        await self.pump()

    def message(self, n: int, key: str = "person-1") -> BusMessage:
        return BusMessage(topic=self.topic, key=key, event_id=str(uuid.uuid4()), payload={"n": n, "key": key},
                          headers={"correlation_id": f"corr-{n}", "event_type": "entitlement-started"})


async def close(sub: Subscriber) -> None:
    closer = getattr(sub, "close", None)
    if closer is not None:
        await closer()


@pytest.fixture(params=BACKENDS)
async def bus(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BusUnderTest]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    await create_schema(engine)
    topic = f"contract.{uuid.uuid4().hex[:12]}"
    relay = None
    if request.param == "sql":
        under_test = BusUnderTest("sql", engine, topic, lambda: SqlLog(engine), _nothing)
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        from hub.bus.kafka import KafkaLog, KafkaRelay, ensure_topic

        assert await ensure_topic(bootstrap, topic, partitions=PARTITIONS)
        relay = KafkaRelay(engine, bootstrap)

        async def pump() -> None:
            while await relay.run_once():
                pass

        under_test = BusUnderTest("kafka", engine, topic, lambda: KafkaLog(bootstrap, fetch_timeout_ms=300), pump)
    try:
        yield under_test
    finally:
        for sub in under_test.opened:
            await close(sub)
        if relay is not None:
            await relay.close()
        await engine.dispose()


async def _nothing() -> None:
    return None


def new_group() -> str:
    return f"group-{uuid.uuid4().hex[:10]}"


async def consume(sub: Subscriber, group: str, topic: str, count: int, *, commit: bool = True) -> list[BusMessage]:
    """Fetch until `count` messages were handled, committing each (`offset + 1`) after it."""
    handled: list[BusMessage] = []
    deadline = time.monotonic() + DEADLINE
    while len(handled) < count:
        assert time.monotonic() < deadline, f"only {len(handled)} of {count} messages arrived"
        for m in await sub.fetch(group, topic, count - len(handled)):
            handled.append(m)
            if commit:
                await sub.commit(group, topic, m.offset + 1)
    return handled


async def nothing_more(sub: Subscriber, group: str, topic: str) -> list[BusMessage]:
    """What arrives when nothing should: a few fetches' worth."""
    extra: list[BusMessage] = []
    for _ in range(3):
        extra += await sub.fetch(group, topic, 100)
    return extra


def by_key(msgs: list[BusMessage]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for m in msgs:
        out.setdefault(m.key, []).append(m.payload["n"])
    return out


async def test_committed_messages_reach_a_group_in_order_per_key(bus: BusUnderTest) -> None:
    keys = ["person-a", "person-b", "person-c", "person-d"]
    sent = [bus.message(n, keys[n % len(keys)]) for n in range(24)]
    for i in range(0, len(sent), 6):  # several transactions, keys interleaved
        await bus.publish_committed(*sent[i:i + 6])
    sub = bus.subscriber()
    assert sub.capabilities.ordered_per_key and sub.capabilities.persistent
    got = await consume(sub, new_group(), bus.topic, len(sent))
    assert by_key(got) == by_key(sent)
    # What was published is what arrives: key, event id, payload and headers.
    as_sent = {m.event_id: (m.key, m.payload, m.headers) for m in sent}
    assert {m.event_id: (m.key, m.payload, m.headers) for m in got} == as_sent
    assert all(m.topic == bus.topic for m in got)


async def test_a_rolled_back_publish_is_never_delivered(bus: BusUnderTest) -> None:
    before, doomed, after = bus.message(1), bus.message(2), bus.message(3)
    await bus.publish_committed(before)
    await bus.publish_rolled_back(doomed)
    await bus.publish_committed(after)
    sub, group = bus.subscriber(), new_group()
    got = await consume(sub, group, bus.topic, 2)
    assert [m.event_id for m in got] == [before.event_id, after.event_id]
    assert await nothing_more(sub, group, bus.topic) == []


async def test_a_new_consumer_of_the_group_resumes_after_the_last_commit(bus: BusUnderTest) -> None:
    sent = [bus.message(n, key) for n in range(4) for key in ("person-a", "person-b")]
    await bus.publish_committed(*sent)
    group = new_group()
    first = bus.subscriber()
    handled = await consume(first, group, bus.topic, 3)
    await close(first)  # the process stops (cleanly) after three
    second = bus.subscriber()
    rest = await consume(second, group, bus.topic, len(sent) - 3)
    assert {m.event_id for m in handled} | {m.event_id for m in rest} == {m.event_id for m in sent}
    assert not {m.event_id for m in handled} & {m.event_id for m in rest}, "a committed message came back"
    assert by_key(handled + rest) == by_key(sent)
    assert await nothing_more(second, group, bus.topic) == []


async def test_an_uncommitted_message_is_delivered_again_after_a_restart(bus: BusUnderTest) -> None:
    one, two = bus.message(1), bus.message(2)
    await bus.publish_committed(one, two)
    group = new_group()
    first = bus.subscriber()
    got = await consume(first, group, bus.topic, 2, commit=False)
    assert [m.event_id for m in got] == [one.event_id, two.event_id]
    await first.commit(group, bus.topic, got[0].offset + 1)  # handled `one`; crashed while handling `two`
    await close(first)
    second = bus.subscriber()
    again = await consume(second, group, bus.topic, 1)
    assert [m.event_id for m in again] == [two.event_id]
    assert await nothing_more(second, group, bus.topic) == []


async def test_a_fetch_without_commit_returns_the_same_messages_again(bus: BusUnderTest) -> None:
    # A handler that failed half way through a batch sees the rest again (the dispatcher's retry).
    sent = [bus.message(n) for n in range(3)]
    await bus.publish_committed(*sent)
    sub, group = bus.subscriber(), new_group()
    batch = await consume(sub, group, bus.topic, 3, commit=False)
    await sub.commit(group, bus.topic, batch[0].offset + 1)
    again = await consume(sub, group, bus.topic, 2)
    assert [m.event_id for m in again] == [m.event_id for m in sent[1:]]
    assert await nothing_more(sub, group, bus.topic) == []


async def test_a_commit_counts_only_if_its_transaction_commits(bus: BusUnderTest) -> None:
    one, two = bus.message(1), bus.message(2)
    await bus.publish_committed(one, two)
    sub, group = bus.subscriber(), new_group()
    got = await consume(sub, group, bus.topic, 1, commit=False)
    assert [m.event_id for m in got] == [one.event_id]
    async with bus.engine.connect() as conn:  # the handler's work fails: its transaction rolls back
        tx = await conn.begin()
        await sub.commit(group, bus.topic, got[0].offset + 1, conn)
        await tx.rollback()
    retried = await consume(sub, group, bus.topic, 1, commit=False)
    assert [m.event_id for m in retried] == [one.event_id]
    async with bus.engine.begin() as conn:  # this time the work is durable
        await sub.commit(group, bus.topic, retried[0].offset + 1, conn)
    await close(sub)
    later = bus.subscriber()
    assert [m.event_id for m in await consume(later, group, bus.topic, 1)] == [two.event_id]


async def test_independent_groups_each_see_everything(bus: BusUnderTest) -> None:
    sent = [bus.message(n, f"person-{n % 3}") for n in range(9)]
    await bus.publish_committed(*sent)
    sub = bus.subscriber()
    for group in (new_group(), new_group()):
        got = await consume(sub, group, bus.topic, len(sent))
        assert by_key(got) == by_key(sent)
    # Another consumer with a third group, after the first two committed everything.
    other = bus.subscriber()
    assert len(await consume(other, new_group(), bus.topic, len(sent))) == len(sent)


async def test_lag_counts_what_the_group_has_not_committed_and_reaches_zero(bus: BusUnderTest) -> None:
    sent = [bus.message(n, f"person-{n % 2}") for n in range(5)]
    await bus.publish_committed(*sent)
    sub, group = bus.subscriber(), new_group()
    assert await sub.lag(group, bus.topic) == 5
    await consume(sub, group, bus.topic, 2)
    assert await sub.lag(group, bus.topic) == 3
    await consume(sub, group, bus.topic, 3)
    assert await sub.lag(group, bus.topic) == 0
    await bus.publish_committed(bus.message(99))
    assert await sub.lag(group, bus.topic) == 1
