"""One order within a day: the precedence table, then notice, then the
source's own sequence; never arrival order, never the hub's change id."""

import itertools
import random
from dataclasses import replace

import pytest

from hub.domain import citations
from hub.domain.model import ChangeType
from hub.domain.rules.precedence import SAME_DAY_RANK, change_order, is_late
from tests.unit.domain.builders import change, d, detained, left, status
from tests.unit.domain.fakes import (
    BUCKINGHAMSHIRE, HARROW, HARROW_PRACTICE, NWL_CCG, OXON_CCG, OXON_PRACTICE, WORCESTERSHIRE,
)

# (earlier, later, why): pairs on one date the policies order.
PRECEDENCE_TABLE = [
    (ChangeType.GP_CHANGED, ChangeType.LEFT_HOSPITAL, "the GP registered with at discharge (2013-2016 era)"),
    (ChangeType.MOVED, ChangeType.LEFT_HOSPITAL, "the area discharged to"),
    (ChangeType.MOVED, ChangeType.DETAINED, "ordinarily resident immediately before detention (Worcs 4.3.1)"),
    (ChangeType.GP_CHANGED, ChangeType.DETAINED, "originating commissioner: GP at detention (Worcs 4.4.1)"),
    (ChangeType.DETAINED, ChangeType.SECTION_CHANGED, "a section is converted once in hospital"),
    (ChangeType.DETAINED, ChangeType.LEFT_HOSPITAL, "admitted and discharged the same day"),
    (ChangeType.SECTION_CHANGED, ChangeType.LEFT_HOSPITAL, "the section held at discharge"),
    (ChangeType.SECTION_ENDED_STAYED_INFORMALLY, ChangeType.LEFT_HOSPITAL, "stayed on informally (Worcs 5.5)"),
    (ChangeType.LEFT_HOSPITAL, ChangeType.CTO_STARTED, "a CTO follows the discharge (Worcs 2.2, 5.3)"),
    (ChangeType.CTO_STARTED, ChangeType.CTO_ENDED, "made before ended"),
    (ChangeType.LEFT_HOSPITAL, ChangeType.PLACEMENT_STARTED, "the placement discharged to"),
    (ChangeType.REVIEW_REQUESTED, ChangeType.REVIEW_COMPLETED, "a review held meets the day's request"),
    (ChangeType.REVIEW_COMPLETED, ChangeType.S117_DISCHARGE_DECIDED, "decided at a review (Worcs 16.1)"),
    (ChangeType.CTO_STARTED, ChangeType.S117_DISCHARGE_DECIDED, "refused on a CTO (Worcs 16.2)"),
    (ChangeType.LEFT_HOSPITAL, ChangeType.DISPUTE_RAISED, "disputes the responsibility the day settled"),
    (ChangeType.DISPUTE_RAISED, ChangeType.DISPUTE_RESOLVED, "raised before resolved"),
    (ChangeType.S117_DISCHARGE_DECIDED, ChangeType.DIED, "death last"),
    (ChangeType.MOVED, ChangeType.DIED, "death last"),
]


def test_every_change_type_has_a_rank():
    assert set(SAME_DAY_RANK) == set(ChangeType)


@pytest.mark.parametrize(("first", "then", "why"), PRECEDENCE_TABLE, ids=[f"{a}<{b}" for a, b, _ in PRECEDENCE_TABLE])
def test_precedence_table(first, then, why):
    # The later type gets the smaller change id, source id and arrives first:
    # only the table may decide.
    a = change(first, "2024-05-01", change_id="Z", source_message_id="9")
    b = change(then, "2024-05-01", change_id="A", source_message_id="1")
    assert sorted([b, a], key=change_order) == [a, b], why
    assert sorted([a, b], key=change_order) == [a, b], why


def test_same_type_same_day_notice_then_source_sequence_never_change_id():
    known_first = change(ChangeType.MOVED, "2024-05-01", notified_on=d("2024-05-01"), change_id="Z",
                         residence_la_gss=HARROW, source_message_id="2")
    known_later = change(ChangeType.MOVED, "2024-05-01", notified_on=d("2024-05-03"), change_id="A",
                         residence_la_gss=BUCKINGHAMSHIRE, source_message_id="1")
    assert sorted([known_later, known_first], key=change_order) == [known_first, known_later]
    seq1 = replace(known_first, source_message_id="msg-0001", change_id="Z")
    seq2 = replace(known_first, source_message_id="msg-0002", change_id="A")
    assert sorted([seq2, seq1], key=change_order) == [seq1, seq2]


def stay_with_gp_change_on_discharge_day() -> list:
    return [
        detained("2014-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=OXON_PRACTICE, source_message_id="1"),
        left("2014-03-01", discharge_destination_la_gss=HARROW, source_message_id="2"),
        change(ChangeType.GP_CHANGED, "2014-03-01", gp_practice_ods=HARROW_PRACTICE, source_message_id="3"),
    ]


def test_a_gp_change_recorded_for_the_day_of_discharge_applies_to_that_discharge_in_any_order():
    changes = stay_with_gp_change_on_discharge_day()
    answers = set()
    for perm in itertools.permutations(changes):
        # Adversarial change ids too: the GP change gets the largest id.
        ids = [f"C{i}" for i in random.Random(7).sample(range(100), len(perm))]
        renamed = [replace(c, change_id=i) for c, i in zip(perm, ids, strict=True)]
        answers.add(status(renamed, "2015-01-01").commissioner_basis_code)
    assert answers == {NWL_CCG}  # the Harrow GP's commissioner: "area discharged to and GP registered with"


def test_left_hospital_carries_the_gp_at_discharge_for_2013_2016():
    changes = [
        detained("2014-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=OXON_PRACTICE),
        left("2014-03-01", discharge_destination_la_gss=HARROW, gp_practice_ods=HARROW_PRACTICE),
    ]
    result = status(changes, "2015-01-01")
    assert result.commissioner_basis_code == NWL_CCG
    assert citations.NHS_2013_2016 in result.responsible_commissioner.citation
    without = status([changes[0], left("2014-03-01", discharge_destination_la_gss=HARROW)], "2015-01-01")
    assert without.commissioner_basis_code == OXON_CCG  # the GP before: the discharge GP did decide


def test_discharge_onto_a_cto_the_same_day_is_not_a_re_detention():
    changes = [
        detained("2024-01-10", residence_la_gss=WORCESTERSHIRE, gp_practice_ods=OXON_PRACTICE, source_message_id="1"),
        left("2024-03-01", source_message_id="2"),
        change(ChangeType.CTO_STARTED, "2024-03-01", source_message_id="3"),
    ]
    for perm in itertools.permutations(changes):
        result = status(list(perm), "2024-04-01")
        assert result.entitled and result.on_cto
        assert result.responsible_council.citation == citations.COUNCIL_RESIDENCE
        assert "re-determines" not in result.responsible_council.explanation
        assert result.entitlement_start == d("2024-03-01")


def test_is_late():
    a = detained("2024-01-10", residence_la_gss=WORCESTERSHIRE, source_message_id="1")
    b = left("2024-03-01", source_message_id="2")
    assert is_late(a, [a, b]) and not is_late(b, [a, b])
