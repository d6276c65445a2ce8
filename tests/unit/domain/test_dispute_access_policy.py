"""The access policy's part in disputes (hub/domain/access.py), table-driven:
who may raise one through the workflows, and what a body named in one may
do. Written out from the rules, not taken from the module's sets."""

from __future__ import annotations

from datetime import date

import pytest

from hub.domain import access as a
from hub.domain.model import ChangeType, Dispute, DisputeKind
from tests.unit.domain.builders import change, status
from tests.unit.domain.fakes import BUCKINGHAMSHIRE, BUCKS_PRACTICE, OXFORD_HEALTH, WORCESTERSHIRE

BHAM = "E08000025"
D = date(2025, 6, 1)
COUNCIL_TYPES = {"moved", "gp-changed", "placement-started", "review-completed", "review-requested",
                 "discharge-considered", "s117-discharge-decided", "dispute-raised", "dispute-resolved", "died"}


def _history(dispute_id: str):
    return [
        change(ChangeType.DETAINED, date(2024, 1, 2), legal_status_code="03", hospital_ods=OXFORD_HEALTH,
               gp_practice_ods=BUCKS_PRACTICE, residence_la_gss=BUCKINGHAMSHIRE),
        change(ChangeType.LEFT_HOSPITAL, date(2024, 3, 1)),
        change(ChangeType.DISPUTE_RAISED, date(2024, 4, 1),
               dispute=Dispute(dispute_id, DisputeKind.COUNCIL, (BUCKINGHAMSHIRE, BHAM))),
    ]


def _facts(dispute_id: str, on: date = D):
    history = _history(dispute_id)
    return a.person_facts(status(history, on), history, lambda ods: ods[:3])


@pytest.mark.parametrize(("dispute_id", "role", "writes"), [
    # Raised through the API by the responsible council: Birmingham is named, not related.
    ("DSP-0123456789ab", "named-dispute-party", set()),
    # Recorded on the register by a source, or opened by a contest: a dispute party (README role table).
    ("REG-77", "dispute-party", COUNCIL_TYPES),
    ("DSP-01234567", "dispute-party", COUNCIL_TYPES),
])
def test_what_being_named_in_an_open_dispute_lets_a_body_write(dispute_id, role, writes):
    facts = _facts(dispute_id)
    caller = a.Caller(BHAM, "council")
    assert {r.value for r in facts.roles_of(caller)} == {role}
    for ct in ChangeType:
        d = a.decide_write(caller, ct, None, False, facts, "rest")
        assert d.allowed is (ct.value in writes), ct
        if not d.allowed and ct.value in COUNCIL_TYPES:
            assert d.rule is a.Rule.NO_RELATIONSHIP
    # The raiser keeps what its own relationship gives it.
    assert a.decide_write(a.Caller(BUCKINGHAMSHIRE, "council"), ChangeType.MOVED, None, False, facts, "rest").allowed


def test_a_named_body_reads_while_the_dispute_is_open_and_is_no_past_party_after():
    caller = a.Caller(BHAM, "council")
    open_now = _facts("DSP-0123456789ab")
    assert a.decide_read(caller, open_now, None, False, D, None).role is a.Role.NAMED_DISPUTE_PARTY
    nothing_now = a.PersonFacts(frozenset(), {})
    # Asked as_of a day the dispute was open, after it closed: not a past party for having been named ...
    assert not a.decide_read(caller, nothing_now, open_now, True, D, None).allowed
    # ... while a dispute party recorded on the register is one, inside its period.
    registered = _facts("REG-77")
    assert a.decide_read(caller, nothing_now, registered, True, D, None).role is a.Role.PAST_PARTY


NOW = "the person today"  # responsible, coordinating, a dispute party, a named body (`_now`)


def _now() -> a.PersonFacts:
    return a.PersonFacts(frozenset({"RNU"}), {
        BUCKINGHAMSHIRE: frozenset({a.Role.RESPONSIBLE_COUNCIL}),
        "QU9": frozenset({a.Role.RESPONSIBLE_COMMISSIONER}),
        WORCESTERSHIRE: frozenset({a.Role.COORDINATING_COUNCIL}),
        "E06000019": frozenset({a.Role.DISPUTE_PARTY}),
        BHAM: frozenset({getattr(a.Role, "NAMED_DISPUTE_PARTY", a.Role.DISPUTE_PARTY)}),
    })


@pytest.mark.parametrize(("caller", "person", "transfers", "allowed", "role"), [
    (a.Caller(BUCKINGHAMSHIRE, "council"), NOW, (), True, "responsible-council"),
    (a.Caller("QU9", "icb"), NOW, (), True, "responsible-commissioner"),
    (a.Caller(WORCESTERSHIRE, "council"), NOW, (), True, "coordinating-council"),
    # The incoming or outgoing body of an open transfer case (a contest opens a dispute too).
    (a.Caller("E09000015", "council"), NOW, ("E09000015", BUCKINGHAMSHIRE), True, "transfer-body"),
    # A party to another open dispute, a named body, a trust caring for the person: no.
    (a.Caller("E06000019", "council"), NOW, (), False, None),
    (a.Caller(BHAM, "council"), NOW, (), False, None),
    (a.Caller("RNU", "trust"), NOW, (), False, None),
    # A former body (no role today, no open transfer), an unknown person: the one refusal.
    (a.Caller("E09000015", "council"), NOW, (), False, None),
    (a.Caller(BUCKINGHAMSHIRE, "council"), None, (), False, None),
    (a.Caller("HUB", "hub-operator", admin=True), NOW, (), True, "hub-operator"),
])
def test_who_may_raise_a_dispute(caller, person, transfers, allowed, role):  # noqa: ANN001
    d = a.decide_raise_dispute(caller, _now() if person == NOW else person, transfers)
    assert (d.allowed, d.role.value if d.role else None) == (allowed, role)
    if not allowed:
        assert d.rule is a.Rule.NO_RELATIONSHIP and d.text == a.TEXTS[a.Rule.NO_RELATIONSHIP]
