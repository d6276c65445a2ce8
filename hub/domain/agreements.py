"""Per-area agreements as data: where the policies differ, areas choose.

The rules read review intervals, the new-placement review delay, whether NHS
England answers for people detained from prison, and the funding split
between a council and an ICB from here, never from constants in the rules.
Shares are basis points (1/100 of a percent) so that 53.93% is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from hub.domain import citations

WHOLE = 10_000  # basis points in 100%


class FundingKind(StrEnum):
    FIXED_SPLIT = "fixed-split"  # one council:NHS share for every case
    ALIGNED_BUDGET = "aligned-budget"  # a pooled budget at an agreed, re-estimated share
    NEEDS_MATRIX = "needs-matrix"  # each need tagged health / social care / not s117
    PANEL = "panel"  # a joint panel decides each case


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

    def tag_for(self, need: str, recorded: NeedTag) -> NeedTag:
        return dict(self.need_tags).get(need, recorded)

    def __post_init__(self) -> None:
        needs_share = self.kind in (FundingKind.FIXED_SPLIT, FundingKind.ALIGNED_BUDGET)
        if needs_share and self.council_share_bp is None:
            raise ValueError(f"{self.kind} agreement {self.name!r} needs council_share_bp")
        for share in (self.council_share_bp, self.s17_leave_commissioner_share_bp):
            if share is not None and not 0 <= share <= WHOLE:
                raise ValueError(f"share {share} bp out of range in {self.name!r}")


@dataclass(frozen=True, slots=True)
class AreaAgreement:
    name: str
    citation: str = ""
    first_review_months: int = 3
    review_interval_months: int = 12
    new_placement_review_weeks: int = 6
    nhs_england_for_prison_detentions: bool = True

    def __post_init__(self) -> None:
        # The policies set ceilings an area may tighten but not relax.
        if not 1 <= self.first_review_months <= 3:
            raise ValueError(f"first review must be within 3 months ({citations.REVIEW_FIRST})")
        if not 1 <= self.review_interval_months <= 12:
            raise ValueError(f"reviews at least every 12 months ({citations.REVIEW_ANNUAL})")
        if not 6 <= self.new_placement_review_weeks <= 12:
            raise ValueError(f"new placements reviewed after 6-12 weeks ({citations.REVIEW_NEW_PLACEMENT})")


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
class AgreementBook:
    """Every area's agreements, with an England-wide default for the rest."""

    areas: Mapping[str, AreaAgreement] = field(default_factory=dict)  # by council GSS
    # By (council GSS, ICB ODS); ICB "*" covers any commissioner paired with that council.
    funding: Mapping[tuple[str, str], FundingAgreement] = field(default_factory=dict)
    default_area: AreaAgreement = ENGLAND_DEFAULT_AREA
    default_funding: FundingAgreement = ENGLAND_DEFAULT_FUNDING

    def __post_init__(self) -> None:
        object.__setattr__(self, "areas", MappingProxyType(dict(self.areas)))
        object.__setattr__(self, "funding", MappingProxyType(dict(self.funding)))

    @classmethod
    def default(cls) -> AgreementBook:
        return cls()

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
