"""Outside review 30: a new qualifying detention ends a CTO; a recall does not.

MHA 1983 s6(4): an application for admission for treatment makes any previous
Part II application under which the person was a community patient cease to
have effect (s40(5) for a hospital order); s17C(c): the CTO stays in force only
until its application ceases to have effect. The hub kept showing the person on
the CTO after such a detention and discharge, and then refused an s117
discharge decision ("cto-blocks-discharge", Worcs 16.2).
"""

from __future__ import annotations

from hub.domain.model import ChangeType
from hub.domain.rules import derive_events
from hub.domain.model import EventType
from tests.unit.domain.builders import change, detained, joint_discharge, left, status
from tests.unit.domain.fakes import BUCKINGHAMSHIRE, BUCKS_PRACTICE, OXFORD_HEALTH

HOME = dict(residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE, hospital_ods=OXFORD_HEALTH)


def _on_cto() -> list:
    """Detained s3, discharged onto a CTO (left-hospital, then cto-started the same day)."""
    return [detained("2024-01-10", **HOME), left("2024-03-01"), change(ChangeType.CTO_STARTED, "2024-03-01")]


def test_a_new_s3_detention_ends_the_cto_and_the_discharge_is_not_onto_it():
    changes = _on_cto() + [detained("2024-09-01", "03"), left("2024-11-01")]
    assert status(changes[:3], "2024-05-01").on_cto
    during = status(changes[:4], "2024-09-02")
    assert not during.on_cto and during.detained and during.entitled
    after = status(changes, "2024-11-02")
    assert not after.on_cto and after.entitled
    # The status says why the CTO ended, with the statute.
    assert "community treatment order ended on 2024-09-01" in after.entitlement.explanation
    assert "not a recall" in after.entitlement.explanation
    assert "MHA 1983 s6(4), s40(5), s17C(c)" in after.entitlement.explanation
    assert any("community treatment order ended" in entry.text and "MHA 1983 s6(4)" in entry.text
               for entry in after.history)


def test_after_the_new_detention_and_discharge_a_joint_s117_discharge_is_not_refused_for_a_cto():
    changes = _on_cto() + [detained("2024-09-01", "03"), left("2024-11-01")]
    decided = changes + joint_discharge("2025-06-01")
    before = status(changes, "2025-06-01")
    result = status(decided, "2025-06-02")
    assert not result.refused_discharges, [r.rule for r in result.refused_discharges]
    assert result.discharged_from_s117 and not result.entitled
    events = derive_events(before, result, decided[-1])
    assert EventType.DISCHARGE_REFUSED not in {e.event_type for e in events}
    assert EventType.ENTITLEMENT_ENDED in {e.event_type for e in events}


def test_a_recall_under_s17e_does_not_end_the_cto():
    changes = _on_cto() + [change(ChangeType.CTO_RECALLED, "2024-09-01", hospital_ods=OXFORD_HEALTH),
                           left("2024-09-20")]
    recalled = status(changes[:4], "2024-09-02")
    assert recalled.on_cto and recalled.in_hospital
    released = status(changes, "2024-09-21")
    assert released.on_cto
    assert "community treatment order ended" not in released.entitlement.explanation
    refused = status(changes + joint_discharge("2025-06-01"), "2025-06-02")
    assert refused.entitled and refused.on_cto
    assert {r.rule for r in refused.refused_discharges} == {"cto-blocks-discharge"}


def test_an_s2_admission_is_not_an_application_for_treatment_and_leaves_the_cto_in_force():
    changes = _on_cto() + [detained("2024-09-01", "02"), left("2024-09-20")]
    assert status(changes[:4], "2024-09-02").on_cto
    assert status(changes, "2024-09-21").on_cto


def test_s2_converted_to_s3_while_on_the_cto_ends_it():
    changes = _on_cto() + [detained("2024-09-01", "02"),
                           change(ChangeType.SECTION_CHANGED, "2024-09-20", legal_status_code="03")]
    assert status(changes[:4], "2024-09-10").on_cto
    converted = status(changes, "2024-09-21")
    assert not converted.on_cto
    assert "community treatment order ended on 2024-09-20" in converted.entitlement.explanation


def test_a_hospital_order_ends_the_cto():
    changes = _on_cto() + [detained("2024-09-01", "10"), left("2024-12-01")]
    assert not status(changes, "2024-12-02").on_cto


def test_a_new_cto_after_the_new_detention_is_in_force_and_the_old_ending_is_no_longer_shown():
    changes = _on_cto() + [detained("2024-09-01", "03"), left("2024-11-01"),
                           change(ChangeType.CTO_STARTED, "2024-11-01")]
    result = status(changes, "2024-11-02")
    assert result.on_cto
    assert "community treatment order ended" not in result.entitlement.explanation
