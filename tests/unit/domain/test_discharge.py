"""The discharge guard: joint, recorded, never on a CTO, never on forbidden grounds alone."""

import pytest

from hub.domain.model import ChangeType, DischargeReason as R
from hub.domain.rules import check_discharge
from tests.unit.domain.builders import change, detained, discharge, joint_discharge, lawful_decision, left, status
from tests.unit.domain.fakes import BUCKINGHAMSHIRE

ENTITLED = status([detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE), left("2024-03-01")], "2024-06-01")
ON_CTO = status([detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE),
                 change(ChangeType.CTO_STARTED, "2024-03-01")], "2024-06-01")
NEVER = status([detained("2024-01-10", "02", residence_la_gss=BUCKINGHAMSHIRE), left("2024-02-01")], "2024-06-01")

# (name, status, decision overrides, refused rule or None, citation fragment)
GUARD_TABLE = [
    ("lawful joint decision", ENTITLED, {}, None, None),
    ("lawful plus a forbidden reason alongside", ENTITLED,
     dict(reasons=(R.NO_LONGER_NEEDS_SERVICES, R.TIME_PASSED)), None, None),
    ("on a CTO", ON_CTO, {}, "cto-blocks-discharge", "Worcs 16.2"),
    ("council disagrees", ENTITLED, dict(council_agrees=False), "joint-agreement-required", "Worcs 16.1"),
    ("commissioner disagrees", ENTITLED, dict(commissioner_agrees=False), "joint-agreement-required", "Worcs 16.1"),
    ("no reasons", ENTITLED, dict(reasons=()), "reasons-required", "Worcs 16.3"),
    ("no participants", ENTITLED, dict(participants=()), "participants-required", "Worcs 16.3"),
    ("person not involved", ENTITLED, dict(person_involved=False), "person-involvement-required", "Worcs 16.5"),
    ("refused the plan", ENTITLED, dict(reasons=(R.REFUSED_PLAN,)), "forbidden-sole-grounds", "Worcs 16.9"),
    ("discharged from specialist services", ENTITLED, dict(reasons=(R.DISCHARGED_FROM_SPECIALIST_SERVICES,)),
     "forbidden-sole-grounds", "Worcs 16.9"),
    ("time passed", ENTITLED, dict(reasons=(R.TIME_PASSED,)), "forbidden-sole-grounds", "Worcs 16.9"),
    ("deprived of liberty under the MCA", ENTITLED, dict(reasons=(R.DEPRIVED_OF_LIBERTY_MCA,)),
     "forbidden-sole-grounds", "Worcs 16.9"),
    ("returned informally or under s2", ENTITLED, dict(reasons=(R.RETURNED_INFORMALLY_OR_S2,)),
     "forbidden-sole-grounds", "Worcs 16.9"),
    ("no longer on CTO or s17 leave", ENTITLED, dict(reasons=(R.NO_LONGER_ON_CTO_OR_S17_LEAVE,)),
     "forbidden-sole-grounds", "Worcs 16.9"),
    ("several forbidden grounds", ENTITLED, dict(reasons=(R.REFUSED_PLAN, R.TIME_PASSED)),
     "forbidden-sole-grounds", "Bucks 'should not be taken away because'"),
    ("not entitled", NEVER, {}, "not-entitled", "Worcs 19.4"),
    ("CTO and council disagrees: CTO leads", ON_CTO, dict(council_agrees=False), "cto-blocks-discharge",
     "Worcs 16.1"),
]


@pytest.mark.parametrize(("name", "before", "overrides", "rule", "citation"), GUARD_TABLE,
                         ids=[row[0] for row in GUARD_TABLE])
def test_discharge_guard(name, before, overrides, rule, citation):
    refusal = check_discharge(before, lawful_decision(**overrides))
    if rule is None:
        assert refusal is None
        return
    assert refusal.rule == rule
    assert rule in refusal.explanation
    assert citation in refusal.citation


def test_every_failing_rule_is_named():
    refusal = check_discharge(ON_CTO, lawful_decision(council_agrees=False, person_involved=False))
    for rule in ("cto-blocks-discharge", "joint-agreement-required", "person-involvement-required"):
        assert rule in refusal.explanation


def test_refused_decision_is_recorded_and_does_not_end_entitlement():
    changes = [detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE),
               change(ChangeType.CTO_STARTED, "2024-03-01"), discharge("2024-05-01")]
    result = status(changes, "2024-05-02")
    assert result.entitled
    assert [r.rule for r in result.refused_discharges] == ["cto-blocks-discharge"]


def test_discharge_after_cto_ends_is_allowed():
    changes = [detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE),
               change(ChangeType.CTO_STARTED, "2024-03-01"), change(ChangeType.CTO_ENDED, "2024-09-01"),
               *joint_discharge("2024-10-01")]
    result = status(changes, "2024-10-02")
    assert not result.entitled and result.discharged_from_s117
    assert result.entitlement_end.isoformat() == "2024-10-01"


def test_discharge_change_without_a_decision_is_refused():
    changes = [detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE), left("2024-03-01"),
               change(ChangeType.S117_DISCHARGE_DECIDED, "2024-05-01")]
    assert status(changes, "2024-05-02").refused_discharges[0].rule == "reasons-required"
