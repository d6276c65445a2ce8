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
from dataclasses import fields, replace
from typing import Any

from hub.domain.access import Caller, decide_retract
from hub.domain.model import ChangeType, DomainEvent, EventType, RegisterChange
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
    return correction_event(person_id, retracted, "recorded in error was retracted", "retracted_change_id")


def correction_event(person_id: str, change: RegisterChange, what_happened: str, id_key: str) -> DomainEvent:
    """The correction a retraction or its reversal (hub/unretractions.py) publishes about `change`: its
    summary says `what_happened` to it, its details name it under `id_key`. Codes and dates only."""
    what = change.change_type.value.replace("-", " ")
    effective = change.effective_date.isoformat()
    return DomainEvent(
        event_type=EventType.NOTIFICATION_CORRECTED, person_id=person_id, change_id=change.change_id,
        occurred_on=change.effective_date,
        summary=f"A register change {what_happened}: {what} effective {effective}.",
        details={id_key: change.change_id, "change_type": change.change_type.value, "effective_date": effective})


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


# What makes a change sent since a retraction the same record as the retracted change, so that reversing
# the retraction would count one fact twice in the person's history (hub/unretractions.py refuses it):
# the same person and organisation (the caller's query), the same change type and effective date, and, for
# the type, the facts that tell two real events of that type on that day apart. What else a change carries
# (the GP, residence and discharge destination: the person's on the day; a child's expected stay; the
# commissioner already funding) a resend may have corrected: it is still the same event. A fact one of the
# two carries and the other does not is a difference. None: every fact of the canonical change, all but
# its ids, source, source message id and when it was received or notified (where in doubt).
_HOSPITAL = ("hospital_ods",)
_HOSPITAL_SECTION = ("hospital_ods", "legal_status_code", "order_type")
RESTATING_FACTS: dict[ChangeType, tuple[str, ...] | None] = {
    # A detention, a section changed: the hospital and the legal status (with a CP(I)A order's type).
    ChangeType.DETAINED: _HOSPITAL_SECTION,
    ChangeType.SECTION_CHANGED: _HOSPITAL_SECTION,
    # In and out of a hospital: the hospital.
    ChangeType.S17_LEAVE_STARTED: _HOSPITAL,
    ChangeType.S17_LEAVE_ENDED: _HOSPITAL,
    ChangeType.SECTION_ENDED_STAYED_INFORMALLY: _HOSPITAL,
    ChangeType.LEFT_HOSPITAL: _HOSPITAL,
    ChangeType.CTO_RECALLED: _HOSPITAL,
    # A CTO made, or revoked under a section revived: the hospital and the section.
    ChangeType.CTO_STARTED: _HOSPITAL_SECTION,
    ChangeType.CTO_REVOKED: _HOSPITAL_SECTION,
    # One CTO in force at a time, one death: the type and the day say it.
    ChangeType.CTO_ENDED: (),
    ChangeType.DIED: (),
    # Where the person now ordinarily resides (and, naming a split council's successor, the council before).
    ChangeType.MOVED: ("residence_la_gss", "no_fixed_abode", "residence_before_detention_la_gss"),
    ChangeType.GP_CHANGED: ("gp_practice_ods",),
    ChangeType.PLACEMENT_STARTED: (),
    ChangeType.REVIEW_COMPLETED: (),
    ChangeType.REVIEW_REQUESTED: ("review_reason",),
    ChangeType.DISCHARGE_CONSIDERED: ("review_reason",),
    # A dispute raised or resolved: the dispute (its id and kind; a resolution naming another body is the
    # same dispute's resolution sent again).
    ChangeType.DISPUTE_RAISED: ("dispute.dispute_id", "dispute.kind"),
    ChangeType.DISPUTE_RESOLVED: ("dispute.dispute_id", "dispute.kind"),
    # A discharge decision: all of it (who agreed, the reasons, who took part).
    ChangeType.S117_DISCHARGE_DECIDED: None,
}
_NOT_FACTS = frozenset({"change_id", "person_id", "source", "source_message_id", "notified_on", "recorded_on"})


def _fact(change: RegisterChange, name: str) -> Any:
    value: Any = change
    for part in name.split("."):
        value = getattr(value, part, None) if value is not None else None
    return value


def restates(other: RegisterChange, retracted: RegisterChange) -> bool:
    """Does `other` (of the same person and organisation) record the same event as `retracted`: the same
    type, effective date and the type's facts (`RESTATING_FACTS`; None: the whole change)?"""
    if other.change_type is not retracted.change_type or other.effective_date != retracted.effective_date:
        return False
    facts = RESTATING_FACTS[retracted.change_type]
    if facts is None:
        facts = tuple(f.name for f in fields(RegisterChange) if f.name not in _NOT_FACTS)
    return all(_fact(other, name) == _fact(retracted, name) for name in facts)
