"""What each organisation ought to know of a person (hub/domain/views.py)."""

import pytest

from hub.domain.model import ChangeType, Dispute, DisputeKind, EventType
from hub.domain.views import NOT_INVOLVED, event_type_for, reason_for, roles_of, view_of, views_for
from tests.unit.domain.builders import change, detained, left, moved, status
from tests.unit.domain.fakes import BUCKINGHAMSHIRE, BUCKS_PRACTICE, HARROW, OXFORDSHIRE, WORCESTERSHIRE

ALL = frozenset({"identity", "responsibility", "explanations"})
BASE = [detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE), left("2024-03-01")]


def test_roles_of_responsible_host_and_dispute_parties():
    dispute = Dispute("D1", DisputeKind.COUNCIL, (BUCKINGHAMSHIRE, WORCESTERSHIRE))
    s = status(BASE + [moved("2024-04-01", HARROW), change(ChangeType.DISPUTE_RAISED, "2024-04-02", dispute=dispute)],
               "2024-05-01")
    roles = roles_of(s)
    assert roles[BUCKINGHAMSHIRE] == {"responsible-council", "dispute-party"}
    assert roles[HARROW] == {"host-council"}
    assert roles[WORCESTERSHIRE] == {"dispute-party"}
    assert roles[s.responsible_commissioner.org.code] == {"responsible-commissioner"}


def test_view_keeps_responsible_bodies_to_agreements_granting_responsibility():
    s = status(BASE, "2024-04-01")
    full = view_of(s, {"responsible-council"}, ALL)
    bare = view_of(s, {"responsible-council"}, frozenset({"identity"}))
    assert full["responsible_council"] == BUCKINGHAMSHIRE and "responsible_council" not in bare
    assert full["entitled"] is True and full["entitlement_start"] == "2024-03-01"
    assert [r["kind"] for r in full["reviews"]] == ["first"]
    assert None not in full.values()


def test_an_organisation_told_before_and_no_longer_involved_is_told_so():
    s = status(BASE, "2024-04-01")
    views = views_for(s, [OXFORDSHIRE], lambda org: ALL)
    assert views[OXFORDSHIRE] == NOT_INVOLVED
    assert views[BUCKINGHAMSHIRE]["roles"] == ["responsible-council"]


V = {"roles": ["responsible-council"], "entitled": True, "reviews": [], "disputes": [],
     "responsible_council": "A", "responsible_commissioner": "X"}
EVENT_TYPES = [
    ("first told, entitled", None, V, EventType.ENTITLEMENT_STARTED),
    ("first told, detained", None, {**V, "entitled": False}, EventType.REGISTER_CHANGE_RECORDED),
    ("first told, host", None, {**V, "roles": ["host-council"], "entitled": False}, EventType.MOVED_OUT_OF_AREA),
    ("first told, dispute party", NOT_INVOLVED, {"roles": ["dispute-party"], "disputes": []},
     EventType.DISPUTE_RAISED),
    ("entitlement ended", V, {**V, "entitled": False}, EventType.ENTITLEMENT_ENDED),
    ("no longer involved", V, NOT_INVOLVED, EventType.RESPONSIBILITY_TRANSFERRED),
    ("commissioner changed", V, {**V, "responsible_commissioner": "Y"}, EventType.RESPONSIBILITY_TRANSFERRED),
    ("became host", {**V, "roles": []}, {**V, "roles": ["host-council"]}, EventType.MOVED_OUT_OF_AREA),
    # A host told who is responsible, no longer host (aftercare ended, or the person moved on): its own
    # role's end, which its agreement grants it to hear, not a transfer of responsibility it never held.
    ("no longer host", {**V, "roles": ["host-council"], "entitled": True}, NOT_INVOLVED, EventType.MOVED_OUT_OF_AREA),
    ("dispute raised", V, {**V, "disputes": [{"dispute_id": "D", "kind": "council"}]}, EventType.DISPUTE_RAISED),
    ("dispute resolved", {**V, "disputes": [{"dispute_id": "D", "kind": "council"}]}, V, EventType.DISPUTE_RESOLVED),
    ("review added", V, {**V, "reviews": [{"kind": "unscheduled", "due_on": "2024-04-01"}]}, EventType.REVIEW_DUE),
    ("nothing named", V, {**V, "entitlement_start": "2024-03-01"}, EventType.REGISTER_CHANGE_RECORDED),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), EVENT_TYPES, ids=[r[0] for r in EVENT_TYPES])
def test_event_type_names_the_difference(name, old, new, expected):
    assert event_type_for(old, new) is expected


def test_reason_says_what_changed_and_why_without_personal_data():
    s = status(BASE, "2024-04-01")
    reason = reason_for({"roles": ["responsible-commissioner"]}, NOT_INVOLVED, s, explain=True)
    assert reason.startswith("no longer the responsible NHS commissioner")
    gained = reason_for(None, view_of(s, {"responsible-council"}, ALL), s, explain=True)
    assert gained.startswith("now the responsible council") and "Worcs 4.3.1" in gained


def test_the_why_goes_only_to_a_body_granted_explanations():
    """The determinations' explanations name the detention's section and date
    and the policy: without `explanations` the reason says what changed for
    the body, in plain words, and nothing of why."""
    s = status(BASE, "2024-04-01")
    told = {"roles": ["responsible-council"], "entitled": False, "responsible_council": BUCKINGHAMSHIRE}
    now = view_of(s, {"responsible-council"}, frozenset({"responsibility"}))
    with_why = reason_for(told, now, s, explain=True)
    bare = reason_for(told, now, s, explain=False)
    assert s.entitlement.explanation in with_why
    assert s.entitlement.explanation not in bare and "2024" not in bare and "Worcs" not in bare
    gained = reason_for(None, now, s, explain=False)
    assert gained == "now the responsible council"
    assert s.responsible_council.explanation in reason_for(None, now, s, explain=True)
    # The plain reasons, naming nothing of the history, stay.
    host = {"roles": ["host-council"], "entitled": True}
    assert reason_for(host, NOT_INVOLVED, s, explain=False) == (
        "no longer the council of the area the person lives in (host); "
        "the person no longer lives in that area, or is no longer entitled")


@pytest.mark.parametrize("role, expected", [("host-council", EventType.MOVED_OUT_OF_AREA),
                                            ("dispute-party", EventType.DISPUTE_RAISED)])
def test_a_body_newly_involved_in_an_entitled_persons_care_hears_why_not_that_it_started(role, expected):
    """The entitlement began months before: a host council or a dispute party
    first told now is told it became one, not "entitlement started"."""
    assert event_type_for(None, {**V, "roles": [role]}) is expected
    assert event_type_for(NOT_INVOLVED, {**V, "roles": [role]}) is expected
