"""Review reminders: tell the responsible bodies when an s117 review falls due.

Reviews are due within 3 months of leaving hospital and then at least every
12 months (Worcs 14.1; the area agreement may set shorter); councils flag them
in their case systems (Bucks: "SWIFT(AIS) would be used to flag reviews").
The scanner re-evaluates every person on the register and, for each pending
review due within the notice period (or overdue), publishes one REVIEW_DUE
event for that (person, due date, kind). The event id is derived
from those three, and the log's event ids are unique, so scanning again — on
a timer, after a restart, on several instances — never notifies twice.
A person with a reminder to publish has their history read again under the
topic's publish lock, in the transaction that publishes it (evaluated again
if a change came since the scan), and the reminder names the changes read
(`history_changes`): the dispatcher tells it against exactly those.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.periodic import every
from hub.bus.port import (
    EVENTS_TOPIC,
    HISTORY_CHANGES,
    HISTORY_RECEIVED_BY,
    BusMessage,
    history_changes,
    history_received_by,
)
from hub.bus.payload import event_payload, status_on_the_bus
from hub.bus.sql import lock_topic, publish
from hub.codec import from_jsonable, to_jsonable
from hub.domain.agreements import AgreementBook
from hub.domain.model import DomainEvent, EventType, RegisterChange, ReviewDue, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.rules import evaluate
from hub.domain.rules.precedence import change_order
from hub.ids import uuid4, uuid5
from hub.observability.logging import get_logger
from hub.store.schema import bus_messages, not_retracted, register_changes
from hub.domain.dates import england_day

log = get_logger("hub.scheduler")
REVIEW_NAMESPACE = uuid.UUID("7d2b5a52-1d0c-4e41-9f0e-117117000aaa")


def review_event_id(person_id: str, due_on: date, kind: str) -> str:
    return uuid5(REVIEW_NAMESPACE, f"{person_id}/{due_on.isoformat()}/{kind}")


class ReviewScanner:
    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook, notice_days: int = 14,
                 today: Callable[[], date] = england_day) -> None:
        self._engine = engine
        self._ref = ref
        self._agreements = agreements
        self._notice = timedelta(days=notice_days)
        self._today = today

    async def run_once(self) -> int:
        """Scan everyone once; returns how many reminders were published."""
        today = self._today()
        async with self._engine.connect() as conn:
            people = (await conn.execute(select(register_changes.c.person_id).distinct())).scalars().all()
            await conn.rollback()
        published = 0
        for person_id in people:
            published += await self._scan_person(person_id, today)
        if published:
            log.info("review reminders published", count=published)
        return published

    async def _scan_person(self, person_id: str, today: date) -> int:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_history(person_id))).all()
            due = self._due(person_id, rows, today)
            if due:  # those already published (a reminder is published once) are not looked at again
                known = set((await conn.execute(select(bus_messages.c.event_id).where(
                    bus_messages.c.event_id.in_([event_id for event_id, *_ in due])))).scalars())
                due = [d for d in due if d[0] not in known]
            await conn.rollback()
        if not due:
            return 0
        try:
            async with self._engine.begin() as conn:
                # The topic's publish lock (held to commit; PostgreSQL only: SQLite's writer is
                # alone) before the history is read again: no change of the person commits
                # between this read and the reminders, so the history they are told against is
                # exactly the changes published before them. Scanned again if one came since.
                await lock_topic(conn, EVENTS_TOPIC)
                held = (await conn.execute(_history(person_id))).all()
                if not held:
                    return 0  # every change of theirs retracted since (hub/retraction.py): nothing is due
                if {r.change_id for r in held} != {r.change_id for r in rows}:
                    due = self._due(person_id, held, today)
                told_against = {HISTORY_CHANGES: history_changes([r.change_id for r in held]),
                                HISTORY_RECEIVED_BY: history_received_by(max(r.received_at for r in held))}
                published = 0
                for event_id, review, latest, status in due:
                    published += await self._publish(conn, event_id, person_id, review, latest, status, today,
                                                     told_against)
        except IntegrityError:
            return 0  # another instance published the same reminder first
        return published

    def _due(self, person_id: str, rows: Sequence[Any],
             today: date) -> list[tuple[str, ReviewDue, RegisterChange, S117Status]]:
        """The reminders the history `rows` makes due `today`: (event id, review, the latest change, the status)."""
        if not rows:
            return []
        changes = [from_jsonable(RegisterChange, r.canonical) for r in rows]
        status = evaluate(person_id, changes, self._ref, self._agreements, today)
        if not status.entitled:
            return []
        latest = max(changes, key=change_order)
        # Every pending review, not only the earliest: an overdue first review
        # must not hide the unscheduled one a move sets off (Worcs 14.1, 17.1).
        return [(review_event_id(person_id, review.due_on, review.kind), review, latest, status)
                for review in status.pending_reviews if review.due_on - today <= self._notice]

    async def _publish(self, conn: AsyncConnection, event_id: str, person_id: str, review: ReviewDue,
                       latest: RegisterChange, status: S117Status, today: date, told_against: dict[str, str]) -> int:
        overdue = review.due_on < today
        event = DomainEvent(
            event_type=EventType.REVIEW_DUE, person_id=person_id, change_id=latest.change_id, occurred_on=today,
            summary=(f"The section 117 {review.kind} review was due on {review.due_on.isoformat()} and is overdue."
                     if overdue else f"A section 117 {review.kind} review is due by {review.due_on.isoformat()}."),
            details={"due_on": review.due_on.isoformat(), "kind": review.kind, "citation": review.citation,
                     "trigger": review.trigger,
                     "triggered_on": review.triggered_on.isoformat() if review.triggered_on else "",
                     "overdue": "yes" if overdue else "no"},
        )
        exists = (await conn.execute(select(bus_messages.c.event_id)
                                     .where(bus_messages.c.event_id == event_id))).first()
        if exists:
            return 0
        await publish(conn, BusMessage(
            topic=EVENTS_TOPIC, key=person_id, event_id=event_id,
            payload=event_payload(event, to_jsonable(latest), status_on_the_bus(status)),
            headers={"correlation_id": uuid4(), "source": "review-scheduler",
                     "event_type": EventType.REVIEW_DUE.value, **told_against},
        ))
        return 1


def _history(person_id: str) -> Select[Any]:
    return select(register_changes.c.change_id, register_changes.c.canonical, register_changes.c.received_at) \
        .where(register_changes.c.person_id == person_id, not_retracted())


async def run_review_scanner(scanner: ReviewScanner, interval_seconds: float, stop: asyncio.Event) -> None:
    await every(interval_seconds, stop, scanner.run_once, log=log, failed="review scan failed")
