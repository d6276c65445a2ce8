"""Who holds a council code's duties on a day, decided once (hazard H-03): `ReferenceData.council_in_place`
(hub/refdata/loader.py; the rule in hub/domain/ports.py `CouncilInPlace`). The one addressable council (the
council itself while it stands, or the one that took it over, through a chain of successions), or, when no
council alone holds the area (a split between several, a successor the register of local authorities lists
without a GSS code yet, or both), every successor; an unknown code neither. The shipped register (July 2025)
for the reorganisations it holds, and an operator's newer register made from it (tests/unit/
test_council_files.py `reorganised`) for the successions still to come. Every other way the hub asks (the
rules, the children's notices, who speaks for a dispute's party, the hospital sites' check) answers as it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from hub.domain.children import addressed, council_on
from hub.domain.model import DisputeKind, Org
from hub.domain.ports import COUNCIL_WITHOUT_GSS, CouncilInPlace
from hub.domain.rules.engine import _council_org
from hub.domain.succession import duty_holder
from hub.refdata.loader import PublicReferenceData, ReferenceSources, load_reference_data
from tests.unit.test_council_files import AS_OF, BUCKS, reorganised

WORCESTERSHIRE = "E10000034"
BUCKS_COUNTY = "E10000002"  # Buckinghamshire County Council, replaced by Buckinghamshire Council on 2020-04-01
NORTHAMPTONSHIRE = "E10000021"  # split on 2021-04-01: North Northamptonshire, West Northamptonshire
CUMBRIA = "E10000006"  # split on 2023-04-01: Cumberland, Westmorland and Furness
AFTER_2026 = date(2026, 5, 1)  # after the vesting day of the newer registers below (2026-04-01)


def council(code: str, name: str) -> Org:
    return Org(code, name, "council")


def newer(tmp_path: Path, *successors: tuple[str, str, str]) -> PublicReferenceData:
    """The reference data with an operator's register in which Buckinghamshire Council is replaced on
    2026-04-01 by `successors` (register code, GSS code or "" when ONS has given none yet, name)."""
    path = reorganised(tmp_path / "uk_local_authorities_current.csv", successors=successors)
    return load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))


def agrees(ref: PublicReferenceData, code: str, on: date) -> CouncilInPlace:
    """`council_in_place`'s answer, checked against every other place the hub asks the same question."""
    got = ref.council_in_place(code, on)
    one = got.council
    assert ref.council(code, on) == one
    assert ref.council_successors(code, on) == got.with_gss
    assert ref.council_successors_without_gss(code, on) == got.without_gss
    assert council_on(code, on, ref) == (one.code if one is not None else code)
    assert duty_holder(ref, code, DisputeKind.COUNCIL, on) == (one.code.upper() if one is not None else None)
    org, _note, split = _council_org(ref, code, on)
    assert split == got.successors
    if one is not None:
        assert org == one and addressed(code, on, ref) == one.code
    else:
        assert org.code == code  # never a successor taken for the whole area
        assert addressed(code, on, ref) == (None if got.successors else code)
        if got.with_gss:  # a register change naming a successor with a GSS code: addressed
            named = got.with_gss[-1].code
            assert addressed(code, on, ref, ("E06000019", named)) == named
    return got


def test_a_council_in_place_holds_its_own_duties() -> None:
    got = agrees(load_reference_data(), WORCESTERSHIRE, date(2024, 1, 1))
    assert got.council == council(WORCESTERSHIRE, "Worcestershire")
    assert got.successors == () and got.known


def test_a_single_successor_with_a_gss_code_is_followed_from_the_vesting_day() -> None:
    ref = load_reference_data()
    got = agrees(ref, BUCKS_COUNTY, date(2020, 4, 1))
    assert got.council == council(BUCKS, "Buckinghamshire") and got.successors == ()
    # The day before the vesting day: the council itself.
    assert agrees(ref, BUCKS_COUNTY, date(2020, 3, 31)).council == council(BUCKS_COUNTY, "Buckinghamshire County")
    # A former district's code: its county while the district stood, the unitary that replaced both after.
    assert agrees(ref, "E07000004", date(2019, 1, 1)).council == council(BUCKS_COUNTY, "Buckinghamshire County")
    assert agrees(ref, "E07000004", date(2024, 1, 1)).council == council(BUCKS, "Buckinghamshire")


def test_a_chain_of_two_successions_is_followed_to_the_council_in_place(tmp_path: Path) -> None:
    """Buckinghamshire County -> Buckinghamshire (2020) -> Chiltern Vale (2026, an operator's newer register)."""
    ref = newer(tmp_path, ("CHV", "E06000099", "Chiltern Vale"))
    assert agrees(ref, BUCKS_COUNTY, AFTER_2026).council == council("E06000099", "Chiltern Vale")
    assert agrees(ref, BUCKS_COUNTY, date(2026, 3, 31)).council == council(BUCKS, "Buckinghamshire")


@pytest.mark.parametrize(("code", "vesting", "before", "after"), [
    (NORTHAMPTONSHIRE, date(2021, 4, 1), "Northamptonshire",
     (council("E06000061", "North Northamptonshire"), council("E06000062", "West Northamptonshire"))),
    # The register gives Cumbria's end as the successors' first day (2023-04-01): the successors' start wins.
    (CUMBRIA, date(2023, 4, 1), "Cumbria",
     (council("E06000063", "Cumberland"), council("E06000064", "Westmorland and Furness"))),
])
def test_a_split_between_several_successors_has_no_one_council(code: str, vesting: date, before: str,
                                                               after: tuple[Org, ...]) -> None:
    ref = load_reference_data()
    got = agrees(ref, code, vesting)
    assert got.council is None and got.known
    assert got.successors == got.with_gss == after and got.without_gss == ()
    assert agrees(ref, code, date(2030, 1, 1)).successors == after
    # The day before the vesting day: the county itself.
    day_before = agrees(ref, code, date.fromordinal(vesting.toordinal() - 1))
    assert day_before.council == council(code, before) and day_before.successors == ()


def test_a_single_successor_without_a_gss_code_is_no_council_to_address(tmp_path: Path) -> None:
    ref = newer(tmp_path, ("CHV", "", "Chiltern Vale"))
    chiltern_vale = Org("CHV", "Chiltern Vale", COUNCIL_WITHOUT_GSS)
    for code in (BUCKS, BUCKS_COUNTY):  # the council, and its predecessor through two successions
        got = agrees(ref, code, AFTER_2026)
        assert got.council is None and got.known
        assert got.with_gss == () and got.without_gss == got.successors == (chiltern_vale,)
    assert agrees(ref, BUCKS, date(2026, 3, 31)).council == council(BUCKS, "Buckinghamshire")


def test_a_split_with_one_successor_without_a_gss_code_takes_neither_for_the_whole_area(tmp_path: Path) -> None:
    ref = newer(tmp_path, ("NCH", "E06000099", "North Chiltern"), ("SCH", "", "South Chiltern"))
    got = agrees(ref, BUCKS, AFTER_2026)
    assert got.council is None and got.known
    assert got.with_gss == (council("E06000099", "North Chiltern"),)
    assert got.without_gss == (Org("SCH", "South Chiltern", COUNCIL_WITHOUT_GSS),)
    assert got.successors == got.with_gss + got.without_gss  # those with a GSS code first


@pytest.mark.parametrize("code", ["E99999999", "W06000001", ""])
def test_an_unknown_code_has_no_council_and_no_successor(code: str) -> None:
    """A code the reference data does not know (none, a Welsh council, empty): neither, and said so."""
    ref = load_reference_data()
    got = agrees(ref, code, date(2024, 1, 1))
    assert got.council is None and got.successors == () and not got.known
    assert _council_org(ref, code, date(2024, 1, 1))[1] == "; council code not in the reference data"


def test_the_answer_is_kept() -> None:
    """Asked for every evaluation of a change: the same object again, no walk of the register."""
    ref = load_reference_data()
    assert ref.council_in_place(CUMBRIA, date(2024, 2, 3)) is ref.council_in_place(CUMBRIA, date(2024, 2, 3))
