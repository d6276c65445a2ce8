"""Reversing a retraction made in error: the register change reinstated.

A retraction (hub/retraction.py) of the wrong change id, or an HL7 v2
cancellation (A11, A13) or FHIR entered-in-error that matched the wrong
change, takes out of the person's history a change that was right. Sending it
again under a new `source_message_id` would give it another id and another
recorded time (the five-working-day measure and the audit trail rely on the
first), and lose its place in the history. `POST
/v1/register-changes/{change_id}/retraction/reversal` reinstates it through
`UnretractionService.reinstate`, in one write transaction taking the locks a
retraction takes (hub/corrections.py: the events topic's publish lock, then
the person's row lock), as the reversal of a merge does (hub/unmerges.py):

1. the change and the organisation of the client that recorded it, and the one
   access policy (`hub.domain.access.decide_retract`, the retraction's, action
   `reinstate` in `access_decisions`): the hub operator, or that
   organisation. Anyone else and an unknown id: None (the caller answers
   `404` as for an unknown id, after the write refusal floor);
2. not retracted now: its latest reversal's answer (`duplicate: true`), or,
   never reversed, `NotRetracted` (`409` naming `change_id`);
3. refused (`SentAgain`, `409` `sent-again` naming `change_id`) when the
   person's history holds a change recorded since the retraction that
   restates the retracted one (`hub.domain.retraction.restates`: the same
   change type, effective date and the type's identifying facts), recorded
   by the organisation that recorded the retracted change (any of its keys)
   or by the hub operator (who records on a source's behalf: a quarantined
   input resubmitted): the trust was told, before reversals existed, to send
   the change again under a new `source_message_id`. Reinstated, the history
   would count that event twice. Another organisation's record of the same
   event is its own record and does not refuse. The refusal names each such
   change by its change id and source message id (nothing personal): retract
   it first, or leave the change retracted;
4. refused (`ReinstatementRefused`, `409` naming `change_id`) when the
   retraction withdrew or reopened a transfer or dispute case of the person
   (a `withdraw` or `reopen` step of theirs since the retraction: a
   withdrawn case is final, and the hub cannot tell whether that step was the
   retraction's): the change is sent again, or the case corrected, by hand.
   The person's cases are locked first, so the workflows' consumer cannot
   withdraw one on the retraction's event while this commits (and, once this
   has committed, the consumer finds the change not retracted and withdraws
   nothing: hub/workflows/service.py);
5. else the `change_retractions` row taken off and kept whole in
   `change_retraction_reversals` (with who, when, the reason encrypted, the
   correlation id, the event), so the change counts in every read of the
   history again (`hub.store.schema.not_retracted`) under its own id and
   recorded time, and may be retracted again; the access decision; the
   operator's action (`register-change-reinstate`) when the hub operator
   reverses the retraction of a change another organisation recorded
   (whoever retracted it, as a retraction's own is recorded); the register counts' row for the person as
   the history with it stands; and one event on the log: an
   `s117-notification-corrected` with the headers `reinstated` (the change's
   id), `late` and `history_changes` (the history with it), which the
   dispatcher tells as a retraction is told (each body whose position it
   moves hears the difference, superseding what it was told; a body told of
   the change whose position it leaves hears the change stands), and on which
   the workflows' consumer opens a case the change's own events would have
   opened had the retraction not been read first.

What else followed the retraction follows the history: the children's
notices scanner sends the notice a retracted detention's withdrawal took back
again, once (hub/children.py: a withdrawn council is told anew).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select

from hub.access import caller_of
from hub.audit import record_operator_action
from hub.bus.port import REINSTATED
from hub.codec import from_jsonable
from hub.corrections import Correction, CorrectionService, correction
from hub.domain.access import Decision, Rule, decide_retract
from hub.domain.model import DomainEvent, RegisterChange
from hub.domain.retraction import correction_event, restates
from hub.domain.rules import evaluate
from hub.domain.rules.precedence import change_order
from hub.domain.workflows.model import Action
from hub.ingest.service import Client, event_id_for
from hub.observability.logging import get_logger
from hub.store.schema import (api_clients, change_retraction_reversals, change_retractions, including_retracted,
                              not_retracted, persons, register_changes, workflow_cases, workflow_transitions)

log = get_logger("hub.unretractions")
ACTION = "reinstate"
# The reinstatement's event id is UUIDv5 of (the change's id, n, this): the nth reversal of its retractions.
REINSTATEMENT_KIND = "s117-register-change-reinstated"
# The case steps a retraction's event takes (hub/workflows/service.py `on_retracted`): final, not undone here.
_CASE_STEPS = (Action.WITHDRAW.value, Action.REOPEN.value)
# The changes standing for a retracted one a refusal names (`SentAgain`), at most.
_NAMED = 5
# The hub operator's clients (hub/access.py `caller_of`): what they record, they may record on a source's
# behalf (a quarantined input resubmitted), so it counts as the source organisation's own.
OPERATOR_SCOPE = "hub:admin"


class NotRetracted(Exception):
    """The change is not retracted and no retraction of it was reversed (`409` naming `change_id`)."""


class ReinstatementRefused(Exception):
    """A reversal the hub cannot make as asked (`409` naming `change_id`): never quotes the change."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = "change_id", reason


class SentAgain(ReinstatementRefused):
    """The change was sent again since the retraction (`409` naming `change_id`): `standing`, each change
    standing for it in the history, by its change id and source message id (nothing personal)."""

    def __init__(self, change_type: str, standing: tuple[tuple[str, str], ...]) -> None:
        named = ", ".join(f"{cid} (source_message_id {smid})" for cid, smid in standing[:_NAMED])
        more = f" and {len(standing) - _NAMED} more" if len(standing) > _NAMED else ""
        super().__init__(f"this {change_type} change was sent again since the retraction and stands "
                         f"in the person's history as register change {named}{more}: reinstated, the history "
                         "would count it twice. Retract that change first, then reverse this retraction; or "
                         "leave this change retracted")
        self.standing = standing


@dataclass(frozen=True, slots=True)
class Reinstatement:
    """The answer: the reversal's, with `duplicate` set on the same reversal again."""

    body: dict[str, Any]
    duplicate: bool


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _iso(at: datetime) -> str:
    return _aware(at).isoformat()


def _answer(row: Any) -> dict[str, Any]:
    retraction = row.retraction or {}
    return {"change_id": row.change_id, "person_id": row.person_id, "status": "reinstated",
            "reinstated_at": _iso(row.at), "reinstated_by": row.org_code, "correlation_id": row.correlation_id,
            "event_id": row.event_id, "retracted_at": retraction.get("at"),
            "retracted_by": retraction.get("org_code"), "retraction_event_id": row.retraction_event_id}


def reinstatement_event(person_id: str, reinstated: RegisterChange) -> DomainEvent:
    """The event a reinstatement publishes: a correction, as a retraction's (routed to no one as it is: each
    body whose position the reinstatement moves is told the difference). Codes and dates only."""
    return correction_event(person_id, reinstated, "retracted in error was reinstated", "reinstated_change_id")


class UnretractionService(CorrectionService):
    async def reinstate(self, client: Client, change_id: str, reason: str, correlation_id: str,
                        channel: str = "rest") -> Reinstatement | None:
        """Reverse the retraction of `change_id` for `client` with `reason` (checked by the caller: 1-1000
        characters). None: no such change, or not one `client` may retract (one answer for both). Raises
        `NotRetracted` and `ReinstatementRefused` (see the module), once the access decision is recorded."""
        rc = register_changes.c
        refused: Exception | None = None
        done: Reinstatement | None = None
        async with correction(self._engine, client, action=ACTION, channel=channel,
                              correlation_id=correlation_id) as c:
            conn = c.conn
            found = (await conn.execute(including_retracted(
                select(rc.change_id, rc.person_id, rc.canonical, rc.source, api_clients.c.org_code)
                .join(api_clients, api_clients.c.client_id == rc.source, isouter=True)
                .where(rc.change_id == change_id)))).first()
            decision = decide_retract(caller_of(client), found.org_code) if found is not None \
                else Decision(False, Rule.NO_RELATIONSHIP)
            if not decision.allowed:
                # Recorded as any refusal of a write, naming no one: "unknown" and "not yours" alike.
                await c.decided(decision)
                return None
            # The person's row lock, as ingest and a retraction take it (the change's person now: a merge
            # since the retraction moved both).
            await c.lock_person(persons.c.person_id == found.person_id)
            retraction = (await conn.execute(select(change_retractions)
                                             .where(change_retractions.c.change_id == change_id))).first()
            await c.decided(decision, person_id=found.person_id,
                            change_type=(found.canonical or {}).get("change_type"))
            if retraction is None:
                last = (await conn.execute(
                    select(change_retraction_reversals).where(change_retraction_reversals.c.change_id == change_id)
                    .order_by(change_retraction_reversals.c.at.desc()).limit(1))).first()
                if last is None:
                    refused = NotRetracted(change_id)
                else:
                    done = Reinstatement(_answer(last), duplicate=True)
            else:
                refused = await self._sent_again(c, found, retraction.at) \
                    or await self._cases_moved(c, found.person_id, retraction.at)
                if refused is None:
                    done = await self._reinstate_locked(c, found, retraction, reason)
        if refused is not None:
            raise refused
        return done

    @staticmethod
    async def _sent_again(c: Correction, found: Any, since: datetime) -> SentAgain | None:
        """Refused if the person's history holds a change recorded since the retraction, by the organisation
        that recorded `found` or by the hub operator, that restates it (`hub.domain.retraction.restates`):
        reinstated, the history would count that event twice."""
        rc = register_changes.c
        retracted = from_jsonable(RegisterChange, found.canonical)
        rows = (await c.conn.execute(
            select(rc.change_id, rc.source_message_id, rc.canonical, rc.received_at, api_clients.c.org_code,
                   api_clients.c.scopes)
            .join(api_clients, api_clients.c.client_id == rc.source)
            .where(rc.person_id == found.person_id, rc.change_id != found.change_id,
                   rc.change_type == retracted.change_type.value, rc.effective_date == retracted.effective_date,
                   not_retracted())
            .order_by(rc.received_at, rc.change_id))).all()
        standing = tuple((r.change_id, r.source_message_id) for r in rows
                         if _aware(r.received_at) >= _aware(since)
                         and (r.org_code == found.org_code or OPERATOR_SCOPE in (r.scopes or ()))
                         and restates(from_jsonable(RegisterChange, r.canonical), retracted))
        return SentAgain(retracted.change_type.value, standing) if standing else None

    @staticmethod
    async def _cases_moved(c: Correction, person_id: str, since: datetime) -> ReinstatementRefused | None:
        """The person's transfer and dispute cases, locked (the workflows' consumer takes them so to act on
        the retraction's event); refused if one was withdrawn or reopened since the retraction."""
        conn = c.conn
        cases = list((await conn.execute(select(workflow_cases.c.case_id).where(workflow_cases.c.person_id == person_id)
                                         .order_by(workflow_cases.c.case_id).with_for_update())).scalars())
        if not cases:
            return None
        moved = (await conn.execute(select(func.count()).select_from(workflow_transitions).where(
            workflow_transitions.c.case_id.in_(cases), workflow_transitions.c.action.in_(_CASE_STEPS),
            workflow_transitions.c.at >= since))).scalar_one()
        if not moved:
            return None
        return ReinstatementRefused("a transfer or dispute case of this person was withdrawn or reopened since the "
                                    "retraction (a withdrawn case is final): send the change again under a new "
                                    "source_message_id, or correct the case, by hand")

    async def _reinstate_locked(self, c: Correction, found: Any, retraction: Any, reason: str) -> Reinstatement:
        conn, client, correlation_id = c.conn, c.client, c.correlation_id
        rc = register_changes.c
        change_id, person_id = found.change_id, found.person_id
        cycle = (await conn.execute(select(func.count()).select_from(change_retraction_reversals)
                                    .where(change_retraction_reversals.c.change_id == change_id))).scalar_one()
        await conn.execute(delete(change_retractions).where(change_retractions.c.change_id == change_id))
        rows = (await conn.execute(select(rc.change_id, rc.canonical)
                                   .where(rc.person_id == person_id, not_retracted()))).all()
        history = [from_jsonable(RegisterChange, r.canonical) for r in rows]
        reinstated = from_jsonable(RegisterChange, found.canonical)
        after = evaluate(person_id, history, self._ref, self._agreements, self._today())
        now = datetime.now(UTC)
        event_id = event_id_for(change_id, cycle, REINSTATEMENT_KIND)
        kept = {"change_id": retraction.change_id, "person_id": retraction.person_id,
                "client_id": retraction.client_id, "org_code": retraction.org_code,
                "correlation_id": retraction.correlation_id, "event_id": retraction.event_id,
                "at": _iso(retraction.at)}
        await conn.execute(change_retraction_reversals.insert().values(
            retraction_event_id=retraction.event_id, change_id=change_id, person_id=person_id, retraction=kept,
            retraction_reason=retraction.reason, client_id=client.client_id[:64], org_code=client.org_code[:16],
            reason=self._protector.encrypt(reason.encode()), correlation_id=correlation_id[:64], event_id=event_id,
            at=now))
        if caller_of(client).admin and found.org_code != client.org_code:
            await record_operator_action(conn, client.client_id, "register-change-reinstate", change_id,
                                         {"person_id": person_id, "correlation_id": correlation_id,
                                          "retracted_by": retraction.org_code})
        # The register's counts: the person as the history with it stands.
        await c.counted(person_id, history, after)
        await c.publish(reinstatement_event(person_id, reinstated), event_id, max(history, key=change_order), after,
                        [r.change_id for r in rows], (REINSTATED, change_id))
        done = (await conn.execute(select(change_retraction_reversals).where(
            change_retraction_reversals.c.retraction_event_id == retraction.event_id))).one()
        c.then(lambda: log.info("register change reinstated", change_id=change_id, person_id=person_id,
                                source=client.client_id, change_type=reinstated.change_type.value,
                                correlation_id=correlation_id[:64], channel=c.channel, event_id=event_id))
        return Reinstatement(_answer(done), duplicate=False)
