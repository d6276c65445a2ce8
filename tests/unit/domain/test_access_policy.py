"""The one access policy, table-driven: every (role, change type, channel) cell.

The expected answers are written out here from the issue's rules, not taken
from the module's own sets, so a change to the policy must change this table.
"""

from __future__ import annotations

from datetime import date

import pytest

from adapters.council_files.events import COUNCIL_CHANGE_TYPES as FILE_COUNCIL_TYPES
from hub.domain.access import (
    COUNCIL_CHANGE_TYPES,
    Caller,
    PersonFacts,
    Role,
    Rule,
    decide_read,
    decide_write,
)
from hub.domain.model import ChangeType

TRUST_ONLY = {"detained", "section-changed", "s17-leave-started", "s17-leave-ended",
              "section-ended-stayed-informally", "left-hospital", "cto-started", "cto-recalled", "cto-revoked",
              "cto-ended"}
COUNCIL_TYPES = {"moved", "gp-changed", "placement-started", "review-completed", "review-requested",
                 "discharge-considered", "s117-discharge-decided", "dispute-raised", "dispute-resolved", "died"}
CHANNELS = ("rest", "fhir", "mllp", "file")
CHANNEL_KINDS = {"rest": {"trust", "council", "icb"}, "fhir": {"trust", "council", "icb"}, "mllp": {"trust"},
                 "file": {"council"}}

# The person: detained at RNU (Oxford Health), Buckinghamshire responsible,
# BOB ICB commissioner, Worcestershire coordinating, Herefordshire in an open dispute.
PERSON = PersonFacts(
    care_trusts=frozenset({"RNU"}),
    roles_by_org={"E06000060": frozenset({Role.RESPONSIBLE_COUNCIL}),
                  "QU9": frozenset({Role.RESPONSIBLE_COMMISSIONER}),
                  "E10000034": frozenset({Role.COORDINATING_COUNCIL}),
                  "E06000019": frozenset({Role.DISPUTE_PARTY})},
)

# role -> (caller, person known?, the hospital trust the change names, the change types allowed)
ROLES = {
    "hospital-trust, someone new": (Caller("RNU", "trust"), False, "RNU", {"detained"}),
    "care-provider trust": (Caller("RNU", "trust"), True, "RNU", TRUST_ONLY | COUNCIL_TYPES),
    "care-provider trust naming another trust's hospital": (Caller("RNU", "trust"), True, "R1A", COUNCIL_TYPES),
    "unrelated trust, own hospital": (Caller("RV3", "trust"), True, "RV3", {"detained"}),
    "unrelated trust, the carer's hospital": (Caller("RV3", "trust"), True, "RNU", set()),
    "trust, someone new, another trust's hospital": (Caller("RV3", "trust"), False, "RNU", set()),
    "responsible council": (Caller("E06000060", "council"), True, None, COUNCIL_TYPES),
    "responsible commissioner": (Caller("QU9", "icb"), True, None, COUNCIL_TYPES),
    "coordinating council": (Caller("E10000034", "council"), True, None, COUNCIL_TYPES),
    "dispute party": (Caller("E06000019", "council"), True, None, COUNCIL_TYPES),
    "unrelated council": (Caller("E08000025", "council"), True, None, set()),
    "unrelated commissioner": (Caller("QHL", "icb"), True, None, set()),
    "council, someone new": (Caller("E06000060", "council"), False, None, set()),
    "oversight body": (Caller("E06000060", "oversight"), True, None, set()),
}

CELLS = [(role, ct, ch) for role in ROLES for ct in ChangeType for ch in CHANNELS]


@pytest.mark.parametrize(("role", "change_type", "channel"), CELLS, ids=[f"{r}|{c.value}|{h}" for r, c, h in CELLS])
def test_every_role_change_type_and_channel(role: str, change_type: ChangeType, channel: str) -> None:
    caller, known, hospital_trust, allowed_types = ROLES[role]
    # A detention always names its hospital; the other changes name the trust's where it has one.
    names_hospital = hospital_trust is not None and (change_type.value in TRUST_ONLY)
    decision = decide_write(caller, change_type, hospital_trust if names_hospital else None, names_hospital,
                            PERSON if known else None, channel)
    expected = change_type.value in allowed_types and caller.org_kind in CHANNEL_KINDS[channel]
    if change_type is ChangeType.DETAINED and caller.org_kind == "trust" and not names_hospital:
        expected = False
    assert decision.allowed is expected, decision
    if not expected:
        # Every refusal names a rule; the one that depends on the person is no-relationship.
        assert decision.rule is not Rule.ALLOWED
        if caller.org_kind not in {"trust", "council", "icb"}:
            assert decision.rule is Rule.KIND_MAY_NOT_WRITE
        elif caller.org_kind not in CHANNEL_KINDS[channel]:
            assert decision.rule is Rule.CHANNEL_NOT_FOR_KIND
        elif change_type.value in TRUST_ONLY and caller.org_kind != "trust":
            assert decision.rule is Rule.TRUST_ONLY_CHANGE_TYPE
        elif change_type.value in TRUST_ONLY and names_hospital and hospital_trust != caller.org_code:
            assert decision.rule is Rule.HOSPITAL_NOT_RUN_BY_SOURCE
        else:
            assert decision.rule is Rule.NO_RELATIONSHIP


def test_unknown_person_and_not_yours_are_one_rule() -> None:
    """No membership oracle: the decision for someone not on the register and
    someone in nobody's-of-yours care is the same rule (so the same text)."""
    for caller in (Caller("E08000025", "council"), Caller("RV3", "trust")):
        for ct in ChangeType:
            if ct is ChangeType.DETAINED:
                continue
            unknown = decide_write(caller, ct, None, False, None, "rest")
            theirs = decide_write(caller, ct, None, False, PERSON, "rest")
            assert (unknown.allowed, unknown.rule, unknown.text) == (theirs.allowed, theirs.rule, theirs.text)


def test_council_file_events_are_exactly_the_council_change_types() -> None:
    assert FILE_COUNCIL_TYPES == COUNCIL_CHANGE_TYPES
    assert {c.value for c in COUNCIL_CHANGE_TYPES} == COUNCIL_TYPES
    assert {c.value for c in ChangeType} == TRUST_ONLY | COUNCIL_TYPES


def test_hub_operator_may_write_anything() -> None:
    assert decide_write(Caller("HUB", "hub-operator", admin=True), ChangeType.DETAINED, None, False, None,
                        "rest").allowed


D = date(2025, 6, 1)
PAST = PersonFacts(frozenset(), {"E10000034": frozenset({Role.RESPONSIBLE_COUNCIL})})


@pytest.mark.parametrize(("caller", "now", "at_as_of", "given", "as_of", "notified", "allowed", "role"), [
    (Caller("E06000060", "council"), PERSON, None, False, D, None, True, Role.RESPONSIBLE_COUNCIL),
    (Caller("RNU", "trust"), PERSON, None, False, D, None, True, Role.CARE_PROVIDER),
    (Caller("E08000025", "council"), PERSON, None, False, D, None, False, None),
    # Writing never makes a reader: a trust that only wrote has no role.
    (Caller("RV3", "trust"), PERSON, None, False, D, None, False, None),
    # Responsible in the past: reads inside its period (a party on the date asked), nothing later.
    (Caller("E10000034", "council"), PersonFacts(frozenset(), {}), PAST, True, D, None, True, Role.PAST_PARTY),
    (Caller("E10000034", "council"), PersonFacts(frozenset(), {}), PersonFacts(frozenset(), {}), True, D, None,
     False, None),
    (Caller("E10000034", "council"), PersonFacts(frozenset(), {}), None, False, D, None, False, None),
    # Notified: up to the day it was last told, not after.
    (Caller("E10000034", "council"), PersonFacts(frozenset(), {}), None, True, D, D, True, Role.NOTIFIED),
    (Caller("E10000034", "council"), PersonFacts(frozenset(), {}), None, True, date(2025, 6, 2), D, False, None),
    (Caller("HUB", "hub-operator", admin=True), PERSON, None, False, D, None, True, Role.HUB_OPERATOR),
    (Caller("E06000060", "council"), None, None, False, D, None, False, None),
])
def test_read_roles(caller, now, at_as_of, given, as_of, notified, allowed, role) -> None:  # noqa: ANN001
    d = decide_read(caller, now, at_as_of, given, as_of, notified)
    assert (d.allowed, d.role) == (allowed, role)


@pytest.mark.parametrize("change_type", list(ChangeType), ids=lambda c: c.value)
@pytest.mark.parametrize("channel", [*CHANNELS, "workflow"])
def test_the_hubs_own_workflows_record_only_dispute_changes_on_their_channel(change_type, channel) -> None:  # noqa: ANN001
    d = decide_write(Caller("E06000060", "hub"), change_type, None, False, PERSON, channel)
    expected = channel == "workflow" and change_type.value in {"dispute-raised", "dispute-resolved"}
    assert d.allowed is expected
    assert d.role is (Role.HUB_WORKFLOW if expected else None)


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("change_type", list(ChangeType))
def test_a_write_allowed_knowing_nothing_of_the_person_is_allowed_whoever_they_are(change_type, channel) -> None:  # noqa: ANN001
    """`IngestService.write_precheck` reads nothing when the policy allows a
    write without the person's facts: that is sound only if facts never take
    an allowance away."""
    callers = [caller for caller, _known, _hospital, _allowed in ROLES.values()] + [Caller("X", "hub", admin=True)]
    people = [PERSON, PersonFacts(care_trusts=frozenset(), roles_by_org={}),
              PersonFacts(care_trusts=frozenset({"RV3"}), roles_by_org={"E08000025": frozenset(Role)})]
    for caller in callers:
        for trust, named in ((None, False), ("RNU", True), ("RV3", True), (None, True)):
            if decide_write(caller, change_type, trust, named, None, channel).allowed:
                for person in people:
                    assert decide_write(caller, change_type, trust, named, person, channel).allowed, (caller, trust)
