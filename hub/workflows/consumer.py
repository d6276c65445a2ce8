"""The workflows' own consumer of the event log (group "workflows") and the
clock scanner's loop.

The consumer opens a transfer case when `s117-responsibility-transferred`
appears and a dispute case when `s117-dispute-raised` does (a source's own
register change), and closes a dispute a source resolves on the register.
It withdraws a transfer case (open, or accepted) when a register change
arriving late shows the hand-over never happened, or happened on another date
(superseded by that date's case) (`s117-register-change-recorded` of a person
with such a case: `WorkflowService.on_history_changed`; the engine tells a
transfer the late change reveals, never one it takes away), and, on a
retraction's event (hub/retraction.py) of a person with such a transfer case
or an open or resolved dispute case, the transfer cases the retracted change
takes away, the dispute case it raised and the one whose resolution rested on
it (`WorkflowService.on_retracted`); on a merge's event (hub/merges.py: two
NHS numbers merged, the superseded person's history and cases joined to the
retained person's) of a person with such a transfer case, the transfer cases
whose hand-over the joined history no longer holds (`WorkflowService.on_merged`).
It handles a batch of messages in one transaction under the group's offset row
lock (each interesting one in a savepoint) and commits the offset in that
transaction (as the dispatcher does), so a replay opens nothing twice; case
ids are derived from the event id for the same reason. A run of events that
concern no case costs no more than the one offset commit of its batch (and,
when it records changes that came late, one read for whether any of their
people has a transfer case late history can withdraw; their payloads are not
read). A change in its turn (its recorded event's header `late` is "0") is
passed over unread: accepted cases stay withdrawable for good, so without it
every change of anyone who had ever moved would be read.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from hub.periodic import every
from hub.bus.port import EVENTS_TOPIC, HISTORY_CHANGES, LATE, MERGED, RETRACTED, BusMessage, Subscriber
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.schema import dead_letters
from hub.workflows.service import RECORDED, WorkflowService
from hub.store.db import snapshot, write_transaction
from hub.bus.sql import lock_topic
from hub.bus.port import UNMERGED  # a merge made in error reversed (hub/unmerges.py)
from hub.bus.port import REINSTATED  # a retraction made in error reversed (hub/unretractions.py)

log = get_logger("hub.workflows.consumer")
GROUP = "workflows"
TRANSFERRED = "s117-responsibility-transferred"
DISPUTE_RAISED = "s117-dispute-raised"
# The events whose payload the consumer reads.
INTERESTING = frozenset({TRANSFERRED, DISPUTE_RAISED, "s117-dispute-resolved"})


def interesting(msg: BusMessage) -> bool:
    return msg.headers.get("event_type") in INTERESTING


def recorded(msg: BusMessage) -> bool:
    """A register change's first event: the person's history changed (the key is the person)."""
    return msg.headers.get("event_type") == RECORDED


def retraction(msg: BusMessage) -> bool:
    """A retraction's event (hub/retraction.py): the person's history lost a
    change, which can take away a hand-over a transfer case was opened for."""
    return RETRACTED in msg.headers


def reinstatement(msg: BusMessage) -> bool:
    """A reinstatement's event (hub/unretractions.py): the person's history holds a retracted change again,
    whose own events may open a case they did not open while it was retracted. Rare: always handled."""
    return REINSTATED in msg.headers


def merge(msg: BusMessage) -> bool:
    """A merge's event (hub/merges.py): the person's history gained the superseded person's, which can
    take away a hand-over a transfer case (theirs, or the superseded person's, moved with it) was opened for.
    Also a reversal's (hub/unmerges.py): each person's history lost the other's, which can take away a hand-over
    the joined history held."""
    return MERGED in msg.headers or UNMERGED in msg.headers


def recorded_late(msg: BusMessage) -> bool:
    """A register change's first event whose change may have come late: only
    late history can withdraw a transfer case (`on_history_changed`), and the
    header says which changes came in their turn (hub/bus/port.py LATE; an
    event published before it was kept is taken as possibly late)."""
    return recorded(msg) and msg.headers.get(LATE) != "0"


class WorkflowConsumer:
    def __init__(self, service: WorkflowService, bus: Subscriber, engine, max_attempts: int = 3) -> None:  # noqa: ANN001
        self._service = service
        self._bus = bus
        self._engine = engine
        self._max_attempts = max_attempts
        self._failures: dict[str, int] = {}

    async def handle(self, conn, msg: BusMessage) -> None:  # noqa: ANN001
        """Handle one message in the caller's transaction (the loop below, and
        the engineers' replay of a dead letter, POST /v1/ops/dead-letters/{id}/replay).
        Idempotent: case ids come from the event, and an event that opened a
        case opens nothing again.

        The events topic's publish lock first (PostgreSQL; nothing on SQLite),
        before any of the person's cases is locked: every writer that locks
        both takes them in that order (a merge, a retraction's reversal:
        hub/corrections.py), and a handler that locked a case and then the
        topic to publish its step would deadlock with one of them
        (tests/contract/test_workflow_lock_order.py)."""
        await lock_topic(conn, EVENTS_TOPIC)
        if interesting(msg):
            await self._service.on_event(conn, msg.payload, msg.event_id)
        elif retraction(msg):
            told = msg.headers.get(HISTORY_CHANGES)
            await self._service.on_retracted(conn, msg.key, msg.headers[RETRACTED],
                                             frozenset(told.split(",")) if told is not None else None)
        elif reinstatement(msg):
            told = msg.headers.get(HISTORY_CHANGES)
            await self._service.on_reinstated(conn, msg.key, msg.headers[REINSTATED],
                                              frozenset(told.split(",")) if told is not None else None)
        elif merge(msg):
            told = msg.headers.get(HISTORY_CHANGES)
            await self._service.on_merged(conn, msg.key, frozenset(told.split(",")) if told is not None else None,
                                          unmerged=UNMERGED in msg.headers)
        elif recorded_late(msg):
            await self._service.on_history_changed(conn, msg.key, msg.event_id)

    passed_commit_seconds = 1.0  # how long an offset moved past uninteresting events may go unwritten

    async def run_once(self, limit: int = 100) -> int:
        """Handle what is waiting in one transaction (most events interest no
        workflow: they only move the offset), each interesting one in its own
        savepoint; returns how many messages were handled."""
        batch = await self._bus.fetch(GROUP, EVENTS_TOPIC, limit, payload_for=INTERESTING)
        handled: list[BusMessage] = []
        dead = 0
        pass_over = getattr(self._bus, "pass_over", None)  # the SQL log (hub/bus/sql.py)
        # People whose history a change that may have come late changed (one in its turn withdraws nothing).
        changed = list(dict.fromkeys(m.key for m in batch if recorded_late(m) or retraction(m) or merge(m)))
        # People a retraction's event names: it may also withdraw a dispute case the retracted change raised.
        retracted = list(dict.fromkeys(m.key for m in batch if retraction(m)))
        if pass_over is not None:
            if not batch:
                await self._bus.commit_passed(GROUP, EVENTS_TOPIC, self.passed_commit_seconds)
            elif not any(interesting(m) or reinstatement(m) for m in batch) \
                    and not await self._any_withdrawable_transfer(changed) \
                    and not await self._any_open_dispute(retracted):
                # Nothing for a workflow: the offset moves in memory and is
                # written with the next commit or within a second, not in a
                # write transaction of its own per batch.
                pass_over(GROUP, EVENTS_TOPIC, batch[-1].offset + 1)
                return len(batch)
        if batch:
            async with write_transaction(self._engine) as conn:  # inline on SQLite (hub/store/db.py)
                # The SQL log: lock the group's offset for the batch, skip what
                # another instance handled since the fetch.
                claim = getattr(self._bus, "claim_batch", None)
                start = await claim(conn, GROUP, EVENTS_TOPIC) if claim is not None else None
                # Whose recorded changes may withdraw a transfer: read under the
                # claim (another instance may have opened cases since the
                # fetch), and the people this batch opens a transfer for.
                watched = await self._service.people_with_withdrawable_transfers(conn, changed)
                disputed = await self._service.people_with_open_disputes(conn, retracted)
                for msg in batch:
                    if start is not None and msg.offset < start:
                        continue
                    if msg.headers.get("event_type") == TRANSFERRED:
                        watched.add(msg.key)
                    elif msg.headers.get("event_type") == DISPUTE_RAISED:
                        disputed.add(msg.key)
                    if interesting(msg) or ((recorded_late(msg) or retraction(msg) or merge(msg))
                                            and msg.key in watched) \
                            or (retraction(msg) and msg.key in disputed) or reinstatement(msg):
                        try:
                            async with conn.begin_nested():
                                await self.handle(conn, msg)
                        except Exception as exc:  # noqa: BLE001 - retry, then dead-letter; never stop the flow
                            n = self._failures.get(msg.event_id, 0) + 1
                            self._failures[msg.event_id] = n
                            log.warning("workflow consumer failed", attempt=n, exc_type=type(exc).__name__,
                                        offset=msg.offset)
                            if n < self._max_attempts:
                                break  # retry this message (and keep order) after a pause
                            await conn.execute(dead_letters.insert().values(
                                topic=msg.topic, group_id=GROUP, offset=msg.offset, event_id=msg.event_id,
                                handler="workflows", reason=f"{type(exc).__name__} after {n} attempts"[:300],
                                at=datetime.now(UTC)))
                            dead += 1
                    handled.append(msg)
                if handled and claim is not None:  # one offset per topic: the last covers the batch
                    await self._bus.commit(GROUP, EVENTS_TOPIC, handled[-1].offset + 1, conn)
                else:
                    for msg in handled:  # Kafka: per partition, each message marks its own
                        await self._bus.commit(GROUP, EVENTS_TOPIC, msg.offset + 1, conn)
        for msg in handled:
            self._failures.pop(msg.event_id, None)
        if dead:
            metrics.DEAD_LETTERS.labels(handler="workflows").inc(dead)
        gauge = metrics.CONSUMER_LAG.labels(group=GROUP, topic=EVENTS_TOPIC)
        if not batch:  # nothing fetched: nothing waiting
            gauge.set(0)
        elif (now := time.monotonic()) - self._lag_counted_at >= self.lag_every:
            # At most once a `lag_every` while batches come, as the dispatcher
            # counts its own: on Kafka a count is four requests to the broker
            # (topic metadata, end and start offsets, the group's offsets).
            self._lag_counted_at = now
            gauge.set(await self._bus.lag(GROUP, EVENTS_TOPIC))
        return len(handled)

    async def _any_withdrawable_transfer(self, people: list[str]) -> bool:
        """Whether any of `people` has a transfer case late history can withdraw, on a snapshot (no write
        lock to find none)."""
        if not people:
            return False
        async with snapshot(self._engine) as snap:
            return bool(await self._service.people_with_withdrawable_transfers(snap, people))

    async def _any_open_dispute(self, people: list[str]) -> bool:
        """Whether any of `people` has an open or resolved dispute case (a retraction may withdraw or reopen
        it), on a snapshot."""
        if not people:
            return False
        async with snapshot(self._engine) as snap:
            return bool(await self._service.people_with_open_disputes(snap, people))

    lag_every = 1.0  # seconds between counts of the lag while batches come
    _lag_counted_at = float("-inf")


async def run_workflow_consumer(consumer: WorkflowConsumer, poll_seconds: float, stop: asyncio.Event) -> None:
    await every(poll_seconds, stop, consumer.run_once, log=log, failed="workflow consumer round failed",
                until_idle=True)


async def run_workflow_scanner(service: WorkflowService, interval_seconds: float, stop: asyncio.Event) -> None:
    await every(interval_seconds, stop, service.scan, log=log, failed="workflow clock scan failed")
