"""Committed and projected s117 spend, for oversight (Worcs 18.2 "monitor and
review the section 117 budget"; Worcs Annex 3 reports).

- committed: the eligible weekly cost of lines in force on the day, split
  council / NHS under the rule in force that day, for the pair responsible
  on the register that day;
- spent to date: what the lines cost from the start of the financial year
  (1 April) to the day;
- projected: spent to date plus what the recorded lines cost from the next
  day to the year end (31 March) at their current rates, or to their planned
  end date;
- trend: each of the last 12 calendar months' eligible spend (the current
  month to the day).

Spent, projected and trend are the statements' own line items, so a package
that moved with a transfer counts for each pair on its days, and agreed
interim dispute shares divide the side in dispute (responsibility.py). A
person's agreed decision divides only its own pair's days, committed included
(splits.py): after a move the new pair's days follow the new pair's
arrangement.

Exact pence here; suppression and rounding for publication are the
report's (hub/reports.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from hub.domain.dates import add_months
from hub.domain.money.packages import PackageLine
from hub.domain.money.responsibility import InterimSpan, PairSpan, pair_on
from hub.domain.money.splits import History, PersonDecision, rule_for, split_amount
from hub.domain.money.statements import line_items, month_bounds, month_slices


@dataclass
class Spend:
    people: set[str] = field(default_factory=set)  # with an eligible line in force on the day
    committed_weekly: list[int] = field(default_factory=lambda: [0, 0, 0])  # eligible, council, NHS
    spent_to_date: list[int] = field(default_factory=lambda: [0, 0, 0])
    projected_year: list[int] = field(default_factory=lambda: [0, 0, 0])


@dataclass
class Expenditure:
    as_of: date
    year_start: date
    year_end: date
    by_pair: dict[tuple[str, str], Spend]
    by_cohort: dict[str, Spend]
    total: Spend
    months: list[str]
    trend: dict[str, list[int]]  # month -> [eligible pence, council, NHS, people]


def financial_year(day: date) -> tuple[date, date]:
    start = date(day.year if day.month >= 4 else day.year - 1, 4, 1)
    return start, date(start.year + 1, 3, 31)


def _add(target: list[int], eligible: int, council: int, nhs: int) -> None:
    target[0] += eligible
    target[1] += council
    target[2] += nhs


def expenditure(
    lines: Iterable[PackageLine], history_for: Callable[[str, str], History],
    decisions_for: Callable[[str], Sequence[PersonDecision]], today: date,
    pairs_for: Callable[[str], Sequence[PairSpan]] = lambda _pid: (),
    interims_for: Callable[[str], Sequence[InterimSpan]] = lambda _pid: (),
    org: str | None = None,
) -> Expenditure:
    """Spend per pair charged (a line moves with responsibility and is
    divided by agreed interim shares, as in the statements); `org`: count
    only the pairs that body is part of."""
    year_start, year_end = financial_year(today)
    months = [add_months(date(today.year, today.month, 1), -i).isoformat()[:7] for i in range(11, -1, -1)]
    by_pair: dict[tuple[str, str], Spend] = defaultdict(Spend)
    by_cohort: dict[str, Spend] = defaultdict(Spend)
    total = Spend()
    trend = {m: [0, 0, 0, 0] for m in months}
    trend_people: dict[str, set[str]] = {m: set() for m in months}

    def mine(council: str, icb: str) -> bool:
        return org is None or org in (council, icb)

    for line in lines:
        decisions = decisions_for(line.person_id)
        pairs, interims = pairs_for(line.person_id), interims_for(line.person_id)

        def targets(council: str, icb: str) -> tuple[Spend, ...]:
            return (by_pair[(council, icb)], by_cohort[line.cohort], total)  # noqa: B023

        if line.in_force(today):
            (council, icb), _span = pair_on(pairs, today, (line.council, line.icb))
            weekly = int(line.weekly_cost.quantize(Decimal(1), rounding=ROUND_HALF_UP))
            s = split_amount(line, weekly, rule_for(line, today, history_for(council, icb), decisions, (council, icb)))
            eligible = weekly - s.excluded_pence
            if eligible and mine(council, icb):
                for t in targets(council, icb):
                    t.people.add(line.person_id)
                    _add(t.committed_weekly, eligible, s.council_pence, s.commissioner_pence)
        for first, last, spent in ((year_start, today, True), (today + timedelta(days=1), year_end, False)):
            # Month by month, as the statements: the spend is what they charged each body, to the penny.
            for i in (i for a, b in month_slices(first, last)
                      for i in line_items(line, a, b, history_for, decisions, pairs, interims)):
                if not mine(i.council, i.icb):
                    continue
                for t in targets(i.council, i.icb):
                    if spent:
                        _add(t.spent_to_date, i.eligible_pence, i.council_pence, i.icb_pence)
                    _add(t.projected_year, i.eligible_pence, i.council_pence, i.icb_pence)
        for m in months:
            first, last = month_bounds(m)
            for i in line_items(line, first, min(last, today), history_for, decisions, pairs, interims):
                if i.eligible_pence and mine(i.council, i.icb):
                    t = trend[m]
                    t[0] += i.eligible_pence
                    t[1] += i.council_pence
                    t[2] += i.icb_pence
                    trend_people[m].add(line.person_id)
    for m in months:
        trend[m][3] = len(trend_people[m])
    return Expenditure(today, year_start, year_end, dict(by_pair), dict(by_cohort), total, months, trend)
