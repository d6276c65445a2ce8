"""The first path the service layer relies on."""

from hub.domain.model import EventType
from hub.domain.rules import derive_events
from tests.unit.domain.builders import detained, left, status
from tests.unit.domain.fakes import BUCKINGHAMSHIRE, BUCKS_PRACTICE, HW_TRUST, BOB_ICB


def test_s3_then_leaving_hospital_starts_entitlement_with_council_and_icb():
    changes = [
        detained("2024-03-01", "03", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE,
                 hospital_ods=HW_TRUST),
        left("2024-05-10"),
    ]
    before = status(changes[:1], "2024-05-10")
    after = status(changes, "2024-05-10")
    assert after.entitled and after.entitlement_start.isoformat() == "2024-05-10"
    assert after.responsible_council.org.code == BUCKINGHAMSHIRE
    assert after.responsible_council.explanation.startswith(
        "council: Buckinghamshire, ordinarily resident there before the s3 detention on 2024-03-01 (Worcs 4.3.1)")
    assert after.responsible_commissioner.org.code == BOB_ICB
    events = derive_events(before, after, changes[1])
    assert [e.event_type for e in events] == [EventType.REGISTER_CHANGE_RECORDED, EventType.ENTITLEMENT_STARTED]
