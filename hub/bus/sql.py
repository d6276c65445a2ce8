"""The embedded durable log: messages in a SQL table, offsets per consumer group.

Publishing takes the caller's connection, so the message is written in the
same transaction as the register change: the log is the outbox. A consumer
commits `offset + 1` only after its own work is durable, ideally in the same
transaction as that work (pass `conn`), which makes handling exactly-once in
effect.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from datetime import UTC, datetime
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import BigInteger, bindparam, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.bus.port import BusMessage, Capabilities
from hub.store.db import (InList, Prepared, after_commit_hook, execute_prepared, insert_or_merge, snapshot,
                          write_transaction)
from hub.store.schema import bus_messages, consumer_offsets


def _topic_lock_key(topic: str) -> int:
    # A stable signed 64-bit key per topic for pg_advisory_xact_lock.
    return int.from_bytes(hashlib.sha256(b"s117.bus/" + topic.encode()).digest()[:8], "big", signed=True)


_TOPIC_LOCKS = "s117_topic_locks"  # Connection.info: (the transaction or savepoint, the topics it locked)


async def lock_topic(conn: AsyncConnection, topic: str) -> None:
    """PostgreSQL: hold the topic's publish lock until commit (see `publish`);
    a no-op on SQLite, whose BEGIN IMMEDIATE already makes one writer.
    Taken once per transaction: an ingest batch takes it first, and each of
    its changes' events then publishes without another round trip. Inside a
    savepoint it is taken again (a rollback to the savepoint releases a lock
    taken after it)."""
    if conn.dialect.name != "postgresql":
        return
    sync = getattr(conn, "sync_connection", None)
    tx = (sync.get_nested_transaction() or sync.get_transaction()) if sync is not None else None
    held = sync.info.get(_TOPIC_LOCKS) if tx is not None else None
    if held is not None and held[0] is tx and topic in held[1]:
        return
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _topic_lock_key(topic)})
    if tx is not None:
        if held is not None and held[0] is tx:
            held[1].add(topic)
        else:
            sync.info[_TOPIC_LOCKS] = (tx, {topic})


class _Told:
    """Objects held weakly, to be told of each commit that published: a dict
    of weak references rather than a `WeakSet`, whose iteration (a generator
    guarding against removals, its `len`) cost more than the telling. With
    the workers apart the back process tells its readers at every datagram
    from the front: a change a datagram at one client (bench/JOURNAL.md,
    "Sixteenth session")."""

    __slots__ = ("_refs",)

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref[Any]] = {}

    def add(self, obj: Any) -> None:
        key, refs = id(obj), self._refs

        def gone(ref: weakref.ref[Any]) -> None:  # at the object's end, before its id can be another's
            if refs.get(key) is ref:
                del refs[key]

        if key not in refs:
            refs[key] = weakref.ref(obj, gone)

    def alive(self) -> list[Any]:
        """The objects still alive, in the order added."""
        return [obj for obj in map(weakref.ref.__call__, tuple(self._refs.values())) if obj is not None]

    def __len__(self) -> int:
        return len(self._refs)


# The readers (SqlLog) in this process, told when a transaction that published commits.
_READERS = _Told()
_ARMED: "weakref.WeakSet[Any]" = weakref.WeakSet()  # connections whose commit will tell them


# Others told the same (the Kafka relay): events set on each such commit.
_SIGNALS = _Told()


def publish_signal() -> asyncio.Event:
    """An event set each time a transaction in this process that published
    (`publish`) commits; held weakly: the caller keeps it, and clears it."""
    signal = asyncio.Event()
    _SIGNALS.add(signal)
    return signal


# Readers in other processes (the back workers' SqlLog), told by a datagram
# (hub.delivery.wake.log_waker): set by the front when the workers run apart.
_ELSEWHERE: list[Callable[[], None]] = []


def tell_elsewhere(tell: Callable[[], None]) -> Callable[[], None]:
    """Also call `tell` each time the readers here are told; returns its removal."""
    _ELSEWHERE.append(tell)
    return lambda: _ELSEWHERE.remove(tell) if tell in _ELSEWHERE else None


def _tell_readers() -> None:
    for reader in _READERS.alive():
        reader._new.set()
    for signal in _SIGNALS.alive():
        signal.set()
    for tell in _ELSEWHERE:
        tell()


def _told_on_commit(conn: Any) -> None:
    # The inline SQLite writer (hub.store.db.SyncConn, or ingest's group-commit
    # WriteBehind around one), or a transaction begun with hooks (PostgreSQL's
    # group commit and write_transaction), calls back on the loop once its COMMIT is durable.
    after_commit = after_commit_hook(conn)
    if after_commit is not None:
        after_commit(_tell_readers)
        return
    # An AsyncConnection (or WriteBehind around one): SQLAlchemy's commit event.
    sync = getattr(conn, "sync_connection", None)
    if sync is None:  # no connection to watch: tell now (a reader that looks too soon polls again)
        _tell_readers()
        return
    if sync in _ARMED:
        return
    _ARMED.add(sync)

    def committed(_conn: Any) -> None:
        # SQLAlchemy's commit event, on the loop's thread as the COMMIT is
        # issued: a reader's next fetch on SQLite waits behind it (BEGIN IMMEDIATE).
        _ARMED.discard(sync)
        _tell_readers()

    event.listen(sync, "commit", committed, once=True)


_INSERT_MESSAGE = bus_messages.insert()  # built once: a message per event


async def publish(conn: AsyncConnection, message: BusMessage) -> None:
    # An offset is drawn at INSERT but becomes visible at COMMIT. Were two
    # publishers to commit out of offset order, a consumer could ack past
    # the lower offset before it was visible and never see it. Holding a
    # per-topic lock from the first publish to commit makes offset order
    # commit order. (SQLite gets this from BEGIN IMMEDIATE: one writer.)
    await lock_topic(conn, message.topic)
    _told_on_commit(conn)
    # One statement for every message (parameters apart): compiled once, and
    # inside an ingest batch (hub/ingest/group_commit.py) one executemany.
    await conn.execute(
        _INSERT_MESSAGE,
        dict(
            topic=message.topic,
            key=message.key,
            event_id=message.event_id,
            payload=message.payload,
            headers=message.headers,
            created_at=datetime.now(UTC),
        ),
    )


class SqlLog:
    capabilities = Capabilities(ordered_per_key=True, persistent=True, transactional_with_store=True)

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._new = asyncio.Event()
        _READERS.add(self)
        # (group, topic) -> the committed offset last fetched from, and, once
        # `pass_over` is called, how far this process has read past it with
        # nothing to do and since when (`time.monotonic`).
        self._seen: dict[tuple[str, str], int] = {}
        self._passed: dict[tuple[str, str], tuple[int, int, float]] = {}

    def pass_over(self, group_id: str, topic: str, next_offset: int) -> None:
        """The group's messages below `next_offset` were read and needed
        nothing (no workflow, no open item): its next fetch in this process
        starts there, and the offset is written with the group's next
        commit, or by `commit_passed`, rather than in a write transaction
        (and an fsync) of its own for each such batch. Lost with the
        process: messages that needed nothing are then read again, and
        again need nothing. Dropped if the committed offset moves meanwhile
        (an operator's rewind, another instance's commit)."""
        key = (group_id, topic)
        base = self._seen.get(key)
        if base is None or next_offset <= base:
            return
        before = self._passed.get(key)
        since = before[2] if before is not None and before[0] == base else time.monotonic()  # the oldest unwritten
        self._passed[key] = (base, next_offset, since)

    async def commit_passed(self, group_id: str, topic: str, older_than: float = 1.0) -> bool:
        """Write the offset `pass_over` moved once it is `older_than` seconds
        old (so the stored offset, the lag and a restart's re-reading stay
        within about that); True if it was written."""
        key = (group_id, topic)
        passed = self._passed.get(key)
        if passed is None or time.monotonic() - passed[2] < older_than:
            return False
        base, ahead, _ = passed
        async with write_transaction(self._engine) as conn:
            if await self.claim_batch(conn, group_id, topic) != base:
                self._passed.pop(key, None)  # moved meanwhile (a rewind, another instance): read from there
                return False
            await self._upsert(conn, group_id, topic, ahead)
        self._passed.pop(key, None)
        return True

    async def published(self) -> None:
        """Return once a transaction in this process that published has
        committed (since the last call); another process's are seen by polling."""
        await self._new.wait()
        self._new.clear()

    async def _committed(self, conn: AsyncConnection, group_id: str, topic: str) -> int:
        row = (await execute_prepared(conn, _COMMITTED, {"group_id": group_id, "topic": topic})).first()
        return int(row[0]) if row else 0

    async def fetch(self, group_id: str, topic: str, limit: int = 100, *,
                    payload_for: Collection[str] | None = None) -> list[BusMessage]:
        """The group's next messages. `payload_for`: only messages of these
        event types (the `event_type` header) carry their payload; the others
        come with an empty one (a consumer that reads most events only to move
        its offset is not made to decode every status)."""
        async with snapshot(self._engine) as conn:  # reads only: a snapshot, never the write lock
            return (await self.fetch_on(conn, group_id, topic, limit, payload_for=payload_for))[1]

    async def fetch_on(self, conn: AsyncConnection, group_id: str, topic: str, limit: int = 100, *,
                       payload_for: Collection[str] | None = None) -> tuple[int, list[BusMessage]]:
        """`fetch` on the caller's snapshot (a consumer that goes on reading in
        it, the dispatcher: one read transaction a batch rather than two);
        with the group's committed offset as `conn` sees it (`committed`)."""
        committed = start = await self._committed(conn, group_id, topic)
        key = (group_id, topic)
        self._seen[key] = start
        passed = self._passed.get(key)
        if passed is not None:
            if passed[0] == start:
                start = passed[1]  # what this process read past with nothing to do (`pass_over`)
            else:  # the offset moved since: committed with more, rewound, or another instance's
                del self._passed[key]
        params = {"topic": topic, "start": start, "limit": limit}
        rows = (await execute_prepared(conn, _FETCH if payload_for is None else _FETCH_HEADS, params)).all()
        if payload_for is None:
            return committed, [BusMessage(topic=r.topic, key=r.key, event_id=r.event_id, payload=r.payload,
                                          headers=r.headers, offset=int(r.offset)) for r in rows]
        wanted = [int(r.offset) for r in rows if r.headers.get("event_type") in payload_for]
        payloads = ({int(p.offset): p.payload for p in await _PAYLOADS.execute(conn, wanted, {"topic": topic})}
                    if wanted else {})
        return committed, [BusMessage(topic=r.topic, key=r.key, event_id=r.event_id,
                                      payload=payloads.get(int(r.offset), {}), headers=r.headers,
                                      offset=int(r.offset)) for r in rows]

    async def commit(self, group_id: str, topic: str, next_offset: int, conn: Any = None) -> None:
        if conn is None:
            async with self._engine.begin() as own:
                await self._upsert(own, group_id, topic, next_offset)
        else:
            await self._upsert(conn, group_id, topic, next_offset)

    async def _upsert(self, conn: AsyncConnection, group_id: str, topic: str, next_offset: int) -> None:
        # One statement, so concurrent acks neither collide on the group's first
        # commit nor move the offset backwards (a late ack of an earlier message).
        await execute_prepared(conn, _offsets_statement(conn.dialect, "advance"),
                               {"group_id": group_id, "topic": topic, "next_offset": next_offset,
                                "updated_at": datetime.now(UTC)})

    async def claim_batch(self, conn: AsyncConnection, group_id: str, topic: str) -> int:
        """`claim` for a batch: lock the group's offset row until the caller's
        transaction ends and return the group's next offset; the caller skips
        the fetched messages below it (another instance handled them since).
        The row is read (and locked) first and made only if it is not there
        (the group's first claim): a statement a claim rather than two, the
        dispatcher claiming once a batch (`INSERT ... ON CONFLICT DO NOTHING`
        of a row that is there writes nothing, so the rows are the same)."""
        key = {"group_id": group_id, "topic": topic}
        row = (await execute_prepared(conn, _CLAIM, key)).first()
        if row is None:
            await execute_prepared(conn, _offsets_statement(conn.dialect, "create"),
                                   {**key, "next_offset": 0, "updated_at": datetime.now(UTC)})
            row = (await execute_prepared(conn, _CLAIM, key)).one()
        return int(row.next_offset)

    async def committed(self, conn: AsyncConnection, group_id: str, topic: str) -> int:
        """The group's next offset as `conn` sees it, claiming nothing (a
        snapshot's read; `claim_batch` later, under the lock, must agree)."""
        return await self._committed(conn, group_id, topic)

    async def claim(self, conn: AsyncConnection, group_id: str, topic: str, offset: int) -> bool:
        """Inside the handler's transaction: lock the group's offset row and say
        whether `offset` is still unhandled. Two hub instances that fetched the
        same batch then handle each message once: the second waits for the
        first's commit and finds the offset already past it."""
        return offset >= await self.claim_batch(conn, group_id, topic)

    async def rewind(self, group_id: str, topic: str, to_offset: int) -> None:
        """Replay: move a group back (an operator action, audited by the caller)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                consumer_offsets.update()
                .where(consumer_offsets.c.group_id == group_id, consumer_offsets.c.topic == topic)
                .values(next_offset=to_offset, updated_at=datetime.now(UTC))
            )

    async def lag(self, group_id: str, topic: str) -> int:
        async with snapshot(self._engine) as conn:  # a count: a snapshot, no write lock
            start = await self._committed(conn, group_id, topic)
            n = (await execute_prepared(conn, _COUNT, {"topic": topic, "start": start})).scalar_one()
        return int(n)


# The log's statements, built once (hub.store.db.Prepared: on SQLite's inline
# connections compiled once and run on the driver; the consumers poll them).
_COMMITTED = Prepared(select(consumer_offsets.c.next_offset).where(
    consumer_offsets.c.group_id == bindparam("group_id"), consumer_offsets.c.topic == bindparam("topic")))
_CLAIM = Prepared(select(consumer_offsets.c.next_offset).where(
    consumer_offsets.c.group_id == bindparam("group_id"), consumer_offsets.c.topic == bindparam("topic"))
    .with_for_update())
# The columns a `BusMessage` carries, no more: `created_at` and `relayed_at` were read and their
# result processors run a message for nothing (14.8 -> 13.8 Python calls a message fetched).
_FETCH = Prepared(select(bus_messages.c.topic, bus_messages.c.key, bus_messages.c.event_id, bus_messages.c.payload,
                         bus_messages.c.headers, bus_messages.c.offset)
                  .where(bus_messages.c.topic == bindparam("topic"), bus_messages.c.offset >= bindparam("start"))
                  .order_by(bus_messages.c.offset).limit(bindparam("limit")))
_FETCH_HEADS = Prepared(select(bus_messages.c.topic, bus_messages.c.key, bus_messages.c.event_id,
                               bus_messages.c.headers, bus_messages.c.offset)
                        .where(bus_messages.c.topic == bindparam("topic"), bus_messages.c.offset >= bindparam("start"))
                        .order_by(bus_messages.c.offset).limit(bindparam("limit")))
_PAYLOADS = InList("offsets", lambda offsets: select(bus_messages.c.offset, bus_messages.c.payload).where(
    bus_messages.c.topic == bindparam("topic"), bus_messages.c.offset.in_(offsets)), element=BigInteger)
_COUNT = Prepared(select(func.count()).select_from(bus_messages).where(
    bus_messages.c.topic == bindparam("topic"), bus_messages.c.offset >= bindparam("start")))
_OFFSETS: dict[tuple[str, str], Prepared] = {}


def _offsets_statement(dialect: Any, kind: str) -> Prepared:
    """The offset row's upserts, per dialect (`insert_or_merge`): `create`
    (the group's first claim, if absent) or `advance` (never backwards)."""
    got = _OFFSETS.get((dialect.name, kind))
    if got is None:
        stmt = insert_or_merge(dialect, consumer_offsets).values(
            group_id=bindparam("group_id"), topic=bindparam("topic"), next_offset=bindparam("next_offset"),
            updated_at=bindparam("updated_at"))
        if kind == "create":
            stmt = stmt.on_conflict_do_nothing(index_elements=[consumer_offsets.c.group_id, consumer_offsets.c.topic])
        else:
            stmt = stmt.on_conflict_do_update(
                index_elements=[consumer_offsets.c.group_id, consumer_offsets.c.topic],
                set_={"next_offset": stmt.excluded.next_offset, "updated_at": stmt.excluded.updated_at},
                where=consumer_offsets.c.next_offset < stmt.excluded.next_offset)
        got = _OFFSETS[(dialect.name, kind)] = Prepared(stmt)
    return got
