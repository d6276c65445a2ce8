"""Children and young people in hospital: who must be told, and when.

Two notices, neither about s117 entitlement (a child detained under s2 is
owed them as much as one under s3):

* Children Act 1989 s85 (Worcs 6.1): a child (under 18) accommodated in
  hospital for 12 consecutive weeks or more, or with the intention of
  accommodating them that long, is notified to the council responsible for
  the child: the council where the child was ordinarily resident immediately
  before (the residence the detention carries: every detention carries the
  residence or no fixed abode, hub/ingest/validation.py); with no ordinary
  residence, the council where the hospital is (s85(3)(b)). Sent once per
  stay: at admission when the trust says the stay is expected to last 12
  weeks or more (`expected_stay_weeks`), else on the day the child has been
  in hospital 12 weeks (day 84, the admission day being day 0: the same
  weekday 12 weeks on), still in hospital (a discharge on day 83: no
  notice).

Every notice is owed only while the stay goes on: a child who has left
hospital by the time a notice would go (the discharge recorded first, the
hub behind, a stay long over when the hub first learns of it or when this
was deployed) owes none, so councils are not sent notices of stays already
over.
* Worcs 6.4: the council maintaining the person's Education, Health and
  Care plan (`ehc_plan_la_gss` on the detention) is told of the admission.
  EHC plans run to 25 (Children and Families Act 2014): the notice goes
  whatever the person's age, the plan named being the trust's word that
  there is one.

A stay in hospital starts with a detention (`detained`, or a CTO revoked:
re-detained in hospital) when the person is not already in one, and ends
when they leave hospital, go onto a CTO or die. Section 17 leave and staying
on informally after the section ends do not end it: s85 is about the child
being accommodated in hospital, not the section (leave is short and the bed
is kept). A retracted change is not in the history: a retracted detention
owes no notice, a retracted discharge puts the child back in hospital.

Age (Family Law Reform Act 1969 s9: an age is attained at the start of the
birthday; born on 29 February, on 1 March in a common year): the s85
notice needs a child (under 18) on the admission day for the notice at
admission, on the 12-week day for the notice then, and on the day it is
sent (at 18 the person is no longer a child the council has the s85/s86
duties to: nothing is sent). No date of birth on the register: not known to
be a child, no s85 notice. The EHC notice has no age test.

After the s85 notice (`leaving_notices`, `withdrawals`):

* s85(4): "The accommodating authority shall also notify the responsible
  authority when they cease to accommodate the child." When a stay whose
  s85 notice went (`Told`: an `allowed` disclosure to a council) ends
  (leaving hospital, a CTO or death, as above), the council that was told is
  told the stay ended, with the date (the change that ended it): once per
  ending. No age test: the s85(1) duty was owed to the council while the
  person was a child, and telling the council that the stay it knows of has
  ended is still right when the person has turned 18 since (the council may
  hold a record of a child in hospital open otherwise); nor is the date of
  birth needed. A stay whose s85 notice did not go (ended on day 83, a
  council whose agreement refused it, no subscription) owes none: the
  council was never told of the stay. A stay long over when this was first
  deployed owes it once, since the council was told of it and never of its
  end.
* Withdrawal (UK GDPR Art. 16, 19: a rectification is told to each
  recipient): a notice that went (s85, EHC or leaving) whose detention was
  then retracted as recorded in error is withdrawn (`admission-recorded-in-
  error`: the notice was sent in error; the detention's facts are not told
  again); a leaving notice whose ending change was retracted is withdrawn
  with `stay-continues` (the child is in hospital again, the stay goes on;
  a later leaving is told as any) or, when another change now ends the stay,
  `leaving-recorded-in-error` (the leaving that now ends it is told by its
  own notice). Each withdrawal goes once, to the council that was told, and
  only for a notice that went (a notice refused or unsubscribed told no one).
  No age test either.

Pure functions, standard library only, no personal data (the date of birth
comes in as an argument and goes nowhere).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from enum import StrEnum

from hub.domain.model import ChangeType, EventType, RegisterChange
from hub.domain.ports import ReferenceData
from hub.domain.rules.precedence import change_order

LONG_STAY_WEEKS = 12
LONG_STAY = timedelta(weeks=LONG_STAY_WEEKS)  # 84 days
ADULT_AGE = 18

S85_CITATION = "Children Act 1989 s85; Worcs 6.1"
EHC_CITATION = "Worcs 6.4"
LEFT_CITATION = "Children Act 1989 s85(4)"
WITHDRAWN_CITATION = "UK GDPR Art. 16, 19 (rectification told to each recipient)"
# The notices a withdrawal or a leaving notice may follow (those that tell a council of a stay).
STAY_NOTICES = frozenset({EventType.CHILD_LONG_STAY_NOTICE, EventType.CHILD_EHC_PLAN_NOTICE,
                          EventType.CHILD_LEFT_HOSPITAL_NOTICE})

_STARTS = frozenset({ChangeType.DETAINED, ChangeType.CTO_REVOKED})
_ENDS = frozenset({ChangeType.LEFT_HOSPITAL, ChangeType.CTO_STARTED, ChangeType.DIED})
_ENDED_HOW = {ChangeType.LEFT_HOSPITAL: "left hospital",
              ChangeType.CTO_STARTED: "left hospital on a community treatment order",
              ChangeType.DIED: "died"}


class NoticeReason(StrEnum):
    """Why the notice went (the MessageHeader's S117-ChildNotice extension)."""

    EXPECTED_LONG_STAY = "expected-long-stay"  # s85(1)(b): intended to be 12 weeks or more, told at admission
    LONG_STAY_REACHED = "long-stay-reached"  # s85(1)(a): 12 consecutive weeks in hospital
    EHC_PLAN_ADMISSION = "ehc-plan-admission"  # Worcs 6.4: admitted, the plan's council told
    STAY_ENDED = "stay-ended"  # s85(4): the council told of the stay told it ended
    # Withdrawals (s117-child-notice-withdrawn): why the notice named in `supersedes` is withdrawn.
    ADMISSION_IN_ERROR = "admission-recorded-in-error"  # the detention retracted: the notice was sent in error
    STAY_CONTINUES = "stay-continues"  # the leaving retracted: the child is in hospital, the stay goes on
    LEAVING_IN_ERROR = "leaving-recorded-in-error"  # the leaving retracted; another change now ends the stay


class Basis(StrEnum):
    """Why this council is the one told."""

    ORDINARY_RESIDENCE = "ordinary-residence"  # s85(3)(a): where the child lived before the detention
    HOSPITAL_AREA = "hospital-area"  # s85(3)(b): no ordinary residence; where the hospital is
    EHC_PLAN = "ehc-plan"  # the council maintaining the EHC plan (Worcs 6.4)


@dataclass(frozen=True, slots=True)
class Stay:
    """One continuous stay in hospital, from the detention that began it."""

    change: RegisterChange  # the detention that began it
    admitted_on: date
    hospital_ods: str | None
    legal_status_code: str | None
    left_on: date | None = None  # None: still in hospital
    ended_by: RegisterChange | None = None  # the change that ended it (leaving hospital, a CTO, death)


@dataclass(frozen=True, slots=True)
class ChildNotice:
    """A notice owed for one stay to one council (`org_code`; None: no council could be found)."""

    event_type: EventType
    reason: NoticeReason
    stay: Stay
    org_code: str | None
    basis: Basis | None
    due_on: date  # the day it is owed from (the admission, or the 12-week day)
    # The person must be under 18 on this day for the notice to be owed; None: no age test (EHC).
    child_on: date | None
    citation: str
    # A withdrawal: the event id of the notice it withdraws (the MessageHeader's `supersedes`).
    withdraws: str | None = None

    @property
    def occurred_on(self) -> date:
        return self.due_on


def eighteenth_birthday(birth: date) -> date:
    """The day the person turns 18 (born on 29 February: 1 March in a common year)."""
    try:
        return birth.replace(year=birth.year + ADULT_AGE)
    except ValueError:
        return date(birth.year + ADULT_AGE, 3, 1)


def is_child_on(birth: date | None, day: date) -> bool:
    """Under 18 on `day` (False with no date of birth: not known to be a child)."""
    return birth is not None and day < eighteenth_birthday(birth)


def stays(history: Iterable[RegisterChange]) -> list[Stay]:
    """The person's stays in hospital, in the history's order (hub/domain/rules/precedence.py)."""
    out: list[Stay] = []
    current: Stay | None = None
    hospital: str | None = None  # the last hospital the history names
    for change in sorted(history, key=change_order):
        if change.hospital_ods:
            hospital = change.hospital_ods
        kind = change.change_type
        if kind in _STARTS and current is None:
            current = Stay(change=change, admitted_on=change.effective_date,
                           hospital_ods=change.hospital_ods or hospital, legal_status_code=change.legal_status_code)
        elif kind in _ENDS and current is not None:
            out.append(Stay(current.change, current.admitted_on, current.hospital_ods, current.legal_status_code,
                            left_on=change.effective_date, ended_by=change))
            current = None
    if current is not None:
        out.append(current)
    return out


def s85_council(stay: Stay, ref: ReferenceData) -> tuple[str | None, Basis | None]:
    """The council responsible for the child (s85(3)): of ordinary residence before the detention (the
    residence the detention carries), else (no fixed abode) the council where the hospital is; (None, None)
    when neither is known."""
    residence = stay.change.residence_la_gss
    if residence:
        return residence, Basis.ORDINARY_RESIDENCE
    if stay.hospital_ods:
        area = ref.hospital_council_gss(stay.hospital_ods)
        if area:
            return area, Basis.HOSPITAL_AREA
    return None, None


def candidate_notices(history: Sequence[RegisterChange], today: date, ref: ReferenceData) -> list[ChildNotice]:
    """The notices the history owes by `today` if the person is a child on each one's `child_on`
    (the caller knows the date of birth: `owed`). Without the date of birth, so that the personal
    details are read only for a person owed one."""
    out: list[ChildNotice] = []
    for stay in stays(history):
        if stay.left_on is not None and stay.left_on <= today:
            continue  # no longer in hospital: nothing to tell now (nor, brought in later, of stays long over)
        change = stay.change
        if change.ehc_plan_la_gss and stay.admitted_on <= today:
            out.append(ChildNotice(EventType.CHILD_EHC_PLAN_NOTICE, NoticeReason.EHC_PLAN_ADMISSION, stay,
                                   change.ehc_plan_la_gss, Basis.EHC_PLAN, stay.admitted_on, None, EHC_CITATION))
        council, basis = s85_council(stay, ref)
        expected = change.expected_stay_weeks
        if expected is not None and expected >= LONG_STAY_WEEKS:
            if stay.admitted_on <= today:
                out.append(ChildNotice(EventType.CHILD_LONG_STAY_NOTICE, NoticeReason.EXPECTED_LONG_STAY, stay,
                                       council, basis, stay.admitted_on, stay.admitted_on, S85_CITATION))
            continue
        reached = stay.admitted_on + LONG_STAY
        if reached <= today:  # 84 days in hospital, and still there
            out.append(ChildNotice(EventType.CHILD_LONG_STAY_NOTICE, NoticeReason.LONG_STAY_REACHED, stay,
                                   council, basis, reached, reached, S85_CITATION))
    return out


@dataclass(frozen=True, slots=True)
class Told:
    """A children's notice that went: an `allowed` disclosure of it to `org_code` (the caller reads them)."""

    event_id: str
    event_type: EventType
    org_code: str
    stay_change_id: str  # the detention that began the stay it was about
    ended_by_change_id: str | None = None  # a leaving notice: the change that ended the stay


def _basis(stay: Stay, event_type: EventType) -> Basis:
    """Why the council told of `stay` by a notice of `event_type` was the one told."""
    if event_type is EventType.CHILD_EHC_PLAN_NOTICE:
        return Basis.EHC_PLAN
    return Basis.ORDINARY_RESIDENCE if stay.change.residence_la_gss else Basis.HOSPITAL_AREA


def leaving_notices(history: Sequence[RegisterChange], told: Iterable[Told], today: date) -> list[ChildNotice]:
    """s85(4): each stay ended by `today` whose s85 notice went (`told`), told to the council that had it.
    No age test (`child_on` None): the council knows of the stay; its end is told whatever the age now."""
    s85 = {t.stay_change_id: t for t in told if t.event_type is EventType.CHILD_LONG_STAY_NOTICE}
    out: list[ChildNotice] = []
    for stay in stays(history):
        if stay.left_on is None or stay.left_on > today or stay.ended_by is None:
            continue
        went = s85.get(stay.change.change_id)
        if went is None:
            continue  # the council was never told of this stay (no notice owed, refused or unsubscribed)
        out.append(ChildNotice(EventType.CHILD_LEFT_HOSPITAL_NOTICE, NoticeReason.STAY_ENDED, stay, went.org_code,
                               _basis(stay, EventType.CHILD_LONG_STAY_NOTICE), stay.left_on, None, LEFT_CITATION))
    return out


def withdrawals(history: Sequence[RegisterChange], told: Iterable[Told],
                retracted: Mapping[str, RegisterChange]) -> list[ChildNotice]:
    """Each notice that went (`told`) whose detention, or (a leaving notice) whose ending, was retracted
    (`retracted`: the person's retracted changes by id) is withdrawn, to the council that was told it.
    A detention retracted: `admission-recorded-in-error`, the stay as the bare detention (nothing it said
    is told again). An ending retracted: `stay-continues` when the stay is open again, else
    `leaving-recorded-in-error`."""
    current = {s.change.change_id: s for s in stays(history)}
    out: list[ChildNotice] = []
    for t in told:
        if t.event_type not in STAY_NOTICES:
            continue
        start = retracted.get(t.stay_change_id)
        if start is not None:
            stay = Stay(_bare(start), start.effective_date, None, None)
            out.append(ChildNotice(EventType.CHILD_NOTICE_WITHDRAWN, NoticeReason.ADMISSION_IN_ERROR, stay,
                                   t.org_code, _basis(Stay(start, start.effective_date, None, None), t.event_type),
                                   start.effective_date, None, WITHDRAWN_CITATION, withdraws=t.event_id))
            continue
        if t.event_type is not EventType.CHILD_LEFT_HOSPITAL_NOTICE or t.ended_by_change_id not in retracted:
            continue
        ended = retracted[t.ended_by_change_id]
        found = current.get(t.stay_change_id)
        if found is None:  # the detention no longer begins a stay (one before it came late): the stay it is in
            begun = next((c for c in history if c.change_id == t.stay_change_id), None)
            found = None if begun is None else next(
                (s for s in current.values() if s.admitted_on <= begun.effective_date
                 and (s.left_on is None or begun.effective_date < s.left_on)), None)
            if found is None:
                continue
        reason = NoticeReason.STAY_CONTINUES if found.left_on is None else NoticeReason.LEAVING_IN_ERROR
        out.append(ChildNotice(EventType.CHILD_NOTICE_WITHDRAWN, reason, found, t.org_code,
                               _basis(found, EventType.CHILD_LONG_STAY_NOTICE), ended.effective_date, None,
                               WITHDRAWN_CITATION, withdraws=t.event_id))
    return out


def _bare(change: RegisterChange) -> RegisterChange:
    """A detention recorded in error bare of what it said (as hub/domain/retraction.py carries one)."""
    return replace(change, legal_status_code=None, order_type=None, hospital_ods=None, gp_practice_ods=None,
                   residence_la_gss=None, discharge_destination_la_gss=None, discharge=None, dispute=None,
                   review_reason=None, already_receiving_s117_from=None, expected_stay_weeks=None,
                   ehc_plan_la_gss=None)


def next_due(history: Sequence[RegisterChange], today: date) -> date | None:
    """The first day after `today` a notice can fall due with no new change to the history (a stay
    reaching 12 weeks, a stay's end dated after today), or None: the history owes nothing more by itself."""
    found = stays(history)
    days = [stay.admitted_on + LONG_STAY for stay in found
            if stay.left_on is None and stay.admitted_on + LONG_STAY > today
            and not (stay.change.expected_stay_weeks or 0) >= LONG_STAY_WEEKS]
    days += [stay.left_on for stay in found if stay.left_on is not None and stay.left_on > today]  # s85(4)
    return min(days, default=None)


def owed(candidates: Iterable[ChildNotice], birth: date | None, today: date) -> list[ChildNotice]:
    """Of `candidates`, those owed `today` to a person born on `birth` (None: unknown): a child on the
    notice's day and still one today (an adult now is no child the council has the s85 duties for)."""
    return [n for n in candidates
            if n.child_on is None or (is_child_on(birth, n.child_on) and is_child_on(birth, today))]


def notices_due(history: Sequence[RegisterChange], birth: date | None, today: date,
                ref: ReferenceData) -> list[ChildNotice]:
    """Every notice the person's history owes by `today`."""
    return owed(candidate_notices(history, today, ref), birth, today)


def summary(notice: ChildNotice) -> str:
    """The notice in plain words: no name, date of birth or NHS number."""
    stay = notice.stay
    if notice.reason is NoticeReason.ADMISSION_IN_ERROR:
        return (f"The notice {notice.withdraws} about a child's admission to hospital on "
                f"{stay.admitted_on.isoformat()} is withdrawn: the admission was recorded in error and retracted, "
                f"the notice was sent in error ({WITHDRAWN_CITATION}).")
    if notice.reason is NoticeReason.STAY_CONTINUES:
        return (f"The notice {notice.withdraws} that a child left hospital on {notice.due_on.isoformat()} is "
                f"withdrawn: the leaving was recorded in error and retracted; the child's stay in hospital from "
                f"{stay.admitted_on.isoformat()} continues ({WITHDRAWN_CITATION}).")
    if notice.reason is NoticeReason.LEAVING_IN_ERROR:
        return (f"The notice {notice.withdraws} that a child left hospital on {notice.due_on.isoformat()} is "
                f"withdrawn: that leaving was recorded in error and retracted ({WITHDRAWN_CITATION}).")
    if notice.reason is NoticeReason.STAY_ENDED:
        assert stay.left_on is not None and stay.ended_by is not None
        how = _ENDED_HOW[stay.ended_by.change_type]
        return (f"The child admitted to hospital on {stay.admitted_on.isoformat()}, of whom your council was "
                f"told, {how} on {stay.left_on.isoformat()}: the stay in hospital has ended ({LEFT_CITATION}).")
    if notice.reason is NoticeReason.EHC_PLAN_ADMISSION:
        return (f"A young person whose Education, Health and Care plan your council maintains was admitted to "
                f"hospital under the Mental Health Act 1983 on {stay.admitted_on.isoformat()} ({EHC_CITATION}).")
    where = ("the child was ordinarily resident in your area before the admission"
             if notice.basis is Basis.ORDINARY_RESIDENCE else
             "the child had no ordinary residence before the admission and the hospital is in your area")
    if notice.reason is NoticeReason.EXPECTED_LONG_STAY:
        return (f"A child admitted to hospital on {stay.admitted_on.isoformat()} is expected to stay "
                f"{LONG_STAY_WEEKS} weeks or more; {where} ({S85_CITATION}).")
    return (f"A child admitted to hospital on {stay.admitted_on.isoformat()} has been in hospital "
            f"{LONG_STAY_WEEKS} consecutive weeks; {where} ({S85_CITATION}).")
