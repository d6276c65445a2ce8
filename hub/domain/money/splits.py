"""Which split applies to a package line on a day, as data.

Every kind of arrangement in the sources (contracts/area-agreements.yaml
holds each area's; `hub/domain/funding.py` apportions an amount under one):

| rule | where it comes from | here |
|---|---|---|
| fixed split for everyone | Harrow before the matrix (50:50); FOI Q2a | `fixed-split` agreement |
| per-person needs-matrix split | Harrow matrix report, Section 2 (the matrix result at each review) | `needs-matrix` agreement + a `matrix` PersonDecision; without one, each line's need tag |
| default with per-person exceptions | Worcs A2.1 (60:40), A2.2-A2.3 (case by case, both agreeing) | `default-with-exceptions` agreement + an `exception` PersonDecision |
| aligned budget at a yearly percentage | Bucks "Aligned Budget Funding Split" (53.93/46.07, re-estimated yearly) | `aligned-budget` agreement, a FundingChange from each year's start |
| panel decision per case | FOI Q1-Q2 | `panel` agreement + a `panel` PersonDecision; without one, awaiting the panel |
| s17 leave: the NHS side funds | Worcs A2.4 | any agreement's `s17_leave_commissioner_share_bp` |
| cohort split | FOI Q2a (learning disability, children and young people 50:50) | any agreement's `cohort_shares` |

Precedence on a day: exclusions, then s17 leave, then the person's cohort,
then the person's decision, then the agreement in force. A change of the
pair's arrangement takes effect from its date (FundingChange); a person's
decision from its own. Neither is valid without both bodies' agreement
recorded (Worcs 8.5, A2.3), and neither rewrites what applied before.

**A person's decision is its pair's.** It is agreed by the council and the
ICB responsible when it is made, and divides only the costs charged to that
pair: on a day charged to another pair (the register moved responsibility,
Worcs 4.3.3, 4.4.8) it does not apply, and the day is split as if no decision
had been agreed (the other pair's arrangement: its default split, each line's
need tag under a needs matrix, awaiting the panel under a panel). It ends when
responsibility leaves its pair (`last`, set from the register:
`responsibility.decisions_ended`), and does not come back if the person later
returns to that pair: the pair then agrees a new one (Worcs 8.5, A2.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from hub.domain import citations
from hub.domain.agreements import WHOLE, FundingAgreement, FundingKind, NeedTag
from hub.domain.funding import CostLine, LineSplit, PanelDecision, split_costs
from hub.domain.money.packages import Exclusion, PackageLine

DECISION_KINDS = {"panel": FundingKind.PANEL, "matrix": FundingKind.NEEDS_MATRIX,
                  "exception": FundingKind.DEFAULT_WITH_EXCEPTIONS}


@dataclass(frozen=True, slots=True)
class PersonDecision:
    """One person's split, agreed by both bodies of a pair (`council`, `icb`:
    the pair responsible when it was proposed and agreed), from a date.

    It applies only on days charged to its own pair, from `effective_from` to
    `last`: the day before responsibility first leaves the pair (None: it has
    not left). Once ended it stays ended, even if the person returns to the
    pair later: a split is agreed for the days of one spell of
    responsibility, and on a return the pair agrees a new one (Worcs 8.5,
    A2.3)."""

    person_id: str
    kind: str  # panel, matrix, exception
    council_share_bp: int
    effective_from: date
    council_agreed_on: date
    commissioner_agreed_on: date
    council: str  # the pair that agreed it (GSS, ODS)
    icb: str
    reference: str = ""  # panel minute, matrix review id
    last: date | None = None  # the day before responsibility left the pair (None: in force)

    def __post_init__(self) -> None:
        if self.kind not in DECISION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(DECISION_KINDS)}")
        if not 0 <= self.council_share_bp <= WHOLE:
            raise ValueError("council share out of range")
        if not self.council or not self.icb:
            raise ValueError("a decision is agreed by a council and an ICB")

    @property
    def pair(self) -> tuple[str, str]:
        return self.council, self.icb

    def applies_on(self, day: date, pair: tuple[str, str]) -> bool:
        """Whether it divides the costs charged to `pair` on `day`."""
        return pair == self.pair and self.effective_from <= day and (self.last is None or day <= self.last)


def decision_problem(agreement: FundingAgreement, decision_kind: str) -> str | None:
    """Why a person's decision of this kind cannot apply under the pair's arrangement, if it cannot."""
    wanted = DECISION_KINDS.get(decision_kind)
    if wanted is None:
        return f"must be one of {', '.join(DECISION_KINDS)}"
    if agreement.kind is not wanted:
        return (f"a {decision_kind} decision does not apply under {agreement.name} ({agreement.kind.value}): "
                f"{agreement.citation}")
    return None


@dataclass(frozen=True, slots=True)
class SplitRule:
    agreement: FundingAgreement  # what funding.split_costs applies
    panel: PanelDecision | None
    basis: str  # "area agreement", "cohort", "panel decision", "matrix result", "agreed exception"


History = Sequence[tuple[date | None, FundingAgreement]]


def agreement_on(history: History, day: date) -> FundingAgreement:
    current = history[0][1]
    for start, agreement in history[1:]:
        if start is not None and start <= day:
            current = agreement
    return current


def decision_on(decisions: Sequence[PersonDecision], day: date, pair: tuple[str, str]) -> PersonDecision | None:
    """The decision dividing `pair`'s costs on `day`: of those that apply
    (`PersonDecision.applies_on`), the one in force from the latest date."""
    found = None
    for d in decisions:  # oldest first
        if d.applies_on(day, pair):
            found = d
    return found


def decision_cuts(decisions: Sequence[PersonDecision], pair: tuple[str, str]) -> set[date]:
    """Days on which `pair`'s decisions may start or stop applying."""
    days = set()
    for d in decisions:
        if d.pair == pair:
            days.add(d.effective_from)
            if d.last is not None:
                days.add(d.last + timedelta(days=1))
    return days


def _fixed(base: FundingAgreement, name: str, citation: str, share_bp: int) -> FundingAgreement:
    return FundingAgreement(kind=FundingKind.FIXED_SPLIT, name=name, citation=citation, council_share_bp=share_bp,
                            s17_leave_commissioner_share_bp=base.s17_leave_commissioner_share_bp)


def rule_for(line: PackageLine, day: date, history: History, decisions: Sequence[PersonDecision] = (),
             pair: tuple[str, str] | None = None) -> SplitRule:
    """The split of `line` on `day` for the pair charged that day (`pair`;
    None: the pair the line is recorded against), whose arrangements are
    `history`. Only that pair's decisions apply (`decision_on`)."""
    agreement = agreement_on(history, day)
    cohort_bp = agreement.cohort_share(line.cohort)
    if cohort_bp is not None:
        return SplitRule(_fixed(agreement, f"{agreement.name}: {line.cohort} cohort",
                                f"{citations.FUNDING_COHORT}; {agreement.citation}", cohort_bp), None, "cohort")
    decision = decision_on(decisions, day, pair if pair is not None else (line.council, line.icb))
    if decision is not None and DECISION_KINDS[decision.kind] is agreement.kind:
        ref = f" {decision.reference}" if decision.reference else ""
        if decision.kind == "panel":
            return SplitRule(agreement, PanelDecision(decision.council_share_bp, decision.effective_from.isoformat()),
                             "panel decision")
        if decision.kind == "matrix":
            return SplitRule(_fixed(agreement, f"{agreement.name}: matrix result{ref}", agreement.citation,
                                    decision.council_share_bp), None, "matrix result")
        return SplitRule(_fixed(agreement, f"{agreement.name}: agreed exception{ref}",
                                f"{citations.FUNDING_EXCEPTION}", decision.council_share_bp), None, "agreed exception")
    return SplitRule(agreement, None, "area agreement")


def split_amount(line: PackageLine, amount_pence: int, rule: SplitRule) -> LineSplit:
    """Apportion `amount_pence` of `line` under `rule` (funding.split_costs does the arithmetic)."""
    cost = CostLine(
        need=line.service_type,
        tag=line.need if line.s117_eligible else NeedTag.NOT_S117,
        amount_pence=amount_pence,
        s17_leave=line.s17_leave,
        nursing_care_fnc=line.exclusion is Exclusion.NHS_FUNDED_NURSING_CARE,
        top_up=line.exclusion is Exclusion.TOP_UP,
    )
    if line.exclusion is Exclusion.UNIVERSAL_SERVICE:
        return LineSplit(cost, 0, 0, amount_pence, "a universal service is never counted in the s117 total",
                         citations.FUNDING_UNIVERSAL)
    if not line.s117_eligible and line.exclusion is None:
        # Recorded as not s117: a needs matrix's tag for the service cannot make it s117.
        return LineSplit(cost, 0, 0, amount_pence, "a need not arising from the mental disorder is not s117 "
                         "aftercare", citations.FUNDING_NOT_S117)
    return split_costs([cost], rule.agreement, panel=rule.panel).lines[0]
