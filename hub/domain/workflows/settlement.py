"""Reimbursement on resolution (Worcs 4.4.8, 15.6): what the bodies found not
responsible carried in the interim, as periods and shares.

Amounts need the funding records (the packages / costs work): `InterimCosts`
is the hook; without it each line's amount is None and the statement still
names the periods, shares and who pays whom.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Protocol

from hub.domain import citations
from hub.domain.workflows.model import Case, DisputeState


class InterimCosts(Protocol):
    def cost(self, person_id: str, start: date, end: date) -> Decimal | None:
        """The s117 cost of the person's aftercare over [start, end], or None if unknown."""
        ...


@dataclass(frozen=True, slots=True)
class StatementLine:
    carried_by: str  # a body found not responsible
    start: date
    end: date  # inclusive
    share_bp: int  # its interim share in basis points
    interim_agreed: bool  # False: the default while the parties had not agreed
    amount: Decimal | None = None  # share of the period's cost, when costs are known


@dataclass(frozen=True, slots=True)
class ReimbursementStatement:
    case_id: str
    person_id: str
    payer: str  # the body found responsible reimburses ...
    payees: tuple[str, ...]  # ... the bodies that carried a share without being responsible
    responsible_from: date
    lines: tuple[StatementLine, ...]
    total: Decimal | None
    citation: str
    explanation: str


def reimbursement_statement(case: Case, costs: InterimCosts | None = None) -> ReimbursementStatement:
    """The statement for a resolved dispute. The interim runs from the day the
    dispute opened (or the day the found body became responsible, if later)
    to the day before resolution; each interim arrangement covers its part."""
    if case.state != DisputeState.RESOLVED or case.responsible is None or case.resolved_on is None:
        raise ValueError("a statement needs a resolved dispute")
    payer = case.responsible
    assert case.responsible_from is not None
    start = max(case.opened_on, case.responsible_from)
    end = case.resolved_on - timedelta(days=1)
    lines: list[StatementLine] = []
    arrangements = list(case.interims)
    for i, interim in enumerate(arrangements):
        a_start = max(start, interim.from_date)
        a_end = min(end, arrangements[i + 1].from_date - timedelta(days=1)) if i + 1 < len(arrangements) else end
        if a_end < a_start:
            continue
        for org, share in interim.shares:
            if org == payer or share == 0:
                continue
            lines.append(StatementLine(org, a_start, a_end, share, interim.agreed))
    if costs is not None:
        lines = [replace(line, amount=_share(costs.cost(case.person_id, line.start, line.end), line.share_bp))
                 for line in lines]
    amounts = [line.amount for line in lines]
    total = sum(amounts, Decimal(0)) if lines and all(a is not None for a in amounts) else None  # type: ignore[misc]
    payees = tuple(dict.fromkeys(line.carried_by for line in lines))
    if payees:
        explanation = (f"{payer} was found responsible from {case.responsible_from.isoformat()} and reimburses "
                       f"{', '.join(payees)} for the interim shares they carried")
    else:
        explanation = f"{payer} was found responsible and carried the interim itself: nothing to reimburse"
    return ReimbursementStatement(
        case_id=case.case_id, person_id=case.person_id, payer=payer, payees=payees,
        responsible_from=case.responsible_from, lines=tuple(lines), total=total,
        citation=citations.DISPUTE_RESOLVED_REIMBURSE, explanation=explanation,
    )


def _share(cost: Decimal | None, share_bp: int) -> Decimal | None:
    if cost is None:
        return None
    return (cost * share_bp / 10_000).quantize(Decimal("0.01"))
