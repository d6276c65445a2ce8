"""Outside review (session 30): the scheduled review after a discharge from hospital.

Worcs 14.1: "Scheduled reviews will be held: within 3 months of discharge from
hospital; ... at least every 12 months". The hub owed the first review from
the day entitlement started and never again: a person re-detained under a
qualifying section (which re-determines the council, Worcs 4.3.3) and
discharged again, or one whose entitlement started on s17 leave and who left
hospital months later, was owed no review within 3 months of that discharge
from hospital (only the annual review, or an overdue first one dated before
the discharge).
"""

from hub.domain.model import ChangeType
from tests.unit.domain.builders import change, detained, left, moved, status
from tests.unit.domain.fakes import BUCKINGHAMSHIRE, BUCKS_PRACTICE, OXFORDSHIRE, WORCESTERSHIRE

FIRST_STAY = [detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE),
              left("2024-03-01")]


def _scheduled(result):
    return [(r.kind, r.due_on.isoformat()) for r in result.pending_reviews if r.kind in ("first", "annual")]


def test_re_detention_and_new_discharge_owe_a_review_within_3_months_of_that_discharge():
    history = FIRST_STAY + [
        change(ChangeType.REVIEW_COMPLETED, "2024-05-20"),
        moved("2024-06-01", WORCESTERSHIRE),
        change(ChangeType.REVIEW_COMPLETED, "2024-06-10"),  # the move's unscheduled review
        detained("2024-09-01"),  # a new s3 detention: the council is re-determined (Worcs 4.3.3)
        left("2024-11-15"),
    ]
    result = status(history, "2024-11-16")
    assert result.responsible_council.org.code == WORCESTERSHIRE
    # Within 3 months of the discharge from hospital on 2024-11-15, not the annual review of June 2025.
    assert _scheduled(result) == [("first", "2025-02-15")]
    assert result.next_review.kind == "first" and "leaving hospital on 2024-11-15" in result.next_review.explanation
    assert "Worcs 14.1 (within 3 months of discharge)" in result.next_review.citation
    # The move's trigger was met by the June review: it does not come back.
    assert [r for r in result.pending_reviews if r.kind == "unscheduled"] == []
    # Once held, the reviews are annual from it.
    held = status(history + [change(ChangeType.REVIEW_COMPLETED, "2025-01-20")], "2025-01-21")
    assert _scheduled(held) == [("annual", "2026-01-20")]


def test_a_first_review_still_owed_is_replaced_by_the_one_after_the_new_discharge():
    history = FIRST_STAY + [detained("2024-04-01", residence_la_gss=OXFORDSHIRE), left("2024-07-20")]
    assert _scheduled(status(history, "2024-07-21")) == [("first", "2024-10-20")]
    # While still in hospital the review owed from the first discharge stands.
    assert _scheduled(status(history[:-1], "2024-05-01")) == [("first", "2024-06-01")]


def test_entitlement_from_s17_leave_then_discharge_owes_a_review_within_3_months_of_leaving_hospital():
    history = [detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE),
               change(ChangeType.S17_LEAVE_STARTED, "2024-02-01"),
               change(ChangeType.S17_LEAVE_ENDED, "2024-02-03"),
               change(ChangeType.REVIEW_COMPLETED, "2024-04-15"),  # held while an in-patient again
               left("2024-07-01")]
    on_leave = status(history[:2], "2024-02-02")
    assert on_leave.entitled and _scheduled(on_leave) == [("first", "2024-05-01")]  # unchanged
    result = status(history, "2024-07-02")
    assert result.entitlement_start.isoformat() == "2024-02-01"  # entitlement still dates from the leave
    assert _scheduled(result) == [("first", "2024-10-01")]


def test_re_admission_under_s2_is_no_new_discharge_for_reviews():
    history = FIRST_STAY + [change(ChangeType.REVIEW_COMPLETED, "2024-05-20"),
                            detained("2024-07-01", "02"), left("2024-07-20")]
    assert _scheduled(status(history, "2024-07-21")) == [("annual", "2025-05-20")]
