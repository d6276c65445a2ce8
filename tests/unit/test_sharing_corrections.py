"""A correction of what was disclosed is owed to every recipient (UK GDPR Art. 19)."""

from datetime import date

from hub.sharing import SharingAgreements

DOC = {"agreements": [
    {"id": "DSA-HOST", "valid_from": "2024-01-01", "valid_to": "2025-12-31", "recipients": [
        {"org_code": "E10000034", "events": ["s117-moved-out-of-area"], "field_groups": ["responsibility"]}]},
]}


def test_any_agreement_in_force_covers_a_correction_with_its_field_groups():
    sharing = SharingAgreements.from_document(DOC)
    decision = sharing.decide("E10000034", "s117-notification-corrected", date(2025, 6, 1))
    assert decision.allowed and decision.field_groups == frozenset({"responsibility"})
    assert not sharing.decide("E10000034", "s117-entitlement-started", date(2025, 6, 1)).allowed
    # Deny by default still holds: no agreement in force, no correction either.
    assert not sharing.decide("E10000034", "s117-notification-corrected", date(2026, 6, 1)).allowed
    assert not sharing.decide("E06000060", "s117-notification-corrected", date(2025, 6, 1)).allowed
    assert sharing.field_groups_for("E10000034", date(2025, 6, 1)) == frozenset({"responsibility"})


DOC_WIDE = {"agreements": [
    {"id": "DSA-A", "valid_from": "2024-01-01", "valid_to": "2025-12-31", "recipients": [
        {"org_code": "E10000034", "events": ["s117-moved-out-of-area", "s117-review-due"],
         "field_groups": ["responsibility"]},
        {"org_code": "E06000060", "events": ["*"], "field_groups": ["responsibility", "explanations"]}]},
    {"id": "DSA-B", "valid_from": "2025-06-01", "recipients": [
        {"org_code": "E10000034", "events": ["s117-entitlement-started"], "field_groups": ["identity"]}]},
]}


def test_answers_kept_per_question_are_the_answers_worked_out_afresh():
    """decide and field_groups_for keep their answers (the dispatcher asks the
    same few questions thousands of times a second): asked in any order, again,
    and past the bound on what is kept, each answer is what a fresh object gives."""
    from hypothesis import given, settings, strategies as st

    import hub.sharing as sharing_module

    orgs = st.sampled_from(["E10000034", "E06000060", "E08000026"])
    events = st.sampled_from(["s117-moved-out-of-area", "s117-review-due", "s117-entitlement-started",
                              "s117-notification-corrected"])
    days = st.dates(min_value=date(2023, 6, 1), max_value=date(2026, 6, 1))

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(orgs, events, days), min_size=1, max_size=40))
    def check(questions):
        kept = SharingAgreements.from_document(DOC_WIDE)
        for org, event, day in questions + questions:
            assert kept.decide(org, event, day) == SharingAgreements.from_document(DOC_WIDE).decide(org, event, day)
            assert kept.field_groups_for(org, day) == \
                SharingAgreements.from_document(DOC_WIDE).field_groups_for(org, day)

    check()
    bound = sharing_module._ANSWERS_KEPT
    try:  # a small bound: the kept answers are emptied and worked out again, still right
        sharing_module._ANSWERS_KEPT = 3
        check()
    finally:
        sharing_module._ANSWERS_KEPT = bound


def test_a_kept_answer_is_one_call() -> None:
    """`decide` and `field_groups_for` are the kept answers' caches themselves, not methods calling
    them: a question asked before calls no Python function (the dispatcher asks two or three an event),
    and still each object's own (a reload makes a new object, with nothing kept)."""
    import sys

    sharing = SharingAgreements.from_document(DOC_WIDE)
    day = date(2025, 6, 1)
    first = sharing.decide("E06000060", "s117-review-due", day)
    groups = sharing.field_groups_for("E10000034", day)
    counted = []

    def profile(_frame, event, _arg):  # noqa: ANN001, ANN202
        if event in ("call", "c_call"):
            counted.append(event)

    sys.setprofile(profile)
    try:
        again = sharing.decide("E06000060", "s117-review-due", day)
        groups_again = sharing.field_groups_for("E10000034", day)
    finally:
        sys.setprofile(None)
    assert again is first and groups_again is groups
    assert len(counted) <= 1, counted  # `setprofile`'s own: a cache's hit is no Python call (a method was one)
    reloaded = SharingAgreements.from_document(DOC)
    assert reloaded.decide("E06000060", "s117-review-due", day) != first  # another object: its own answers
