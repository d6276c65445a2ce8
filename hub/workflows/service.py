"""Transfer and dispute cases in the store, and what each transition sends.

Every transition is written in one transaction with the case, its stage rows,
an append-only history row and the outbox event that tells the parties
(EventType TRANSFER_UPDATED / DISPUTE_UPDATED / WORKFLOW_DEADLINE, routed and
shared like any other event). Register changes the workflow implies (a
dispute raised, a dispute resolved) go through the normal ingest afterwards,
so the rules engine folds them like any trust's change.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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
from hub.crypto import DataProtector
from hub.domain.access import Caller, Decision, PersonFacts, decide_raise_dispute, status_parties
from hub.domain.agreements import AgreementBook, AreaAgreement
from hub.domain.handovers import events_again, handovers
from hub.domain.model import ChangeType, DomainEvent, EventType, RegisterChange
from hub.domain.ports import ReferenceData
from hub.domain.rules import evaluate
from hub.domain.rules.precedence import is_late
from hub.domain.rules.timeline import transfer_steps
from hub.domain.views import Handover
from hub.domain.workflows import machine
from hub.domain.workflows.clocks import due_on
from hub.domain.workflows.model import (
    CLOCK_ACTOR,
    REGISTER_ACTOR,
    WORKFLOW_SOURCE,
    Action,
    Case,
    CaseKind,
    DisputeState,
    TransferState,
    Transition,
    WorkflowRefusal,
    new_api_dispute_id,
)
from hub.domain.workflows.settlement import InterimCosts, reimbursement_statement
from hub.ids import uuid4, uuid5
from hub.ingest.service import Client, IngestService, event_id_for, load_person_details
from hub.observability.logging import get_logger
from hub.store.db import InList, insert_or_merge
from hub.store.schema import (
    bus_messages,
    change_retractions,
    including_retracted,
    persons,
    not_retracted,
    register_changes,
    workflow_cases,
    workflow_clock,
    workflow_stages,
    workflow_transitions,
)
from hub.workflows.fhir_task import build_task, task_id
from hub.domain.dates import england_day

# The most events one register change publishes (hub/ingest: `event_id_for(change, index, type)`), and more
# (as hub/delivery/dispatcher.py reads them).
_EVENTS_A_CHANGE = 16

log = get_logger("hub.workflows")
CASE_NAMESPACE = uuid.UUID("f2a9d6b4-3c1e-4b7a-8d2f-117117117c45")
CLOCK_ROW = "workflows"  # the key of the settable clock's one row (`workflow_clock`)


class WorkflowClock:
    """Today for the workflows. Tests (and only tests: the ops endpoint that
    moves it exists only with S117_WORKFLOW_CLOCK_SETTABLE) move it forward.

    Unit tests set `offset_days` directly. With a `store` (given only when the
    clock is settable) the offset is kept in the store's `workflow_clock` row
    as well, so every process of the hub sees it: `set` writes the row, and
    `load` reads it before each use (the API before it shows or acts on a
    case, the scanner before each scan, in whichever process they run: a
    restarted one too). Without one (production)
    the offset is always 0 and `load` reads nothing."""

    def __init__(self, base: Callable[[], date] = england_day,
                 store: AsyncEngine | None = None) -> None:
        self._base = base
        self._store = store
        self.offset_days = 0

    def today(self) -> date:
        return self._base() + timedelta(days=self.offset_days)

    async def load(self) -> None:
        """The offset as the store holds it (0 if never set); nothing read without a store."""
        if self._store is None:
            return
        async with self._store.connect() as conn:
            offset = (await conn.execute(select(workflow_clock.c.offset_days)
                                         .where(workflow_clock.c.clock_id == CLOCK_ROW))).scalar_one_or_none()
            await conn.rollback()
        self.offset_days = offset or 0

    async def set(self, offset_days: int) -> None:
        """Move "today" `offset_days` past the real date: the store's row first
        (in a transaction of its own), then this process's memory."""
        if self._store is not None:
            async with self._store.begin() as conn:
                upsert = insert_or_merge(conn.dialect, workflow_clock).values(
                    clock_id=CLOCK_ROW, offset_days=offset_days, updated_at=datetime.now(UTC))
                await conn.execute(upsert.on_conflict_do_update(
                    index_elements=[workflow_clock.c.clock_id],
                    set_={"offset_days": upsert.excluded.offset_days, "updated_at": upsert.excluded.updated_at}))
        self.offset_days = offset_days


@dataclass(frozen=True, slots=True)
class Acted:
    case: Case
    transitions: list[Transition]
    register_change: dict[str, Any] | None = None  # a change to ingest after commit
    decision: Decision | None = None  # raising: the access decision that let the raiser raise it


class NoRelationship(Exception):
    """The raiser has no relationship with the person on the day (or no such
    person): the API answers as for an unknown person and audits `decision`."""

    def __init__(self, decision: Decision, known: bool) -> None:
        super().__init__(decision.rule.value)
        self.decision, self.known = decision, known


OPEN_TRANSFER_STATES = (TransferState.AWAITING.value, TransferState.OVERDUE.value)
OPEN_DISPUTE_STATES = (DisputeState.OPEN.value, DisputeState.ESCALATED.value)
# The transfer cases later-arriving history can still withdraw: open ones, and
# accepted ones (only those the incoming body accepted: `on_history_changed`).
WITHDRAWABLE_TRANSFER_STATES = (*OPEN_TRANSFER_STATES, TransferState.ACCEPTED.value)
RECORDED = EventType.REGISTER_CHANGE_RECORDED.value  # every register change's first event (index 0)

# Which of some people have a transfer case late history can withdraw: one statement.
_PEOPLE_WITH_WITHDRAWABLE_TRANSFERS = InList("ids", lambda ids: select(workflow_cases.c.person_id).distinct().where(
    workflow_cases.c.person_id.in_(ids), workflow_cases.c.kind == CaseKind.TRANSFER.value,
    or_(*(workflow_cases.c.state == state for state in WITHDRAWABLE_TRANSFER_STATES))))

# The dispute cases a retraction may change: open ones (withdrawn when the
# change that raised them is retracted) and resolved ones (reopened when the
# change that resolved them is: `on_retracted`). Which of some people have one: one statement.
RETRACTABLE_DISPUTE_STATES = (*OPEN_DISPUTE_STATES, DisputeState.RESOLVED.value)
_PEOPLE_WITH_OPEN_DISPUTES = InList("ids", lambda ids: select(workflow_cases.c.person_id).distinct().where(
    workflow_cases.c.person_id.in_(ids), workflow_cases.c.kind == CaseKind.DISPUTE.value,
    or_(*(workflow_cases.c.state == state for state in RETRACTABLE_DISPUTE_STATES))))


def same_handover(case: Case, still: set[Handover]) -> tuple[bool, date | None]:
    """Whether the history (its hand-overs `still`) holds the hand-over `case`
    was opened for, and if not, the other date it holds the same one on (the
    role and bodies: the nearest date, if more than one), else None. A case
    opened before its date was kept is dated on first use
    (`WorkflowService._dated`); one that could not be is held by the same
    hand-over on any date."""
    dates = sorted({on for role, f, t, on in still if (role, f, t) == (case.role, case.outgoing, case.incoming)})
    if case.handover_on is None:
        return bool(dates), None
    if case.handover_on in dates:
        return True, None
    handover_on = case.handover_on
    return False, min(dates, key=lambda d: (abs((d - handover_on).days), d)) if dates else None


TRANSFERRED = EventType.RESPONSIBILITY_TRANSFERRED.value
# A change's events are a handful (recorded, entitlement, a transfer for each
# step a late change reveals, a move, a refusal, a dispute, reviews): the index
# of the one that opened a case is well below this.
EVENTS_A_CHANGE = 64


def opening_event(case: Case, change_ids: list[str]) -> tuple[str, int, str] | None:
    """The `s117-responsibility-transferred` event that opened transfer `case`,
    as (change id, its index among that change's events, event id): the one
    whose id gives the case's own (`case_id_for(event id, role)`), among the
    events of `change_ids` (ingest numbers a change's events from 0:
    hub/ingest/service.py `event_id_for`). None if none of them did."""
    for change_id in change_ids:
        for index in range(EVENTS_A_CHANGE):
            event_id = event_id_for(change_id, index, TRANSFERRED)
            if case_id_for(event_id, case.role) == case.case_id:
                return change_id, index, event_id
    return None


def transfer_event_again(person_id: str, history: list[RegisterChange], change: RegisterChange, index: int,
                         ref: ReferenceData, agreements: AgreementBook) -> DomainEvent | None:
    """Event `index` of `change`, derived again as ingest derived it when the
    change was recorded (on its `recorded_on`): `history`, the person's changes
    recorded before it; a late change tells the transfers its arrival reveals,
    each dated where it happens (hub/domain/rules/timeline.py). None if the
    change has no such event."""
    events = events_again(person_id, history, change, ref, agreements)
    return events[index] if index < len(events) else None


def _opened(case: Case, event: DomainEvent) -> bool:
    """Whether `event` tells the hand-over `case` was opened for (its role and bodies)."""
    return (event.event_type is EventType.RESPONSIBILITY_TRANSFERRED
            and (event.details.get(f"{case.role}_from"), event.details.get(f"{case.role}_to"))
            == (case.outgoing, case.incoming))


def case_id_for(*parts: str) -> str:
    return uuid5(CASE_NAMESPACE, "/".join(parts))


def case_view(case: Case, today: date, holidays: frozenset[date]) -> dict[str, Any]:
    """The case as the API shows it: state, bodies, clock with days left."""
    from hub.domain.working_days import working_days_between

    body = to_jsonable(case)
    if case.clock is not None:
        late = today > case.clock.due_on
        body["clock"] |= {
            "breached": late,
            "working_days_left": 0 if late else working_days_between(today, case.clock.due_on, holidays),
            "working_days_overdue": working_days_between(case.clock.due_on, today, holidays) if late else 0,
        }
    if case.resolution is not None:
        # Who has still to agree the outcome proposed (POST /v1/disputes/{id}/resolve with the same terms).
        body["resolution"]["awaiting"] = [p for p in case.parties if p not in case.resolution.agreed_by]
    body["age_days"] = (today - case.opened_on).days
    body["fhir_task_id"] = task_id(case)
    body.pop("reminded", None)
    return body


class WorkflowService:
    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook, protector: DataProtector,
                 ingest: IngestService, clock: WorkflowClock | None = None, costs: InterimCosts | None = None,
                 *, clock_settable: bool = False) -> None:
        self._engine = engine
        self._ref = ref
        self._agreements = agreements
        self._protector = protector
        self._ingest = ingest
        # Settable (S117_WORKFLOW_CLOCK_SETTABLE, end-to-end tests only): the offset kept in the store.
        self.clock = clock or WorkflowClock(store=engine if clock_settable else None)
        self.costs = costs  # a fixed hook (tests); None: costs_for, or periods and shares only
        self.costs_for: Callable[[Case], Awaitable[InterimCosts | None]] | None = None

    @property
    def holidays(self) -> frozenset[date]:
        return self._ref.bank_holidays()

    def area_for(self, council_code: str | None) -> AreaAgreement:
        return self._agreements.area(council_code)

    # ------------------------------------------------------------ store

    async def load(self, conn: AsyncConnection, case_id: str, *, lock: bool = False) -> Case | None:
        """The case; `lock`: under its row lock, taken after the events topic's publish lock (PostgreSQL),
        the order every writer that locks both keeps (a merge, a retraction's reversal lock the topic, the
        person, then the person's cases; a party's action and the clock then publish the step): the other
        order deadlocks with them (tests/contract/test_workflow_lock_order.py)."""
        q = select(workflow_cases.c.data).where(workflow_cases.c.case_id == case_id)
        if lock:
            await lock_topic(conn, EVENTS_TOPIC)
        row = (await conn.execute(q.with_for_update() if lock else q)).first()
        return self.from_row(row.data) if row else None

    async def load_by_dispute_id(self, conn: AsyncConnection, dispute_id: str) -> Case | None:
        row = (await conn.execute(select(workflow_cases.c.data)
                                  .where(workflow_cases.c.dispute_id == dispute_id))).first()
        return self.from_row(row.data) if row else None

    # A reason is a body's free text and may name someone: it is kept
    # encrypted at rest, and left out of the event log (the Task in a message
    # says the transfer was rejected; the parties read the reason from the API).
    def to_row(self, case: Case) -> dict[str, Any]:
        data = to_jsonable(case)
        if case.reason:
            data["reason"] = self._protector.encrypt_text(case.reason)
        return data

    def from_row(self, data: dict[str, Any]) -> Case:
        case = from_jsonable(Case, data)
        if case.reason:
            case = replace(case, reason=self._protector.decrypt_text(case.reason))
        return case

    async def history(self, conn: AsyncConnection, case_id: str) -> list[dict[str, Any]]:
        rows = (await conn.execute(select(workflow_transitions).where(workflow_transitions.c.case_id == case_id)
                                   .order_by(workflow_transitions.c.seq))).all()
        return [{"action": r.action, "from_state": r.from_state, "to_state": r.to_state, "actor": r.actor,
                 "on": r.on_date.isoformat(), "citation": r.citation, "explanation": r.explanation,
                 "event_id": r.event_id} for r in rows]

    async def stages(self, conn: AsyncConnection, case_id: str) -> list[dict[str, Any]]:
        rows = (await conn.execute(select(workflow_stages).where(workflow_stages.c.case_id == case_id)
                                   .order_by(workflow_stages.c.stage_index))).all()
        return [{"stage_index": r.stage_index, "name": r.name, "owner": r.owner, "started_on": r.started_on.isoformat(),
                 "due_on": r.due_on.isoformat(), "ended_on": r.ended_on.isoformat() if r.ended_on else None,
                 "outcome": r.outcome} for r in rows]

    async def _save(self, conn: AsyncConnection, before: Case | None, case: Case, steps: list[Transition],
                    event_type: EventType | None) -> None:
        now = datetime.now(UTC)
        values = dict(kind=case.kind.value, person_id=case.person_id, state=case.state, parties=list(case.parties),
                      due_on=case.clock.due_on if case.clock else None,
                      clock_owner=case.clock.owner if case.clock else None, data=self.to_row(case), updated_at=now)
        if before is None:
            await conn.execute(workflow_cases.insert().values(
                case_id=case.case_id, dispute_id=case.dispute_id if case.kind is CaseKind.DISPUTE else None,
                opened_on=case.opened_on, version=1, **values))
        else:
            await conn.execute(workflow_cases.update().where(workflow_cases.c.case_id == case.case_id)
                               .values(version=workflow_cases.c.version + 1, **values))
        if case.kind is CaseKind.DISPUTE and case.clock is not None and (
            before is None or before.stage_index != case.stage_index
        ):
            if before is not None:
                await conn.execute(workflow_stages.update().where(
                    workflow_stages.c.case_id == case.case_id, workflow_stages.c.stage_index == before.stage_index)
                    .values(ended_on=case.clock.started_on, outcome="escalated"))
            stage = case.stages[case.stage_index]
            await conn.execute(workflow_stages.insert().values(
                case_id=case.case_id, stage_index=case.stage_index, name=stage.name, owner=case.clock.owner,
                started_on=case.clock.started_on, due_on=case.clock.due_on))
        if case.kind is CaseKind.DISPUTE and case.resolved_on is not None and before is not None \
                and before.resolved_on is None:
            await conn.execute(workflow_stages.update().where(
                workflow_stages.c.case_id == case.case_id, workflow_stages.c.stage_index == case.stage_index)
                .values(ended_on=case.resolved_on, outcome="resolved"))
        if case.kind is CaseKind.DISPUTE and case.reopened_on is not None and case.clock is not None \
                and before is not None and before.resolved_on is not None and case.resolved_on is None:
            # Reopened (its resolving change retracted): the stage it was resolved at runs again.
            await conn.execute(workflow_stages.update().where(
                workflow_stages.c.case_id == case.case_id, workflow_stages.c.stage_index == case.stage_index)
                .values(due_on=case.clock.due_on, ended_on=None, outcome=None))
        if case.kind is CaseKind.DISPUTE and case.withdrawn_on is not None and before is not None \
                and before.withdrawn_on is None:
            await conn.execute(workflow_stages.update().where(
                workflow_stages.c.case_id == case.case_id, workflow_stages.c.stage_index == case.stage_index)
                .values(ended_on=case.withdrawn_on, outcome="withdrawn"))
        for step in steps:
            event_id = None
            if event_type is not None:
                event_id = await self._publish(conn, case, step, event_type)
            await conn.execute(workflow_transitions.insert().values(
                case_id=case.case_id, action=step.action.value, from_state=step.from_state, to_state=step.to_state,
                actor=step.actor, on_date=step.on, citation=step.citation[:300], explanation=step.explanation[:500],
                event_id=event_id, at=now))

    async def _publish(self, conn: AsyncConnection, case: Case, step: Transition, event_type: EventType,
                       kind: str = "") -> str:
        n = (await conn.execute(select(func.count()).select_from(workflow_transitions)
                                .where(workflow_transitions.c.case_id == case.case_id))).scalar_one()
        event_id = uuid5(CASE_NAMESPACE, f"{case.case_id}/{n}/{step.action.value}/{kind}")
        # The topic's publish lock (held to commit; PostgreSQL only: SQLite's writer is alone)
        # before the history is read: no change of the person commits between this read and
        # the event, so the history read is exactly the changes published before it.
        await lock_topic(conn, EVENTS_TOPIC)
        rows = (await conn.execute(select(register_changes.c.canonical, register_changes.c.received_at)
                                   .where(register_changes.c.person_id == case.person_id, not_retracted()))).all()
        changes = [from_jsonable(RegisterChange, r.canonical) for r in rows]
        carried = changes
        if not changes:  # every change of the person retracted (hub/retraction.py): an empty history is told,
            # the event naming the last change it had (the message needs one; no fact of it is told)
            carried = [from_jsonable(RegisterChange, c) for c in (await conn.execute(including_retracted(
                select(register_changes.c.canonical).where(register_changes.c.person_id == case.person_id))))
                .scalars().all()]
        latest = max(carried, key=lambda c: (c.effective_date, c.recorded_on, c.change_id))
        # The history this event is told against: these changes, by id (the dispatcher leaves
        # out those committed since: they have events of their own); and, for a dispatcher
        # of the version before, the latest received_at of these.
        told_against = {HISTORY_CHANGES: history_changes([c.change_id for c in changes])}
        if rows:
            told_against[HISTORY_RECEIVED_BY] = history_received_by(max(r.received_at for r in rows))
        status = evaluate(case.person_id, changes, self._ref, self._agreements, max(step.on, latest.effective_date))
        what = "transfer of " + case.role + " responsibility" if case.kind is CaseKind.TRANSFER \
            else case.dispute_kind + " responsibility dispute"
        summary = (f"Section 117 {what}: {kind} on {step.on.isoformat()} ({case.clock.owner} to act by "
                   f"{case.clock.due_on.isoformat()})." if kind and case.clock is not None
                   else f"Section 117 {what}: {step.action.value} on {step.on.isoformat()}; now {case.state} "
                        f"({step.citation}).")
        # The parties hear of it (routing adds the responsible bodies as for any
        # event); a named level ("ICS", "JMG") is not an organisation on the hub.
        notify = case.parties
        event = DomainEvent(
            event_type=event_type, person_id=case.person_id, change_id=latest.change_id, occurred_on=step.on,
            summary=summary, also_notify=notify,
            details={"case_id": case.case_id, "case_kind": case.kind.value, "state": case.state,
                     "action": step.action.value, "deadline": kind, "citation": step.citation,
                     "task": orjson.dumps(build_task(replace(case, reason=""))).decode()},
        )
        await publish(conn, BusMessage(
            topic=EVENTS_TOPIC, key=case.person_id, event_id=event_id,
            payload=event_payload(event, to_jsonable(latest), status_on_the_bus(status)),
            headers={"correlation_id": uuid4(), "source": WORKFLOW_SOURCE, "event_type": event_type.value,
                     **told_against},
        ))
        return event_id

    # ------------------------------------------------------ from the event log

    async def on_event(self, conn: AsyncConnection, payload: dict[str, Any], event_id: str) -> None:
        """Open a case when the register moves responsibility or records a dispute."""
        event = from_jsonable(DomainEvent, payload["event"])
        change = from_jsonable(RegisterChange, payload["change"])
        if event.event_type in (EventType.RESPONSIBILITY_TRANSFERRED, EventType.DISPUTE_RAISED) and (
                await conn.execute(select(change_retractions.c.change_id)
                                   .where(change_retractions.c.change_id == change.change_id))).first() is not None:
            return  # the change was retracted as recorded in error before its event was read: it opens nothing
        if event.event_type is EventType.RESPONSIBILITY_TRANSFERRED:
            for role in ("council", "commissioner"):
                outgoing, incoming = event.details.get(f"{role}_from"), event.details.get(f"{role}_to")
                if not outgoing or not incoming or outgoing == incoming:
                    continue  # only the basis changed (the same body holds it): nothing to hand over
                case_id = case_id_for(event_id, role)
                if await self.load(conn, case_id) is not None:
                    continue  # replayed event
                if await self._open_for(conn, event.person_id, role, outgoing, incoming, event.occurred_on):
                    continue  # one hand-over, one open case: told again, it opens nothing
                council = outgoing if role == "council" else payload["status"].get("council_basis_code")
                case, step = machine.open_transfer(
                    case_id=case_id, person_id=event.person_id, role=role, outgoing=outgoing, incoming=incoming,
                    on=change.recorded_on, basis=event.details.get(f"{role}_citation", ""),
                    area=self.area_for(council), holidays=self.holidays,
                    decided_by_dispute=change.change_type is ChangeType.DISPUTE_RESOLVED,
                    opened_by_change=change.change_id, handover_on=event.occurred_on)
                await self._save(conn, None, case, [step], EventType.TRANSFER_UPDATED)
                log.info("transfer case opened", case_id=case_id, person_id=event.person_id, status=case.state)
        elif event.event_type is EventType.DISPUTE_RAISED and change.dispute is not None:
            dispute = change.dispute
            if await self.load_by_dispute_id(conn, dispute.dispute_id) is not None:
                return  # opened by the hub itself (a contest, POST /v1/disputes), or a replay
            status = payload["status"]
            meeting = (status.get("council_basis_code") if dispute.kind.value == "council"
                       else status.get("commissioner_basis_code")) or dispute.parties[0]
            case, step = machine.raise_dispute(
                case_id=case_id_for("dispute", dispute.dispute_id), person_id=event.person_id,
                kind=dispute.kind.value, parties=dispute.parties, raised_by=REGISTER_ACTOR, on=change.recorded_on,
                reason=f"recorded on the register by {change.source}", meeting_needs=meeting,
                area=self.area_for(status.get("council_basis_code")), holidays=self.holidays,
                dispute_id=dispute.dispute_id)
            await self._save(conn, None, case, [step], EventType.DISPUTE_UPDATED)
            log.info("dispute case opened", case_id=case.case_id, person_id=event.person_id)
        elif (event.event_type is EventType.DISPUTE_RESOLVED and change.dispute is not None
              and change.source != WORKFLOW_SOURCE and change.dispute.resolved_responsible):
            # A source recorded the outcome on the register: close the case it settles.
            case = await self.load_by_dispute_id(conn, change.dispute.dispute_id)
            if case is None or case.clock is None:
                return
            case = await self.load(conn, case.case_id, lock=True) or case
            try:
                after, step = machine.resolve(case, REGISTER_ACTOR, max(change.recorded_on, change.effective_date),
                                              change.dispute.resolved_responsible, change.effective_date,
                                              by_change=change.change_id)
            except WorkflowRefusal as refusal:
                log.warning("register resolution does not fit the case", case_id=case.case_id,
                            reason_codes=[refusal.rule])
                return
            await self._save(conn, case, after, [step], EventType.DISPUTE_UPDATED)

    async def _open_for(self, conn: AsyncConnection, person_id: str, role: str, outgoing: str, incoming: str,
                        on: date) -> str | None:
        """The case id of an open transfer case for this very hand-over (role,
        bodies and date), if there is one."""
        t = workflow_cases.c
        for row in (await conn.execute(select(t.case_id, t.data).where(
                t.person_id == person_id, t.kind == CaseKind.TRANSFER.value,
                t.state.in_(OPEN_TRANSFER_STATES)))).all():
            data = row.data
            if (data.get("role"), data.get("outgoing"), data.get("incoming")) != (role, outgoing, incoming):
                continue
            if data.get("handover_on") is None:  # opened before it was kept: dated now, if it can be
                handover_on = (await self._dated(conn, self.from_row(data))).handover_on
            else:
                handover_on = date.fromisoformat(data["handover_on"])
            if handover_on == on:
                return row.case_id
        return None

    async def _dated(self, conn: AsyncConnection, case: Case, held: list[Any] | None = None) -> Case:
        """`case` with its hand-over's date. A transfer case opened before
        `handover_on` was kept is given it on first use (kept in the store: no
        transition, nobody told, its hand-over is the same): the `occurred_on`
        of the event that opened it (`_opening_handover_on`). One that cannot
        be dated is returned as it is (matched without a date, as before).
        `held`: the person's register changes, if already read."""
        if case.kind is not CaseKind.TRANSFER or case.handover_on is not None:
            return case
        handover_on, source = await self._opening_handover_on(conn, case, held)
        if handover_on is None:
            log.info("transfer case left undated", case_id=case.case_id)
            return case
        # Under the case's lock, as any write of it is (an action may have
        # moved it since it was read: only the date is added to what is held).
        t = workflow_cases.c
        await lock_topic(conn, EVENTS_TOPIC)  # before the case's, as `load` takes them
        data = (await conn.execute(select(t.data).where(t.case_id == case.case_id).with_for_update())).scalar_one()
        if data.get("handover_on") is None:
            await conn.execute(workflow_cases.update().where(t.case_id == case.case_id).values(
                data={**data, "handover_on": handover_on.isoformat()}, version=t.version + 1,
                updated_at=datetime.now(UTC)))
            log.info("transfer case dated", case_id=case.case_id, source=source)
        else:
            handover_on = date.fromisoformat(data["handover_on"])
        return replace(case, handover_on=handover_on)

    async def _opening_handover_on(self, conn: AsyncConnection, case: Case,
                                   held: list[Any] | None = None) -> tuple[date | None, str]:
        """The date of the hand-over transfer `case` was opened for: the
        `occurred_on` of the `s117-responsibility-transferred` event that
        opened it, found by the case's id among the events of the change that
        told it (`opened_by_change`; for a case older still, of the person's
        changes). Read from the log while it holds the event ("log"), else
        (purged by retention, or relayed to Kafka) derived again from the
        person's history as the hub held it when that change was recorded
        ("history"). Not the change's own effective date: a late change tells
        a hand-over it reveals on the date of the step where it happens
        (hub/domain/rules/timeline.py). (None, "") if the event is not found,
        or does not tell this hand-over when derived again."""
        if held is None:
            c = register_changes.c
            held = (await conn.execute(select(c.change_id, c.canonical, c.received_at)
                                       .where(c.person_id == case.person_id, not_retracted()))).all()
        found = opening_event(case, [case.opened_by_change] if case.opened_by_change
                              else [r.change_id for r in held])
        if found is None:
            return None, ""
        change_id, index, event_id = found
        payload = (await conn.execute(select(bus_messages.c.payload)
                                      .where(bus_messages.c.event_id == event_id))).scalar_one_or_none()
        if payload is not None:
            told = from_jsonable(DomainEvent, payload["event"])
            return (told.occurred_on, "log") if _opened(case, told) else (None, "")
        mine = next((r for r in held if r.change_id == change_id), None)
        if mine is None:
            return None, ""
        history = [from_jsonable(RegisterChange, r.canonical) for r in held if r.received_at < mine.received_at]
        again = transfer_event_again(case.person_id, history, from_jsonable(RegisterChange, mine.canonical), index,
                                     self._ref, self._agreements)
        return (again.occurred_on, "history") if again is not None and _opened(case, again) else (None, "")

    async def people_with_withdrawable_transfers(self, conn: AsyncConnection, people: list[str]) -> set[str]:
        """Which of `people` have a transfer case late history can withdraw
        (awaiting acceptance, overdue, or accepted)."""
        if not people:
            return set()
        return set((await _PEOPLE_WITH_WITHDRAWABLE_TRANSFERS.execute(conn, people)).scalars())

    async def people_with_open_disputes(self, conn: AsyncConnection, people: list[str]) -> set[str]:
        """Which of `people` have an open, escalated or resolved dispute case:
        a retraction of one of their changes may withdraw or reopen it
        (`on_retracted`)."""
        if not people:
            return set()
        return set((await _PEOPLE_WITH_OPEN_DISPUTES.execute(conn, people)).scalars())

    async def on_history_changed(self, conn: AsyncConnection, person_id: str, event_id: str) -> list[Case]:
        """A register change was recorded for `person_id` (`event_id`: its
        `s117-register-change-recorded` event). If it arrived late (it sorts
        before a change recorded before it) it can show that a hand-over told
        earlier never happened, or happened on another date
        (hub/domain/rules/timeline.py). Each of the person's transfer cases
        awaiting acceptance, overdue or accepted by the incoming body whose
        hand-over (role, from, to, date) the history no longer holds, as it
        stood once that change was recorded, is withdrawn
        (TransferState.WITHDRAWN, by the hub), and both bodies hear of it as
        of any transition. Where the history holds the same hand-over (role
        and bodies) on another date, the withdrawal says the case is
        superseded (`superseded_by_handover_on`): that date's hand-over is told
        by its own `s117-responsibility-transferred` event, which opens its own
        case, so one hand-over has one open case whatever order the changes
        arrive in. An accepted case is withdrawn saying it had been accepted
        (the acceptance stays in its history). Left alone: a contested case
        (the dispute its contest opened carries the question, and while it is
        open ingest holds changes that would move responsibility, Worcs 8.5)
        and one accepted by a resolved dispute's record (binding on both).
        A change in its turn can only add a step at its own place: nothing to
        withdraw. Idempotent: a withdrawn case is final, and a replay finds no
        case to withdraw; a transfer the history shows again later is told by
        a new `s117-responsibility-transferred` event, which opens a new case."""
        t = workflow_cases.c
        rows = (await conn.execute(select(t.data).where(
            t.person_id == person_id, t.kind == CaseKind.TRANSFER.value, t.state.in_(WITHDRAWABLE_TRANSFER_STATES))
            .order_by(t.opened_on, t.case_id).with_for_update())).all()
        if not rows:
            return []
        c = register_changes.c
        held = (await conn.execute(select(c.change_id, c.canonical, c.received_at)
                                   .where(c.person_id == person_id, not_retracted()))).all()
        mine = next((r for r in held if event_id_for(r.change_id, 0, RECORDED) == event_id), None)
        if mine is None:
            return []  # not this person's change (or no longer held): nothing to go on
        # The history as the hub held it once this change was recorded (as the
        # dispatcher tells lateness: what arrived before it), not what has
        # arrived since: a later change is looked at when its own event is.
        received = {r.change_id: r.received_at for r in held}
        # Only a case told by a change recorded before this one: a replay of
        # this change's event must not judge a case history told since.
        cases = [case for case in (self.from_row(row.data) for row in rows)
                 if not case.opened_by_change or (case.opened_by_change != mine.change_id
                                                  and received.get(case.opened_by_change, mine.received_at)
                                                  <= mine.received_at)]
        if not cases:
            return []
        history = [from_jsonable(RegisterChange, r.canonical) for r in held if r.received_at <= mine.received_at]
        change = next(h for h in history if h.change_id == mine.change_id)
        if not is_late(change, history):
            return []
        return await self._withdraw_unheld(
            conn, person_id, cases, held, history, max(england_day(), change.recorded_on),
            max(change.recorded_on, self.clock.today()),
            f"the {change.change_type.value} change effective {change.effective_date.isoformat()}, "
            f"received on {change.recorded_on.isoformat()}, changed the history before it")

    async def _withdraw_unheld(self, conn: AsyncConnection, person_id: str, cases: list[Case], held: list[Any],
                               history: list[RegisterChange], as_of: date, on: date, detail: str,
                               unbound: frozenset[str] = frozenset()) -> list[Case]:
        """Withdraw each of `cases` whose hand-over `history` no longer holds (superseded when it holds
        it on another date): `on_history_changed` and `on_retracted` (`unbound`: `_retracted_transfers`)."""
        accepted = [case.case_id for case in cases if case.state == TransferState.ACCEPTED]
        if accepted:  # withdrawable only if the incoming body accepted it (not a resolved dispute's record,
            # unless that resolution no longer binds: `unbound`)
            w = workflow_transitions.c
            by_party = set((await conn.execute(select(w.case_id).where(
                w.case_id.in_(accepted), w.action == Action.ACCEPT.value))).scalars())
            cases = [case for case in cases if case.state != TransferState.ACCEPTED or case.case_id in by_party
                     or case.opened_by_change in unbound]
        # A case opened before its hand-over's date was kept is dated first (kept,
        # on first use): else the same hand-over on another date would hold it.
        cases = [await self._dated(conn, case, held) for case in cases]
        still = handovers(transfer_steps(person_id, history, self._ref, self._agreements, as_of)) if history else set()
        withdrawn = []
        for case in cases:
            holds, moved_to = same_handover(case, still)
            if holds:
                continue
            after, step = machine.withdraw(case, max(on, case.opened_on), detail, moved_to=moved_to)
            await self._save(conn, case, after, [step], EventType.TRANSFER_UPDATED)
            log.info("transfer case withdrawn", case_id=case.case_id, person_id=person_id, status=after.state,
                     superseded=moved_to is not None, was=case.state)
            withdrawn.append(after)
        return withdrawn

    async def on_retracted(self, conn: AsyncConnection, person_id: str, change_id: str,
                           told: frozenset[str] | None = None) -> list[Case]:
        """A register change of `person_id` was retracted as recorded in error
        (hub/retraction.py): the transfer cases whose hand-over it takes away
        (`_retracted_transfers`) and the dispute case it raised
        (`_retracted_disputes`) are withdrawn, the dispute case it resolved is
        reopened (`_retracted_resolutions`); both parties are told as of any
        transition. Idempotent: a withdrawn case is final, and a reopened one no
        longer names the change as its resolution."""
        withdrawn = await self._retracted_disputes(conn, person_id, change_id)
        # Reopened: each as it was resolved, so that the hand-over its resolution bound both bodies to
        # (the transfer case its resolving change opened) can be withdrawn with the others.
        reopened = await self._retracted_resolutions(conn, person_id, change_id)
        unbound = frozenset({change_id, *(case.resolved_by_change for case in reopened)})
        reopened = [await self.load(conn, case.case_id) or case for case in reopened]
        return withdrawn + reopened + await self._retracted_transfers(conn, person_id, change_id, told, unbound)

    async def on_reinstated(self, conn: AsyncConnection, person_id: str, change_id: str,
                            told: frozenset[str] | None = None) -> list[Case]:
        """A retraction of `change_id` made in error was reversed (hub/unretractions.py): the change counts in
        the history again. Its own events that open a case (a hand-over, a dispute raised) are read again
        (`on_event`): one the consumer read while the change was retracted opened nothing, and now opens its
        case; one that opened its case opens nothing again (idempotent: the case id is the event's). A case
        the retraction withdrew or reopened is final: the reversal is refused then (`409`). Nothing if the
        change is retracted again since (the store decides), or its events are no longer kept. Then, as late
        history (`on_merged`): each transfer case whose hand-over the history with the change (`told`: the
        event's `history_changes`) no longer holds is withdrawn."""
        if (await conn.execute(select(change_retractions.c.change_id)
                               .where(change_retractions.c.change_id == change_id))).first() is not None:
            return []
        kinds = (EventType.RESPONSIBILITY_TRANSFERRED.value, EventType.DISPUTE_RAISED.value)
        ids = [event_id_for(change_id, i, kind) for i in range(_EVENTS_A_CHANGE) for kind in kinds]
        for row in (await conn.execute(select(bus_messages.c.event_id, bus_messages.c.payload).where(
                bus_messages.c.topic == EVENTS_TOPIC, bus_messages.c.event_id.in_(ids))
                .order_by(bus_messages.c.offset))).all():
            await self.on_event(conn, row.payload, row.event_id)
        return await self._history_rechecked(conn, person_id, told, "a register change retracted in error was "
                                             "reinstated: the history with it changed the history before it")

    async def on_merged(self, conn: AsyncConnection, person_id: str,
                        told: frozenset[str] | None = None, unmerged: bool = False) -> list[Case]:
        """Two NHS numbers of `person_id` were merged (hub/merges.py): the superseded person's register
        history joined theirs, and their cases with it (hub/workflows/person_merge.py). As after a
        retraction (`_retracted_transfers`), each of the person's transfer cases late history could
        withdraw (awaiting acceptance, overdue, or accepted by the incoming body) whose hand-over the joined
        history no longer holds is withdrawn (superseded where it holds it on another date), both bodies
        told. `told`: the joined history's changes (the merge event's `history_changes`; None: all held
        now); a case a change recorded since opened is left to that change. Dispute cases are left as they
        are: a merge takes no change away (the change that raised or resolved one is still held).
        Idempotent: a withdrawn case is final. `unmerged`: the reversal of a merge made in error
        (hub/unmerges.py), re-checked the same way against the person's history as it left it."""
        why = ("a merge of two NHS numbers made in error was reversed: the person's own register history changed "
               "the joined history before it") if unmerged else (
            "two NHS numbers of this person were merged (PDS): the joined register history changed the history "
            "before it")
        return await self._history_rechecked(conn, person_id, told, why)

    async def _history_rechecked(self, conn: AsyncConnection, person_id: str, told: frozenset[str] | None,
                                 why: str) -> list[Case]:
        """A correction changed `person_id`'s history (a merge, its reversal, a reinstatement): each transfer
        case late history could withdraw whose hand-over the history `told` names no longer holds is withdrawn
        (superseded where it holds it on another date), `why` given (see `on_merged`)."""
        rows = await self._cases_locked(conn, person_id, CaseKind.TRANSFER, WITHDRAWABLE_TRANSFER_STATES)
        if not rows:
            return []
        held = await self._held_changes(conn, person_id, told)
        known = {r.change_id for r in held}
        cases = [case for case in (self.from_row(row.data) for row in rows)
                 if not case.opened_by_change or case.opened_by_change in known]
        if not cases or not held:
            return []
        history = [from_jsonable(RegisterChange, r.canonical) for r in held]
        today = self.clock.today()
        return await self._withdraw_unheld(
            conn, person_id, cases, held, history, max(england_day(), today), today, why)

    @staticmethod
    async def _held_changes(conn: AsyncConnection, person_id: str, told: frozenset[str] | None) -> list[Any]:
        """The person's register changes not retracted (id, content, when received), as the store holds them,
        or only those of them `told` names (an event's `history_changes`): what a re-check of their
        transfers reads after a retraction or a merge."""
        c = register_changes.c
        held = (await conn.execute(select(c.change_id, c.canonical, c.received_at)
                                   .where(c.person_id == person_id, not_retracted()))).all()
        return list(held) if told is None else [r for r in held if r.change_id in told]

    @staticmethod
    async def _cases_locked(conn: AsyncConnection, person_id: str, kind: CaseKind, states: Any) -> list[Any]:
        """The person's cases of `kind` in `states`, oldest first, locked for this transaction."""
        t = workflow_cases.c
        return (await conn.execute(select(t.data).where(
            t.person_id == person_id, t.kind == kind.value, t.state.in_(states))
            .order_by(t.opened_on, t.case_id).with_for_update())).all()

    @staticmethod
    async def _change_of(conn: AsyncConnection, person_id: str, change_id: str) -> RegisterChange | None:
        """The person's register change `change_id`, retracted or not."""
        c = register_changes.c
        raw = (await conn.execute(including_retracted(select(c.canonical).where(
            c.change_id == change_id, c.person_id == person_id)))).scalar_one_or_none()
        return None if raw is None else from_jsonable(RegisterChange, raw)

    async def _retracted_disputes(self, conn: AsyncConnection, person_id: str, change_id: str) -> list[Case]:
        """The retracted change was a source's `dispute-raised`: the open (or
        escalated) dispute case it opened (raised by the register, with its
        dispute id) is withdrawn (DisputeState.WITHDRAWN, by the hub): its
        clock stops, its interim arrangements end, the parties are told once
        (`s117-dispute-updated`, the Task `cancelled` with the reason), and no
        party action is taken on it any more (409 dispute-withdrawn). Left
        alone: a case raised by a body (POST /v1/disputes, or a transfer's
        contest: the register change the hub recorded for it did not open it),
        a resolved case, and one another dispute-raised change the history
        still holds raises (the same dispute id, not retracted: the dispute is
        still on the register). The history as it stands now, not as `told`:
        a change raising the dispute again since keeps the case open."""
        rows = await self._cases_locked(conn, person_id, CaseKind.DISPUTE, OPEN_DISPUTE_STATES)
        retracted = await self._change_of(conn, person_id, change_id) if rows else None
        if retracted is None:
            return []
        c = register_changes.c
        if retracted.change_type is not ChangeType.DISPUTE_RAISED or retracted.dispute is None:
            return []
        if (await conn.execute(select(change_retractions.c.change_id)
                               .where(change_retractions.c.change_id == change_id))).first() is None:
            return []  # not retracted (the event says it is; the store decides)
        dispute_id = retracted.dispute.dispute_id
        cases = [case for case in (self.from_row(row.data) for row in rows)
                 if case.dispute_id == dispute_id and case.raised_by == REGISTER_ACTOR]
        if not cases:
            return []
        still = (await conn.execute(select(c.canonical).where(
            c.person_id == person_id, c.change_type == ChangeType.DISPUTE_RAISED.value, not_retracted()))).scalars()
        if any((d := from_jsonable(RegisterChange, raw).dispute) is not None and d.dispute_id == dispute_id
               for raw in still):
            return []
        today = self.clock.today()
        detail = f"the dispute-raised change effective {retracted.effective_date.isoformat()} was retracted"
        withdrawn = []
        for case in cases:
            after, step = machine.withdraw_dispute(case, max(today, case.opened_on), detail)
            await self._save(conn, case, after, [step], EventType.DISPUTE_UPDATED)
            log.info("dispute case withdrawn", case_id=case.case_id, person_id=person_id, status=after.state,
                     was=case.state)
            withdrawn.append(after)
        return withdrawn

    async def _retracted_resolutions(self, conn: AsyncConnection, person_id: str, change_id: str) -> list[Case]:
        """The retracted change was a source's `dispute-resolved` of a dispute
        case the register resolved (`Case.resolved_by_change`: the party's
        record that completed the outcome, every party having recorded it,
        hub/domain/rules/engine.py `_on_dispute_resolved`), and the history
        without it holds the dispute open again (one party's record no longer
        stands with the others'): the case is reopened at the stage it was
        resolved at (`machine.reopen`: its clock started again, the outcome
        gone, its agreed interim arrangements in force again) and the parties
        are told once (`s117-dispute-updated`, the Task `in-progress` with the
        reason). The transfer case the resolution's hand-over opened is
        withdrawn by `_retracted_transfers`. Left alone: a case resolved by the
        parties' agreement or a determination (the hub's own record of it is
        never retracted), and one the history still holds resolved."""
        rows = await self._cases_locked(conn, person_id, CaseKind.DISPUTE, (DisputeState.RESOLVED.value,))
        resolved = [case for case in (self.from_row(row.data) for row in rows) if case.resolved_by_change]
        retracted = await self._change_of(conn, person_id, change_id) if resolved else None
        if retracted is None or retracted.change_type is not ChangeType.DISPUTE_RESOLVED or retracted.dispute is None:
            return []
        cases = [case for case in resolved if case.dispute_id == retracted.dispute.dispute_id]
        if not cases or (await conn.execute(select(change_retractions.c.change_id).where(
                change_retractions.c.change_id == change_id))).first() is None:
            return []  # not this dispute's, or not retracted (the event says it is; the store decides)
        c = register_changes.c
        history = [from_jsonable(RegisterChange, raw) for raw in (await conn.execute(
            select(c.canonical).where(c.person_id == person_id, not_retracted()))).scalars()]
        today = self.clock.today()
        status = evaluate(person_id, history, self._ref, self._agreements, max(today, england_day()))
        if not any(d.dispute_id == retracted.dispute.dispute_id for d in status.open_disputes):
            return []  # the register still holds an outcome for it
        detail = f"the dispute-resolved change effective {retracted.effective_date.isoformat()} was retracted"
        reopened = []
        for case in cases:
            after, step = machine.reopen(case, max(today, case.resolved_on or case.opened_on), self.holidays, detail)
            await self._save(conn, case, after, [step], EventType.DISPUTE_UPDATED)
            log.info("dispute case reopened", case_id=case.case_id, person_id=person_id, status=after.state,
                     was=case.state)
            reopened.append(case)
        return reopened

    async def _retracted_transfers(self, conn: AsyncConnection, person_id: str, change_id: str,
                                   told: frozenset[str] | None = None,
                                   unbound: frozenset[str] = frozenset()) -> list[Case]:
        """Each of the person's transfer cases late history
        could withdraw (`on_history_changed`: awaiting acceptance, overdue, or
        accepted by the incoming body) whose hand-over the history without the
        retracted change no longer holds is withdrawn the same way, the case
        the retracted change opened among them; where that history holds the
        same hand-over on another date, superseded. `told`: the changes the
        history held when the retraction was recorded (its event's
        `history_changes`; None: all held now); a case a change recorded since
        opened is left to that change. `unbound`: the changes whose dispute
        resolution no longer binds (the retracted change, and the resolving
        change of each dispute case it reopened): a transfer case one of them
        opened as a resolved dispute's record is withdrawn too. Idempotent: a
        withdrawn case is final."""
        rows = await self._cases_locked(conn, person_id, CaseKind.TRANSFER, WITHDRAWABLE_TRANSFER_STATES)
        retracted = await self._change_of(conn, person_id, change_id) if rows else None
        if retracted is None or (await conn.execute(select(change_retractions.c.change_id).where(
                change_retractions.c.change_id == change_id))).first() is None:
            return []  # not retracted (reinstated since, hub/unretractions.py: the event says it is; the store decides)
        held = await self._held_changes(conn, person_id, told)
        known = {r.change_id for r in held} | {change_id}
        cases = [case for case in (self.from_row(row.data) for row in rows)
                 if not case.opened_by_change or case.opened_by_change in known]
        if not cases:
            return []
        history = [from_jsonable(RegisterChange, r.canonical) for r in held]
        today = self.clock.today()
        return await self._withdraw_unheld(
            conn, person_id, cases, held, history, max(england_day(), today), today,
            f"the {retracted.change_type.value} change effective {retracted.effective_date.isoformat()} "
            "was retracted as recorded in error", unbound=unbound)

    # ----------------------------------------------------------- actions

    async def act(self, case_id: str, actor: str, action: Action, body: dict[str, Any]) -> Acted:
        """Apply one party's action; raises WorkflowRefusal for an illegal one."""
        await self.clock.load()  # settable only: the offset set since, by whichever process
        today = self.clock.today()
        async with self._engine.begin() as conn:
            case = await self.load(conn, case_id, lock=True)
            if case is None:
                raise LookupError(case_id)
            steps: list[Transition] = []
            register_change = None
            if action is Action.ACCEPT:
                after, step = machine.accept(case, actor, today)
            elif action is Action.CONTEST:
                after, step = machine.contest(case, actor, today, str(body.get("reason") or ""))
            elif action is Action.AGREE_INTERIM:
                after, step = machine.agree_interim(case, actor, today, str(body["lead_body"]), body["shares"])
            elif action is Action.ESCALATE:
                after, step = machine.escalate(case, actor, today, self.holidays)
            elif action is Action.RESOLVE:
                # A party's call proposes or agrees; the last agreement (or the determination) resolves.
                after, step = machine.resolve(case, actor, today, str(body["responsible"]), body["responsible_from"],
                                              str(body.get("determination") or ""))
            else:
                raise WorkflowRefusal(409, "illegal-transition", f"'{action.value}' is not a party action", "")
            steps.append(step)
            event_type = EventType.TRANSFER_UPDATED if case.kind is CaseKind.TRANSFER else EventType.DISPUTE_UPDATED
            if action is Action.CONTEST:
                # The contest opens a dispute between the two bodies, under the procedure of its
                # kind: councils' (Worcs 4.3.4, 15.4), commissioners' (Worcs 15.5; Who Pays? App. 1).
                dispute_id = f"DSP-{case.case_id[:8]}"
                dispute, raised = machine.raise_dispute(
                    case_id=case_id_for("dispute", dispute_id), person_id=case.person_id, kind=case.role,
                    parties=case.parties, raised_by=actor, on=today, reason=str(body.get("reason") or ""),
                    meeting_needs=case.outgoing or case.parties[0],
                    area=self.area_for(case.outgoing if case.role == "council" else None), holidays=self.holidays,
                    dispute_id=dispute_id, transfer_case_id=case.case_id)
                after = replace(after, dispute_id=dispute_id)
                await self._save(conn, case, after, steps, event_type)
                await self._save(conn, None, dispute, [raised], EventType.DISPUTE_UPDATED)
                register_change = self._dispute_change(dispute, ChangeType.DISPUTE_RAISED, today)
                return Acted(after, [*steps, raised], register_change)
            await self._save(conn, case, after, steps, event_type)
            if after.state == DisputeState.RESOLVED and case.state != DisputeState.RESOLVED:
                register_change = self._dispute_change(after, ChangeType.DISPUTE_RESOLVED, today)
        return Acted(after, steps, register_change)

    async def raise_dispute(self, caller: Caller, person_id: str, kind: str, parties: list[str], reason: str,
                            lead_body: str | None) -> Acted:
        """A body raises a dispute about a person (POST /v1/disputes). It must
        have a relationship with the person on the day (hub/domain/access.py
        `decide_raise_dispute`), else NoRelationship; every party must be a
        body of the dispute's kind (422)."""
        await self.clock.load()
        today = self.clock.today()
        actor = caller.org_code
        async with self._engine.begin() as conn:
            rows = (await conn.execute(select(register_changes.c.canonical)
                                       .where(register_changes.c.person_id == person_id, not_retracted()))).all()
            if not rows:
                raise NoRelationship(decide_raise_dispute(caller, None, ()), known=False)
            changes = [from_jsonable(RegisterChange, r.canonical) for r in rows]
            status = evaluate(person_id, changes, self._ref, self._agreements, today)
            transfers = (await conn.execute(select(workflow_cases.c.parties).where(
                workflow_cases.c.person_id == person_id, workflow_cases.c.kind == CaseKind.TRANSFER.value,
                workflow_cases.c.state.in_(OPEN_TRANSFER_STATES)))).all()
            decision = decide_raise_dispute(caller, PersonFacts(frozenset(), status_parties(status)),
                                            {p for t in transfers for p in t.parties})
            if not decision.allowed:
                raise NoRelationship(decision, known=True)
            meeting = lead_body or ((status.council_basis_code if kind == "council" else status.commissioner_basis_code)
                                    or parties[0])
            dispute_id = new_api_dispute_id()
            case, step = machine.raise_dispute(
                case_id=case_id_for("dispute", dispute_id), person_id=person_id, kind=kind, parties=tuple(parties),
                raised_by=actor, on=today, reason=reason, meeting_needs=meeting,
                area=self.area_for(status.council_basis_code), holidays=self.holidays, dispute_id=dispute_id,
                kind_of=lambda code: self.kind_of(code, today))
            await self._save(conn, None, case, [step], EventType.DISPUTE_UPDATED)
        return Acted(case, [step], self._dispute_change(case, ChangeType.DISPUTE_RAISED, today), decision)

    def kind_of(self, code: str, on: date) -> str | None:
        """"council" for a social services authority in place on `on` (by its
        own GSS code), "commissioner" for an ICB (a CCG before 1 July 2022) or
        NHS England by its own ODS code; None otherwise (a predecessor's or a
        sub-ICB location's code names the body by another code)."""
        council = self._ref.council(code, on)
        if council is not None and council.code == code:
            return "council"
        commissioner = self._ref.commissioner_successor(code, on)
        if commissioner is not None and commissioner.code == code:
            return "commissioner"
        return None

    def _dispute_change(self, case: Case, change_type: ChangeType, today: date) -> dict[str, Any]:
        real_today = england_day()
        dispute: dict[str, Any] = {"dispute_id": case.dispute_id, "kind": case.dispute_kind or case.role,
                                   "parties": list(case.parties)}
        effective = min(today, real_today)
        if change_type is ChangeType.DISPUTE_RESOLVED:
            dispute["resolved_responsible"] = case.responsible
            # The rules fold changes by date: a resolution takes effect no earlier
            # than the dispute was raised; the statement keeps the "from" date.
            assert case.responsible_from is not None
            effective = min(max(case.responsible_from, case.opened_on), real_today)
        return {"source_system": "S117 Hub workflows", "change_type": change_type.value,
                "source_message_id": f"workflow/{case.case_id}/{change_type.value}",
                "effective_date": effective.isoformat(), "notified_on": min(today, real_today).isoformat(),
                "dispute": dispute}

    async def record_register_change(self, person_id: str, data: dict[str, Any], actor: str) -> dict[str, Any]:
        """Send the register change a transition implies through the normal ingest."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(persons.c.details).where(persons.c.person_id == person_id))).one()
            await conn.rollback()
        nhs_number = load_person_details(self._protector, row.details)["nhs_number"]
        client = Client(client_id=WORKFLOW_SOURCE, name="S117 Hub workflows", org_code=actor, org_kind="hub",
                        scopes=("register:write",))
        change = {**data, "person": {"nhs_number": nhs_number}}
        outcome = await self._ingest.accept_mapped(client, change, orjson.dumps(data), "workflow")
        if outcome.is_problem:
            log.error("workflow register change refused", status_code=outcome.status_code, person_id=person_id)
        return outcome.body

    async def statement(self, case: Case) -> dict[str, Any]:
        """The reimbursement statement, with amounts from the funding records
        when the money side is wired (`costs_for`, set by hub/bootstrap.py)."""
        costs = self.costs
        if costs is None and self.costs_for is not None:
            costs = await self.costs_for(case)
        return to_jsonable(reimbursement_statement(case, costs))

    # -------------------------------------------------------------- clocks

    async def scan(self) -> dict[str, int]:
        """Reminders before a deadline, breaches after it (escalating a dispute
        to the area's next stage). Each happens once per clock."""
        await self.clock.load()  # settable only: set through the front, this may be another process
        today = self.clock.today()
        counts = {"reminders": 0, "breaches": 0}
        async with self._engine.connect() as conn:
            ids = (await conn.execute(select(workflow_cases.c.case_id).where(workflow_cases.c.due_on.is_not(None))
                                      .order_by(workflow_cases.c.due_on))).scalars().all()
            await conn.rollback()
        for case_id in ids:
            async with self._engine.begin() as conn:
                case = await self.load(conn, case_id, lock=True)
                if case is None or case.clock is None:
                    continue
                area = self._area_named(case)
                due = due_on(case, today, self.holidays, area.reminder_working_days)
                if due is None:
                    continue
                event_type = EventType.TRANSFER_UPDATED if case.kind is CaseKind.TRANSFER else EventType.DISPUTE_UPDATED
                if due.kind == "reminder":
                    after = replace(case, reminded=(*case.reminded, due.key))
                    step = Transition(case.case_id, Action.REMIND, case.state, case.state, CLOCK_ACTOR, today,
                                      case.clock.citation, "reminder")
                    await conn.execute(workflow_cases.update().where(workflow_cases.c.case_id == case_id)
                                       .values(data=self.to_row(after)))
                    await self._publish(conn, case, step, EventType.WORKFLOW_DEADLINE, kind="reminder")
                    counts["reminders"] += 1
                    continue
                if due.action is Action.BREACH and case.kind is CaseKind.TRANSFER:
                    after, step = machine.transfer_breach(case, today, area)
                elif due.action is Action.ESCALATE:
                    after, step = machine.escalate(case, CLOCK_ACTOR, today, self.holidays)
                else:
                    after, step = machine.dispute_breach(case, today)
                await self._publish(conn, case, step, EventType.WORKFLOW_DEADLINE, kind="breach")
                await self._save(conn, case, after, [step], event_type)
                counts["breaches"] += 1
        if counts["reminders"] or counts["breaches"]:
            log.info("workflow clocks scanned", count=counts["reminders"] + counts["breaches"],
                     breaches=counts["breaches"])
        return counts

    def _area_named(self, case: Case) -> AreaAgreement:
        for area in (*self._agreements.areas.values(), self._agreements.default_area):
            if area.name == case.area:
                return area
        return self._agreements.default_area
