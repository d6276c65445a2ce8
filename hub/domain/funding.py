"""Split the cost of an s117 aftercare plan between council and NHS commissioner.

Amounts are integer pence and shares basis points, so a split never loses or
invents a penny: the commissioner's part is the line amount less the
council's rounded part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hub.domain import citations
from hub.domain.agreements import WHOLE, FundingAgreement, FundingKind, NeedTag


@dataclass(frozen=True, slots=True)
class CostLine:
    need: str  # the need in the aftercare plan, e.g. "supported accommodation"
    tag: NeedTag
    amount_pence: int
    s17_leave: bool = False
    nursing_care_fnc: bool = False  # NHS-funded nursing care: a universal service
    top_up: bool = False  # paid by the person or a third party for a dearer choice


@dataclass(frozen=True, slots=True)
class PanelDecision:
    """A joint panel's split for one case (FOI Q1)."""

    council_share_bp: int
    decided_on: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.council_share_bp <= WHOLE:
            raise ValueError("panel share out of range")


@dataclass(frozen=True, slots=True)
class LineSplit:
    line: CostLine
    council_pence: int
    commissioner_pence: int
    excluded_pence: int
    explanation: str
    citation: str


@dataclass(frozen=True, slots=True)
class FundingSplit:
    agreement: FundingAgreement  # the arrangement actually applied
    council_pence: int
    commissioner_pence: int
    excluded_pence: int  # outside the s117 total (FNC, top-ups, needs not s117)
    awaiting_panel_pence: int  # s117 costs a panel has not yet apportioned
    lines: tuple[LineSplit, ...]
    explanation: str
    citation: str

    @property
    def s117_total_pence(self) -> int:
        return self.council_pence + self.commissioner_pence + self.awaiting_panel_pence


def _share(amount: int, council_bp: int) -> tuple[int, int]:
    # Half-up rounding of the council part; the NHS part takes the remainder.
    council = (amount * council_bp + WHOLE // 2) // WHOLE
    return council, amount - council


def _percent(bp: int) -> str:
    return f"{bp / 100:g}%"


def _split_line(
    line: CostLine, agreement: FundingAgreement, panel: PanelDecision | None
) -> tuple[LineSplit, int]:
    """One line's split, and the pence still awaiting a panel decision."""
    amount = line.amount_pence
    tag = agreement.tag_for(line.need, line.tag)
    if line.nursing_care_fnc:
        return LineSplit(line, 0, 0, amount, "NHS-funded nursing care is outside the s117 total",
                         citations.FUNDING_FNC), 0
    if line.top_up:
        return LineSplit(line, 0, 0, amount, "an accommodation top-up is paid by the person or a third party",
                         citations.FUNDING_TOP_UP), 0
    if tag is NeedTag.NOT_S117:
        return LineSplit(line, 0, 0, amount, "a need not arising from the mental disorder is not s117 aftercare",
                         citations.FUNDING_NOT_S117), 0
    if line.s17_leave:
        council, nhs = _share(amount, WHOLE - agreement.s17_leave_commissioner_share_bp)
        return LineSplit(line, council, nhs, 0,
                         f"s17 leave: NHS commissioner funds {_percent(agreement.s17_leave_commissioner_share_bp)}",
                         citations.FUNDING_S17_LEAVE), 0
    if agreement.kind is FundingKind.NEEDS_MATRIX:
        if tag is NeedTag.HEALTH:
            return LineSplit(line, 0, amount, 0, "health need: NHS commissioner", agreement.citation), 0
        if tag is NeedTag.SOCIAL_CARE:
            return LineSplit(line, amount, 0, 0, "social care need: council", agreement.citation), 0
        joint_bp = agreement.council_share_bp if agreement.council_share_bp is not None else WHOLE // 2
        council, nhs = _share(amount, joint_bp)
        return LineSplit(line, council, nhs, 0, f"joint need: council {_percent(joint_bp)}", agreement.citation), 0
    if agreement.kind is FundingKind.PANEL:
        if panel is None:
            return LineSplit(line, 0, 0, 0, "awaiting the panel's decision", agreement.citation), amount
        council, nhs = _share(amount, panel.council_share_bp)
        return LineSplit(line, council, nhs, 0, f"panel decision: council {_percent(panel.council_share_bp)}",
                         agreement.citation), 0
    assert agreement.council_share_bp is not None
    council, nhs = _share(amount, agreement.council_share_bp)
    return LineSplit(line, council, nhs, 0,
                     f"{agreement.kind.value}: council {_percent(agreement.council_share_bp)}, "
                     f"NHS {_percent(WHOLE - agreement.council_share_bp)}", agreement.citation), 0


def split_costs(
    lines: Sequence[CostLine],
    agreement: FundingAgreement,
    *,
    panel: PanelDecision | None = None,
    dispute_open: bool = False,
    previous: FundingAgreement | None = None,
) -> FundingSplit:
    """The council / NHS split of `lines` under `agreement`.

    While a funding dispute is open, the arrangement in force before it
    (`previous`) keeps applying: neither body may withdraw unilaterally.
    """
    applied = agreement
    notes = [f"{agreement.name} ({agreement.citation})"]
    citation = agreement.citation
    if dispute_open and previous is not None and previous != agreement:
        applied = previous
        notes = [f"dispute open: the previous arrangement {previous.name} stays in force "
                 f"({citations.FUNDING_NO_WITHDRAWAL})"]
        citation = f"{citations.FUNDING_NO_WITHDRAWAL}; {previous.citation}"
    splits: list[LineSplit] = []
    awaiting = 0
    for line in lines:
        if line.amount_pence < 0:
            raise ValueError(f"negative amount on need {line.need!r}")
        line_split, line_awaiting = _split_line(line, applied, panel)
        splits.append(line_split)
        awaiting += line_awaiting
    council = sum(s.council_pence for s in splits)
    nhs = sum(s.commissioner_pence for s in splits)
    excluded = sum(s.excluded_pence for s in splits)
    if awaiting:
        notes.append(f"{awaiting} pence awaiting the panel's decision")
    if excluded:
        notes.append(f"{excluded} pence outside the s117 total")
    return FundingSplit(
        agreement=applied,
        council_pence=council,
        commissioner_pence=nhs,
        excluded_pence=excluded,
        awaiting_panel_pence=awaiting,
        lines=tuple(splits),
        explanation="; ".join(notes),
        citation=citation,
    )
