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
from datetime import UTC, date, datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.bus.port import EVENTS_TOPIC, BusMessage, Subscriber
from hub.codec import from_jsonable
from hub.crypto import DataProtector
from hub.domain.model import DomainEvent, Org, RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.fhir.messages import PatientDetails, build_event_message
from hub.fhir.namespaces import DEFAULT_NAMESPACES, Namespaces
from hub.ingest.service import load_person_details
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.routing import Recipient, recipients_for
from hub.sharing import SharingAgreements
from hub.store.schema import dead_letters, deliveries, disclosures, persons, subscriptions

log = get_logger("hub.dispatcher")
GROUP = "dispatcher"
MESSAGE_NAMESPACE = uuid.UUID("0c8f7d0e-2b54-4d61-8a4b-511751175117")


def message_id_for(event_id: str, org_code: str) -> str:
    # Stable across replays, so a recipient can de-duplicate by message id too.
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{event_id}/{org_code}"))


class Dispatcher:
    def __init__(
        self, engine: AsyncEngine, log_: Subscriber, ref: ReferenceData, sharing: SharingAgreements,
        protector: DataProtector, hub_endpoint: str, max_handler_attempts: int = 3,
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
        """Route, share and queue one event inside the caller's transaction."""
        event = from_jsonable(DomainEvent, msg.payload["event"])
        change = from_jsonable(RegisterChange, msg.payload["change"])
        status = from_jsonable(S117Status, msg.payload["status"])
        correlation_id = msg.headers.get("correlation_id", "")
        today = datetime.now(UTC).date()
        patient: PatientDetails | None = None
        for recipient in recipients_for(event, status):
            decision = self._sharing.decide(recipient.org_code, event.event_type.value, today)
            subs = await self._subscriptions(conn, recipient.org_code, event.event_type.value)
            if not decision.allowed:
                await self._audit(conn, event, msg.event_id, recipient, "denied", decision.agreement_id, [], decision.reason, None)
                metrics.DISPATCHED.labels(event_type=event.event_type.value, decision="denied").inc()
                continue
            if not subs:
                await self._audit(conn, event, msg.event_id, recipient, "no-subscription", decision.agreement_id,
                                  sorted(decision.field_groups), "allowed, but the organisation has no active subscription", None)
                metrics.DISPATCHED.labels(event_type=event.event_type.value, decision="no-subscription").inc()
                continue
            if patient is None:
                patient = await self._patient(conn, event.person_id)
            message_id = message_id_for(msg.event_id, recipient.org_code)
            bundle = build_event_message(
                event=event, status=status, change=change, patient=patient, message_id=message_id,
                sent_at=datetime.now(UTC), source_endpoint=self._hub_endpoint,
                recipient=self._org(recipient, status), include=decision.field_groups,
                legal_status_display=self._legal_status_display(status, change), ns=self._ns,
            )
            body = orjson.dumps(bundle)
            for sub in subs:
                exists = (await conn.execute(
                    select(deliveries.c.delivery_id).where(
                        deliveries.c.subscription_id == sub.subscription_id, deliveries.c.event_id == msg.event_id)
                )).first()
                if exists:
                    continue  # replayed event: already queued
                await conn.execute(deliveries.insert().values(
                    delivery_id=str(uuid.uuid4()), subscription_id=sub.subscription_id, event_id=msg.event_id,
                    message_id=message_id, event_type=event.event_type.value,
                    payload=self._protector.encrypt(body), status="pending", attempts=0,
                    next_attempt_at=datetime.now(UTC), correlation_id=correlation_id,
                    created_at=datetime.now(UTC),
                ))
                await self._audit(conn, event, msg.event_id, recipient, "allowed", decision.agreement_id,
                                  sorted(decision.field_groups), decision.reason, sub.channel)
            metrics.DISPATCHED.labels(event_type=event.event_type.value, decision="allowed").inc()
            log.info("event queued for recipient", recipient=recipient.org_code, event_type=event.event_type.value,
                     count=len(subs), decision="allowed")

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

    def _org(self, recipient: Recipient, status: S117Status) -> Org:
        for det in (status.responsible_council, status.responsible_commissioner, status.coordinating_council):
            if det is not None and det.org is not None and det.org.code == recipient.org_code:
                return det.org
        today = datetime.now(UTC).date()
        code = recipient.org_code
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
