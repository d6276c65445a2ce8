"""The canonical S117 register model: what every adapter translates into.

Standard library only. A register change is an imperative fact reported by a
source (a trust, a council system); the rules engine folds a person's changes,
in effective-date order, into an S117 status. Personal details (NHS number,
name, date of birth, address) live in the store, never here: the rules need
none of them, and keeping them out means no rule can leak them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class ChangeType(StrEnum):
    """What happened to the person. Values are the wire codes in contracts/."""

    DETAINED = "detained"  # admitted and detained (also a re-detention)
    SECTION_CHANGED = "section-changed"  # e.g. s2 converted to s3
    S17_LEAVE_STARTED = "s17-leave-started"
    S17_LEAVE_ENDED = "s17-leave-ended"
    SECTION_ENDED_STAYED_INFORMALLY = "section-ended-stayed-informally"
    LEFT_HOSPITAL = "left-hospital"
    CTO_STARTED = "cto-started"
    CTO_RECALLED = "cto-recalled"
    CTO_REVOKED = "cto-revoked"
    CTO_ENDED = "cto-ended"
    MOVED = "moved"  # change of ordinary / usual residence
    GP_CHANGED = "gp-changed"
    PLACEMENT_STARTED = "placement-started"
    REVIEW_COMPLETED = "review-completed"
    REVIEW_REQUESTED = "review-requested"
    DISCHARGE_CONSIDERED = "discharge-considered"
    S117_DISCHARGE_DECIDED = "s117-discharge-decided"
    DISPUTE_RAISED = "dispute-raised"
    DISPUTE_RESOLVED = "dispute-resolved"
    DIED = "died"


class DischargeReason(StrEnum):
    """Reasons recorded on an s117 discharge decision.

    The first is the only lawful basis (Worcs 16.1); the rest are the reasons
    the policies forbid as the sole ground (Worcs 16.9; Bucks list).
    """

    NO_LONGER_NEEDS_SERVICES = "no-longer-needs-services"
    REFUSED_PLAN = "refused-plan"
    DISCHARGED_FROM_SPECIALIST_SERVICES = "discharged-from-specialist-services"
    TIME_PASSED = "time-passed"
    DEPRIVED_OF_LIBERTY_MCA = "deprived-of-liberty-mca"
    RETURNED_INFORMALLY_OR_S2 = "returned-informally-or-s2"
    NO_LONGER_ON_CTO_OR_S17_LEAVE = "no-longer-on-cto-or-s17-leave"


class DisputeKind(StrEnum):
    COUNCIL = "council"  # between local authorities (ordinary residence)
    COMMISSIONER = "commissioner"  # between CCGs / ICBs


@dataclass(frozen=True, slots=True)
class DischargeDecision:
    council_agrees: bool
    commissioner_agrees: bool
    reasons: tuple[DischargeReason, ...]
    participants: tuple[str, ...]  # roles, e.g. "care coordinator", "AMHP"
    person_involved: bool


@dataclass(frozen=True, slots=True)
class Dispute:
    dispute_id: str
    kind: DisputeKind
    parties: tuple[str, ...]  # org codes (GSS for councils, ODS for commissioners)
    # Set on DISPUTE_RESOLVED: the body found responsible.
    resolved_responsible: str | None = None


@dataclass(frozen=True, slots=True)
class RegisterChange:
    """One canonical register change, as the rules engine sees it."""

    change_id: str  # hub-assigned
    person_id: str  # hub-assigned, never the NHS number
    change_type: ChangeType
    effective_date: date
    # When the hub (or the register keeper) had notice of the change: the
    # 5-working-day register service level runs from here (Worcs 19.6).
    notified_on: date
    recorded_on: date
    source: str = ""
    # The source's own identifier of the message: with `source`, the last
    # tie-break of the same-day order (hub/domain/rules/precedence.py), so
    # the order never depends on arrival or on the hub's random change id.
    source_message_id: str = ""
    legal_status_code: str | None = None  # England MHA legal status code, e.g. "03"
    # Code 31 (CP(I)A 1964) qualifies only when the order made was a hospital
    # order: "hospital-order" or anything else.
    order_type: str | None = None
    hospital_ods: str | None = None
    gp_practice_ods: str | None = None
    residence_la_gss: str | None = None  # council of ordinary residence
    no_fixed_abode: bool = False
    discharge_destination_la_gss: str | None = None
    from_prison: bool = False
    discharge: DischargeDecision | None = None
    dispute: Dispute | None = None
    review_reason: str | None = None
    already_receiving_s117_from: str | None = None  # ODS of commissioner, if asserted
    # A detention of a child or young person (hub/domain/children.py; the rules engine reads neither):
    # how long the trust expects the stay to last, in weeks (12 or more: the Children Act 1989 s85 notice
    # goes at admission, Worcs 6.1), and the council maintaining the person's EHC plan (told on
    # admission, Worcs 6.4).
    expected_stay_weeks: int | None = None
    ehc_plan_la_gss: str | None = None
    # On a move: the council whose area covers the place of ordinary residence
    # the responsible council was determined by, when that council's area has
    # since been split between several successors (a county split: the hub
    # cannot tell which from the code it holds; hazard H-03). One of them.
    residence_before_detention_la_gss: str | None = None


@dataclass(frozen=True, slots=True)
class Org:
    """An organisation a determination names."""

    code: str  # GSS code for councils, ODS code for NHS bodies
    name: str
    kind: str  # "council", "icb", "sub-icb", "ccg", "nhs-england", "trust"


@dataclass(frozen=True, slots=True)
class Determination:
    """A rule's answer with the reason for it, citing the policy paragraph."""

    org: Org | None
    explanation: str
    citation: str
    # Which rule produced it (e.g. "cto-blocks-discharge"): refusals name it.
    rule: str = ""


@dataclass(frozen=True, slots=True)
class ReviewDue:
    due_on: date
    kind: str  # "first", "annual", "new-placement", "unscheduled"
    explanation: str
    citation: str
    # What set the review off, and when: "left-hospital", "last-review",
    # "placement-started", "moved", "review-requested", "discharge-considered".
    trigger: str = ""
    triggered_on: date | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    on: date
    change_id: str
    text: str


@dataclass(frozen=True, slots=True)
class S117Status:
    person_id: str
    as_of: date
    entitled: bool
    entitlement: Determination  # org is None; explanation says why / why not
    entitlement_start: date | None = None
    entitlement_end: date | None = None
    detained: bool = False
    in_hospital: bool = False
    on_cto: bool = False
    qualifying_section_code: str | None = None
    detention_start: date | None = None
    responsible_council: Determination | None = None
    responsible_commissioner: Determination | None = None
    coordinating_council: Determination | None = None
    next_review: ReviewDue | None = None  # the earliest of pending_reviews
    # Every review owed and not yet held, earliest first (Worcs 14.1-14.4).
    pending_reviews: tuple[ReviewDue, ...] = ()
    open_disputes: tuple[Dispute, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    refused_discharges: tuple[Determination, ...] = ()
    # A lawful s117 discharge decision one body recorded, awaiting the other
    # body's own agreement (Worcs 16.1): entitlement continues meanwhile.
    pending_discharge: Determination | None = None
    on_s17_leave: bool = False
    discharged_from_s117: bool = False
    died: bool = False
    # The code each responsibility was determined as (before succession to the
    # body in place on as_of): a change here is a transfer, a change only in
    # the resolved org is a succession (e.g. CCG -> ICB on 1 July 2022).
    council_basis_code: str | None = None
    commissioner_basis_code: str | None = None
    # While no council is responsible because a re-detention with no place of
    # residence before it ended the responsible council's duty (Worcs 4.3.3)
    # and the area discharged to is not yet known (Bucks "If, exceptionally,
    # no place of residence"; the hospital's council coordinates meanwhile):
    # that council and its basis, the outgoing body of the hand-over to the
    # council then determined (hub/domain/rules/engine.py `handover_bases`).
    # Internal: not in the person query nor in any message to a body
    # (hub/access.py STATUS_GROUPS lists neither; hub/fhir/messages.py names
    # the fields it sends).
    outgoing_council: Determination | None = None
    outgoing_council_basis_code: str | None = None
    # While the council the rules determined has since been split between
    # several successors and no register change has named the one covering the
    # address, or succeeded by one the register of local authorities lists
    # without a GSS code yet (hazard H-03): why no council is responsible,
    # naming the council and its successors (org None; rule "council-split",
    # or "council-successor-without-gss" when a successor awaits its GSS code:
    # the operator's newer register resolves it). The basis
    # (`council_basis_code`) stays the split council's code; no responsible
    # council is named. Said to bodies through `responsibility_undetermined`
    # (hub/domain/views.py `undetermined_bodies`), never as a key of its own.
    council_split: Determination | None = None
    # While the hospital's council would coordinate (no council responsible) but is abolished with no
    # addressable successor (its area split between several, or succeeded by one the register lists without
    # a GSS code yet; hazard H-03): why no council coordinates, naming the council, its successors and the
    # operator's file to update (org None; rule "hospital-council-abolished"). No coordinating council is
    # named then, never the abolished one. Said through `responsibility_undetermined` only.
    hospital_council_abolished: Determination | None = None
    # Current council of ordinary residence (a council code, not an address):
    # tells a move to another council area apart from a move within one.
    residence_la_gss: str | None = None
    # The qualifying detention that gave rise to the current (or last)
    # entitlement, kept after the person leaves hospital so that messages and
    # queries can say which section the aftercare duty flows from.
    entitling_section_code: str | None = None
    entitling_detention_start: date | None = None
    entitling_hospital_ods: str | None = None
    # The register changes (ids, in the history's order) that began a
    # qualifying period of detention: each one determined, or re-determined,
    # the responsible bodies (Worcs 4.3.1, 4.3.3, 17.1). A re-detention is a
    # legal event an open dispute does not hold (hub/domain/workflows/held.py).
    qualifying_detention_changes: tuple[str, ...] = ()


class EventType(StrEnum):
    """Event codes of the hub's CodeSystem (schemas/CodeSystem-s117-event.json)."""

    REGISTER_CHANGE_RECORDED = "s117-register-change-recorded"
    ENTITLEMENT_STARTED = "s117-entitlement-started"
    ENTITLEMENT_ENDED = "s117-entitlement-ended"
    RESPONSIBILITY_TRANSFERRED = "s117-responsibility-transferred"
    DISCHARGE_REFUSED = "s117-discharge-refused"
    DISPUTE_RAISED = "s117-dispute-raised"
    DISPUTE_RESOLVED = "s117-dispute-resolved"
    REVIEW_DUE = "s117-review-due"
    MOVED_OUT_OF_AREA = "s117-moved-out-of-area"
    # Transfers and disputes as workflows (hub/domain/workflows, hub/workflows).
    TRANSFER_UPDATED = "s117-transfer-updated"
    DISPUTE_UPDATED = "s117-dispute-updated"
    WORKFLOW_DEADLINE = "s117-workflow-deadline"
    # Sent to a body told something that later-arriving history contradicts:
    # names the event it supersedes and carries the corrected position.
    NOTIFICATION_CORRECTED = "s117-notification-corrected"
    # About a body, not a person: its list has drifted from the register past
    # the threshold in its data-sharing agreement (hub/domain/drift.py).
    RECONCILIATION_DRIFT = "s117-reconciliation-drift"
    # A child's stay in hospital: the council responsible for the child told (Children Act 1989 s85;
    # Worcs 6.1), and the council maintaining an EHC plan told of the admission (Worcs 6.4). Sent by
    # hub/children.py to the council named only, never routed by the dispatcher.
    CHILD_LONG_STAY_NOTICE = "s117-child-long-stay-notice"
    CHILD_EHC_PLAN_NOTICE = "s117-child-ehc-plan-notice"
    # The council told the s85 notice told that the stay ended (Children Act 1989 s85(4)); and a children's
    # notice withdrawn when what it told was retracted as recorded in error (UK GDPR Art. 19).
    CHILD_LEFT_HOSPITAL_NOTICE = "s117-child-left-hospital-notice"
    CHILD_NOTICE_WITHDRAWN = "s117-child-notice-withdrawn"
    # A children's notice corrected: the stay it told of stands, begun by another detention than the one told
    # (an earlier one of the same stay came late): its date, section or hospital told again (UK GDPR Art. 19).
    CHILD_NOTICE_CORRECTED = "s117-child-notice-corrected"


# Events about a body itself (counts only, no person): never a DomainEvent,
# never routed by the dispatcher; sent by hub/drift_alerts.py.
BODY_EVENT_TYPES: frozenset[EventType] = frozenset({EventType.RECONCILIATION_DRIFT})
PERSON_EVENT_TYPES: tuple[EventType, ...] = tuple(e for e in EventType if e not in BODY_EVENT_TYPES)
# About a person, sent to the one council named by hub/children.py (never routed by the dispatcher).
CHILD_EVENT_TYPES: frozenset[EventType] = frozenset({EventType.CHILD_LONG_STAY_NOTICE,
                                                     EventType.CHILD_EHC_PLAN_NOTICE,
                                                     EventType.CHILD_LEFT_HOSPITAL_NOTICE,
                                                     EventType.CHILD_NOTICE_WITHDRAWN,
                                                     EventType.CHILD_NOTICE_CORRECTED})


@dataclass(frozen=True, slots=True)
class DomainEvent:
    event_type: EventType
    person_id: str
    change_id: str
    occurred_on: date
    summary: str  # plain words, no personal data
    # Organisations that must hear of it beyond the currently responsible
    # council and commissioner: outgoing bodies on a transfer, dispute
    # parties, the host council on a move.
    also_notify: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)
