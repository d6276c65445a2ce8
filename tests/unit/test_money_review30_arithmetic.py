"""Outside review 30 (a council finance officer and an ICB continuing-healthcare
finance lead reconciling the monthly recharge statement): pence are never
created or lost by where a line's days are cut.

Each period used to be costed on its own (weekly cost x its days / 7, rounded
once), so a transfer mid-month, a change of split or a month's edge added or
dropped a penny: 1p a week for 31 days costs 4p (4.43p), but the 4 days before
a transfer and the 27 after it cost 1p + 4p = 5p; a leap year's twelve
monthly statements at 1p a week came to 48p where the year costs 52p. Now a
period costs what the line had cost by its last day less what it had cost by
the day before its first, so any cut of a line's days adds up to the whole."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from hub.domain.money import statement_for
from hub.domain.money.expenditure import expenditure
from hub.domain.money.responsibility import PairSpan
from hub.domain.money.statements import month_bounds, period_cost
from tests.unit.domain.fakes import BOB_ICB, BUCKINGHAMSHIRE, HW_ICB, WORCESTERSHIRE
from tests.unit.domain.test_money import BOOK, D, line

WORCS, BUCKS = WORCESTERSHIRE, BUCKINGHAMSHIRE
HISTORY = BOOK.funding_history


def _items(st_):  # noqa: ANN001, ANN202
    return [i for p in st_.persons for i in p.lines]


def _cost(statements) -> int:  # noqa: ANN001
    return sum(i.cost_pence for s in statements for i in _items(s))


@pytest.mark.parametrize("weekly", [1, 3, 5, 99, 70_001, 123_457])
@pytest.mark.parametrize("cut", [2, 5, 12, 15, 28])
def test_a_transfer_mid_month_neither_creates_nor_loses_a_penny(weekly, cut):
    """October (31 days) charged to Worcs / H&W ICB until the transfer, Bucks / BOB ICB after: the two
    statements add up to what October costs at that rate, rounded once."""
    ln = line(start=D("2026-10-01"), weekly_cost_pence=weekly)
    spans = (PairSpan(D("2026-10-01") + timedelta(days=cut), BUCKS, BOB_ICB, "re-detained"),)
    both = [statement_for("2026-10", c, i, [ln], HISTORY, pairs=lambda _p: spans)
            for c, i in ((WORCS, HW_ICB), (BUCKS, BOB_ICB))]
    assert all(_items(s) for s in both)
    assert _cost(both) == period_cost(Decimal(weekly), 31)
    for s in both:  # each body's shares still add up to each item's cost
        for i in _items(s):
            assert i.council_pence + i.icb_pence + i.awaiting_panel_pence + i.excluded_pence == i.cost_pence


@pytest.mark.parametrize(("year", "days"), [(2028, 366), (2027, 365)])  # 2028 is a leap year
def test_a_years_monthly_statements_add_up_to_the_year(year, days):
    """January to December, each month stated on its own (28 or 29-day February, 30 and 31-day months):
    the twelve statements cost what the year costs, 1p and 3p a week as much as 70,001p."""
    for weekly in (1, 3, 70_001):
        ln = line(start=date(year, 1, 1), weekly_cost_pence=weekly)
        months = [statement_for(f"{year}-{m:02d}", WORCS, HW_ICB, [ln], HISTORY) for m in range(1, 13)]
        assert sum(month_bounds(s.month)[1].day for s in months) == days
        assert _cost(months) == period_cost(Decimal(weekly), days), weekly


def test_a_change_of_split_mid_month_keeps_the_months_cost():
    """The pair's arrangement changes on 5 March 2027: the two periods (4 and 27 days, 0.57p and 3.86p at 1p a
    week) cost 1p + 4p before; now they add up to March, 4p (4.43p)."""
    ln = line(start=D("2027-03-01"), weekly_cost_pence=1)
    base = HISTORY(WORCS, HW_ICB)
    history = (*base, (D("2027-03-05"), base[0][1]))  # the same terms again from a new date
    s = statement_for("2027-03", WORCS, HW_ICB, [ln], history)
    assert [(i.first.day, i.last.day) for i in _items(s)] == [(1, 4), (5, 31)]
    assert _cost([s]) == period_cost(Decimal(1), 31) == 4


def test_the_oversight_spend_to_date_is_the_statements_sum():
    """The register summary's spent-to-date (1 April to the day) was costed as one period while the
    statements cut it by month: at 1p a week they differed. Now they agree to the penny."""
    ln = line(start=D("2026-04-01"), weekly_cost_pence=1)
    today = D("2026-10-31")
    exp = expenditure([ln], HISTORY, lambda _pid: (), today)
    months = [statement_for(f"2026-{m:02d}", WORCS, HW_ICB, [ln], HISTORY) for m in range(4, 11)]
    assert exp.total.spent_to_date[0] == _cost(months) == period_cost(Decimal(1), (today - ln.start).days + 1)


def test_the_oversight_shares_to_date_are_the_statements_shares():
    """Spent to date's council and NHS shares were rounded over one stretch from 1 April while the
    statements round each month's: they differed by pennies (Worcs 60:40 at 13p a week). Now they agree."""
    lines = [line(start=D("2026-04-03"), weekly_cost_pence=13), line(package_id="P2", start=D("2026-05-09"),
                                                                     weekly_cost_pence=1_001)]
    today = D("2026-10-31")
    exp = expenditure(lines, HISTORY, lambda _pid: (), today)
    months = [statement_for(f"2026-{m:02d}", WORCS, HW_ICB, lines, HISTORY) for m in range(4, 11)]
    items = [i for s in months for i in _items(s)]
    assert exp.total.spent_to_date == [sum(i.eligible_pence for i in items), sum(i.council_pence for i in items),
                                       sum(i.icb_pence for i in items)]
