"""Aftercare packages and money: split rules as data, exclusions, day
proration, statements (amounts in pence)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.agreements_loader import AgreementsError, agreements_from_mapping, load_agreements
from hub.domain.agreements import AgreementBook, FundingAgreement, FundingChange, FundingKind, NeedTag as T
from hub.domain.money import (
    Exclusion,
    PackageAction,
    PackageLine,
    PersonDecision,
    Provider,
    apply_action,
    month_bounds,
    statement_for,
)
from hub.domain.money.splits import decision_problem
from hub.domain.money.statements import Totals, line_items
from tests.unit.domain.fakes import BOB_ICB, BUCKINGHAMSHIRE, HARROW, HW_ICB, NWL_ICB, WORCESTERSHIRE

BOOK = load_agreements(Path(__file__).parents[3] / "contracts" / "area-agreements.yaml")
D = date.fromisoformat
FOI_PANEL = FundingAgreement(kind=FundingKind.PANEL, name="CCG joint panel", citation="FOI Q1",
                             cohort_shares=(("learning-disability", 5_000), ("children-young-people", 5_000)))
AGREED = dict(council_agreed_on=D("2026-01-01"), commissioner_agreed_on=D("2026-01-02"))
WORCS_AGREED = dict(AGREED, council=WORCESTERSHIRE, icb=HW_ICB)  # line()'s pair agreed it


def line(**kw) -> PackageLine:
    base = dict(source="c1", package_id="P1", version=1, person_id="p1", council=WORCESTERSHIRE, icb=HW_ICB,
                paid_by="council", service_type="supported accommodation", provider=Provider("council", "PRV-1"),
                need=T.SOCIAL_CARE, start=D("2026-01-01"), weekly_cost_pence=70_000)
    return PackageLine(**{**base, **kw})


def hist(council, icb):
    return BOOK.funding_history(council, icb)


def one_week(ln: PackageLine, history, decisions=()):
    """The line's split over 2026-10-05..11 (7 days: exactly the weekly cost)."""
    items = line_items(ln, D("2026-10-05"), D("2026-10-11"), history, decisions)
    assert len(items) == 1
    i = items[0]
    return i.council_pence, i.icb_pence, i.excluded_pence, i.awaiting_panel_pence, i.citation


# (rule, paragraph, line, history, decisions, council, icb, excluded, awaiting, citation fragment)
RULES = [
    ("fixed split for everyone", "Harrow report (before the matrix); FOI Q2a", line(council=HARROW, icb=BOB_ICB),
     hist(HARROW, BOB_ICB), (), 35_000, 35_000, 0, 0, "FOI Q2a"),
    ("needs matrix: the result recorded at review", "Harrow matrix report, Section 2",
     line(council=HARROW, icb=NWL_ICB), hist(HARROW, NWL_ICB),
     (PersonDecision("p1", "matrix", 2_500, D("2026-06-01"), reference="review 2026-06", council=HARROW, icb=NWL_ICB,
                     **AGREED),),
     17_500, 52_500, 0, 0, "Harrow matrix"),
    ("needs matrix without a result: the need's tag", "Harrow matrix report, Section 2",
     line(council=HARROW, icb=NWL_ICB, service_type="psychological therapy"), hist(HARROW, NWL_ICB), (),
     0, 70_000, 0, 0, "Harrow matrix"),
    ("default 60:40", "Worcs A2.1", line(), hist(WORCESTERSHIRE, HW_ICB), (), 42_000, 28_000, 0, 0, "Worcs A2.1"),
    ("default with an agreed exception", "Worcs A2.2, A2.3", line(), hist(WORCESTERSHIRE, HW_ICB),
     (PersonDecision("p1", "exception", 8_000, D("2026-02-01"), **WORCS_AGREED),), 56_000, 14_000, 0, 0, "Worcs A2.2"),
    ("aligned budget at the year's percentage", "Bucks 'Aligned Budget Funding Split'",
     line(council=BUCKINGHAMSHIRE, icb=BOB_ICB), hist(BUCKINGHAMSHIRE, BOB_ICB), (), 37_751, 32_249, 0, 0,
     "Bucks 'Aligned"),
    ("panel decision for the case", "FOI Q1", line(), ((None, FOI_PANEL),),
     (PersonDecision("p1", "panel", 7_000, D("2026-03-01"), **WORCS_AGREED),), 49_000, 21_000, 0, 0, "FOI Q1"),
    ("panel not yet decided: awaiting", "FOI Q1", line(), ((None, FOI_PANEL),), (), 0, 0, 0, 70_000, "FOI Q1"),
    ("cohort: learning disability 50:50 under a panel area", "FOI Q2a", line(cohort="learning-disability"),
     ((None, FOI_PANEL),), (PersonDecision("p1", "panel", 7_000, D("2026-03-01"), **WORCS_AGREED),),
     35_000, 35_000, 0, 0, "FOI Q2a"),
    ("cohort: children and young people 50:50", "FOI Q2a", line(cohort="children-young-people"),
     ((None, FOI_PANEL),), (), 35_000, 35_000, 0, 0, "FOI Q2a"),
    ("s17 leave: the NHS side funds", "Worcs A2.4", line(s17_leave=True), hist(WORCESTERSHIRE, HW_ICB), (),
     0, 70_000, 0, 0, "Worcs A2.4"),
    ("a decision of another kind does not apply", "Worcs A2.6 (binds its own arrangement)", line(),
     hist(WORCESTERSHIRE, HW_ICB), (PersonDecision("p1", "panel", 0, D("2026-03-01"), **WORCS_AGREED),),
     42_000, 28_000, 0, 0, "Worcs A2.1"),
]


@pytest.mark.parametrize(("rule", "paragraph", "ln", "history", "decisions", "council", "icb", "excluded",
                          "awaiting", "citation"), RULES, ids=[r[0] for r in RULES])
def test_split_rule(rule, paragraph, ln, history, decisions, council, icb, excluded, awaiting, citation):
    got = one_week(ln, history, decisions)
    assert got[:4] == (council, icb, excluded, awaiting)
    assert citation in got[4]


EXCLUSIONS = [
    ("NHS-funded nursing care outside the s117 total", dict(exclusion=Exclusion.NHS_FUNDED_NURSING_CARE,
                                                           need=T.HEALTH), "FOI Q5; Worcs 10.1"),
    ("universal services never counted", dict(exclusion=Exclusion.UNIVERSAL_SERVICE, need=T.HEALTH), "FOI Q4"),
    ("an accommodation top-up the person chooses is theirs", dict(exclusion=Exclusion.TOP_UP), "Worcs 8.3, 13.3"),
    ("a need not arising from the disorder", dict(s117_eligible=False), "Bucks 'Distinguishing between needs'"),
    ("not eligible even where the matrix tags the service", dict(s117_eligible=False, council=HARROW, icb=NWL_ICB),
     "Bucks 'Distinguishing between needs'"),
]


@pytest.mark.parametrize(("name", "kw", "citation"), EXCLUSIONS, ids=[e[0] for e in EXCLUSIONS])
def test_exclusions(name, kw, citation):
    ln = line(**kw)
    council, icb, excluded, awaiting, cited = one_week(ln, hist(ln.council, ln.icb))
    assert (council, icb, excluded, awaiting) == (0, 0, 70_000, 0)
    assert cited == citation


def test_unit_cost_and_frequency():
    ln = line(weekly_cost_pence=None, unit_cost_pence=2_550, units_per_week=Decimal("12.5"))  # 31875 pence a week
    assert one_week(ln, hist(WORCESTERSHIRE, HW_ICB))[:2] == (19_125, 12_750)


def test_day_proration_across_a_split_change_and_the_month_boundary():
    """Bucks re-estimates the aligned split yearly; a line started mid-month
    and changed in price is costed per day at each rate and split."""
    change = FundingChange(D("2026-10-15"), replace(BOOK.funding_for(BUCKINGHAMSHIRE, BOB_ICB),
                                                    council_share_bp=6_000, name="Bucks 2026/27 H2"),
                           D("2026-09-01"), D("2026-09-02"), "JMG 2026-09")
    book = AgreementBook(funding=dict(BOOK.funding), funding_changes={(BUCKINGHAMSHIRE, BOB_ICB): (change,)})
    history = book.funding_history(BUCKINGHAMSHIRE, BOB_ICB)
    ln = line(council=BUCKINGHAMSHIRE, icb=BOB_ICB, start=D("2026-09-20"), weekly_cost_pence=10_000)
    st_oct = statement_for("2026-10", BUCKINGHAMSHIRE, BOB_ICB, [ln], history)
    items = st_oct.persons[0].lines
    # 1-14 October at 53.93%, 15-31 at 60%: 14 days = 20000p, 17 days = 24285.71 -> 24286p
    assert [(i.first, i.last, i.days, i.cost_pence, i.council_pence, i.icb_pence) for i in items] == [
        (D("2026-10-01"), D("2026-10-14"), 14, 20_000, 10_786, 9_214),
        (D("2026-10-15"), D("2026-10-31"), 17, 24_286, 14_572, 9_714),
    ]
    assert "Worcs 8.5" not in items[0].citation and items[1].arrangement == "Bucks 2026/27 H2"
    # September holds only its own 11 days (20-30): 15714.29 -> 15714p, at the old split.
    st_sep = statement_for("2026-09", BUCKINGHAMSHIRE, BOB_ICB, [ln], history)
    assert [(i.first, i.last, i.cost_pence) for i in st_sep.persons[0].lines] == [
        (D("2026-09-20"), D("2026-09-30"), 15_714)]
    # council-paid: the ICB owes the council the NHS shares
    assert st_oct.totals.icb_owes_council_pence == 9_214 + 9_714 and st_oct.totals.council_owes_icb_pence == 0


def test_icb_paid_line_makes_the_council_owe_its_share():
    st = statement_for("2026-10", WORCESTERSHIRE, HW_ICB, [line(paid_by="icb", start=D("2026-10-01"),
                                                                 end=D("2026-10-07"))], hist(WORCESTERSHIRE, HW_ICB))
    assert (st.totals.council_owes_icb_pence, st.totals.icb_owes_council_pence) == (42_000, 0)
    assert st.totals.net_icb_to_council_pence == -42_000


def test_statement_only_for_its_pair():
    other = line(council=BUCKINGHAMSHIRE, icb=BOB_ICB, person_id="p2")
    st = statement_for("2026-10", WORCESTERSHIRE, HW_ICB, [line(), other], hist(WORCESTERSHIRE, HW_ICB))
    assert [p.person_id for p in st.persons] == ["p1"]


def test_package_change_never_rewrites_the_earlier_version():
    v1 = line(start=D("2026-01-01"))
    written, problems = apply_action([v1], PackageAction.CHANGE, D("2026-03-01"), None, {"weekly_cost_pence": 80_000})
    assert not problems
    assert [(v.version, v.start, v.end, v.weekly_cost_pence) for v in written] == [
        (1, D("2026-01-01"), D("2026-02-28"), 70_000), (2, D("2026-03-01"), None, 80_000)]
    _, problems = apply_action([*written], PackageAction.CHANGE, D("2026-02-01"), None, {"weekly_cost_pence": 1})
    assert problems[0].field == "effective_date"
    _, problems = apply_action([v1], PackageAction.START, D("2026-03-01"), v1)
    assert problems[0].field == "package_id"
    ended, _ = apply_action([v1], PackageAction.END, D("2026-04-30"), None)
    assert ended[0].end == D("2026-04-30")


def test_changes_to_a_split_need_both_bodies_and_never_rewrite():
    base = {"funding": [{"council": "E10000034", "commissioner": "QGH", "kind": "fixed-split",
                         "council_share_percent": 60, "changes": [
                             {"effective_from": "2027-04-01", "council_share_percent": 55,
                              "agreed": {"council": "2027-03-01"}}]}]}
    with pytest.raises(AgreementsError, match="both bodies"):
        agreements_from_mapping(base)
    agreed = {"council": "2027-03-01", "commissioner": "2027-03-02", "reference": "JMG"}
    two = [{"effective_from": "2027-04-01", "council_share_percent": 55, "agreed": agreed},
           {"effective_from": "2026-04-01", "council_share_percent": 50, "agreed": agreed}]
    with pytest.raises(AgreementsError, match="never rewritten"):
        agreements_from_mapping({"funding": [{**base["funding"][0], "changes": two}]})
    book = agreements_from_mapping({"funding": [{**base["funding"][0], "changes": two[:1]}]})
    assert book.funding_on("E10000034", "QGH", D("2027-03-31")).council_share_bp == 6_000
    assert book.funding_on("E10000034", "QGH", D("2027-04-01")).council_share_bp == 5_500


def test_person_decision_kind_must_fit_the_arrangement():
    assert decision_problem(BOOK.funding_for(WORCESTERSHIRE, HW_ICB), "exception") is None
    assert "does not apply" in decision_problem(BOOK.funding_for(BUCKINGHAMSHIRE, BOB_ICB), "panel")


def test_month_bounds():
    assert month_bounds("2028-02") == (D("2028-02-01"), D("2028-02-29"))
    for bad in ("2026-13", "2026/10", "26-10"):
        with pytest.raises(ValueError):
            month_bounds(bad)


lines_st = st.builds(
    lambda pid, pkg, start, days, weekly, paid, cohort, s17, excl, eligible, agreement: (line(
        person_id=f"p{pid}", package_id=f"P{pkg}", start=start,
        end=None if days is None else date.fromordinal(start.toordinal() + days), weekly_cost_pence=weekly,
        paid_by=paid, cohort=cohort, s17_leave=s17, exclusion=excl, s117_eligible=eligible), agreement),
    st.integers(0, 5), st.integers(0, 3), st.dates(D("2026-08-01"), D("2026-11-30")),
    st.none() | st.integers(0, 90), st.integers(0, 5_000_000), st.sampled_from(["council", "icb"]),
    st.sampled_from(["adult", "learning-disability"]), st.booleans(), st.none() | st.sampled_from(list(Exclusion)),
    st.booleans(), st.sampled_from(["fixed", "bucks", "panel"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(lines_st, max_size=12), st.integers(0, 10_000), st.dates(D("2026-10-02"), D("2026-10-30")))
def test_property_totals_equal_lines_and_shares_add_up(pairs, share_bp, change_on):
    kinds = {"fixed": FundingAgreement(FundingKind.FIXED_SPLIT, "fixed", "x", council_share_bp=share_bp),
             "bucks": BOOK.funding_for(BUCKINGHAMSHIRE, BOB_ICB), "panel": FOI_PANEL}
    agreement = kinds[pairs[0][1]] if pairs else kinds["fixed"]
    history = ((None, agreement), (change_on, replace(kinds["fixed"], council_share_bp=10_000 - share_bp)))
    lines = [ln for ln, _ in pairs]
    st_ = statement_for("2026-10", WORCESTERSHIRE, HW_ICB, lines, history)
    items = [i for p in st_.persons for i in p.lines]
    for i in items:
        assert i.council_pence + i.icb_pence + i.awaiting_panel_pence == i.eligible_pence
        assert i.eligible_pence + i.excluded_pence == i.cost_pence
        assert min(i.council_pence, i.icb_pence, i.excluded_pence) >= 0
    for p in st_.persons:
        assert p.totals == Totals.of(p.lines)
    assert st_.totals == Totals.of(items)
    assert st_.totals.council_pence + st_.totals.icb_pence + st_.totals.awaiting_panel_pence \
        == st_.totals.eligible_pence


def test_expenditure_committed_spent_projected_and_trend():
    from hub.domain.money.expenditure import expenditure
    today = D("2026-11-30")
    lines = [
        line(start=D("2026-04-01"), weekly_cost_pence=70_000),  # Worcs 60:40, in force
        line(person_id="p2", package_id="P2", start=D("2026-04-01"), end=D("2026-04-07"), cohort="older-adult"),
        line(person_id="p3", package_id="P3", start=D("2026-04-01"), exclusion=Exclusion.TOP_UP),  # never counted
    ]
    exp = expenditure(lines, BOOK.funding_history, lambda _pid: (), today)
    spend = exp.by_pair[(WORCESTERSHIRE, HW_ICB)]
    assert spend.people == {"p1"}  # p2 ended, p3's line is not s117
    assert spend.committed_weekly == [70_000, 42_000, 28_000]
    days_to_date = (today - D("2026-04-01")).days + 1  # 244
    p1_to_date = round(70_000 * days_to_date / 7)
    assert spend.spent_to_date[0] == p1_to_date + 70_000
    p1_rest = round(70_000 * (D("2027-03-31") - today).days / 7)
    assert spend.projected_year[0] == spend.spent_to_date[0] + p1_rest
    assert spend.spent_to_date[1] + spend.spent_to_date[2] == spend.spent_to_date[0]
    assert exp.by_cohort["older-adult"].spent_to_date[0] == 70_000 and exp.by_cohort["older-adult"].people == set()
    assert exp.months[-1] == "2026-11" and exp.trend["2026-04"][0] == round(70_000 * 30 / 7) + 70_000
    assert exp.trend["2026-04"][3] == 2 and exp.trend["2026-11"][3] == 1
