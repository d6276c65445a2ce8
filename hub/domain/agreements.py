"""Per-area agreements as data: where the policies differ, areas choose.

The rules read review intervals, the new-placement review delay, whether NHS
England answers for people detained from prison, and the funding split
between a council and an ICB from here, never from constants in the rules.
Shares are basis points (1/100 of a percent) so that 53.93% is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from types import MappingProxyType

from hub.domain import citations

WHOLE = 10_000  # basis points in 100%


class FundingKind(StrEnum):
    FIXED_SPLIT = "fixed-split"  # one council:NHS share for every case
    ALIGNED_BUDGET = "aligned-budget"  # a pooled budget at an agreed, re-estimated share
    NEEDS_MATRIX = "needs-matrix"  # each need tagged health / social care / not s117
    PANEL = "panel"  # a joint panel decides each case
    # One share for everyone, with per-person exceptions both bodies agreed (Worcs A2.1-A2.3).
    DEFAULT_WITH_EXCEPTIONS = "default-with-exceptions"


class NeedTag(StrEnum):
    HEALTH = "health"
    SOCIAL_CARE = "social-care"
    JOINT = "joint"  # a need both bodies meet: split at the matrix's joint share
    NOT_S117 = "not-s117"


@dataclass(frozen=True, slots=True)
class FundingAgreement:
    kind: FundingKind
    name: str
    citation: str
    # Council share in basis points; for a matrix, the share of JOINT needs.
    council_share_bp: int | None = None
    # s17 leave is the NHS commissioner's unless the pair agreed otherwise (Worcs A2.4).
    s17_leave_commissioner_share_bp: int = WHOLE
    # A needs matrix's own tagging of named needs; it overrides a cost line's tag.
    need_tags: tuple[tuple[str, NeedTag], ...] = ()
    # Cohorts with a split of their own, whatever the kind (FOI Q2a: learning
    # disability and children at 50:50): (cohort code, council share bp).
    cohort_shares: tuple[tuple[str, int], ...] = ()

    def cohort_share(self, cohort: str | None) -> int | None:
        return dict(self.cohort_shares).get(cohort) if cohort else None

    def tag_for(self, need: str, recorded: NeedTag) -> NeedTag:
        return dict(self.need_tags).get(need, recorded)

    def __post_init__(self) -> None:
        needs_share = self.kind in (FundingKind.FIXED_SPLIT, FundingKind.ALIGNED_BUDGET,
                                    FundingKind.DEFAULT_WITH_EXCEPTIONS)
        if needs_share and self.council_share_bp is None:
            raise ValueError(f"{self.kind} agreement {self.name!r} needs council_share_bp")
        for share in (self.council_share_bp, self.s17_leave_commissioner_share_bp,
                      *(bp for _c, bp in self.cohort_shares)):
            if share is not None and not 0 <= share <= WHOLE:
                raise ValueError(f"share {share} bp out of range in {self.name!r}")


@dataclass(frozen=True, slots=True)
class EscalationStage:
    """One level of an area's dispute procedure and how long it has.

    `owner` is who must act at this level: "lead-body" (the dispute's lead
    body convenes it, e.g. local resolution at director level) or a named
    body ("ICS", "NHS England", "ICET").
    """

    name: str
    owner: str
    working_days: int
    citation: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: is required")
        if not self.owner:
            raise ValueError("owner: is required")
        if isinstance(self.working_days, bool) or not isinstance(self.working_days, int) or not 1 <= self.working_days <= 260:
            raise ValueError("working_days: must be a whole number of working days from 1 to 260")
        if not self.citation:
            raise ValueError("citation: is required (the paragraph the stage rests on)")


LEAD_BODY = "lead-body"

# Local resolution at director level -> ICS -> NHS England arbitration
# (Who Pays? 2020 Appendix 1, summarised at Worcs 15.5). The policies give no
# durations: the working days are the hub's defaults, set per area.
WHO_PAYS_STAGES: tuple[EscalationStage, ...] = (
    EscalationStage("local resolution at director level", LEAD_BODY, 20, citations.ESCALATION_WHO_PAYS),
    EscalationStage("ICS resolution at director / executive level", "ICS", 20, citations.ESCALATION_WHO_PAYS),
    EscalationStage("arbitration by NHS England", "NHS England", 40, citations.ESCALATION_WHO_PAYS),
)


# Disputes between councils about where a person was ordinarily resident are
# settled under the Care and Support (Disputes between Local Authorities)
# Regulations 2014 (Worcs 4.3.4, 15.4): the councils try to resolve it, the
# lead authority (the one meeting the needs meanwhile) leading, and refer it
# to the Secretary of State for a determination. Who Pays? and its NHS
# England arbitration (Worcs 15.5) are for disputes between NHS commissioners
# only, and an area's own NHS procedure (Bucks JMG -> ICET) binds only its own
# council and ICB. Neither policy gives a duration for either stage: the
# working days are the hub's defaults, which each area may set
# (`council_escalation` in contracts/area-agreements.yaml). The 85 working
# days of local resolution follow the statutory guidance's roughly four
# months before a referral to the Secretary of State; they are not a figure
# from the Worcestershire or Buckinghamshire policies.
LA_DISPUTE_STAGES: tuple[EscalationStage, ...] = (
    EscalationStage("local resolution between the councils (the lead authority)", LEAD_BODY, 85,
                    citations.ESCALATION_LA_DISPUTES),
    EscalationStage("determination by the Secretary of State", "Secretary of State", 60,
                    citations.ESCALATION_LA_DISPUTES),
)


@dataclass(frozen=True, slots=True)
class AreaAgreement:
    name: str
    citation: str = ""
    first_review_months: int = 3
    review_interval_months: int = 12
    new_placement_review_weeks: int = 6
    nhs_england_for_prison_detentions: bool = True
    # Transfers of responsibility: the incoming body accepts or contests
    # within this many working days; reminders this many before the deadline.
    acknowledgement_working_days: int = 10
    reminder_working_days: int = 2
    # The dispute procedure's levels, in order, for disputes between NHS
    # commissioners (Worcs 15.5; Bucks JMG -> ICET) ...
    escalation: tuple[EscalationStage, ...] = WHO_PAYS_STAGES
    # ... and for disputes between councils (Worcs 4.3.4, 15.4: the 2014
    # Disputes Regulations, whatever the area's NHS procedure), and for an
    # overdue transfer of the council's responsibility.
    council_escalation: tuple[EscalationStage, ...] = LA_DISPUTE_STAGES

    def __post_init__(self) -> None:
        # The policies set ceilings an area may tighten but not relax.
        if not 1 <= self.first_review_months <= 3:
            raise ValueError(f"first review must be within 3 months ({citations.REVIEW_FIRST})")
        if not 1 <= self.review_interval_months <= 12:
            raise ValueError(f"reviews at least every 12 months ({citations.REVIEW_ANNUAL})")
        if not 6 <= self.new_placement_review_weeks <= 12:
            raise ValueError(f"new placements reviewed after 6-12 weeks ({citations.REVIEW_NEW_PLACEMENT})")
        ack = self.acknowledgement_working_days
        if isinstance(ack, bool) or not isinstance(ack, int) or not 1 <= ack <= 60:
            raise ValueError("acknowledgement_working_days: must be a whole number of working days from 1 to 60")
        reminder = self.reminder_working_days
        if isinstance(reminder, bool) or not isinstance(reminder, int) or not 0 <= reminder < ack:
            raise ValueError("reminder_working_days: must be from 0 to less than acknowledgement_working_days")
        if not self.escalation:
            raise ValueError("escalation: needs at least one stage")
        if not self.council_escalation:
            raise ValueError("council_escalation: needs at least one stage")

    def escalation_for(self, kind: str) -> tuple[EscalationStage, ...]:
        """The procedure for a dispute of `kind` ("council" or "commissioner"),
        or for a transfer of that role whose acknowledgement is overdue."""
        return self.council_escalation if kind == "council" else self.escalation


ENGLAND_DEFAULT_AREA = AreaAgreement(
    name="England default",
    citation=f"{citations.REVIEW_FIRST}; {citations.REVIEW_ANNUAL}; {citations.NHS_ENGLAND_PRISON}",
)

ENGLAND_DEFAULT_FUNDING = FundingAgreement(
    kind=FundingKind.FIXED_SPLIT,
    name="England default 50:50",
    citation=citations.FUNDING_50_50,
    council_share_bp=5_000,
)

ANY_COMMISSIONER = "*"


@dataclass(frozen=True, slots=True)
class FundingChange:
    """A later arrangement for a pair, in force from `effective_from`.

    Neither body may change a split on its own (Worcs 8.5, A2.3): a change
    records both bodies' agreement. Earlier arrangements are never rewritten;
    a change only ever starts after the last one."""

    effective_from: date
    agreement: FundingAgreement
    council_agreed_on: date
    commissioner_agreed_on: date
    reference: str  # e.g. the Joint Management Group minute

    def __post_init__(self) -> None:
        if not self.reference:
            raise ValueError(f"a split change needs the reference of both bodies' agreement ({citations.FUNDING_NO_WITHDRAWAL})")


@dataclass(frozen=True, slots=True)
class AgreementBook:
    """Every area's agreements, with an England-wide default for the rest."""

    areas: Mapping[str, AreaAgreement] = field(default_factory=dict)  # by council GSS
    # By (council GSS, ICB ODS); ICB "*" covers any commissioner paired with that council.
    funding: Mapping[tuple[str, str], FundingAgreement] = field(default_factory=dict)
    default_area: AreaAgreement = ENGLAND_DEFAULT_AREA
    default_funding: FundingAgreement = ENGLAND_DEFAULT_FUNDING
    # Later arrangements per pair, oldest first (see FundingChange).
    funding_changes: Mapping[tuple[str, str], tuple[FundingChange, ...]] = field(default_factory=dict)
    # Counts the reloads of the file taken in place (`replace_with`): what was worked out from the
    # agreements and kept (a status, hub/ingest/status_cache.py) is kept with it and not used past one.
    generation: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "areas", MappingProxyType(dict(self.areas)))
        object.__setattr__(self, "funding", MappingProxyType(dict(self.funding)))
        for pair, changes in self.funding_changes.items():
            for before, after in zip(changes, changes[1:]):
                if after.effective_from <= before.effective_from:
                    raise ValueError(f"funding changes for {pair} must start one after another: an earlier "
                                     f"arrangement is never rewritten ({citations.FUNDING_NO_WITHDRAWAL})")
        object.__setattr__(self, "funding_changes", MappingProxyType(dict(self.funding_changes)))

    @classmethod
    def default(cls) -> AgreementBook:
        return cls()

    def replace_with(self, other: AgreementBook) -> None:
        """Take `other`'s agreements in place of these (a reload of the area agreements file:
        hub/agreements_watch.py) and count a generation. In place, never a new object: every holder
        (the ingest, money, rules, workflows, reconciliation, exports and scheduler of a process)
        holds this one. No await in between: every question asked after this call is answered
        from the new agreements, none from a mix."""
        for name in ("areas", "funding", "default_area", "default_funding", "funding_changes"):
            object.__setattr__(self, name, getattr(other, name))
        object.__setattr__(self, "generation", self.generation + 1)

    def area(self, council_gss: str | None) -> AreaAgreement:
        if council_gss is None:
            return self.default_area
        return self.areas.get(council_gss, self.default_area)

    def funding_for(self, council_gss: str | None, icb_ods: str | None) -> FundingAgreement:
        """Each agreement binds only its own pair of bodies (Worcs A2.6)."""
        if council_gss is not None:
            if icb_ods is not None and (council_gss, icb_ods) in self.funding:
                return self.funding[(council_gss, icb_ods)]
            if (council_gss, ANY_COMMISSIONER) in self.funding:
                return self.funding[(council_gss, ANY_COMMISSIONER)]
        return self.default_funding

    def funding_history(self, council_gss: str | None, icb_ods: str | None) -> tuple[tuple[date | None, FundingAgreement], ...]:
        """The pair's arrangements as (in force from, agreement), oldest first;
        the first applies from the beginning (None)."""
        history: list[tuple[date | None, FundingAgreement]] = [(None, self.funding_for(council_gss, icb_ods))]
        if council_gss is not None:
            key = (council_gss, icb_ods or ANY_COMMISSIONER)
            if key not in self.funding_changes:
                key = (council_gss, ANY_COMMISSIONER)
            history += [(c.effective_from, c.agreement) for c in self.funding_changes.get(key, ())]
        return tuple(history)

    def funding_on(self, council_gss: str | None, icb_ods: str | None, day: date) -> FundingAgreement:
        current = self.funding_for(council_gss, icb_ods)
        for start, agreement in self.funding_history(council_gss, icb_ods)[1:]:
            if start is not None and start <= day:
                current = agreement
        return current
