"""A person's agreed split is its pair's (hub/domain/money/splits.py): it
applies only on days charged to the council and ICB that agreed it, ends the
day before responsibility first leaves that pair, and does not come back on a
return (responsibility.py `decision_last`). Pure: the domain functions."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.agreements import FundingAgreement, FundingKind
from hub.domain.money import PersonDecision
from hub.domain.money.responsibility import PairSpan, decision_last, decisions_ended, pair_on
from hub.domain.money.splits import rule_for
from hub.domain.money.statements import line_items
from tests.unit.domain.fakes import BOB_ICB, BUCKINGHAMSHIRE, HW_ICB, WORCESTERSHIRE
from tests.unit.domain.test_money import D, line

WORCS, BUCKS = WORCESTERSHIRE, BUCKINGHAMSHIRE
EXCEPTIONS = FundingAgreement(FundingKind.DEFAULT_WITH_EXCEPTIONS, "60:40 with exceptions", "Worcs A2.1, A2.2",
                              council_share_bp=6_000)
HISTORY = ((None, EXCEPTIONS),)  # every pair's arrangement


def history(_council: str, _icb: str):  # noqa: ANN202
    return HISTORY


def decision(eff: str, council: str = WORCS, icb: str = HW_ICB, share_bp: int = 3_000) -> PersonDecision:
    return PersonDecision("p1", "exception", share_bp, D(eff), D("2026-01-01"), D("2026-01-02"), council, icb)


W = PairSpan(D("2026-01-01"), WORCS, HW_ICB)
B = PairSpan(D("2026-08-10"), BUCKS, HW_ICB)  # the council moves
BACK = PairSpan(D("2026-10-05"), WORCS, HW_ICB)  # and comes back


def test_a_decision_ends_the_day_before_its_pair_leaves_and_stays_ended():
    d = decision("2026-06-01")
    assert decision_last(d, ()) is None
    assert decision_last(d, (W,)) is None
    assert decision_last(d, (W, B)) == D("2026-08-09")
    assert decision_last(d, (W, B, BACK)) == D("2026-08-09")  # the return does not revive it
    assert decision_last(decision("2026-10-05"), (W, B, BACK)) is None  # a new one agreed on the return
    assert decision_last(decision("2026-09-01"), (W, B, BACK)) == D("2026-08-31")  # another pair's then: never
    assert decision_last(decision("2026-09-01", BUCKS), (W, B, BACK)) == D("2026-10-04")
    assert decision_last(decision("2026-06-01", WORCS, BOB_ICB), (W,)) == D("2026-05-31")  # the ICB differs
    # An end already known is kept if earlier.
    (kept,) = decisions_ended((replace(d, last=D("2026-07-31")),), (W, B))
    assert kept.last == D("2026-07-31")
    assert decisions_ended((d,), (W, B, BACK))[0].last == D("2026-08-09")


def test_the_split_rule_applies_only_the_pair_charged_its_own_decisions():
    ln = line(start=D("2026-01-01"))  # recorded against Worcestershire and H&W ICB
    d, day = decision("2026-06-01"), D("2026-09-01")
    assert rule_for(ln, day, HISTORY, (d,)).basis == "agreed exception"  # the recorded pair's own
    assert rule_for(ln, day, HISTORY, (d,), (WORCS, HW_ICB)).basis == "agreed exception"
    assert rule_for(ln, day, HISTORY, (d,), (BUCKS, HW_ICB)).basis == "area agreement"
    assert rule_for(ln, day, HISTORY, (d,), (WORCS, BOB_ICB)).basis == "area agreement"
    ended = replace(d, last=D("2026-08-09"))
    assert rule_for(ln, D("2026-08-09"), HISTORY, (ended,), (WORCS, HW_ICB)).basis == "agreed exception"
    assert rule_for(ln, D("2026-08-10"), HISTORY, (ended,), (WORCS, HW_ICB)).basis == "area agreement"
    # Bucks' own later decision applies on its days only, whatever the order of the list.
    theirs = decision("2026-08-20", BUCKS, share_bp=2_000)
    rule = rule_for(ln, day, HISTORY, (ended, theirs), (BUCKS, HW_ICB))
    assert (rule.basis, rule.agreement.council_share_bp) == ("agreed exception", 2_000)
    assert rule_for(ln, D("2026-08-15"), HISTORY, (ended, theirs), (BUCKS, HW_ICB)).basis == "area agreement"
    assert rule_for(ln, D("2026-10-10"), HISTORY, (ended, theirs), (WORCS, HW_ICB)).basis == "area agreement"


def test_line_items_cut_where_a_decision_ends_and_charge_each_pair_its_split():
    ln = line(start=D("2026-01-01"), weekly_cost_pence=70_000)
    spans = (W, B, BACK)
    decisions = decisions_ended((decision("2026-06-01"),), spans)
    items = line_items(ln, D("2026-08-01"), D("2026-10-31"), history, decisions, spans)
    assert [(i.first, i.last, i.council, i.basis, i.council_pence) for i in items] == [
        (D("2026-08-01"), D("2026-08-09"), WORCS, "agreed exception", 27_000),  # 9 days: 90,000 at 30%
        (D("2026-08-10"), D("2026-10-04"), BUCKS, "area agreement", 336_000),  # 56 days: 560,000 at 60%
        (D("2026-10-05"), D("2026-10-31"), WORCS, "area agreement", 162_000)]  # 27 days: 270,000 at 60%
    # Without the register's spans (the recorded pair charged throughout) the end still cuts the line.
    alone = line_items(ln, D("2026-08-01"), D("2026-08-31"), history, decisions)
    assert [(i.first, i.last, i.basis) for i in alone] == [
        (D("2026-08-01"), D("2026-08-09"), "agreed exception"), (D("2026-08-10"), D("2026-08-31"), "area agreement")]
    # Another pair's decision does not cut this pair's line at all.
    other = line_items(ln, D("2026-08-01"), D("2026-08-31"), history, (decision("2026-08-15", BUCKS),))
    assert [(i.first, i.last, i.basis) for i in other] == [(D("2026-08-01"), D("2026-08-31"), "area agreement")]


PAIRS = [(WORCS, HW_ICB), (BUCKS, HW_ICB), (WORCS, BOB_ICB), (BUCKS, BOB_ICB)]
START = D("2026-06-01")


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 150), st.sampled_from(PAIRS)), max_size=4),
       st.lists(st.tuples(st.integers(0, 150), st.sampled_from(PAIRS), st.integers(0, 10_000)), max_size=4))
def test_property_a_decision_applies_only_over_an_unbroken_spell_of_its_pair(moves, agreed):
    """Each item is split by a decision exactly when one of the pair charged was agreed on or before its
    first day and that pair has been charged every day since (the register's spans from June on)."""
    spans = tuple(sorted({START + timedelta(days=n): PairSpan(START + timedelta(days=n), c, i)
                          for n, (c, i) in [(0, PAIRS[0]), *moves]}.values(), key=lambda s: s.start))
    merged: list[PairSpan] = []
    for s in spans:
        if not merged or (merged[-1].council, merged[-1].icb) != (s.council, s.icb):
            merged.append(s)
    found = sorted({n: decision((START + timedelta(days=n)).isoformat(), c, i, bp) for n, (c, i), bp in agreed}
                   .values(), key=lambda d: d.effective_from)
    decisions = decisions_ended(found, merged)
    ln = line(start=START, weekly_cost_pence=70_000)
    items = line_items(ln, START, START + timedelta(days=180), history, decisions, merged)

    def unbroken(d: PersonDecision, day) -> bool:  # noqa: ANN001
        n = (day - d.effective_from).days
        return n >= 0 and all(pair_on(merged, d.effective_from + timedelta(days=k), ("", ""))[0] == d.pair
                              for k in range(n + 1))

    for i in items:
        for day in (i.first, i.last):
            mine = [d for d in found if d.pair == (i.council, i.icb) and unbroken(d, day)]
            assert (i.basis == "agreed exception") == bool(mine), (i, found, merged)
            share = mine[-1].council_share_bp if mine else EXCEPTIONS.council_share_bp
            assert i.council_pence == int((Decimal(i.eligible_pence) * share / 10_000).quantize(
                Decimal(1), rounding=ROUND_HALF_UP))
        assert i.council_pence + i.icb_pence == i.eligible_pence
