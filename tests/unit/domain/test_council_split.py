"""A county split between several successors (hazard H-03): after the vesting day no council is responsible
until a register change names the successor covering the address; before it, and for a single successor,
nothing changes."""

import itertools

import pytest

from hub.domain.model import ChangeType, Dispute, DisputeKind
from hub.domain.rules import evaluation
from hub.domain.rules.engine import SUCCESSOR_UNCHANGED, handover_bases, successor_unchanged
from hub.domain.views import (
    COORDINATING_COUNCIL, RESPONSIBILITY_UNDETERMINED, RESPONSIBLE_COUNCIL, UNKNOWN, roles_of, undetermined_bodies,
    view_of,
)
from tests.unit.domain.builders import BOOK, PERSON, REF, change, d, detained, left, moved, status
from tests.unit.domain.fakes import (
    BUCKINGHAMSHIRE, BUCKS_COUNTY_OLD, CNWL, CUMBERLAND, CUMBRIA_OLD, CUMBRIA_PRACTICE, HARROW, WESTMORLAND,
)

CUMBRIA_PERSON = [
    detained("2022-01-05", residence_la_gss=CUMBRIA_OLD, gp_practice_ods=CUMBRIA_PRACTICE, hospital_ods=CNWL),
    left("2022-03-01"),
]


def named(on: str, successor: str, **fields):
    """The register change naming the successor: a move carrying residence_before_detention_la_gss."""
    return moved(on, residence_before_detention_la_gss=successor, **fields)


def test_before_the_vesting_day_the_county_is_responsible():
    before = status(CUMBRIA_PERSON, "2023-03-31")
    assert before.responsible_council.org.code == CUMBRIA_OLD
    assert before.council_split is None and before.coordinating_council is None
    assert undetermined_bodies(before) == ()


def test_after_the_vesting_day_no_council_is_responsible_and_the_hospitals_council_coordinates():
    after = status(CUMBRIA_PERSON, "2023-04-01")
    assert after.entitled
    assert after.responsible_council is None  # never the abolished county, never a guess
    assert after.council_basis_code == CUMBRIA_OLD  # determined as Cumbria: no hand-over is told
    assert after.coordinating_council.org.code == HARROW  # the hospital's council (CNWL)
    assert "split between Cumberland (E06000063) / Westmorland and Furness (E06000064)" in (
        after.coordinating_council.explanation)
    roles = roles_of(after)
    assert roles[HARROW] == {COORDINATING_COUNCIL}
    assert CUMBRIA_OLD not in roles and CUMBERLAND not in roles and WESTMORLAND not in roles
    [item] = undetermined_bodies(after)
    assert item["role"] == RESPONSIBLE_COUNCIL and item["absent_reason"] == UNKNOWN
    for words in ("Cumbria (E10000006)", "Cumberland (E06000063)", "Westmorland and Furness (E06000064)",
                  "residence_before_detention_la_gss", "council succession in the reference data",
                  "the coordinating council acts meanwhile"):
        assert words in item["reason"], words
    view = view_of(after, roles[HARROW], frozenset({"responsibility"}))
    assert "responsible_council" not in view and view["coordinating_council"] == HARROW  # a key absent: none
    assert view[RESPONSIBILITY_UNDETERMINED] == [item]
    assert handover_bases(after)[0] == CUMBRIA_OLD


def test_without_a_hospital_council_the_reason_says_no_council_coordinates():
    changes = [detained("2022-01-05", residence_la_gss=CUMBRIA_OLD), left("2022-03-01")]
    after = status(changes, "2023-06-01")
    assert after.responsible_council is None and after.coordinating_council is None
    [item] = undetermined_bodies(after)
    assert "the hub operator must add the hospital site's council" in item["reason"]


def test_a_single_successor_is_followed_as_before():
    changes = [detained("2019-05-01", residence_la_gss=BUCKS_COUNTY_OLD, hospital_ods=CNWL), left("2019-07-01")]
    after = status(changes, "2024-01-01")
    assert after.responsible_council.org.code == BUCKINGHAMSHIRE
    assert after.council_split is None and after.coordinating_council is None
    assert undetermined_bodies(after) == ()


def test_a_register_change_naming_the_successor_makes_it_responsible():
    changes = [*CUMBRIA_PERSON, named("2023-05-02", WESTMORLAND)]
    resolved = status(changes, "2023-05-03")
    assert resolved.responsible_council.org.code == WESTMORLAND
    assert resolved.council_basis_code == CUMBRIA_OLD  # a succession, not a transfer
    assert resolved.coordinating_council is None and resolved.council_split is None
    assert undetermined_bodies(resolved) == ()
    assert "as a register change on 2023-05-02 said" in resolved.responsible_council.explanation
    assert not any(r.kind == "unscheduled" for r in resolved.pending_reviews)  # no move: no review
    assert roles_of(resolved)[WESTMORLAND] == {RESPONSIBLE_COUNCIL} and HARROW not in roles_of(resolved)
    # Before the vesting day the same history keeps Cumbria (the successor named counts from the split).
    assert status(changes, "2023-03-31").responsible_council.org.code == CUMBRIA_OLD


def test_naming_a_council_that_is_not_a_successor_changes_nothing_and_says_so():
    changes = [*CUMBRIA_PERSON, named("2023-05-02", HARROW)]
    after = status(changes, "2023-05-03")
    assert after.responsible_council is None and after.council_split is not None
    said = [h.text for h in after.history if "successor council named" in h.text]
    assert said and "is not one of the councils the split council's area is split between" in said[0]
    # No council code in the history (legal-status): where the person lived is the responsibility group's.
    assert not any(code in h.text for h in after.history for code in ("E10000006", HARROW))


def test_a_successor_named_before_the_split_awaits_nothing():
    changes = [*CUMBRIA_PERSON, named("2022-05-02", CUMBERLAND)]
    before = status(changes, "2022-06-01")
    assert before.responsible_council.org.code == CUMBRIA_OLD
    assert any("no council split awaits one: unchanged" in h.text for h in before.history)


def test_a_new_detention_from_a_successor_area_re_determines_the_council():
    changes = [*CUMBRIA_PERSON, detained("2023-06-01", residence_la_gss=CUMBERLAND, hospital_ods=CNWL)]
    after = status(changes, "2023-06-02")
    assert after.responsible_council.org.code == CUMBERLAND and after.council_split is None


def test_a_dispute_resolved_for_the_split_county_leaves_the_council_undetermined():
    dispute = Dispute("D1", DisputeKind.COUNCIL, (CUMBRIA_OLD, HARROW), resolved_responsible=CUMBRIA_OLD)
    changes = [*CUMBRIA_PERSON, change(ChangeType.DISPUTE_RESOLVED, "2023-05-01", source="hub:workflows",
                                       dispute=dispute)]
    after = status(changes, "2023-06-01")
    assert after.responsible_council is None and after.council_split is not None


# -- a successor named earlier in the stay (s2, then s3) ---------------------------------------------------------
#
# Within one stay in hospital (hub/domain/stay_bounds.py, as the children's notices read it), a naming made while
# the person was held under a section that does not qualify (s2: no council determined, so no split awaits one)
# is taken when a qualifying section begins in the same stay and determines the council by the same residence.
# A naming from before the stay began (an earlier stay's, a move backdated before the admission) is not.

def s2_from_cumbria(on: str = "2023-06-01"):
    return detained(on, "02", residence_la_gss=CUMBRIA_OLD, gp_practice_ods=CUMBRIA_PRACTICE, hospital_ods=CNWL)


def s3_in_the_stay(on: str = "2023-06-20", how: str = "section-changed"):
    """The qualifying section beginning in the same stay: a section changed, or a second detention."""
    if how == "section-changed":
        return change(ChangeType.SECTION_CHANGED, on, legal_status_code="03", hospital_ods=CNWL)
    return detained(on, "03", residence_la_gss=CUMBRIA_OLD, hospital_ods=CNWL)


def s2_named_s3(successor: str = CUMBERLAND, how: str = "section-changed"):
    return [s2_from_cumbria(), named("2023-06-05", successor), s3_in_the_stay(how=how)]


@pytest.mark.parametrize("how", ["section-changed", "detained"])
def test_a_successor_named_earlier_in_the_stay_is_responsible_from_the_qualifying_section(how):
    changes = s2_named_s3(how=how)
    under_s2 = status(changes, "2023-06-10")
    assert under_s2.responsible_council is None and under_s2.council_split is None  # s2: nothing determined
    assert successor_unchanged(under_s2, changes[1]) == SUCCESSOR_UNCHANGED[
        "successor council named for the residence before the detention; no council split awaits one: unchanged"]
    after = status(changes, "2023-06-21")
    assert after.responsible_council.org.code == CUMBERLAND  # was: undetermined, the naming to be sent again
    assert after.council_basis_code == CUMBRIA_OLD  # a succession, not a transfer
    assert after.council_split is None and after.coordinating_council is None
    assert undetermined_bodies(after) == ()
    explanation = after.responsible_council.explanation
    for words in ("council: Cumberland, its area covers the place of ordinary residence the responsible council was "
                  "determined by (E10000006, now split between Cumberland (E06000063) / Westmorland and Furness "
                  "(E06000064)), as a register change on 2023-06-05, earlier in the same stay in hospital as the s3 "
                  "detention on 2023-06-01, said", "council succession in the reference data"):
        assert words in explanation, words
    # The history says the successor named earlier in the stay was taken, against the naming; no council code.
    [taken] = [h for h in after.history if h.change_id == changes[1].change_id and "earlier in the stay" in h.text]
    assert taken.text == ("successor council named for the residence before the detention earlier in the stay: "
                          "taken when the qualifying detention began: now responsible")
    assert taken.on == d("2023-06-20")
    assert not any(code in h.text for h in after.history for code in (CUMBRIA_OLD, CUMBERLAND))
    # The rules' own judgement: the naming changed the responsibility (no warning to its sender).
    assert successor_unchanged(after, changes[1]) is None


def test_the_same_in_every_arrival_order():
    changes = [*s2_named_s3(), left("2023-07-01")]
    as_of = d("2023-07-02")
    expected = status(changes, as_of)
    assert expected.responsible_council.org.code == CUMBERLAND and expected.entitled
    for order in itertools.permutations(changes):
        assert status(order, as_of) == expected, [c.change_type.value for c in order]
        # Arriving one at a time (the ingest's incremental evaluation): the same answer at the end.
        ev = evaluation(PERSON, [order[0]], REF, BOOK, as_of)
        for c in order[1:]:
            ev = ev.extended(c)
        assert ev.status == expected, [c.change_type.value for c in order]


def test_a_naming_of_an_earlier_stay_or_from_before_the_stay_is_still_not_taken():
    earlier_stay = [detained("2023-05-01", "02", residence_la_gss=CUMBRIA_OLD, hospital_ods=CNWL),
                    named("2023-05-05", CUMBERLAND), left("2023-05-20"), s2_from_cumbria(), s3_in_the_stay()]
    backdated = [named("2023-05-25", CUMBERLAND), s2_from_cumbria(), s3_in_the_stay()]
    for changes in (earlier_stay, backdated):
        after = status(changes, "2023-06-21")
        assert after.responsible_council is None and after.council_split is not None
        assert after.coordinating_council.org.code == HARROW
        assert not any("earlier in the stay" in h.text for h in after.history)


def test_a_council_named_earlier_in_the_stay_that_is_not_a_successor_changes_nothing():
    changes = [s2_from_cumbria(), named("2023-06-03", HARROW), named("2023-06-05", WESTMORLAND),
               named("2023-06-07", CUMBERLAND), s3_in_the_stay()]
    after = status(changes, "2023-06-21")
    # The first naming of a successor is taken (as the children's notices address the first named).
    assert after.responsible_council.org.code == WESTMORLAND
    assert "as a register change on 2023-06-05, earlier in the same stay in hospital as the s3 detention" in (
        after.responsible_council.explanation)
    not_one = SUCCESSOR_UNCHANGED["successor council named for the residence before the detention is not one of the "
                                  "councils the split council's area is split between: unchanged"]
    assert successor_unchanged(after, changes[1]) == not_one  # not a successor of the split that began
    assert successor_unchanged(after, changes[2]) is None  # taken
    assert successor_unchanged(after, changes[3]) is not None  # the split already resolved: unchanged
    only_not_one = status([s2_from_cumbria(), named("2023-06-03", HARROW), s3_in_the_stay()], "2023-06-21")
    assert only_not_one.responsible_council is None and only_not_one.council_split is not None
    assert only_not_one.coordinating_council.org.code == HARROW


# -- a successor named on the admission day (review of H-03) ------------------------------------------------------
#
# A `moved` change sorts before the detention of its day (its residence is the one immediately before the
# detention: hub/domain/rules/precedence.py), so a naming dated the day of admission was folded out of any stay:
# never taken, and its sender told that no council split awaits one while the person query said the council was
# undetermined, awaiting exactly that naming. It is the stay's that begins that day (hub/domain/stay_bounds.py).

@pytest.mark.parametrize("first", ["s3", "s2-then-s3"])
def test_a_successor_named_on_the_admission_day_is_the_stays(first):
    from hub.domain.children import stays

    admitted = detained("2023-06-01", "03" if first == "s3" else "02", residence_la_gss=CUMBRIA_OLD,
                        gp_practice_ods=CUMBRIA_PRACTICE, hospital_ods=CNWL)
    naming = named("2023-06-01", CUMBERLAND)
    changes = [naming, admitted]
    if first == "s2-then-s3":
        changes.append(s3_in_the_stay())
    after = status(changes, "2023-06-21")
    assert after.responsible_council.org.code == CUMBERLAND  # was: undetermined, the hospital's council coordinating
    assert after.coordinating_council is None and after.council_split is None
    assert successor_unchanged(after, naming) is None  # was: "no council split awaits a successor"
    for order in itertools.permutations(changes):
        assert status(order, "2023-06-21") == after
    [stay] = stays(changes)
    assert stay.successors_named == (CUMBERLAND,)  # the children's notices read the same stay


def test_a_successor_named_on_the_readmission_day_is_the_new_stays_not_the_last_ones():
    from hub.domain.children import stays

    earlier = [detained("2023-05-01", "02", residence_la_gss=CUMBRIA_OLD, hospital_ods=CNWL),
               named("2023-05-05", WESTMORLAND), left("2023-05-20")]
    changes = [*earlier, named("2023-06-01", CUMBERLAND),
               detained("2023-06-01", "03", residence_la_gss=CUMBRIA_OLD, hospital_ods=CNWL)]
    after = status(changes, "2023-06-21")
    assert after.responsible_council.org.code == CUMBERLAND  # the earlier stay's Westmorland not taken
    first, second = stays(changes)
    assert first.successors_named == (WESTMORLAND,) and second.successors_named == (CUMBERLAND,)
    # The day before the admission is still before the stay: not taken, as a backdated move.
    backdated = [*earlier, named("2023-05-31", CUMBERLAND),
                 detained("2023-06-01", "03", residence_la_gss=CUMBRIA_OLD, hospital_ods=CNWL)]
    assert status(backdated, "2023-06-21").responsible_council is None
    assert stays(backdated)[1].successors_named == ()


def test_a_qualifying_detention_begun_out_of_any_stay_takes_no_naming_of_the_last_one():
    """A section changed to s3 (or a discharge or CTO evidencing a detention never recorded) after the last stay
    ended: the rules begin a detention there (`_on_section_changed`), in no stay stay_bounds.py knows, so the
    last stay's naming is not its own (it was taken: Cumberland responsible, from the stay under s2 before)."""
    earlier = [detained("2023-05-01", "02", residence_la_gss=CUMBRIA_OLD, hospital_ods=CNWL),
               named("2023-05-05", CUMBERLAND), left("2023-05-20")]
    for later in (change(ChangeType.SECTION_CHANGED, "2023-06-20", legal_status_code="03", hospital_ods=CNWL),
                  left("2023-06-20", legal_status_code="03", hospital_ods=CNWL),
                  change(ChangeType.CTO_STARTED, "2023-06-20", legal_status_code="03", hospital_ods=CNWL)):
        after = status([*earlier, later], "2023-06-21")
        assert after.responsible_council is None and after.council_split is not None, later.change_type
        assert not any("earlier in the stay" in h.text for h in after.history)
    # Within the stay, a CTO evidencing the s3 the stay was under (it ends the stay) still takes it.
    in_stay = [detained("2023-06-01", "02", residence_la_gss=CUMBRIA_OLD, hospital_ods=CNWL),
               named("2023-06-05", CUMBERLAND),
               change(ChangeType.CTO_STARTED, "2023-06-20", legal_status_code="03", hospital_ods=CNWL)]
    assert status(in_stay, "2023-06-21").responsible_council.org.code == CUMBERLAND
