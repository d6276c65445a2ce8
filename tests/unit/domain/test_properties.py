"""Invariants over random register histories (hypothesis)."""

from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings, strategies as st

from hub.domain.model import (
    ChangeType as T, DischargeDecision, DischargeReason, Dispute, DisputeKind, RegisterChange,
)
from hub.domain.rules import check_discharge, derive_events, evaluate
from tests.unit.domain.builders import BOOK, PERSON, REF
from tests.unit.domain.fakes import (
    BHAM_PRACTICE, BIRMINGHAM, BUCKINGHAMSHIRE, BUCKS_COUNTY_OLD, BUCKS_PRACTICE, CNWL, CUMBRIA_OLD, HARROW,
    HARROW_PRACTICE, HW_TRUST, OXFORD_HEALTH, OXFORDSHIRE, OXON_PRACTICE, WORCESTERSHIRE, WORCS_PRACTICE,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

COUNCILS = [WORCESTERSHIRE, BUCKINGHAMSHIRE, BUCKS_COUNTY_OLD, HARROW, OXFORDSHIRE, BIRMINGHAM, CUMBRIA_OLD]
PRACTICES = [WORCS_PRACTICE, BUCKS_PRACTICE, OXON_PRACTICE, HARROW_PRACTICE, BHAM_PRACTICE, "Z99999"]
HOSPITALS = [HW_TRUST, OXFORD_HEALTH, CNWL]
SECTIONS = ["02", "03", "03", "10", "16", "37", "31", "04", "20"]
START = date(2012, 1, 1)

decisions = st.builds(
    DischargeDecision,
    council_agrees=st.booleans(),
    commissioner_agrees=st.booleans(),
    reasons=st.lists(st.sampled_from(list(DischargeReason)), max_size=3).map(tuple),
    participants=st.lists(st.sampled_from(["care coordinator", "AMHP", "RC"]), max_size=2).map(tuple),
    person_involved=st.booleans(),
)

LAWFUL = DischargeDecision(True, True, (DischargeReason.NO_LONGER_NEEDS_SERVICES,), ("RC", "AMHP"), True)

# Who records a joint decision (a discharge, a dispute's outcome): its agreement counts only for the
# bodies it may speak for (the councils, commissioners and trusts of the histories, a body of none of
# them, the hub's workflows for every body, or no source at all).
SOURCES = ["", "hub:workflows", "e06000060-0a1b2c3d", HARROW, "14Y", "W2U3Z", "QU9", HW_TRUST, OXFORD_HEALTH,
           "RXT"]

LATER_TYPES = [t for t in T if t is not T.DIED] * 3 + [T.DIED]


@st.composite
def histories(draw) -> list[RegisterChange]:
    """A plausible-ish history: it opens with a detention, then anything may follow."""
    count = draw(st.integers(min_value=1, max_value=14))
    day = START + timedelta(days=draw(st.integers(0, 4000)))
    changes = []
    for index in range(count):
        change_type = T.DETAINED if index == 0 else draw(st.sampled_from(LATER_TYPES))
        fields: dict = {}
        if change_type in (T.DETAINED, T.SECTION_CHANGED):
            fields["legal_status_code"] = draw(st.sampled_from(SECTIONS))
            fields["order_type"] = draw(st.sampled_from([None, "hospital-order"]))
        if change_type is T.DETAINED:
            fields["hospital_ods"] = draw(st.sampled_from(HOSPITALS))
            fields["from_prison"] = draw(st.booleans()) and fields["legal_status_code"] == "16"
            if index == 0 or draw(st.booleans()):
                if draw(st.integers(0, 5)) == 0:
                    fields["no_fixed_abode"] = True
                else:
                    fields["residence_la_gss"] = draw(st.sampled_from(COUNCILS))
                fields["gp_practice_ods"] = draw(st.sampled_from(PRACTICES + [None]))
        if change_type is T.MOVED:
            fields["residence_la_gss"] = draw(st.sampled_from(COUNCILS))
        if change_type is T.GP_CHANGED:
            fields["gp_practice_ods"] = draw(st.sampled_from(PRACTICES))
        if change_type is T.LEFT_HOSPITAL:
            fields["discharge_destination_la_gss"] = draw(st.sampled_from(COUNCILS + [None]))
        if change_type is T.S117_DISCHARGE_DECIDED:
            fields["discharge"] = draw(st.one_of(st.just(LAWFUL), decisions))
        if change_type in (T.S117_DISCHARGE_DECIDED, T.DISPUTE_RESOLVED):
            fields["source"] = draw(st.sampled_from(SOURCES))
        if change_type in (T.DISPUTE_RAISED, T.DISPUTE_RESOLVED):
            kind = draw(st.sampled_from(list(DisputeKind)))
            parties = (BUCKINGHAMSHIRE, HARROW) if kind is DisputeKind.COUNCIL else ("14Y", "W2U3Z")
            resolved = draw(st.sampled_from(parties)) if change_type is T.DISPUTE_RESOLVED else None
            fields["dispute"] = Dispute("D1", kind, parties, resolved)
        changes.append(RegisterChange(
            change_id=f"C{index:03d}", person_id=PERSON, change_type=change_type, effective_date=day,
            notified_on=day, recorded_on=day, **fields,
        ))
        day += timedelta(days=draw(st.integers(1, 400)))
    return changes


def prefixes(changes):
    """(change, status before it, status after it), each evaluated on the change's own date."""
    before = None
    for index, change in enumerate(changes):
        after = evaluate(PERSON, changes[: index + 1], REF, BOOK, change.effective_date)
        yield change, before, after
        before = evaluate(PERSON, changes[: index + 1], REF, BOOK, changes[index + 1].effective_date) if (
            index + 1 < len(changes)) else after


@FAST
@given(histories())
def test_entitled_person_has_one_council_and_one_commissioner_at_every_date(changes):
    dates = {c.effective_date for c in changes} | {c.effective_date + timedelta(days=45) for c in changes}
    for day in sorted(dates):
        result = evaluate(PERSON, changes, REF, BOOK, day)
        if not result.entitled:
            continue
        assert result.responsible_commissioner is not None and result.responsible_commissioner.org is not None
        council, coordinating = result.responsible_council, result.coordinating_council
        # One council answers: the responsible one, or, for no fixed abode with the discharge area not
        # yet known, the hospital's council coordinating (Bucks "no place of residence"), or, for a council
        # split between several successors with none named yet, the hospital's council coordinating (H-03).
        assert council is not None or coordinating is not None
        if council is None and result.council_split is None:
            assert coordinating.citation == "Bucks 'If, exceptionally, no place of residence'"
        elif council is None:
            assert coordinating.citation == "council succession in the reference data"
            assert result.council_basis_code is not None
        for determination in (council, coordinating, result.responsible_commissioner):
            if determination is not None:
                assert "(" in determination.explanation and determination.citation


# A CTO start or revocation with no detention on record evidences one (a CTO follows s3 / s37).
QUALIFYING_REDETENTION = {T.DETAINED, T.SECTION_CHANGED, T.CTO_STARTED, T.CTO_REVOKED}


@FAST
@given(histories())
def test_council_changes_only_through_re_detention_or_a_resolved_dispute(changes):
    for change, before, after in prefixes(changes):
        if before is None or before.council_basis_code is None or after.council_basis_code is None:
            continue
        if before.council_basis_code == after.council_basis_code:
            continue
        awaiting_destination = before.coordinating_council is not None
        assert (
            change.change_type in QUALIFYING_REDETENTION
            or change.change_type is T.DISPUTE_RESOLVED
            or (awaiting_destination and change.change_type in (T.LEFT_HOSPITAL, T.MOVED))
        ), (change.change_type, before.council_basis_code, after.council_basis_code)


@FAST
@given(histories())
def test_entitlement_ends_only_by_joint_discharge_or_death(changes):
    for change, before, after in prefixes(changes):
        if before is not None and before.entitled and not after.entitled:
            assert change.change_type in (T.S117_DISCHARGE_DECIDED, T.DIED)
            if change.change_type is T.S117_DISCHARGE_DECIDED:
                assert check_discharge(before, change.discharge) is None


@FAST
@given(histories())
def test_a_person_not_entitled_receives_no_reviews(changes):
    for change in changes:
        result = evaluate(PERSON, changes, REF, BOOK, change.effective_date + timedelta(days=10))
        if not result.entitled:
            assert result.next_review is None
        else:
            assert result.next_review is not None and result.next_review.due_on >= result.entitlement_start


@FAST
@given(histories(), decisions)
def test_a_cto_always_blocks_discharge(changes, decision):
    for change in changes:
        result = evaluate(PERSON, changes, REF, BOOK, change.effective_date)
        if result.on_cto:
            assert result.entitled
            refusal = check_discharge(result, decision)
            assert refusal is not None and "cto-blocks-discharge" in refusal.explanation


@FAST
@given(histories(), st.randoms(use_true_random=False))
def test_arrival_order_does_not_matter(changes, random):
    shuffled = list(changes)
    random.shuffle(shuffled)
    as_of = changes[-1].effective_date + timedelta(days=30)
    assert evaluate(PERSON, shuffled, REF, BOOK, as_of) == evaluate(PERSON, changes, REF, BOOK, as_of)


@FAST
@given(histories())
def test_every_change_is_recorded_first(changes):
    for change, before, after in prefixes(changes):
        events = derive_events(before, after, change)
        assert events[0].event_type.value == "s117-register-change-recorded"
        assert all(event.change_id == change.change_id for event in events)
