"""Retracting a register change recorded in error (pure).

A trust (or council) that recorded a change against the wrong person, twice
under two keys, or with the wrong section, retracts it: the change stays on
record, but no history holds it any more (hub/store/schema.py
`not_retracted`). What follows is what late history does: each body that
was told something the history without the change contradicts gets an
`s117-notification-corrected` superseding what it was told (the dispatcher,
hub/delivery/dispatcher.py), and a transfer case whose hand-over it takes
away is withdrawn, as is the dispute case a retracted `dispute-raised` change
opened (hub/workflows/service.py `on_retracted`). This module
says who may retract, and what the retraction's one event carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from hub.domain.access import Caller, decide_retract
from hub.domain.model import DomainEvent, EventType, RegisterChange
from hub.domain.rules.precedence import change_order

REASON_MAX = 1000
# The retraction's event id is UUIDv5 of (the retracted change's id, 0, this): one a change, the same on a replay.
RETRACTION_KIND = "s117-register-change-retracted"


def may_retract(caller: Caller, recorded_by_org: str | None) -> bool:
    """The organisation whose client recorded the change (any of its keys), or the hub operator. Anyone
    else is answered as for an unknown change (no oracle of what others recorded)."""
    return decide_retract(caller, recorded_by_org).allowed


def retraction_event(person_id: str, retracted: RegisterChange) -> DomainEvent:
    """The event a retraction publishes: a correction (routed to no one as it is: each body whose
    position the retraction moves is told the difference). Codes and dates only."""
    what = retracted.change_type.value.replace("-", " ")
    effective = retracted.effective_date.isoformat()
    return DomainEvent(
        event_type=EventType.NOTIFICATION_CORRECTED, person_id=person_id, change_id=retracted.change_id,
        occurred_on=retracted.effective_date,
        summary=f"A register change recorded in error was retracted: {what} effective {effective}.",
        details={"retracted_change_id": retracted.change_id, "change_type": retracted.change_type.value,
                 "effective_date": effective})


def carried_change(history: Sequence[RegisterChange], retracted: RegisterChange) -> RegisterChange:
    """The change the retraction's message carries (the dispatcher renders a message about a status and
    a change): the latest of the history without the retracted one; with nothing left, the retracted
    change bare of what it said (no section, hospital, order, places): no fact of it is told again."""
    if history:
        return max(history, key=change_order)
    return replace(retracted, legal_status_code=None, order_type=None, hospital_ods=None, gp_practice_ods=None,
                   residence_la_gss=None, discharge_destination_la_gss=None, discharge=None, dispute=None,
                   review_reason=None, already_receiving_s117_from=None, expected_stay_weeks=None,
                   ehc_plan_la_gss=None)
