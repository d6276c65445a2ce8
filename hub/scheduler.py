"""Review reminders: tell the responsible bodies when an s117 review falls due.

Reviews are due within 3 months of leaving hospital and then at least every
12 months (Worcs 14.1; the area agreement may set shorter); councils flag them
in their case systems (Bucks: "SWIFT(AIS) would be used to flag reviews").
The scanner re-evaluates every person on the register and, for each pending
review due within the notice period (or overdue), publishes one REVIEW_DUE
event for that (person, due date, kind). The event id is derived
from those three, and the log's event ids are unique, so scanning again — on
a timer, after a restart, on several instances — never notifies twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.bus.port import EVENTS_TOPIC, HISTORY_RECEIVED_BY, BusMessage, history_received_by
from hub.bus.payload import event_payload, status_on_the_bus
from hub.bus.sql import publish
from hub.codec import from_jsonable, to_jsonable
from hub.domain.agreements import AgreementBook
from hub.domain.model import DomainEvent, EventType, RegisterChange, ReviewDue, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.rules import evaluate
from hub.domain.rules.precedence import change_order
from hub.ids import uuid5
from hub.observability.logging import get_logger
from hub.store.schema import bus_messages, register_changes

log = get_logger("hub.scheduler")
REVIEW_NAMESPACE = uuid.UUID("7d2b5a52-1d0c-4e41-9f0e-117117000aaa")


def review_event_id(person_id: str, due_on: date, kind: str) -> str:
    return uuid5(REVIEW_NAMESPACE, f"{person_id}/{due_on.isoformat()}/{kind}")


class ReviewScanner:
    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook, notice_days: int = 14,
                 today: Callable[[], date] = lambda: datetime.now(UTC).date()) -> None:
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
            rows = (await conn.execute(select(register_changes.c.canonical, register_changes.c.received_at)
                                       .where(register_changes.c.person_id == person_id))).all()
            await conn.rollback()
        changes = [from_jsonable(RegisterChange, r.canonical) for r in rows]
        status = evaluate(person_id, changes, self._ref, self._agreements, today)
        if not status.entitled:
            return 0
        latest = max(changes, key=change_order)
        # The history the reminders are told against: the changes received by the latest of these.
        told_against = history_received_by(max(r.received_at for r in rows))
        published = 0
        # Every pending review, not only the earliest: an overdue first review
        # must not hide the unscheduled one a move sets off (Worcs 14.1, 17.1).
        for review in status.pending_reviews:
            if review.due_on - today > self._notice:
                continue
            published += await self._publish(person_id, review, latest, status, today, told_against)
        return published

    async def _publish(self, person_id: str, review: ReviewDue, latest: RegisterChange, status: S117Status,
                       today: date, told_against: str) -> int:
        event_id = review_event_id(person_id, review.due_on, review.kind)
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
        try:
            async with self._engine.begin() as conn:
                exists = (await conn.execute(select(bus_messages.c.event_id)
                                             .where(bus_messages.c.event_id == event_id))).first()
                if exists:
                    return 0
                await publish(conn, BusMessage(
                    topic=EVENTS_TOPIC, key=person_id, event_id=event_id,
                    payload=event_payload(event, to_jsonable(latest), status_on_the_bus(status)),
                    headers={"correlation_id": str(uuid.uuid4()), "source": "review-scheduler",
                             "event_type": EventType.REVIEW_DUE.value, HISTORY_RECEIVED_BY: told_against},
                ))
        except IntegrityError:
            return 0  # another instance published the same reminder first
        return 1


async def run_review_scanner(scanner: ReviewScanner, interval_seconds: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await scanner.run_once()
        except Exception as exc:  # noqa: BLE001 - the next scan retries; the failure is logged
            log.error("review scan failed", exc_type=type(exc).__name__)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
        except TimeoutError:
            pass
