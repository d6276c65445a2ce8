"""The Kafka backend of the bus: an outbox relay into Kafka, and a Subscriber on Kafka.

Publishing does not change: ingest still writes `bus_messages` rows inside the
register transaction (`hub.bus.sql.publish`), so the SQL log stays the outbox
and a register change and its events are still one transaction.

* `KafkaRelay` forwards outbox rows with `relayed_at IS NULL`, in offset order,
  to Kafka: topic = the row's topic, key = the row's key (the person id, so one
  person's events land on one partition and stay in order), value = the
  payload as JSON, headers = the row's headers plus `event_id`. The producer is
  idempotent with `acks="all"`; a row is marked relayed only after Kafka has
  acknowledged it. A crash between the acknowledgement and the mark sends the
  row again on the next run: delivery into Kafka is **at least once**, and
  consumers de-duplicate by `event_id`. Rows of one key are sent one after the
  other (the next only once the previous is acknowledged), so a failure can
  never let a later event of a person overtake an earlier one. Run one relay
  per database: two relays would duplicate (harmless) and could interleave
  (not harmless for per-person order).

* `KafkaLog` implements the `Subscriber` port (`hub.bus.port`) with one
  `AIOKafkaConsumer` per (group, topic): group membership (subscribe), manual
  commits (`enable_auto_commit=False`), `auto_offset_reset="earliest"`.
  `fetch` returns records from the group's last committed position, like the
  SQL log: messages fetched but not committed are fetched again (the consumer
  seeks back), so a handler that failed half way through a batch sees the
  rest again. `commit(group, topic, next_offset)` means "every message of the
  outstanding batch up to the one at `next_offset - 1` is handled": Kafka
  offsets are per partition, so `KafkaLog` remembers the partition of each
  message it handed out and commits `{partition: OffsetAndMetadata(offset + 1)}`
  for each partition covered.

  The caller's database transaction and the Kafka offset commit cannot be one
  transaction (`transactional_with_store=False`). When the caller passes its
  connection (`commit(..., conn=conn)`, as the dispatcher does inside its
  transaction), the Kafka commit is deferred until that transaction has
  committed, and dropped if it rolls back or its COMMIT fails; it is sent at
  the next call into the log (`fetch`, `commit`, `lag`) or at `close()`. A
  crash after the database commit but before the Kafka commit redelivers the
  message: handling is at least once, and downstream de-duplication is by the
  unique (subscription_id, event_id) key of the `deliveries` table (and by
  event id at the webhook subscriber). A rebalance listener commits what was
  handled before partitions are revoked; a partition lost before its commit
  is redelivered to its new owner, with the same de-duplication.

* `ensure_topic` creates a topic (AIOKafkaAdminClient) with a chosen number of
  partitions; keys spread over the partitions, order holds per key.

Wiring (the lead engineer's, in bootstrap): see `KafkaRelay`, `run_relay` and
`KafkaLog` below; each must be created and closed on the running event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import defaultdict, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
    for_code,
)
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from sqlalchemy import BigInteger, Text, bindparam, cast, event, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.periodic import pause
from hub.bus import kafka_security
from hub.bus.kafka_security import FAULTS
from hub.bus.port import BusMessage, Capabilities
from hub.bus.sql import publish_signal
from hub.observability.logging import get_logger
from hub.observability import metrics
from hub.store.db import InList, Prepared, execute_prepared, read_only
from hub.store.schema import bus_messages, dead_letters

# `lag`: asked again this many times in all, after 0.2 s, 0.4 s..., when Kafka answers with a retriable error.
LAG_ATTEMPTS = 4
LAG_RETRY_SECONDS = 0.2
log = get_logger("hub.bus.kafka")

EVENT_ID_HEADER = "event_id"
TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


def _servers(bootstrap_servers: str | Sequence[str]) -> str | list[str]:
    return bootstrap_servers if isinstance(bootstrap_servers, str) else list(bootstrap_servers)


def _joined(bootstrap_servers: str | Sequence[str]) -> str:
    return bootstrap_servers if isinstance(bootstrap_servers, str) else ",".join(bootstrap_servers)


# --------------------------------------------------------------------------- topics


async def ensure_topic(
    bootstrap_servers: str | Sequence[str],
    topic: str,
    *,
    partitions: int = 6,
    replication_factor: int = 1,
    configs: Mapping[str, str] | None = None,
    timeout_ms: int = 30_000,
    client_options: Mapping[str, Any] | None = None,
) -> bool:
    """Create `topic` if it does not exist. Returns True if it was created now.

    The partition count bounds how many consumers of one group share the work;
    order is kept per key (person) whatever the count. Production clusters
    want `replication_factor=3` and `configs={"min.insync.replicas": "2"}`. `client_options`: the
    cluster's security (hub/bus/kafka_security.py `client_options`).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=_servers(bootstrap_servers), request_timeout_ms=timeout_ms,
                                **dict(client_options or {}))
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(topic, partitions, replication_factor, topic_configs=dict(configs or {}))],
            timeout_ms=timeout_ms,
        )
    finally:
        await admin.close()
    # The admin client reports per-topic errors in the response, it does not raise them.
    for item in response.topic_errors:
        name, code = item[0], item[1]
        if name != topic or code == 0:
            continue
        if code == TOPIC_ALREADY_EXISTS:
            return False
        message = item[2] if len(item) > 2 else None
        # The error's own class (TopicAuthorizationFailedError, ...): what kafka_security classifies.
        raise for_code(code)(f"creating topic {topic!r} failed with error code {code}: {message}")
    return True


class TopicWait:
    """The bus's topic, made once Kafka answers. A hub started while Kafka is down or unreachable
    starts all the same: ingest does not need Kafka (its events wait in the outbox, as while Kafka is
    down later), and the relay and the consumers (`KafkaRelay`, `KafkaLog`, given `ready`) start
    once the topic is made, never before: a consumer or producer let loose on a topic not made yet
    could have the broker make it with its own default partitions.

        wait = TopicWait("broker:9092", "s117.events", partitions=6)
        if not await wait.try_once():
            task = asyncio.create_task(wait.run(stop))  # a log line a try, until made or stopped
    """

    FIRST_TRY_MS = 10_000  # at start; the hub's start does not wait longer than this on Kafka
    MAX_PAUSE = 5.0  # a metadata request every 5 s at most while Kafka does not answer

    def __init__(self, bootstrap_servers: str | Sequence[str], topic: str, partitions: int, *,
                 client_options: Mapping[str, Any] | None = None, cluster: str = "bus") -> None:
        self._servers = bootstrap_servers
        self._options = dict(client_options or {})
        self.cluster = cluster
        self.topic = topic
        self.partitions = partitions
        self.ready = asyncio.Event()
        self.waiting: str | None = None  # what waits and why, while the topic is not made
        self.cause: str | None = None  # the misconfiguration the last try met (kafka_security), if any
        self.attempts = 0

    async def try_once(self, timeout_ms: int = FIRST_TRY_MS) -> bool:
        """Make the topic (or find it made); False, saying why in `waiting`, if Kafka does not answer."""
        self.attempts += 1
        try:
            await ensure_topic(self._servers, self.topic, partitions=self.partitions, timeout_ms=timeout_ms,
                               client_options=self._options)
        except (KafkaError, OSError, TimeoutError) as exc:
            cause = await kafka_security.note_failure(self.cluster, "topic-wait", exc, _joined(self._servers),
                                                      self._options)
            self.cause = cause
            what = f"misconfigured: {cause}" if cause else "kafka not reachable"
            self.waiting = (f"{what} ({type(exc).__name__}): topic {self.topic} not made yet, the relay "
                            "and the consumers not started; changes are accepted and wait in the outbox")
            return False
        FAULTS.succeeded(self.cluster, "topic-wait")
        self.cause = None
        self.waiting = None
        self.ready.set()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Try again, pausing 1 s doubling to MAX_PAUSE, until the topic is made or `stop` is set."""
        while not self.ready.is_set() and not stop.is_set():
            pause = min(self.MAX_PAUSE, 0.5 * 2 ** min(self.attempts, 16))
            if self.cause is None:
                log.warning("kafka not reachable; the topic and the relay wait", topic=self.topic,
                            attempt=self.attempts, next_attempt_in=pause)
            else:
                log.warning("kafka misconfigured; the topic and the relay wait", topic=self.topic,
                            attempt=self.attempts, next_attempt_in=pause, error_kind=f"misconfigured: {self.cause}")
            await _wait(stop, pause)
            if not stop.is_set() and await self.try_once(timeout_ms=30_000):
                log.info("kafka reachable; topic ready, the relay and the consumers start", topic=self.topic,
                         attempt=self.attempts)


# --------------------------------------------------------------------------- relay


class KafkaRelay:
    """Forwards outbox rows (`bus_messages.relayed_at IS NULL`) to Kafka.

        relay = KafkaRelay(engine, "broker1:9092,broker2:9092")
        stop = asyncio.Event()
        task = asyncio.create_task(run_relay(relay, poll_seconds=0.2, stop=stop))
        ...
        stop.set(); await task; await relay.close()

    `run_once()` relays what is waiting and returns how many rows it marked
    relayed. The producer is connected lazily, so a relay created while Kafka
    is unreachable just fails its runs (rows wait in the outbox) until Kafka
    is back.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        bootstrap_servers: str | Sequence[str],
        *,
        batch_size: int = 500,
        client_id: str = "s117-hub-relay",
        producer_options: Mapping[str, Any] | None = None,
        topic_ready: asyncio.Event | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._engine = engine
        self.bootstrap = _joined(bootstrap_servers)
        self.client_options = dict(client_options or {})  # the cluster's security (kafka_security)
        self.topic_ready = topic_ready  # set once the topic is made (`TopicWait`); None: made already
        self._servers = _servers(bootstrap_servers)
        self._batch_size = batch_size
        self._client_id = client_id
        self._options = dict(producer_options or {})
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        # The last run found fewer rows waiting than a batch: it took all there were (`run_relay`'s gauges).
        self.caught_up = False
        # Set when this process commits outbox rows (hub.bus.sql.publish): `run_relay`
        # relays them then rather than at its next poll; other processes' rows are polled for.
        self.published = publish_signal()

    async def start(self) -> None:
        """Connect the producer now (otherwise the first run does). Raises if Kafka is unreachable."""
        async with self._lock:
            await self._ensure_producer()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            options: dict[str, Any] = {"linger_ms": 5, "request_timeout_ms": 30_000, **self._options}
            producer = AIOKafkaProducer(
                bootstrap_servers=self._servers,
                client_id=self._client_id,
                acks="all",
                enable_idempotence=True,
                **self.client_options,
                **options,
            )
            try:
                await producer.start()
            except BaseException:
                # A producer whose start failed cannot be started again: close it, make a new one next run.
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        """Flush and close the producer (waits for a run in progress)."""
        async with self._lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.stop()

    async def pending(self) -> int:
        """Rows waiting in the outbox."""
        async with self._engine.connect() as conn:
            n = (await conn.execute(
                select(func.count()).select_from(bus_messages).where(bus_messages.c.relayed_at.is_(None))
            )).scalar_one()
            await conn.rollback()
        return int(n)

    async def backlog(self) -> tuple[int, float]:
        """Rows waiting in the outbox, and how long the oldest has waited (seconds; 0 with none)."""
        async with read_only(self._engine) as conn:
            n, oldest = (await conn.execute(
                select(func.count(), func.min(bus_messages.c.created_at)).where(bus_messages.c.relayed_at.is_(None))
            )).one()
        if not n or oldest is None:
            return 0, 0.0
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return int(n), max(0.0, (datetime.now(UTC) - oldest).total_seconds())

    async def run_once(self, limit: int | None = None) -> int:
        """Relay the oldest waiting rows (up to `limit`, default batch_size).

        Returns how many rows were acknowledged by Kafka and marked relayed.
        If any row failed, the rows that did get through are still marked and
        the first error is raised (the loop backs off and retries the rest).
        """
        async with self._lock:
            async with read_only(self._engine) as conn:  # PostgreSQL: no BEGIN/ROLLBACK round trips
                rows = (await execute_prepared(conn, _WAITING, {"limit": limit or self._batch_size})).all()
            self.caught_up = False  # until the rows are marked
            if not rows:
                self.caught_up = True
                return 0
            producer = await self._ensure_producer()
            chains: dict[tuple[str, str], list[Any]] = defaultdict(list)
            for row in rows:
                chains[(row.topic, row.key)].append(row)
            results = await asyncio.gather(*(self._send_chain(producer, chain) for chain in chains.values()))
            relayed = [offset for sent, _, _ in results for offset in sent]
            refused = [r for _, rows_refused, _ in results for r in rows_refused]
            errors = [err for _, _, err in results if err is not None]
            if relayed or refused:
                await self._mark_relayed(relayed, refused)
            self.caught_up = not errors and len(rows) < (limit or self._batch_size)
            log.info("outbox rows relayed to kafka", count=len(relayed), lag=len(rows) - len(relayed))
            if errors:
                raise errors[0]
            return len(relayed)

    async def _send_chain(
        self, producer: AIOKafkaProducer, rows: list[Any],
    ) -> tuple[list[int], list[tuple[Any, str]], BaseException | None]:
        # One key's rows strictly one after another: the next is sent only when
        # the previous is acknowledged, so a failed send can never be overtaken.
        # A row Kafka refuses for good (too large, topic refused: a non-retriable
        # error) goes to the dead letters with the reason instead of holding up
        # that person's later events for ever; a passing failure (broker down)
        # stops the chain to be retried in order.
        sent: list[int] = []
        refused: list[tuple[Any, str]] = []
        for row in rows:
            try:
                ack = await producer.send(
                    row.topic, value=row.payload_json.encode(), key=row.key.encode(), headers=_headers(row),
                )
                await ack
            except KafkaError as exc:
                log.warning("relay to kafka failed", topic=row.topic, offset=int(row.offset),
                            event_id=row.event_id, exc_type=type(exc).__name__)
                # A refusal for a setting (an ACL, the credentials) is not the message's fault: it waits,
                # in order, for the setting to be fixed rather than going to the dead letters.
                if (getattr(exc, "retriable", True) or isinstance(exc, KafkaConnectionError)
                        or kafka_security.misconfiguration(exc)):
                    return sent, refused, exc
                refused.append((row, f"Kafka refused the message: {type(exc).__name__}"))
                continue
            sent.append(int(row.offset))
        return sent, refused, None

    async def _mark_relayed(self, offsets: list[int], refused: list[tuple[Any, str]] = ()) -> None:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            for row, reason in refused:
                await conn.execute(dead_letters.insert().values(
                    topic=row.topic, group_id="kafka-relay", offset=int(row.offset), event_id=row.event_id,
                    handler="kafka-relay", reason=reason[:300], at=now))
                metrics.DEAD_LETTERS.labels(handler="kafka-relay").inc()
            offsets = [*offsets, *(int(row.offset) for row, _ in refused)]
            for i in range(0, len(offsets), 500):
                await _MARK_RELAYED.execute(conn, offsets[i:i + 500], {"now": now})


# The outbox rows waiting, oldest first; the payload as the JSON text stored (the hub writes it
# with orjson: the same bytes as decoding it and encoding it again, as the relay did, for each row).
_WAITING = Prepared(
    select(bus_messages.c.offset, bus_messages.c.topic, bus_messages.c.key, bus_messages.c.event_id,
           cast(bus_messages.c.payload, Text).label("payload_json"), bus_messages.c.headers)
    .where(bus_messages.c.relayed_at.is_(None)).order_by(bus_messages.c.offset).limit(bindparam("limit")))


# Outbox rows marked relayed: an InList (one array parameter on PostgreSQL),
# so the statement is the same, and prepared once a connection, whatever the
# number of rows (an expanding IN list was prepared again for each count).
_MARK_RELAYED = InList("offsets", lambda offsets: bus_messages.update().where(bus_messages.c.offset.in_(offsets))
                       .values(relayed_at=bindparam("now")), element=BigInteger)


def _headers(row: Any) -> list[tuple[str, bytes]]:
    headers = {str(k): str(v) for k, v in (row.headers or {}).items() if v is not None}
    headers[EVENT_ID_HEADER] = row.event_id
    headers.setdefault("correlation_id", "")
    headers.setdefault("event_type", "")
    return [(k, v.encode()) for k, v in headers.items()]


async def run_relay(relay: KafkaRelay, poll_seconds: float, stop: asyncio.Event, max_backoff_seconds: float = 30.0) -> None:
    """Relay until `stop` is set. A failed run (Kafka unreachable, a row Kafka
    refuses) is logged and retried with capped exponential backoff; the rows
    stay in the outbox until they are acknowledged."""
    failures = 0
    watch = asyncio.create_task(_watch_backlog(relay, stop), name="kafka-relay-backlog")
    try:
        while not stop.is_set():
            if relay.topic_ready is not None and not relay.topic_ready.is_set():
                await _wait(stop, 1.0, relay.topic_ready)  # Kafka not reached yet (`TopicWait`): rows wait
                continue
            relay.published.clear()  # rows committed from here on are relayed by this run or wake the wait below
            try:
                relayed = await relay.run_once()
                failures = 0
                FAULTS.succeeded("bus", "relay")
            except Exception as exc:  # noqa: BLE001 - logged and retried; the outbox keeps the rows
                failures += 1
                delay = min(max_backoff_seconds, poll_seconds * (2 ** min(failures, 16)))
                # A setting Kafka refuses (authentication, tls, authorization) told apart from a broker down.
                cause = await kafka_security.note_failure("bus", "relay", exc, relay.bootstrap, relay.client_options)
                named = {"error_kind": f"misconfigured: {cause}"} if cause else {}
                log.warning("kafka relay run failed", attempt=failures, exc_type=type(exc).__name__,
                            next_attempt_in=round(delay, 2), **named)
                await _wait(stop, delay)
                continue
            if relay.caught_up:  # all that was waiting when the run began is in Kafka
                _show_backlog(0, 0.0)
            if not relayed:
                await _wait(stop, poll_seconds, relay.published)
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


# Seconds between counts of the outbox's backlog (`s117_relay_pending_messages`,
# `s117_relay_oldest_pending_seconds`) while the relay is not caught up: behind, failing, or waiting
# on Kafka (a send to a broker that is down waits up to the producer's request timeout, 30 s, before
# it fails). Caught up, none is made.
BACKLOG_EVERY = 5.0
_shown: list[tuple[int, float]] = [(-1, -1.0)]


def _show_backlog(pending: int, oldest: float) -> None:
    if _shown[0] != (pending, oldest):  # a gauge write only when it changes (caught up: once)
        _shown[0] = (pending, oldest)
        metrics.RELAY_PENDING.set(pending)
        metrics.RELAY_OLDEST.set(oldest)


async def _watch_backlog(relay: KafkaRelay, stop: asyncio.Event) -> None:
    """Count the backlog from the store every BACKLOG_EVERY while the relay is not caught up. The
    store down too: the gauges keep their last values (its own outage is answered and logged elsewhere)."""
    while not stop.is_set():
        await _wait(stop, BACKLOG_EVERY)
        if relay.caught_up or stop.is_set():
            continue
        try:
            pending, oldest = await relay.backlog()
        except Exception as exc:  # noqa: BLE001 - a gauge not updated, never the relay stopped
            log.warning("kafka relay backlog not counted", exc_type=type(exc).__name__)
            continue
        _show_backlog(pending, round(oldest, 1))


async def _wait(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Up to `seconds`, less if `stop` (or `wake`) is set."""
    if wake is None:
        await pause(stop, seconds)
        return
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


# --------------------------------------------------------------------------- subscriber


class _TransactionWatch:
    """Tells whether the caller's database transaction committed.

    SQLAlchemy fires the connection's `commit` event just before COMMIT; a
    COMMIT that then fails goes through `handle_error`. So: committed = the
    commit event fired, no error followed, and the transaction is over.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._sync = conn.sync_connection
        self._tx = self._sync.get_transaction() if self._sync is not None else None
        self.commit_seen = False
        self.failed = False
        if self._sync is None or self._tx is None:
            # Not in a transaction: the caller's work is already durable (autocommit).
            self.commit_seen = True
            return
        event.listen(self._sync, "commit", self._on_commit)
        event.listen(self._sync, "rollback", self._on_rollback)
        _watch_errors(self._sync.engine)
        _WATCHES[id(self._sync)].append(self)

    def _on_commit(self, _conn: Any) -> None:
        self.commit_seen = True

    def _on_rollback(self, _conn: Any) -> None:
        if not self.commit_seen:
            self.failed = True

    def on_error(self) -> None:
        if self.commit_seen:
            self.failed = True

    @property
    def state(self) -> str:
        """'committed', 'aborted' or 'open'."""
        if self.failed:
            return "aborted"
        if self._tx is None:
            return "committed"
        if self._tx.is_active:
            return "open"
        return "committed" if self.commit_seen else "aborted"

    def forget(self) -> None:
        watches = _WATCHES.get(id(self._sync))
        if watches is not None:
            if self in watches:
                watches.remove(self)
            if not watches:
                _WATCHES.pop(id(self._sync), None)


_WATCHES: dict[int, list[_TransactionWatch]] = defaultdict(list)
_WATCHED_ENGINES: set[int] = set()


def _watch_errors(sync_engine: Any) -> None:
    if id(sync_engine) in _WATCHED_ENGINES:
        return
    _WATCHED_ENGINES.add(id(sync_engine))

    def on_error(context: Any) -> None:
        conn = getattr(context, "connection", None)
        for watch in _WATCHES.get(id(conn), ()):
            watch.on_error()

    event.listen(sync_engine, "handle_error", on_error)


@dataclass
class _Staged:
    taken: list[tuple[TopicPartition, int]]  # the messages this commit covers, in fetch order
    watch: _TransactionWatch | None

    @property
    def offsets(self) -> dict[TopicPartition, int]:
        positions: dict[TopicPartition, int] = {}
        for tp, off in self.taken:
            positions[tp] = max(positions.get(tp, 0), off + 1)
        return positions


@dataclass
class _GroupConsumer:
    group_id: str
    topic: str
    consumer: AIOKafkaConsumer
    # Messages handed out and not yet committed, in the order fetch returned them.
    outstanding: deque[tuple[TopicPartition, int]] = field(default_factory=deque)
    # Commits waiting for the caller's transaction to commit.
    staged: list[_Staged] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def take_through(self, next_offset: int) -> list[tuple[TopicPartition, int]]:
        """Pop the outstanding messages up to the first one at `next_offset - 1`.

        The caller handles a batch in the order fetch returned it, so the first
        match is the message it has just handled (offsets repeat across partitions).
        """
        target = next_offset - 1
        for i, (_tp, offset) in enumerate(self.outstanding):
            if offset == target:
                return [self.outstanding.popleft() for _ in range(i + 1)]
        return []

    def rewind_points(self) -> dict[TopicPartition, int]:
        """Per partition, the lowest offset handed out and not committed (fetch seeks back to it)."""
        points: dict[TopicPartition, int] = {}
        for tp, offset in self.outstanding:
            points[tp] = min(points.get(tp, offset), offset)
        return points

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        gone = set(partitions)
        self.outstanding = deque((tp, off) for tp, off in self.outstanding if tp not in gone)


class _CommitHandledOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another consumer, commit what was handled."""

    def __init__(self, log_: KafkaLog, group: _GroupConsumer) -> None:
        self._log = log_
        self._group = group

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._log._flush(self._group, in_rebalance=True)
        # What was handed out but not handled goes to the new owner, from the committed offset.
        self._group.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # Positions of newly assigned partitions start at the group's committed offsets.
        current = set(assigned)
        self._group.forget(tp for tp, _ in list(self._group.outstanding) if tp not in current)


class KafkaLog:
    """The Subscriber port on Kafka.

        bus = KafkaLog("broker1:9092")
        batch = await bus.fetch("dispatcher", "s117.events", 100)
        for msg in batch:
            async with engine.begin() as conn:
                ...                                                    # the durable work
                await bus.commit("dispatcher", "s117.events", msg.offset + 1, conn)
        await bus.lag("dispatcher", "s117.events")
        await bus.close()

    `BusMessage.offset` is the Kafka offset within the message's partition.
    """

    capabilities = Capabilities(ordered_per_key=True, persistent=True, transactional_with_store=False)

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        client_id: str = "s117-hub",
        fetch_timeout_ms: int = 500,
        consumer_options: Mapping[str, Any] | None = None,
        topic_ready: asyncio.Event | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._servers = _servers(bootstrap_servers)
        self._security = dict(client_options or {})  # the cluster's security (kafka_security)
        self._topic_ready = topic_ready  # no consumer before the topic is made (`TopicWait`); None: made
        self._client_id = client_id
        self._fetch_timeout_ms = fetch_timeout_ms
        self._options = dict(consumer_options or {})
        self._groups: dict[tuple[str, str], _GroupConsumer] = {}
        self._starting = asyncio.Lock()
        self._probe: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._closed = False

    async def _group(self, group_id: str, topic: str) -> _GroupConsumer:
        key = (group_id, topic)
        if key in self._groups:
            return self._groups[key]
        async with self._starting:
            if key in self._groups:
                return self._groups[key]
            if self._closed:
                raise RuntimeError("KafkaLog is closed")
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._servers,
                client_id=f"{self._client_id}-{group_id}",
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **self._security,
                **self._options,
            )
            group = _GroupConsumer(group_id, topic, consumer)
            consumer.subscribe([topic], listener=_CommitHandledOnRevoke(self, group))
            try:
                await consumer.start()
            except BaseException as exc:
                await consumer.stop()
                if isinstance(exc, Exception):
                    await kafka_security.note_failure("bus", f"consumer-{group_id}", exc, _joined(self._servers),
                                                      self._security)
                raise
            FAULTS.succeeded("bus", f"consumer-{group_id}")
            self._groups[key] = group
            return group

    async def fetch(self, group_id: str, topic: str, limit: int = 100, *,
                    payload_for: Collection[str] | None = None) -> list[BusMessage]:  # noqa: ARG002
        """Messages from the group's last commit on, at most `limit`, in per-partition (per-key) order.
        (`payload_for` is the SQL log's saving; a Kafka record comes whole.)

        Waits up to `fetch_timeout_ms` when nothing is ready (the first call
        also joins the group). Returns [] if nothing arrived in that time.
        """
        if self._topic_ready is not None and not self._topic_ready.is_set():
            try:  # nothing to fetch before Kafka is reached and the topic made: wait as a fetch would
                await asyncio.wait_for(self._topic_ready.wait(), self._fetch_timeout_ms / 1000)
            except TimeoutError:
                return []
        group = await self._group(group_id, topic)
        async with group.lock:
            await self._flush(group)
            assigned = group.consumer.assignment()
            for tp, offset in group.rewind_points().items():
                if tp in assigned:
                    group.consumer.seek(tp, offset)
            group.outstanding.clear()
            records = await group.consumer.getmany(timeout_ms=self._fetch_timeout_ms, max_records=limit)
            # Each partition in its own order; interleaved by timestamp for a roughly global order.
            merged = list(heapq.merge(*records.values(), key=lambda r: r.timestamp))
            messages = [_message(r) for r in merged]
            group.outstanding.extend((TopicPartition(r.topic, r.partition), r.offset) for r in merged)
            return messages

    async def commit(self, group_id: str, topic: str, next_offset: int, conn: Any = None) -> None:
        """Mark handled every outstanding message up to the one at `next_offset - 1`.

        Without `conn` the offsets are committed to Kafka now. With the
        caller's connection, they are committed once that transaction has
        committed (at the next call into this log, or `close()`), and never if
        it rolls back.
        """
        group = self._groups.get((group_id, topic))
        if group is None:
            raise RuntimeError(f"commit for {group_id}/{topic} before any fetch by this consumer")
        async with group.lock:
            await self._flush(group)
            taken = group.take_through(next_offset)
            if not taken:
                return  # already committed (or nothing at that offset handed out)
            staged = _Staged(taken, _TransactionWatch(conn) if conn is not None else None)
            if conn is None:
                await self._commit_offsets(group, staged.offsets)
                return
            group.staged.append(staged)

    async def _flush(self, group: _GroupConsumer, in_rebalance: bool = False) -> None:
        """Commit to Kafka the staged offsets whose database transaction committed."""
        ready: dict[TopicPartition, int] = {}
        keep: list[_Staged] = []
        requeue: list[tuple[TopicPartition, int]] = []
        for staged in group.staged:
            assert staged.watch is not None
            state = staged.watch.state
            if state == "open":
                keep.append(staged)
                continue
            staged.watch.forget()
            if state == "committed":
                for tp, off in staged.offsets.items():
                    ready[tp] = max(ready.get(tp, 0), off)
            elif not in_rebalance:
                log.info("commit dropped: the caller's transaction rolled back", group=group.group_id,
                         topic=group.topic)
                # Not handled after all: hand those messages out again on the next fetch.
                requeue.extend(staged.taken)
        group.staged = keep
        if requeue:
            group.outstanding.extendleft(reversed(requeue))
        if ready:
            await self._commit_offsets(group, ready)

    async def _commit_offsets(self, group: _GroupConsumer, offsets: dict[TopicPartition, int]) -> None:
        assigned = group.consumer.assignment()
        mine = {tp: OffsetAndMetadata(off, "") for tp, off in offsets.items() if tp in assigned}
        if len(mine) < len(offsets):
            log.warning("commit skipped for partitions no longer assigned; their new owner redelivers",
                        group=group.group_id, topic=group.topic, count=len(offsets) - len(mine))
        if not mine:
            return
        try:
            await group.consumer.commit(mine)
        except (CommitFailedError, RebalanceInProgressError, UnknownMemberIdError, IllegalStateError) as exc:
            # The group moved on while we worked: the partitions' new owner starts from the
            # last committed offset and redelivers; de-duplication by event id absorbs it.
            log.warning("kafka commit failed after a rebalance; messages will be redelivered",
                        group=group.group_id, topic=group.topic, exc_type=type(exc).__name__)

    async def lag(self, group_id: str, topic: str) -> int:
        """Messages in `topic` after the group's committed offsets (all partitions)."""
        if self._topic_ready is not None and not self._topic_ready.is_set():
            return 0  # Kafka not reached yet: what waits is in the outbox (the relay's gauges)
        group = self._groups.get((group_id, topic))
        if group is not None:
            async with group.lock:
                await self._flush(group)
        # A partition's leadership moving (a broker restarted, a topic just made, the group's coordinator
        # still loading) is a retriable error of the moment: asked again, a little later, not reported.
        attempt = 0
        while True:
            try:
                return await self._lag(group_id, topic)
            except KafkaError as exc:
                attempt += 1
                if not getattr(exc, "retriable", False) or attempt >= LAG_ATTEMPTS:
                    raise
            await asyncio.sleep(LAG_RETRY_SECONDS * attempt)

    async def _lag(self, group_id: str, topic: str) -> int:
        probe, admin = await self._tools()
        # All topics' metadata: asking for the one topic by name would auto-create it on brokers that allow that.
        described = await admin.describe_topics()
        partitions = {
            p["partition"] for t in described if t["topic"] == topic and t["error_code"] == 0
            for p in t["partitions"]
        }
        if not partitions:
            return 0  # no such topic (yet): nothing waiting
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = await probe.end_offsets(tps)
        starts = await probe.beginning_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        total = 0
        for tp in tps:
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            total += max(0, ends[tp] - max(position, starts[tp]))
        return total

    async def _tools(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        async with self._starting:
            if self._probe is None:
                probe = AIOKafkaConsumer(bootstrap_servers=self._servers, client_id=f"{self._client_id}-lag",
                                         group_id=None, enable_auto_commit=False, **self._security)
                await probe.start()
                self._probe = probe
            if self._admin is None:
                admin = AIOKafkaAdminClient(bootstrap_servers=self._servers, client_id=f"{self._client_id}-admin",
                                            **self._security)
                await admin.start()
                self._admin = admin
            return self._probe, self._admin

    async def close(self) -> None:
        """Drain: wait for fetches and commits in progress, commit what was
        handled and is durable, then leave the groups."""
        self._closed = True
        for group in list(self._groups.values()):
            async with group.lock:
                try:
                    await self._flush(group)
                except KafkaError as exc:
                    log.warning("kafka commit on close failed; messages will be redelivered",
                                group=group.group_id, topic=group.topic, exc_type=type(exc).__name__)
                for staged in group.staged:
                    staged.watch.forget()
                group.staged.clear()
                await group.consumer.stop()
        self._groups.clear()
        if self._probe is not None:
            await self._probe.stop()
            self._probe = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None


def _message(record: ConsumerRecord) -> BusMessage:
    headers = {k: v.decode() if isinstance(v, bytes | bytearray) else str(v) for k, v in (record.headers or ())}
    event_id = headers.pop(EVENT_ID_HEADER, "")
    key = record.key.decode() if isinstance(record.key, bytes | bytearray) else str(record.key or "")
    return BusMessage(
        topic=record.topic, key=key, event_id=event_id, payload=orjson.loads(record.value),
        headers=headers, offset=record.offset,
    )


__all__ = ["KafkaLog", "KafkaRelay", "TopicWait", "ensure_topic", "run_relay", "EVENT_ID_HEADER"]
