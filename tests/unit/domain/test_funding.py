"""Funding splits under each kind of area agreement (amounts in pence)."""

from pathlib import Path

import pytest

from hub.agreements_loader import load_agreements
from hub.domain.agreements import AgreementBook, FundingAgreement, FundingKind, NeedTag as T
from hub.domain.funding import CostLine, PanelDecision, split_costs
from tests.unit.domain.fakes import BOB_ICB, BUCKINGHAMSHIRE, HARROW, HW_ICB, NWL_ICB, WORCESTERSHIRE

BOOK = load_agreements(Path(__file__).parents[3] / "contracts" / "area-agreements.yaml")
WORCS = BOOK.funding_for(WORCESTERSHIRE, HW_ICB)
BUCKS = BOOK.funding_for(BUCKINGHAMSHIRE, BOB_ICB)
HARROW_MATRIX = BOOK.funding_for(HARROW, NWL_ICB)
DEFAULT = AgreementBook.default().default_funding
PANEL = FundingAgreement(kind=FundingKind.PANEL, name="joint panel", citation="FOI Q1")

CARE = CostLine("supported accommodation", T.SOCIAL_CARE, 100_000)
THERAPY = CostLine("psychological therapy", T.HEALTH, 40_000)

# (name, agreement, lines, panel, council pence, NHS pence, excluded pence, citation fragment)
SPLIT_TABLE = [
    ("Worcestershire 60:40", WORCS, [CARE, THERAPY], None, 84_000, 56_000, 0, "Worcs A2.1"),
    ("Buckinghamshire aligned 53.93/46.07", BUCKS, [CostLine("package", T.JOINT, 1_000_000)], None,
     539_300, 460_700, 0, "Bucks 'Aligned Budget"),
    ("Harrow matrix: health to ICB, social care to council", HARROW_MATRIX, [CARE, THERAPY], None,
     100_000, 40_000, 0, "Harrow matrix"),
    ("Harrow matrix tags override the line's tag", HARROW_MATRIX,
     [CostLine("medication management", T.SOCIAL_CARE, 10_000)], None, 0, 10_000, 0, "Harrow matrix"),
    ("Harrow matrix: joint need 50:50", HARROW_MATRIX, [CostLine("crisis support", T.JOINT, 10_001)], None,
     5_001, 5_000, 0, "Harrow matrix"),
    ("England default 50:50", DEFAULT, [CARE, THERAPY], None, 70_000, 70_000, 0, "FOI Q2a"),
    ("panel decided 70% council", PANEL, [CARE], PanelDecision(7_000), 70_000, 30_000, 0, "FOI Q1"),
    ("s17 leave: 100% NHS commissioner by default", WORCS, [CostLine("leave placement", T.SOCIAL_CARE, 50_000,
                                                                     s17_leave=True)], None, 0, 50_000, 0,
     "Worcs A2.1"),
    ("FNC excluded from the s117 total", WORCS, [CARE, CostLine("FNC", T.HEALTH, 23_500, nursing_care_fnc=True)],
     None, 60_000, 40_000, 23_500, "Worcs A2.1"),
    ("accommodation top-up excluded", BUCKS, [CostLine("preferred room", T.SOCIAL_CARE, 9_000, top_up=True)],
     None, 0, 0, 9_000, "Bucks"),
    ("rent is not s117 under the Harrow matrix", HARROW_MATRIX, [CostLine("rent", T.SOCIAL_CARE, 30_000)], None,
     0, 0, 30_000, "Harrow"),
]


@pytest.mark.parametrize(("name", "agreement", "lines", "panel", "council", "nhs", "excluded", "citation"),
                         SPLIT_TABLE, ids=[row[0] for row in SPLIT_TABLE])
def test_split(name, agreement, lines, panel, council, nhs, excluded, citation):
    split = split_costs(lines, agreement, panel=panel)
    assert (split.council_pence, split.commissioner_pence, split.excluded_pence) == (council, nhs, excluded)
    assert citation in split.citation or citation in split.explanation
    assert council + nhs + excluded + split.awaiting_panel_pence == sum(line.amount_pence for line in lines)


def test_line_citations_name_the_exclusion_rule():
    split = split_costs([CostLine("FNC", T.HEALTH, 1, nursing_care_fnc=True),
                         CostLine("room", T.SOCIAL_CARE, 1, top_up=True),
                         CostLine("leave", T.HEALTH, 1, s17_leave=True)], WORCS)
    assert [line.citation for line in split.lines] == ["FOI Q5; Worcs 10.1", "Worcs 8.3, 13.3", "Worcs A2.4"]


def test_panel_not_yet_decided_leaves_costs_awaiting():
    split = split_costs([CARE], PANEL)
    assert split.awaiting_panel_pence == 100_000 and split.council_pence == split.commissioner_pence == 0
    assert "awaiting the panel" in split.explanation


def test_open_dispute_keeps_the_previous_arrangement():
    """A proposed move from 50:50 to the matrix does not take effect while disputed (Worcs 8.5)."""
    disputed = split_costs([CARE, THERAPY], HARROW_MATRIX, dispute_open=True, previous=DEFAULT)
    assert (disputed.council_pence, disputed.commissioner_pence) == (70_000, 70_000)
    assert disputed.agreement == DEFAULT and "Worcs 8.5" in disputed.citation
    settled = split_costs([CARE, THERAPY], HARROW_MATRIX, dispute_open=False, previous=DEFAULT)
    assert (settled.council_pence, settled.commissioner_pence) == (100_000, 40_000)


def test_agreement_binds_only_its_own_pair():
    """Worcs A2.6: Worcestershire's 60:40 does not apply with another ICB."""
    assert BOOK.funding_for(WORCESTERSHIRE, NWL_ICB).name == "England default 50:50"
    assert BOOK.funding_for(None, None).name == "England default 50:50"


@pytest.mark.parametrize("kwargs", [dict(kind=FundingKind.FIXED_SPLIT), dict(kind=FundingKind.FIXED_SPLIT,
                                                                           council_share_bp=10_001)])
def test_invalid_agreements_rejected(kwargs):
    with pytest.raises(ValueError):
        FundingAgreement(name="bad", citation="", **kwargs)


def test_negative_amount_rejected():
    with pytest.raises(ValueError):
        split_costs([CostLine("refund", T.HEALTH, -1)], WORCS)
