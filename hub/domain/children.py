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
when they leave hospital, go onto a CTO or die (hub/domain/stay_bounds.py,
the one definition the rules read a stay's successor naming by too). Section 17 leave and staying
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
* Correction (UK GDPR Art. 16, 19): a stay is the stay whichever of its
  detentions a notice went under (`Stay.starts`), so an earlier detention of
  the same continuous stay arriving late owes no second notice; but the
  detention that begins the stay is then not the one told (another date,
  perhaps section or hospital), and the council told is sent the stay as it
  now stands, replacing the message it had (`corrections`). A detention
  told retracted while the child was in hospital all the same (within a
  stay begun earlier) is corrected likewise, not withdrawn.
* Another council concerned (UK GDPR Art. 16, 19): the council a notice is
  for is the one the detention beginning the stay names (`council_concerned`).
  When it now names another (a detention naming none displaces no one), each
  notice that went to a council no longer concerned is withdrawn
  (`another-council-concerned`: nothing of the stay as it stands, nor the
  other council, told), and that council is sent no correction or leaving
  notice of it after; the council now concerned is owed the notice as one
  never told. A council concerned again after its withdrawal is told anew
  (`unsent`: `renews` the withdrawal), the one it displaces withdrawn.

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
from hub.domain.stay_bounds import STARTS, StayBounds, successor_named

LONG_STAY_WEEKS = 12
LONG_STAY = timedelta(weeks=LONG_STAY_WEEKS)  # 84 days
ADULT_AGE = 18

S85_CITATION = "Children Act 1989 s85; Worcs 6.1"
EHC_CITATION = "Worcs 6.4"
LEFT_CITATION = "Children Act 1989 s85(4)"
WITHDRAWN_CITATION = "UK GDPR Art. 16, 19 (rectification told to each recipient)"
CORRECTED_CITATION = WITHDRAWN_CITATION
# The notices a withdrawal or a leaving notice may follow (those that tell a council of a stay).
STAY_NOTICES = frozenset({EventType.CHILD_LONG_STAY_NOTICE, EventType.CHILD_EHC_PLAN_NOTICE,
                          EventType.CHILD_LEFT_HOSPITAL_NOTICE})

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
    # The stay now begins with another detention, which names another council as the one the notice is for
    # (the council responsible for the child; the EHC plan's): the notice does not apply to this council.
    ANOTHER_COUNCIL = "another-council-concerned"
    # A correction (s117-child-notice-corrected): the detention that begins the stay the notice named in
    # `supersedes` told of is not the one told (an earlier one of the same stay came late, or the one told was
    # retracted while the child was in hospital): its date, section or hospital as the register has them now.
    ADMISSION_CORRECTED = "admission-corrected"


class Basis(StrEnum):
    """Why this council is the one told."""

    ORDINARY_RESIDENCE = "ordinary-residence"  # s85(3)(a): where the child lived before the detention
    HOSPITAL_AREA = "hospital-area"  # s85(3)(b): no ordinary residence; where the hospital is
    EHC_PLAN = "ehc-plan"  # the council maintaining the EHC plan (Worcs 6.4)
    # The area of ordinary residence split since between successors (or succeeded by one without a GSS code
    # yet), the successor not named: the hospital's council, coordinating meanwhile (hazard H-03).
    COORDINATING = "coordinating-council"


@dataclass(frozen=True, slots=True)
class Stay:
    """One continuous stay in hospital, from the detention that began it."""

    change: RegisterChange  # the detention that began it
    admitted_on: date
    hospital_ods: str | None
    legal_status_code: str | None
    left_on: date | None = None  # None: still in hospital
    ended_by: RegisterChange | None = None  # the change that ended it (leaving hospital, a CTO, death)
    # Every detention within it (a detention, or a CTO revoked, while in hospital: a section changed, a
    # detention arriving late), in the history's order, the first being `change`. A notice of the stay is
    # the stay's whichever of these it was decided under (hub/children.py `event_ids_for`): a detention of
    # the same stay arriving late, dated before the one that began it, is not a new stay.
    starts: tuple[RegisterChange, ...] = ()
    # The successors `moved` changes named as covering the residence before the detention that began the
    # stay (`residence_before_detention_la_gss`, hazard H-03), those after it in the history's order (until
    # the next stay begins): which successor of a council split since (or succeeded by one without a GSS
    # code) is the child's (`addressed`).
    successors_named: tuple[str, ...] = ()

    def start_ids(self) -> tuple[str, ...]:
        return tuple(c.change_id for c in self.starts) or (self.change.change_id,)


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
    # A correction: the event id of the notice it corrects, of the message it replaces (the MessageHeader's
    # `supersedes`: that notice, or the last correction of it that went) and the admission date that told.
    corrects: str | None = None
    replaces: str | None = None
    told_on: date | None = None
    # A notice told anew to a council whose notices of the stay were all withdrawn (it became the council
    # concerned again): the event id of the last withdrawal it follows.
    renews: str | None = None

    @property
    def supersedes(self) -> str | None:
        return self.withdraws if self.withdraws is not None else self.replaces

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
    """The person's stays in hospital, in the history's order (hub/domain/rules/precedence.py), where each
    begins and ends and the successors named in each as hub/domain/stay_bounds.py says (as the rules read
    them: hub/domain/rules/engine.py `_take_successor_named_in_stay`)."""
    out: list[Stay] = []
    current: Stay | None = None
    hospital: str | None = None  # the last hospital the history names
    bounds = StayBounds()
    for change in sorted(history, key=change_order):
        if change.hospital_ods:
            hospital = change.hospital_ods
        began, ended = bounds.begins(change), bounds.ends(change)
        before, bounds = bounds, bounds.after(change)
        if successor_named(change) and bounds.begun:
            # The successor of the residence before this stay's detention: the stay in hospital, else the last
            # one (named after the discharge). Named before the stay began (a backdated move, an earlier
            # stay's), it is not this stay's: a new detention re-determines the council.
            if current is not None:
                current = replace(current, successors_named=bounds.named)
            elif out:
                out[-1] = replace(out[-1], successors_named=bounds.named)
        if began:
            # Named on the admission day: this stay's (stay_bounds.py), no longer the last one's.
            carried = bounds.named
            if carried and out and before.begun:
                out[-1] = replace(out[-1], successors_named=before.named[:len(before.named) - len(carried)])
            current = Stay(change=change, admitted_on=change.effective_date,
                           hospital_ods=change.hospital_ods or hospital, legal_status_code=change.legal_status_code,
                           starts=(change,), successors_named=carried)
        elif change.change_type in STARTS and current is not None:
            current = replace(current, starts=(*current.starts, change))
        elif ended and current is not None:
            out.append(replace(current, left_on=change.effective_date, ended_by=change))
            current = None
    if current is not None:
        out.append(current)
    return out


def council_on(code: str, on: date, ref: ReferenceData) -> str:
    """The council holding `code`'s duties on `on`: the code as sent while its council stands, the one
    council that replaced it after a reorganisation (as every other message names it: hub/domain/rules/
    engine.py `_council_org`, hazard H-03). A code whose area was split between successors (some perhaps
    listed without a GSS code yet), or one the reference data does not know, is kept as sent (as the rules
    name it). As the reference data's `council_in_place` decides."""
    council = ref.council_in_place(code, on).council
    return council.code if council is not None else code


def addressed(code: str, on: date, ref: ReferenceData, named: Sequence[str] = ()) -> str | None:
    """The council a notice about `code`'s area goes to on `on`: `council_on`'s, but for an area with no one
    successor to address (split between several, or succeeded by one without a GSS code yet: hazard H-03)
    the first successor a register change named (`named`: `Stay.successors_named`) or, none named, None:
    never the abolished council, which no one answers for. As the reference data's `council_in_place` decides."""
    in_place = ref.council_in_place(code, on)
    if not in_place.successors:  # the one council in place, or a code not known (kept as sent)
        return in_place.council.code if in_place.council is not None else code
    codes = {o.code for o in in_place.with_gss}  # only a successor with a GSS code can be named
    return next((c for c in named if c in codes), None)


def addresses_a_stays_council(history: Iterable[RegisterChange], named: str, ref: ReferenceData,
                              today: date) -> bool:
    """Whether a successor named by a `moved` change (`named`, in `history`) is the one that addresses a notice
    of a stay it is named for (`stays`: `Stay.successors_named`): the first named of the successors of the
    residence before the stay's detention or of its EHC plan's council, split since (`addressed`), on the
    admission day or today. Said without the date of birth, and of every stay, over or not: True may be a
    naming no notice uses, never the reverse. For hub/ingest/service.py `successor_warnings`: such a naming is
    not one that changes nothing, though the rules note no split awaiting it (a stay under a section that does
    not qualify determines no responsible council, until a qualifying section begins in the stay: the rules then
    take the naming and say so themselves, hub/domain/rules/engine.py `_take_successor_named_in_stay`; an EHC
    plan's council is no responsibility)."""
    for stay in stays(history):
        if named not in stay.successors_named:
            continue
        for code in (stay.change.residence_la_gss, stay.change.ehc_plan_la_gss):
            if not code:
                continue
            for day in (stay.admitted_on, today):
                if ref.council_in_place(code, day).successors \
                        and addressed(code, day, ref, stay.successors_named) == named:
                    return True
    return False


def s85_council(stay: Stay, ref: ReferenceData, on: date | None = None) -> tuple[str | None, Basis | None]:
    """The council responsible for the child (s85(3)): of ordinary residence before the detention (the
    residence the detention carries), else (no fixed abode) the council where the hospital is; (None, None)
    when neither is known. Named as the council in place on `on` (the day the notice falls due; default:
    the admission), not a council abolished by then (`council_on`). An area split since between several
    successors (or succeeded by one without a GSS code yet) is the successor a register change named
    (`addressed`); none named yet, the child's council is not known and the hospital's council, which
    coordinates the person's aftercare meanwhile (hub/domain/rules/engine.py `_hold_council`), is told: a
    council that can act, never the abolished one (hazard H-03, H-15)."""
    day = on if on is not None else stay.admitted_on
    residence = stay.change.residence_la_gss
    if residence:
        council = addressed(residence, day, ref, stay.successors_named)
        if council is not None:
            return council, Basis.ORDINARY_RESIDENCE
    if stay.hospital_ods:
        area = ref.hospital_council_gss(stay.hospital_ods)
        council = addressed(area, day, ref) if area else None  # a hospital's council split: none (H-03)
        if council is not None:
            return council, Basis.COORDINATING if residence else Basis.HOSPITAL_AREA
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
        # Each council as the one in place on the day the notice falls due (`council_on`).
        if change.ehc_plan_la_gss and stay.admitted_on <= today:
            # A plan's council split since, its successor not named: no council (said by the scanner), not
            # the abolished one.
            out.append(ChildNotice(EventType.CHILD_EHC_PLAN_NOTICE, NoticeReason.EHC_PLAN_ADMISSION, stay,
                                   addressed(change.ehc_plan_la_gss, stay.admitted_on, ref, stay.successors_named),
                                   Basis.EHC_PLAN, stay.admitted_on, None, EHC_CITATION))
        expected = change.expected_stay_weeks
        if expected is not None and expected >= LONG_STAY_WEEKS:
            if stay.admitted_on <= today:
                council, basis = s85_council(stay, ref, stay.admitted_on)
                out.append(ChildNotice(EventType.CHILD_LONG_STAY_NOTICE, NoticeReason.EXPECTED_LONG_STAY, stay,
                                       council, basis, stay.admitted_on, stay.admitted_on, S85_CITATION))
            continue
        reached = stay.admitted_on + LONG_STAY
        if reached <= today:  # 84 days in hospital, and still there
            council, basis = s85_council(stay, ref, reached)
            out.append(ChildNotice(EventType.CHILD_LONG_STAY_NOTICE, NoticeReason.LONG_STAY_REACHED, stay,
                                   council, basis, reached, reached, S85_CITATION))
    return out


@dataclass(frozen=True, slots=True)
class Told:
    """A children's notice that went: an `allowed` disclosure of it to `org_code` (the caller reads them)."""

    event_id: str
    event_type: EventType
    org_code: str
    stay_change_id: str  # the detention that began the stay it was about (a correction: the one it told)
    ended_by_change_id: str | None = None  # a leaving notice: the change that ended the stay
    corrects: str | None = None  # a correction: the event id of the notice it corrected
    withdraws: str | None = None  # a withdrawal: the event id of the notice it withdrew


def _covering(found: Iterable[Stay], day: date) -> Stay | None:
    """The stay the child was in hospital on `day` in, if any."""
    return next((s for s in found if s.admitted_on <= day and (s.left_on is None or day < s.left_on)), None)


def _stay_told(t: Told, found: Sequence[Stay], changes: Mapping[str, RegisterChange]) -> Stay | None:
    """The stay as it now stands that the notice `t` told of: the one its detention is in, or, that
    detention retracted (or, a leaving notice's, no longer beginning a stay), the one the child was in
    hospital in on its day; None: none (the child was not in hospital then, as the register now has it)."""
    by_start = next((s for s in found if t.stay_change_id in s.start_ids()), None)
    if by_start is not None:
        return by_start
    told = changes.get(t.stay_change_id)
    return None if told is None else _covering(found, told.effective_date)


def _basis(stay: Stay, event_type: EventType) -> Basis:
    """Why the council told of `stay` by a notice of `event_type` was the one told."""
    if event_type is EventType.CHILD_EHC_PLAN_NOTICE:
        return Basis.EHC_PLAN
    return Basis.ORDINARY_RESIDENCE if stay.change.residence_la_gss else Basis.HOSPITAL_AREA


def council_concerned(stay: Stay, event_type: EventType, ref: ReferenceData) -> str | None:
    """The council a notice of `event_type` about `stay` is for, as the stay now stands (its first
    detention): the EHC plan's council it names (an EHC notice), else the council responsible for the child
    (s85(3): the s85 notice and its leaving notice). None: the detention names no plan, or no council is
    found (no residence, the hospital's council not known)."""
    if event_type is EventType.CHILD_EHC_PLAN_NOTICE:
        code = stay.change.ehc_plan_la_gss
        return addressed(code, stay.admitted_on, ref, stay.successors_named) if code else None
    return s85_council(stay, ref)[0]


def _withdrawn(told: Iterable[Told]) -> dict[str, str]:
    """The notices whose withdrawal went: the notice's event id -> the withdrawal's."""
    return {t.withdraws: t.event_id for t in told
            if t.event_type is EventType.CHILD_NOTICE_WITHDRAWN and t.withdraws is not None}


def _displaced(t: Told, stay: Stay, ref: ReferenceData) -> bool:
    """The council told `t` is not the one a notice of its kind about `stay` is for any more: the stay now
    begins with a detention naming another council, or a register change named the successor of a council
    area split since (`addressed`). A detention naming none (no EHC plan given, no council found) displaces
    no one: the council told stays the one known. The council a notice is for is taken as on each day a
    notice of its kind falls due (the admission, or the 84th day for an s85 notice), as it was sent: a code
    whose council was abolished by then names its successor, not another council."""
    if t.event_type is EventType.CHILD_EHC_PLAN_NOTICE:
        concerned = {council_concerned(stay, t.event_type, ref)}
    else:
        concerned = {s85_council(stay, ref, day)[0] for day in (stay.admitted_on, stay.admitted_on + LONG_STAY)}
    concerned.discard(None)
    return bool(concerned) and t.org_code not in concerned


def _changes(history: Sequence[RegisterChange], retracted: Mapping[str, RegisterChange]) -> dict[str, RegisterChange]:
    return {c.change_id: c for c in history} | dict(retracted)


def unsent(candidates: Iterable[ChildNotice], history: Sequence[RegisterChange], told: Sequence[Told],
           retracted: Mapping[str, RegisterChange]) -> list[ChildNotice]:
    """Of `candidates` (`candidate_notices`), those not told: a council told a notice of the same kind about
    the same stay (under whichever detention of it, retracted since or not) that was not withdrawn has it.
    A council whose every such notice was withdrawn (it was not the council concerned, or the detention told
    was recorded in error) and that is the council concerned now is told anew (`renews`: the last
    withdrawal), as a council never told: the notice as owed now, the stay as it now stands."""
    found_stays = stays(history)
    changes = _changes(history, retracted)
    withdrawn = _withdrawn(told)
    out: list[ChildNotice] = []
    for notice in candidates:
        prior = []
        for t in told:
            if t.event_type is notice.event_type and t.org_code == notice.org_code:
                stay = _stay_told(t, found_stays, changes)
                if stay is not None and stay.change.change_id == notice.stay.change.change_id:
                    prior.append(t)
        if any(t.event_id not in withdrawn for t in prior):
            continue  # told, and standing: one notice a stay
        out.append(replace(notice, renews=withdrawn[prior[-1].event_id]) if prior else notice)
    return out


def leaving_notices(history: Sequence[RegisterChange], told: Sequence[Told], today: date, ref: ReferenceData,
                    retracted: Mapping[str, RegisterChange] | None = None) -> list[ChildNotice]:
    """s85(4): each stay ended by `today` whose s85 notice went (`told`) and stands (not withdrawn), told to
    the council that had it while that council is the one concerned (`_displaced`: otherwise its notice is
    withdrawn, `withdrawals`). No age test (`child_on` None): the council knows of the stay; its end is told
    whatever the age now."""
    found_stays = stays(history)
    changes = _changes(history, retracted or {})
    withdrawn = _withdrawn(told)
    s85 = [t for t in told if t.event_type is EventType.CHILD_LONG_STAY_NOTICE and t.event_id not in withdrawn]
    out: list[ChildNotice] = []
    for stay in found_stays:
        if stay.left_on is None or stay.left_on > today or stay.ended_by is None:
            continue
        # Told under any detention of the stay (one arriving late, dated before, begins it now).
        went = next((t for t in s85 if _stay_told(t, found_stays, changes) is stay and not _displaced(t, stay, ref)),
                    None)
        if went is None:
            continue  # the council concerned was never told of this stay (no notice owed, refused, unsubscribed)
        out.append(ChildNotice(EventType.CHILD_LEFT_HOSPITAL_NOTICE, NoticeReason.STAY_ENDED, stay, went.org_code,
                               _basis(stay, EventType.CHILD_LONG_STAY_NOTICE), stay.left_on, None, LEFT_CITATION))
    return out


def _standing(history: Sequence[RegisterChange], told: Sequence[Told], retracted: Mapping[str, RegisterChange],
              ) -> tuple[list[Stay], dict[str, RegisterChange], dict[str, Told], list[Told]]:
    """What `withdrawals` and `corrections` read the notices that went against: the stays as they now stand,
    every change by id (the retracted ones too), each notice's last correction (by the notice's event id),
    and the notices of a stay that went and stand (not withdrawn), in the order they went."""
    withdrawn = _withdrawn(told)
    last = {t.corrects: t for t in told if t.event_type is EventType.CHILD_NOTICE_CORRECTED and t.corrects}
    standing = [t for t in told if t.event_type in STAY_NOTICES and t.event_id not in withdrawn]
    return stays(history), _changes(history, retracted), last, standing


def withdrawals(history: Sequence[RegisterChange], told: Sequence[Told],
                retracted: Mapping[str, RegisterChange], ref: ReferenceData) -> list[ChildNotice]:
    """Each notice that went (`told`) and was not withdrawn already, to the council that was told it:
    * its detention retracted (`retracted`: the person's retracted changes by id), the child not in hospital
      on its day: `admission-recorded-in-error`, the stay as the bare detention (nothing it said is told
      again);
    * the stay it told of now begins with a detention naming another council as the one the notice is for
      (`_displaced`: the council responsible for the child, the EHC plan's): `another-council-concerned`,
      the stay as the bare detention the council was last told (nothing of the stay as it now stands, nor
      which council is concerned, is told to a council not concerned);
    * (a leaving notice) its ending retracted: `stay-continues` when the stay is open again, else
      `leaving-recorded-in-error`."""
    found_stays, changes, last, standing = _standing(history, told, retracted)
    out: list[ChildNotice] = []
    for t in standing:
        start = retracted.get(t.stay_change_id)
        # The detention retracted while the child was in hospital all the same (an earlier detention of the
        # same stay came late): the stay it told of stands, corrected (`corrections`), not withdrawn.
        if start is not None and _covering(found_stays, start.effective_date) is None:
            stay = Stay(_bare(start), start.effective_date, None, None)
            out.append(ChildNotice(EventType.CHILD_NOTICE_WITHDRAWN, NoticeReason.ADMISSION_IN_ERROR, stay,
                                   t.org_code, _basis(Stay(start, start.effective_date, None, None), t.event_type),
                                   start.effective_date, None, WITHDRAWN_CITATION, withdraws=t.event_id))
            continue
        found = _stay_told(t, found_stays, changes)
        if found is None:
            continue
        if _displaced(t, found, ref):
            prior = last.get(t.event_id)
            told_start = changes.get(prior.stay_change_id if prior is not None else t.stay_change_id, found.change)
            stay = Stay(_bare(told_start), told_start.effective_date, None, None)
            out.append(ChildNotice(EventType.CHILD_NOTICE_WITHDRAWN, NoticeReason.ANOTHER_COUNCIL, stay, t.org_code,
                                   _basis(Stay(told_start, told_start.effective_date, None, None), t.event_type),
                                   told_start.effective_date, None, WITHDRAWN_CITATION, withdraws=t.event_id))
            continue
        if t.event_type is not EventType.CHILD_LEFT_HOSPITAL_NOTICE or t.ended_by_change_id not in retracted:
            continue
        ended = retracted[t.ended_by_change_id]
        reason = NoticeReason.STAY_CONTINUES if found.left_on is None else NoticeReason.LEAVING_IN_ERROR
        out.append(ChildNotice(EventType.CHILD_NOTICE_WITHDRAWN, reason, found, t.org_code,
                               _basis(found, EventType.CHILD_LONG_STAY_NOTICE), ended.effective_date, None,
                               WITHDRAWN_CITATION, withdraws=t.event_id))
    return out


def _facts(change: RegisterChange) -> tuple[date, str | None, str | None]:
    """What a notice tells of the detention that began the stay: its date, section and hospital."""
    return change.effective_date, change.legal_status_code, change.hospital_ods


def corrections(history: Sequence[RegisterChange], told: Sequence[Told],
                retracted: Mapping[str, RegisterChange], ref: ReferenceData) -> list[ChildNotice]:
    """Each notice that went (`told`, in the order they went, corrections among them) and stands (not
    withdrawn, its council still the one concerned: else it is withdrawn, `withdrawals`) about a stay that
    stands but now begins with another detention than the one it (or its last correction) told, with
    another date, section or hospital (an earlier detention of the same stay came late; the detention told
    was retracted while the child was in hospital all the same): one correction to the council told it,
    with the stay as it now stands, replacing the last message told of it. The notice is not sent again
    (one per stay); a leaving notice whose ending no longer ends the stay is withdrawn instead
    (`withdrawals`). No age test: a rectification is owed to each recipient (UK GDPR Art. 19)."""
    found_stays, changes, last, standing = _standing(history, told, retracted)
    out: list[ChildNotice] = []
    for t in standing:
        stay = _stay_told(t, found_stays, changes)
        if stay is None or _displaced(t, stay, ref):
            continue  # withdrawn (`withdrawals`), or nothing to tell
        if t.event_type is EventType.CHILD_LEFT_HOSPITAL_NOTICE and (
                stay.ended_by is None or stay.ended_by.change_id != t.ended_by_change_id):
            continue  # the leaving it told is not this stay's end: withdrawn, or told anew
        prior = last.get(t.event_id)
        told_start = changes.get(prior.stay_change_id if prior is not None else t.stay_change_id)
        if told_start is None or _facts(told_start) == _facts(stay.change):
            continue
        out.append(ChildNotice(EventType.CHILD_NOTICE_CORRECTED, NoticeReason.ADMISSION_CORRECTED, stay, t.org_code,
                               _basis(stay, t.event_type), stay.admitted_on, None, CORRECTED_CITATION,
                               corrects=t.event_id, replaces=prior.event_id if prior is not None else t.event_id,
                               told_on=told_start.effective_date))
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
    if notice.reason is NoticeReason.ADMISSION_CORRECTED:
        began = stay.admitted_on.isoformat()
        told = f" (told as {notice.told_on.isoformat()})" if notice.told_on not in (None, stay.admitted_on) else ""
        return (f"The notice {notice.replaces} about a child's stay in hospital is corrected: the stay began on "
                f"{began}{told} with the detention this message carries, as the register now has it "
                f"({CORRECTED_CITATION}).")
    if notice.reason is NoticeReason.ADMISSION_IN_ERROR:
        return (f"The notice {notice.withdraws} about a child's admission to hospital on "
                f"{stay.admitted_on.isoformat()} is withdrawn: the admission was recorded in error and retracted, "
                f"the notice was sent in error ({WITHDRAWN_CITATION}).")
    if notice.reason is NoticeReason.ANOTHER_COUNCIL:
        concerned = ("the council maintaining the Education, Health and Care plan"
                     if notice.basis is Basis.EHC_PLAN else "the council responsible for the child (Children Act "
                                                             "1989 s85(3))")
        return (f"The notice {notice.withdraws} about a child's stay in hospital is withdrawn: the register now "
                f"names another council as {concerned} (the stay begins with another detention, or the successor "
                f"of a council area split since is named or no longer named); the notice does not apply to your "
                f"council ({WITHDRAWN_CITATION}).")
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
