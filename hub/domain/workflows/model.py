"""Transfer and dispute cases: states, clocks, transitions (standard library only).

A case is in exactly one state of its kind. Every state that is not final has
one clock, and every clock has an owner: the body that must act before it
runs out (the incoming body for a transfer, the stage's owner for a dispute).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from hub.domain.agreements import EscalationStage

WHOLE = 10_000  # basis points in 100%


class CaseKind(StrEnum):
    TRANSFER = "transfer"
    DISPUTE = "dispute"


class TransferState(StrEnum):
    AWAITING = "awaiting-acknowledgement"  # the incoming body must accept or contest
    OVERDUE = "overdue"  # the acknowledgement period ran out: breach, escalated
    ACCEPTED = "accepted"  # final
    CONTESTED = "contested"  # final for the transfer; a dispute carries on
    # Final: later-arriving history shows the hand-over the case was opened for
    # never happened (the same person, role and bodies: no such step in the
    # history as corrected). The hub withdraws it; nobody has to act.
    WITHDRAWN = "withdrawn"


class DisputeState(StrEnum):
    OPEN = "open"  # at the first stage of the area's procedure
    ESCALATED = "escalated"  # at a later stage
    RESOLVED = "resolved"  # final: a body found responsible from a date
    # Final: the register change that raised it (a source's `dispute-raised`)
    # was retracted as recorded in error: there was no dispute to resolve. The
    # hub withdraws it; nobody has to act, and its interim arrangements end.
    WITHDRAWN = "withdrawn"


FINAL_STATES = frozenset({TransferState.ACCEPTED, TransferState.CONTESTED, TransferState.WITHDRAWN,
                          DisputeState.RESOLVED, DisputeState.WITHDRAWN})


class Action(StrEnum):
    OPEN = "open"
    ACCEPT = "accept"
    CONTEST = "contest"
    RAISE = "raise"
    AGREE_INTERIM = "agree-interim"
    ESCALATE = "escalate"
    AGREE_RESOLUTION = "agree-resolution"  # a party proposes or agrees an outcome; the last agreement resolves
    RESOLVE = "resolve"
    BREACH = "breach"  # the clock ran out
    REMIND = "remind"  # the clock runs out soon (a message, not a transition)
    WITHDRAW = "withdraw"  # the hub: later history shows the transfer (or the dispute) did not happen
    # The hub: the source's dispute-resolved change that resolved the dispute
    # was retracted as recorded in error, so the dispute is open again.
    REOPEN = "reopen"
    # The hub: two NHS numbers of the person were merged (PDS, hub/merges.py) and the case, opened for the
    # superseded number's person, now belongs to the retained number's (its state unchanged).
    MERGE = "merge"
    # The hub: that merge was made in error and reversed (hub/unmerges.py): the case is the superseded
    # number's person's again (its state unchanged).
    UNMERGE = "unmerge"


class Actor(StrEnum):
    """Roles that may take an action (an org code is matched to one of them)."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"
    PARTY = "party"
    CLOCK = "clock"  # the hub's clock scanner
    REGISTER = "register"  # the register itself (a rule moved responsibility, or later history shows it did not)
    # The body that determines a dispute at the final stage of the case's
    # procedure (between NHS commissioners: NHS England arbitration, Worcs
    # 15.5, or ICET, Bucks 'Management of Disputes'; between councils: the
    # Secretary of State, Worcs 4.3.4, 15.4): not a party and not an
    # organisation on the hub, so its determination is recorded for it by the
    # hub operator.
    DETERMINER = "determiner"


CLOCK_ACTOR = "hub:clock"
REGISTER_ACTOR = "hub:register"
DETERMINATION_ACTOR = "hub:determination"  # the final stage's determination, recorded by the hub operator
# Why a withdrawn transfer was withdrawn: the hub's words, never a body's (no
# personal data), shown as the Task's statusReason and in the case's history.
WITHDRAWN_REASON = "later history shows responsibility did not change hands"
# Why a transfer was withdrawn when later history moves its hand-over (the
# same role and bodies) to another date: the case for that date supersedes it.
SUPERSEDED_REASON = "later history shows the hand-over on another date; the case for that date supersedes this one"
# Why a dispute raised by a register change was withdrawn (the same: the hub's
# words, shown as the Task's statusReason, in the case's history and told to
# the parties).
DISPUTE_WITHDRAWN_REASON = ("the dispute-raised register change that opened this dispute was retracted as recorded "
                            "in error: there is no dispute to resolve")
# Why a dispute resolved on the register was reopened (the same).
DISPUTE_REOPENED_REASON = ("the dispute-resolved register change that resolved this dispute was retracted as "
                           "recorded in error: the dispute is open again")

# Who the hub's workflows are when they record a register change (the dispute
# changes a case's transition implies: hub/workflows/service.py) and publish
# their events (the bus header `source`): the rules engine takes such a record
# to speak for every party (hub/domain/rules/engine.py HUB_SOURCES), and the
# dispatcher tells such an event as the history stood when it was published.
WORKFLOW_SOURCE = "hub:workflows"

# A dispute raised through the API (POST /v1/disputes) gets an id of this form
# from the workflows (one opened by a contest: "DSP-" and 8 hex digits). The
# other bodies such a dispute names are named by the raiser, not related to
# the person: hub/domain/access.py tells them by the id alone, from any status.
# A register source choosing an id of this form only narrows its own
# dispute's parties to reads.
_API_DISPUTE_ID = re.compile(r"DSP-[0-9a-f]{12}")


# A run of exactly ten digits, as the log redactor finds an NHS number (hub/ids.py): an id holding one
# would be masked in the logs, so it is drawn again (about 1 in 60).
_BARE_TEN = re.compile(r"(?<![0-9])[0-9]{10}(?![0-9])")


def new_api_dispute_id() -> str:
    while True:
        digits = uuid.uuid4().hex[:12]
        if not _BARE_TEN.search(digits):
            return f"DSP-{digits}"


def raised_through_api(dispute_id: str) -> bool:
    return _API_DISPUTE_ID.fullmatch(dispute_id) is not None


@dataclass(frozen=True, slots=True)
class Clock:
    owner: str  # an org code, or a named body from the area agreement ("ICS", "JMG")
    started_on: date
    due_on: date
    purpose: str
    citation: str


@dataclass(frozen=True, slots=True)
class Interim:
    """Who leads and who pays what while a dispute is open."""

    lead_body: str
    shares: tuple[tuple[str, int], ...]  # (org code, basis points), over the parties
    agreed: bool  # False: a default or a proposal awaiting the other party
    proposed_by: str
    from_date: date
    citation: str

    def share_of(self, org: str) -> int:
        return dict(self.shares).get(org, 0)

    def same_terms(self, other: Interim) -> bool:
        return self.lead_body == other.lead_body and dict(self.shares) == dict(other.shares)


@dataclass(frozen=True, slots=True)
class Resolution:
    """An outcome proposed by a party and the parties that agreed it so far.

    A dispute is resolved by agreement when every party has agreed the same
    outcome (Worcs 15.5 local resolution; 4.4.8, 15.6 commissioners; 15.4
    councils): the proposer first, the others by sending the same terms."""

    responsible: str
    responsible_from: date
    proposed_by: str
    proposed_on: date
    agreed_by: tuple[str, ...]  # the proposer first

    def same_terms(self, responsible: str, responsible_from: date) -> bool:
        return self.responsible == responsible and self.responsible_from == responsible_from


@dataclass(frozen=True, slots=True)
class Case:
    case_id: str
    kind: CaseKind
    person_id: str
    state: str  # a TransferState or DisputeState value
    parties: tuple[str, ...]
    opened_on: date
    area: str  # the area agreement's name the clocks come from
    clock: Clock | None
    # Transfers: which responsibility moved and between whom, and why.
    role: str = ""  # "council" or "commissioner"
    outgoing: str | None = None
    incoming: str | None = None
    basis: str = ""  # the rule that moved it, e.g. "Worcs 4.3.3 ..."
    dispute_id: str | None = None  # transfer: the dispute its contest opened; dispute: its register id
    # Transfers: the register change whose event told the hand-over ("" for a
    # case opened before it was kept): only history recorded after it can
    # show the hand-over did not happen (a withdrawal, hub/workflows/service.py).
    opened_by_change: str = ""
    # Transfers: the date of the hand-over the case was opened for (the
    # effective date of the step of the history, `occurred_on` of the event
    # that told it; None for a case opened before it was kept, until the
    # workflows date it on first use from the event that opened it:
    # hub/workflows/service.py `_dated`). One hand-over
    # is (role, outgoing, incoming, handover_on): a case whose hand-over the
    # history as corrected holds on another date is superseded.
    handover_on: date | None = None
    # Transfers withdrawn because the hand-over moved: the date it is on in
    # the history as corrected (a case of its own tells it).
    superseded_by_handover_on: date | None = None
    # Disputes.
    dispute_kind: str = ""  # "council" or "commissioner"
    raised_by: str = ""
    reason: str = ""
    transfer_case_id: str | None = None
    stages: tuple[EscalationStage, ...] = ()
    stage_index: int = 0
    interims: tuple[Interim, ...] = ()  # in force in turn; the last one applies now
    proposal: Interim | None = None  # interim terms proposed and not yet agreed
    resolution: Resolution | None = None  # an outcome proposed and not yet agreed by every party
    determined_by: str = ""  # resolved by the final stage's determination: that body, and its reference
    responsible: str | None = None
    responsible_from: date | None = None
    resolved_on: date | None = None
    # Resolved by a source's `dispute-resolved` register change: its change
    # id (a retraction of that change reopens the case: `machine.reopen`).
    resolved_by_change: str = ""
    # Reopened (the resolving change retracted): the day, for the Task's note.
    reopened_on: date | None = None
    # Withdrawn (DisputeState.WITHDRAWN): the day the hub withdrew it; its
    # agreed interim arrangements are in force to the day before (money:
    # hub/domain/money/responsibility.py `interim_spans`), as on resolution.
    withdrawn_on: date | None = None
    breaches: tuple[str, ...] = ()  # stage names (or "acknowledgement") whose clock ran out
    reminded: tuple[str, ...] = ()  # clock keys already reminded
    # Opened for the hub person whose NHS number a merge superseded (hub/merges.py): that person's id; the
    # case is the retained person's now (`person_id`). None for a case opened for its person.
    merged_from: str | None = None
    # Open cases of the same kind for the same bodies (a transfer's role, outgoing and incoming; a dispute's
    # kind and parties) that a merge made one person's: the other cases' ids. Both are kept (each was told
    # to its parties, who may have acted on it); the parties settle which stands (hub/workflows/person_merge.py).
    merge_duplicates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Transition:
    case_id: str
    action: Action
    from_state: str | None
    to_state: str
    actor: str  # org code, or hub:clock / hub:register
    on: date
    citation: str
    explanation: str


class WorkflowRefusal(Exception):
    """An illegal transition: `status` (403/409/422) and the `rule` it broke."""

    def __init__(self, status: int, rule: str, detail: str, citation: str) -> None:
        super().__init__(detail)
        self.status, self.rule, self.detail, self.citation = status, rule, detail, citation


# The request field each bad-terms refusal (422) is about, so the problem
# names the field as every other 422 does (`errors`: field and reason).
REFUSAL_FIELDS = {
    "reason-required": "reason", "two-parties": "parties", "party-not-a-council": "parties",
    "party-not-a-commissioner": "parties", "lead-body-not-a-party": "lead_body", "share-for-non-party": "shares",
    "shares-must-total-100": "shares", "responsible-not-a-party": "responsible",
    "responsible-from-in-future": "responsible_from", "determination-required": "determination",
}


def refusal_errors(rule: str, detail: str) -> list[dict[str, str]] | None:
    """`errors` for a bad-terms refusal: the field its rule is about, and why."""
    field = REFUSAL_FIELDS.get(rule)
    return None if field is None else [{"field": field, "reason": detail}]
