"""The S117 rules engine: fold register changes, derive events, guard discharges."""

from hub.domain.rules.discharge import DISCHARGE_GUARDS, check_discharge
from hub.domain.rules.engine import CHANGE_HANDLERS, Evaluation, change_order, evaluate, evaluation
from hub.domain.rules.events import derive_events

__all__ = ["CHANGE_HANDLERS", "DISCHARGE_GUARDS", "change_order", "check_discharge", "derive_events", "evaluate",
           "Evaluation", "evaluation"]
