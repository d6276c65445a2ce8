"""Reviews: first within 3 months, then at least yearly, new placements, unscheduled triggers."""

import pytest

from hub.domain.agreements import AgreementBook, AreaAgreement
from hub.domain.model import ChangeType, DischargeReason
from tests.unit.domain.builders import change, detained, discharge, joint_discharge, lawful_decision, left, moved, status
from tests.unit.domain.fakes import BUCKINGHAMSHIRE, BUCKS_PRACTICE, HARROW, OXFORDSHIRE

BASE = [detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE),
        left("2024-03-01")]

# (name, extra changes, as_of, due on, kind, citation fragment)
REVIEW_TABLE = [
    ("first review within 3 months", [], "2024-03-02", "2024-06-01", "first", "Worcs 14.1"),
    ("annual after the first review", [change(ChangeType.REVIEW_COMPLETED, "2024-05-20")], "2024-06-01",
     "2025-05-20", "annual", "Worcs 14.1 (at least every 12 months)"),
    ("new placement after 6 weeks by default", [change(ChangeType.PLACEMENT_STARTED, "2024-03-05")], "2024-03-06",
     "2024-04-16", "new-placement", "Bucks 'SWIFT(AIS)"),
    ("placement reviewed: back to annual", [change(ChangeType.PLACEMENT_STARTED, "2024-03-05"),
                                            change(ChangeType.REVIEW_COMPLETED, "2024-04-10")], "2024-04-11",
     "2025-04-10", "annual", "Worcs 14.1"),
    ("unscheduled on a move to another council area", [moved("2024-04-02", OXFORDSHIRE)], "2024-04-03",
     "2024-04-02", "unscheduled", "Worcs 14.1, 17.1"),
    ("unscheduled when discharge is considered", [change(ChangeType.DISCHARGE_CONSIDERED, "2024-04-20")],
     "2024-04-21", "2024-04-20", "unscheduled", "Worcs 14.1 (unscheduled"),
    ("unscheduled on request", [change(ChangeType.REVIEW_REQUESTED, "2024-04-22", review_reason="person asked")],
     "2024-04-23", "2024-04-22", "unscheduled", "Worcs 14.1 (unscheduled"),
    ("unscheduled review done: annual again", [change(ChangeType.REVIEW_REQUESTED, "2024-04-22"),
                                               change(ChangeType.REVIEW_COMPLETED, "2024-04-25")], "2024-04-26",
     "2025-04-25", "annual", "Worcs 14.1"),
    ("month end clamps", [change(ChangeType.REVIEW_COMPLETED, "2024-02-29")], "2024-03-02",
     "2024-06-01", "first", "Worcs 14.1"),  # a review before entitlement does not count
]


@pytest.mark.parametrize(("name", "extra", "as_of", "due", "kind", "citation"), REVIEW_TABLE,
                         ids=[row[0] for row in REVIEW_TABLE])
def test_next_review(name, extra, as_of, due, kind, citation):
    review = status(BASE + extra, as_of).next_review
    assert (review.due_on.isoformat(), review.kind) == (due, kind)
    assert citation in review.citation


def test_first_review_clamps_to_month_end():
    changes = [detained("2023-10-01", residence_la_gss=BUCKINGHAMSHIRE), left("2023-11-30")]
    assert status(changes, "2023-12-01").next_review.due_on.isoformat() == "2024-02-29"


def test_area_agreement_sets_placement_weeks_and_interval():
    book = AgreementBook(areas={BUCKINGHAMSHIRE: AreaAgreement(name="Bucks", new_placement_review_weeks=12,
                                                               review_interval_months=6)})
    placed = status(BASE + [change(ChangeType.PLACEMENT_STARTED, "2024-03-05")], "2024-03-06", book=book)
    assert placed.next_review.due_on.isoformat() == "2024-05-28"
    reviewed = status(BASE + [change(ChangeType.REVIEW_COMPLETED, "2024-05-20")], "2024-06-01", book=book)
    assert reviewed.next_review.due_on.isoformat() == "2024-11-20"


@pytest.mark.parametrize("bad", [dict(review_interval_months=13), dict(first_review_months=4),
                                 dict(new_placement_review_weeks=13), dict(new_placement_review_weeks=5)])
def test_area_agreements_cannot_relax_the_policy(bad):
    with pytest.raises(ValueError):
        AreaAgreement(name="lax", **bad)


def test_move_within_the_same_council_area_triggers_nothing():
    changes = BASE + [moved("2024-04-02", BUCKINGHAMSHIRE)]
    assert status(changes, "2024-04-03").next_review.kind == "first"


NO_REVIEW_TABLE = [
    ("never entitled", [detained("2024-01-10", "02", residence_la_gss=HARROW), left("2024-02-01")]),
    ("discharged", BASE + [change(ChangeType.REVIEW_REQUESTED, "2024-04-22"), *joint_discharge("2024-05-01")]),
    ("died", BASE + [change(ChangeType.DIED, "2024-05-01")]),
    ("still detained, first time", [detained("2024-01-10", residence_la_gss=HARROW)]),
]


@pytest.mark.parametrize(("name", "changes"), NO_REVIEW_TABLE, ids=[row[0] for row in NO_REVIEW_TABLE])
def test_no_reviews_without_entitlement(name, changes):
    assert status(changes, "2024-06-01").next_review is None


def test_refused_discharge_keeps_reviews():
    changes = BASE + [discharge("2024-05-01", lawful_decision(reasons=(DischargeReason.TIME_PASSED,)))]
    assert status(changes, "2024-05-02").next_review is not None


def test_every_pending_review_is_listed_with_its_trigger_earliest_first():
    # The first review (due 1 June) is overdue on 1 July; the move on 20 June
    # triggers an unscheduled review and the placement on 25 June another.
    changes = BASE + [moved("2024-06-20", OXFORDSHIRE), change(ChangeType.PLACEMENT_STARTED, "2024-06-25")]
    result = status(changes, "2024-07-01")
    pending = [(r.kind, r.due_on.isoformat(), r.trigger, r.triggered_on.isoformat()) for r in result.pending_reviews]
    assert pending == [
        ("first", "2024-06-01", "left-hospital", "2024-03-01"),
        ("unscheduled", "2024-06-20", "moved", "2024-06-20"),
        ("new-placement", "2024-08-06", "placement-started", "2024-06-25"),
    ]
    assert result.next_review == result.pending_reviews[0]
    assert [r.citation for r in result.pending_reviews] == [
        "Worcs 14.1 (within 3 months of discharge)", "Worcs 14.1, 17.1",
        "Bucks 'SWIFT(AIS) would be used to flag reviews' (6-12 weeks)"]
    # A review held afterwards meets all of them: only the annual one is left.
    held = status(changes + [change(ChangeType.REVIEW_COMPLETED, "2024-07-02")], "2024-07-03")
    assert [(r.kind, r.trigger) for r in held.pending_reviews] == [("annual", "review-completed")]
