"""Reconciliation: a body's own list of people on the s117 register against
the hub's register, as differences that name who must act.

Standard library only. Each body (trust, council, ICB) keeps its own list in
its own system (SWIFT flags, Mosaic, a spreadsheet); the policies describe one
register kept jointly (Worcs 19.2-19.6; Bucks "Registration"), so every place
the two disagree is a difference a body must resolve by sending a register
change or by correcting its own list.

A difference is identified by (body, person, kind, field): the same
disagreement found in the next night's snapshot is the same item, not a new
one (`track`), and an item whose disagreement is gone closes itself.

What a body may learn: a person the body has no part in (not responsible, not
coordinating, not a dispute party, as the hub's register stands) is answered
exactly as a person the hub has never heard of, so a snapshot cannot be used
to find out who is on the register.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum

from hub.domain.access import status_parties
from hub.domain.model import S117Status


class Kind(StrEnum):
    MISSING_ON_BODY_LIST = "missing-on-body-list"
    MISSING_ON_HUB_REGISTER = "missing-on-hub-register"
    ENTITLEMENT_DIFFERS = "entitlement-differs"
    RESPONSIBLE_BODY_DIFFERS = "responsible-body-differs"
    DATES_DIFFER = "dates-differ"
    REVIEW_OVERDUE = "review-overdue"


class ItemState(StrEnum):
    OPEN = "open"
    EXPLAINED = "explained"  # the body has said why; still watched, still counted
    FIXED = "fixed"  # the disagreement is gone (a later change, or the body's own list)
    ACCEPTED = "accepted"  # accepted as it is, with a reason: not reported afresh


# States an item may be put in by a person (the body or the hub operator):
# FIXED is only ever set by the hub when the difference disappears.
SETTABLE = frozenset({ItemState.EXPLAINED, ItemState.ACCEPTED, ItemState.OPEN})
LIVE = frozenset({ItemState.OPEN, ItemState.EXPLAINED})

REGISTER_CITATION = "Worcs 19.2-19.6"


@dataclass(frozen=True, slots=True)
class Belief:
    """One row of a body's list: what the body believes about one person."""

    person_key: str  # a keyed hash of the NHS number: never the number itself
    local_id: str | None = None
    entitled: bool = True
    responsible_council: str | None = None
    responsible_icb: str | None = None
    entitlement_start: date | None = None
    entitlement_end: date | None = None
    next_review_due: date | None = None
    funding: bool | None = None  # councils: whether it is funding a package


@dataclass(frozen=True, slots=True)
class Position:
    """What the hub's register says about one person, seen from one body."""

    person_key: str
    person_id: str
    roles: frozenset[str]  # the body's roles: responsible-council, responsible-commissioner, ...
    entitled: bool
    council: str | None
    council_basis: str | None
    commissioner: str | None
    commissioner_basis: str | None
    entitlement_start: date | None
    entitlement_end: date | None
    next_review_due: date | None
    next_review_kind: str | None
    explanation: str
    citation: str

    @property
    def responsible(self) -> bool:
        return bool(self.roles & {"responsible-council", "responsible-commissioner", "coordinating-council"})


@dataclass(frozen=True, slots=True)
class Difference:
    person_key: str
    kind: Kind
    field: str  # which belief disagrees ("entitled", "responsible_council", "entitlement_start", ...)
    body_says: str | None
    hub_says: str | None  # None where the body may not be told
    who_must_act: str  # "body", "trust", "council", "icb"
    action: str  # plain words: which change to send, or what to correct
    explanation: str  # the hub register's reason, where the body may be told it
    citation: str
    person_id: str | None = None  # the hub's id, only where the body has a part in the person
    local_id: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.person_key, self.kind.value, self.field)


def position_for(body: str, person_key: str, status: S117Status) -> Position:
    """The hub's register for one person as it concerns `body` (an ODS or GSS code)."""
    # The one access policy's reading of who is party to the person (hub/domain/access.py); a body
    # named by the code its responsibility was determined as (a sub-ICB before its ICB) is that body.
    parties = status_parties(status)
    roles = {r.value for r in parties.get(body, ())}
    for basis, det in ((status.council_basis_code, status.responsible_council),
                       (status.commissioner_basis_code, status.responsible_commissioner)):
        if body == basis and det is not None and det.org is not None:
            roles |= {r.value for r in parties.get(det.org.code, ())}
    council = status.responsible_council.org.code if status.responsible_council and status.responsible_council.org else None
    icb = (status.responsible_commissioner.org.code
           if status.responsible_commissioner and status.responsible_commissioner.org else None)
    review = status.next_review
    return Position(
        person_key=person_key, person_id=status.person_id, roles=frozenset(roles), entitled=status.entitled,
        council=council, council_basis=status.council_basis_code, commissioner=icb,
        commissioner_basis=status.commissioner_basis_code,
        entitlement_start=status.entitlement_start, entitlement_end=status.entitlement_end,
        next_review_due=review.due_on if review else None, next_review_kind=review.kind if review else None,
        explanation=status.entitlement.explanation, citation=status.entitlement.citation,
    )


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def _same_body(claimed: str | None, org: str | None, basis: str | None) -> bool:
    return claimed is None or claimed in (org, basis)


def compare(body: str, body_kind: str, belief: Belief | None, position: Position | None, as_of: date,
            ) -> list[Difference]:
    """Every disagreement between one row of the body's list (None: the person
    is not on it) and the hub's register for that person (None: the hub holds
    nothing the body has a part in). Pure; the order of the result is stable."""
    if position is not None and not position.roles:
        position = None  # not the body's person: answered exactly as an unknown one
    if belief is None and position is None:
        return []
    if position is None:
        assert belief is not None
        if not belief.entitled:
            return []  # both say not entitled: nothing to reconcile
        return [Difference(
            belief.person_key, Kind.MISSING_ON_HUB_REGISTER, "entitled", "yes", None,
            who_must_act="trust" if body_kind != "trust" else "body",
            action=("the detaining trust must report the qualifying detention and discharge (detained, "
                    "left-hospital), or the body must correct its list if the person is not entitled "
                    "or not its responsibility"),
            explanation="the hub's register holds no entitlement for this person in which this body has a part",
            citation=REGISTER_CITATION, local_id=belief.local_id,
        )]
    base = {"person_id": position.person_id, "local_id": belief.local_id if belief else None}
    if belief is None:
        if not position.entitled or not position.responsible:
            return []
        return [Difference(
            position.person_key, Kind.MISSING_ON_BODY_LIST, "entitled", None, "yes", who_must_act="body",
            action=("add the person to the body's list, or, if aftercare has been ended jointly, send the "
                    "s117-discharge-decided change with both bodies' agreement"),
            explanation=position.explanation, citation=position.citation, **base,
        )]
    out: list[Difference] = []
    if belief.entitled != position.entitled:
        if position.entitled:
            action = ("if the council and NHS commissioner have jointly ended aftercare, send s117-discharge-decided "
                      "(Worcs 16.1); otherwise mark the person entitled on the body's list")
        else:
            action = ("correct the body's list (the register shows entitlement ended or never began), or the "
                      "detaining trust must report the qualifying detention the register lacks")
        out.append(Difference(
            position.person_key, Kind.ENTITLEMENT_DIFFERS, "entitled", "yes" if belief.entitled else "no",
            "yes" if position.entitled else "no", who_must_act="body" if position.entitled else "body",
            action=action, explanation=position.explanation, citation=position.citation, **base,
        ))
        return out  # the other fields only mean something when both agree on entitlement
    if not position.entitled:
        return out
    for fld, claimed, org, basis in (
        ("responsible_council", belief.responsible_council, position.council, position.council_basis),
        ("responsible_icb", belief.responsible_icb, position.commissioner, position.commissioner_basis),
    ):
        if not _same_body(claimed, org, basis):
            out.append(Difference(
                position.person_key, Kind.RESPONSIBLE_BODY_DIFFERS, fld, claimed, org, who_must_act="body",
                action=("if the register's facts are wrong (residence or GP before detention), send the "
                        "correcting change (moved / gp-changed with the date) or raise a dispute (Worcs 15); "
                        "otherwise correct the body's list"),
                explanation=position.explanation, citation=position.citation, **base,
            ))
    for fld, said, held in (
        ("entitlement_start", belief.entitlement_start, position.entitlement_start),
        ("entitlement_end", belief.entitlement_end, position.entitlement_end),
    ):
        if said is not None and said != held:
            out.append(Difference(
                position.person_key, Kind.DATES_DIFFER, fld, _iso(said), _iso(held), who_must_act="body",
                action=("correct the body's list, or send the change that dates the register's entry "
                        "(left-hospital for the start, s117-discharge-decided for the end) with its effective date"),
                explanation=position.explanation, citation=position.citation, **base,
            ))
    body_overdue = belief.next_review_due is not None and belief.next_review_due < as_of
    hub_overdue = position.next_review_due is not None and position.next_review_due < as_of
    if body_overdue != hub_overdue:
        out.append(Difference(
            position.person_key, Kind.REVIEW_OVERDUE, "next_review_due", _iso(belief.next_review_due),
            _iso(position.next_review_due), who_must_act="body",
            action=("send review-completed with the date the review took place, so both lists show the next "
                    "review (Worcs 14.1)" if hub_overdue else
                    "the body's list shows a review overdue that the register has as done or not yet due: "
                    "correct the body's list, or send review-requested"),
            explanation=position.explanation, citation="Worcs 14.1", **base,
        ))
    return out


ROW_REJECTED = "row-rejected"  # an outcome, not a Kind of difference: the person's row could not be read


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row of the body's list rejected for a field other than the NHS number:
    the body did list the person, but what it believes cannot be read, so the
    person is not compared (never "missing from the body's list")."""

    person_key: str
    row: int


def standing(items: Iterable[Item]) -> list[Difference]:
    """The differences that stand for a person whose row was rejected: the live
    or accepted items last found about them, unchanged (the row cannot tell
    whether they still hold), but never `missing-on-body-list` (the body listed
    them, whatever else is wrong with the row)."""
    return [i.difference for i in items
            if i.state is not ItemState.FIXED and i.difference.kind is not Kind.MISSING_ON_BODY_LIST]


@dataclass(frozen=True, slots=True)
class Item:
    """A difference tracked across snapshots."""

    item_id: str
    key: tuple[str, str, str]
    state: ItemState
    difference: Difference
    first_seen: str  # snapshot id
    last_seen: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Tracking:
    opened: tuple[Difference, ...]  # new items to create
    seen_again: tuple[Item, ...]  # live or accepted items still present (difference refreshed)
    reopened: tuple[Item, ...]  # fixed items whose difference came back
    fixed: tuple[Item, ...]  # live items whose difference is gone


def track(existing: Iterable[Item], found: Iterable[Difference], snapshot_id: str) -> Tracking:
    """Fold one snapshot's differences into the body's items. Each key is one
    item: found again it stays as it was (accepted stays accepted), gone it is
    fixed, back after being fixed it opens again."""
    by_key = {i.key: i for i in existing}
    opened: list[Difference] = []
    seen: list[Item] = []
    reopened: list[Item] = []
    present: set[tuple[str, str, str]] = set()
    for d in found:
        if d.key in present:
            continue
        present.add(d.key)
        item = by_key.get(d.key)
        if item is None:
            opened.append(d)
        elif item.state is ItemState.FIXED:
            reopened.append(replace(item, state=ItemState.OPEN, difference=d, last_seen=snapshot_id, reason=None))
        else:
            seen.append(replace(item, difference=d, last_seen=snapshot_id))
    fixed = [replace(i, state=ItemState.FIXED) for k, i in by_key.items() if k not in present and i.state in LIVE]
    return Tracking(tuple(opened), tuple(seen), tuple(reopened), tuple(fixed))


def set_state(item: Item, new: ItemState, reason: str | None) -> Item:
    """A person's decision on an item. Accepting needs a reason; fixed is the hub's to set."""
    if new not in SETTABLE:
        raise ValueError("state: only open, explained or accepted may be set; fixed is set by the hub")
    if new in (ItemState.ACCEPTED, ItemState.EXPLAINED) and not (reason and reason.strip()):
        raise ValueError(f"reason: is required to mark an item {new.value}")
    if item.state is ItemState.FIXED:
        raise ValueError("state: the difference is already fixed")
    return replace(item, state=new, reason=reason.strip() if reason else None)
