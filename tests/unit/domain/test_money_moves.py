"""A package moves with responsibility; agreed interim dispute shares in
statements; the reimbursement statement from what each body carried."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.agreements import AreaAgreement
from hub.domain.model import ChangeType, RegisterChange
from hub.domain.money import statement_for
from hub.domain.money.responsibility import (
    InterimSpan,
    PairSpan,
    apportion,
    interim_spans,
    money_changes,
    pair_spans,
)
from hub.domain.money.statements import Totals, days_cost, line_items, period_cost
from hub.domain.workflows import machine as m
from hub.domain.workflows.settlement import reimbursement_statement
from tests.unit.domain.fakes import BOB_ICB, BUCKINGHAMSHIRE, HW_ICB, WORCESTERSHIRE
from tests.unit.domain.test_money import BOOK, D, line

WORCS, BUCKS = WORCESTERSHIRE, BUCKINGHAMSHIRE
HISTORY = BOOK.funding_history


def _items(st_):
    return [i for p in st_.persons for i in p.lines]


# ---------------------------------------------------------------- transfers

# (what moved, the span from the 15th, pair after) -- a transfer in the middle of October
MOVES = [
    ("council and ICB: re-detention elsewhere (Worcs 4.3.3, 17.1)", PairSpan(D("2026-10-15"), BUCKS, BOB_ICB, "x")),
    ("council only: ordinary residence moves (Worcs 4.3.3)", PairSpan(D("2026-10-15"), BUCKS, HW_ICB, "x")),
    ("ICB only: a resolved dispute (Worcs 4.4.8)", PairSpan(D("2026-10-15"), WORCS, BOB_ICB, "x")),
]


@pytest.mark.parametrize(("what", "span"), MOVES, ids=[m_[0] for m_ in MOVES])
def test_a_transfer_mid_month_charges_each_pair_only_its_days(what, span):
    ln = line(start=D("2026-01-01"), weekly_cost_pence=70_000)  # recorded Worcs / H&W ICB
    pairs = lambda _pid: (span,)  # noqa: E731
    old = statement_for("2026-10", WORCS, HW_ICB, [ln], HISTORY, pairs=pairs)
    new = statement_for("2026-10", span.council, span.icb, [ln], HISTORY, pairs=pairs)
    (o,), (n,) = _items(old), _items(new)
    assert (o.first, o.last, o.days) == (D("2026-10-01"), D("2026-10-14"), 14)
    assert (n.first, n.last, n.days) == (D("2026-10-15"), D("2026-10-31"), 17)
    assert o.cost_pence == period_cost(ln.weekly_cost, 14) == 140_000
    assert n.cost_pence == period_cost(ln.weekly_cost, 17) == 170_000
    # Up to the move Worcs' 60:40 (Worcs A2.1); from it, the new pair's own arrangement.
    assert (o.council_pence, o.icb_pence) == (84_000, 56_000) and o.note == ""
    expected = BOOK.funding_on(span.council, span.icb, D("2026-10-15")).council_share_bp
    assert n.council_pence == round(170_000 * expected / 10_000)
    assert n.council_pence + n.icb_pence == n.eligible_pence
    assert "responsible on the register from 2026-10-15" in n.note
    # Nothing is rewritten for September: stated by the old pair, in full.
    sep = statement_for("2026-09", WORCS, HW_ICB, [ln], HISTORY, pairs=pairs)
    assert _items(sep)[0].days == 30 and _items(sep)[0].cost_pence == period_cost(ln.weekly_cost, 30)
    assert statement_for("2026-09", span.council, span.icb, [ln], HISTORY, pairs=pairs).persons == ()
    # November belongs to the new pair only.
    assert statement_for("2026-11", WORCS, HW_ICB, [ln], HISTORY, pairs=pairs).persons == ()
    assert _items(statement_for("2026-11", span.council, span.icb, [ln], HISTORY, pairs=pairs))[0].days == 30


def test_a_transfer_on_the_first_of_the_month_and_a_price_change_after_it():
    v1 = line(start=D("2026-01-01"), end=D("2026-10-19"), weekly_cost_pence=70_000)
    v2 = line(version=2, start=D("2026-10-20"), weekly_cost_pence=77_000)
    pairs = lambda _pid: (PairSpan(D("2026-10-01"), BUCKS, BOB_ICB),)  # noqa: E731
    assert statement_for("2026-10", WORCS, HW_ICB, [v1, v2], HISTORY, pairs=pairs).persons == ()
    items = _items(statement_for("2026-10", BUCKS, BOB_ICB, [v1, v2], HISTORY, pairs=pairs))
    assert [(i.version, i.days, i.cost_pence) for i in items] == [(1, 19, 190_000), (2, 12, 132_000)]


def test_pair_spans_merge_equal_neighbours_and_skip_days_without_both_bodies():
    spans = pair_spans([(D("2026-10-20"), BUCKS, BOB_ICB, "b"), (D("2026-10-01"), WORCS, HW_ICB, "a"),
                        (D("2026-10-10"), WORCS, HW_ICB, "a again"), (D("2026-10-12"), None, HW_ICB, "")])
    assert spans == (PairSpan(D("2026-10-01"), WORCS, HW_ICB, "a"), PairSpan(D("2026-10-20"), BUCKS, BOB_ICB, "b"))


def _change(kind: ChangeType, effective: str, notified: str) -> RegisterChange:
    return RegisterChange(change_id="c", person_id="p1", change_type=kind, effective_date=D(effective),
                          notified_on=D(notified), recorded_on=D(notified))


def test_a_resolution_counts_for_money_from_the_day_it_is_made():
    late = money_changes([_change(ChangeType.DISPUTE_RESOLVED, "2026-05-01", "2026-10-15"),
                          _change(ChangeType.MOVED, "2026-05-01", "2026-10-15")])
    assert late[0].effective_date == D("2026-10-15")  # the interim is settled by reimbursement instead
    assert late[1].effective_date == D("2026-05-01")  # any other change counts from its effective date


# -------------------------------------------------------------- apportioning

@pytest.mark.parametrize(("amount", "shares", "lead", "parts"), [
    (100_001, ((HW_ICB, 5_000), (BOB_ICB, 5_000)), HW_ICB, {BOB_ICB: 50_001, HW_ICB: 50_000}),
    (100_001, ((HW_ICB, 5_000), (BOB_ICB, 5_000)), BOB_ICB, {HW_ICB: 50_001, BOB_ICB: 50_000}),
    (1_000, ((HW_ICB, 3_333), (BOB_ICB, 6_667)), HW_ICB, {HW_ICB: 333, BOB_ICB: 667}),
    (999, ((HW_ICB, 10_000), (BOB_ICB, 0)), BOB_ICB, {HW_ICB: 999}),
    (0, ((HW_ICB, 5_000), (BOB_ICB, 5_000)), HW_ICB, {HW_ICB: 0, BOB_ICB: 0}),
])
def test_apportion_rounds_each_part_and_the_largest_share_takes_the_rest(amount, shares, lead, parts):
    assert apportion(amount, shares, lead) == parts
    assert sum(apportion(amount, shares, lead).values()) == amount


# ---------------------------------------------------------- interim shares

def test_commissioner_dispute_interim_divides_the_nhs_share_between_icbs():
    """Worcs 4.4.8, 15.6: one ICB leads, costs jointly funded pending resolution."""
    ln = line(start=D("2026-01-01"), weekly_cost_pence=70_000)  # Worcs 60:40: council 42,000 a week
    interim = InterimSpan("D-1", "commissioner", D("2026-10-05"), D("2026-10-11"), HW_ICB,
                          ((HW_ICB, 7_000), (BOB_ICB, 3_000)), "Worcs 4.4.8, 15.6")
    shares = lambda _pid: (interim,)  # noqa: E731
    lead = [i for i in _items(statement_for("2026-10", WORCS, HW_ICB, [ln], HISTORY, interims=shares))
            if i.dispute_id]
    other = _items(statement_for("2026-10", WORCS, BOB_ICB, [ln], HISTORY, interims=shares))
    assert len(lead) == 1 and len(other) == 1
    (a,), (b,) = lead, other
    assert (a.first, a.last, b.first, b.last) == (D("2026-10-05"), D("2026-10-11"), D("2026-10-05"), D("2026-10-11"))
    assert (a.council_pence, a.icb_pence) == (42_000, 19_600)  # the council's 60% stays whole; 70% of 28,000
    assert (b.council_pence, b.icb_pence, b.cost_pence) == (0, 8_400, 8_400)  # 30% of the NHS share
    assert a.cost_pence + b.cost_pence == 70_000
    assert b.icb_owes_council_pence == 8_400 and a.icb_owes_council_pence == 19_600  # council-paid line
    assert a.interim_share_bp == 7_000 and b.interim_share_bp == 3_000
    assert "dispute D-1" in b.note and "Worcs 4.4.8, 15.6" in b.note and "reimburse" in b.note
    # Outside the interim: the ordinary split, all with the recorded pair.
    whole = _items(statement_for("2026-10", WORCS, HW_ICB, [ln], HISTORY, interims=shares))
    assert [i.days for i in whole if not i.dispute_id] == [4, 20]


def test_council_dispute_interim_divides_the_council_share_between_councils():
    """Worcs 4.3.4: the councils' agreed shares of the council side; the ICB's share is unchanged."""
    ln = line(start=D("2026-01-01"), weekly_cost_pence=70_000, paid_by="icb")
    interim = InterimSpan("D-2", "council", D("2026-10-05"), None, WORCS, ((WORCS, 5_000), (BUCKS, 5_000)),
                          "Worcs 4.3.4")
    shares = lambda _pid: (interim,)  # noqa: E731
    a = [i for i in _items(statement_for("2026-10", WORCS, HW_ICB, [ln], HISTORY, interims=shares)) if i.dispute_id]
    b = _items(statement_for("2026-10", BUCKS, HW_ICB, [ln], HISTORY, interims=shares))
    assert [(i.first, i.last) for i in a + b] == [(D("2026-10-05"), D("2026-10-31"))] * 2
    cost = period_cost(ln.weekly_cost, 27)  # 270,000
    council, nhs = round(cost * 0.6), cost - round(cost * 0.6)
    assert (a[0].council_pence, a[0].icb_pence) == (council // 2, nhs)
    assert (b[0].council_pence, b[0].icb_pence) == (council // 2, 0)
    assert b[0].council_owes_icb_pence == council // 2  # an ICB-paid line: each council owes its part


def test_interim_spans_from_a_case_only_agreed_terms_until_resolution():
    area = AreaAgreement(name="t")
    case, _ = m.raise_dispute(case_id="d1", person_id="p1", kind="commissioner", parties=(HW_ICB, BOB_ICB),
                              raised_by=BOB_ICB, on=D("2026-09-20"), reason="r", meeting_needs=HW_ICB, area=area,
                              holidays=frozenset(), dispute_id="D-9")
    assert interim_spans([case]) == ()  # the hub's 50:50 default is not agreed: not applied
    case, _ = m.agree_interim(case, HW_ICB, D("2026-10-05"), HW_ICB, {HW_ICB: 6_000, BOB_ICB: 4_000})
    case, _ = m.agree_interim(case, BOB_ICB, D("2026-10-06"), HW_ICB, {HW_ICB: 6_000, BOB_ICB: 4_000})
    (open_,) = interim_spans([case])
    assert (open_.first, open_.last, open_.kind, open_.lead_body) == (D("2026-10-06"), None, "commissioner", HW_ICB)
    case, _ = m.resolve(case, HW_ICB, D("2026-10-20"), BOB_ICB, D("2026-09-20"))  # proposed; agreed by the other ICB (Worcs 15.5)
    case, _ = m.resolve(case, BOB_ICB, D("2026-10-20"), BOB_ICB, D("2026-09-20"))
    (closed,) = interim_spans([case])
    assert closed.last == D("2026-10-19")


# --------------------------------------------------- reimbursement from costs

class _Carried:
    """What each body carried, from the statement machinery (as hub/money does)."""

    def __init__(self, lines, pairs=(), interims=()):
        self.lines, self.pairs, self.interims = lines, pairs, interims

    def carried(self, person_id, kind, start, end):  # noqa: ANN001, ANN201
        out: dict[str, int] = defaultdict(int)
        for ln in self.lines:
            for i in line_items(ln, start, end, HISTORY, (), self.pairs, self.interims):
                if kind == "commissioner":
                    out[i.icb] += i.icb_pence
                else:
                    out[i.council] += i.council_pence
        return dict(out)


def test_reimbursement_uses_what_each_body_paid_against_what_it_owed():
    area = AreaAgreement(name="t")
    case, _ = m.raise_dispute(case_id="d1", person_id="p1", kind="commissioner", parties=(HW_ICB, BOB_ICB),
                              raised_by=BOB_ICB, on=D("2026-10-01"), reason="r", meeting_needs=HW_ICB, area=area,
                              holidays=frozenset(), dispute_id="D-9")
    case, _ = m.agree_interim(case, HW_ICB, D("2026-10-08"), HW_ICB, {HW_ICB: 5_000, BOB_ICB: 5_000})
    case, _ = m.agree_interim(case, BOB_ICB, D("2026-10-08"), HW_ICB, {HW_ICB: 5_000, BOB_ICB: 5_000})
    case, _ = m.resolve(case, HW_ICB, D("2026-10-22"), BOB_ICB, D("2026-10-01"))  # proposed; agreed by the other ICB (Worcs 15.5)
    case, _ = m.resolve(case, BOB_ICB, D("2026-10-22"), BOB_ICB, D("2026-10-01"))
    ln = line(start=D("2026-01-01"), weekly_cost_pence=70_000)  # NHS share 28,000 a week
    s = reimbursement_statement(case, _Carried([ln], (), interim_spans([case])))
    # 1-7 Oct: no interim agreed, H&W carried the NHS share under the current arrangements (Worcs 8.5);
    # 8-21 Oct: half each. BOB ICB was found responsible from 1 Oct and reimburses H&W ICB all it carried.
    assert [(x.carried_by, x.start, x.end, x.amount_pence) for x in s.lines] == [
        (HW_ICB, D("2026-10-01"), D("2026-10-07"), 28_000), (HW_ICB, D("2026-10-08"), D("2026-10-21"), 28_000)]
    assert s.total_pence == 56_000 and s.payer == BOB_ICB
    bodies = {b.org: b for b in s.bodies}
    assert (bodies[HW_ICB].paid_pence, bodies[HW_ICB].owed_pence, bodies[HW_ICB].balance_pence) == (56_000, 0, 56_000)
    assert (bodies[BOB_ICB].paid_pence, bodies[BOB_ICB].owed_pence) == (28_000, 84_000)
    assert bodies[BOB_ICB].balance_pence == -56_000


# --------------------------------------------------------------- property

line_st = st.builds(
    lambda pid, pkg, start, days, weekly, paid, cohort, s17: line(
        person_id=f"p{pid}", package_id=f"P{pkg}", start=start,
        end=None if days is None else start + timedelta(days=days), weekly_cost_pence=weekly, paid_by=paid,
        cohort=cohort, s17_leave=s17),
    st.integers(0, 3), st.integers(0, 2), st.dates(D("2026-08-01"), D("2026-10-31")), st.none() | st.integers(0, 60),
    st.integers(0, 3_000_000), st.sampled_from(["council", "icb"]), st.sampled_from(["adult", "learning-disability"]),
    st.booleans())
PAIRS = [(WORCS, HW_ICB), (BUCKS, BOB_ICB), (BUCKS, HW_ICB), (WORCS, BOB_ICB)]


@settings(max_examples=120, deadline=None)
@given(st.lists(line_st, max_size=8), st.lists(st.tuples(st.dates(D("2026-09-15"), D("2026-11-15")),
                                                         st.sampled_from(PAIRS)), max_size=3),
       st.none() | st.tuples(st.sampled_from(["council", "commissioner"]), st.dates(D("2026-09-20"), D("2026-10-31")),
                             st.none() | st.integers(0, 40), st.integers(0, 10_000)))
def test_property_moves_and_interims_keep_totals_and_shares(lines, moves, dispute):
    lines = [replace(ln, package_id=f"P{n}") for n, ln in enumerate(lines)]
    spans = pair_spans((d, c, i, "") for d, (c, i) in moves)
    interims: tuple[InterimSpan, ...] = ()
    if dispute is not None:
        kind, first, days, bp = dispute
        parties = (WORCS, BUCKS) if kind == "council" else (HW_ICB, BOB_ICB)
        interims = (InterimSpan("D", kind, first, None if days is None else first + timedelta(days=days),
                                parties[0], ((parties[0], bp), (parties[1], 10_000 - bp)), "c"),)
    seen = {(c, i) for c, i in PAIRS}
    statements = [statement_for("2026-10", c, i, lines, HISTORY, pairs=lambda _p: spans, interims=lambda _p: interims)
                  for c, i in sorted(seen)]
    by_period: dict[tuple, int] = defaultdict(int)
    for st_ in statements:
        items = _items(st_)
        for i in items:
            assert i.council_pence + i.icb_pence + i.awaiting_panel_pence == i.eligible_pence
            assert i.eligible_pence + i.excluded_pence == i.cost_pence
            assert min(i.council_pence, i.icb_pence, i.cost_pence) >= 0
            assert (i.council, i.icb) == (st_.council, st_.icb)
            by_period[(i.person_id, i.package_id, i.version, i.first, i.last, i.weekly_cost_pence)] += i.cost_pence
        for p in st_.persons:
            assert p.totals == Totals.of(p.lines)
        assert st_.totals == Totals.of(items)
    # Every day of every line is charged exactly once across the pairs, and a
    # period's parts add up to its whole cost (the two sides to the eligible cost).
    first, last = D("2026-10-01"), D("2026-10-31")
    charged_days: dict[tuple, int] = defaultdict(int)
    since = {(ln.person_id, ln.package_id, ln.version): ln.start for ln in lines}
    for (pid, pkg, version, f, la, weekly), cost in by_period.items():
        assert cost == days_cost(weekly, since[(pid, pkg, version)], f, la)
    for key, _cost in {(k[0], k[1], k[2], k[3], k[4]): 0 for k in by_period}.items():
        charged_days[key[:3]] += (key[4] - key[3]).days + 1
    for ln in lines:
        start, end = max(first, ln.start), min(last, ln.end or last)
        if end >= start:
            assert charged_days[(ln.person_id, ln.package_id, ln.version)] == (end - start).days + 1


def test_expenditure_follows_the_package_to_the_new_pair():
    from hub.domain.money.expenditure import expenditure
    ln = line(start=D("2026-10-01"), weekly_cost_pence=70_000)
    spans = (PairSpan(D("2026-10-15"), BUCKS, BOB_ICB),)
    exp = expenditure([ln], HISTORY, lambda _pid: (), D("2026-10-31"), lambda _pid: spans)
    old, new = exp.by_pair[(WORCS, HW_ICB)], exp.by_pair[(BUCKS, BOB_ICB)]
    assert old.spent_to_date[0] == 140_000 and new.spent_to_date[0] == 170_000
    assert old.committed_weekly == [0, 0, 0] and new.committed_weekly[0] == 70_000 and new.people == {"p1"}
    assert old.projected_year == old.spent_to_date  # nothing more for the old pair
    only_worcs = expenditure([ln], HISTORY, lambda _pid: (), D("2026-10-31"), lambda _pid: spans, org=WORCS)
    assert set(only_worcs.by_pair) == {(WORCS, HW_ICB)} and only_worcs.total.spent_to_date[0] == 140_000
