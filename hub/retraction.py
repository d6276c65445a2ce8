"""Retracting a register change recorded in error: the store and the log
around `hub.domain.retraction`.

`RetractionService.retract` takes, in one write transaction (the events
topic's publish lock, then the person's row lock, as ingest takes them, so
no change of the person commits in between):

1. the change and the organisation of the client that recorded it; unknown,
   or neither that organisation nor the hub operator asking: None (the
   caller answers as for an unknown id, after the write refusal floor);
2. an earlier retraction of it: its answer again (`duplicate: true`);
3. else a `change_retractions` row (who, when, the reason encrypted, the
   correlation id), the access decision (`action` `retract`), the operator's
   action when the hub operator retracts another's change, the register
   counts' row for the person as the history without it stands, and one event
   on the log: `s117-notification-corrected` with the headers `retracted`
   (the change's id) and `history_changes` (the history without it). The
   dispatcher tells it as late history (each body told otherwise hears the
   difference, superseding what it was told) and the workflows withdraw a
   transfer case whose hand-over it takes away, and the dispute case a
   retracted `dispute-raised` change opened.

From its commit on, every read of the person's history leaves the change
out (`hub.store.schema.not_retracted`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.access import caller_of, record_decision
from hub.audit import record_operator_action
from hub.bus.payload import event_payload, status_on_the_bus
from hub.bus.port import EVENTS_TOPIC, HISTORY_CHANGES, LATE, RETRACTED, BusMessage, history_changes
from hub.bus.sql import lock_topic, publish
from hub.codec import from_jsonable, to_jsonable
from hub.crypto import DataProtector
from hub.domain.access import Rule
from hub.domain.agreements import AgreementBook
from hub.domain.model import RegisterChange
from hub.domain.ports import ReferenceData
from hub.domain.workflows.model import WORKFLOW_SOURCE
from hub.domain.retraction import RETRACTION_KIND, carried_change, may_retract, retraction_event
from hub.domain.rules import evaluate
from hub.ingest.service import Client, event_id_for
from hub.observability.logging import get_logger
from hub.register_counts import record_status
from hub.store.db import write_transaction
from hub.store.schema import api_clients, change_retractions, not_retracted, persons, register_changes, register_status

log = get_logger("hub.retraction")
CHANNEL = "rest"
ACTION = "retract"


class RecordedByACase(Exception):
    """The change was recorded by the hub for a transfer or dispute case (hub/workflows/service.py
    `record_register_change`): it is corrected on the case, never retracted (only the operator can reach
    it: no client's organisation recorded it)."""


@dataclass(frozen=True, slots=True)
class Retraction:
    """The answer: the first retraction's, with `duplicate` set on a second."""

    body: dict[str, Any]
    duplicate: bool


def _answer(row: Any) -> dict[str, Any]:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return {"change_id": row.change_id, "person_id": row.person_id, "status": "retracted",
            "retracted_at": at.isoformat(), "retracted_by": row.org_code, "correlation_id": row.correlation_id,
            "event_id": row.event_id}


class RetractionService:
    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook,
                 protector: DataProtector, today: Callable[[], date] = lambda: datetime.now(UTC).date()) -> None:
        self._engine = engine
        self._ref = ref
        self._agreements = agreements
        self._protector = protector
        self._today = today

    async def retract(self, client: Client, change_id: str, reason: str, correlation_id: str) -> Retraction | None:
        """Retract `change_id` for `client` with `reason` (checked by the caller: 1-1000 characters).
        None: no such change, or not one `client` may retract (one answer for both)."""
        caller = caller_of(client)
        rc = register_changes.c
        async with write_transaction(self._engine) as conn:
            await lock_topic(conn, EVENTS_TOPIC)
            found = (await conn.execute(
                select(rc.change_id, rc.person_id, rc.canonical, rc.source, api_clients.c.org_code)
                .join(api_clients, api_clients.c.client_id == rc.source, isouter=True)
                .where(rc.change_id == change_id))).first()
            if found is None or not may_retract(caller, found.org_code):
                # Recorded as any refusal of a write, naming no one: "unknown" and "not yours" alike.
                await record_decision(conn, client, channel=CHANNEL, action=ACTION, allowed=False,
                                      rule=Rule.NO_RELATIONSHIP, correlation_id=correlation_id)
                return None
            if found.source == WORKFLOW_SOURCE:
                # The hub's own record of a transfer's or dispute's outcome (a party's action, a determination):
                # withdrawing it would leave the case's state and the register disagreeing. Corrected on the case.
                raise RecordedByACase(change_id)
            person_id = found.person_id
            # The person's row lock, as ingest takes it: no change of theirs commits until this does.
            await conn.execute(select(persons.c.person_id).where(persons.c.person_id == person_id).with_for_update())
            earlier = (await conn.execute(select(change_retractions)
                                          .where(change_retractions.c.change_id == change_id))).first()
            if earlier is not None:
                return Retraction(_answer(earlier), duplicate=True)
            retracted = from_jsonable(RegisterChange, found.canonical)
            rows = (await conn.execute(select(rc.change_id, rc.canonical)
                                       .where(rc.person_id == person_id, rc.change_id != change_id,
                                              not_retracted()))).all()
            history = [from_jsonable(RegisterChange, r.canonical) for r in rows]
            today = self._today()
            after = evaluate(person_id, history, self._ref, self._agreements, today)
            now = datetime.now(UTC)
            event = retraction_event(person_id, retracted)
            event_id = event_id_for(change_id, 0, RETRACTION_KIND)
            await conn.execute(change_retractions.insert().values(
                change_id=change_id, person_id=person_id, client_id=client.client_id[:64],
                org_code=client.org_code[:16], reason=self._protector.encrypt(reason.encode()),
                correlation_id=correlation_id[:64], event_id=event_id, at=now))
            await record_decision(conn, client, channel=CHANNEL, action=ACTION, allowed=True, rule=Rule.ALLOWED,
                                  person_id=person_id, change_type=retracted.change_type.value,
                                  correlation_id=correlation_id)
            if caller.admin and found.org_code != client.org_code:
                await record_operator_action(conn, client.client_id, "register-change-retract", change_id,
                                             {"person_id": person_id, "correlation_id": correlation_id})
            # The register's counts: the person as the history without it stands (no longer on it: no row).
            if history:
                await record_status(conn, person_id, after, late=False)
            else:
                await conn.execute(delete(register_status).where(register_status.c.person_id == person_id))
            await publish(conn, BusMessage(
                topic=EVENTS_TOPIC, key=person_id, event_id=event_id,
                payload=event_payload(event, to_jsonable(carried_change(history, retracted)),
                                      status_on_the_bus(after)),
                headers={"correlation_id": correlation_id, "source": client.client_id,
                         "event_type": event.event_type.value, LATE: "1", RETRACTED: change_id,
                         HISTORY_CHANGES: history_changes([r.change_id for r in rows])}))
            body = {"change_id": change_id, "person_id": person_id, "status": "retracted",
                    "retracted_at": now.isoformat(), "retracted_by": client.org_code[:16],
                    "correlation_id": correlation_id[:64], "event_id": event_id}
        log.info("register change retracted", change_id=change_id, person_id=person_id, source=client.client_id,
                 change_type=retracted.change_type.value, correlation_id=correlation_id)
        return Retraction(body, duplicate=False)
