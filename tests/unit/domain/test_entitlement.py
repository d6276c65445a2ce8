"""Entitlement: which legal statuses qualify, when it starts, what never ends it."""

import pytest

from hub.domain.model import ChangeType, DischargeReason
from tests.unit.domain.builders import change, detained, discharge, joint_discharge, lawful_decision, left, status
from tests.unit.domain.fakes import BUCKS_PRACTICE, BUCKINGHAMSHIRE

HOME = dict(residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE)

# (England legal status code, order type, entitled after leaving hospital, citation fragment)
LEGAL_STATUS_TABLE = [
    ("01", None, False, "Bucks 'S117 does not apply to'"),
    ("02", None, False, "Bucks 'S117 does not apply to'"),
    ("03", None, True, "Worcs 1.1, 3.3"),
    ("04", None, False, "Bucks 'S117 does not apply to'"),
    ("05", None, False, "Bucks 'S117 does not apply to'"),
    ("06", None, False, "Bucks 'S117 does not apply to'"),
    ("07", None, False, "Bucks 'S117 does not apply to'"),
    ("08", None, False, "Bucks 'S117 does not apply to'"),
    ("09", None, True, "Worcs 1.1, 3.3"),
    ("10", None, True, "Worcs 1.1, 3.3"),
    ("12", None, False, "Bucks 'S117 does not apply to'"),
    ("15", None, True, "Worcs 1.1, 3.3"),
    ("16", None, True, "Worcs 1.1, 3.3"),
    ("17", None, True, "Worcs 1.1, 3.3"),
    ("18", None, True, "Worcs 1.1, 3.3"),
    ("19", None, False, "Bucks 'S117 does not apply to'"),
    ("20", None, False, "Bucks 'S117 does not apply to'"),
    ("31", "hospital-order", True, "CP(I)A 1964"),
    ("31", "supervision-order", False, "CP(I)A 1964"),
    ("31", None, False, "CP(I)A 1964"),
    ("35", None, False, "Bucks 'S117 does not apply to'"),
    ("37", None, True, "Worcs 1.1, 3.3"),
    ("38", None, True, "Worcs 1.1, 3.3"),
    ("3", None, True, "Worcs 1.1, 3.3"),  # sources that drop the leading zero
    ("99", None, False, "Worcs 1.1, 3.3"),  # not a code the reference data knows
]


@pytest.mark.parametrize(("code", "order_type", "entitled", "citation"), LEGAL_STATUS_TABLE)
def test_legal_status_code_decides_entitlement(code, order_type, entitled, citation):
    changes = [detained("2024-03-01", code, order_type=order_type, **HOME), left("2024-04-01")]
    result = status(changes, "2024-04-02")
    assert result.entitled is entitled
    assert citation in result.entitlement.citation or citation in result.entitlement.explanation
    if entitled:
        assert result.entitlement_start.isoformat() == "2024-04-01"


# (name, changes, as_of, entitled, start, explanation fragment)
TIMELINE_TABLE = [
    ("detained under s3, still in hospital", [detained("2024-03-01", **HOME)], "2024-03-20", False, None,
     "aftercare starts on leaving hospital"),
    ("s2 converted to s3, then left", [detained("2024-03-01", "02", **HOME),
                                       change(ChangeType.SECTION_CHANGED, "2024-03-20", legal_status_code="03"),
                                       left("2024-05-01")], "2024-05-01", True, "2024-05-01", "s3"),
    ("s2 only, then left", [detained("2024-03-01", "02", **HOME), left("2024-03-25")], "2024-04-01", False, None,
     "s2 is not a qualifying section"),
    ("stayed informally after s3 ended", [detained("2024-03-01", **HOME),
                                          change(ChangeType.SECTION_ENDED_STAYED_INFORMALLY, "2024-04-01"),
                                          left("2024-04-20")], "2024-04-20", True, "2024-04-20", "Worcs 5.5"),
    ("still informal in hospital", [detained("2024-03-01", **HOME),
                                    change(ChangeType.SECTION_ENDED_STAYED_INFORMALLY, "2024-04-01")],
     "2024-04-10", False, None, "aftercare starts on leaving hospital"),
    ("s17 leave from s3", [detained("2024-03-01", **HOME), change(ChangeType.S17_LEAVE_STARTED, "2024-04-01")],
     "2024-04-02", True, "2024-04-01", "Worcs 2.2, 8.4"),
    ("s17 leave ended, back in hospital", [detained("2024-03-01", **HOME),
                                           change(ChangeType.S17_LEAVE_STARTED, "2024-04-01"),
                                           change(ChangeType.S17_LEAVE_ENDED, "2024-04-08")],
     "2024-04-09", True, "2024-04-01", "does not end entitlement"),
    ("CTO after s3", [detained("2024-03-01", **HOME), change(ChangeType.CTO_STARTED, "2024-04-01")],
     "2024-04-02", True, "2024-04-01", "Worcs 2.2, 5.3"),
    ("CTO recalled", [detained("2024-03-01", **HOME), change(ChangeType.CTO_STARTED, "2024-04-01"),
                      change(ChangeType.CTO_RECALLED, "2024-06-01")], "2024-06-02", True, "2024-04-01", "hospital"),
    ("CTO revoked", [detained("2024-03-01", **HOME), change(ChangeType.CTO_STARTED, "2024-04-01"),
                     change(ChangeType.CTO_REVOKED, "2024-06-03")], "2024-06-04", True, "2024-04-01", "hospital"),
    ("CTO ended", [detained("2024-03-01", **HOME), change(ChangeType.CTO_STARTED, "2024-04-01"),
                   change(ChangeType.CTO_ENDED, "2024-10-01")], "2024-10-02", True, "2024-04-01", "entitled since"),
    ("CTO with no detention on record", [change(ChangeType.CTO_STARTED, "2024-04-01", **HOME)], "2024-04-02", True,
     "2024-04-01", "CTO"),
    ("re-detained under s2 while entitled", [detained("2023-01-01", **HOME), left("2023-03-01"),
                                             detained("2024-03-01", "02")], "2024-03-05", True, "2023-03-01",
     "does not end entitlement"),
    ("died", [detained("2023-01-01", **HOME), left("2023-03-01"), change(ChangeType.DIED, "2024-01-10")],
     "2024-02-01", False, "2023-03-01", "died on 2024-01-10"),
    ("joint discharge", [detained("2023-01-01", **HOME), left("2023-03-01"), *joint_discharge("2024-01-10")],
     "2024-02-01", False, "2023-03-01", "Worcs 16.1"),
    ("refused plan: discharge refused, still entitled",
     [detained("2023-01-01", **HOME), left("2023-03-01"),
      discharge("2024-01-10", lawful_decision(reasons=(DischargeReason.REFUSED_PLAN,)))],
     "2024-02-01", True, "2023-03-01", "entitled since"),
    ("re-sectioned after discharge: entitled again",
     [detained("2020-01-01", **HOME), left("2020-03-01"), *joint_discharge("2021-01-10"), detained("2024-01-01", **HOME),
      left("2024-02-01")], "2024-02-02", True, "2024-02-01", "entitled since 2024-02-01"),
    ("changes after death are ignored", [detained("2023-01-01", **HOME), change(ChangeType.DIED, "2023-02-01"),
                                          left("2023-03-01")], "2023-04-01", False, None, "died"),
]


@pytest.mark.parametrize(("name", "changes", "as_of", "entitled", "start", "fragment"), TIMELINE_TABLE,
                         ids=[row[0] for row in TIMELINE_TABLE])
def test_entitlement_timeline(name, changes, as_of, entitled, start, fragment):
    result = status(changes, as_of)
    assert result.entitled is entitled
    assert (result.entitlement_start.isoformat() if result.entitlement_start else None) == start
    assert fragment in result.entitlement.explanation


def test_entitlement_flags_follow_the_timeline():
    changes = [detained("2024-03-01", **HOME), change(ChangeType.CTO_STARTED, "2024-04-01"),
               change(ChangeType.CTO_RECALLED, "2024-06-01")]
    recalled = status(changes, "2024-06-02")
    assert recalled.on_cto and recalled.in_hospital and recalled.detained
    on_cto = status(changes, "2024-05-01")
    assert on_cto.on_cto and not on_cto.in_hospital


def test_out_of_order_arrival_gives_the_same_status():
    changes = [detained("2024-03-01", "02", **HOME),
               change(ChangeType.SECTION_CHANGED, "2024-03-20", legal_status_code="03"),
               left("2024-05-01"), change(ChangeType.MOVED, "2024-06-01", residence_la_gss="E10000025")]
    in_order = status(changes, "2024-07-01")
    assert status(list(reversed(changes)), "2024-07-01") == in_order


def test_changes_after_as_of_are_not_folded():
    changes = [detained("2024-03-01", **HOME), left("2024-05-01")]
    assert not status(changes, "2024-04-30").entitled
