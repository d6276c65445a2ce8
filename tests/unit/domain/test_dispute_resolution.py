"""How a dispute is resolved (hub/domain/workflows/machine.py `resolve`):
by every party agreeing the same outcome (Worcs 15.5 local resolution;
4.4.8, 15.6), by the determination of the body owning the area procedure's
final stage (Worcs 15.5 arbitration by NHS England; Bucks: ICET), recorded by
the hub operator, or by a source's dispute-resolved change on the register.
One party never resolves alone, at any stage. Also the machine's checks on a
dispute raised through the API: its parties' kind, and its id."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from hub.domain.agreements import LEAD_BODY, AreaAgreement, EscalationStage
from hub.domain.workflows import machine as m
from hub.domain.workflows import model
from hub.domain.workflows.model import REGISTER_ACTOR, DisputeState, WorkflowRefusal
from tests.unit.domain.test_workflows import AREA, BUCKS_AREA, DAY0, HOLIDAYS, QGH, QU9, dispute

LATER = DAY0 + timedelta(days=5)
DETERMINED = "arbitration decision NHSE-117"


def three_parties():
    case, _ = m.raise_dispute(case_id="d3", person_id="p1", kind="commissioner", parties=(QU9, QGH, "QRV"),
                              raised_by=QU9, on=DAY0, reason="GP registration", meeting_needs=QU9, area=AREA,
                              holidays=HOLIDAYS, dispute_id="D-3")
    return case


def at_last_stage(case):
    while case.stage_index + 1 < len(case.stages):
        case, _ = m.escalate(case, case.parties[0], DAY0, HOLIDAYS)
    return case


@pytest.mark.parametrize("stage", ["first", "last"])
def test_one_party_only_proposes_and_saying_it_again_is_refused(stage):
    case = dispute()
    if stage == "last":
        case = at_last_stage(case)
    before = case.state
    proposed, step = m.resolve(case, QU9, LATER, QGH, DAY0)
    assert proposed.state == before == step.to_state and step.action.value == "agree-resolution"
    assert proposed.responsible is None and proposed.resolved_on is None and proposed.clock is not None
    assert (proposed.resolution.proposed_by, proposed.resolution.agreed_by) == (QU9, (QU9,))
    assert "Worcs 15.5" in step.citation and f"awaiting {QGH}" in step.explanation
    with pytest.raises(WorkflowRefusal) as refused:
        m.resolve(proposed, QU9, LATER + timedelta(days=1), QGH, DAY0)
    assert (refused.value.status, refused.value.rule) == (409, "awaiting-agreement")
    assert "Worcs 15.5" in refused.value.citation and QGH in refused.value.detail


def test_the_other_partys_same_terms_resolve_it():
    proposed, _ = m.resolve(dispute(), QU9, LATER, QGH, DAY0)
    resolved, step = m.resolve(proposed, QGH, LATER + timedelta(days=2), QGH, DAY0)
    assert resolved.state == DisputeState.RESOLVED == step.to_state and step.action.value == "resolve"
    assert (resolved.responsible, resolved.responsible_from, resolved.resolved_on) == (QGH, DAY0,
                                                                                       LATER + timedelta(days=2))
    assert resolved.clock is None and resolved.resolution is None and resolved.determined_by == ""
    assert "Worcs 15.5" in step.citation and "Worcs 4.4.8, 15.6" in step.citation
    assert f"agreed by every party ({QU9}, {QGH})" in step.explanation


def test_different_terms_replace_the_proposal_and_every_party_of_three_must_agree():
    case = three_parties()
    case, _ = m.resolve(case, QU9, LATER, QGH, DAY0)
    case, step = m.resolve(case, QGH, LATER, QU9, DAY0)  # a counter-proposal
    assert case.resolution.proposed_by == QGH and case.resolution.agreed_by == (QGH,)
    assert "in place of" in step.explanation
    case, _ = m.resolve(case, QU9, LATER, QU9, DAY0)
    assert case.state == DisputeState.OPEN and case.resolution.agreed_by == (QGH, QU9)
    case, step = m.resolve(case, "QRV", LATER, QU9, DAY0)
    assert case.state == DisputeState.RESOLVED and case.responsible == QU9


def test_a_different_date_is_different_terms():
    case, _ = m.resolve(dispute(), QU9, LATER, QGH, DAY0)
    case, _ = m.resolve(case, QGH, LATER, QGH, DAY0 + timedelta(days=1))
    assert case.state == DisputeState.OPEN and case.resolution.proposed_by == QGH


def test_a_proposal_survives_escalation():
    case, _ = m.resolve(dispute(), QU9, LATER, QGH, DAY0)
    case, _ = m.escalate(case, QGH, LATER, HOLIDAYS)
    resolved, _ = m.resolve(case, QGH, LATER, QGH, DAY0)
    assert resolved.state == DisputeState.RESOLVED


@pytest.mark.parametrize(("area", "escalations", "expected"), [
    (AREA, 0, (409, "not-at-final-stage")),
    (AREA, 1, (409, "not-at-final-stage")),
    (AREA, 2, DisputeState.RESOLVED),  # arbitration by NHS England
    (BUCKS_AREA, 0, (409, "not-at-final-stage")),
    (BUCKS_AREA, 1, DisputeState.RESOLVED),  # ICET
    (AreaAgreement(name="one stage", escalation=(EscalationStage("local", LEAD_BODY, 20, "x 1.1"),)), 0,
     (409, "no-determining-body")),
])
def test_the_determination_is_recorded_only_at_the_final_stage_of_a_body_other_than_the_lead(area, escalations,
                                                                                             expected):
    case = dispute(area=area)
    for _ in range(escalations):
        case, _ = m.escalate(case, QU9, DAY0, HOLIDAYS)
    if isinstance(expected, tuple):
        with pytest.raises(WorkflowRefusal) as refused:
            m.resolve(case, model.DETERMINATION_ACTOR, LATER, QGH, DAY0, DETERMINED)
        assert (refused.value.status, refused.value.rule) == expected and refused.value.citation
        return
    resolved, step = m.resolve(case, model.DETERMINATION_ACTOR, LATER, QGH, DAY0, DETERMINED)
    owner = case.stages[-1].owner
    assert resolved.state == expected and resolved.determined_by == f"{owner}: {DETERMINED}"
    assert step.actor == model.DETERMINATION_ACTOR and case.stages[-1].citation in step.citation
    assert f"determined by {owner}" in step.explanation


def test_a_determination_names_what_is_recorded_and_no_party_records_one():
    case = at_last_stage(dispute())
    with pytest.raises(WorkflowRefusal) as missing:
        m.resolve(case, model.DETERMINATION_ACTOR, LATER, QGH, DAY0)
    assert (missing.value.status, missing.value.rule) == (422, "determination-required")
    with pytest.raises(WorkflowRefusal) as party:
        m.resolve(case, QU9, LATER, QGH, DAY0, DETERMINED)
    assert (party.value.status, party.value.rule) == (403, "determining-body-only")
    assert "Worcs 15.5" in party.value.citation


def test_the_register_resolves_as_recorded_at_any_stage():
    resolved, step = m.resolve(dispute(), REGISTER_ACTOR, LATER, QGH, DAY0)
    assert resolved.state == DisputeState.RESOLVED and step.actor == REGISTER_ACTOR
    assert "Worcs 4.4.8, 15.6" in step.citation


@pytest.mark.parametrize(("kind", "parties", "rule"), [
    ("council", ("E10000034", "QGH"), "party-not-a-council"),
    ("council", ("E10000034", "E06000060"), None),
    ("commissioner", ("QU9", "E10000034"), "party-not-a-commissioner"),
    ("commissioner", ("QU9", "QGH"), None),
])
def test_every_party_raised_through_the_api_is_a_body_of_the_disputes_kind(kind, parties, rule):
    kinds = {"E10000034": "council", "E06000060": "council", "QU9": "commissioner", "QGH": "commissioner"}

    def raise_it():
        return m.raise_dispute(case_id="d9", person_id="p1", kind=kind, parties=parties, raised_by=parties[0],
                               on=DAY0, reason="r", meeting_needs=parties[0], area=AREA, holidays=HOLIDAYS,
                               dispute_id="D-9", kind_of=kinds.get)
    if rule is None:
        assert raise_it()[0].state == DisputeState.OPEN
        return
    with pytest.raises(WorkflowRefusal) as refused:
        raise_it()
    assert (refused.value.status, refused.value.rule) == (422, rule)
    assert "Worcs" in refused.value.citation and parties[1] in refused.value.detail


def test_an_api_dispute_id_is_told_from_a_contests_and_a_registers():
    assert model.raised_through_api(model.new_api_dispute_id())
    assert not model.raised_through_api("DSP-1a2b3c4d")  # a contest's (DSP- and the case id's first 8)
    assert not model.raised_through_api("REG-77") and not model.raised_through_api("DSP-1a2b3c4d5e6f7")


def test_the_resolution_proposal_round_trips_through_the_store_format():
    from hub.codec import from_jsonable, to_jsonable
    from hub.domain.workflows.model import Case

    case, _ = m.resolve(dispute(), QU9, LATER, QGH, DAY0)
    assert from_jsonable(Case, to_jsonable(case)) == case
    old_row = {k: v for k, v in to_jsonable(dispute()).items() if k not in ("resolution", "determined_by")}
    assert from_jsonable(Case, old_row).resolution is None  # a case stored before: no proposal


def test_resolution_dates_are_checked_before_anything_is_recorded():
    with pytest.raises(WorkflowRefusal) as future:
        m.resolve(dispute(), QU9, DAY0, QGH, date(2099, 1, 1))
    assert future.value.rule == "responsible-from-in-future"
