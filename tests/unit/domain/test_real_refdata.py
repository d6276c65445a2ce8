"""The rules over the real public reference data (hub.refdata), with real codes."""

from datetime import date

import pytest

from hub.domain.model import ChangeType
from hub.domain.service_level import register_service_level
from tests.unit.domain.builders import change, detained, left, moved, status

loader = pytest.importorskip("hub.refdata.loader")


@pytest.fixture(scope="module")
def ref():
    return loader.load_reference_data()


BUCKINGHAMSHIRE, WORCESTERSHIRE, BIRMINGHAM, HARROW = "E06000060", "E10000034", "E08000025", "E09000015"
RECTORY_MEADOW = "K82001"  # Buckinghamshire CCG 14Y
ST_STEPHENS = "M81001"  # Herefordshire and Worcestershire CCG 18C


def test_county_a_residence_county_b_gp(ref):
    """Bucks protocol example: council of County A, NHS commissioner of County B."""
    changes = [detained("2024-03-01", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=ST_STEPHENS,
                        hospital_ods="R1A"), left("2024-05-10")]
    result = status(changes, "2024-05-10", ref=ref)
    assert result.responsible_council.org.code == BUCKINGHAMSHIRE
    assert result.responsible_council.explanation.startswith(
        "council: Buckinghamshire, ordinarily resident there before the s3 detention on 2024-03-01 (Worcs 4.3.1)")
    assert result.responsible_commissioner.org.code == "QGH"
    assert result.commissioner_basis_code == "18C"


def test_a_b_c_then_re_detention_with_real_councils(ref):
    changes = [detained("2021-01-10", residence_la_gss=WORCESTERSHIRE, gp_practice_ods=ST_STEPHENS),
               left("2021-03-01", discharge_destination_la_gss=BIRMINGHAM), moved("2021-09-01", HARROW)]
    assert status(changes, "2022-01-01", ref=ref).responsible_council.org.code == WORCESTERSHIRE
    redetained = status(changes + [detained("2023-02-01")], "2023-02-02", ref=ref)
    assert redetained.responsible_council.org.code == HARROW
    assert redetained.responsible_commissioner.org.code == "QGH"  # kept (Worcs 4.4.9)


@pytest.mark.parametrize(("as_of", "code"), [("2022-06-30", "14Y"), ("2022-07-01", "QU9")])
def test_ccg_to_icb_on_1_july_2022(ref, as_of, code):
    changes = [detained("2021-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=RECTORY_MEADOW),
               left("2021-03-01")]
    assert status(changes, as_of, ref=ref).responsible_commissioner.org.code == code


def test_old_county_code_resolves_to_unitary(ref):
    changes = [detained("2019-05-01", residence_la_gss="E10000002"), left("2019-07-01")]
    council = status(changes, "2024-01-01", ref=ref).responsible_council
    assert council.org.code == BUCKINGHAMSHIRE


def test_cumbria_split_is_not_guessed(ref):
    changes = [detained("2022-01-05", residence_la_gss="E10000006"), left("2022-03-01")]
    after = status(changes, "2024-01-01", ref=ref)
    assert after.responsible_council is None and after.council_basis_code == "E10000006"
    assert "Cumberland (E06000063)" in after.council_split.explanation
    assert "Westmorland and Furness (E06000064)" in after.council_split.explanation
    named = moved("2024-02-01", residence_before_detention_la_gss="E06000063")
    assert status([*changes, named], "2024-02-02", ref=ref).responsible_council.org.code == "E06000063"


def test_northamptonshire_split_is_undetermined_after_1_april_2021(ref):
    changes = [detained("2020-06-01", residence_la_gss="E10000021"), left("2020-09-01")]
    assert status(changes, "2021-03-31", ref=ref).responsible_council.org.code == "E10000021"
    after = status(changes, "2021-04-01", ref=ref)
    assert after.responsible_council is None
    assert "North Northamptonshire (E06000061)" in after.council_split.explanation
    assert "West Northamptonshire (E06000062)" in after.council_split.explanation


def test_no_fixed_abode_coordinated_by_the_hospitals_council(ref):
    result = status([detained("2024-02-01", no_fixed_abode=True, hospital_ods="R1A")], "2024-02-02", ref=ref)
    assert result.coordinating_council.org.code == WORCESTERSHIRE


def test_every_real_legal_status_code(ref):
    for code in ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "12", "13", "14", "15", "16", "17",
                 "18", "19", "20", "31", "32", "35", "36", "37", "38", "98", "99"]:
        legal = ref.legal_status(code)
        assert legal is not None, code
        changes = [detained("2024-01-01", code, residence_la_gss=HARROW), left("2024-02-01")]
        assert status(changes, "2024-02-02", ref=ref).entitled is (legal.s117_qualifying == "yes"), code


def test_service_level_with_real_bank_holidays(ref):
    # Notice on Wednesday 16 April 2025: Good Friday and Easter Monday do not count.
    level = register_service_level(date(2025, 4, 16), date(2025, 4, 25), ref.bank_holidays())
    assert level.deadline == date(2025, 4, 25) and level.state == "near-breach"


def test_gp_change_does_not_move_the_commissioner_with_real_practices(ref):
    changes = [detained("2021-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=RECTORY_MEADOW),
               left("2021-03-01"), change(ChangeType.GP_CHANGED, "2021-06-01", gp_practice_ods=ST_STEPHENS)]
    assert status(changes, "2024-01-01", ref=ref).responsible_commissioner.org.code == "QU9"


def test_section_labels_remembered_are_the_labels_worked_out(ref):
    """`section_label` is remembered per (code, description): the same label as worked out afresh, for every
    code of the reference data, asked twice."""
    from hub.domain.rules.legal_status import section_label

    for code, legal in ref._legal.items():
        for _ in range(2):
            assert section_label(code, legal.description) == section_label.__wrapped__(code, legal.description)
    assert section_label("03", "Section 3 and Section 41") == "s3/s41"
