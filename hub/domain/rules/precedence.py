"""One order for a person's changes, whatever order they arrived in.

Changes are folded by effective date. Several changes often share a date (a
discharge onto a CTO is recorded as `left-hospital` and `cto-started` on the
same day; a GP or address change is recorded for the day of discharge), so
within a day the change TYPE decides first, by the table below; then the day
the hub had notice of each (`notified_on`: what was known first happened
first); then the source's own sequence (`source`, `source_message_id`). The
hub's random change id and the arrival order never decide.

Why each rank (the citations are the policy paragraphs the order serves):

0. `moved`, `gp-changed`: where a person lives and which GP they are
   registered with are facts of the day, so every other event that day sees
   them. A GP or address recorded for the day of discharge is the one "the
   area discharged to and GP registered with" for 2013-2016 discharges
   (Bucks "Responsible Commissioner"), and an address recorded for the day of
   a detention is the residence "immediately before" it (Worcs 4.3.1).
1. `detained`: the admission opens the day's stay.
2. `section-changed`, `cto-recalled`, `cto-revoked`: a section is converted,
   or a CTO patient recalled or revoked, only once in hospital.
3. `s17-leave-started`, `s17-leave-ended`, `section-ended-stayed-informally`:
   leave and informal stays follow a detention (Worcs 5.5).
4. `left-hospital`: the discharge itself; entitlement starts here (Worcs 1.1).
5. `cto-started`: a CTO follows the discharge from the s3 / s37 detention it
   is made on (Worcs 2.2, 5.3), so the discharge has already started the
   entitlement and the CTO does not re-determine the council.
6. `cto-ended`: a CTO made and ended on one day ends after it started.
7. `placement-started`: the placement the person is discharged to.
8. `review-requested`, `discharge-considered`: triggers of an unscheduled
   review (Worcs 14.1).
9. `review-completed`: a review held that day meets the triggers of that day.
10. `s117-discharge-decided`: decided at a review (Worcs 16.1, 16.3), so after
    it; a refusal is judged on the day's position (on a CTO: Worcs 16.2).
11. `dispute-raised`: about the responsibility the day's events settled
    (Worcs 15.4, 15.5).
12. `dispute-resolved`: after any dispute raised the same day.
13. `died`: last; everything else recorded for that day happened in life.
"""

from __future__ import annotations

from datetime import date

from hub.domain.model import ChangeType, RegisterChange

SAME_DAY_RANK: dict[ChangeType, int] = {
    ChangeType.MOVED: 0,
    ChangeType.GP_CHANGED: 0,
    ChangeType.DETAINED: 1,
    ChangeType.SECTION_CHANGED: 2,
    ChangeType.CTO_RECALLED: 2,
    ChangeType.CTO_REVOKED: 2,
    ChangeType.S17_LEAVE_STARTED: 3,
    ChangeType.S17_LEAVE_ENDED: 3,
    ChangeType.SECTION_ENDED_STAYED_INFORMALLY: 3,
    ChangeType.LEFT_HOSPITAL: 4,
    ChangeType.CTO_STARTED: 5,
    ChangeType.CTO_ENDED: 6,
    ChangeType.PLACEMENT_STARTED: 7,
    ChangeType.REVIEW_REQUESTED: 8,
    ChangeType.DISCHARGE_CONSIDERED: 8,
    ChangeType.REVIEW_COMPLETED: 9,
    ChangeType.S117_DISCHARGE_DECIDED: 10,
    ChangeType.DISPUTE_RAISED: 11,
    ChangeType.DISPUTE_RESOLVED: 12,
    ChangeType.DIED: 13,
}


def change_order(change: RegisterChange) -> tuple[date, int, date, str, str]:
    """The sort key of the fold: date, same-day rank, notice, source sequence."""
    return (
        change.effective_date,
        SAME_DAY_RANK[change.change_type],
        change.notified_on,
        change.source,
        change.source_message_id,
    )


def is_late(change: RegisterChange, history: list[RegisterChange] | tuple[RegisterChange, ...]) -> bool:
    """Whether some other change of the history sorts after `change`: it
    arrived after history it precedes, so what was told may be contradicted."""
    key = change_order(change)
    return any(c.change_id != change.change_id and change_order(c) > key for c in history)
