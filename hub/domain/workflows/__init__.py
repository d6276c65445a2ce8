"""Transfers of responsibility and disputes as interagency workflows (pure).

`model` holds cases, clocks and transitions; `machine` the transition tables
and the functions that apply them; `settlement` the reimbursement statement;
`held` the Worcs 8.5 hold on changes while a dispute is open; `clocks` which
reminders and deadlines are due on a day.
"""

from hub.domain.workflows.held import HOLD_RULE, hold_reason
from hub.domain.workflows.model import (
    CLOCK_ACTOR,
    REGISTER_ACTOR,
    Action,
    Case,
    CaseKind,
    Clock,
    DisputeState,
    Interim,
    Transition,
    TransferState,
    WorkflowRefusal,
)

__all__ = [
    "CLOCK_ACTOR", "HOLD_RULE", "REGISTER_ACTOR", "Action", "Case", "CaseKind", "Clock", "DisputeState",
    "Interim", "Transition", "TransferState", "WorkflowRefusal", "hold_reason",
]
