"""A council whose successor the register of local authorities lists without a GSS code yet (hazard H-03: a
new council listed before ONS gives it one, as England's 2026-2028 reorganisations may be): after the vesting
day no council is responsible, the successor named and the operator's action (a newer register) said, the
hospital's council coordinating, as for a split (one path: `_hold_council`); never the abolished council as
"unknown council". Before the vesting day, and for a successor with a GSS code, nothing changes. A later
register giving the successor its code makes it responsible."""

from hub.domain.model import ChangeType
from hub.domain.rules.engine import handover_bases
from hub.domain.views import (
    COORDINATING_COUNCIL, RESPONSIBILITY_UNDETERMINED, RESPONSIBLE_COUNCIL, UNKNOWN, roles_of, undetermined_bodies,
    view_of,
)
from tests.unit.domain.builders import change, detained, left, moved, status
from tests.unit.domain.fakes import (
    BUCKS_PRACTICE, CNWL, GSS_GIVEN, HARROW, MIDSHIRE_OLD, NORTH_MIDSHIRE, SOUTH_MIDSHIRE, WYVERN_OLD, WYVERN_VALE,
    FakeReferenceData,
)

WYVERN_PERSON = [
    detained("2025-01-06", residence_la_gss=WYVERN_OLD, gp_practice_ods=BUCKS_PRACTICE, hospital_ods=CNWL),
    left("2025-04-07"),
]
MIDSHIRE_PERSON = [
    detained("2025-01-06", residence_la_gss=MIDSHIRE_OLD, gp_practice_ods=BUCKS_PRACTICE, hospital_ods=CNWL),
    left("2025-04-07"),
]
LATER_REGISTER = FakeReferenceData(gss_given=dict(GSS_GIVEN))  # the register giving the successors their codes


def test_before_the_vesting_day_the_council_is_responsible():
    before = status(WYVERN_PERSON, "2026-03-31")
    assert before.responsible_council.org.code == WYVERN_OLD
    assert before.council_split is None and before.coordinating_council is None
    assert undetermined_bodies(before) == ()


def test_after_the_vesting_day_no_council_is_responsible_the_successor_named_and_the_hospitals_council_coordinates():
    after = status(WYVERN_PERSON, "2026-05-01")
    assert after.entitled
    assert after.responsible_council is None  # never "unknown council E06000097", never a guess
    assert after.council_basis_code == WYVERN_OLD  # determined as Wyvern: no hand-over is told
    assert after.council_split.rule == "council-successor-without-gss"
    assert after.coordinating_council.org.code == HARROW  # the hospital's council (CNWL)
    assert "Wyvern Vale (register code WYV, no GSS code yet)" in after.coordinating_council.explanation
    roles = roles_of(after)
    assert roles[HARROW] == {COORDINATING_COUNCIL} and WYVERN_OLD not in roles and WYVERN_VALE not in roles
    [item] = undetermined_bodies(after)
    assert item["role"] == RESPONSIBLE_COUNCIL and item["absent_reason"] == UNKNOWN
    for words in ("Wyvern (E06000097)", "is now Wyvern Vale (register code WYV, no GSS code yet)",
                  "the hub operator loads a newer register of local authorities giving Wyvern Vale a GSS code",
                  "S117_LOCAL_AUTHORITIES_FILE", "council succession in the reference data",
                  "the coordinating council acts meanwhile"):
        assert words in item["reason"], words
    assert "unknown council" not in item["reason"] and "residence_before_detention_la_gss" not in item["reason"]
    view = view_of(after, roles[HARROW], frozenset({"responsibility"}))
    assert "responsible_council" not in view and view["coordinating_council"] == HARROW
    assert view[RESPONSIBILITY_UNDETERMINED] == [item]
    assert handover_bases(after)[0] == WYVERN_OLD


def test_a_later_register_giving_the_successor_its_gss_code_makes_it_responsible():
    later = status(WYVERN_PERSON, "2026-05-01", ref=LATER_REGISTER)
    assert later.responsible_council.org.code == GSS_GIVEN[WYVERN_VALE]
    assert later.responsible_council.org.name == "Wyvern Vale"
    assert later.council_split is None and later.coordinating_council is None
    assert undetermined_bodies(later) == ()
    assert status(WYVERN_PERSON, "2026-03-31", ref=LATER_REGISTER).responsible_council.org.code == WYVERN_OLD


def test_a_split_with_one_successor_lacking_a_gss_code_is_undetermined_naming_both():
    after = status(MIDSHIRE_PERSON, "2026-05-01")
    assert after.responsible_council is None  # never North Midshire alone: the address may be in South Midshire
    assert after.coordinating_council.org.code == HARROW
    assert after.council_split.rule == "council-successor-without-gss"
    [item] = undetermined_bodies(after)
    for words in ("Midshire (E10000097)",
                  "split between North Midshire (E06000096) / South Midshire (register code SMI, no GSS code yet)",
                  "residence_before_detention_la_gss", "South Midshire can be named only once the hub operator loads",
                  "S117_LOCAL_AUTHORITIES_FILE"):
        assert words in item["reason"], words
    assert NORTH_MIDSHIRE not in roles_of(after)
    # The successor with a code can be named by a register change as for any split; the one without cannot.
    named = status([*MIDSHIRE_PERSON, moved("2026-06-01", residence_before_detention_la_gss=NORTH_MIDSHIRE)],
                   "2026-06-02")
    assert named.responsible_council.org.code == NORTH_MIDSHIRE and named.coordinating_council is None
    unnamed = status([*MIDSHIRE_PERSON, moved("2026-06-01", residence_before_detention_la_gss=SOUTH_MIDSHIRE)],
                     "2026-06-02")
    assert unnamed.responsible_council is None and unnamed.council_split is not None
    # With the later register it is a split like any other: still undetermined until a change names one.
    later = status(MIDSHIRE_PERSON, "2026-05-01", ref=LATER_REGISTER)
    assert later.responsible_council is None and later.council_split.rule == "council-split"
    assert f"South Midshire ({GSS_GIVEN[SOUTH_MIDSHIRE]})" in undetermined_bodies(later)[0]["reason"]


def test_no_council_holds_the_duties_alone_for_disputes_and_childrens_notices():
    """Who speaks for a council party (`duty_holder`) and the council a child's notice names (`council_on`):
    never the successor with a code for an area part of which went to one without (the notice would tell a
    council that may not be the child's); the one successor once its code is given."""
    from datetime import date

    from hub.domain.children import council_on
    from hub.domain.model import DisputeKind
    from hub.domain.succession import duty_holder
    from tests.unit.domain.builders import REF

    after = date(2026, 5, 1)
    assert duty_holder(REF, MIDSHIRE_OLD, DisputeKind.COUNCIL, after) is None
    assert council_on(MIDSHIRE_OLD, after, REF) == MIDSHIRE_OLD  # kept as sent, as for any split
    assert duty_holder(REF, WYVERN_OLD, DisputeKind.COUNCIL, after) is None
    assert council_on(WYVERN_OLD, after, REF) == WYVERN_OLD
    assert duty_holder(LATER_REGISTER, WYVERN_OLD, DisputeKind.COUNCIL, after) == GSS_GIVEN[WYVERN_VALE]
    assert council_on(WYVERN_OLD, after, LATER_REGISTER) == GSS_GIVEN[WYVERN_VALE]


def test_a_successor_named_earlier_in_the_stay_is_taken_only_if_it_has_a_gss_code():
    """s2, a naming, then s3 in the same stay (as tests/unit/domain/test_council_split.py): the successor with
    a code named earlier in the stay is responsible from the s3, as a naming after it would be; one the register
    lists without a GSS code cannot be named (undetermined, the operator's action said), and once a newer
    register gives it its code, its code named earlier in the stay is taken."""
    def stay(area: str, successor: str) -> list:
        return [detained("2026-05-04", "02", residence_la_gss=area, hospital_ods=CNWL),
                moved("2026-05-06", residence_before_detention_la_gss=successor),
                change(ChangeType.SECTION_CHANGED, "2026-05-18", legal_status_code="03", hospital_ods=CNWL)]

    north = status(stay(MIDSHIRE_OLD, NORTH_MIDSHIRE), "2026-05-19")
    assert north.responsible_council.org.code == NORTH_MIDSHIRE and north.coordinating_council is None
    assert "earlier in the same stay in hospital" in north.responsible_council.explanation
    south = status(stay(MIDSHIRE_OLD, SOUTH_MIDSHIRE), "2026-05-19")
    assert south.responsible_council is None and south.council_split.rule == "council-successor-without-gss"
    assert south.coordinating_council.org.code == HARROW
    wyvern = status(stay(WYVERN_OLD, WYVERN_VALE), "2026-05-19")
    assert wyvern.responsible_council is None and wyvern.council_split.rule == "council-successor-without-gss"
    given = status(stay(MIDSHIRE_OLD, GSS_GIVEN[SOUTH_MIDSHIRE]), "2026-05-19", ref=LATER_REGISTER)
    assert given.responsible_council.org.code == GSS_GIVEN[SOUTH_MIDSHIRE]
