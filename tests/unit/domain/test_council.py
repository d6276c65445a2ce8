"""Responsible council: residence before detention, moves, re-detention, no fixed abode, successions."""

import pytest

from hub.domain.model import ChangeType, Dispute, DisputeKind
from tests.unit.domain.builders import change, detained, left, moved, status
from tests.unit.domain.fakes import (
    BUCKINGHAMSHIRE, BUCKS_COUNTY_OLD, BUCKS_PRACTICE, CNWL, CUMBERLAND, CUMBRIA_OLD, CUMBRIA_PRACTICE, HARROW,
    HW_TRUST, OXFORD_HEALTH, OXFORDSHIRE, WESTMORLAND, WORCESTERSHIRE,
)

A, B, C = BUCKINGHAMSHIRE, OXFORDSHIRE, HARROW

# The Worcestershire judgment's own example (quoted at Worcs 4.3.3).
A_B_C = [
    detained("2021-01-10", residence_la_gss=A, gp_practice_ods=BUCKS_PRACTICE, hospital_ods=OXFORD_HEALTH),
    left("2021-03-01", discharge_destination_la_gss=B),
    moved("2021-09-01", C),
]

# (name, changes, as_of, council GSS, citation, explanation fragment)
COUNCIL_TABLE = [
    ("residence before detention", A_B_C[:1], "2021-02-01", A, "Worcs 4.3.1",
     "council: Buckinghamshire, ordinarily resident there before the s3 detention on 2021-01-10 (Worcs 4.3.1)"),
    ("A -> B on discharge: A stays", A_B_C[:2], "2021-04-01", A, "Worcs 4.3.1", "Buckinghamshire"),
    ("A -> B -> C: A stays", A_B_C, "2022-01-01", A, "Worcs 4.3.1", "Buckinghamshire"),
    ("re-detained from C: C", A_B_C + [detained("2023-02-01")], "2023-02-02", C,
     "Worcs 4.3.3", "immediately before the new s3 detention on 2023-02-01"),
    ("re-detained from C, then discharged to A: C stays", A_B_C + [detained("2023-02-01"), left("2023-05-01",
     discharge_destination_la_gss=A)], "2023-06-01", C, "Worcs 4.3.3", "Harrow"),
    ("re-detained under s2 from C: A stays (s2 does not qualify)", A_B_C + [detained("2023-02-01", "02")],
     "2023-02-10", A, "Worcs 4.3.1", "Buckinghamshire"),
    ("s2 from C converted to s3: C, residence before the s2 admission",
     A_B_C + [detained("2023-02-01", "02"), moved("2023-02-15", WORCESTERSHIRE),
              change(ChangeType.SECTION_CHANGED, "2023-02-20", legal_status_code="03")],
     "2023-02-21", C, "Worcs 4.3.3", "new s3 detention on 2023-02-01"),
    ("old county code resolves to the unitary council",
     [detained("2019-05-01", residence_la_gss=BUCKS_COUNTY_OLD), left("2019-07-01")], "2024-01-01", A,
     "Worcs 4.3.1", "code E10000002 is now Buckinghamshire"),
    ("dispute resolved for B", A_B_C + [
        change(ChangeType.DISPUTE_RAISED, "2022-02-01", dispute=Dispute("D1", DisputeKind.COUNCIL, (A, B))),
        *(change(ChangeType.DISPUTE_RESOLVED, "2022-06-01", source=party,  # each party records the outcome
                 dispute=Dispute("D1", DisputeKind.COUNCIL, (A, B), resolved_responsible=B)) for party in (A, B))],
     "2022-07-01", B, "Worcs 4.3.4", "found responsible when the dispute was resolved on 2022-06-01"),
    ("dispute open: council meeting the needs keeps them", A_B_C + [
        change(ChangeType.DISPUTE_RAISED, "2022-02-01", dispute=Dispute("D1", DisputeKind.COUNCIL, (A, B)))],
     "2022-03-01", A, "Worcs 4.3.1", "Buckinghamshire"),
]


@pytest.mark.parametrize(("name", "changes", "as_of", "gss", "citation", "fragment"), COUNCIL_TABLE,
                         ids=[row[0] for row in COUNCIL_TABLE])
def test_responsible_council(name, changes, as_of, gss, citation, fragment):
    council = status(changes, as_of).responsible_council
    assert council.org.code == gss
    assert citation in council.citation
    assert fragment in council.explanation


def test_no_fixed_abode_hospital_council_coordinates_until_discharge_area_known():
    changes = [detained("2024-02-01", no_fixed_abode=True, hospital_ods=CNWL)]
    in_hospital = status(changes, "2024-02-10")
    assert in_hospital.responsible_council is None
    assert in_hospital.coordinating_council.org.code == HARROW
    assert "Bucks 'If, exceptionally, no place of residence'" in in_hospital.coordinating_council.citation
    discharged = status(changes + [left("2024-04-01", discharge_destination_la_gss=OXFORDSHIRE)], "2024-04-02")
    assert discharged.responsible_council.org.code == OXFORDSHIRE
    assert discharged.coordinating_council is None
    assert "no place of residence before detention; discharged to that area on 2024-04-01" in (
        discharged.responsible_council.explanation)


def test_no_fixed_abode_left_without_destination_settles_on_first_residence():
    changes = [detained("2024-02-01", no_fixed_abode=True, hospital_ods=HW_TRUST), left("2024-04-01")]
    unsettled = status(changes, "2024-04-02")
    assert unsettled.entitled and unsettled.responsible_council is None
    assert unsettled.coordinating_council.org.code == WORCESTERSHIRE
    settled = status(changes + [moved("2024-05-01", HARROW)], "2024-05-02")
    assert settled.responsible_council.org.code == HARROW
    # Later moves do not change it again.
    assert status(changes + [moved("2024-05-01", HARROW), moved("2024-08-01", OXFORDSHIRE)],
                  "2024-09-01").responsible_council.org.code == HARROW


def test_council_split_names_every_successor():
    changes = [detained("2022-01-05", residence_la_gss=CUMBRIA_OLD, gp_practice_ods=CUMBRIA_PRACTICE),
               left("2022-03-01")]
    before_split = status(changes, "2023-03-31").responsible_council
    assert before_split.org.code == CUMBRIA_OLD and before_split.org.name == "Cumbria"
    after = status(changes, "2023-04-01")
    # No guess between the two, and never the abolished county: undetermined, naming both (hazard H-03).
    assert after.responsible_council is None
    assert "Cumberland" in after.council_split.explanation and "Westmorland and Furness" in (
        after.council_split.explanation)


def test_moves_while_in_hospital_do_not_change_the_residence_before_detention():
    changes = [detained("2024-01-05", residence_la_gss=A), moved("2024-02-01", B), left("2024-03-01")]
    assert status(changes, "2024-03-02").responsible_council.org.code == A
