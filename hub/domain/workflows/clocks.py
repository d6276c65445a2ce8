"""What a case's clock asks for on a given day: a reminder, a breach, or nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from hub.domain.working_days import add_working_days
from hub.domain.workflows.model import Action, Case, CaseKind, DisputeState, TransferState


@dataclass(frozen=True, slots=True)
class ClockDue:
    kind: str  # "reminder" or "breach"
    key: str  # stable per clock and kind: the scanner acts once per key
    action: Action | None  # the transition a breach takes (None for a reminder)


def clock_key(case: Case) -> str:
    assert case.clock is not None
    return f"{case.state}/{case.stage_index}/{case.clock.due_on.isoformat()}"


def due_on(case: Case, today: date, holidays: frozenset[date], reminder_working_days: int) -> ClockDue | None:
    clock = case.clock
    if clock is None:
        return None
    key = clock_key(case)
    if today > clock.due_on:
        if case.kind is CaseKind.TRANSFER:
            return ClockDue("breach", key, Action.BREACH) if case.state == TransferState.AWAITING else None
        if case.state in (DisputeState.OPEN, DisputeState.ESCALATED):
            if case.stage_index + 1 < len(case.stages):
                return ClockDue("breach", key, Action.ESCALATE)
            stage = case.stages[case.stage_index]
            return None if stage.name in case.breaches else ClockDue("breach", key, Action.BREACH)
        return None
    if reminder_working_days and key not in case.reminded and (
        add_working_days(today, reminder_working_days, holidays) >= clock.due_on
    ):
        return ClockDue("reminder", key, None)
    return None
