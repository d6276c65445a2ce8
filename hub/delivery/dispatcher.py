"""Dispatcher: consumes the event log and turns each event into deliveries.

For every event: routing names who must hear of it; the data-sharing
agreements decide, per recipient, whether and which field groups; each allowed
recipient with a subscription gets a FHIR message queued for delivery. The
disclosure decisions (allowed and denied alike), the queued deliveries and the
consumer offset are written in one transaction, so a crash replays the event
and the unique (subscription, event) key stops it being queued twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.bus.port import EVENTS_TOPIC, BusMessage, Subscriber
from hub.codec import from_jsonable
from hub.crypto import DataProtector
from hub.delivery import queue
from hub.domain.agreements import AgreementBook
from hub.domain.model import DomainEvent, EventType, Org, RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.rules import evaluate
from hub.domain.rules.precedence import is_late
from hub.domain.views import NOT_INVOLVED, event_type_for, reason_for, views_for
from hub.fhir.messages import FIELD_GROUPS, PatientDetails, build_event_message
from hub.fhir.namespaces import DEFAULT_NAMESPACES, Namespaces
from hub.ingest.service import load_person_details
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.routing import Recipient, recipients_for
from hub.sharing import SharingAgreements
from hub.store.schema import (
    dead_letters,
    disclosures,
    dispatched_events,
    persons,
    recipient_views,
    register_changes,
    subscriptions,
)
from hub.workflows.distribution import outgoing_until_accepted
from hub.workflows.fhir_task import add_task

log = get_logger("hub.dispatcher")
GROUP = "dispatcher"
REVIEW_SCANNER_SOURCE = "review-scheduler"  # the bus header `source` of hub/scheduler.py's reminders
MESSAGE_NAMESPACE = uuid.UUID("0c8f7d0e-2b54-4d61-8a4b-511751175117")


VIEW_EVENT_NAMESPACE = uuid.UUID("3e6a1f4b-9c2d-4b7e-8f10-117117000f1e")


def message_id_for(event_id: str, org_code: str) -> str:
    # Stable across replays, so a recipient can de-duplicate by message id too.
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{event_id}/{org_code}"))


def view_event_id_for(trigger_event_id: str, org_code: str) -> str:
    """The event telling `org_code` its position changed because of the
    triggering bus event: a replay of that event gives the same id."""
    return str(uuid.uuid5(VIEW_EVENT_NAMESPACE, f"{trigger_event_id}/{org_code}"))


class Dispatcher:
    def __init__(
        self, engine: AsyncEngine, log_: Subscriber, ref: ReferenceData, sharing: SharingAgreements,
        protector: DataProtector, hub_endpoint: str, max_handler_attempts: int = 3,
        agreements: AgreementBook | None = None,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
        namespaces: Namespaces = DEFAULT_NAMESPACES,
    ) -> None:
        self._engine = engine
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

    async def run_once(self, limit: int = 100) -> int:
        """Handle what is waiting; returns how many messages were handled."""
        batch = await self._log.fetch(GROUP, EVENTS_TOPIC, limit)
        for msg in batch:
            await self._handle_with_retry(msg)
        metrics.CONSUMER_LAG.labels(group=GROUP, topic=EVENTS_TOPIC).set(await self._log.lag(GROUP, EVENTS_TOPIC))
        return len(batch)

    async def _handle_with_retry(self, msg: BusMessage) -> None:
        structlog.contextvars.bind_contextvars(
            correlation_id=msg.headers.get("correlation_id"), event_id=msg.event_id, topic=msg.topic
        )
        try:
            async with self._engine.begin() as conn:
                # The SQL log can be shared by several hub instances: claim the
                # message first (Kafka needs no claim: a partition has one owner).
                claim = getattr(self._log, "claim", None)
                if claim is not None and not await claim(conn, GROUP, EVENTS_TOPIC, msg.offset):
                    return
                await self.handle(conn, msg)
                await self._log.commit(GROUP, EVENTS_TOPIC, msg.offset + 1, conn)
            self._failures.pop(msg.event_id, None)
        except Exception as exc:  # noqa: BLE001 - a handler bug must not stop the flow: retry, then dead-letter
            n = self._failures.get(msg.event_id, 0) + 1
            self._failures[msg.event_id] = n
            log.warning("dispatch failed", attempt=n, exc_type=type(exc).__name__, offset=msg.offset)
            if n >= self._max_attempts:
                async with self._engine.begin() as conn:
                    await conn.execute(dead_letters.insert().values(
                        topic=msg.topic, group_id=GROUP, offset=msg.offset, event_id=msg.event_id,
                        handler="dispatcher", reason=f"{type(exc).__name__} after {n} attempts"[:300],
                        at=datetime.now(UTC),
                    ))
                    await self._log.commit(GROUP, EVENTS_TOPIC, msg.offset + 1, conn)
                self._failures.pop(msg.event_id, None)
                metrics.DEAD_LETTERS.labels(handler="dispatcher").inc()
                log.error("event moved to dead letters", offset=msg.offset)
            raise _Retry from exc
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id", "event_id", "topic")

    async def handle(self, conn: AsyncConnection, msg: BusMessage) -> None:
        """Decide what each organisation must be told, inside the caller's transaction.

        1. The person's whole history is re-evaluated (the event's own status
           may be stale: older history can have arrived since).
        2. The event goes to the bodies routing names under that truth.
        3. Every organisation that is, was, or now becomes involved and
           whose held view (`recipient_views`) differs from its truth is sent
           the difference: a newly responsible body hears it is, a body no
           longer involved hears it is not and why, and a body told something
           that late history contradicts gets `s117-notification-corrected`
           naming the event it supersedes.
        Every message carries the recipient's whole position and a version one
        higher than the last it was sent (hub/domain/views.py).
        """
        if (await conn.execute(select(dispatched_events.c.event_id)
                               .where(dispatched_events.c.event_id == msg.event_id))).first():
            return  # handled and committed before: a redelivery changes nothing
        await conn.execute(dispatched_events.insert().values(event_id=msg.event_id, at=datetime.now(UTC)))
        event = from_jsonable(DomainEvent, msg.payload["event"])
        change = from_jsonable(RegisterChange, msg.payload["change"])
        person_id = event.person_id
        today = self._today()
        received = await self._history(conn, person_id)
        history = [c for c, _ in received]
        if history and self._agreements is not None:
            status = evaluate(person_id, history, self._ref, self._agreements, today)
        else:
            status = from_jsonable(S117Status, msg.payload["status"])
        # A change that sorts before a change received before it arrived late:
        # what was told since may be contradicted (a review reminder never is).
        arrived = next((t for c, t in received if c.change_id == change.change_id), None)
        late = (msg.headers.get("source") != REVIEW_SCANNER_SOURCE and arrived is not None
                and is_late(change, [c for c, t in received if t < arrived]))
        held = await self._held_views(conn, person_id)
        truth = views_for(status, held, lambda org: self._sharing.field_groups_for(org, today))
        send = _Sending(conn=conn, msg=msg, status=status, change=change, held=held, today=today)

        recipients = recipients_for(event, status)
        # Until a transfer is accepted the outgoing body keeps hearing (hub/workflows/distribution.py).
        recipients += await outgoing_until_accepted(conn, person_id, recipients)
        for recipient in recipients:
            org = recipient.org_code
            target = truth.get(org, NOT_INVOLVED)
            old = held.get(org)
            corrects = late and old is not None and bool(old.view.get("roles")) and old.view != target
            await self._send(send, msg.event_id, event, org, target,
                             supersedes=old.last_event_id if corrects else None,
                             reason=reason_for(old.view if old else None, target, status) if corrects else None)

        for org in sorted(truth):
            target = truth[org]
            old = held.get(org)
            if (old is None and not target.get("roles")) or (old is not None and old.view == target):
                continue
            told = old is not None and bool(old.view.get("roles"))
            event_type = EventType.NOTIFICATION_CORRECTED if late and told else event_type_for(
                old.view if old else None, target)
            if event_type is not EventType.NOTIFICATION_CORRECTED and told and not self._sharing.decide(
                    org, event_type.value, today).allowed:
                # Its agreement does not cover this kind of event, but the
                # body holds a position now wrong: a rectification is owed to
                # every recipient of the data (UK GDPR Art. 19).
                event_type = EventType.NOTIFICATION_CORRECTED
            reason = reason_for(old.view if old else None, target, status)
            view_event = DomainEvent(
                event_type=event_type, person_id=person_id, change_id=change.change_id,
                occurred_on=change.effective_date if event.event_type is not EventType.REVIEW_DUE else event.occurred_on,
                summary=f"Your position for this person changed: {reason}.",
                details={"reason": reason, **({"supersedes": old.last_event_id} if old is not None else {})},
            )
            await self._send(send, view_event_id_for(msg.event_id, org), view_event, org, target,
                             supersedes=old.last_event_id if old is not None and event_type is
                             EventType.NOTIFICATION_CORRECTED else None, reason=reason)

    async def _send(
        self, send: "_Sending", event_id: str, event: DomainEvent, org: str, view: dict[str, Any],
        supersedes: str | None, reason: str | None,
    ) -> None:
        """Share one event with one organisation (if its agreement allows and it
        subscribes), carrying its position; bump its view when queued."""
        conn, recipient = send.conn, Recipient(org, ",".join(view.get("roles", [])) or "notified")
        if (org, event.event_type) in send.refused:
            return
        decision = self._sharing.decide(org, event.event_type.value, send.today)
        subs = await self._subscriptions(conn, org, event.event_type.value)
        if not decision.allowed:
            send.refused.add((org, event.event_type))
            await self._audit(conn, event, event_id, recipient, "denied", decision.agreement_id, [], decision.reason, None)
            metrics.DISPATCHED.labels(event_type=event.event_type.value, decision="denied").inc()
            return
        if not subs:
            send.refused.add((org, event.event_type))
            await self._audit(conn, event, event_id, recipient, "no-subscription", decision.agreement_id,
                              sorted(decision.field_groups), "allowed, but the organisation has no active subscription", None)
            metrics.DISPATCHED.labels(event_type=event.event_type.value, decision="no-subscription").inc()
            return
        if send.patient is None:
            send.patient = await self._patient(conn, event.person_id)
        old = send.held.get(org)
        version = (old.version if old is not None else 0) + 1
        message_id = message_id_for(event_id, org)
        # The event message carries the FHIR field groups only; `funding`
        # (costs, providers) is served by the person query and statements.
        included = decision.field_groups & FIELD_GROUPS
        bundle = build_event_message(
            event=event, status=send.status, change=send.change, patient=send.patient, message_id=message_id,
            sent_at=datetime.now(UTC), source_endpoint=self._hub_endpoint,
            recipient=self._org(org, send.status), include=included,
            legal_status_display=self._legal_status_display(send.status, send.change),
            position=view, version=version, supersedes=supersedes, reason=reason, ns=self._ns,
        )
        add_task(bundle, event.details, decision.field_groups, ns=self._ns)  # transfer / dispute events: the Task
        body = orjson.dumps(bundle)
        correlation_id = send.msg.headers.get("correlation_id", "")
        queued = 0
        for sub in subs:
            if not await queue_delivery(conn, self._protector, sub.subscription_id, event_id, message_id,
                                        event.event_type.value, body, correlation_id):
                continue  # replayed event: already queued
            queued += 1
            await self._audit(conn, event, event_id, recipient, "allowed", decision.agreement_id,
                              sorted(included), decision.reason, sub.channel)
        if queued:
            await self._store_view(conn, event.person_id, org, version, view, event_id, old is None)
            send.held[org] = _Held(version, view, event_id)
        metrics.DISPATCHED.labels(event_type=event.event_type.value, decision="allowed").inc()
        log.info("event queued for recipient", recipient=org, event_type=event.event_type.value,
                 count=queued, decision="allowed")

    async def _history(self, conn: AsyncConnection, person_id: str) -> list[tuple[RegisterChange, datetime]]:
        """Every change recorded for the person, with when the hub received it."""
        rows = (await conn.execute(select(register_changes.c.canonical, register_changes.c.received_at)
                                   .where(register_changes.c.person_id == person_id))).all()
        return [(from_jsonable(RegisterChange, r.canonical), r.received_at) for r in rows]

    @staticmethod
    async def _held_views(conn: AsyncConnection, person_id: str) -> dict[str, "_Held"]:
        rows = (await conn.execute(select(recipient_views).where(recipient_views.c.person_id == person_id))).all()
        return {r.org_code: _Held(r.version, r.view, r.last_event_id) for r in rows}

    @staticmethod
    async def _store_view(conn: AsyncConnection, person_id: str, org: str, version: int, view: dict[str, Any],
                          event_id: str, new: bool) -> None:
        values = {"version": version, "view": view, "last_event_id": event_id, "updated_at": datetime.now(UTC)}
        if new:
            await conn.execute(recipient_views.insert().values(person_id=person_id, org_code=org, **values))
        else:
            await conn.execute(recipient_views.update().where(
                recipient_views.c.person_id == person_id, recipient_views.c.org_code == org).values(**values))

    async def _subscriptions(self, conn: AsyncConnection, org_code: str, event_type: str) -> list[Any]:
        rows = (await conn.execute(
            select(subscriptions).where(subscriptions.c.org_code == org_code, subscriptions.c.active.is_(True))
            .order_by(subscriptions.c.created_at)
        )).all()
        return [r for r in rows if not r.event_types or event_type in r.event_types]

    async def _patient(self, conn: AsyncConnection, person_id: str) -> PatientDetails:
        row = (await conn.execute(select(persons.c.details).where(persons.c.person_id == person_id))).one()
        d = load_person_details(self._protector, row.details)
        return PatientDetails(
            nhs_number=d["nhs_number"], given_name=d.get("given_name") or "", family_name=d.get("family_name") or "",
            birth_date=date.fromisoformat(d["birth_date"]) if d.get("birth_date") else None,
            postcode=d.get("postcode"),
        )

    def _org(self, code: str, status: S117Status) -> Org:
        for det in (status.responsible_council, status.responsible_commissioner, status.coordinating_council):
            if det is not None and det.org is not None and det.org.code == code:
                return det.org
        today = datetime.now(UTC).date()
        found = (self._ref.council(code, today) if code[:1] in "EWSN" and len(code) == 9 else
                 self._ref.commissioner_successor(code, today) or self._ref.hospital(code))
        return found or Org(code=code, name=code, kind="organisation")

    def _legal_status_display(self, status: S117Status, change: RegisterChange) -> str | None:
        code = status.qualifying_section_code or status.entitling_section_code or change.legal_status_code
        if not code:
            return None
        ls = self._ref.legal_status(code)
        return ls.description if ls else None

    @staticmethod
    async def _audit(
        conn: AsyncConnection, event: DomainEvent, event_id: str, recipient: Recipient, decision: str,
        agreement_id: str | None, groups: list[str], reason: str, channel: str | None,
    ) -> None:
        await conn.execute(disclosures.insert().values(
            event_id=event_id, person_id=event.person_id, event_type=event.event_type.value,
            recipient_org=recipient.org_code, decision=decision, agreement_id=agreement_id,
            field_groups=groups, reason=reason[:300], channel=channel, at=datetime.now(UTC),
        ))


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
    patient: PatientDetails | None = None
    refused: set[tuple[str, EventType]] = field(default_factory=set)


async def queue_delivery(
    conn: AsyncConnection, protector: DataProtector, subscription_id: str, event_id: str, message_id: str,
    event_type: str, body: bytes, correlation_id: str,
) -> bool:
    """Queue one FHIR message for one subscription; False if this event is
    already queued for it (a replay). The row and its event number are made in
    one place: hub.delivery.queue."""
    return await queue.queue_delivery(
        conn, subscription_id=subscription_id, event_id=event_id, message_id=message_id, event_type=event_type,
        payload=protector.encrypt(body), correlation_id=correlation_id) is not None


class _Retry(Exception):
    """Signals the worker loop to back off before the next attempt."""


async def run_dispatcher(dispatcher: Dispatcher, poll_seconds: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            handled = await dispatcher.run_once()
        except _Retry:
            handled = 0
            await asyncio.sleep(min(2.0, poll_seconds * 5))
        if not handled:
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
            except TimeoutError:
                pass
