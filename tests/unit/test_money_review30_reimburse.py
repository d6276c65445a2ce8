"""Outside review 30: what a dispute's resolution reimburses is what the
monthly statements charged each body under the interim shares, to the penny.

The reimbursement (hub/money/responsibility.py CarriedCosts) costed the
interim as one stretch of days, while the statements each body paid were cut
at the months' edges; each period's shares are rounded on their own, so the
two could differ by pennies and the finance officers could not reconcile the
reimbursement with the statements they had paid. It now sums the interim's
days month by month, as the statements do."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import pytest

from hub.domain.money import statement_for
from hub.domain.money.responsibility import InterimSpan
from hub.money.responsibility import CarriedCosts
from tests.unit.domain.fakes import BUCKINGHAMSHIRE, HW_ICB, WORCESTERSHIRE
from tests.unit.domain.test_money import BOOK, D, line

WORCS, BUCKS = WORCESTERSHIRE, BUCKINGHAMSHIRE


@pytest.mark.parametrize("weekly", [1, 5, 13, 70_001, 99_999])
def test_the_interim_reimbursed_is_what_the_statements_charged(weekly):
    lines = [line(start=D("2026-08-03"), weekly_cost_pence=weekly),
             line(package_id="P2", start=D("2026-09-17"), weekly_cost_pence=weekly * 3 + 1)]
    first, last = D("2026-09-09"), D("2026-11-21")
    interim = InterimSpan("D1", "council", first, last, WORCS, ((WORCS, 3_333), (BUCKS, 6_667)), "Worcs 15.4")
    carried = CarriedCosts(lines, BOOK, (), (), (interim,)).carried("p1", "council", first, last)
    charged: dict[str, int] = defaultdict(int)
    for month in ("2026-09", "2026-10", "2026-11"):
        for council in (WORCS, BUCKS):
            s = statement_for(month, council, HW_ICB, lines, BOOK.funding_history,
                              interims=lambda _p: (interim,))
            for p in s.persons:
                for i in p.lines:
                    if i.dispute_id == "D1" and first <= i.first and i.last <= last:
                        charged[council] += i.council_pence
    assert carried == dict(charged)
