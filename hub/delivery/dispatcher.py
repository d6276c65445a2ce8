"""Dispatcher: consumes the event log and turns each event into deliveries.

For every event: routing names who must hear of it; the data-sharing
agreements decide, per recipient, whether and which field groups; each allowed
recipient with a subscription gets a FHIR message queued for delivery. The
disclosure decisions (allowed and denied alike), the queued deliveries and the
consumer offset are written in one transaction, so a crash replays the event
and the unique (subscription, event) key stops it being queued twice.

Batches: the messages waiting (up to `run_once`'s limit) are handled in one
transaction, each in its own SAVEPOINT, and the offset is committed once per
batch; a message that fails is rolled back alone, retried, and dead-lettered
after `max_handler_attempts` while the rest of its batch goes through. What
the batch reads once (history and status per person, held views, details,
subscriptions) is kept in `_BatchCache`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import Text, bindparam, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.periodic import pause
from hub.ids import uuid5
from hub.store.recording import RecordingConn
from hub.ingest.status_cache import StatusCache
from hub.bus.port import (EVENTS_TOPIC, HISTORY_CHANGES, HISTORY_RECEIVED_BY, LATER_EVENTS, MERGED,
                          REFERENCE_DATA, REINSTATED, RETRACTED, UNMERGED, BusMessage,
                          Subscriber)
from hub.codec import from_jsonable
from hub.crypto import DataProtector
from hub.delivery import queue
from hub.domain.agreements import AgreementBook
from hub.domain.handovers import events_again, handovers
from hub.domain.model import DomainEvent, EventType, Org, RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.rules import evaluate
from hub.domain.rules.precedence import is_late
from hub.domain.rules.timeline import TransferStep, transfer_steps
from hub.domain.views import (
    NOT_INVOLVED,
    TOLD,
    event_type_for,
    handover_told,
    handovers_named,
    moved_handover_reason,
    reason_for,
    views_for,
)
from hub.domain.workflows.model import WORKFLOW_SOURCE
from hub.fhir.message_json import EventMessages
from hub.fhir.messages import EXPLANATIONS, FIELD_GROUPS, PatientDetails
from hub.fhir.namespaces import DEFAULT_NAMESPACES, Namespaces
from hub.ingest.service import event_id_for, load_person_details
from hub.observability import metrics
from hub.observability.logging import bind_correlation_id, get_logger, unbind_correlation_id, writes_at
from hub.routing import recipients_for, responsible_bodies
from hub.sharing import SharingAgreements
from hub.store.db import InList, Prepared, execute_prepared, inline_writer, snapshot, write_transaction
from hub.store.schema import (
    dead_letters,
    disclosures,
    dispatched_events,
    persons,
    recipient_views,
    not_retracted,
    register_changes,
)
from hub.workflows.distribution import outgoing_of, pending_transfers
from hub.domain.dates import england_day

log = get_logger("hub.dispatcher")

# Built once (compiled once per engine): what a batch reads for its people.
# The canonical JSON as its text (the same SQL: only the result is not decoded), so that a change
# decoded in an earlier batch is taken from `Dispatcher._decoded` by its text, not decoded again.
_HISTORIES = InList("ids", lambda ids: select(register_changes.c.person_id,
                                                type_coerce(register_changes.c.canonical, Text).label("canonical"),
                                                register_changes.c.received_at)
                    .where(register_changes.c.person_id.in_(ids), not_retracted()))
# What a `_Held` keeps (not `updated_at`: a time parsed a view for nothing).
_HELD_VIEWS = InList("ids", lambda ids: select(recipient_views.c.person_id, recipient_views.c.org_code,
                                               recipient_views.c.version, recipient_views.c.view,
                                               recipient_views.c.last_event_id)
                     .where(recipient_views.c.person_id.in_(ids)))
_DETAILS = InList("ids", lambda ids: select(persons.c.person_id, persons.c.details).where(persons.c.person_id.in_(ids)))
_DISPATCHED = InList("ids", lambda ids: select(dispatched_events.c.event_id)
                     .where(dispatched_events.c.event_id.in_(ids)))
# A held view moved on: one executemany per message (hub.store.db.Prepared).
_VIEW_UPDATE = Prepared(recipient_views.update()
                        .where(recipient_views.c.person_id == bindparam("p"), recipient_views.c.org_code == bindparam("o"))
                        .values(version=bindparam("v_version"), view=bindparam("v_view"),
                                last_event_id=bindparam("v_last"), updated_at=bindparam("v_at")))
GROUP = "dispatcher"
REVIEW_SCANNER_SOURCE = "review-scheduler"  # the bus header `source` of hub/scheduler.py's reminders
# Sources of events that are not one register change's: they tell what the history held when they were
# published (their `HISTORY_CHANGES` header; before it was kept, `HISTORY_RECEIVED_BY`), or, published
# before either was kept, the whole history.
_WHOLE_HISTORY_SOURCES = frozenset({REVIEW_SCANNER_SOURCE, WORKFLOW_SOURCE})
# Said, after the difference, to each body a retraction moves (hub/retraction.py): why its position changed.
RETRACTION_REASON = "a register change recorded in error was retracted"
# Said to each body told of a retracted change whose position the retraction leaves as it was.
RETRACTED_TOLD_REASON = ("a register change you were told of was recorded in error and retracted; "
                         "your position for this person is unchanged")
# Said, after the difference, to each body the reversal of a retraction made in error moves (hub/unretractions.py).
REINSTATEMENT_REASON = "a register change retracted in error was reinstated"
# Said to each body told of a reinstated change whose position the reinstatement leaves as it was.
REINSTATED_TOLD_REASON = ("a register change you were told of was retracted in error and is reinstated: it stands "
                          "as you were first told; your position for this person is unchanged")
# Said, after the difference, to each body an NHS number merge moves (hub/merges.py).
MERGE_REASON = ("two NHS numbers of this person were merged (PDS): the superseded number's register history "
                "now belongs to the retained number's person, which this message carries")
# Said to each body told of the superseded number's person whose position the merge leaves as it was.
MERGED_TOLD_REASON = ("the NHS number you were told of for this person was superseded by a merge (PDS); the person "
                      "is now known under the retained number this message carries, with this position")
# Said, after the difference, to each body a change of the reference data moves (hub/refdata_retell.py).
REFERENCE_DATA_REASON = ("the reference data the hub determines responsible bodies by was updated (NHS England's GP "
                         "practice files or mySociety's register of local authorities), or how the hub reads it (a "
                         "council split between several successors is no responsible council until the successor "
                         "is named), with no change to the person's register history")
# Said, after the difference, to each body the reversal of a merge made in error moves (hub/unmerges.py).
UNMERGE_REASON = ("a merge of two NHS numbers made in error was reversed: they are two patients, and this "
                  "person's register history is their own again")
# Said to each body holding a position about a person whose merge was reversed that the reversal leaves as it was.
UNMERGED_TOLD_REASON = ("a merge of this person's NHS number with another was made in error and reversed: the person "
                        "is known under the NHS number this message carries, with this position; what you were told "
                        "of them as one person with the other is withdrawn")
# The most events one register change publishes (hub/ingest: `event_id_for(change, index, type)`), and more.
_EVENTS_A_CHANGE = 16
MESSAGE_NAMESPACE = uuid.UUID("0c8f7d0e-2b54-4d61-8a4b-511751175117")
# An event type's value (an Enum's `value` is a property, two calls each time it is read).
_TYPE_VALUES: dict[EventType, str] = {t: t.value for t in EventType}


VIEW_EVENT_NAMESPACE = uuid.UUID("3e6a1f4b-9c2d-4b7e-8f10-117117000f1e")


# The namespaces' bytes, taken once (`uuid5` would read each UUID's `bytes` property a message).
_MESSAGE_NAMESPACE_BYTES = MESSAGE_NAMESPACE.bytes
_VIEW_EVENT_NAMESPACE_BYTES = VIEW_EVENT_NAMESPACE.bytes


def message_id_for(event_id: str, org_code: str) -> str:
    # Stable across replays, so a recipient can de-duplicate by message id too.
    return uuid5(_MESSAGE_NAMESPACE_BYTES, f"{event_id}/{org_code}")


def view_event_id_for(trigger_event_id: str, org_code: str) -> str:
    """The event telling `org_code` its position changed because of the
    triggering bus event: a replay of that event gives the same id."""
    return uuid5(_VIEW_EVENT_NAMESPACE_BYTES, f"{trigger_event_id}/{org_code}")


def _received_by(header: str | None, received: list[tuple[RegisterChange, datetime]]) -> datetime | None:
    """A workflow's or the review scanner's `HISTORY_RECEIVED_BY` header, read once per message, as the
    history's own `received_at` values are (naive on SQLite, which gives them back in UTC)."""
    if not header or not received:
        return None
    at = datetime.fromisoformat(header)
    if received[0][1].tzinfo is None:
        return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class Dispatcher:
    def __init__(
        self, engine: AsyncEngine, log_: Subscriber, ref: ReferenceData, sharing: SharingAgreements,
        protector: DataProtector, hub_endpoint: str, max_handler_attempts: int = 3,
        agreements: AgreementBook | None = None,
        today: Callable[[], date] = england_day,
        namespaces: Namespaces = DEFAULT_NAMESPACES,
        statuses: StatusCache | None = None,
    ) -> None:
        self._engine = engine
        # Ingest's statuses (hub/ingest/status_cache.py), in the same process:
        # a person's status evaluated from exactly this history, this day,
        # with these reference data and agreements, is not evaluated again.
        self._statuses = statuses
        # The statuses this dispatcher evaluated, by the same key (person, the history's change ids,
        # the day, these reference data and agreements): a person whose events fall in two batches
        # with no change between them (a change's events split by a batch's end, a backlog whose
        # histories are whole) is not evaluated again. Its own, so that ingest's is left as ingest
        # keeps it; in a worker process (S117_SEPARATE_WORKERS) ingest's is never filled.
        self._evaluated = StatusCache()
        # Each person's views of a status (`_BatchCache.truth_for`), kept from batch to batch for
        # one day: a status taken from `_evaluated` is the same object, so its views are too.
        self._truths: collections.OrderedDict[str, tuple[S117Status, dict[str, Any]]] = collections.OrderedDict()
        self._truths_on: tuple[date, int, int] | None = None  # (the day, the sharing and area agreements' generations) they were made for
        self._log = log_
        self._ref = ref
        self._sharing = sharing
        self._protector = protector
        self._hub_endpoint = hub_endpoint
        self._ns = namespaces  # the hub's URLs under S117_CANONICAL_BASE
        self._max_attempts = max_handler_attempts
        # Without the area agreements the history cannot be re-evaluated: the
        # event's own status is used (tests of routing alone).
        self._agreements = agreements
        self._today = today
        # Failures per event id (Kafka offsets are per partition, so not unique).
        self._failures: dict[str, int] = {}
        # Register changes decoded, by their canonical JSON text (a change is never rewritten, and
        # the same text decodes to the same frozen value): a person's history is read again by each
        # batch that has an event of theirs, its older changes decoded once. Oldest out first.
        self._decoded: collections.OrderedDict[str, RegisterChange] = collections.OrderedDict()
        # Called after a batch that queued deliveries has committed (the
        # deliverers' `wake`, wired by hub.bootstrap): they need not wait for their poll.
        # Channel -> the deliverer's wake-up; only the channels a batch queued for are woken.
        self.on_queued: dict[str, Callable[[], None]] = {}
        # SQLite file: the batch's statements run inline on the loop once the
        # write lock is held (hub/store/db.py `write_transaction`, the engine's
        # shared InlineWriter), not one aiosqlite thread hop each (about 40 a
        # message); PostgreSQL: the async engine.
        self._inline = inline_writer(engine) is not None
        # The snapshot phase: a SQLite file and the SQL log (a claim to check
        # under the lock, offsets written with the batch). Kafka's offsets are
        # committed after the transaction it watches, which must be the real one.
        self._two_phases = self._inline and getattr(log_, "claim_batch", None) is not None
        # The subscriptions (organisation -> active rows) and event counters
        # (subscription -> last number) as the last committed batch left them:
        # a batch worked out on a snapshot takes them from here rather than
        # reading them again (six statements a batch of a few organisations),
        # since `_still_holds` reads both again under the lock before any write
        # and has the batch done again, locked and reading afresh, if either
        # moved (a subscription made or ended, a number another writer took).
        # Refreshed from every committed batch; dropped when one fails.
        self._known_subscriptions: dict[str, list[Any]] = {}
        self._known_numbers: dict[str, int] = {}

    def _transaction(self) -> Any:
        return write_transaction(self._engine)

    def _shared_file(self) -> bool:
        """The hub's front and worker processes share the SQLite file (`S117_SEPARATE_WORKERS`):
        then even a small batch is worked out on a snapshot, so that the front's ingest
        never waits in another process for a batch's handling, only for its writes."""
        writer = inline_writer(self._engine)
        return writer is not None and writer.turns is not None

    batch_limit = 100  # messages per batch (one transaction): S117_DISPATCH_BATCH_MAX
    # In one process, a batch this small is done at once under the lock:
    # worked out on a snapshot, it pays a second transaction, the checks
    # that what it read still holds and a replay of its writes, to spare a
    # writer waiting behind it a millisecond or two (bench/JOURNAL.md, "Sixth session").
    two_phase_from = 3

    async def run_once(self, limit: int | None = None) -> int:
        """Handle what is waiting (up to `limit` messages, in one transaction);
        returns how many messages were fetched."""
        if self._two_phases:
            batch = await self._fetch_and_work_out(limit or self.batch_limit)
        else:
            batch = await self._log.fetch(GROUP, EVENTS_TOPIC, limit or self.batch_limit)
            if batch:
                await self._handle_batch(batch)
        gauge = metrics.CONSUMER_LAG.labels(group=GROUP, topic=EVENTS_TOPIC)
        if not batch:  # nothing after the committed offset (no need to count it on every idle poll)
            gauge.set(0)
        elif (now := time.monotonic()) - self._lag_counted_at >= self.lag_every:
            # Counted at most once a `lag_every`: at a few changes a batch, a
            # count after each was a snapshot and two statements a batch.
            self._lag_counted_at = now
            gauge.set(await self._log.lag(GROUP, EVENTS_TOPIC))
        return len(batch)

    lag_every = 1.0  # seconds between counts of the lag while batches come
    # Seconds from a short batch's start before the next is fetched
    # (`run_dispatcher`; S117_DISPATCH_LINGER_MS): each batch pays for a
    # transaction, its reads, checks and fsync whatever its size (about
    # 1.5 ms of CPU on a snapshot, bench/JOURNAL.md "Seventh session").
    linger = 0.0
    # The position version a restore of the store numbers every next message above (hub/store/restores.py).
    version_floor = 0
    _lag_counted_at = float("-inf")

    async def _fetch_and_work_out(self, limit: int) -> list[BusMessage]:
        """`run_once` on a SQLite file with the SQL log: the batch fetched and
        worked out in one snapshot, its writes then made under the lock
        (`_handle_batch`, `_write_out`). One read transaction a
        batch rather than a snapshot for the fetch and another for the work:
        the offset read once, and the pages the fetch read still cached for
        the work (another process's commit in between would have made the
        second snapshot read them again). A batch too small for a snapshot
        (`two_phase_from`, in one process) is handled locked, as before."""
        fetched, worked_out = False, False
        work: _Work | None = None
        kept: RecordingConn | None = None
        try:
            async with snapshot(self._engine, consistent=True) as snap:
                start, batch = await self._log.fetch_on(snap, GROUP, EVENTS_TOPIC, limit)  # type: ignore[attr-defined]
                fetched = True
                if batch and (len(batch) >= self.two_phase_from or self._shared_file()):
                    worked_out = True
                    kept = RecordingConn(snap)
                    work = await self._work(kept, batch, keep=True, start=start)
        except Exception as exc:  # noqa: BLE001 - met again, locked (a failed fetch is raised)
            if not fetched:
                raise
            log.info("dispatch batch redone under the lock", exc_type=type(exc).__name__)
            work = None
        if batch:
            await self._handle_batch(batch, (work, kept) if worked_out else None)
        return batch

    async def _handle_batch(self, batch: list[BusMessage],
                            worked_out: "tuple[_Work | None, RecordingConn | None] | None" = None) -> None:
        """One transaction for the whole batch.

        The batch is handled first without savepoints, its messages' writes
        made at its end. If a message fails, that transaction is rolled back
        and the batch done again with a savepoint per message, where
        a message whose handling fails is rolled back to its savepoint alone:
        what came before it is committed with the offset just before it, and
        the worker backs off and fetches from it again (`_Retry`). At its
        `max_handler_attempts`-th failure it is dead-lettered inside the batch
        and the messages after it are handled in the same transaction. The
        offset is committed once, at the end, in the same transaction as the
        work (the SQL log; Kafka's is committed once that transaction has).

        On a SQLite file with the SQL log a batch of `two_phase_from` messages
        or more is first worked out on a WAL snapshot,
        without the write lock, its writes kept (hub/store/recording.py);
        then, holding the lock, the hub checks that what it read still holds
        (the claim on the log, the subscriptions and event counters it used)
        and makes the writes. Changes posted meanwhile commit rather than wait
        for the whole batch, and a worker process can work beside ingest.
        If anything it read has moved, or a message failed, the batch is done
        again as one locked transaction, as on PostgreSQL. `worked_out`: the
        snapshot's work (`_fetch_and_work_out`, which decides whether a batch
        is worked out there); None: the batch is done locked."""
        work: _Work | None = None
        tried = False  # worked out on a snapshot first: done again, it is done guarded at once
        try:
            if worked_out is not None:
                tried = True
                work = await self._write_out(*worked_out)
            if work is None:
                try:
                    async with self._transaction() as conn:
                        work = await self._work(conn, batch, keep=False, guarded=tried)
                except _Unguarded:
                    # A message failed with no savepoint to go back to: the
                    # batch is rolled back whole and done again, each message
                    # in its savepoint (the failure counted and handled there).
                    async with self._transaction() as conn:
                        work = await self._work(conn, batch, keep=False, guarded=True)
        except Exception as exc:  # noqa: BLE001 - the batch's own transaction failed (store unavailable): all again
            self._known_subscriptions.clear()
            self._known_numbers.clear()
            log.warning("dispatch batch failed", exc_type=type(exc).__name__, count=len(batch))
            raise _Retry from exc
        handled, dead, retry, cache = work.handled, work.dead, work.retry, work.cache
        if self._two_phases:  # as committed: read under the lock, or checked there (`_still_holds`)
            self._known_subscriptions.update(cache.subscriptions)
            self._known_numbers.update(cache.numbers.stored())
        cache.count_dispatched()
        for msg in handled:
            self._failures.pop(msg.event_id, None)
        for channel in cache.channels:
            wake = self.on_queued.get(channel)
            if wake is not None:
                wake()
        for _ in dead:
            metrics.DEAD_LETTERS.labels(handler="dispatcher").inc()
        if retry is not None:
            raise _Retry from retry

    async def _write_out(self, work: "_Work | None", kept: RecordingConn | None) -> "_Work | None":
        """The second phase: a snapshot's kept writes made under the lock if
        what it read still holds; None: do it again, locked."""
        if work is None or kept is None or kept.rolled_back:
            metrics.DISPATCH_REDONE.labels(reason="failed").inc()
            return None
        try:
            async with self._transaction() as conn:
                if not await self._still_holds(conn, work):
                    metrics.DISPATCH_REDONE.labels(reason="moved").inc()
                    return None
                await kept.replay(conn)
        except Exception as exc:  # noqa: BLE001 - rolled back whole: done again locked (a store that is down fails there too)
            log.info("dispatch batch redone under the lock", exc_type=type(exc).__name__)
            metrics.DISPATCH_REDONE.labels(reason="failed").inc()
            return None
        return work

    async def _still_holds(self, conn: AsyncConnection, work: "_Work") -> bool:
        """Under the write lock: nobody handled part of the batch since (the
        claim), and the subscriptions and event counters it used are as read."""
        claim = getattr(self._log, "claim_batch", None)
        if claim is not None and await claim(conn, GROUP, EVENTS_TOPIC) != work.start:
            return False
        if not await work.cache.numbers.unchanged(conn):
            return False
        held = work.cache.subscriptions
        return not held or await queue.active_subscriptions_of(conn, held) == held

    async def _work(self, conn: Any, batch: list[BusMessage], *, keep: bool,
                    guarded: bool = True, start: int | None = None) -> "_Work | None":
        """The batch's transaction: claim, read, handle each message, write
        the counters and the offset. `keep`: `conn` keeps the writes (a
        snapshot's work): a message that fails there makes it give up (None),
        to be done again under the lock. `guarded`: each message in its own
        savepoint, so that one that fails is rolled back alone; unguarded (a
        snapshot's work, and a locked batch's first try), a failure abandons
        the whole batch (`_Unguarded`) and spares every message a SAVEPOINT
        and a RELEASE (on PostgreSQL each also a statement prepared: four
        round trips a message). `start`: the group's offset as `conn` (a
        snapshot) has read it already (`_fetch_and_work_out`)."""
        retry: Exception | None = None
        handled: list[BusMessage] = []
        dead: list[str] = []
        # The SQL log can be shared by several hub instances: lock the
        # group's offset for the batch and skip what another instance
        # handled since the fetch (Kafka needs no claim: a partition has one owner).
        claim = getattr(self._log, "claim_batch", None)
        if claim is None:
            start = None
        elif keep:  # a snapshot: read the offset; the claim is made, and compared, under the lock
            if start is None:
                start = await self._log.committed(conn, GROUP, EVENTS_TOPIC)  # type: ignore[attr-defined]
        else:
            start = await claim(conn, GROUP, EVENTS_TOPIC)
        todo = [m for m in batch if start is None or m.offset >= start]
        cache = _BatchCache(today=self._today())
        if keep:  # a snapshot: checked under the lock before any write (`_still_holds`)
            cache.known_subscriptions = self._known_subscriptions
            cache.numbers = queue.EventNumbers(known=self._known_numbers)
        # Another day, or the agreements file reloaded (hub/agreements_watch.py): other field
        # groups may be granted, and the views kept were made with the old ones; or the area
        # agreements file: the statuses they were made from were evaluated under the old ones.
        truths_on = (cache.today, self._sharing.generation, getattr(self._agreements, "generation", 0))
        if self._truths_on != truths_on:
            self._truths.clear()
            self._truths_on = truths_on
        while len(self._truths) > self.truths_kept:
            self._truths.popitem(last=False)
        cache.truth = self._truths
        if not guarded or keep:  # no savepoints: a failure abandons the batch, so its writes can wait for its end
            cache.deferred = _Writes()
        if todo:
            cache.dispatched = await self._dispatched(conn, [m.event_id for m in todo])
            await self._prefetch(conn, cache, [m for m in todo if m.event_id not in cache.dispatched])
        for msg in todo:
            if self._inline:
                # Inline statements never yield: let requests in between messages
                # (under the lock, the write lock stays held, as it would across aiosqlite's hops).
                await asyncio.sleep(0)
            bound = bind_correlation_id(msg.headers.get("correlation_id"))  # the change's, on every line
            structlog.contextvars.bind_contextvars(event_id=msg.event_id, topic=msg.topic)
            try:
                if guarded and not keep:
                    cache.begin()  # only a savepoint is rolled back alone (`forget`); else the batch is abandoned
                    async with conn.begin_nested():
                        await self.handle(conn, msg, cache)
                else:
                    await self.handle(conn, msg, cache)
            except Exception as exc:  # noqa: BLE001 - a handler bug must not stop the flow: retry, then dead-letter
                if keep:
                    return None  # counted, logged and dead-lettered by the locked run
                if not guarded:
                    raise _Unguarded from exc  # done again, guarded (`_handle_batch`)
                cache.forget(msg)  # what the cache learnt from the rolled-back writes
                n = self._failures.get(msg.event_id, 0) + 1
                self._failures[msg.event_id] = n
                log.warning("dispatch failed", attempt=n, exc_type=type(exc).__name__, offset=msg.offset)
                if n < self._max_attempts:
                    retry = exc
                    break  # this one and those after it are fetched again after a back-off
                await conn.execute(dead_letters.insert().values(
                    topic=msg.topic, group_id=GROUP, offset=msg.offset, event_id=msg.event_id,
                    handler="dispatcher", reason=f"{type(exc).__name__} after {n} attempts"[:300],
                    at=datetime.now(UTC),
                ))
                dead.append(msg.event_id)
                log.error("event moved to dead letters", offset=msg.offset)
            finally:
                structlog.contextvars.unbind_contextvars("event_id", "topic")
                unbind_correlation_id(bound)
            handled.append(msg)
        await cache.flush(conn)
        if handled:
            await self._commit(handled, conn)
        return _Work(start, cache, handled, dead, retry)

    async def _commit(self, handled: list[BusMessage], conn: AsyncConnection) -> None:
        if getattr(self._log, "claim_batch", None) is not None:
            # The SQL log: one offset per topic, so the last handled covers the batch.
            await self._log.commit(GROUP, EVENTS_TOPIC, max(m.offset for m in handled) + 1, conn)
            return
        for msg in handled:  # Kafka: offsets are per partition, each message marks its own
            await self._log.commit(GROUP, EVENTS_TOPIC, msg.offset + 1, conn)

    async def _prefetch(self, conn: AsyncConnection, cache: "_BatchCache", msgs: list[BusMessage]) -> None:
        """What the batch's messages will read per person, for all its people
        at once (a statement each rather than four per person): their
        histories, the views held, the stored details and the transfers
        awaiting acceptance. `handle` reads one person alone only after a
        rolled-back message made the batch forget them."""
        people = list(dict.fromkeys(str(m.payload["event"]["person_id"]) for m in msgs))
        if not people:
            return
        cache.history.update(await self._histories(conn, people))
        cache.held.update(await self._held_views_of(conn, people))
        for row in await _DETAILS.execute(conn, people):
            cache.details[row.person_id] = row.details
        cache.pending.update(await pending_transfers(conn, people))

    @staticmethod
    async def _dispatched(conn: AsyncConnection, event_ids: list[str]) -> set[str]:
        """Which of `event_ids` were handled and committed before (replays)."""
        return set((await _DISPATCHED.execute(conn, event_ids)).scalars())

    async def handle(self, conn: AsyncConnection, msg: BusMessage, cache: "_BatchCache | None" = None) -> None:
        """Decide what each organisation must be told, inside the caller's transaction.

        1. The person's whole history is re-evaluated (the event's own status
           may be stale: older history can have arrived since).
        2. The event goes to the bodies routing names under that truth.
        3. Every organisation that is, was, or now becomes involved and
           whose held view (`recipient_views`) differs from its truth is sent
           the difference: a newly
           responsible body hears it is, a body no longer involved hears it is not and why, and a body told something
           that late history contradicts gets `s117-notification-corrected`
           naming the event it supersedes.
        Every message carries the recipient's whole position and a version one
        higher than the last it was sent (hub/domain/views.py). A register
        change's truth is the history received up to it (changes received
        since have messages of their own), and a workflow's or the review
        scanner's event's the history committed before its publishing (the
        changes its `history_changes` header names): a backlog, in any
        batches, tells each body what the events dispatched one by one would.
        A late change's `s117-responsibility-transferred` to a body whose
        position it leaves as it was (a position carries no hand-over's date)
        is not told again if the history before it held that hand-over on
        that date, and is an `s117-notification-corrected` superseding the
        event that told it if it held it on another date (a hand-over late
        history moved: `hub.domain.views.handover_told`).

        `cache` (a batch of messages in one transaction, see `_handle_batch`)
        keeps what the batch read once per person: its history and status,
        its details, the views held (updated as this handling writes them, so
        message k sees what messages before it wrote), the subscriptions.
        """
        own_cache = cache is None
        cache = cache or _BatchCache(today=self._today())
        if cache.dispatched is None:
            cache.dispatched = await self._dispatched(conn, [msg.event_id])
        if msg.event_id in cache.dispatched:
            return  # handled and committed before: a redelivery changes nothing
        # Written with the batch's others by `cache.flush` (taken back by cache.forget if rolled back).
        cache.dispatched.add(msg.event_id)
        cache.newly_dispatched[msg.event_id] = datetime.now(UTC)
        event = from_jsonable(DomainEvent, msg.payload["event"])
        person_id = event.person_id
        cache.person_of[msg.event_id] = person_id
        today = cache.today
        received = cache.history.get(person_id)
        if received is None:
            received = cache.history[person_id] = (await self._histories(conn, [person_id]))[person_id]
        # The event's change is one of the history's (the same canonical JSON): taken from there, with
        # when it arrived, rather than decoded again; decoded only if it is not there.
        change_id = msg.payload["change"].get("change_id")
        # (Loops rather than `next` or `any` of a generator here: a call a change of the history each.)
        found: RegisterChange | None = None
        arrived: datetime | None = None
        for c, t in received:
            if c.change_id == change_id:
                found, arrived = c, t
                break
        change = found if found is not None else from_jsonable(RegisterChange, msg.payload["change"])
        # A register change's events tell what the history held once that change was
        # recorded: the changes received by then, not those received since (each has
        # events of its own still to come, which tell what it changed). So a backlog
        # tells each body what the same changes dispatched one by one would, whatever
        # the batches: an older change's event never carries a later change's fact
        # (a fact the body's agreement may not grant, under an event that names
        # another). Every body it moves hears it from this change's messages, a
        # correction if the change is late, as when it was dispatched on its own.
        # The workflows' and the review scanner's events are not a change's: they
        # tell the history as it stood when they were published (the changes their
        # `history_changes` header names: those committed before them), so a change
        # committed after one was published, before it is dispatched, is told by that
        # change's own messages only, whatever its `received_at`; published before that
        # header was kept, the changes received by their `history_received_by` header,
        # and before that, the whole history.
        upto: datetime | str | None  # the history told: received up to then, these changes, or (None) all
        source = msg.headers.get("source")
        # A retraction (hub/retraction.py): the history without the retracted change, as it stood when
        # the retraction was recorded (its `history_changes`), told as late history is, to the bodies it moves.
        retraction = RETRACTED in msg.headers
        # The reversal of a retraction made in error (hub/unretractions.py): the history with the change again,
        # told as a retraction is.
        reinstated = REINSTATED in msg.headers
        # An NHS number merge (hub/merges.py): the joined history, told as a retraction is, then to each body
        # told of the superseded number's person (`merged`: that person's id).
        merged = msg.headers.get(MERGED)
        # The reversal of a merge made in error (hub/unmerges.py): the person's history as it left it, told as a
        # retraction is, then to each body holding a position about them (`in`, not `get`: no call an event).
        unmerged = UNMERGED in msg.headers
        # A change of the reference data (hub/refdata_retell.py): the whole history, evaluated again, told as a
        # retraction is, to the bodies it moves.
        redetermined = REFERENCE_DATA in msg.headers
        corrective = retraction or reinstated or merged is not None or unmerged or redetermined
        if source in _WHOLE_HISTORY_SOURCES or corrective:
            told = msg.headers.get(HISTORY_CHANGES)
            if told is not None:  # exactly the changes published before it (read under the topic's lock)
                ids = frozenset(told.split(","))
                kept = [(c, t) for c, t in received if c.change_id in ids]
                # Nothing committed since: the whole history (one status for both); else these,
                # the statuses of one batch kept by the header (the same ids, the same text).
                upto = told if len(kept) < len(received) else None
                received = kept
            else:  # published before it was kept: by `received_at` (or the whole history)
                upto = _received_by(msg.headers.get(HISTORY_RECEIVED_BY), received)
                if upto is not None:
                    if any(t > upto for _, t in received):
                        received = [(c, t) for c, t in received if t <= upto]
                    else:
                        upto = None  # nothing received since: the whole history (one status for both)
            # (A retraction's message carries a change of the history, not one it follows: nothing is told later.)
            told_later = not corrective and arrived is not None and _any_after(received, arrived)
        else:
            told_later = arrived is not None and _any_after(received, arrived)
            upto = arrived if told_later else None
            if upto is not None:
                received = [(c, t) for c, t in received if t <= upto]
                told_later = False
        history = [c for c, _ in received]
        if history and self._agreements is not None:
            statuses = cache.status.setdefault(person_id, {})
            status = statuses.get(upto)
            if status is None and self._statuses is not None:
                status = self._statuses.get(person_id, history, today, self._ref, self._agreements)
            if status is None:  # evaluated by an earlier batch from exactly this history (`_evaluated`)
                status = self._evaluated.get(person_id, history, today, self._ref, self._agreements)
            if status is None:
                status = evaluate(person_id, history, self._ref, self._agreements, today)
                self._evaluated.put(person_id, history, today, self._ref, self._agreements, status)
            statuses[upto] = status
        else:
            status = from_jsonable(S117Status, msg.payload["status"])
        # A change that sorts before a change received before it arrived late:
        # what was told since may be contradicted (a review reminder never is).
        late = corrective or (source != REVIEW_SCANNER_SOURCE and arrived is not None
                              and is_late(change, [c for c, t in received if t < arrived]))
        held = cache.held.get(person_id)
        if held is None:
            held = cache.held[person_id] = (await self._held_views_of(conn, [person_id]))[person_id]
        # A reversal: each body holding a position about the person -> the last event it had about them.
        unmerged_told = {org: h.last_event_id for org, h in held.items()} if unmerged else {}
        merged_told: dict[str, str] = {}  # a merge: each body told of the superseded person -> its last event
        carried: set[str] = set()  # ... whose view of them is now its view of the retained person
        if merged is not None:
            merged_told, carried = await self._carry_views(conn, person_id, merged, held)
        truth = cache.truth_for(person_id, status, held, lambda org: self._sharing.field_groups_for(org, today))
        send = _Sending(conn=conn, msg=msg, status=status, change=change, held=held, today=today, cache=cache,
                        now=datetime.now(UTC), correlation_id=msg.headers.get("correlation_id", ""))

        # A retraction's event is routed to no one: each body whose position it moves hears the difference
        # below. Nor is a register change's event whose change is no longer in the history (retracted
        # before this event was dispatched): it tells no fact; the history without it is told as any.
        gone = found is None and not corrective and source not in _WHOLE_HISTORY_SOURCES
        recipients = recipients_for(event, status) if not (corrective or gone) else []
        # Until a transfer is accepted the outgoing body keeps hearing (hub/workflows/distribution.py).
        pending = cache.pending.get(person_id)
        if pending is None:  # the dispatcher never changes workflow cases: once per batch
            pending = cache.pending[person_id] = (await pending_transfers(conn, [person_id]))[person_id]
        if pending and not (corrective or gone):
            recipients += outgoing_of(pending, recipients)
        steps_before: list[TransferStep] | None = None  # the history's hand-overs before this change
        told_by: dict[date, str | None] = {}  # a moved hand-over's date as told -> the event that told it
        for recipient in recipients:
            org = recipient.org_code
            # (What is held is read with `in` and `[]` in these loops, not `get`: no call a recipient.)
            target = truth[org] if org in truth else NOT_INVOLVED
            old = held[org] if org in held else None
            if event.event_type is EventType.DISPUTE_RAISED and _already_told(event, old, target):
                continue
            if late and event.event_type is EventType.RESPONSIBILITY_TRANSFERRED and old is not None \
                    and old.view == target and self._sharing.decide(org, event.event_type.value, today).allowed:
                # A late change's hand-over to a body whose position it does not move (a
                # position carries no hand-over's date) and which may hear of hand-overs: the
                # body was told it, on its date or on another, by the change that held it
                # before; told again under the same event type, it read as a second hand-over.
                if steps_before is None:
                    steps_before = self._steps_before(person_id, history, change, today)
                was = handover_told(event, handovers(steps_before))
                if was == TOLD:
                    continue  # the same hand-over on the same date: nothing new to tell
                if isinstance(was, date):  # moved to another date: a rectification (UK GDPR Art. 19)
                    # It supersedes the event that told the hand-over on the other date, if
                    # found again, else (as any correction) the one whose position the body holds.
                    if was not in told_by:
                        told_by[was] = self._told_by(person_id, received, steps_before, event, was)
                    supersedes = told_by[was] or old.last_event_id
                    reason = moved_handover_reason(event, was)
                    corrected = DomainEvent(
                        event_type=EventType.NOTIFICATION_CORRECTED, person_id=person_id,
                        change_id=change.change_id, occurred_on=event.occurred_on,
                        summary=f"A transfer of responsibility you were told of was corrected: {reason}.",
                        details={"reason": reason, "supersedes": supersedes})
                    await self._send(send, view_event_id_for(msg.event_id, org), corrected, org, target,
                                     supersedes=supersedes, reason=reason)
                    continue
            corrects = late and old is not None and bool(old.view.get("roles")) and old.view != target
            await self._send(send, msg.event_id, event, org, target,
                             supersedes=old.last_event_id if corrects else None,
                             reason=reason_for(old.view if old else None, target, status,
                                               explain=self._explains(org, event.event_type, today))
                             if corrects else None)

        # A workflow's or the review scanner's event tells the history received by its
        # publishing: a change received after the change it names has its own messages
        # still to come (or sent), which tell each body what that change made it (once, by
        # the message of the change that made it, or the last), whatever the batches.
        moved: set[str] = set()  # the bodies this message tells a new position
        for org in sorted(truth) if not told_later else ():
            target = truth[org]
            old = held[org] if org in held else None
            if (old is None and not target.get("roles")) or (old is not None and old.view == target):
                continue
            moved.add(org)
            told = old is not None and bool(old.view.get("roles"))
            # Late history that contradicts what the body was told is a
            # rectification, owed to every recipient of the data (UK GDPR
            # Art. 19: any agreement in force covers it). A new fact in its
            # turn is not: it needs its own event type granted, else it is
            # withheld (and audited as such), however the body's position moved.
            event_type = EventType.NOTIFICATION_CORRECTED if late and told else event_type_for(
                old.view if old else None, target)
            # The why (the determinations' explanations: sections, dates,
            # citations) only to a body whose agreement grants `explanations`.
            if self._routed_later(msg, event_type, org, status):
                continue  # a later message of the same change names it and is sent to the body with this position
            reason = reason_for(old.view if old else None, target, status,
                                explain=self._explains(org, event_type, today))
            if retraction:
                reason = f"{reason}; {RETRACTION_REASON}"
            elif reinstated:
                reason = f"{reason}; {REINSTATEMENT_REASON}"
            elif merged is not None:
                reason = f"{reason}; {MERGE_REASON}"
            elif unmerged:
                reason = f"{reason}; {UNMERGE_REASON}"
            elif redetermined:
                reason = f"{reason}; {REFERENCE_DATA_REASON}"
            view_event = DomainEvent(
                event_type=event_type, person_id=person_id, change_id=change.change_id,
                occurred_on=change.effective_date if event.event_type is not EventType.REVIEW_DUE else event.occurred_on,
                summary=f"Your position for this person changed: {reason}.",
                details={"reason": reason, **({"supersedes": old.last_event_id} if old is not None else {})},
            )
            await self._send(send, view_event_id_for(msg.event_id, org), view_event, org, target,
                             supersedes=old.last_event_id if old is not None and event_type is
                             EventType.NOTIFICATION_CORRECTED else None, reason=reason)
        if retraction or reinstated or merged is not None or unmerged:
            await self._tell_corrected(send, conn, cache, msg, person_id, change, truth, moved, carried,
                                       merged_told if merged is not None else None,
                                       unmerged_told if unmerged else None)
        # The message's views, deliveries and disclosure decisions, one statement
        # each; in a batch without savepoints, one each for the whole batch (`_BatchCache.flush`).
        writes = cache.deferred if cache.deferred is not None else _Writes()
        writes.store_views(person_id, send.views)
        writes.deliveries += send.deliveries
        writes.disclosures += send.audits
        # Who was told, who was not and why, counted: on the batch's "event dispatched"
        # line once committed (`_BatchCache.count_dispatched`); each recipient's decision
        # is audited in `disclosures`.
        cache.told.append((msg.event_id, msg.headers.get("correlation_id"), _TYPE_VALUES[event.event_type],
                           send.allowed, send.denied, send.unsubscribed, len(send.deliveries)))
        if cache.deferred is None:
            await writes.write(conn)
        if own_cache:
            await cache.flush(conn)
            cache.count_dispatched()

    async def _tell_corrected(self, send: Any, conn: AsyncConnection, cache: Any, msg: BusMessage,
                              person_id: str, change: RegisterChange, truth: dict[str, Any], moved: set[str],
                              carried: set[str], merged_told: dict[str, str] | None,
                              unmerged_told: dict[str, str] | None) -> None:
        """The bodies a correction tells although their position did not move (UK GDPR Art. 19), each a
        `s117-notification-corrected` superseding the last message it had, with its position:
        - a retraction: each body told of the retracted change (its events, or a position it set), which
          holds what the change said (a section, a date, a hospital);
        - a retraction's reversal: each body told of the reinstated change, which was told the retraction;
        - a merge: each body told of the superseded number's person, which holds what it was told under
          that number, unless the difference told it already with its view carried over to the retained
          person (`carried`); one the difference told is told the merge under an id of its own;
        - a merge's reversal: each body that held a position about the person as one with another."""
        told: list[tuple[str, str, str, str, str]] = []  # (body, message superseded, reason, what, view id)
        if RETRACTED in msg.headers:
            of = await self._told_of(conn, person_id, msg.headers[RETRACTED], cache)  # (`change`: the one carried)
            told += [(org, of[org], RETRACTED_TOLD_REASON, "A register change", view_event_id_for(msg.event_id, org))
                     for org in sorted(of.keys() - moved)]
        if REINSTATED in msg.headers:
            of = await self._told_of(conn, person_id, msg.headers[REINSTATED], cache)
            held = cache.held.get(person_id) or {}
            told += [(org, held[org].last_event_id if org in held else of[org], REINSTATED_TOLD_REASON,
                      "A register change", view_event_id_for(msg.event_id, org)) for org in sorted(of.keys() - moved)]
        if merged_told is not None:
            for org in sorted(merged_told):
                if org in moved and org in carried:
                    continue
                view_id = view_event_id_for(msg.event_id, org)
                if org in moved:  # told its new position above under that id: this one is the merge's own
                    view_id = view_event_id_for(view_id, org)
                told.append((org, merged_told[org], MERGED_TOLD_REASON, "A person", view_id))
        if unmerged_told is not None:
            told += [(org, unmerged_told[org], UNMERGED_TOLD_REASON, "A person", view_event_id_for(msg.event_id, org))
                     for org in sorted(unmerged_told.keys() - moved)]
        for org, supersedes, reason, what, view_id in told:
            corrected = DomainEvent(
                event_type=EventType.NOTIFICATION_CORRECTED, person_id=person_id, change_id=change.change_id,
                occurred_on=change.effective_date, summary=f"{what} you were told of was corrected: {reason}.",
                details={"reason": reason, "supersedes": supersedes})
            await self._send(send, view_id, corrected, org, truth[org] if org in truth else NOT_INVOLVED,
                             supersedes=supersedes, reason=reason)

    @staticmethod
    async def _carry_views(conn: AsyncConnection, person_id: str, superseded: str,
                           held: dict[str, "_Held"]) -> tuple[dict[str, str], set[str]]:
        """A merge's event (`MERGED`: `superseded`, the superseded number's person): each body told of them,
        with the last event it had about them; and those of them holding no view of the retained person
        (`person_id`), whose view of the superseded person becomes theirs of the retained person (a row
        written now, `held` updated): the difference to the joined history is told against what the body
        was told under the superseded number, superseding its last message. The superseded person's own
        rows stay as they were (what was told). The retained person's own id (the superseded number's
        person given the retained number): every body told of them."""
        if superseded == person_id:
            return {org: h.last_event_id for org, h in held.items()}, set()
        theirs = (await Dispatcher._held_views_of(conn, [superseded]))[superseded]
        carried: set[str] = set()
        now = datetime.now(UTC)
        for org in sorted(theirs):
            if org in held:
                continue
            view = theirs[org]
            await conn.execute(recipient_views.insert().values(
                person_id=person_id, org_code=org, version=view.version, view=view.view,
                last_event_id=view.last_event_id, updated_at=now))
            held[org] = _Held(view.version, view.view, view.last_event_id)
            carried.add(org)
        return {org: h.last_event_id for org, h in theirs.items()}, carried

    @staticmethod
    async def _told_of(conn: AsyncConnection, person_id: str, change_id: str, cache: "_BatchCache") -> dict[str, str]:
        """Each body an event of `change_id` was disclosed to (`allowed`: its own events, or a
        position message a body was told because of one), with the last such event's id. A
        change's events are `event_id_for(change_id, index, type)`; a position message's
        `view_event_id_for(that event, org)`. Read once a retraction (rare), with the batch's
        decisions not yet written."""
        ids = {event_id_for(change_id, i, t) for i in range(_EVENTS_A_CHANGE) for t in _TYPE_VALUES.values()}
        rows = [(r.recipient_org, r.event_id) for r in (await conn.execute(
            select(disclosures.c.recipient_org, disclosures.c.event_id)
            .where(disclosures.c.person_id == person_id, disclosures.c.decision == "allowed")
            .order_by(disclosures.c.disclosure_id))).all()]
        if cache.deferred is not None:
            rows += [(d["recipient_org"], d["event_id"]) for d in cache.deferred.disclosures
                     if d["person_id"] == person_id and d["decision"] == "allowed"]
        views: dict[str, set[str]] = {}
        told: dict[str, str] = {}
        for org, event_id in rows:
            if org not in views:
                views[org] = {view_event_id_for(i, org) for i in ids}
            if event_id in ids or event_id in views[org]:
                told[org] = event_id
        return told

    def _steps_before(self, person_id: str, history: list[RegisterChange], change: RegisterChange,
                      today: date) -> list[TransferStep]:
        """The hand-overs' steps the history as told before `change` holds (the
        changes told against, less `change`): what its bodies were told. Worked
        out only for a late change's transfer to a body it leaves where it was (rare)."""
        before = [c for c in history if c.change_id != change.change_id]
        if self._agreements is None or not before:
            return []
        return transfer_steps(person_id, before, self._ref, self._agreements, today)

    def _told_by(self, person_id: str, received: list[tuple[RegisterChange, datetime]], steps: list[TransferStep],
                 event: DomainEvent, was: date) -> str | None:
        """The id of the `s117-responsibility-transferred` event that told a
        hand-over `event` names on the date `was`: the event of the change at
        whose step it happens, derived again as ingest derived it (the changes
        received before it). None if that change published none telling it
        (another change's arrival revealed it)."""
        assert self._agreements is not None  # steps were found
        named = set(handovers_named(event))
        arrived = {c.change_id: at for c, at in received}
        for step in steps:
            if not any((role, old, new, was) in handovers([step]) for role, old, new in named):
                continue
            mine = arrived.get(step.change.change_id)
            if mine is None:
                continue
            events = events_again(person_id, [c for c, t in received if t < mine], step.change, self._ref,
                                  self._agreements)
            for index, told in enumerate(events):
                if (told.event_type is EventType.RESPONSIBILITY_TRANSFERRED and told.occurred_on == was
                        and named & set(handovers_named(told))):
                    return event_id_for(step.change.change_id, index, told.event_type.value)
        return None

    @staticmethod
    def _routed_later(msg: BusMessage, event_type: EventType, org: str, status: S117Status) -> bool:
        """Whether an event of `event_type` published after `msg` about the
        same person will be routed to `org`: the body's new position goes with
        the event that names it, not also before it under another event id.
        Those are the events of the same change after it (`LATER_EVENTS`: a move
        is recorded, then moved-out-of-area), wherever the batches fall. (An
        older change's messages never see a later change: `handle` tells each
        change's truth from the history received up to it.)"""
        wanted = event_type.value
        responsible = {r.org_code for r in responsible_bodies(status)}
        later = msg.headers.get(LATER_EVENTS)
        if later:
            for entry in later.split(";"):
                kind, _, told = entry.partition("=")
                if kind == wanted and (org in responsible or org in told.split(",")):
                    return True  # routed to it as `recipients_for` routes: the responsible bodies and those named
        return False

    def _explains(self, org: str, event_type: EventType, today: date) -> bool:
        """Whether `org` is told why, in an event of `event_type`: the field groups that event carries to it."""
        return EXPLANATIONS in self._sharing.decide(org, event_type.value, today).field_groups

    async def _send(
        self, send: "_Sending", event_id: str, event: DomainEvent, org: str, view: dict[str, Any],
        supersedes: str | None, reason: str | None,
    ) -> None:
        """Share one event with one organisation (if its agreement allows and it
        subscribes), carrying its position; bump its view when queued.

        About two a bus message, so its own steps are written out here rather
        than as helpers (each decision's disclosure row, its count, the view
        stored), the event type's value taken from a table (an Enum's `value`
        is a property: two calls) and the subscriptions taking the event kept
        per organisation and event type for the batch (bench/JOURNAL.md,
        "Twenty-seventh session: the dispatcher's calls an event")."""
        kind = event.event_type
        if (org, kind) in send.refused:
            return
        conn, cache = send.conn, send.cache
        event_type = _TYPE_VALUES[kind]
        decision = self._sharing.decide(org, event_type, send.today)
        # (What is kept is read with `in` and `[]` here, not `get`: no call a recipient.)
        if (key := (org, event_type)) in cache.subscribed:
            subs = cache.subscribed[key]
        else:  # read (or taken as known) even for a body refused: `_still_holds` checks them all
            subs = cache.subscribed[key] = await self._subscriptions(conn, org, event_type, cache)
        if not decision.allowed:
            send.refused.add((org, kind))
            send.audits.append(queue.disclosure_row(
                event_id=event_id, person_id=event.person_id, event_type=event_type, recipient_org=org,
                decision="denied", agreement_id=decision.agreement_id, reason=decision.reason, channel=None))
            cache.counted[(event_type, "denied")] += 1
            send.denied += 1
            return
        if not subs:
            send.refused.add((org, kind))
            send.audits.append(queue.disclosure_row(
                event_id=event_id, person_id=event.person_id, event_type=event_type, recipient_org=org,
                decision="no-subscription", agreement_id=decision.agreement_id,
                field_groups=sorted(decision.field_groups), reason=queue.NO_SUBSCRIPTION, channel=None))
            cache.counted[(event_type, "no-subscription")] += 1
            send.unsubscribed += 1
            return
        if send.patient is None:
            send.patient = cache.patients.get(event.person_id)
            if send.patient is None:
                send.patient = cache.patients[event.person_id] = await self._patient(conn, event.person_id, cache)
        old = send.held[org] if org in send.held else None
        # Above the floor a restore left (hub/store/restores.py): never a version the displaced store gave.
        version = max(old.version if old is not None else 0, self.version_floor) + 1
        message_id = message_id_for(event_id, org)
        # The event message carries the FHIR field groups only; `funding`
        # (costs, providers) is served by the person query and statements.
        included = decision.field_groups & FIELD_GROUPS
        messages = send.messages  # the parts of the message every recipient of this status shares, made once
        if messages is None:  # and kept for the person's next message in the batch (a move is three events)
            display = send.legal_status_display(self._legal_status_display)
            messages = cache.messages.get(event.person_id)
            if messages is None or not messages.serves(send.status, send.change, send.patient, display):
                messages = cache.messages[event.person_id] = EventMessages(
                    status=send.status, change=send.change, patient=send.patient, source_endpoint=self._hub_endpoint,
                    legal_status_display=display, ns=self._ns)
            send.messages = messages
        # `build_event_message` with the event's Task (transfer / dispute events: `add_task`), serialised.
        body = messages.render(
            event=event, message_id=message_id, sent_at=datetime.now(UTC), recipient=self._org(org, send.status),
            include=included, position=view, version=version, supersedes=supersedes, reason=reason)
        queued = 0
        payload = self._protector.encrypt(body)
        groups = sorted(included)
        for sub in subs:
            if (sub.subscription_id, event_id) in send.queued:
                continue  # already on this subscription's queue (the unique key would refuse it)
            send.queued.add((sub.subscription_id, event_id))
            # Queued with the message's others at the end of its handling (hub.delivery.queue).
            send.deliveries.append(queue.delivery_row(
                subscription_id=sub.subscription_id, event_id=event_id, message_id=message_id,
                event_type=event_type, payload=payload, correlation_id=send.correlation_id,
                event_number=await cache.numbers.take(conn, sub.subscription_id), now=send.now,
                field_groups=groups))
            queued += 1
            cache.channels.add(sub.channel)
            send.audits.append(queue.disclosure_row(
                event_id=event_id, person_id=event.person_id, event_type=event_type, recipient_org=org,
                decision="allowed", agreement_id=decision.agreement_id, field_groups=groups,
                reason=decision.reason, channel=sub.channel))
        if queued:
            # What `org` now holds: written with the message's other views at the end of its handling
            # (inserted or updated, whichever the first store of this handling was).
            send.views[org] = ({"version": version, "view": view, "last_event_id": event_id,
                                "updated_at": datetime.now(UTC)}, send.views[org][1] if org in send.views else old is None)
            send.held[org] = _Held(version, view, event_id)
        cache.counted[(event_type, "allowed")] += 1
        send.allowed += 1
        if cache.debug:  # each recipient at DEBUG; the message's counts at INFO (end of `handle`)
            log.debug("event queued for recipient", recipient=org, event_type=event_type,
                      count=queued, decision="allowed")

    truths_kept = 2_048  # people whose views are kept from batch to batch (`_truths`)
    decoded_kept = 4_096  # register changes kept decoded (`_decoded`): a few MB (a change about 1.5 KB with its text)

    async def _histories(self, conn: AsyncConnection,
                         people: list[str]) -> dict[str, list[tuple[RegisterChange, datetime]]]:
        """Every change recorded for each person, with when the hub received it."""
        out: dict[str, list[tuple[RegisterChange, datetime]]] = {p: [] for p in people}
        decoded = self._decoded
        for r in await _HISTORIES.execute(conn, people):
            canonical = r.canonical
            if type(canonical) is not str:  # a driver that decodes JSON itself (asyncpg): decoded here
                change = from_jsonable(RegisterChange, canonical)
            else:
                change = decoded.get(canonical)
                if change is None:
                    change = decoded[canonical] = from_jsonable(RegisterChange, orjson.loads(canonical))
                    if len(decoded) > self.decoded_kept:
                        decoded.popitem(last=False)
            out[r.person_id].append((change, r.received_at))
        return out

    @staticmethod
    async def _held_views_of(conn: AsyncConnection, people: list[str]) -> dict[str, dict[str, "_Held"]]:
        out: dict[str, dict[str, _Held]] = {p: {} for p in people}
        for r in await _HELD_VIEWS.execute(conn, people):
            out[r.person_id][r.org_code] = _Held(r.version, r.view, r.last_event_id)
        return out

    async def _subscriptions(self, conn: AsyncConnection, org_code: str, event_type: str,
                             cache: "_BatchCache") -> list[Any]:
        rows = cache.subscriptions.get(org_code)
        if rows is None:  # once per organisation per batch (the dispatcher never changes them)
            known = cache.known_subscriptions
            rows = known.get(org_code) if known is not None else None
            if rows is None:
                rows = await queue.active_subscriptions(conn, org_code)
            cache.subscriptions[org_code] = rows
        return queue.subscribed(rows, event_type)

    async def _patient(self, conn: AsyncConnection, person_id: str, cache: "_BatchCache") -> PatientDetails:
        stored = cache.details.get(person_id)
        if stored is None:
            stored = (await _DETAILS.execute(conn, [person_id])).one().details
        d = load_person_details(self._protector, stored)
        return PatientDetails(
            nhs_number=d["nhs_number"], given_name=d.get("given_name") or "", family_name=d.get("family_name") or "",
            birth_date=date.fromisoformat(d["birth_date"]) if d.get("birth_date") else None,
            postcode=d.get("postcode"),
        )

    def _org(self, code: str, status: S117Status) -> Org:
        for det in (status.responsible_council, status.responsible_commissioner, status.coordinating_council):
            if det is not None and det.org is not None and det.org.code == code:
                return det.org
        today = england_day()
        found = (self._ref.council(code, today) if code[:1] in "EWSN" and len(code) == 9 else
                 self._ref.commissioner_successor(code, today) or self._ref.hospital(code))
        return found or Org(code=code, name=code, kind="organisation")

    def _legal_status_display(self, status: S117Status, change: RegisterChange) -> str | None:
        code = status.qualifying_section_code or status.entitling_section_code or change.legal_status_code
        if not code:
            return None
        # Kept per code for these reference data (they never change once loaded: a handling's first
        # message asked the look-up again, six calls, for one of a few codes).
        if self._displays_of is not self._ref:
            self._displays, self._displays_of = {}, self._ref
        if code in self._displays:
            return self._displays[code]
        if len(self._displays) >= 1_024:  # any code may come in a change: bounded
            self._displays.clear()
        ls = self._ref.legal_status(code)
        display = self._displays[code] = ls.description if ls else None
        return display

    _displays: dict[str, str | None]
    _displays_of: Any = None  # the reference data `_displays` were read from


def _any_after(received: list[tuple[RegisterChange, datetime]], arrived: datetime) -> bool:
    """Whether a change of `received` arrived after `arrived` (a loop: `any` of a generator is a call a change)."""
    for _, t in received:
        if t > arrived:
            return True
    return False


def _already_told(event: DomainEvent, old: "_Held | None", target: dict[str, Any]) -> bool:
    """Whether the body holding `old` has been told the fact `event` announces:
    a dispute's raise to a body whose position, unchanged by it, already names
    the dispute (a party's record of its outcome, arriving first, opened it:
    hub/domain/rules/engine.py `_on_dispute_resolved`, and the parties heard it
    raised then). Told again, it would be one fact under two event ids."""
    if event.event_type is not EventType.DISPUTE_RAISED or old is None or old.view != target:
        return False
    dispute_id = event.details.get("dispute_id")
    return any(d.get("dispute_id") == dispute_id for d in old.view.get("disputes", ()))


@dataclass
class _Held:
    """A row of recipient_views: what the organisation was last told."""

    version: int
    view: dict[str, Any]
    last_event_id: str


@dataclass
class _Sending:
    """What one bus message's handling shares between its sends."""

    conn: AsyncConnection
    msg: BusMessage
    status: S117Status
    change: RegisterChange
    held: dict[str, _Held]
    today: date
    cache: "_BatchCache"
    now: datetime
    correlation_id: str = ""  # the bus message's header, on its deliveries
    patient: PatientDetails | None = None
    refused: set[tuple[str, EventType]] = field(default_factory=set)
    audits: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    queued: set[tuple[str, str]] = field(default_factory=set)  # (subscription, event id)
    views: dict[str, tuple[dict[str, Any], bool]] = field(default_factory=dict)  # org -> (row values, new row)
    # Recipients allowed, denied and allowed with no subscription: the message's log line
    allowed: int = 0
    denied: int = 0
    unsubscribed: int = 0

    messages: EventMessages | None = None  # the recipients' messages (`_send`), made at the first
    _display: Any = field(default=None)  # the legal status's display (`legal_status_display`), once worked out
    _display_known: bool = False

    def legal_status_display(self, look_up: Callable[[S117Status, RegisterChange], str | None]) -> str | None:
        """`look_up(status, change)`: the same for every message of this handling, asked once."""
        if not self._display_known:
            self._display, self._display_known = look_up(self.status, self.change), True
        return self._display


@dataclass
class _BatchCache:
    """What a batch of messages handled in one transaction reads once.

    Per person: the history (the dispatcher never writes register changes, and
    every change of a message in the batch was committed before the message
    was published), its evaluation (same history, same day), the decrypted
    details, and the views held, which `_send` updates as it writes them.
    Per organisation: its active subscriptions. `forget` drops a person's
    entries when a message's savepoint is rolled back."""

    today: date
    dispatched: set[str] | None = None  # event ids handled and committed before, or in this batch
    history: dict[str, list[tuple[RegisterChange, datetime]]] = field(default_factory=dict)
    # person -> (the arrival its history was read up to, or a workflow's or reminder's
    # `HISTORY_CHANGES`; None: all of it) -> its status
    status: dict[str, dict[datetime | str | None, S117Status]] = field(default_factory=dict)
    held: dict[str, dict[str, _Held]] = field(default_factory=dict)
    patients: dict[str, PatientDetails] = field(default_factory=dict)
    # person -> the parts its recipients' messages share (`_send`), for the status, change and details
    # they were made of
    messages: dict[str, EventMessages] = field(default_factory=dict)
    subscriptions: dict[str, list[Any]] = field(default_factory=dict)
    # (organisation, event type) -> its subscriptions taking that event type (`queue.subscribed`)
    subscribed: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    # A snapshot's batch: the subscriptions the last committed batch left (`Dispatcher._known_subscriptions`).
    known_subscriptions: dict[str, list[Any]] | None = None
    details: dict[str, bytes] = field(default_factory=dict)  # person -> stored (encrypted) details
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # person -> transfers awaiting acceptance
    # person -> (the status, every organisation's view of it: `views_for`), for the person's next message
    truth: dict[str, tuple[S117Status, dict[str, Any]]] = field(default_factory=dict)
    person_of: dict[str, str] = field(default_factory=dict)  # event id -> person id
    numbers: queue.EventNumbers = field(default_factory=queue.EventNumbers)
    newly_dispatched: dict[str, datetime] = field(default_factory=dict)  # written by `flush`
    # (event type, decision) -> messages, counted into s117_events_dispatched_total once committed.
    counted: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # The channels deliveries were queued on (an over-count if a savepoint rolls back: only a wake-up).
    channels: set[str] = field(default_factory=set)
    # Per message handled: (event id, correlation id, event type, recipients allowed, denied,
    # without a subscription, deliveries queued), the batch's "event dispatched" line.
    told: list[tuple[str, str | None, str, int, int, int, int]] = field(default_factory=list)
    # In a batch without savepoints (`_work`, unguarded): the messages' views,
    # deliveries and disclosures, written at its end by `flush`; None: each
    # message writes its own (in its savepoint).
    deferred: "_Writes | None" = None
    debug: bool = field(default_factory=lambda: writes_at(logging.DEBUG))  # each recipient logged
    _numbers_before: dict[str, int] = field(default_factory=dict)
    _counted_before: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def count_dispatched(self) -> None:
        """The batch's messages, once committed: counted in the metrics, and
        one "event dispatched" line for them all. A line a message was about
        4% of the back process's CPU at one client (bench/JOURNAL.md,
        "Sixteenth session"). Each field is a list in the messages' order
        (the i-th event id went with the i-th correlation id, event type,
        recipients allowed, ...), so a search for a change's correlation id
        still finds its dispatch; the line names no person."""
        for (event_type, decision), n in self.counted.items():
            metrics.DISPATCHED.labels(event_type=event_type, decision=decision).inc(n)
        self.counted.clear()
        told, self.told = self.told, []
        if told:
            event_ids, correlation_ids, event_types, allowed, denied, unsubscribed, queued = map(list, zip(*told, strict=True))
            log.info("event dispatched", topic=EVENTS_TOPIC, count=len(told), event_ids=event_ids,
                     correlation_ids=correlation_ids, event_types=event_types, allowed=allowed, denied=denied,
                     unsubscribed=unsubscribed, queued=queued)

    def begin(self) -> None:
        """Before a message's savepoint: what `forget` puts back."""
        self._numbers_before = self.numbers.snapshot()
        self._counted_before = collections.Counter(self.counted)

    def truth_for(self, person_id: str, status: S117Status, held: dict[str, "_Held"],
                  groups_of: Callable[[str], frozenset[str]]) -> dict[str, Any]:
        """`views_for(status, held, groups_of)`, worked out once for a person's
        messages in the batch (a move is three events for the same status):
        again only if the status is another or an organisation is held that
        the views do not name (one told since, as not involved). The views
        are read, never changed: those `_send` stores are the same objects.
        A dispatcher's batches share `truth` (`Dispatcher._truths`, one day's)."""
        kept = self.truth.get(person_id)
        if kept is not None and kept[0] is status and held.keys() <= kept[1].keys():
            return kept[1]
        truth = views_for(status, held, groups_of)
        self.truth[person_id] = (status, truth)
        return truth

    def forget(self, msg: BusMessage) -> None:
        """The message's savepoint was rolled back: drop what it changed."""
        if self.dispatched is not None:
            self.dispatched.discard(msg.event_id)
        self.newly_dispatched.pop(msg.event_id, None)
        self.numbers.restore(self._numbers_before)
        self.counted = self._counted_before
        self.told = [t for t in self.told if t[0] != msg.event_id]
        person = self.person_of.pop(msg.event_id, None)
        if person is not None:
            for per_person in (self.history, self.status, self.held, self.patients, self.details, self.pending,
                               self.truth):
                per_person.pop(person, None)

    async def flush(self, conn: AsyncConnection) -> None:
        """The batch's writes kept until its end: the messages' views,
        deliveries and disclosures if deferred, the subscriptions' event
        counters and the dispatched_events rows (in the batch's transaction)."""
        if self.deferred is not None:
            await self.deferred.write(conn)
            self.deferred = _Writes()
        await self.numbers.flush(conn)
        if self.newly_dispatched:
            await conn.execute(dispatched_events.insert(),
                               [{"event_id": e, "at": at} for e, at in self.newly_dispatched.items()])
            self.newly_dispatched = {}


@dataclass
class _Writes:
    """Rows for recipient_views (new and updated), deliveries and disclosures,
    written in that order (a view inserted before any update of it).

    A view is one row per (person, organisation), each write setting all of
    its values: where a batch's messages (`_BatchCache.deferred`) move one
    view several times (a move is three events for one person), the row is
    written once with the last values, an update of a view the batch
    inserts folded into its insert. The rows left are those the writes one
    by one would leave."""

    view_inserts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (person, org) -> row
    view_updates: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    disclosures: list[dict[str, Any]] = field(default_factory=list)

    def store_views(self, person_id: str, views: dict[str, tuple[dict[str, Any], bool]]) -> None:
        """A message's views (`_Sending.views`: org -> (values, new row))."""
        for org, (v, new) in views.items():
            key = (person_id, org)
            inserted = self.view_inserts.get(key)
            if inserted is not None:  # inserted by this batch: the insert takes the later values
                inserted.update(v)
            elif new:
                self.view_inserts[key] = {"person_id": person_id, "org_code": org, **v}
            else:
                self.view_updates[key] = {"p": person_id, "o": org, "v_version": v["version"], "v_view": v["view"],
                                          "v_last": v["last_event_id"], "v_at": v["updated_at"]}

    async def write(self, conn: AsyncConnection) -> None:
        if self.view_inserts:
            await conn.execute(recipient_views.insert(), list(self.view_inserts.values()))
        if self.view_updates:
            await execute_prepared(conn, _VIEW_UPDATE, list(self.view_updates.values()))
        if self.deliveries:
            await queue.insert_deliveries(conn, self.deliveries)
        if self.disclosures:
            await conn.execute(disclosures.insert(), self.disclosures)


@dataclass
class _Work:
    """What a batch's transaction did: the claim it read, its cache, the
    messages handled and dead-lettered, the failure to retry after."""

    start: int | None
    cache: "_BatchCache"
    handled: list[BusMessage]
    dead: list[str]
    retry: Exception | None


class _Retry(Exception):
    """Signals the worker loop to back off before the next attempt."""


class _Unguarded(Exception):
    """A message failed in a batch run without savepoints: roll it all back, do it again guarded."""


async def run_dispatcher(dispatcher: Dispatcher, poll_seconds: float, stop: asyncio.Event) -> None:
    # The SQL log says when this process has published (hub.bus.sql.SqlLog.published):
    # the dispatcher then fetches at once rather than at its next poll.
    published = getattr(dispatcher._log, "published", None)
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        try:
            handled = await dispatcher.run_once()
        except _Retry:
            handled = 0
            await asyncio.sleep(min(2.0, poll_seconds * 5))
        if handled and handled < dispatcher.batch_limit and dispatcher.linger > 0:
            # A short batch while changes keep coming: the next one gathers
            # for up to `linger` from this one's start (as a Kafka producer's
            # linger.ms), rather than a batch, its transaction and its fsync
            # for every change or two. After a quiet spell the first event
            # is still dispatched at once (the wait below).
            rest = started + dispatcher.linger - loop.time()
            if rest > 0:
                await pause(stop, rest)
            continue
        if not handled:
            waiters = [asyncio.ensure_future(stop.wait())]
            if published is not None:
                waiters.append(asyncio.ensure_future(published()))
            try:
                await asyncio.wait(waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
