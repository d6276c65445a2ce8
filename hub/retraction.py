"""Retracting a register change recorded in error: the store and the log
around `hub.domain.retraction`.

`RetractionService.retract` takes, in one write transaction (the shape of
hub/corrections.py: the events topic's publish lock, then the person's row
lock, as ingest takes them, so no change of the person commits in between):

1. the change and the organisation of the client that recorded it; unknown,
   or neither that organisation nor the hub operator asking: None (the
   caller answers as for an unknown id, after the write refusal floor);
2. an earlier retraction of it (not reversed since: hub/unretractions.py): its answer again (`duplicate: true`);
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

`RetractionService.retract_cancelled` is the same retraction for an HL7 v2
cancellation over MLLP (A11 cancel admit, A13 cancel discharge): in one write
transaction it finds the change the message cancels (the person by NHS number,
the change type, recorded by the sending trust's organisation, the date and the
hospital the message gives; the hub keeps neither the original's visit number
nor anything else an A11 names) and retracts it only when exactly one such
change is not retracted yet, answering the message's MSH-10 again with its
first answer (an `ingest_results` row, as ingest keeps one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.access import caller_of
from hub.audit import record_operator_action
from hub.bus.port import RETRACTED
from hub.codec import from_jsonable
from hub.crypto import DataProtector
from hub.corrections import Correction, CorrectionService, correction
from hub.domain.access import Rule
from hub.domain.agreements import AgreementBook
from hub.domain.dates import england_day
from hub.domain.model import RegisterChange
from hub.domain.ports import ReferenceData
from hub.domain.workflows.model import WORKFLOW_SOURCE
from hub.domain.retraction import RETRACTION_KIND, carried_change, may_retract, retraction_event
from hub.domain.rules import evaluate
from hub.ingest.nhs_number import normalise
from hub.ingest.service import Client, event_id_for, payload_sha256
from hub.observability.logging import get_logger
from hub.store.merged import person_id_by_index
from hub.unretractions import UnretractionService
from hub.store.schema import (api_clients, change_retraction_reversals, change_retractions, including_retracted,
                              ingest_results, not_retracted, persons, register_changes)

log = get_logger("hub.retraction")
CHANNEL = "rest"
ACTION = "retract"


class RecordedByACase(Exception):
    """The change was recorded by the hub for a transfer or dispute case (hub/workflows/service.py
    `record_register_change`): it is corrected on the case, never retracted (only the operator can reach
    it: no client's organisation recorded it)."""


@dataclass(frozen=True, slots=True)
class Retraction:
    """The answer: the retraction's, with `duplicate` set on a retraction asked while it stands."""

    body: dict[str, Any]
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What an HL7 v2 cancellation (A11, A13) names of the change it cancels (adapters/hl7v2/mapping.py)."""

    message_id: str  # its MSH-10 as sent: the idempotency key, and named in the retraction's reason
    change_type: str  # "detained" (A11), "cto-recalled" (A11 with ZU5-8 cto-recall) or "left-hospital" (A13)
    nhs_number: str
    effective_date: date
    hospital_ods: str | None
    reason: str  # the retraction's reason: "HL7 A11 cancel admit <MSH-10>" (no personal details)


# What became of a cancellation (`CancelResult.status`).
CANCEL_RETRACTED, CANCEL_ALREADY = "retracted", "already-retracted"
CANCEL_NO_MATCH, CANCEL_AMBIGUOUS, CANCEL_KEY_REUSED = "no-match", "more-than-one", "key-reused"


@dataclass(frozen=True, slots=True)
class CancelResult:
    status: str  # one of the CANCEL_* above
    change_id: str | None = None  # the change retracted (or retracted before)
    replay: bool = False  # the first answer to this message id, given again


def _answer(row: Any) -> dict[str, Any]:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return {"change_id": row.change_id, "person_id": row.person_id, "status": "retracted",
            "retracted_at": at.isoformat(), "retracted_by": row.org_code, "correlation_id": row.correlation_id,
            "event_id": row.event_id}


class RetractionService(CorrectionService):
    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook,
                 protector: DataProtector, today: Callable[[], date] = england_day) -> None:
        super().__init__(engine, ref, agreements, protector, today)
        # A retraction made in error, reversed (POST /v1/register-changes/{id}/retraction/reversal).
        self.reversals = UnretractionService(engine, ref, agreements, protector, today)

    async def retract(self, client: Client, change_id: str, reason: str, correlation_id: str,
                      channel: str = CHANNEL) -> Retraction | None:
        """Retract `change_id` for `client` with `reason` (checked by the caller: 1-1000 characters).
        None: no such change, or not one `client` may retract (one answer for both)."""
        caller = caller_of(client)
        rc = register_changes.c
        async with correction(self._engine, client, action=ACTION, channel=channel,
                              correlation_id=correlation_id) as c:
            found = (await c.conn.execute(including_retracted(  # a second retraction is answered from the first
                select(rc.change_id, rc.person_id, rc.canonical, rc.source, api_clients.c.org_code)
                .join(api_clients, api_clients.c.client_id == rc.source, isouter=True)
                .where(rc.change_id == change_id)))).first()
            if found is None or not may_retract(caller, found.org_code):
                # Recorded as any refusal of a write, naming no one: "unknown" and "not yours" alike.
                await c.decided(allowed=False, rule=Rule.NO_RELATIONSHIP)
                return None
            if found.source == WORKFLOW_SOURCE:
                # The hub's own record of a transfer's or dispute's outcome (a party's action, a determination):
                # withdrawing it would leave the case's state and the register disagreeing. Corrected on the case.
                raise RecordedByACase(change_id)
            # The person's row lock, as ingest takes it: no change of theirs commits until this does.
            await c.lock_person(persons.c.person_id == found.person_id)
            return await self._retract_locked(c, found, reason)

    async def retract_cancelled(self, client: Client, cancel: Cancellation, correlation_id: str,
                                channel: str = "mllp") -> CancelResult:
        """Retract the one change `cancel` names, recorded by `client`'s organisation (the may-retract rule):
        of `cancel.change_type`, for the person with its NHS number, effective on its date, at its hospital.
        Exactly one such change not yet retracted: retracted as `retract` does (`reason` the cancellation's).
        None left but exactly one retracted before: `already-retracted`. More than one: `more-than-one`;
        none: `no-match` (the caller holds the message for review); neither is remembered, so the message
        sent again once its admission has come is applied. The message id seen before: its first answer
        (`replay`), or `key-reused` when it came with another cancellation."""
        rc = register_changes.c
        index = self._protector.index(normalise(cancel.nhs_number))
        digest = payload_sha256({"cancels": cancel.change_type, "person": index,
                                 "effective_date": cancel.effective_date.isoformat(), "hospital": cancel.hospital_ods})
        smid = cancel.message_id[:200]
        async with correction(self._engine, client, action=ACTION, channel=channel,
                              correlation_id=correlation_id) as c:
            conn = c.conn
            earlier = (await conn.execute(select(ingest_results.c.body, ingest_results.c.payload_sha256).where(
                ingest_results.c.source == client.client_id, ingest_results.c.source_message_id == smid))).first()
            if earlier is not None:
                body = earlier.body if isinstance(earlier.body, dict) else {}
                if earlier.payload_sha256 != digest or body.get("cancel") not in (CANCEL_RETRACTED, CANCEL_ALREADY):
                    return CancelResult(CANCEL_KEY_REUSED)
                return CancelResult(body["cancel"], body.get("change_id"), replay=True)
            # The person's row lock, as ingest and `retract` take it (after the topic's).
            # (A number superseded by a merge: the retained person's, hub/store/merged.py.)
            found_id = await person_id_by_index(conn, index)
            person = None if found_id is None else await c.lock_person(persons.c.person_id == found_id)
            if person is None:
                return CancelResult(CANCEL_NO_MATCH)
            rows = (await conn.execute(
                select(rc.change_id, rc.person_id, rc.canonical, rc.source, api_clients.c.org_code,
                       change_retractions.c.change_id.label("retracted"))
                .join(api_clients, api_clients.c.client_id == rc.source)
                .join(change_retractions, change_retractions.c.change_id == rc.change_id, isouter=True)
                .where(rc.person_id == person.person_id, rc.change_type == cancel.change_type,
                       rc.effective_date == cancel.effective_date, api_clients.c.org_code == client.org_code,
                       rc.source != WORKFLOW_SOURCE)
                .order_by(rc.change_id))).all()
            matching = [r for r in rows if (r.canonical or {}).get("hospital_ods") == cancel.hospital_ods]
            live = [r for r in matching if r.retracted is None]
            if len(live) > 1:
                return CancelResult(CANCEL_AMBIGUOUS)
            if live:
                done = await self._retract_locked(c, live[0], cancel.reason)
                result = CancelResult(CANCEL_ALREADY if done.duplicate else CANCEL_RETRACTED, live[0].change_id)
            elif len(matching) == 1:
                result = CancelResult(CANCEL_ALREADY, matching[0].change_id)
            else:
                return CancelResult(CANCEL_NO_MATCH)
            await conn.execute(ingest_results.insert().values(
                source=client.client_id, source_message_id=smid, status_code=200,
                body={"cancel": result.status, "change_id": result.change_id}, payload_sha256=digest,
                created_at=datetime.now(UTC)))
        return result

    async def _retract_locked(self, c: Correction, found: Any, reason: str) -> Retraction:
        """The retraction of `found` (a register_changes row with its recorder's `org_code`) in `c`, which
        holds the events topic's lock and the person's: an earlier retraction's answer, or a new one (its
        log line said once committed)."""
        conn, client, correlation_id = c.conn, c.client, c.correlation_id
        caller = caller_of(client)
        rc = register_changes.c
        change_id, person_id = found.change_id, found.person_id
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
        # One event id a retraction: the nth since the change's retractions reversed before (hub/unretractions.py).
        cycle = (await conn.execute(select(func.count()).select_from(change_retraction_reversals)
                                    .where(change_retraction_reversals.c.change_id == change_id))).scalar_one()
        event_id = event_id_for(change_id, cycle, RETRACTION_KIND)
        await conn.execute(change_retractions.insert().values(
            change_id=change_id, person_id=person_id, client_id=client.client_id[:64],
            org_code=client.org_code[:16], reason=self._protector.encrypt(reason.encode()),
            correlation_id=correlation_id[:64], event_id=event_id, at=now))
        await c.decided(allowed=True, rule=Rule.ALLOWED, person_id=person_id,
                        change_type=retracted.change_type.value)
        if caller.admin and found.org_code != client.org_code:
            await record_operator_action(conn, client.client_id, "register-change-retract", change_id,
                                         {"person_id": person_id, "correlation_id": correlation_id})
        # The register's counts: the person as the history without it stands (no longer on it: no row).
        await c.counted(person_id, history, after)
        await c.publish(event, event_id, carried_change(history, retracted), after, [r.change_id for r in rows],
                        (RETRACTED, change_id))
        body = {"change_id": change_id, "person_id": person_id, "status": "retracted",
                "retracted_at": now.isoformat(), "retracted_by": client.org_code[:16],
                "correlation_id": correlation_id[:64], "event_id": event_id}
        c.then(lambda: log.info("register change retracted", change_id=change_id, person_id=person_id,
                                source=client.client_id, change_type=(found.canonical or {}).get("change_type"),
                                correlation_id=body["correlation_id"], channel=c.channel))
        return Retraction(body, duplicate=False)
