"""Monthly recharge statements between a council and an ICB.

For a month and a pair of bodies: every package line the pair funds, cut at
each day the split changes (a new arrangement for the pair, a person's
decision) and at the month's edges, each piece costed by the day and split
under the rule in force on it. The body that pays the provider recharges the
other its share: a council-paid line makes the ICB owe the council the NHS
share, an ICB-paid line makes the council owe the ICB the council share.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from hub.domain.funding import LineSplit
from hub.domain.money.packages import PackageLine
from hub.domain.money.splits import History, PersonDecision, rule_for, split_amount

ROUNDING_RULES = (
    "Amounts are whole pence. A line's weekly cost is exact (a unit cost times units a week is not rounded). "
    "Each line is cut into periods of consecutive days with one split; a period costs weekly cost x days / 7, "
    "rounded half up to a penny, once. The council's share of a period is its cost x the council's percentage, "
    "rounded half up to a penny; the NHS share is the rest, so the two shares always add up to the eligible "
    "cost. Every total is a sum of the periods' pence: nothing is rounded above a period, so totals reconcile "
    "to the line items exactly."
)
PENNY = Decimal(1)


def month_bounds(month: str) -> tuple[date, date]:
    """'2026-10' -> (2026-10-01, 2026-10-31). Raises ValueError for anything else."""
    if len(month) != 7 or month[4] != "-":
        raise ValueError("must be a month as YYYY-MM")
    year, mon = int(month[:4]), int(month[5:])
    first = date(year, mon, 1)
    return first, date(year, mon, calendar.monthrange(year, mon)[1])


def period_cost(weekly: Decimal, days: int) -> int:
    return int((weekly * days / 7).quantize(PENNY, rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class Period:
    first: date
    last: date
    split: LineSplit
    basis: str
    arrangement: str

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def periods(line: PackageLine, first: date, last: date, history: History,
            decisions: Sequence[PersonDecision] = ()) -> list[Period]:
    """The line's cost between `first` and `last` (inclusive), cut where the split changes."""
    start = max(first, line.start)
    end = last if line.end is None else min(last, line.end)
    if end < start:
        return []
    cuts = {start}
    cuts.update(d for d, _a in history[1:] if d is not None and start < d <= end)
    cuts.update(d.effective_from for d in decisions if start < d.effective_from <= end)
    ordered = sorted(cuts)
    out = []
    weekly = line.weekly_cost
    for i, cut in enumerate(ordered):
        stop = ordered[i + 1] - timedelta(days=1) if i + 1 < len(ordered) else end
        rule = rule_for(line, cut, history, decisions)
        days = (stop - cut).days + 1
        out.append(Period(cut, stop, split_amount(line, period_cost(weekly, days), rule), rule.basis,
                          rule.agreement.name))
    return out


@dataclass(frozen=True, slots=True)
class LineItem:
    person_id: str
    package_id: str
    version: int
    service_type: str
    provider: str  # "ods:RNU" / "council:BCC-PRV-1"
    paid_by: str
    cohort: str
    first: date
    last: date
    days: int
    weekly_cost_pence: Decimal
    cost_pence: int  # the period's whole cost
    eligible_pence: int  # of which s117 (council + NHS + awaiting a panel)
    council_pence: int
    icb_pence: int
    excluded_pence: int
    awaiting_panel_pence: int
    icb_owes_council_pence: int
    council_owes_icb_pence: int
    basis: str
    arrangement: str
    explanation: str
    citation: str


@dataclass(frozen=True, slots=True)
class Totals:
    cost_pence: int = 0
    eligible_pence: int = 0
    council_pence: int = 0
    icb_pence: int = 0
    excluded_pence: int = 0
    awaiting_panel_pence: int = 0
    icb_owes_council_pence: int = 0
    council_owes_icb_pence: int = 0

    @property
    def net_icb_to_council_pence(self) -> int:
        """Positive: the ICB pays the council this much; negative: the council pays the ICB."""
        return self.icb_owes_council_pence - self.council_owes_icb_pence

    @classmethod
    def of(cls, items: Iterable[LineItem | Totals]) -> Totals:
        names = cls.__dataclass_fields__
        sums = dict.fromkeys(names, 0)
        for item in items:
            for n in names:
                sums[n] += getattr(item, n)
        return cls(**sums)


@dataclass(frozen=True, slots=True)
class PersonStatement:
    person_id: str
    lines: tuple[LineItem, ...]
    totals: Totals


@dataclass(frozen=True, slots=True)
class Statement:
    month: str
    first: date
    last: date
    council: str
    icb: str
    persons: tuple[PersonStatement, ...]
    totals: Totals
    rounding: str = ROUNDING_RULES


def line_items(line: PackageLine, first: date, last: date, history: History,
               decisions: Sequence[PersonDecision] = ()) -> list[LineItem]:
    items = []
    provider = f"{line.provider.kind}:{line.provider.code}"
    for p in periods(line, first, last, history, decisions):
        s = p.split
        eligible = s.line.amount_pence - s.excluded_pence
        awaiting = eligible - s.council_pence - s.commissioner_pence
        icb_owes = s.commissioner_pence if line.paid_by == "council" else 0
        council_owes = s.council_pence if line.paid_by == "icb" else 0
        items.append(LineItem(
            person_id=line.person_id, package_id=line.package_id, version=line.version,
            service_type=line.service_type, provider=provider, paid_by=line.paid_by, cohort=line.cohort,
            first=p.first, last=p.last, days=p.days, weekly_cost_pence=line.weekly_cost,
            cost_pence=s.line.amount_pence, eligible_pence=eligible, council_pence=s.council_pence,
            icb_pence=s.commissioner_pence, excluded_pence=s.excluded_pence, awaiting_panel_pence=awaiting,
            icb_owes_council_pence=icb_owes, council_owes_icb_pence=council_owes, basis=p.basis,
            arrangement=p.arrangement, explanation=s.explanation, citation=s.citation,
        ))
    return items


def statement_for(
    month: str, council: str, icb: str, lines: Iterable[PackageLine], history: History,
    decisions: Callable[[str], Sequence[PersonDecision]] = lambda _pid: (),
) -> Statement:
    """The pair's statement for `month` from the lines they fund (others are ignored)."""
    first, last = month_bounds(month)
    by_person: dict[str, list[LineItem]] = {}
    for line in lines:
        if line.council != council or line.icb != icb or not line.overlaps(first, last):
            continue
        by_person.setdefault(line.person_id, []).extend(
            line_items(line, first, last, history, decisions(line.person_id)))
    persons = []
    for pid in sorted(by_person):
        items = tuple(sorted(by_person[pid], key=lambda i: (i.package_id, i.first)))
        persons.append(PersonStatement(pid, items, Totals.of(items)))
    return Statement(month, first, last, council, icb, tuple(persons), Totals.of(p.totals for p in persons))
