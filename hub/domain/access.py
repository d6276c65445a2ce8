"""The one access policy: who may record a change about a person, and who may read them.

Standard library only. Access follows a relationship the domain can name,
never the mere fact of having written before ("writing never makes a reader"):

Write roles (evaluated against the person's status at the moment of recording):

* ``hospital-trust``: the trust that runs the hospital (by ODS: a site code's
  first three characters are its trust) named by the detention it reports.
  The only role that may report a first detention of someone new.
* ``care-provider``: a trust that runs a hospital where the person was
  detained or stayed (a detention / section / hospital change names it).
* ``responsible-council``, ``responsible-commissioner``, ``coordinating-council``:
  the bodies the rules currently name.
* ``dispute-party``: a party to an open dispute about the person recorded on
  the register by a source (a trust, council or commissioner the policy let
  write it), or opened by a contest of a transfer (both bodies the rules
  named); not one raised through the API (``named-dispute-party``).

Read-only while a dispute is open:

* ``named-dispute-party``: a body named by another in a dispute raised
  through the hub's workflows (``POST /v1/disputes``). It may see the person
  so it can answer the dispute; being named gives it no write, and no read
  once the dispute is resolved (not a past party for it either).

Raising a dispute through the workflows (``decide_raise_dispute``) needs a
current relationship: responsible or coordinating on the day, or the
incoming or outgoing body of an open transfer case (``transfer-body``).
Having been a party to a closed case is not one.

Trust-only change types (detentions, sections, leave, leaving hospital, CTOs)
are the detaining trust's to report: a council or commissioner key is refused
them on every channel. Every refusal names its rule; a refusal that depends
on who the person is (not on the register, or not the caller's) has one rule
and one text, so an answer never tells whether someone is on the register.

Read roles: the write roles' bodies, the named dispute parties and the
care-provider trust now, or a body that was responsible, coordinating or a
dispute party on the ``as_of`` date asked (its own period, nothing later),
or a body the hub notified about the person up to the day it was last
notified. A read also needs a
data-sharing agreement in force naming the caller: it gets only the field
groups the agreement grants (``hub/sharing.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from hub.domain.model import ChangeType, DisputeKind, RegisterChange, S117Status
from hub.domain.workflows.model import raised_through_api


class Role(StrEnum):
    HOSPITAL_TRUST = "hospital-trust"
    CARE_PROVIDER = "care-provider"
    RESPONSIBLE_COUNCIL = "responsible-council"
    RESPONSIBLE_COMMISSIONER = "responsible-commissioner"
    COORDINATING_COUNCIL = "coordinating-council"
    DISPUTE_PARTY = "dispute-party"
    NAMED_DISPUTE_PARTY = "named-dispute-party"  # reads only, while open: named in a dispute raised through the API
    TRANSFER_BODY = "transfer-body"  # raises disputes only: incoming / outgoing body of an open transfer case
    PAST_PARTY = "past-party"  # reads only: a party on the as_of date asked
    NOTIFIED = "notified"  # reads only: told of the person up to a date
    HUB_OPERATOR = "hub-operator"
    HUB_WORKFLOW = "hub-workflow"  # the hub's transfer / dispute workflows (hub/workflows), for a party it checked


class Rule(StrEnum):
    """Why a decision was made: refusals name one of these."""

    ALLOWED = "allowed"
    TRUST_ONLY_CHANGE_TYPE = "trust-only-change-type"
    HOSPITAL_NOT_RUN_BY_SOURCE = "hospital-not-run-by-source"
    NO_RELATIONSHIP = "no-relationship"  # also: not on the register (one answer for both)
    NO_AGREEMENT = "no-agreement"  # reads: no agreement in force grants a field group
    KIND_MAY_NOT_WRITE = "kind-may-not-write"
    CHANNEL_NOT_FOR_KIND = "channel-not-for-kind"
    KIND_MAY_NOT_MERGE = "kind-may-not-merge"  # NHS number merges: trusts (their PAS) and the hub operator


# The change types a council's case system reports (adapters/council_files/events.py
# maps its EVENT codes onto exactly these; a test keeps the two equal).
COUNCIL_CHANGE_TYPES: frozenset[ChangeType] = frozenset({
    ChangeType.MOVED, ChangeType.GP_CHANGED, ChangeType.PLACEMENT_STARTED, ChangeType.REVIEW_COMPLETED,
    ChangeType.REVIEW_REQUESTED, ChangeType.DISCHARGE_CONSIDERED, ChangeType.S117_DISCHARGE_DECIDED,
    ChangeType.DISPUTE_RAISED, ChangeType.DISPUTE_RESOLVED, ChangeType.DIED,
})
# Detentions, sections, leave, leaving hospital, CTOs: the detaining trust's.
TRUST_ONLY_CHANGE_TYPES: frozenset[ChangeType] = frozenset(ChangeType) - COUNCIL_CHANGE_TYPES
# Changes whose hospital names the trust providing care.
_HOSPITAL_CHANGES = frozenset({ChangeType.DETAINED, ChangeType.SECTION_CHANGED, ChangeType.CTO_RECALLED,
                               ChangeType.S17_LEAVE_ENDED})

WRITER_KINDS = frozenset({"trust", "council", "icb"})
# Which kinds of body each write channel is for: MLLP carries a trust's ADT
# feed, council files a council's case-system export; REST and FHIR anyone's.
CHANNEL_KINDS: dict[str, frozenset[str]] = {
    "rest": WRITER_KINDS, "fhir": WRITER_KINDS, "mllp": frozenset({"trust"}), "file": frozenset({"council"}),
}
# The hub's own workflows record the dispute changes a transition implies
# (hub/workflows/service.py), after checking the acting body is a party.
WORKFLOW_CHANNEL = "workflow"
WORKFLOW_CHANGE_TYPES = frozenset({ChangeType.DISPUTE_RAISED, ChangeType.DISPUTE_RESOLVED})
# Roles that may record each class of change about someone already on the register.
TRUST_ONLY_WRITE_ROLES = frozenset({Role.CARE_PROVIDER})
COUNCIL_TYPE_WRITE_ROLES = frozenset({
    Role.CARE_PROVIDER, Role.RESPONSIBLE_COUNCIL, Role.RESPONSIBLE_COMMISSIONER, Role.COORDINATING_COUNCIL,
    Role.DISPUTE_PARTY,
})
# Roles that may raise a dispute through the workflows (with an open transfer
# case's incoming and outgoing bodies): a relationship on the day.
RAISE_DISPUTE_ROLES = frozenset({Role.RESPONSIBLE_COUNCIL, Role.RESPONSIBLE_COMMISSIONER, Role.COORDINATING_COUNCIL})
# Read only while the dispute is open: not a past party afterwards.
_OPEN_ONLY_ROLES = frozenset({Role.NAMED_DISPUTE_PARTY})

TEXTS: dict[Rule, str] = {
    Rule.TRUST_ONLY_CHANGE_TYPE: ("a council or commissioner does not report detentions, sections, leave, leaving "
                                  "hospital or community treatment orders: the detaining trust reports them"),
    Rule.HOSPITAL_NOT_RUN_BY_SOURCE: ("the hospital named is not run by the reporting trust (ODS: a site belongs to "
                                      "the trust whose code it starts with): only that trust may report it"),
    # One text whether the person is unknown or someone else's: no membership oracle.
    Rule.NO_RELATIONSHIP: ("no person this source may report on or see matches: the hub records a change only "
                           "from a body with a role in the person's care (the detaining trust, the responsible "
                           "or coordinating council or commissioner, a party to an open dispute recorded on the "
                           "register or opened by a contest)"),
    Rule.NO_AGREEMENT: "no person this source may report on or see matches",
    Rule.KIND_MAY_NOT_WRITE: "only trusts, councils and commissioners record register changes",
    Rule.CHANNEL_NOT_FOR_KIND: "this channel is not for this kind of body (MLLP: trusts; council files: councils)",
    Rule.KIND_MAY_NOT_MERGE: ("only a trust (its PAS reports PDS merges) or the hub operator merges NHS numbers"),
}


@dataclass(frozen=True, slots=True)
class Caller:
    org_code: str
    org_kind: str  # trust, council, icb, hub-operator, ...
    admin: bool = False


@dataclass(frozen=True, slots=True)
class PersonFacts:
    """What the policy needs to know about one person on the register."""

    care_trusts: frozenset[str]  # trusts running a hospital of a detention / stay
    roles_by_org: dict[str, frozenset[Role]]  # responsible / coordinating / dispute party now

    def roles_of(self, caller: Caller) -> frozenset[Role]:
        roles = set(self.roles_by_org.get(caller.org_code, frozenset()))
        if caller.org_kind == "trust" and caller.org_code in self.care_trusts:
            roles.add(Role.CARE_PROVIDER)
        return frozenset(roles)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: Rule
    role: Role | None = None

    @property
    def text(self) -> str:
        return TEXTS.get(self.rule, "allowed")


# The body holding a dispute party's duties on a day (hub/domain/succession.py
# `duty_holder`, with the reference data bound): (party, kind, day) -> code or None.
HolderOf = Callable[[str, DisputeKind, date], "str | None"]


def status_parties(status: S117Status, holder_of: HolderOf | None = None) -> dict[str, frozenset[Role]]:
    """The bodies the status names, with their roles. The parties of an open
    dispute raised through the API (its id says so) are named dispute parties
    (read only); a raiser's own relationship gives it its other roles. With
    `holder_of`, a party's role is also the body's holding the party's duties
    on the status's day (a CCG party's ICB since 1 July 2022, a merged
    council's successor), as the rules engine counts that body's outcome for
    the party (`_speaks_for_party`): it may record it."""
    out: dict[str, set[Role]] = {}
    for det, role in ((status.responsible_council, Role.RESPONSIBLE_COUNCIL),
                      (status.responsible_commissioner, Role.RESPONSIBLE_COMMISSIONER),
                      (status.coordinating_council, Role.COORDINATING_COUNCIL)):
        if det is not None and det.org is not None:
            out.setdefault(det.org.code, set()).add(role)
    for dispute in status.open_disputes:
        role = Role.NAMED_DISPUTE_PARTY if raised_through_api(dispute.dispute_id) else Role.DISPUTE_PARTY
        for party in dispute.parties:
            out.setdefault(party, set()).add(role)
            holder = holder_of(party, dispute.kind, status.as_of) if holder_of is not None else None
            if holder is not None and holder != party:
                out.setdefault(holder, set()).add(role)
    return {k: frozenset(v) for k, v in out.items()}


def person_facts(
    status: S117Status | None, history: Iterable[RegisterChange], trust_of: Callable[[str], str | None],
    up_to: date | None = None, holder_of: HolderOf | None = None,
) -> PersonFacts:
    """Facts from the person's status and history (changes effective after
    `up_to`, if given, are not counted towards the trusts providing care;
    `holder_of`: see `status_parties`)."""
    trusts = set()
    for c in history:
        if c.hospital_ods and c.change_type in _HOSPITAL_CHANGES and (up_to is None or c.effective_date <= up_to):
            trust = trust_of(c.hospital_ods)
            if trust:
                trusts.add(trust)
    return PersonFacts(frozenset(trusts), status_parties(status, holder_of) if status is not None else {})


def decide_write(
    caller: Caller, change_type: ChangeType, hospital_trust: str | None, hospital_named: bool,
    person: PersonFacts | None, channel: str = "rest",
) -> Decision:
    """May `caller` record a change of `change_type` about the person, sent on `channel`?

    `hospital_trust`: the trust running the hospital the change names (None
    if it names none or the site is unknown); `hospital_named`: whether it
    names one. `person`: None when the person is not on the register."""
    if caller.admin:
        return Decision(True, Rule.ALLOWED, Role.HUB_OPERATOR)
    if caller.org_kind == "hub" and channel == WORKFLOW_CHANNEL:
        if change_type in WORKFLOW_CHANGE_TYPES:
            return Decision(True, Rule.ALLOWED, Role.HUB_WORKFLOW)
        return Decision(False, Rule.KIND_MAY_NOT_WRITE)
    if caller.org_kind not in WRITER_KINDS:
        return Decision(False, Rule.KIND_MAY_NOT_WRITE)
    # A corrected input resubmitted from quarantine keeps its channel's rules.
    if caller.org_kind not in CHANNEL_KINDS.get(channel.removeprefix("resubmit-"), frozenset()):
        return Decision(False, Rule.CHANNEL_NOT_FOR_KIND)
    if change_type in TRUST_ONLY_CHANGE_TYPES:
        if caller.org_kind != "trust":
            return Decision(False, Rule.TRUST_ONLY_CHANGE_TYPE)
        if hospital_named and hospital_trust != caller.org_code:
            return Decision(False, Rule.HOSPITAL_NOT_RUN_BY_SOURCE)
        if change_type is ChangeType.DETAINED:
            # A (first or new) detention: the trust running the hospital, and only it.
            if hospital_named:
                return Decision(True, Rule.ALLOWED, Role.HOSPITAL_TRUST)
            return Decision(False, Rule.HOSPITAL_NOT_RUN_BY_SOURCE)
        roles = person.roles_of(caller) if person is not None else frozenset()
        role = _first(roles & TRUST_ONLY_WRITE_ROLES)
        return Decision(True, Rule.ALLOWED, role) if role else Decision(False, Rule.NO_RELATIONSHIP)
    roles = person.roles_of(caller) if person is not None else frozenset()
    role = _first(roles & COUNCIL_TYPE_WRITE_ROLES)
    return Decision(True, Rule.ALLOWED, role) if role else Decision(False, Rule.NO_RELATIONSHIP)


def decide_merge(caller: Caller, people: Iterable[PersonFacts], channel: str = "rest") -> Decision:
    """May `caller` merge two NHS numbers (hub/merges.py)? `people`: the facts of each hub person the
    merge joins (those of the two numbers on the register). The hub operator always; a trust (REST or
    MLLP) with a role for every one of them, at least one: a number pair the register does not hold, or
    a person the trust has no role for, is the one no-relationship refusal (no membership oracle). Any
    other kind of body: refused by kind."""
    if caller.admin:
        return Decision(True, Rule.ALLOWED, Role.HUB_OPERATOR)
    if caller.org_kind != "trust":
        return Decision(False, Rule.KIND_MAY_NOT_MERGE)
    if caller.org_kind not in CHANNEL_KINDS.get(channel, frozenset()):
        return Decision(False, Rule.CHANNEL_NOT_FOR_KIND)
    chosen: Role | None = None
    found = False
    for person in people:
        found = True
        role = _first(person.roles_of(caller))
        if role is None:
            return Decision(False, Rule.NO_RELATIONSHIP)
        chosen = chosen or role
    return Decision(True, Rule.ALLOWED, chosen) if found else Decision(False, Rule.NO_RELATIONSHIP)


def decide_retract(caller: Caller, recorded_by_org: str | None) -> Decision:
    """May `caller` retract a register change as recorded in error (hub/retraction.py), or reverse such a
    retraction made in error (hub/unretractions.py)? `recorded_by_org`: the organisation whose client
    recorded the change (None: no such change, or none recorded it: the hub's own record for a case). The
    hub operator; that organisation (any of its keys). Anyone else, and an unknown change, the one
    no-relationship refusal (answered as for an unknown change: no oracle of what others recorded)."""
    if caller.admin:
        return Decision(True, Rule.ALLOWED, Role.HUB_OPERATOR)
    if recorded_by_org is not None and caller.org_code == recorded_by_org:
        return Decision(True, Rule.ALLOWED)
    return Decision(False, Rule.NO_RELATIONSHIP)


def decide_unmerge(caller: Caller, merged_by_org: str | None) -> Decision:
    """May `caller` reverse a merge of two NHS numbers made in error (hub/unmerges.py)? `merged_by_org`: the
    organisation whose client recorded the merge (None: no such merge). The hub operator; that
    organisation (any of its keys). Anyone else, and an unknown merge, the one no-relationship refusal
    (answered as for an unknown merge: no oracle of what others merged)."""
    if merged_by_org is None:
        return Decision(False, Rule.NO_RELATIONSHIP)
    if caller.admin:
        return Decision(True, Rule.ALLOWED, Role.HUB_OPERATOR)
    if caller.org_code == merged_by_org:
        return Decision(True, Rule.ALLOWED)
    return Decision(False, Rule.NO_RELATIONSHIP)


def decide_merge_read(caller: Caller, merged_by_org: str | None) -> Decision:
    """May `caller` read a merge of two NHS numbers (GET /v1/persons/merges/{id}: hub/merge_reads.py)? Who
    may reverse it (`decide_unmerge`): the hub operator and the organisation whose client recorded it, whose
    own act it is. No one else, not even a council or ICB told of either person: the record names both hub
    persons (after a reversal, a patient such a body was never told of), their NHS numbers and why it was
    reversed; what such a body needs, the corrected position, it was told. Anyone else, and an unknown
    merge: the one no-relationship refusal (answered as for an unknown merge)."""
    return decide_unmerge(caller, merged_by_org)


def decide_read(
    caller: Caller, now: PersonFacts | None, at_as_of: PersonFacts | None, as_of_given: bool,
    as_of: date, last_notified_on: date | None,
) -> Decision:
    """May `caller` read the person (at `as_of`)? `now`: the facts today;
    `at_as_of`: the facts on the date asked (when one was given). The
    agreement check (field groups) comes after, in the service."""
    if now is None:
        return Decision(False, Rule.NO_RELATIONSHIP)
    if caller.admin:
        return Decision(True, Rule.ALLOWED, Role.HUB_OPERATOR)
    role = _first(now.roles_of(caller))
    if role:
        return Decision(True, Rule.ALLOWED, role)
    if as_of_given:
        if at_as_of is not None and _first(at_as_of.roles_of(caller) - _OPEN_ONLY_ROLES):
            return Decision(True, Rule.ALLOWED, Role.PAST_PARTY)
        if last_notified_on is not None and as_of <= last_notified_on:
            return Decision(True, Rule.ALLOWED, Role.NOTIFIED)
    return Decision(False, Rule.NO_RELATIONSHIP)


def decide_raise_dispute(caller: Caller, person: PersonFacts | None, transfer_bodies: Iterable[str]) -> Decision:
    """May `caller` raise a dispute about the person through the workflows?

    Only with a relationship on the day: responsible or coordinating
    (`person`: the facts today), or the incoming or outgoing body of one of
    the person's open transfer cases (`transfer_bodies`; contesting the
    transfer opens a dispute too). A former body, a past party, a body named
    in an open dispute, or one unknown to the person: the one no-relationship
    refusal (the API answers as for an unknown person)."""
    if person is None:
        return Decision(False, Rule.NO_RELATIONSHIP)
    if caller.admin:
        return Decision(True, Rule.ALLOWED, Role.HUB_OPERATOR)
    role = _first(person.roles_by_org.get(caller.org_code, frozenset()) & RAISE_DISPUTE_ROLES)
    if role:
        return Decision(True, Rule.ALLOWED, role)
    if caller.org_code in set(transfer_bodies):
        return Decision(True, Rule.ALLOWED, Role.TRANSFER_BODY)
    return Decision(False, Rule.NO_RELATIONSHIP)


_ROLE_ORDER = tuple(Role)


def _first(roles: Iterable[Role]) -> Role | None:
    s = set(roles)
    for r in _ROLE_ORDER:
        if r in s:
            return r
    return None
