"""Responsible NHS commissioner across the Who Pays eras, successions and NHS England."""

import pytest

from hub.domain.agreements import AgreementBook, AreaAgreement
from hub.domain.model import ChangeType, Dispute, DisputeKind
from tests.unit.domain.builders import change, d, detained, left, moved, status
from tests.unit.domain.fakes import (
    AYLESBURY_VALE_CCG, BOB_ICB, BSOL_CCG, BSOL_ICB, BUCKINGHAMSHIRE, BUCKS_CCG, BUCKS_PRACTICE, CNWL, HARROW,
    HARROW_PRACTICE, HW_CCG, HW_ICB, NWL_CCG, OXON_CCG, OXON_PRACTICE, WORCESTERSHIRE, WORCS_PRACTICE,
)


def stay(detained_on: str, left_on: str) -> list:
    """Lives in Buckinghamshire with an Oxfordshire GP; moves GP to Harrow just before discharge to Harrow."""
    return [
        detained(detained_on, residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=OXON_PRACTICE),
        change(ChangeType.GP_CHANGED, left_on, gp_practice_ods=HARROW_PRACTICE),
        left(left_on, discharge_destination_la_gss=HARROW),
    ]


# (name, detained on, left on, basis code, citation fragment)
ERA_TABLE = [
    ("discharged 31 March 2013: legacy/originating", "2013-01-10", "2013-03-31", OXON_CCG, "pre 1 April 2013"),
    ("discharged 1 April 2013: where discharged to and GP", "2013-01-10", "2013-04-01", NWL_CCG,
     "1 April 2013 - 31 March 2016"),
    ("discharged 31 March 2016: where discharged to and GP", "2016-01-10", "2016-03-31", NWL_CCG,
     "1 April 2013 - 31 March 2016"),
    ("discharged 1 April 2016: originating again", "2016-01-10", "2016-04-01", OXON_CCG, "from 1 April 2016"),
    ("detained 31 August 2020, discharged before 1 Sept", "2020-07-01", "2020-08-31", OXON_CCG, "from 1 April 2016"),
    ("detained 31 August 2020, in hospital on 1 Sept", "2020-08-31", "2020-10-01", OXON_CCG, "Worcs 4.4.3"),
    ("detained 1 September 2020: originating, Worcs 4.4.1", "2020-09-01", "2020-10-01", OXON_CCG, "Worcs 4.4.1"),
]


@pytest.mark.parametrize(("name", "detained_on", "left_on", "basis", "citation"), ERA_TABLE,
                         ids=[row[0] for row in ERA_TABLE])
def test_commissioner_era(name, detained_on, left_on, basis, citation):
    result = status(stay(detained_on, left_on), "2021-06-01")
    assert result.commissioner_basis_code == basis
    assert result.responsible_commissioner.org.code == basis  # still a CCG in 2021
    assert citation in result.responsible_commissioner.citation


# (as_of, code, kind) across the ICB establishment on 1 July 2022
SUCCESSION_TABLE = [
    ("2022-06-30", OXON_CCG, "ccg"),
    ("2022-07-01", BOB_ICB, "icb"),
    ("2025-01-01", BOB_ICB, "icb"),
]


@pytest.mark.parametrize(("as_of", "code", "kind"), SUCCESSION_TABLE)
def test_ccg_resolves_to_icb_from_1_july_2022(as_of, code, kind):
    result = status(stay("2021-01-10", "2021-03-01"), as_of)
    assert result.responsible_commissioner.org.code == code
    assert result.responsible_commissioner.org.kind == kind
    assert result.commissioner_basis_code == OXON_CCG  # a succession, not a transfer


def test_ccg_merger_then_icb():
    changes = [detained("2017-06-01", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE),
               left("2017-08-01")]
    assert status(changes, "2017-09-01").responsible_commissioner.org.code == AYLESBURY_VALE_CCG
    assert status(changes, "2019-01-01").responsible_commissioner.org.code == BUCKS_CCG
    later = status(changes, "2023-01-01")
    assert later.responsible_commissioner.org.code == BOB_ICB
    assert later.commissioner_basis_code == AYLESBURY_VALE_CCG


def test_bucks_county_a_county_b_example():
    """Lives in County A, GP in County B: council A, NHS commissioner B (Bucks 'Responsible Commissioner')."""
    changes = [detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=WORCS_PRACTICE),
               left("2024-03-01")]
    result = status(changes, "2024-03-02")
    assert result.responsible_council.org.code == BUCKINGHAMSHIRE
    assert result.responsible_commissioner.org.code == HW_ICB
    assert result.commissioner_basis_code == HW_CCG


def test_no_gp_means_usual_residence():
    changes = [detained("2024-01-10", residence_la_gss=WORCESTERSHIRE), left("2024-03-01")]
    commissioner = status(changes, "2024-03-02").responsible_commissioner
    assert commissioner.org.code == HW_ICB
    assert "not registered with a GP, so where usually resident" in commissioner.explanation
    assert "Worcs 4.4.1" in commissioner.citation


def test_no_gp_no_fixed_abode_means_where_present():
    changes = [detained("2024-01-10", no_fixed_abode=True, hospital_ods=CNWL), left("2024-03-01")]
    assert status(changes, "2024-03-02").responsible_commissioner.org.code == "QRV"


def test_unknown_practice_falls_back_to_residence():
    changes = [detained("2024-01-10", residence_la_gss=WORCESTERSHIRE, gp_practice_ods="Z99999"), left("2024-03-01")]
    assert status(changes, "2024-03-02").responsible_commissioner.org.code == HW_ICB


def test_re_detention_keeps_commissioner_but_not_council():
    """The asymmetry: council re-determined (Worcs 4.3.3), commissioner kept (Worcs 4.4.9)."""
    changes = [
        detained("2021-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE),
        left("2021-03-01"),
        moved("2021-06-01", WORCESTERSHIRE),
        change(ChangeType.GP_CHANGED, "2021-06-15", gp_practice_ods=WORCS_PRACTICE),
        detained("2023-02-01"),
    ]
    result = status(changes, "2023-02-02")
    assert result.responsible_council.org.code == WORCESTERSHIRE
    assert result.responsible_commissioner.org.code == BOB_ICB
    assert "Worcs 4.4.2, 4.4.9" in result.responsible_commissioner.citation
    assert "kept through the s3 re-detention on 2023-02-01" in result.responsible_commissioner.explanation


def test_gp_change_after_discharge_does_not_move_s117_commissioner():
    changes = [detained("2021-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE),
               left("2021-03-01"), change(ChangeType.GP_CHANGED, "2021-06-15", gp_practice_ods=WORCS_PRACTICE)]
    assert status(changes, "2023-01-01").responsible_commissioner.org.code == BOB_ICB


def test_already_receiving_aftercare_is_honoured_at_detention():
    changes = [detained("2022-09-01", residence_la_gss=WORCESTERSHIRE, gp_practice_ods=WORCS_PRACTICE,
                        already_receiving_s117_from=BSOL_CCG), left("2022-11-01")]
    commissioner = status(changes, "2022-11-02").responsible_commissioner
    assert commissioner.org.code == BSOL_ICB
    assert "Worcs 4.4.2, 4.4.9" in commissioner.citation


PRISON_TABLE = [
    ("default: NHS England for prison transfers", AgreementBook.default(), "X24"),
    ("area opts out: originating ICB",
     AgreementBook(areas={WORCESTERSHIRE: AreaAgreement(name="Worcs", nhs_england_for_prison_detentions=False)}),
     HW_ICB),
]


@pytest.mark.parametrize(("name", "book", "code"), PRISON_TABLE, ids=[row[0] for row in PRISON_TABLE])
def test_nhs_england_for_prison_detentions_is_configurable(name, book, code):
    changes = [detained("2024-01-10", "16", residence_la_gss=WORCESTERSHIRE, gp_practice_ods=WORCS_PRACTICE,
                        from_prison=True), left("2024-05-01")]
    result = status(changes, "2024-05-02", book=book)
    assert result.responsible_commissioner.org.code == code
    assert result.responsible_council.org.code == WORCESTERSHIRE


def test_commissioner_dispute_resolution_transfers():
    changes = stay("2021-01-10", "2021-03-01") + [
        change(ChangeType.DISPUTE_RAISED, "2021-05-01",
               dispute=Dispute("N1", DisputeKind.COMMISSIONER, (OXON_CCG, BSOL_CCG))),
    ]
    assert status(changes, "2021-06-01").responsible_commissioner.org.code == OXON_CCG
    # Each party records the outcome (a register-recorded dispute needs all of them).
    changes += [change(ChangeType.DISPUTE_RESOLVED, "2021-09-01", source=party,
                       dispute=Dispute("N1", DisputeKind.COMMISSIONER, (OXON_CCG, BSOL_CCG), BSOL_CCG))
                for party in (OXON_CCG, BSOL_CCG)]
    resolved = status(changes, "2021-10-01").responsible_commissioner
    assert resolved.org.code == BSOL_CCG
    assert "Worcs 4.4.8" in resolved.citation
    assert d("2021-10-01") == status(changes, "2021-10-01").as_of
