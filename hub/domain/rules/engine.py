"""Fold a person's register changes into their s117 status.

Each change type has one handler in CHANGE_HANDLERS; the handlers move a
mutable `_Fold` and every responsibility or entitlement they set carries the
policy paragraph that justifies it. `evaluate` sorts first, so the answer
never depends on the order changes arrived in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import date, timedelta
from functools import lru_cache

from hub.domain import citations
from hub.domain.agreements import AgreementBook, AreaAgreement
from hub.domain.dates import add_months
from hub.domain.model import (
    ChangeType,
    Determination,
    Dispute,
    DisputeKind,
    HistoryEntry,
    Org,
    RegisterChange,
    ReviewDue,
    S117Status,
)
from hub.domain.ports import COUNCIL_WITHOUT_GSS, ReferenceData
from hub.domain.rules.discharge import check_discharge
from hub.domain.rules.legal_status import SectionVerdict, classify
from hub.domain.rules.precedence import change_order
from hub.domain.stay_bounds import StayBounds
from hub.domain.succession import duty_holder
from hub.domain.workflows.model import WORKFLOW_SOURCE, raised_through_api

# Who Pays eras (Bucks "Responsible Commissioner"; Worcs 4.4).
WHO_PAYS_2013 = date(2013, 4, 1)
WHO_PAYS_2016 = date(2016, 4, 1)
WHO_PAYS_2020 = date(2020, 9, 1)


@dataclass(frozen=True, slots=True)
class _Responsibility:
    basis_code: str  # the code as determined, before succession
    org: Org
    explanation: str
    citation: str
    # A council with no addressable successor on the fold's day (`_council_org`):
    # its area split between several successors, or taken over by one the
    # register of local authorities lists without a GSS code yet (an `Org` of
    # kind COUNCIL_WITHOUT_GSS, named by the register's code): every successor.
    # Such a council is no determined responsible council (hazard H-03):
    # `_hold_council` keeps it aside.
    split_between: tuple[Org, ...] = ()


@dataclass(frozen=True, slots=True)
class _Review:
    on: date
    kind: str
    explanation: str
    citation: str
    trigger: str = ""
    triggered_on: date | None = None


# ------------------------------------------------------ who speaks for whom
#
# A joint decision (an s117 discharge, a dispute's outcome) counts a body's
# agreement only when that body, or one entitled to act for it, recorded it:
# the change's `source` says who recorded it. The ingest sets it to the API
# client's id, `<org code in lower case>-<8 hex>` (hub/clients.py), so the
# org code is its first part; a source of another shape is taken as an org
# code itself. The hub's own workflows record the dispute changes a case's
# transition implies after checking every party agreed (their source is
# hub/domain/workflows/model.py WORKFLOW_SOURCE): those records speak for every body. A change
# without a source speaks for none. A body is spoken for by its code as named
# and by the body holding its duties on the fold's day (a CCG's ICB from
# 1 July 2022, a former county's unitary council; for a dispute's party, also
# the body holding them when the outcome was recorded): `_speaks_for`,
# `_speaks_for_party`.

HUB_SOURCES = frozenset({WORKFLOW_SOURCE})
_CLIENT_ID = re.compile(r"^(?P<org>[a-z0-9]+)-[0-9a-f]{8}$")
COUNCIL_SIDE = "council"
COMMISSIONER_SIDE = "commissioner"
BOTH_SIDES = frozenset({COUNCIL_SIDE, COMMISSIONER_SIDE})
_SIDE_WORDS = {COUNCIL_SIDE: "the council", COMMISSIONER_SIDE: "the NHS commissioner"}
# Changes whose hospital names a trust providing care (hub/domain/access.py
# `_HOSPITAL_CHANGES`: a care-provider trust acts for the NHS commissioner).
CARE_HOSPITAL_CHANGES = frozenset({ChangeType.DETAINED, ChangeType.SECTION_CHANGED, ChangeType.CTO_RECALLED,
                                   ChangeType.S17_LEAVE_ENDED})
# The fold's note when a dispute is resolved: hub/domain/rules/events.py tells
# a resolution only when a change adds one of these to the history.
DISPUTE_RESOLVED_NOTE = "responsibility dispute resolved"


@lru_cache(maxsize=1024)
def source_org(source: str) -> str | None:
    """The org code a change's `source` names (upper case); None for none."""
    if not source or source in HUB_SOURCES:
        return None
    found = _CLIENT_ID.match(source)
    return (found.group("org") if found else source).upper()


@dataclass(frozen=True, slots=True)
class _PendingDischarge:
    """A lawful s117 discharge decision not yet agreed by both bodies."""

    decided_on: date  # the first decision's effective date
    agreed: tuple[tuple[str, str], ...]  # (side, org code that agreed for it)
    text: str  # "s117 discharge awaiting the council's own agreement"
    determination: Determination  # what the status shows


@dataclass
class _Fold:
    person_id: str
    ref: ReferenceData
    agreements: AgreementBook
    as_of: date
    # Where the person is now.
    in_hospital: bool = False
    detained: bool = False
    on_cto: bool = False
    # Why the last CTO ended, when a new detention ended it (shown with the
    # entitlement until another CTO starts): `_end_cto_by_new_detention`.
    cto_ended_why: str | None = None
    on_s17_leave: bool = False
    section: SectionVerdict | None = None
    detention_start: date | None = None
    # The qualifying section of the current stay, kept after it ends so that
    # staying on informally still leads to entitlement (Worcs 5.5).
    stay_qualifying: SectionVerdict | None = None
    stay_qualifying_from: date | None = None
    # The changes that began a qualifying period of detention (a tuple, re-bound on each addition).
    qualifying_detention_changes: tuple[str, ...] = ()
    detention_start_for_era: date | None = None
    stayed_informally: bool = False
    from_prison: bool = False
    hospital_ods: str | None = None
    entitling_section: SectionVerdict | None = None
    entitling_detention_start: date | None = None
    entitling_hospital_ods: str | None = None
    # What is known of the person's residence and GP.
    residence: str | None = None
    no_fixed_abode: bool = False
    gp_practice: str | None = None
    residence_before_detention: str | None = None
    nfa_before_detention: bool = False
    gp_before_detention: str | None = None
    # Entitlement.
    entitled: bool = False
    entitlement_start: date | None = None
    entitlement_end: date | None = None
    entitlement_why: str = "not entitled: no qualifying detention recorded"
    entitlement_citation: str = citations.QUALIFYING_SECTIONS
    discharged: bool = False
    died: bool = False
    # Responsibility.
    council: _Responsibility | None = None
    # The council the rules determined (its basis) when its area has since
    # been split between several successors: no council is responsible until
    # a register change names the successor covering the address
    # (`_hold_council`, `_confirm_split_successor`; hazard H-03).
    split_council: _Responsibility | None = None
    # Where the history stands in hospital stays, and the successors named in the stay (hub/domain/stay_bounds.py,
    # as the children's notices read them): a successor named earlier in the stay is taken when a qualifying
    # detention's council turns out split (`_take_successor_named_in_stay`).
    stay_bounds: StayBounds = StayBounds()
    # Whether the change being folded is within a stay as stay_bounds.py has it (begins it, is in it, or ends it):
    # a qualifying detention the rules begin out of one (a section changed, a discharge or CTO evidencing a
    # detention never recorded, after an earlier stay ended) takes no naming of the stay before it.
    change_in_stay: bool = False
    coordinating_council: _Responsibility | None = None
    # The hospital's council when the rules would have it coordinate but it is abolished with no addressable
    # successor on the fold's day (split between several, or succeeded by one the register lists without a
    # GSS code): no council coordinates, and the reason says the operator must update the hospital site's
    # council (`_coordinate`; hazard H-03). Never the abolished council.
    hospital_council_abolished: _Responsibility | None = None
    council_awaits_destination: bool = False
    # The council whose duty a re-detention with no place of residence before
    # it ended (Worcs 4.3.3), while no council is responsible and the area
    # discharged to is not yet known: the outgoing body of the hand-over to
    # the council then determined (`handover_bases`).
    outgoing_council: _Responsibility | None = None
    commissioner: _Responsibility | None = None
    commissioner_provisional: bool = False
    # A re-detention before 1 April 2016 kept the commissioner already
    # responsible: the discharge date settles whether it stays (Bucks eras).
    commissioner_kept_on_redetention: bool = False
    # Reviews: completed dates and pending triggers. The sequences the
    # handlers add to are tuples, re-bound on each addition: a fold's copy
    # (`Evaluation.extended`) shares them rather than copying each, a status
    # takes them as they are, and a tuple replaced is a tuple changed
    # (`_pending_reviews` knows its inputs unchanged by identity).
    reviews_completed: tuple[date, ...] = ()
    # The day the scheduled reviews count from: entitlement's start, then each
    # later discharge from hospital after a qualifying stay (a re-detention,
    # or s17 leave that entitlement started on): "within 3 months of
    # discharge from hospital" (Worcs 14.1). Reviews before it do not meet it.
    review_from: date | None = None
    placements: tuple[date, ...] = ()
    unscheduled: tuple[_Review, ...] = ()
    open_disputes: dict[str, Dispute] = field(default_factory=dict)
    resolved_disputes: set[str] = field(default_factory=set)
    history: tuple[HistoryEntry, ...] = ()
    refused: tuple[Determination, ...] = ()
    # Joint decisions awaiting a body's own agreement: a discharge decided by
    # one side, and each dispute's outcomes by party (dispute id -> {party:
    # outcome}; each inner dict replaced, never changed, so a copy may share it).
    pending_discharge: _PendingDischarge | None = None
    dispute_agreements: dict[str, dict[str, str | None]] = field(default_factory=dict)
    # The hospitals of the person's detentions and stays: their trusts act
    # for the NHS commissioner in a discharge decision (care providers).
    care_hospitals: frozenset[str] = frozenset()
    # The last pending reviews worked out, with what they were worked out
    # from (`_pending_reviews`): a change that adds no review, placement or
    # trigger (most of them) gets them again without the work.
    reviews_memo: tuple | None = None

    def note(self, change: RegisterChange, text: str) -> None:
        self.history += (HistoryEntry(on=change.effective_date, change_id=change.change_id, text=text),)

    def last_council(self) -> _Responsibility | None:
        """The responsible council or, while a re-detention with no place of
        residence has left none responsible, the one whose duty it ended: the
        basis a hand-over of the council's duty is told from (`handover_bases`),
        the area a move with no residence known before is compared against, and
        the area agreement the reviews follow (its schedule stands until the
        council of the area discharged to takes over). While the council
        determined has been split between several successors, that council (its
        basis: no hand-over is told until the successor is named)."""
        if self.council is not None:
            return self.council
        return self.outgoing_council if self.outgoing_council is not None else self.split_council

    def area(self) -> AreaAgreement:
        holder = self.last_council()
        return self.agreements.area(holder.basis_code if holder else None)


# ---------------------------------------------------------------- councils


def _council_org(ref: ReferenceData, gss: str, as_of: date) -> tuple[Org, str, tuple[Org, ...]]:
    """The council holding `gss`'s duty on `as_of`, a note if it changed hands,
    and, when no one addressable council holds it (several successors, or one
    the register lists without a GSS code yet), every successor: as the
    reference data's `council_in_place` decides (the one rule, hazard H-03)."""
    in_place = ref.council_in_place(gss, as_of)
    org = in_place.council
    if org is not None:
        if org.code != gss:
            return org, f"; code {gss} is now {org.name} ({citations.COUNCIL_SUCCESSION})", ()
        return org, "", ()
    every = in_place.successors
    if every:
        without_gss = in_place.without_gss
        names = _successor_names(every)
        original = ref.council(gss, date.min) or Org(code=gss, name=gss, kind="council")
        if len(every) > 1:
            org = Org(code=gss, name=f"{original.name} (now split: {names})", kind="council")
            note = f"; that area is now split between {names}: confirm which covers the address"
        else:
            org = Org(code=gss, name=f"{original.name} (now {names})", kind="council")
            note = f"; that council is now {names}"
        if without_gss:
            note += f"; no council is responsible until {_awaiting_gss(without_gss)}"
        return org, f"{note} ({citations.COUNCIL_SUCCESSION})", every
    return Org(code=gss, name=f"unknown council {gss}", kind="council"), "; council code not in the reference data", ()


def _council(fold: _Fold, gss: str, why: str, citation: str) -> _Responsibility:
    org, succession_note, unaddressable = _council_org(fold.ref, gss, fold.as_of)
    return _Responsibility(
        basis_code=gss,
        org=org,
        explanation=f"council: {org.name}, {why} ({citation}){succession_note}",
        citation=citation,
        split_between=unaddressable,
    )


def _without_gss(successors: tuple[Org, ...]) -> tuple[Org, ...]:
    return tuple(o for o in successors if o.kind == COUNCIL_WITHOUT_GSS)


# Where the operator gives the hub a newer register of local authorities (hub/refdata/council_files.py).
_NEWER_REGISTER = "S117_LOCAL_AUTHORITIES_FILE, with S117_LOCAL_AUTHORITIES_AS_OF"


def _awaiting_gss(without_gss: tuple[Org, ...]) -> str:
    """The hub operator's action for successors the register lists without a GSS code."""
    names = " / ".join(o.name for o in without_gss)
    return (f"the hub operator loads a newer register of local authorities giving {names} a GSS code "
            f"({_NEWER_REGISTER}; the register in use lists {'it' if len(without_gss) == 1 else 'them'} "
            "without one)")


def _resolved_by(held: _Responsibility) -> str:
    """What ends a council with no addressable successor (`split_between`): a register change naming the
    successor whose area covers the address (several successors), a newer register giving a successor its
    GSS code (one listed without), or both."""
    without_gss = _without_gss(held.split_between)
    if len(held.split_between) == 1:
        return _awaiting_gss(without_gss)
    named = ("a register change names the successor whose area covers the address (a 'moved' change's "
             "residence_before_detention_la_gss)")
    if not without_gss:
        return named
    one = len(without_gss) == 1
    return (f"{named}; {' / '.join(o.name for o in without_gss)} can be named only once the hub operator loads "
            f"a newer register of local authorities giving {'it' if one else 'them'} a GSS code ({_NEWER_REGISTER};"
            f" the register in use lists {'it' if one else 'them'} without one)")


def _hold_council(fold: _Fold, held: _Responsibility) -> None:
    """`held` as the responsible council; or, when it has no addressable
    successor on the fold's day (hazard H-03), no responsible council: the
    abolished council has no duty left and either the hub cannot tell which of
    several successors' areas holds the address, or the successor is one the
    register of local authorities lists without a GSS code yet (no message can
    be addressed to it). The council is undetermined (said as such:
    hub/domain/views.py `undetermined_bodies`) and the hospital's council
    coordinates, as with no place of residence, until a register change names
    the successor (`_confirm_split_successor`) or a newer register gives the
    successor its GSS code. Never the abolished council."""
    fold.council_awaits_destination = False
    fold.outgoing_council = None
    if not held.split_between:
        fold.council = held
        fold.split_council = None
        fold.coordinating_council = None
        fold.hospital_council_abolished = None
        return
    fold.council = None
    fold.split_council = held
    hospital_gss = fold.ref.hospital_council_gss(fold.hospital_ods) if fold.hospital_ods else None
    _coordinate(
        fold, hospital_gss,
        f"coordinating: the council area the responsible council was determined by ({held.basis_code}) is now "
        f"{_now(held)}, so the hospital's council coordinates until {_until(held)}",
        citations.COUNCIL_SUCCESSION,
    )


# Where the operator names each hospital site's council (hub/refdata/loader.py `_load_hospitals`).
HOSPITAL_SITES_FILE = "hub/refdata/data/hospital_sites.csv"


def _coordinate(fold: _Fold, hospital_gss: str | None, why: str, citation: str) -> None:
    """The hospital's council (`hospital_gss`) as the coordinating council, named as the council in place
    on the fold's day: a single successor with a GSS code is followed (`_council_org`, as for every code).
    When the hospital's council is abolished with no addressable successor (its area split between several,
    or taken over by one the register lists without a GSS code yet), there is no coordinating council the
    hub can name (hazard H-03): none, and `hospital_council_abolished` keeps why (the person query's
    `responsibility_undetermined` says it, naming the operator's file). Never the abolished council. No
    hospital council (None): no coordinating council."""
    found = _council(fold, hospital_gss, why, citation) if hospital_gss else None
    if found is not None and found.split_between:
        fold.coordinating_council = None
        fold.hospital_council_abolished = found
        return
    fold.coordinating_council = found
    fold.hospital_council_abolished = None


def hospital_council_reason(abolished: _Responsibility) -> str:
    """Why no council coordinates when the hospital's council is abolished with no addressable successor:
    the council and its successors (codes and names of councils, not personal) and the operator's action."""
    original = abolished.org.name.split(" (now ", 1)[0]
    return (f"the hospital's council, {original} ({abolished.basis_code}), is abolished: it is now "
            f"{_now(abolished)}, so the hub cannot name a coordinating council and none coordinates meanwhile: "
            f"the hub operator must update the hospital site's council in {HOSPITAL_SITES_FILE} "
            f"({citations.COUNCIL_SUCCESSION})")


def _now(held: _Responsibility) -> str:
    """"split between A (E06..) / B (E06..)", or "C (register code CHV, no GSS code yet)"."""
    names = _successor_names(held.split_between)
    return f"split between {names}" if len(held.split_between) > 1 else names


def _until(held: _Responsibility) -> str:
    if len(held.split_between) == 1:
        return "the register of local authorities gives the successor its GSS code"
    if _without_gss(held.split_between):
        return ("a register change names the successor whose area covers the address, or a newer register of "
                "local authorities gives a successor listed without one its GSS code")
    return "a register change names the successor whose area covers the address"


def _successor_names(successors: tuple[Org, ...]) -> str:
    return " / ".join(f"{o.name} (register code {o.code}, no GSS code yet)" if o.kind == COUNCIL_WITHOUT_GSS
                      else f"{o.name} ({o.code})" for o in successors)


def split_reason(held: _Responsibility) -> str:
    """The words saying why no council is responsible for a council with no
    addressable successor (split between several, or one the register lists
    without a GSS code yet): the council and its successors (codes and names
    of councils, not personal), what resolves it, and the citation."""
    original = held.org.name.split(" (now ", 1)[0]
    return (f"the council area of ordinary residence the responsible council was determined by, {original} "
            f"({held.basis_code}), is now {_now(held)}: no council is responsible until {_resolved_by(held)}"
            f" ({held.citation}; {citations.COUNCIL_SUCCESSION})")


# The notes `_confirm_split_successor` adds when a register change names a successor and that changes no
# responsibility, and what the sender is told of each (hub/ingest/service.py `successor_warnings`: a warning
# with its 202, the change still recorded, as a later change may yet make it the one a split needs). Neither
# names a council: where the person lived is the responsibility field group's, read through the person query.
SUCCESSOR_NO_SPLIT_NOTE = ("successor council named for the residence before the detention; no council split "
                           "awaits one: unchanged")
SUCCESSOR_NOT_ONE_NOTE = ("successor council named for the residence before the detention is not one of the "
                          "councils the split council's area is split between: unchanged")
# The note when a naming makes the successor responsible as it comes (`_confirm_split_successor`).
SUCCESSOR_NAMED_NOTE = "successor council named for the residence before the detention: now responsible"
# The note against a naming made earlier in the stay when a qualifying detention's council turns out split and
# the naming names one of its successors (`_take_successor_named_in_stay`): it changed the responsibility.
SUCCESSOR_TAKEN_IN_STAY_NOTE = ("successor council named for the residence before the detention earlier in the "
                                "stay: taken when the qualifying detention began: now responsible")
# Every note the rules make against a naming of a successor (the last one for a change says what became of it).
_SUCCESSOR_NOTES = frozenset({SUCCESSOR_NO_SPLIT_NOTE, SUCCESSOR_NOT_ONE_NOTE, SUCCESSOR_TAKEN_IN_STAY_NOTE,
                              SUCCESSOR_NAMED_NOTE})
SUCCESSOR_UNCHANGED = {
    SUCCESSOR_NOT_ONE_NOTE: ("is not one of the councils the split council's area is split between (the person "
                             "query's responsibility_undetermined names them): recorded in the person's history; "
                             "the responsible council is unchanged"),
    SUCCESSOR_NO_SPLIT_NOTE: ("no council split awaits a successor for this person (the person query's "
                              "responsibility_undetermined names none): recorded in the person's history; the "
                              "responsible council is unchanged"),
}


def successor_unchanged(status: S117Status, change: RegisterChange) -> str | None:
    """Why `change`'s naming of a successor (`residence_before_detention_la_gss`) changed no responsibility,
    read from the last note the fold of `status` made for it (`_confirm_split_successor`; or, named earlier in
    a stay whose qualifying detention came after it, `_take_successor_named_in_stay`; none: it did, or it was
    not folded); None otherwise. The status already evaluated with the change: nothing evaluated again."""
    if change.residence_before_detention_la_gss is None:
        return None
    change_id = change.change_id
    for entry in reversed(status.history):
        if entry.change_id == change_id and entry.text in _SUCCESSOR_NOTES:
            return SUCCESSOR_UNCHANGED.get(entry.text)
    return None


def _named_successor(split: _Responsibility, named: str) -> Org | None:
    """The successor of `split` a naming (`residence_before_detention_la_gss`) names: one with a GSS code (one
    the register lists without a code cannot be named); None if `named` is none of them."""
    return next((o for o in split.split_between if o.code == named.upper() and o.kind != COUNCIL_WITHOUT_GSS), None)


def _successor_responsible(fold: _Fold, split: _Responsibility, successor: Org, said: str) -> None:
    """`successor` of `split` responsible from now, as a register change said (`said`): the basis stays the code
    determined (a succession, not a transfer); no council coordinates any more."""
    citation = f"{split.citation}; {citations.COUNCIL_SUCCESSION}"
    fold.council = _Responsibility(
        basis_code=split.basis_code,
        org=successor,
        explanation=(f"council: {successor.name}, its area covers the place of ordinary residence the "
                     f"responsible council was determined by ({split.basis_code}, now split between "
                     f"{_successor_names(split.split_between)}), {said} ({citation})"),
        citation=citation,
    )
    fold.split_council = None
    fold.coordinating_council = None
    fold.hospital_council_abolished = None


def _confirm_split_successor(fold: _Fold, change: RegisterChange) -> None:
    """A register change naming the successor whose area covers the place of
    ordinary residence the split council was determined by: that successor is
    responsible from then (the basis stays the code determined: a succession,
    not a transfer). Naming a council that is not one of the successors, or
    with no split awaiting one, changes nothing and says so in the history
    (a naming earlier in the stay of a qualifying detention that comes later
    may yet be taken then: `_take_successor_named_in_stay`)."""
    named = change.residence_before_detention_la_gss
    if named is None:
        return
    split = fold.split_council
    if split is None:
        fold.note(change, SUCCESSOR_NO_SPLIT_NOTE)
        return
    successor = _named_successor(split, named)
    if successor is None:
        # No council codes in the history (field group legal-status): where the person lived is the
        # responsibility group's.
        fold.note(change, SUCCESSOR_NOT_ONE_NOTE)
        return
    _successor_responsible(fold, split, successor,
                           f"as a register change on {change.effective_date.isoformat()} said")
    fold.note(change, SUCCESSOR_NAMED_NOTE)


def _take_successor_named_in_stay(fold: _Fold, change: RegisterChange, verdict: SectionVerdict, start: date) -> None:
    """A qualifying detention (`change`, under `verdict` from `start`) whose council, determined by the
    residence before the detention, has been split (`_hold_council` left it awaiting a successor): the
    successors register changes named earlier in the same stay in hospital (hub/domain/stay_bounds.py, the
    stay as the children's notices read it), made while no split awaited one (under a section that does not
    qualify, s2: `_confirm_split_successor` noted them unchanged), are read as if named now, in the
    history's order: the first that is one of the split's successors is responsible from the detention (the
    naming is a fact about the same residence); one that is not, before it, changes nothing, as a naming
    after the detention would; those after it stay as noted. Each is noted against its own change, so its
    sender's warning says what became of it (`successor_unchanged`). A naming from before the stay began
    (an earlier stay's, a move backdated before the admission) is not read: a new detention re-determines
    the council (Worcs 4.3.3); nor is one when the detention falls in no stay stay_bounds.py knows (a section
    changed, or a discharge or CTO evidencing a detention, after the last stay ended): the rules begin a
    detention there, and the last stay's naming is not its own."""
    if not fold.change_in_stay:
        return
    for naming in fold.stay_bounds.namings:
        split = fold.split_council
        if split is None:
            return
        successor = _named_successor(split, naming.code)
        text = SUCCESSOR_NOT_ONE_NOTE
        if successor is not None:
            _successor_responsible(
                fold, split, successor,
                f"as a register change on {naming.on.isoformat()}, earlier in the same stay in hospital as the "
                f"{verdict.label} detention on {start.isoformat()}, said")
            text = SUCCESSOR_TAKEN_IN_STAY_NOTE
        # No council codes in the history (field group legal-status), as `_confirm_split_successor`'s notes.
        fold.history += (HistoryEntry(on=change.effective_date, change_id=naming.change_id, text=text),)


def _determine_council_at_detention(fold: _Fold, change: RegisterChange, verdict: SectionVerdict, redetention: bool) -> None:
    start = fold.detention_start or change.effective_date
    fold.split_council = None  # a new qualifying detention re-determines the council (Worcs 4.3.3)
    if fold.nfa_before_detention or fold.residence_before_detention is None:
        # The area the person is discharged to answers; until then the
        # hospital's council coordinates (Bucks "If, exceptionally, no place of
        # residence").
        fold.council_awaits_destination = True
        if not redetention:
            fold.council = None
            fold.outgoing_council = None
        elif fold.council is not None:
            # A new qualifying detention re-determines the council (Worcs
            # 4.3.3): the previous council's duty ends here, and with no place
            # of residence before the detention no council is responsible
            # until the area discharged to is known. The council whose duty
            # ended is kept as the outgoing body of that hand-over, so the
            # settlement is told to it and to the new council as a transfer and
            # opens a transfer case (events._transfer_events, timeline; both
            # compare `handover_bases`), not a first determination told to
            # nobody. Not Worcs 4.3.4: that paragraph is for disputes.
            fold.outgoing_council = _duty_ended(fold.council, verdict, start)
            fold.council = None
        hospital_gss = fold.ref.hospital_council_gss(fold.hospital_ods) if fold.hospital_ods else None
        if hospital_gss:
            _coordinate(
                fold,
                hospital_gss,
                f"coordinating: no place of residence before the {verdict.label} detention on {start.isoformat()}, "
                "so the hospital's council coordinates until the discharge area is known",
                citations.COUNCIL_NO_FIXED_ABODE,
            )
        return
    if redetention:
        why = (
            f"ordinarily resident there immediately before the new {verdict.label} detention on {start.isoformat()}, "
            "which re-determines the council"
        )
        citation = citations.COUNCIL_REDETENTION
    else:
        why = f"ordinarily resident there before the {verdict.label} detention on {start.isoformat()}"
        citation = citations.COUNCIL_RESIDENCE
    _hold_council(fold, _council(fold, fold.residence_before_detention, why, citation))
    if fold.split_council is not None:
        _take_successor_named_in_stay(fold, change, verdict, start)


def _duty_ended(held: _Responsibility, verdict: SectionVerdict, start: date) -> _Responsibility:
    """`held`, the council whose duty a re-detention with no place of residence before it ended."""
    citation = f"{citations.COUNCIL_REDETENTION}; {citations.COUNCIL_NO_FIXED_ABODE}"
    return _Responsibility(
        basis_code=held.basis_code,
        org=held.org,
        explanation=(
            f"council: {held.org.name}, responsible until the new {verdict.label} detention on {start.isoformat()} "
            "ended its duty; with no place of residence before that detention, the council of the area discharged "
            f"to becomes responsible and takes over from it ({citation})"
        ),
        citation=citation,
    )


def _settle_council_at_destination(fold: _Fold, gss: str | None, change: RegisterChange, how: str) -> None:
    if not fold.council_awaits_destination or gss is None:
        return
    _hold_council(fold, _council(
        fold,
        gss,
        f"no place of residence before detention; {how} on {change.effective_date.isoformat()}",
        citations.COUNCIL_NO_FIXED_ABODE,
    ))


# ---------------------------------------------------------- NHS commissioner


def _commissioner_from_practice(fold: _Fold, practice: str, on: date, why: str, citation: str) -> _Responsibility | None:
    resolution = fold.ref.practice_commissioner(practice, on, fold.as_of)
    if resolution is None:
        return None
    successor_note = ""
    if resolution.successor.code != resolution.at_date.code:
        successor_note = f"; now {resolution.successor.name} ({resolution.trail})"
    return _Responsibility(
        basis_code=resolution.at_date.code,
        org=resolution.successor,
        explanation=(
            f"NHS commissioner: {resolution.successor.name}, {why}: the GP practice's commissioner "
            f"{resolution.at_date.name} on {on.isoformat()} ({citation}){successor_note}"
        ),
        citation=citation,
    )


def _commissioner_from_residence(fold: _Fold, gss: str | None, on: date, why: str, citation: str) -> _Responsibility | None:
    if gss is None:
        return None
    org = fold.ref.council_commissioner(gss, fold.as_of)
    if org is None:
        return None
    return _Responsibility(
        basis_code=org.code,
        org=org,
        explanation=(
            f"NHS commissioner: {org.name}, {why}: not registered with a GP, so where usually resident "
            f"on {on.isoformat()} ({citation})"
        ),
        citation=citation,
    )


def _commissioner_from_org(fold: _Fold, code: str, why: str, citation: str) -> _Responsibility:
    org = fold.ref.commissioner_successor(code, fold.as_of) or Org(code=code, name=f"commissioner {code}", kind="icb")
    successor_note = f" (code {code} now held by {org.name})" if org.code != code else ""
    return _Responsibility(
        basis_code=code,
        org=org,
        explanation=f"NHS commissioner: {org.name}, {why} ({citation}){successor_note}",
        citation=citation,
    )


def _originating(fold: _Fold, practice: str | None, residence: str | None, on: date, why: str, citation: str) -> _Responsibility | None:
    if practice:
        found = _commissioner_from_practice(fold, practice, on, why, citation)
        if found is not None:
            return found
    if residence is None and fold.hospital_ods:
        # No GP and no fixed abode: usually resident where present (Worcs 4.4.1).
        residence = fold.ref.hospital_council_gss(fold.hospital_ods)
    return _commissioner_from_residence(fold, residence, on, why, citation)


def _nhs_england(fold: _Fold, why: str) -> _Responsibility:
    org = fold.ref.nhs_england()
    return _Responsibility(
        basis_code=org.code,
        org=org,
        explanation=f"NHS commissioner: {org.name}, {why} ({citations.NHS_ENGLAND_PRISON})",
        citation=citations.NHS_ENGLAND_PRISON,
    )


def _determine_commissioner_at_detention(fold: _Fold, change: RegisterChange, verdict: SectionVerdict) -> None:
    start = fold.detention_start or change.effective_date
    fold.commissioner_kept_on_redetention = False
    if fold.entitled and fold.commissioner is not None:
        # The asymmetry with councils: re-detention keeps the NHS commissioner.
        kept = fold.commissioner
        fold.commissioner = _Responsibility(
            basis_code=kept.basis_code,
            org=kept.org,
            explanation=(
                f"{kept.explanation}; kept through the {verdict.label} re-detention on {start.isoformat()} "
                f"because s117 aftercare was already being received ({citations.NHS_ALREADY_RECEIVING})"
            ),
            citation=f"{kept.citation}; {citations.NHS_ALREADY_RECEIVING}",
        )
        fold.commissioner_provisional = False
        if start < WHO_PAYS_2016:
            # Before the 2016 guidance a discharge between 1 April 2013 and 31
            # March 2016 re-determined the CCG (Bucks "Responsible
            # Commissioner"): the one kept holds it until that discharge.
            fold.commissioner = replace(kept, explanation=(
                f"{kept.explanation}; kept through the {verdict.label} re-detention on {start.isoformat()} "
                "because s117 aftercare was already being received"))
            fold.commissioner_provisional = True
            fold.commissioner_kept_on_redetention = True
        return
    if change.already_receiving_s117_from:
        fold.commissioner = _commissioner_from_org(
            fold, change.already_receiving_s117_from,
            "already responsible for this person's s117 aftercare before this detention", citations.NHS_ALREADY_RECEIVING,
        )
        fold.commissioner_provisional = False
        return
    if fold.from_prison and _prison_rule_applies(fold):
        fold.commissioner = _nhs_england(fold, f"detained from prison under {verdict.label} on {start.isoformat()}")
        fold.commissioner_provisional = False
        return
    if start >= WHO_PAYS_2020:
        why, citation = f"originating commissioner for the {verdict.label} detention on {start.isoformat()}", citations.NHS_ORIGINATING_2020
        fold.commissioner_provisional = False
    else:
        # Before 1 September 2020 the era depends on the discharge date: provisional until then.
        why, citation = f"originating commissioner for the {verdict.label} detention on {start.isoformat()}", citations.NHS_FROM_2016
        fold.commissioner_provisional = True
    fold.commissioner = _originating(
        fold, fold.gp_before_detention, _usual_residence_before_detention(fold), start, why, citation,
    )


def _prison_rule_applies(fold: _Fold) -> bool:
    area_code = fold.residence_before_detention
    return fold.agreements.area(area_code).nhs_england_for_prison_detentions


def _usual_residence_before_detention(fold: _Fold) -> str | None:
    return None if fold.nfa_before_detention else fold.residence_before_detention


def _settle_commissioner_on_leaving(fold: _Fold, change: RegisterChange) -> None:
    """Fix the commissioner for a detention that began before 1 September 2020 (Bucks eras)."""
    if not fold.commissioner_provisional or fold.stay_qualifying_from is None:
        return
    fold.commissioner_provisional = False
    left = change.effective_date
    start = fold.detention_start_for_era or fold.stay_qualifying_from
    label = fold.stay_qualifying.label if fold.stay_qualifying else "qualifying"
    residence = _usual_residence_before_detention(fold)
    kept = fold.commissioner_kept_on_redetention
    fold.commissioner_kept_on_redetention = False
    if kept:
        # A re-detention of a person already receiving aftercare: only a
        # discharge in the August 2013 guidance's years moves the CCG; before
        # 1 April 2013 and from 1 April 2016 the legacy/originating one
        # continues for subsequent admissions (Bucks "Responsible Commissioner").
        if not WHO_PAYS_2013 <= left < WHO_PAYS_2016:
            return
    if left < WHO_PAYS_2013:
        found = _originating(fold, fold.gp_before_detention, residence, start,
                             f"legacy/originating commissioner: left hospital on {left.isoformat()}, before 1 April 2013",
                             citations.NHS_PRE_2013)
    elif left < WHO_PAYS_2016:
        destination = change.discharge_destination_la_gss or fold.residence
        found = _originating(fold, fold.gp_practice, destination, left,
                             f"left hospital on {left.isoformat()}, between 1 April 2013 and 31 March 2016: "
                             "the commissioner of the area discharged to and GP registered with",
                             citations.NHS_2013_2016)
    elif left >= WHO_PAYS_2020:
        found = _originating(fold, fold.gp_before_detention, residence, start,
                             f"funded the {label} detention that was under way on 1 September 2020",
                             citations.NHS_AT_1_SEPT_2020)
    else:
        found = _originating(fold, fold.gp_before_detention, residence, start,
                             f"originating commissioner for the {label} detention on {start.isoformat()}",
                             citations.NHS_FROM_2016)
    if found is not None:
        fold.commissioner = found


# ----------------------------------------------------------------- handlers


def _begin_qualifying(fold: _Fold, change: RegisterChange, verdict: SectionVerdict) -> None:
    if fold.stay_qualifying is not None:
        return  # one determination per period of detention (Worcs 4.3.1)
    redetention = fold.entitled
    if redetention and fold.pending_discharge is not None:
        # A new qualifying detention re-determines entitlement: a discharge
        # decided before it and never agreed by both bodies lapses.
        fold.pending_discharge = None
        fold.note(change, "s117 discharge awaiting agreement lapsed: a new qualifying detention re-determines "
                          "entitlement")
    fold.stay_qualifying = verdict
    fold.stay_qualifying_from = change.effective_date
    fold.qualifying_detention_changes += (change.change_id,)
    fold.detention_start_for_era = fold.detention_start or change.effective_date
    _determine_council_at_detention(fold, change, verdict, redetention)
    _determine_commissioner_at_detention(fold, change, verdict)
    if not fold.entitled:
        fold.entitlement_why = (
            f"not yet entitled: detained under {verdict.label} since {change.effective_date.isoformat()}; "
            "aftercare starts on leaving hospital"
        )
        fold.entitlement_citation = verdict.citation


def _take_section(fold: _Fold, change: RegisterChange) -> SectionVerdict:
    verdict = classify(fold.ref, change.legal_status_code, change.order_type)
    fold.section = verdict
    fold.detained = verdict.detained
    if verdict.qualifying:
        _begin_qualifying(fold, change, verdict)
    elif not fold.entitled and fold.stay_qualifying is None:
        fold.entitlement_why = f"not entitled: {verdict.explanation}"
        fold.entitlement_citation = verdict.citation
    return verdict


def _on_detained(fold: _Fold, change: RegisterChange) -> None:
    if change.residence_la_gss is not None:
        fold.residence = change.residence_la_gss
        fold.no_fixed_abode = False
    if change.no_fixed_abode:
        fold.no_fixed_abode = True
        fold.residence = None
    if change.gp_practice_ods is not None:
        fold.gp_practice = change.gp_practice_ods
    new_stay = not fold.in_hospital
    if new_stay:
        fold.stay_qualifying = None
        fold.stay_qualifying_from = None
        fold.stayed_informally = False
    if new_stay or not fold.detained:
        fold.detention_start = change.effective_date
        fold.residence_before_detention = fold.residence
        fold.nfa_before_detention = fold.no_fixed_abode
        fold.gp_before_detention = fold.gp_practice
    fold.in_hospital = True
    fold.on_s17_leave = False
    fold.from_prison = change.from_prison
    fold.hospital_ods = change.hospital_ods or fold.hospital_ods
    verdict = _take_section(fold, change)
    kind = "re-detained" if fold.entitled else "detained"
    fold.note(change, f"{kind} under {verdict.label} ({'qualifying' if verdict.qualifying else 'not qualifying'})")
    _end_cto_by_new_detention(fold, change, verdict)


def _on_section_changed(fold: _Fold, change: RegisterChange) -> None:
    if not fold.in_hospital:
        fold.in_hospital = True
        fold.detention_start = change.effective_date
        fold.residence_before_detention = fold.residence
        fold.nfa_before_detention = fold.no_fixed_abode
        fold.gp_before_detention = fold.gp_practice
    previous = fold.section.label if fold.section else "no section"
    verdict = _take_section(fold, change)
    fold.note(change, f"section changed from {previous} to {verdict.label}")
    _end_cto_by_new_detention(fold, change, verdict)


def _end_cto_by_new_detention(fold: _Fold, change: RegisterChange, verdict: SectionVerdict) -> None:
    """A new detention under a qualifying section while on a CTO ends the CTO.

    In the hub's model a `detained` or `section-changed` change with a
    qualifying section (s3, s37, s37/41, s45A, s47, s48, a CP(I)A hospital
    order) is a fresh application or order: an application for admission for
    treatment makes any previous Part II application under which the person
    was a community patient cease to have effect (MHA 1983 s6(4); also when
    a patient already in hospital, e.g. under s2, is made subject to one:
    s5(1)), as a hospital order does (s40(5); a hospital or transfer direction
    has a hospital order's effect: s45B(2), s47(3), s48(3)), and a CTO stays in
    force only until its application otherwise ceases to have effect
    (s17C(c)). So the person is no longer a community patient, and a later
    discharge is not onto that CTO (an s117 discharge decision is not refused
    for it: Worcs 16.2 guards a CTO in force).
    Not a fresh application, so the CTO stays in force: `cto-recalled` (a
    recall under s17E: the person is a community patient in hospital),
    `cto-revoked` (s17F: the CTO ends there by its own handler, the original
    detention revived) and a detention under a non-qualifying section (s2 is
    an application for admission for assessment, outside s6(4); s4, s5, s35,
    s36, s38, s135, s136 are no application or hospital order either). A
    source reporting a recall must send `cto-recalled`, never `detained`.
    """
    if not (fold.on_cto and verdict.qualifying):
        return
    fold.on_cto = False
    fold.cto_ended_why = (
        f"the community treatment order ended on {change.effective_date.isoformat()}: the new {verdict.label} "
        "detention, a fresh application or order and not a recall, made the application the CTO depended on "
        f"cease to have effect, so the person is no longer a community patient "
        f"({citations.CTO_ENDED_BY_NEW_DETENTION})"
    )
    fold.note(change, f"community treatment order ended: the new {verdict.label} detention is a fresh "
                      f"application, not a recall ({citations.CTO_ENDED_BY_NEW_DETENTION})")


def _start_entitlement(fold: _Fold, change: RegisterChange, why: str, citation: str) -> None:
    if fold.entitled or fold.stay_qualifying is None:
        return
    fold.entitled = True
    fold.entitling_section = fold.stay_qualifying
    fold.entitling_detention_start = fold.detention_start_for_era or fold.detention_start
    fold.entitling_hospital_ods = fold.hospital_ods
    fold.discharged = False
    fold.entitlement_start = change.effective_date
    fold.review_from = change.effective_date
    fold.entitlement_end = None
    fold.entitlement_why = f"entitled since {change.effective_date.isoformat()}: {why}"
    fold.entitlement_citation = citation


def _leave_stay(fold: _Fold) -> None:
    fold.stay_qualifying = None
    fold.stay_qualifying_from = None
    fold.stayed_informally = False
    fold.detention_start = None
    fold.section = None


def _on_left_hospital(fold: _Fold, change: RegisterChange) -> None:
    # The GP and residence at discharge, when the discharge carries them: the
    # 2013-2016 commissioner is the one of "the area discharged to and GP
    # registered with" (Bucks "Responsible Commissioner").
    if change.gp_practice_ods is not None:
        fold.gp_practice = change.gp_practice_ods
    if change.no_fixed_abode:
        fold.no_fixed_abode = True
        fold.residence = None
    elif change.residence_la_gss is not None:
        fold.residence = change.residence_la_gss
        fold.no_fixed_abode = False
    if change.hospital_ods is not None:
        fold.hospital_ods = change.hospital_ods
    if fold.stay_qualifying is None and change.legal_status_code and not fold.entitled and not fold.in_hospital:
        # The legal status at discharge (UK Core context "discharge") evidences
        # the detention when its record has not reached the hub, as a CTO does.
        evidence = classify(fold.ref, change.legal_status_code, change.order_type)
        if evidence.qualifying:
            fold.detention_start = change.effective_date
            fold.residence_before_detention = fold.residence
            fold.nfa_before_detention = fold.no_fixed_abode
            fold.gp_before_detention = fold.gp_practice
            _begin_qualifying(fold, change, evidence)
    verdict = fold.stay_qualifying
    if verdict is not None:
        _settle_commissioner_on_leaving(fold, change)
        _settle_council_at_destination(fold, change.discharge_destination_la_gss, change, "discharged to that area")
        if fold.stayed_informally:
            _start_entitlement(fold, change, f"left hospital after staying on informally once the {verdict.label} ended",
                               f"{citations.STAYED_INFORMALLY}; {citations.QUALIFYING_SECTIONS}")
        else:
            _start_entitlement(fold, change, f"left hospital after detention under {verdict.label}",
                               citations.QUALIFYING_SECTIONS)
        if fold.entitled:
            # A discharge from hospital after a qualifying stay: the first
            # scheduled review is owed within 3 months of it (Worcs 14.1),
            # also when entitlement began earlier (s17 leave, a re-detention).
            fold.review_from = change.effective_date
    elif fold.council_awaits_destination:
        _settle_council_at_destination(fold, change.discharge_destination_la_gss, change, "discharged to that area")
    if change.discharge_destination_la_gss and not fold.no_fixed_abode:
        fold.residence = change.discharge_destination_la_gss
    fold.in_hospital = False
    fold.detained = False
    fold.on_s17_leave = False
    _leave_stay(fold)
    fold.note(change, "left hospital")


def _on_stayed_informally(fold: _Fold, change: RegisterChange) -> None:
    fold.detained = False
    fold.in_hospital = True
    fold.section = None
    fold.stayed_informally = fold.stay_qualifying is not None
    fold.note(change, "section ended; stayed in hospital informally")


def _on_s17_leave_started(fold: _Fold, change: RegisterChange) -> None:
    fold.on_s17_leave = True
    verdict = fold.stay_qualifying
    if verdict is not None:
        _settle_commissioner_on_leaving(fold, change)
        _start_entitlement(fold, change, f"on s17 leave from detention under {verdict.label}", citations.S17_LEAVE)
    fold.note(change, "s17 leave started")


def _on_s17_leave_ended(fold: _Fold, change: RegisterChange) -> None:
    fold.on_s17_leave = False
    fold.note(change, "s17 leave ended; entitlement, if any, continues" if fold.entitled else "s17 leave ended")


def _on_cto_started(fold: _Fold, change: RegisterChange) -> None:
    if fold.stay_qualifying is None and fold.entitled and not fold.in_hospital:
        # Discharged onto the CTO (recorded as left-hospital, then cto-started
        # the same day or later): the CTO continues the aftercare the
        # discharge started; it is no new detention and re-determines nothing.
        _settle_council_at_destination(fold, change.discharge_destination_la_gss, change,
                                       "discharged to that area on a CTO")
        fold.on_cto = True
        fold.cto_ended_why = None
        fold.on_s17_leave = False
        _take_facts(fold, change)
        fold.note(change, "community treatment order started; s117 entitlement continues")
        return
    if fold.stay_qualifying is None:
        # A CTO can only follow s3 or an unrestricted s37, so it evidences a
        # qualifying detention even when that record has not reached the hub.
        verdict = classify(fold.ref, change.legal_status_code or "03", change.order_type)
        if fold.detention_start is None:
            fold.detention_start = change.effective_date
            fold.residence_before_detention = change.residence_la_gss or fold.residence
            fold.nfa_before_detention = change.no_fixed_abode or fold.no_fixed_abode
            fold.gp_before_detention = change.gp_practice_ods or fold.gp_practice
        if verdict.qualifying:
            _begin_qualifying(fold, change, verdict)
    verdict = fold.stay_qualifying
    if verdict is not None:
        _settle_commissioner_on_leaving(fold, change)
        _settle_council_at_destination(fold, change.discharge_destination_la_gss, change, "discharged to that area on a CTO")
        _start_entitlement(fold, change, f"discharged onto a CTO after detention under {verdict.label}", citations.CTO_COVERED)
        if fold.entitled:
            fold.review_from = change.effective_date  # a discharge from hospital (Worcs 14.1), as on leaving
    fold.on_cto = True
    fold.cto_ended_why = None
    fold.in_hospital = False
    fold.detained = False
    fold.on_s17_leave = False
    _leave_stay(fold)
    _take_facts(fold, change)
    fold.note(change, "community treatment order started")


def _on_cto_recalled(fold: _Fold, change: RegisterChange) -> None:
    fold.in_hospital = True
    fold.detained = True
    fold.note(change, "recalled to hospital under the CTO")


def _on_cto_revoked(fold: _Fold, change: RegisterChange) -> None:
    # Revocation revives the detention the CTO followed: the same period of
    # detention, so no fresh council determination.
    verdict = classify(fold.ref, change.legal_status_code or "03", change.order_type)
    if not fold.in_hospital:
        fold.detention_start = change.effective_date
        fold.residence_before_detention = fold.residence
        fold.nfa_before_detention = fold.no_fixed_abode
        fold.gp_before_detention = fold.gp_practice
    fold.on_cto = False
    fold.in_hospital = True
    fold.detained = True
    fold.section = verdict
    if fold.entitled:
        fold.stay_qualifying = verdict if verdict.qualifying else fold.stay_qualifying
        fold.stay_qualifying_from = change.effective_date
    elif verdict.qualifying:
        # No CTO on record: the revocation still evidences a qualifying detention.
        _begin_qualifying(fold, change, verdict)
    fold.note(change, "CTO revoked; detained again under the original section")


def _on_cto_ended(fold: _Fold, change: RegisterChange) -> None:
    fold.on_cto = False
    fold.note(change, "CTO ended; s117 entitlement continues" if fold.entitled else "CTO ended")


def _on_moved(fold: _Fold, change: RegisterChange) -> None:
    previous = fold.residence
    if change.gp_practice_ods is not None:  # a move often brings a new GP
        fold.gp_practice = change.gp_practice_ods
    if change.no_fixed_abode:
        fold.no_fixed_abode = True
        fold.residence = None
    elif change.residence_la_gss is not None:
        fold.no_fixed_abode = False
        fold.residence = change.residence_la_gss
    if fold.entitled and not fold.in_hospital:
        _settle_council_at_destination(fold, fold.residence, change, "settled in that area after leaving hospital")
    _confirm_split_successor(fold, change)
    if change.residence_la_gss is None and not change.no_fixed_abode:
        return  # only the successor of a split council named (validation: a move names a residence otherwise)
    new_area = fold.residence
    # With no residence known before, the council's area: the responsible council's, or the one whose duty a
    # re-detention with no place of residence ended while none is responsible (`_Fold.last_council`).
    holder = fold.last_council()
    reference_area = previous if previous is not None else (holder.basis_code if holder else None)
    if fold.entitled and new_area is not None and new_area != reference_area:
        fold.unscheduled += (_Review(
            change.effective_date, "unscheduled",
            f"unscheduled review: moved to another council area on {change.effective_date.isoformat()}; "
            "the responsible council does not change",
            citations.REVIEW_MOVE, "moved", change.effective_date,
        ),)
    fold.note(change, "moved (ordinary residence changed); responsibility unchanged" if fold.entitled else "moved")


def _on_gp_changed(fold: _Fold, change: RegisterChange) -> None:  # noqa: D103
    fold.gp_practice = change.gp_practice_ods
    # The s117 commissioner does not follow the GP (Worcs 4.4.6).
    fold.note(change, "GP registration changed; s117 commissioner unchanged" if fold.entitled else "GP registration changed")


def _on_placement(fold: _Fold, change: RegisterChange) -> None:
    fold.placements += (change.effective_date,)
    fold.note(change, "new placement started")


def _on_review_completed(fold: _Fold, change: RegisterChange) -> None:
    fold.reviews_completed += (change.effective_date,)
    fold.note(change, "review completed")


def _unscheduled_review(fold: _Fold, change: RegisterChange, what: str, trigger: str) -> None:
    """An unscheduled review owed from the change's date (Worcs 14.1), while entitled."""
    if fold.entitled:
        fold.unscheduled += (_Review(
            change.effective_date, "unscheduled",
            f"unscheduled review: {what} on {change.effective_date.isoformat()}"
            + (f" ({change.review_reason})" if change.review_reason else ""),
            citations.REVIEW_UNSCHEDULED, trigger, change.effective_date,
        ),)


def _on_review_requested(fold: _Fold, change: RegisterChange) -> None:
    _unscheduled_review(fold, change, "requested", "review-requested")
    fold.note(change, "review requested")


def _on_discharge_considered(fold: _Fold, change: RegisterChange) -> None:
    _unscheduled_review(fold, change, "discharge from s117 considered", "discharge-considered")
    fold.note(change, "discharge from s117 considered")


def _speaks_for(fold: _Fold, org: str) -> frozenset[str]:
    """The sides of a joint discharge decision `org` may agree for on the
    fold's day: the council's if it is the responsible council (or, while no
    council is responsible, the coordinating one); the NHS commissioner's if
    it is the responsible commissioner or a trust running a hospital of the
    person's detentions or stays, which acts for it (Worcs 16.1). `org` is a
    source's org code, or a hub source itself (it speaks for both)."""
    if org in HUB_SOURCES:
        return BOTH_SIDES
    sides = set()
    council = fold.council or fold.coordinating_council
    if council is not None and org in (council.basis_code.upper(), council.org.code.upper()):
        sides.add(COUNCIL_SIDE)
    commissioner = fold.commissioner
    if commissioner is not None and org in (commissioner.basis_code.upper(), commissioner.org.code.upper()):
        sides.add(COMMISSIONER_SIDE)
    elif any((fold.ref.hospital_trust(h) or "").upper() == org for h in fold.care_hospitals):
        sides.add(COMMISSIONER_SIDE)
    return frozenset(sides)


def _speaks_for_party(fold: _Fold, org: str, party: str, kind: DisputeKind, recorded_on: date) -> bool:
    """Whether `org` (a source's org code) may record a dispute's outcome for
    `party` (upper case): the party itself, or the body holding the party's
    duties on the fold's day or on the day the outcome was recorded, as for a
    joint discharge's sides (`_speaks_for`: the code as determined, or its
    holder now). So a CCG party (abolished 1 July 2022) is spoken for by the
    ICB that took over its liabilities, and an outcome a CCG recorded for a
    predecessor (merged into it before 2022) still counts once the ICB holds
    both; a council party by the one council that took over its area (a
    split's several successors: none alone). Not by another ICB, another
    sub-ICB location of that ICB, nor a CCG's code (a key kept from before
    July 2022) recording now, or for a party named as the ICB itself.
    Look-ups only when the source is not the party itself (the reference
    data's `commissioner_successor`, a few dictionary reads, and
    `council_in_place`, kept by the loader: no scan)."""
    if org == party:
        return True
    return any(duty_holder(fold.ref, party, kind, on) == org
               for on in ((fold.as_of, recorded_on) if recorded_on != fold.as_of else (fold.as_of,)))


def _source_key(change: RegisterChange) -> str | None:
    """Who recorded the change, as `_speaks_for` takes it: a hub source, an org code, or None."""
    return change.source if change.source in HUB_SOURCES else source_org(change.source)


def _awaited(sides: frozenset[str]) -> str:
    """"the council's own agreement", "the council's and the NHS commissioner's own agreement"."""
    bodies = " and ".join(f"{_SIDE_WORDS[s]}'s" for s in (COUNCIL_SIDE, COMMISSIONER_SIDE) if s in sides)
    return f"{bodies} own agreement"


def _on_discharge_decided(fold: _Fold, change: RegisterChange) -> None:
    who = _source_key(change)
    speaks = _speaks_for(fold, who) if who is not None else frozenset()
    decision = change.discharge
    if decision is None:
        refusal: Determination | None = Determination(
            org=None, explanation="s117 discharge refused [reasons-required]: no decision was recorded",
            citation=citations.DISCHARGE_REASONS_RECORDED, rule="reasons-required",
        )
    else:
        # A body records its own side's agreement: what it says of the other
        # side counts for nothing (that side records its own), so the guard
        # does not refuse it for saying the other has not agreed yet; it does
        # if the body says it does not agree itself.
        asked = replace(decision, council_agrees=decision.council_agrees or COUNCIL_SIDE not in speaks,
                        commissioner_agrees=decision.commissioner_agrees or COMMISSIONER_SIDE not in speaks)
        refusal = check_discharge(_snapshot(fold), asked)
    if refusal is not None:
        fold.refused += (refusal,)
        fold.note(change, f"s117 discharge refused ({refusal.rule})")
        return
    # Lawful: it counts for the sides its source may speak for and says agree,
    # with those an earlier decision gathered from bodies still holding their
    # side on this day (Worcs 16.1).
    pending = fold.pending_discharge
    agreed: dict[str, str] = {}
    if pending is not None:
        for side, org in pending.agreed:
            if side in _speaks_for(fold, org):
                agreed.setdefault(side, org)
    says = {COUNCIL_SIDE: decision.council_agrees, COMMISSIONER_SIDE: decision.commissioner_agrees}
    if who is not None:
        for side in speaks:
            if says[side]:
                agreed[side] = who
    awaited = BOTH_SIDES - agreed.keys()
    if awaited:
        decided_on = pending.decided_on if pending is not None else change.effective_date
        text = f"s117 discharge awaiting {_awaited(awaited)}"
        fold.pending_discharge = _PendingDischarge(
            decided_on=decided_on,
            agreed=tuple(sorted(agreed.items())),
            text=f"{text} (decided on {decided_on.isoformat()})",
            determination=Determination(
                org=None,
                explanation=(f"{text}: decided on {decided_on.isoformat()}; entitlement continues until both the "
                             f"council and the NHS commissioner have agreed ({citations.DISCHARGE_JOINT})"),
                citation=citations.DISCHARGE_JOINT,
                rule="joint-agreement-awaited",
            ),
        )
        fold.note(change, text)
        return
    fold.pending_discharge = None
    fold.entitled = False
    fold.discharged = True
    fold.entitlement_end = change.effective_date
    fold.entitlement_why = (
        f"not entitled: discharged from s117 on {change.effective_date.isoformat()} by a joint decision of the "
        "council and the NHS commissioner"
    )
    fold.entitlement_citation = citations.DISCHARGE_JOINT
    fold.unscheduled = ()
    fold.note(change, "discharged from s117 by joint decision")


def _on_dispute_raised(fold: _Fold, change: RegisterChange) -> None:
    if change.dispute is not None and change.dispute.dispute_id in fold.resolved_disputes:
        # Raised and resolved on the same day (or the raise arrived late): a resolved dispute stays resolved.
        fold.note(change, "responsibility dispute raised; already resolved")
        return
    if change.dispute is not None:
        fold.open_disputes[change.dispute.dispute_id] = change.dispute
    fold.note(change, "responsibility dispute raised; current arrangements stay in force")


def _on_dispute_resolved(fold: _Fold, change: RegisterChange) -> None:
    dispute = change.dispute
    if dispute is None:
        fold.note(change, "dispute resolution recorded without details")
        return
    dispute_id = dispute.dispute_id
    if change.source not in HUB_SOURCES and raised_through_api(dispute_id):
        # A dispute raised through the hub's workflows (POST /v1/disputes) is
        # settled there: every party's agreement, or the final stage's
        # determination, checked before the workflows record the outcome. A
        # body's own record of an outcome changes nothing (one trust, not even
        # a party, used to close such a case alone).
        fold.note(change, "responsibility dispute outcome recorded by a body; the dispute was raised through the "
                          "hub's workflows and is resolved there (POST /v1/disputes/{id}/resolve): unchanged")
        return
    if change.source not in HUB_SOURCES:
        # Recorded by a body: the outcome stands once every party to the
        # dispute has recorded it (Worcs 15.4-15.6), itself or through the
        # body holding its duties (`_speaks_for_party`: a CCG's ICB, a
        # former county's unitary council). The
        # hub's workflows record an outcome only after every party agreed to it.
        held = fold.open_disputes.get(dispute_id)
        parties = tuple(dict.fromkeys(p.upper() for p in (held or dispute).parties))
        agreements = dict(fold.dispute_agreements.get(dispute_id, {}))
        org = source_org(change.source)
        if org is not None:
            kind = (held or dispute).kind
            for party in parties:
                if _speaks_for_party(fold, org, party, kind, change.recorded_on):
                    # A party's later outcome replaces its earlier one, whoever of it and its successor recorded it.
                    agreements[party] = dispute.resolved_responsible
        fold.dispute_agreements[dispute_id] = agreements
        same = sum(1 for p in parties if p in agreements and agreements[p] == dispute.resolved_responsible)
        if not parties or same < len(parties):
            if dispute_id not in fold.resolved_disputes and held is None:
                # An outcome only some parties have recorded: the dispute is open until all have.
                fold.open_disputes[dispute_id] = Dispute(dispute_id=dispute_id, kind=dispute.kind,
                                                         parties=dispute.parties)
            state = "already resolved; unchanged" if dispute_id in fold.resolved_disputes else "stays open"
            fold.note(change, f"responsibility dispute outcome recorded by {same} of {len(parties)} parties; "
                              f"{state} until every party records the same outcome")
            return
    fold.dispute_agreements.pop(dispute_id, None)
    fold.open_disputes.pop(dispute_id, None)
    fold.resolved_disputes.add(dispute_id)
    found = dispute.resolved_responsible
    if found:
        when = change.effective_date.isoformat()
        if dispute.kind is DisputeKind.COUNCIL:
            _hold_council(fold, _council(fold, found, f"found responsible when the dispute was resolved on {when}",
                                         citations.COUNCIL_DISPUTE))
        else:
            fold.commissioner = _commissioner_from_org(
                fold, found, f"found responsible when the dispute was resolved on {when}", citations.NHS_DISPUTE)
            fold.commissioner_provisional = False
    fold.note(change, DISPUTE_RESOLVED_NOTE)


def _on_died(fold: _Fold, change: RegisterChange) -> None:
    if fold.entitled:
        fold.entitlement_end = change.effective_date
    fold.entitled = False
    fold.died = True
    fold.pending_discharge = None
    fold.in_hospital = fold.detained = fold.on_cto = fold.on_s17_leave = False
    fold.entitlement_why = f"not entitled: died on {change.effective_date.isoformat()}"
    fold.entitlement_citation = citations.DIED
    fold.unscheduled = ()
    fold.note(change, "died")


def _take_facts(fold: _Fold, change: RegisterChange) -> None:
    """The GP, residence and hospital a change reports are the person's on its
    date (e.g. an HL7 A08 carries PD1-3 and PV1-3): the fold takes them, so
    nothing a change carries is accepted and ignored."""
    if change.gp_practice_ods is not None:
        fold.gp_practice = change.gp_practice_ods
    if change.no_fixed_abode:
        fold.no_fixed_abode = True
        fold.residence = None
    elif change.residence_la_gss is not None:
        fold.residence = change.residence_la_gss
        fold.no_fixed_abode = False
    if change.hospital_ods is not None and change.change_type not in (ChangeType.MOVED, ChangeType.GP_CHANGED):
        fold.hospital_ods = change.hospital_ods


# Change types whose own handler does not read the GP / residence / hospital
# they may carry (hub/ingest/validation.py USED_BY_CHANGE lists what each takes).
TAKES_FACTS = frozenset({
    ChangeType.SECTION_CHANGED, ChangeType.S17_LEAVE_STARTED, ChangeType.S17_LEAVE_ENDED,
    ChangeType.SECTION_ENDED_STAYED_INFORMALLY, ChangeType.CTO_RECALLED, ChangeType.CTO_REVOKED,
    ChangeType.CTO_ENDED,
})


CHANGE_HANDLERS: dict[ChangeType, Callable[[_Fold, RegisterChange], None]] = {
    ChangeType.DETAINED: _on_detained,
    ChangeType.SECTION_CHANGED: _on_section_changed,
    ChangeType.S17_LEAVE_STARTED: _on_s17_leave_started,
    ChangeType.S17_LEAVE_ENDED: _on_s17_leave_ended,
    ChangeType.SECTION_ENDED_STAYED_INFORMALLY: _on_stayed_informally,
    ChangeType.LEFT_HOSPITAL: _on_left_hospital,
    ChangeType.CTO_STARTED: _on_cto_started,
    ChangeType.CTO_RECALLED: _on_cto_recalled,
    ChangeType.CTO_REVOKED: _on_cto_revoked,
    ChangeType.CTO_ENDED: _on_cto_ended,
    ChangeType.MOVED: _on_moved,
    ChangeType.GP_CHANGED: _on_gp_changed,
    ChangeType.PLACEMENT_STARTED: _on_placement,
    ChangeType.REVIEW_COMPLETED: _on_review_completed,
    ChangeType.REVIEW_REQUESTED: _on_review_requested,
    ChangeType.DISCHARGE_CONSIDERED: _on_discharge_considered,
    ChangeType.S117_DISCHARGE_DECIDED: _on_discharge_decided,
    ChangeType.DISPUTE_RAISED: _on_dispute_raised,
    ChangeType.DISPUTE_RESOLVED: _on_dispute_resolved,
    ChangeType.DIED: _on_died,
}


# ------------------------------------------------------------------ reviews


REVIEW_KIND_PRIORITY = {"unscheduled": 0, "new-placement": 1, "first": 2, "annual": 3}


def _pending_reviews(fold: _Fold) -> tuple[ReviewDue, ...]:
    """Every review owed and not yet held, earliest first.

    A review held on or after a trigger meets it: the first or annual review
    is always owed (one of them), a placement or an unscheduled trigger only
    until the next review is held.
    """
    if not fold.entitled or fold.entitlement_start is None:
        return ()  # a discharged or dead person is owed no reviews
    start = fold.entitlement_start
    memo = fold.reviews_memo
    # The same inputs: the same start, the same tuples (immutable, so the same
    # object is the same content) and the same council (its area's intervals).
    base = fold.review_from if fold.review_from is not None and fold.review_from > start else start
    holder = fold.last_council()
    if (memo is not None and memo[0] == (start, base) and memo[1] is fold.reviews_completed
            and memo[2] is fold.placements and memo[3] is fold.unscheduled and memo[4] is holder):
        return memo[5]
    pending = _pending_reviews_of(fold, start, base)
    fold.reviews_memo = ((start, base), fold.reviews_completed, fold.placements, fold.unscheduled, holder,
                         pending)
    return pending


def _pending_reviews_of(fold: _Fold, start: date, base: date) -> tuple[ReviewDue, ...]:
    """`base`: the last discharge from hospital after a qualifying stay (at
    the earliest `start`): the first or annual review counts from reviews held
    since it (Worcs 14.1), a placement or unscheduled trigger is met by any
    review held after it."""
    area = fold.area()
    last = None
    for day in fold.reviews_completed:
        if day >= start and (last is None or day > last):
            last = day
    placements = tuple(placed for placed in fold.placements if placed >= start and (last is None or placed > last))
    unscheduled = tuple(r for r in fold.unscheduled if r.on >= start and (last is None or r.on > last))
    scheduled_last = last if last is not None and last >= base else None
    return _reviews_due(base, scheduled_last, area.first_review_months, area.review_interval_months,
                        area.new_placement_review_weeks, placements, unscheduled)


@lru_cache(maxsize=4096)  # a pure function of its arguments; a status is built for every change folded
def _reviews_due(start: date, last: date | None, first_review_months: int, review_interval_months: int,
                 new_placement_review_weeks: int, placements: tuple[date, ...],
                 unscheduled: tuple[_Review, ...]) -> tuple[ReviewDue, ...]:
    candidates: list[_Review] = []
    if last is None:
        due = add_months(start, first_review_months)
        candidates.append(_Review(due, "first",
                                  f"first review due by {due.isoformat()}: within {first_review_months} months "
                                  f"of leaving hospital on {start.isoformat()}", citations.REVIEW_FIRST,
                                  "left-hospital", start))
    else:
        due = add_months(last, review_interval_months)
        candidates.append(_Review(due, "annual",
                                  f"review due by {due.isoformat()}: {review_interval_months} months after the "
                                  f"last review on {last.isoformat()}", citations.REVIEW_ANNUAL,
                                  "review-completed", last))
    for placed in placements:
        due = placed + timedelta(weeks=new_placement_review_weeks)
        candidates.append(_Review(due, "new-placement",
                                  f"new-placement review due by {due.isoformat()}: "
                                  f"{new_placement_review_weeks} weeks after the placement on "
                                  f"{placed.isoformat()}", citations.REVIEW_NEW_PLACEMENT,
                                  "placement-started", placed))
    candidates.extend(unscheduled)
    # On a tie the more specific trigger comes first (and names next_review).
    ordered = sorted(candidates, key=lambda r: (r.on, REVIEW_KIND_PRIORITY[r.kind], r.triggered_on or r.on))
    out: list[ReviewDue] = []
    for r in ordered:
        review = ReviewDue(due_on=r.on, kind=r.kind, explanation=r.explanation, citation=r.citation,
                           trigger=r.trigger, triggered_on=r.triggered_on)
        if review not in out:
            out.append(review)
    return tuple(out)


# ----------------------------------------------------------------- assembly


# An incremental evaluation's statuses (`Evaluation.extended`) share a
# responsibility's determination while the fold keeps that responsibility
# (the same object until a handler sets another), and what is made from it
# (hub/bus/payload.py keeps each part's JSON by identity). Kept per chain of
# evaluations (`Evaluation._memo`, by the responsibility's identity, the
# responsibility held with it so its id is not another's; a few entries,
# emptied past _MEMO_MAX), so it lives and dies with the evaluations; a
# status from `evaluate` makes its own. Determinations are frozen: sharing
# one changes nothing a status says.
_MEMO_MAX = 16


def _determination(responsibility: _Responsibility | None,
                   memo: dict[int, tuple[_Responsibility, Determination]] | None = None) -> Determination | None:
    if responsibility is None:
        return None
    if memo is not None:
        held = memo.get(id(responsibility))
        if held is not None and held[0] is responsibility:
            return held[1]
    made = Determination(org=responsibility.org, explanation=responsibility.explanation,
                         citation=responsibility.citation)
    if memo is not None:
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[id(responsibility)] = (responsibility, made)
    return made


def _split_determination(split: _Responsibility | None) -> Determination | None:
    if split is None:
        return None
    return _split_determination_of(split)


@lru_cache(maxsize=1024)  # a pure function of a frozen responsibility: the same words for the same split
def _split_determination_of(split: _Responsibility) -> Determination:
    # "council-successor-without-gss" when any successor awaits its GSS code (the operator's newer register
    # resolves it), "council-split" otherwise (a register change naming the successor does).
    rule = "council-successor-without-gss" if _without_gss(split.split_between) else "council-split"
    return Determination(org=None, explanation=split_reason(split),
                         citation=f"{split.citation}; {citations.COUNCIL_SUCCESSION}", rule=rule)


def _hospital_council_determination(abolished: _Responsibility | None) -> Determination | None:
    return None if abolished is None else _hospital_council_determination_of(abolished)


@lru_cache(maxsize=256)  # a pure function of a frozen responsibility
def _hospital_council_determination_of(abolished: _Responsibility) -> Determination:
    return Determination(org=None, explanation=hospital_council_reason(abolished),
                         citation=f"{abolished.citation}; {citations.COUNCIL_SUCCESSION}",
                         rule="hospital-council-abolished")


def _entitlement(fold: _Fold) -> Determination:
    why = fold.entitlement_why
    if fold.cto_ended_why is not None and fold.entitled:
        why += "; " + fold.cto_ended_why
    if fold.pending_discharge is not None:
        why += "; " + fold.pending_discharge.text
    return _entitlement_of(why, fold.entitlement_citation, fold.entitled and fold.in_hospital)


@lru_cache(maxsize=4096)  # a pure function of its arguments (the same determination for the same words)
def _entitlement_of(why: str, citation: str, back_in_hospital: bool) -> Determination:
    if back_in_hospital:
        why += "; back in hospital, which does not end entitlement"
        citation = f"{citation}; {citations.DISCHARGE_FORBIDDEN_GROUNDS}"
    return Determination(org=None, explanation=f"{why} ({citation})", citation=citation)


def _snapshot(fold: _Fold, memo: dict[int, tuple[_Responsibility, Determination]] | None = None) -> S117Status:
    current_code = fold.stay_qualifying.code if fold.stay_qualifying else None
    pending = _pending_reviews(fold)
    return S117Status(
        person_id=fold.person_id,
        as_of=fold.as_of,
        entitled=fold.entitled,
        entitlement=_entitlement(fold),
        entitlement_start=fold.entitlement_start,
        entitlement_end=fold.entitlement_end,
        detained=fold.detained,
        in_hospital=fold.in_hospital,
        on_cto=fold.on_cto,
        qualifying_section_code=current_code,
        detention_start=fold.detention_start if fold.detained else None,
        entitling_section_code=fold.entitling_section.code if fold.entitling_section else None,
        entitling_detention_start=fold.entitling_detention_start,
        entitling_hospital_ods=fold.entitling_hospital_ods,
        responsible_council=_determination(fold.council, memo),
        responsible_commissioner=_determination(fold.commissioner, memo),
        coordinating_council=_determination(fold.coordinating_council, memo),
        outgoing_council=_determination(fold.outgoing_council, memo),
        next_review=pending[0] if pending else None,
        pending_reviews=pending,
        open_disputes=tuple(fold.open_disputes.values()),
        history=fold.history,
        refused_discharges=fold.refused,
        pending_discharge=fold.pending_discharge.determination if fold.pending_discharge is not None else None,
        on_s17_leave=fold.on_s17_leave,
        discharged_from_s117=fold.discharged,
        died=fold.died,
        council_basis_code=(fold.council.basis_code if fold.council else
                            fold.split_council.basis_code if fold.split_council else None),
        council_split=_split_determination(fold.split_council),
        hospital_council_abolished=_hospital_council_determination(fold.hospital_council_abolished),
        commissioner_basis_code=fold.commissioner.basis_code if fold.commissioner else None,
        outgoing_council_basis_code=fold.outgoing_council.basis_code if fold.outgoing_council else None,
        residence_la_gss=fold.residence,
        qualifying_detention_changes=fold.qualifying_detention_changes,
    )


def _fold_one(fold: _Fold, change: RegisterChange) -> None:
    if fold.died:
        fold.note(change, f"ignored after death: {change.change_type.value}")
        return
    was_in_stay = fold.stay_bounds.in_stay
    fold.stay_bounds = fold.stay_bounds.after(change)
    fold.change_in_stay = was_in_stay or fold.stay_bounds.in_stay
    if change.change_type in TAKES_FACTS:
        _take_facts(fold, change)
    hospital = change.hospital_ods
    if hospital and change.change_type in CARE_HOSPITAL_CHANGES and hospital not in fold.care_hospitals:
        fold.care_hospitals = fold.care_hospitals | {hospital}
    CHANGE_HANDLERS[change.change_type](fold, change)


def _fold_all(
    person_id: str, changes: Sequence[RegisterChange], ref: ReferenceData, agreements: AgreementBook, as_of: date,
) -> tuple[_Fold, tuple[date, int, date, str, str] | None]:
    """The fold of every change effective by `as_of`, in `change_order`
    (a stable sort: changes with equal keys keep their order in `changes`),
    and the key of the last change folded (None if none was)."""
    fold = _new_fold(person_id, ref, agreements, as_of)
    relevant = sorted(
        (c for c in changes if c.effective_date <= as_of),
        key=change_order,
    )
    for change in relevant:
        _fold_one(fold, change)
    return fold, (change_order(relevant[-1]) if relevant else None)


def evaluate(
    person_id: str,
    changes: Sequence[RegisterChange],
    ref: ReferenceData,
    agreements: AgreementBook,
    as_of: date,
) -> S117Status:
    """The person's s117 status on `as_of`, from every change effective by then."""
    return _snapshot(_fold_all(person_id, changes, ref, agreements, as_of)[0])


# The _Fold fields holding containers the handlers change in place (every
# other field holds an immutable value and is only ever re-bound).
_CONTAINER_FIELDS = tuple(f.name for f in fields(_Fold) if f.default_factory is not MISSING)


# Every field of a fold as `_Fold(...)` starts it: `_new_fold` copies it (the
# dataclass's __init__ of some 45 keyword defaults cost twice the copy, once
# per `evaluate`, that is per change on the HTTP/MLLP front and dispatched).
_FRESH_STATE = vars(_Fold(person_id="", ref=None, agreements=None, as_of=date.min))  # type: ignore[arg-type]


def _new_fold(person_id: str, ref: ReferenceData, agreements: AgreementBook, as_of: date) -> _Fold:
    """`_Fold(person_id=..., ref=..., agreements=..., as_of=...)`, each container its own."""
    state = _FRESH_STATE.copy()
    state["person_id"], state["ref"], state["agreements"], state["as_of"] = person_id, ref, agreements, as_of
    for name in _CONTAINER_FIELDS:
        state[name] = state[name].copy()
    new = _Fold.__new__(_Fold)
    new.__dict__ = state
    return new


def _copy_fold(fold: _Fold) -> _Fold:
    """A fold that can move on without changing `fold`: its containers copied
    (each a list, dict or set: its own `copy`, of the same type)."""
    new = _Fold.__new__(_Fold)
    state = fold.__dict__.copy()
    for name in _CONTAINER_FIELDS:
        state[name] = state[name].copy()
    new.__dict__ = state
    return new


class Evaluation:
    """`evaluate`'s answer that can take one more change without replaying the
    history: `evaluation(...).extended(change).status` equals
    `evaluate(person_id, [*changes, change], ...)` exactly.

    A change that sorts at or after every change already folded (`change_order`;
    on a tie `evaluate`'s stable sort puts the later-listed change last too) is
    folded onto a copy of the state; a change effective after `as_of` leaves the
    status as it is; any other (a late change, sorting before one already
    folded) replays the whole history, as `evaluate` does. An Evaluation never
    changes once made: `extended` returns a new one, and a status is built of
    immutable values (tuples of frozen dataclasses), so no later change can
    reach an earlier status."""

    __slots__ = ("person_id", "ref", "agreements", "as_of", "changes", "status", "_fold", "_last", "replays",
                 "_memo")

    def __init__(self, person_id: str, ref: ReferenceData, agreements: AgreementBook, as_of: date,
                 changes: tuple[RegisterChange, ...], fold: _Fold,
                 last: tuple[date, int, date, str, str] | None, status: S117Status | None = None,
                 replays: int = 0, memo: dict[int, tuple[_Responsibility, Determination]] | None = None) -> None:
        self.person_id, self.ref, self.agreements, self.as_of = person_id, ref, agreements, as_of
        self.changes = changes
        self._fold = fold  # never changed after this: `extended` folds onto a copy
        self._last = last
        # The chain's determinations by responsibility (_determination), shared by every evaluation extended from it
        self._memo = memo if memo is not None else {}
        self.status = status if status is not None else _snapshot(fold, self._memo)
        self.replays = replays  # how many extensions replayed the history (late changes)

    def is_late(self, change: RegisterChange) -> bool:
        """Whether `change` sorts before a change already folded (`precedence.is_late`
        over the changes held, in constant time: none is effective after `as_of`)."""
        return self._last is not None and change_order(change) < self._last

    def extended(self, change: RegisterChange) -> Evaluation:
        """The evaluation with `change` added after the changes held."""
        changes = (*self.changes, change)
        if change.effective_date > self.as_of:
            return Evaluation(self.person_id, self.ref, self.agreements, self.as_of, changes, self._fold,
                              self._last, self.status, self.replays, self._memo)
        key = change_order(change)
        if self._last is None or key >= self._last:
            fold = _copy_fold(self._fold)
            _fold_one(fold, change)
            return Evaluation(self.person_id, self.ref, self.agreements, self.as_of, changes, fold, key,
                              replays=self.replays, memo=self._memo)
        fold, last = _fold_all(self.person_id, changes, self.ref, self.agreements, self.as_of)
        return Evaluation(self.person_id, self.ref, self.agreements, self.as_of, changes, fold, last,
                          replays=self.replays + 1, memo=self._memo)


Bases = tuple[str | None, str | None]  # the council's and NHS commissioner's basis codes (`handover_bases`)


def _fold_bases(fold: _Fold) -> Bases:
    """`handover_bases` of the fold's status, without building it."""
    council = fold.last_council()
    return (council.basis_code if council else None, fold.commissioner.basis_code if fold.commissioner else None)


def handover_bases(status: S117Status) -> Bases:
    """The bases a hand-over of responsibility is told between: the
    responsible council's and NHS commissioner's, the council's being, while
    a re-detention with no place of residence has left none responsible, the
    one whose duty it ended (`outgoing_council_basis_code`, Worcs 4.3.3): the
    council of the area discharged to takes over from that one (Bucks "If,
    exceptionally, no place of residence"). A basis moving from one body to
    another is a transfer (events._transfer_events, timeline)."""
    council = status.council_basis_code if status.council_basis_code is not None else \
        status.outgoing_council_basis_code
    return council, status.commissioner_basis_code


def handover_council(status: S117Status) -> Determination | None:
    """The determination naming the council of `handover_bases`."""
    return status.responsible_council if status.council_basis_code is not None else status.outgoing_council


def basis_timeline(
    person_id: str,
    changes: Sequence[RegisterChange],
    ref: ReferenceData,
    agreements: AgreementBook,
    as_of: date,
) -> list[tuple[RegisterChange, str | None, str | None]]:
    """Each change effective by `as_of`, in the fold's order, with the bases of
    the responsible council and NHS commissioner once it is folded: one fold
    of the history and no status built (hub/domain/rules/timeline.py)."""
    fold = _new_fold(person_id, ref, agreements, as_of)
    out = []
    for change in sorted((c for c in changes if c.effective_date <= as_of), key=change_order):
        _fold_one(fold, change)
        out.append((change, *_fold_bases(fold)))
    return out


def basis_timelines_around(
    person_id: str,
    history: Sequence[RegisterChange],
    change: RegisterChange,
    ref: ReferenceData,
    agreements: AgreementBook,
    as_of: date,
) -> tuple[list[RegisterChange], Bases, list[tuple[RegisterChange, Bases]], list[tuple[RegisterChange, Bases]]]:
    """The history's timeline of bases without `change` and with it, sharing
    the fold of what sorts before it (as `evaluate(..., [*history, change])`
    sorts: `change` after the changes of equal key): (those changes in order,
    the bases after them, the rest without `change`, `change` and the rest),
    each entry a change with the bases once it is folded."""
    ordered = sorted((c for c in history if c.effective_date <= as_of), key=change_order)
    key = change_order(change)
    split = 0
    while split < len(ordered) and change_order(ordered[split]) <= key:
        split += 1
    fold = _new_fold(person_id, ref, agreements, as_of)
    for c in ordered[:split]:
        _fold_one(fold, c)

    def run(f: _Fold, changes: list[RegisterChange]) -> list[tuple[RegisterChange, Bases]]:
        out = []
        for c in changes:
            _fold_one(f, c)
            out.append((c, _fold_bases(f)))
        return out

    start = _fold_bases(fold)
    rest = ordered[split:]
    without = run(_copy_fold(fold), rest)
    with_change = run(fold, [change, *rest] if change.effective_date <= as_of else rest)
    return ordered[:split], start, without, with_change


def evaluation(
    person_id: str,
    changes: Sequence[RegisterChange],
    ref: ReferenceData,
    agreements: AgreementBook,
    as_of: date,
) -> Evaluation:
    """`evaluate(person_id, changes, ref, agreements, as_of)` as an Evaluation
    (its `status`), ready to take more changes with `extended`."""
    fold, last = _fold_all(person_id, changes, ref, agreements, as_of)
    return Evaluation(person_id, ref, agreements, as_of, tuple(changes), fold, last)
