"""The embedded log (hub.bus.sql.SqlLog) behaves alike on SQLite and PostgreSQL.

The Kafka-shaped contract: offsets, consumer groups, ack = commit, never
backwards; plus what only a log in the store can give, the outbox: a message
published in a transaction exists exactly when that transaction commits.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.bus.port import BusMessage
from hub.bus.sql import SqlLog, publish
from hub.store.schema import consumer_offsets

pytestmark = pytest.mark.integration

TOPIC = "s117.contract"


def message(n: int | str, topic: str = TOPIC, key: str = "person-1") -> BusMessage:
    return BusMessage(topic=topic, key=key, event_id=str(uuid.uuid4()), payload={"n": n},
                      headers={"correlation_id": f"c-{n}"})


async def publish_committed(engine: AsyncEngine, *msgs: BusMessage) -> None:
    async with engine.begin() as conn:
        for m in msgs:
            await publish(conn, m)


async def drain(log: SqlLog, group: str = "g", topic: str = TOPIC) -> list:
    """Consume everything visible now, committing after each message."""
    seen = []
    while batch := await log.fetch(group, topic, 100):
        for m in batch:
            seen.append(m.payload["n"])
            await log.commit(group, topic, m.offset + 1)
    return seen


async def committed_offset(engine: AsyncEngine, group: str, topic: str = TOPIC) -> int | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(consumer_offsets.c.next_offset).where(
            consumer_offsets.c.group_id == group, consumer_offsets.c.topic == topic))).first()
        await conn.rollback()
    return None if row is None else int(row[0])


async def test_a_message_exists_only_once_its_transaction_commits(engine):
    log = SqlLog(engine)
    conn = await engine.connect()
    tx = await conn.begin()
    await publish(conn, message("held"))
    # A consumer looking meanwhile sees nothing (on SQLite it waits for the writer).
    peek = asyncio.create_task(log.fetch("g", TOPIC, 10))
    await asyncio.sleep(0.3)
    seen_before_commit = peek.result() if peek.done() else None
    await tx.commit()
    await conn.close()
    late_peek = await peek
    assert seen_before_commit in (None, [])
    assert [m.payload["n"] for m in late_peek] in ([], ["held"])
    assert [m.payload["n"] for m in await log.fetch("g", TOPIC, 10)] == ["held"]


async def test_a_rolled_back_message_vanishes(engine):
    log = SqlLog(engine)
    doomed = message("doomed")
    async with engine.connect() as conn:
        async with conn.begin() as tx:
            await publish(conn, doomed)
            await tx.rollback()
    assert await log.fetch("g", TOPIC, 10) == []
    assert await log.lag("g", TOPIC) == 0
    # Nothing of it is left behind: even its event id is free again.
    await publish_committed(engine, doomed)
    assert [m.event_id for m in await log.fetch("g", TOPIC, 10)] == [doomed.event_id]


async def test_fetch_is_in_offset_order_from_the_committed_offset(engine):
    log = SqlLog(engine)
    await publish_committed(engine, *(message(i) for i in range(5)))
    await publish_committed(engine, message("other", topic="s117.other"))
    await publish_committed(engine, *(message(i) for i in range(5, 8)))
    first = await log.fetch("g", TOPIC, 100)
    assert [m.payload["n"] for m in first] == list(range(8))
    assert [m.offset for m in first] == sorted(m.offset for m in first)
    assert len({m.offset for m in first}) == 8
    assert all(m.topic == TOPIC and m.key == "person-1" and m.headers["correlation_id"] == f"c-{m.payload['n']}"
               for m in first)
    # fetch alone is not an ack: the same messages come again.
    assert [m.offset for m in await log.fetch("g", TOPIC, 100)] == [m.offset for m in first]
    assert [m.payload["n"] for m in await log.fetch("g", TOPIC, 3)] == [0, 1, 2]

    await log.commit("g", TOPIC, first[2].offset + 1)
    assert [m.payload["n"] for m in await log.fetch("g", TOPIC, 100)] == list(range(3, 8))
    assert await committed_offset(engine, "g") == first[2].offset + 1


async def test_fetch_with_payloads_only_for_some_event_types(engine):
    """A consumer that reads most events only to move its offset asks for
    the payloads of some event types: every message comes, in order, with its
    key, headers and offset; only those carry their payload."""
    log = SqlLog(engine)
    kinds = ["a", "b", "a", "c", "b"]
    await publish_committed(engine, *(BusMessage(topic=TOPIC, key=f"p{i}", event_id=str(uuid.uuid4()),
                                                 payload={"n": i}, headers={"event_type": k})
                                      for i, k in enumerate(kinds)))
    whole = await log.fetch("g", TOPIC, 100)
    some = await log.fetch("g", TOPIC, 100, payload_for={"b", "c"})
    assert [(m.offset, m.key, m.event_id, m.headers) for m in some] == \
        [(m.offset, m.key, m.event_id, m.headers) for m in whole]
    assert [m.payload for m in some] == [{}, {"n": 1}, {}, {"n": 3}, {"n": 4}]
    assert [m.payload for m in await log.fetch("g", TOPIC, 2, payload_for=())] == [{}, {}]


async def test_a_committed_offset_never_moves_backwards(engine):
    log = SqlLog(engine)
    await publish_committed(engine, *(message(i) for i in range(6)))
    msgs = await log.fetch("g", TOPIC, 100)
    await log.commit("g", TOPIC, msgs[4].offset + 1)
    await log.commit("g", TOPIC, msgs[1].offset + 1)  # a late ack of an earlier message
    assert [m.payload["n"] for m in await log.fetch("g", TOPIC, 100)] == [5]
    assert await committed_offset(engine, "g") == msgs[4].offset + 1


async def test_concurrent_commits_keep_the_highest_offset(engine):
    """Several consumers of one group acking at once (two hub processes on
    PostgreSQL): no error on the group's first commit, and the result is the
    highest offset whatever the order."""
    log = SqlLog(engine)
    await publish_committed(engine, *(message(i) for i in range(20)))
    msgs = await log.fetch("g", TOPIC, 100)
    acks = [m.offset + 1 for m in msgs]
    random.Random(7).shuffle(acks)
    await asyncio.gather(*(log.commit("g", TOPIC, n) for n in acks))
    assert await committed_offset(engine, "g") == msgs[-1].offset + 1
    assert await log.lag("g", TOPIC) == 0


async def test_lag_counts_what_is_not_yet_committed(engine):
    log = SqlLog(engine)
    assert await log.lag("g", TOPIC) == 0
    await publish_committed(engine, *(message(i) for i in range(4)))
    await publish_committed(engine, message("x", topic="s117.other"))
    assert await log.lag("g", TOPIC) == 4
    msgs = await log.fetch("g", TOPIC, 100)
    await log.commit("g", TOPIC, msgs[0].offset + 1)
    assert await log.lag("g", TOPIC) == 3
    await log.commit("g", TOPIC, msgs[-1].offset + 1)
    assert await log.lag("g", TOPIC) == 0
    await publish_committed(engine, message(4))
    assert await log.lag("g", TOPIC) == 1


async def test_consumer_groups_are_independent(engine):
    log = SqlLog(engine)
    await publish_committed(engine, *(message(i) for i in range(3)))
    assert await drain(log, "dispatcher") == [0, 1, 2]
    assert await log.lag("dispatcher", TOPIC) == 0
    assert await log.lag("relay", TOPIC) == 3
    assert [m.payload["n"] for m in await log.fetch("relay", TOPIC, 100)] == [0, 1, 2]
    await publish_committed(engine, message(3))
    assert await drain(log, "relay") == [0, 1, 2, 3]
    assert await drain(log, "dispatcher") == [3]


async def test_rewind_replays_from_an_earlier_offset(engine):
    log = SqlLog(engine)
    await publish_committed(engine, *(message(i) for i in range(3)))
    msgs = await log.fetch("g", TOPIC, 100)
    assert await drain(log) == [0, 1, 2]
    await log.rewind("g", TOPIC, msgs[1].offset)
    assert await drain(log) == [1, 2]


async def test_event_ids_are_unique(engine):
    log = SqlLog(engine)
    m = message("once")
    await publish_committed(engine, m)
    with pytest.raises(IntegrityError):
        await publish_committed(engine, message("again").__class__(
            topic=TOPIC, key="person-2", event_id=m.event_id, payload={"n": "again"}))
    assert [x.payload["n"] for x in await log.fetch("g", TOPIC, 10)] == ["once"]


async def test_a_publisher_that_commits_late_is_not_skipped(engine):
    """Offsets are taken at insert but become visible at commit. If a later
    transaction could commit first, a consumer would ack past the earlier
    offset before it was visible and never see it. The log must not let that
    happen: every committed message is consumed, once."""
    log = SqlLog(engine)
    early_conn = await engine.connect()
    early_tx = await early_conn.begin()
    await publish(early_conn, message("early"))

    async def late() -> None:
        async with engine.begin() as conn:
            await publish(conn, message("late"))

    late_task = asyncio.create_task(late())
    await asyncio.sleep(0.3)  # time for the later transaction to commit, if the log allows it
    consumer = asyncio.create_task(drain(log))
    await asyncio.sleep(0.3)  # and for a consumer to ack past the early offset
    await early_tx.commit()
    await early_conn.close()
    await late_task
    seen = await consumer
    seen += await drain(log)
    assert sorted(seen) == ["early", "late"]


async def test_messages_passed_over_are_not_read_again_and_their_offset_is_written_within_its_age(engine):
    """`pass_over`: a consumer that needed nothing from a batch moves on
    without a write transaction of its own; the offset is written by
    `commit_passed` once old enough, or with the group's next commit."""
    log = SqlLog(engine)
    await publish_committed(engine, *(message(i) for i in range(5)))
    first = await log.fetch("passer", TOPIC, 3)
    assert [m.payload["n"] for m in first] == [0, 1, 2]
    log.pass_over("passer", TOPIC, first[-1].offset + 1)
    assert await committed_offset(engine, "passer") is None  # nothing written yet
    assert [m.payload["n"] for m in await log.fetch("passer", TOPIC, 10)] == [3, 4]  # not 0, 1, 2 again
    assert await log.commit_passed("passer", TOPIC, older_than=60) is False  # too young: still unwritten
    assert await committed_offset(engine, "passer") is None
    assert await log.commit_passed("passer", TOPIC, older_than=0) is True
    assert await committed_offset(engine, "passer") == first[-1].offset + 1
    assert await log.lag("passer", TOPIC) == 2

    # Passed over again, then a batch that needed something is committed: that commit covers both.
    rest = await log.fetch("passer", TOPIC, 1)
    log.pass_over("passer", TOPIC, rest[-1].offset + 1)
    last = await log.fetch("passer", TOPIC, 10)
    assert [m.payload["n"] for m in last] == [4]
    await log.commit("passer", TOPIC, last[-1].offset + 1)
    assert await committed_offset(engine, "passer") == last[-1].offset + 1
    assert await log.fetch("passer", TOPIC, 10) == []
    assert await log.commit_passed("passer", TOPIC, older_than=0) is False  # nothing left to write


async def test_a_rewind_or_another_instance_moving_the_offset_drops_what_was_passed_over(engine):
    log, operator = SqlLog(engine), SqlLog(engine)
    await publish_committed(engine, *(message(i) for i in range(4)))
    batch = await log.fetch("rewound", TOPIC, 10)
    await log.commit("rewound", TOPIC, batch[1].offset + 1)  # 0 and 1 handled
    ahead = await log.fetch("rewound", TOPIC, 10)
    log.pass_over("rewound", TOPIC, ahead[-1].offset + 1)  # 2 and 3 needed nothing
    await operator.rewind("rewound", TOPIC, batch[0].offset)  # an operator replays from 0
    assert [m.payload["n"] for m in await log.fetch("rewound", TOPIC, 10)] == [0, 1, 2, 3]
    assert await log.commit_passed("rewound", TOPIC, older_than=0) is False  # nothing passed any more
    assert await committed_offset(engine, "rewound") == batch[0].offset

    # Passed over, then the offset moved by another instance before it was written: not written over it.
    again = await log.fetch("rewound", TOPIC, 10)
    log.pass_over("rewound", TOPIC, again[1].offset + 1)
    await operator.commit("rewound", TOPIC, again[0].offset + 1)
    assert await log.commit_passed("rewound", TOPIC, older_than=0) is False
    assert await committed_offset(engine, "rewound") == again[0].offset + 1
    assert [m.payload["n"] for m in await log.fetch("rewound", TOPIC, 10)] == [1, 2, 3]
