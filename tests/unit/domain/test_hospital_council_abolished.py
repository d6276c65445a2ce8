"""A hospital site whose council (hospital_sites.csv) is abolished (hazard H-03): where the rules use the
hospital's council (no place of residence before the detention; a responsible council split between
successors), a single successor with a GSS code coordinates; a council split between several successors, or
succeeded by one the register lists without a GSS code yet, leaves no coordinating council the hub can name:
said, with the operator's file to update, never the abolished code."""

from hub.domain.views import (
    COORDINATING_COUNCIL, RESPONSIBILITY_UNDETERMINED, RESPONSIBLE_COUNCIL, TEMP_UNKNOWN, UNKNOWN, roles_of,
    undetermined_bodies, view_of,
)
from hub.routing import responsible_bodies
from tests.unit.domain.builders import detained, left, status
from tests.unit.domain.fakes import (
    BUCKINGHAMSHIRE, BUCKS_COUNTY_HOSPITAL, BUCKS_COUNTY_OLD, CUMBERLAND, CUMBRIA_HOSPITAL, CUMBRIA_OLD,
    CUMBRIA_PRACTICE, MIDSHIRE_OLD, WESTMORLAND, WYVERN_HOSPITAL, WYVERN_OLD, WYVERN_VALE,
)


def _nfa(hospital: str, on: str = "2024-02-01"):
    return [detained(on, no_fixed_abode=True, hospital_ods=hospital)]


def test_a_hospital_council_with_a_single_successor_is_followed_to_it():
    after = status(_nfa(BUCKS_COUNTY_HOSPITAL), "2024-02-10")
    assert after.responsible_council is None
    assert after.coordinating_council.org.code == BUCKINGHAMSHIRE  # the council in place, not E10000002
    assert after.hospital_council_abolished is None
    roles = roles_of(after)
    assert roles[BUCKINGHAMSHIRE] == {COORDINATING_COUNCIL} and BUCKS_COUNTY_OLD not in roles
    [item] = undetermined_bodies(after)
    assert item["absent_reason"] == TEMP_UNKNOWN and "the coordinating council acts meanwhile" in item["reason"]


def test_a_split_hospital_council_leaves_no_coordinating_council_and_says_so():
    after = status(_nfa(CUMBRIA_HOSPITAL), "2024-02-10")  # Cumbria split on 1 April 2023
    assert after.entitled is False and after.detained
    assert after.responsible_council is None
    assert after.coordinating_council is None  # never the abolished county, never one successor for all
    roles = roles_of(after)
    assert CUMBRIA_OLD not in roles and CUMBERLAND not in roles and WESTMORLAND not in roles
    assert all(r.org_code not in (CUMBRIA_OLD, CUMBERLAND, WESTMORLAND) for r in responsible_bodies(after))
    assert after.hospital_council_abolished.rule == "hospital-council-abolished"
    [item] = undetermined_bodies(after)
    assert item["role"] == RESPONSIBLE_COUNCIL and item["absent_reason"] == TEMP_UNKNOWN
    for words in ("the hospital's council, Cumbria (E10000006), is abolished",
                  "split between Cumberland (E06000063) / Westmorland and Furness (E06000064)",
                  "none coordinates meanwhile",
                  "the hub operator must update the hospital site's council in hub/refdata/data/hospital_sites.csv"):
        assert words in item["reason"], words
    assert "not in the hub's reference data" not in item["reason"]
    view = view_of(after, ["responsible-commissioner"], frozenset({"responsibility"}))
    assert "coordinating_council" not in view and view[RESPONSIBILITY_UNDETERMINED] == [item]


def test_before_the_vesting_day_the_hospitals_council_coordinates_as_it_stood():
    before = status(_nfa(CUMBRIA_HOSPITAL, "2023-01-05"), "2023-03-31")
    assert before.coordinating_council.org.code == CUMBRIA_OLD and before.hospital_council_abolished is None
    after = status(_nfa(CUMBRIA_HOSPITAL, "2023-01-05"), "2023-04-01")
    assert after.coordinating_council is None and after.hospital_council_abolished is not None


def test_a_hospital_council_succeeded_by_one_without_a_gss_code_leaves_none_coordinating():
    after = status(_nfa(WYVERN_HOSPITAL, "2026-04-02"), "2026-04-10")
    assert after.coordinating_council is None
    assert WYVERN_OLD not in roles_of(after) and WYVERN_VALE not in roles_of(after)
    [item] = [u for u in undetermined_bodies(after) if u["role"] == RESPONSIBLE_COUNCIL]
    assert "the hospital's council, Wyvern (E06000097), is abolished" in item["reason"]
    assert "Wyvern Vale (register code WYV, no GSS code yet)" in item["reason"]
    assert "hospital_sites.csv" in item["reason"]


def test_a_split_responsible_council_with_a_split_hospital_council_names_neither():
    # Midshire (the residence) split on 1 April 2026; the hospital's council, Cumbria, split in 2023.
    changes = [detained("2025-06-01", residence_la_gss=MIDSHIRE_OLD, gp_practice_ods=CUMBRIA_PRACTICE,
                        hospital_ods=CUMBRIA_HOSPITAL), left("2025-09-01")]
    after = status(changes, "2026-05-01")
    assert after.entitled and after.responsible_council is None and after.council_split is not None
    assert after.coordinating_council is None
    [item] = undetermined_bodies(after)
    assert item["absent_reason"] == UNKNOWN
    assert "Midshire (E10000097)" in item["reason"]
    assert "the hospital's council, Cumbria (E10000006), is abolished" in item["reason"]
    assert "not in the hub's reference data" not in item["reason"]


def test_a_split_responsible_council_with_a_hospital_council_with_one_successor_is_coordinated_by_it():
    changes = [detained("2022-01-05", residence_la_gss=CUMBRIA_OLD, gp_practice_ods=CUMBRIA_PRACTICE,
                        hospital_ods=BUCKS_COUNTY_HOSPITAL), left("2022-03-01")]
    after = status(changes, "2023-04-01")
    assert after.responsible_council is None
    assert after.coordinating_council.org.code == BUCKINGHAMSHIRE and BUCKS_COUNTY_OLD not in roles_of(after)


def test_a_discharge_area_ends_it():
    changes = [*_nfa(CUMBRIA_HOSPITAL), left("2024-04-01", discharge_destination_la_gss=BUCKINGHAMSHIRE)]
    after = status(changes, "2024-04-02")
    assert after.responsible_council.org.code == BUCKINGHAMSHIRE
    assert after.coordinating_council is None and after.hospital_council_abolished is None
    assert undetermined_bodies(after) == ()
