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
