"""Which change sent since a retraction restates the retracted one (hub/domain/retraction.py `restates`):
the same type and date, and the type's identifying facts; what a resend may correct is not one."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from hub.domain.model import ChangeType, DischargeDecision, DischargeReason, Dispute, DisputeKind, RegisterChange
from hub.domain.retraction import RESTATING_FACTS, restates

DAY = date(2024, 9, 2)


def _change(change_type: ChangeType, **facts: object) -> RegisterChange:
    return RegisterChange(change_id="c-1", person_id="p-1", change_type=change_type, effective_date=DAY,
                          notified_on=DAY, recorded_on=DAY, source="client-1", source_message_id="m-1", **facts)


def _resent(change: RegisterChange, **facts: object) -> RegisterChange:
    """`change` sent again: new ids, another key of the organisation, received later."""
    return replace(change, change_id="c-2", source="client-2", source_message_id="m-2",
                   notified_on=date(2024, 9, 9), recorded_on=date(2024, 9, 9), **facts)


def test_every_change_type_has_a_rule() -> None:
    assert set(RESTATING_FACTS) == set(ChangeType)


DETENTION = _change(ChangeType.DETAINED, hospital_ods="RNU", legal_status_code="03", residence_la_gss="E10000002",
                    gp_practice_ods="K81001")


def test_a_detention_resent_is_the_same_event_even_with_its_residence_or_gp_corrected() -> None:
    assert restates(_resent(DETENTION), DETENTION)
    assert restates(_resent(DETENTION, residence_la_gss="E10000034", gp_practice_ods="M81001",
                            expected_stay_weeks=12), DETENTION)


@pytest.mark.parametrize("differs", [{"effective_date": date(2024, 9, 3)}, {"hospital_ods": "RNU02"},
                                     {"legal_status_code": "02"}, {"change_type": ChangeType.SECTION_CHANGED},
                                     {"hospital_ods": None}])
def test_a_detention_on_another_day_at_another_hospital_or_under_another_section_is_another(differs: dict) -> None:
    assert not restates(_resent(DETENTION, **differs), DETENTION)


def test_leaving_hospital_is_told_apart_by_the_hospital_only() -> None:
    left = _change(ChangeType.LEFT_HOSPITAL, hospital_ods="RNU", discharge_destination_la_gss="E10000002")
    assert restates(_resent(left, discharge_destination_la_gss="E10000034", legal_status_code="03"), left)
    assert not restates(_resent(left, hospital_ods="R1A"), left)


def test_a_move_by_its_council_a_gp_change_by_its_practice() -> None:
    moved = _change(ChangeType.MOVED, residence_la_gss="E10000002", gp_practice_ods="K81001")
    assert restates(_resent(moved, gp_practice_ods="M81001"), moved)
    assert not restates(_resent(moved, residence_la_gss="E10000034"), moved)
    gp = _change(ChangeType.GP_CHANGED, gp_practice_ods="K81001")
    assert restates(_resent(gp), gp) and not restates(_resent(gp, gp_practice_ods="M81001"), gp)


def test_a_dispute_by_its_id_and_kind() -> None:
    raised = _change(ChangeType.DISPUTE_RAISED, dispute=Dispute("d-1", DisputeKind.COUNCIL, ("E1", "E2")))
    assert restates(_resent(raised, dispute=Dispute("d-1", DisputeKind.COUNCIL, ("E1", "E2", "E3"))), raised)
    assert not restates(_resent(raised, dispute=Dispute("d-2", DisputeKind.COUNCIL, ("E1", "E2"))), raised)


def test_a_discharge_decision_is_compared_whole_but_for_its_ids_and_receipt() -> None:
    decision = DischargeDecision(True, True, (DischargeReason.NO_LONGER_NEEDS_SERVICES,), ("AMHP",), True)
    decided = _change(ChangeType.S117_DISCHARGE_DECIDED, discharge=decision)
    assert restates(_resent(decided), decided)
    assert not restates(_resent(decided, discharge=replace(decision, commissioner_agrees=False)), decided)


def test_a_death_by_its_day() -> None:
    died = _change(ChangeType.DIED)
    assert restates(_resent(died), died)
    assert not restates(_resent(died, effective_date=date(2024, 9, 1)), died)
