"""Reimbursement on resolution (Worcs 4.4.8, 15.6): what the bodies found not
responsible carried in the interim, as periods and shares, and what each body
paid against what it owed.

Amounts come from the funding records through `InterimCosts`
(hub/money/settlement.py builds it from the packages and the recharge
statements' own arithmetic): for each interim period, the pence of the side in
dispute that each body carried in the statements. The dispute kind says which
side: a `council` dispute (between councils, Worcs 4.3.4) moves the council's
share, a `commissioner` dispute (between ICBs, Worcs 4.4.8, 15.6) the NHS
share; the other side's share is not in dispute. Under the resolution the body
found responsible owed all of that side from `responsible_from`; each other
body is reimbursed what it carried. Without the hook (no funding records for
the person) each line's amount is None and the statement still names the
periods, shares and who pays whom.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from hub.domain import citations
from hub.domain.workflows.model import WHOLE, Case, DisputeState


class InterimCosts(Protocol):
    def carried(self, person_id: str, kind: str, start: date, end: date) -> dict[str, int] | None:
        """Pence of the side in dispute (`kind`: "council" or "commissioner")
        of the person's s117 cost over [start, end] (inclusive) that each body
        carried, or None if no funding records are known for the person."""
        ...


@dataclass(frozen=True, slots=True)
class StatementLine:
    carried_by: str  # a body found not responsible
    start: date
    end: date  # inclusive
    share_bp: int  # its share of the side in dispute in the period
    interim_agreed: bool  # False: no terms agreed; the current arrangements carried the costs (Worcs 8.5)
    amount_pence: int | None = None  # what it carried, when costs are known


@dataclass(frozen=True, slots=True)
class BodyPosition:
    org: str
    paid_pence: int  # the side in dispute it carried over the interim
    owed_pence: int  # what it owed under the resolution (all of it for the body found responsible)
    balance_pence: int  # paid - owed: positive, reimbursed; negative, reimburses


@dataclass(frozen=True, slots=True)
class ReimbursementStatement:
    case_id: str
    person_id: str
    payer: str  # the body found responsible reimburses ...
    payees: tuple[str, ...]  # ... the bodies that carried a share without being responsible
    responsible_from: date
    lines: tuple[StatementLine, ...]
    total_pence: int | None
    citation: str
    explanation: str
    side: str = ""  # the share in dispute: "council" or "NHS"
    bodies: tuple[BodyPosition, ...] = ()  # with costs: each party's paid against owed


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
    paid: dict[str, int] = dict.fromkeys(case.parties, 0)
    known = True
    arrangements = list(case.interims)
    for i, interim in enumerate(arrangements):
        a_start = max(start, interim.from_date)
        a_end = min(end, arrangements[i + 1].from_date - timedelta(days=1)) if i + 1 < len(arrangements) else end
        if a_end < a_start:
            continue
        carried = costs.carried(case.person_id, case.dispute_kind, a_start, a_end) if costs is not None else None
        if carried is None:
            known = False
            for org, share in interim.shares:
                if org != payer and share:
                    lines.append(StatementLine(org, a_start, a_end, share, interim.agreed))
            continue
        side_total = sum(carried.values())
        for org, amount in carried.items():
            paid[org] = paid.get(org, 0) + amount
        for org in dict.fromkeys([*(o for o, s in interim.shares if s), *carried]):
            amount = carried.get(org, 0)
            if org == payer or (amount == 0 and not (interim.agreed and interim.share_of(org))):
                continue
            if interim.agreed:
                share = interim.share_of(org)
            else:  # what the current arrangements made it carry
                share = round(amount * WHOLE / side_total) if side_total else 0
            lines.append(StatementLine(org, a_start, a_end, share, interim.agreed, amount))
    total = sum(line.amount_pence or 0 for line in lines) if lines and known and costs is not None else None
    if costs is not None and known and not lines:
        total = 0
    payees = tuple(dict.fromkeys(line.carried_by for line in lines if line.amount_pence != 0))
    bodies: tuple[BodyPosition, ...] = ()
    if costs is not None and known:
        whole = sum(paid.values())
        bodies = tuple(BodyPosition(org, amount, whole if org == payer else 0,
                                    amount - (whole if org == payer else 0)) for org, amount in paid.items())
    if payees:
        explanation = (f"{payer} was found responsible from {case.responsible_from.isoformat()} and reimburses "
                       f"{', '.join(payees)} for the interim shares they carried")
    else:
        explanation = f"{payer} was found responsible and carried the interim itself: nothing to reimburse"
    return ReimbursementStatement(
        case_id=case.case_id, person_id=case.person_id, payer=payer, payees=payees,
        responsible_from=case.responsible_from, lines=tuple(lines), total_pence=total,
        citation=citations.DISPUTE_RESOLVED_REIMBURSE, explanation=explanation,
        side="council" if case.dispute_kind == "council" else "NHS", bodies=bodies,
    )
