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

Pure functions, standard library only, no personal data (the date of birth
comes in as an argument and goes nowhere).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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

_STARTS = frozenset({ChangeType.DETAINED, ChangeType.CTO_REVOKED})
_ENDS = frozenset({ChangeType.LEFT_HOSPITAL, ChangeType.CTO_STARTED, ChangeType.DIED})


class NoticeReason(StrEnum):
    """Why the notice went (the MessageHeader's S117-ChildNotice extension)."""

    EXPECTED_LONG_STAY = "expected-long-stay"  # s85(1)(b): intended to be 12 weeks or more, told at admission
    LONG_STAY_REACHED = "long-stay-reached"  # s85(1)(a): 12 consecutive weeks in hospital
    EHC_PLAN_ADMISSION = "ehc-plan-admission"  # Worcs 6.4: admitted, the plan's council told


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
                            left_on=change.effective_date))
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


def next_due(history: Sequence[RegisterChange], today: date) -> date | None:
    """The first day after `today` a notice can fall due with no new change to the history (a stay
    reaching 12 weeks), or None: the history owes nothing more by itself."""
    days = [stay.admitted_on + LONG_STAY for stay in stays(history)
            if stay.left_on is None and stay.admitted_on + LONG_STAY > today
            and not (stay.change.expected_stay_weeks or 0) >= LONG_STAY_WEEKS]
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
