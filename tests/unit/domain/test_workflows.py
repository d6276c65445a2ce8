"""Transfer and dispute workflows: every transition, legal and illegal, with
the paragraph it rests on; clocks in working days with bank holidays; the
reimbursement statement; the Worcs 8.5 hold; invariants by hypothesis."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hub.domain.agreements import AreaAgreement, EscalationStage
from hub.domain.model import ChangeType, Dispute, DisputeKind
from hub.domain.workflows import machine as m
from hub.domain.workflows.clocks import due_on
from hub.domain.workflows.held import hold_reason
from hub.domain.workflows.model import (
    CLOCK_ACTOR, DETERMINATION_ACTOR, FINAL_STATES, REGISTER_ACTOR, Action, CaseKind, DisputeState, TransferState,
    WorkflowRefusal,
)
from hub.domain.workflows.settlement import reimbursement_statement
from tests.unit.domain.builders import change, joint_discharge, status

BUCKS, WORCS, OXON, QU9, QGH = "E06000060", "E10000034", "E10000025", "QU9", "QGH"
HOLIDAYS = frozenset({date(2025, 5, 5), date(2025, 5, 26), date(2025, 8, 25)})
AREA = AreaAgreement(name="test", acknowledgement_working_days=10, reminder_working_days=2)
BUCKS_AREA = AreaAgreement(name="Bucks", escalation=(
    EscalationStage("Joint Management Group", "JMG", 20, "Bucks 'Management of Disputes'"),
    EscalationStage("ICET", "ICET", 20, "Bucks 'Management of Disputes'"),
))
DAY0 = date(2025, 4, 28)  # a Monday; 5 May is a bank holiday


def transfer(on: date = DAY0):
    case, _ = m.open_transfer(case_id="t1", person_id="p1", role="council", outgoing=BUCKS, incoming=WORCS, on=on,
                              basis="Worcs 4.3.3", area=AREA, holidays=HOLIDAYS)
    return case


def dispute(kind: str = "commissioner", area: AreaAgreement = AREA, on: date = DAY0):
    parties = (BUCKS, WORCS) if kind == "council" else (QU9, QGH)
    case, _ = m.raise_dispute(case_id="d1", person_id="p1", kind=kind, parties=parties, raised_by=parties[1], on=on,
                              reason="ordinary residence", meeting_needs=parties[0], area=area, holidays=HOLIDAYS,
                              dispute_id="D-1")
    return case


def agreed(case, on: date, responsible: str, responsible_from: date):
    """Every party sends the same terms in turn: the last agreement resolves (Worcs 15.5)."""
    for party in case.parties:
        case, step = m.resolve(case, party, on, responsible, responsible_from)
    return case, step


def test_acknowledgement_clock_counts_working_days_without_bank_holidays():
    case = transfer()
    # 10 working days from Mon 28 April 2025, skipping Mon 5 May: Tue 13 May.
    assert case.clock.due_on == date(2025, 5, 13)
    assert case.clock.owner == WORCS
    assert case.state == TransferState.AWAITING


# --- every transfer transition, legal and illegal ---------------------------------
LATE = date(2025, 5, 14)
TRANSFER_TABLE = [
    # (state, action, actor, on, expected state or (status, rule), citation contains)
    (TransferState.AWAITING, "accept", WORCS, DAY0, TransferState.ACCEPTED, "Worcs 17.2"),
    (TransferState.AWAITING, "contest", WORCS, DAY0, TransferState.CONTESTED, "Worcs 4.3.4"),
    (TransferState.AWAITING, "contest", WORCS, date(2025, 5, 13), TransferState.CONTESTED, "Worcs 4.3.4"),
    (TransferState.AWAITING, "contest", WORCS, LATE, (409, "contest-after-deadline"), "Worcs 4.3.4"),
    (TransferState.AWAITING, "accept", BUCKS, DAY0, (403, "incoming-only"), "Worcs 17.2"),
    (TransferState.AWAITING, "contest", BUCKS, DAY0, (403, "incoming-only"), "Worcs 4.3.4"),
    (TransferState.AWAITING, "accept", OXON, DAY0, (403, "not-a-party"), "Worcs 17.2"),
    (TransferState.AWAITING, "breach", CLOCK_ACTOR, LATE, TransferState.OVERDUE, "Worcs 17.2"),
    (TransferState.AWAITING, "breach", CLOCK_ACTOR, date(2025, 5, 13), (409, "clock-running"), "Worcs 17.2"),
    (TransferState.OVERDUE, "accept", WORCS, LATE, TransferState.ACCEPTED, "Worcs 17.2"),
    (TransferState.OVERDUE, "contest", WORCS, LATE, (409, "contest-after-deadline"), "Worcs 4.3.4"),
    (TransferState.OVERDUE, "breach", CLOCK_ACTOR, LATE, (409, "illegal-transition"), "Worcs 17.2"),
    (TransferState.ACCEPTED, "accept", WORCS, DAY0, (409, "already-accepted"), "Worcs 17.2"),
    (TransferState.ACCEPTED, "contest", WORCS, DAY0, (409, "already-accepted"), "Worcs 4.3.4"),
    (TransferState.CONTESTED, "accept", WORCS, DAY0, (409, "already-contested"), "Worcs 17.2"),
    (TransferState.CONTESTED, "contest", WORCS, DAY0, (409, "already-contested"), "Worcs 4.3.4"),
    (TransferState.ACCEPTED, "breach", CLOCK_ACTOR, LATE, (409, "case-closed"), "Worcs 17.2"),
    (TransferState.AWAITING, "breach", WORCS, LATE, (403, "clock-only"), "Worcs 17.2"),
    (TransferState.AWAITING, "accept", REGISTER_ACTOR, DAY0, (403, "incoming-only"), "Worcs 17.2"),
]


def _transfer_in(state: TransferState):
    case = transfer()
    if state is TransferState.OVERDUE:
        case, _ = m.transfer_breach(case, LATE, AREA)
    elif state is TransferState.ACCEPTED:
        case, _ = m.accept(case, WORCS, DAY0)
    elif state is TransferState.CONTESTED:
        case, _ = m.contest(case, WORCS, DAY0, "not ordinarily resident here")
    return case


def _act_transfer(case, action: str, actor: str, on: date):
    if action == "accept":
        return m.accept(case, actor, on)
    if action == "contest":
        return m.contest(case, actor, on, "not ordinarily resident here")
    return m.transfer_breach(case, on, AREA, actor)


@pytest.mark.parametrize(("state", "action", "actor", "on", "expected", "cites"), TRANSFER_TABLE)
def test_transfer_transitions(state, action, actor, on, expected, cites):
    case = _transfer_in(state)
    if isinstance(expected, tuple):
        with pytest.raises(WorkflowRefusal) as refused:
            _act_transfer(case, action, actor, on)
        assert (refused.value.status, refused.value.rule) == expected
        assert cites in refused.value.citation
        return
    after, step = _act_transfer(case, action, actor, on)
    assert after.state == expected == step.to_state
    assert step.from_state == state and step.action == Action(action)
    assert cites in step.citation
    assert (after.clock is None) == (after.state in FINAL_STATES)


def test_overdue_transfer_is_escalated_to_the_first_stage_of_its_roles_procedure():
    # A council's responsibility: the councils' procedure (the 2014 Disputes Regulations,
    # Worcs 4.3.4, 15.4), never Who Pays? (was: Who Pays? director level for every transfer).
    after, step = m.transfer_breach(transfer(), LATE, AREA)
    assert "local resolution between the councils" in step.explanation
    assert "Disputes between Local Authorities" in step.citation and "Who Pays" not in step.citation
    assert after.breaches == ("acknowledgement",)
    # The NHS commissioner's: the area's NHS procedure (Who Pays? 2020 Appendix 1, Worcs 15.5).
    nhs, _ = m.open_transfer(case_id="t3", person_id="p1", role="commissioner", outgoing=QU9, incoming=QGH, on=DAY0,
                             basis="Worcs 4.4.1", area=AREA, holidays=HOLIDAYS)
    after, step = m.transfer_breach(nhs, LATE, AREA)
    assert "local resolution at director level" in step.explanation
    assert "Who Pays? 2020 Appendix 1" in step.citation


def test_transfer_decided_by_a_dispute_opens_accepted():
    case, step = m.open_transfer(case_id="t2", person_id="p1", role="council", outgoing=WORCS, incoming=BUCKS,
                                 on=DAY0, basis="x", area=AREA, holidays=HOLIDAYS, decided_by_dispute=True)
    assert case.state == TransferState.ACCEPTED and case.clock is None
    assert "Worcs 4.4.8" in step.citation


# --- every dispute transition -----------------------------------------------------
def _dispute_in(state: DisputeState, stages=AREA):
    case = dispute(area=stages)
    if state is DisputeState.ESCALATED:
        case, _ = m.escalate(case, QGH, DAY0, HOLIDAYS)
    elif state is DisputeState.RESOLVED:
        case, _ = agreed(case, DAY0 + timedelta(days=3), QU9, DAY0)
    return case


DISPUTE_TABLE = [
    (DisputeState.OPEN, "agree-interim", QU9, DisputeState.OPEN, "Worcs 4.4.8"),
    (DisputeState.OPEN, "escalate", QU9, DisputeState.ESCALATED, "Who Pays? 2020 Appendix 1"),
    # One party's resolve only proposes (agree-resolution): every party must agree (Worcs 15.5).
    (DisputeState.OPEN, "resolve", QGH, DisputeState.OPEN, "Worcs 15.5"),
    (DisputeState.OPEN, "resolve", "QRV", (403, "not-a-party"), "Worcs 4.4.8, 15.6"),
    (DisputeState.OPEN, "resolve", REGISTER_ACTOR, DisputeState.RESOLVED, "Worcs 4.4.8, 15.6"),
    # The final stage's determination, not at the first stage.
    (DisputeState.OPEN, "resolve", DETERMINATION_ACTOR, (409, "not-at-final-stage"), "Worcs 15.5"),
    (DisputeState.OPEN, "escalate", REGISTER_ACTOR, (403, "clock-or-party-only"), "Who Pays"),
    (DisputeState.OPEN, "breach", QU9, (403, "clock-only"), "Who Pays"),
    (DisputeState.OPEN, "agree-interim", CLOCK_ACTOR, (403, "party-only"), "Worcs 4.4.8"),
    (DisputeState.OPEN, "breach", CLOCK_ACTOR, (409, "escalate-instead"), "Who Pays"),
    (DisputeState.ESCALATED, "agree-interim", QGH, DisputeState.ESCALATED, "Worcs 4.4.8"),
    (DisputeState.ESCALATED, "escalate", QGH, DisputeState.ESCALATED, "Who Pays? 2020 Appendix 1"),
    (DisputeState.ESCALATED, "resolve", QU9, DisputeState.ESCALATED, "Worcs 15.5"),
    (DisputeState.RESOLVED, "resolve", QU9, (409, "case-closed"), "15.6"),
    (DisputeState.RESOLVED, "escalate", QU9, (409, "case-closed"), "Who Pays"),
    (DisputeState.RESOLVED, "agree-interim", QU9, (409, "case-closed"), "Worcs 4.4.8"),
]


def _act_dispute(case, action: str, actor: str, on: date = DAY0 + timedelta(days=5)):
    if action == "agree-interim":
        return m.agree_interim(case, actor, on, QU9, {QU9: 6000, QGH: 4000})
    if action == "escalate":
        return m.escalate(case, actor, on, HOLIDAYS)
    if action == "resolve":
        return m.resolve(case, actor, on, QU9, DAY0, "arbitration" if actor == DETERMINATION_ACTOR else "")
    return m.dispute_breach(case, on, actor)


@pytest.mark.parametrize(("state", "action", "actor", "expected", "cites"), DISPUTE_TABLE)
def test_dispute_transitions(state, action, actor, expected, cites):
    case = _dispute_in(state)
    if isinstance(expected, tuple):
        with pytest.raises(WorkflowRefusal) as refused:
            _act_dispute(case, action, actor)
        assert (refused.value.status, refused.value.rule) == expected
        assert cites in refused.value.citation
        return
    after, step = _act_dispute(case, action, actor)
    assert after.state == expected == step.to_state
    assert cites in step.citation
    assert (after.clock is None) == (after.state in FINAL_STATES)


def test_council_dispute_interim_follows_the_council_meeting_needs():
    case = dispute("council")
    interim = case.interims[-1]
    assert interim.lead_body == BUCKS and interim.share_of(BUCKS) == 10_000 and not interim.agreed
    assert interim.citation == "Worcs 4.3.4"


def test_commissioner_dispute_is_jointly_funded_until_agreed_and_the_other_party_must_agree():
    case = dispute("commissioner")
    assert dict(case.interims[-1].shares) == {QU9: 5000, QGH: 5000}
    proposed, _ = m.agree_interim(case, QU9, DAY0, QGH, {QU9: 4000, QGH: 6000})
    assert proposed.proposal is not None and len(proposed.interims) == 1
    again, _ = m.agree_interim(proposed, QU9, DAY0, QGH, {QU9: 4000, QGH: 6000})
    assert again.proposal is not None and len(again.interims) == 1  # the same party twice is not agreement
    agreed, step = m.agree_interim(proposed, QGH, DAY0 + timedelta(days=2), QGH, {QU9: 4000, QGH: 6000})
    assert agreed.interims[-1].agreed and agreed.interims[-1].lead_body == QGH
    assert agreed.clock.owner == QGH  # the lead body convenes local resolution
    assert "Worcs 4.4.8" in step.citation


@pytest.mark.parametrize(("lead", "shares", "rule"), [
    ("QRV", {QU9: 5000, QGH: 5000}, "lead-body-not-a-party"),
    (QU9, {QU9: 5000, QGH: 4000}, "shares-must-total-100"),
    (QU9, {QU9: 5000, "QRV": 5000}, "share-for-non-party"),
    (QU9, {QU9: 11000, QGH: -1000}, "shares-must-total-100"),
])
def test_bad_interim_terms_are_422_naming_the_rule(lead, shares, rule):
    with pytest.raises(WorkflowRefusal) as refused:
        m.agree_interim(dispute(), QU9, DAY0, lead, shares)
    assert (refused.value.status, refused.value.rule) == (422, rule)


def test_stage_clocks_come_from_the_area_agreement_and_escalate_once_then_breach():
    # The area's own procedure (Bucks JMG -> ICET) is for disputes between NHS commissioners: a
    # commissioner dispute (was a council one, which now follows the 2014 Disputes Regulations).
    case = dispute("commissioner", area=BUCKS_AREA)
    assert case.clock.owner == "JMG"
    assert case.clock.due_on == date(2025, 5, 28)  # 20 working days, two bank holidays skipped
    with pytest.raises(WorkflowRefusal) as early:
        m.escalate(case, CLOCK_ACTOR, case.clock.due_on, HOLIDAYS)
    assert early.value.rule == "clock-running"
    due = due_on(case, date(2025, 5, 29), HOLIDAYS, 2)
    assert due is not None and due.action is Action.ESCALATE
    escalated, step = m.escalate(case, CLOCK_ACTOR, date(2025, 5, 29), HOLIDAYS)
    assert escalated.clock.owner == "ICET" and escalated.breaches == ("Joint Management Group",)
    assert "Bucks 'Management of Disputes'" in step.citation
    with pytest.raises(WorkflowRefusal) as last:
        m.escalate(escalated, QU9, date(2025, 5, 29), HOLIDAYS)
    assert (last.value.status, last.value.rule) == (409, "no-further-stage")
    late = escalated.clock.due_on + timedelta(days=1)
    assert due_on(escalated, late, HOLIDAYS, 2).action is Action.BREACH
    breached, _ = m.dispute_breach(escalated, late)
    assert due_on(breached, late, HOLIDAYS, 2) is None  # once


def test_reminder_before_the_deadline_once_per_clock():
    case = transfer()
    assert due_on(case, date(2025, 5, 8), HOLIDAYS, 2) is None
    reminder = due_on(case, date(2025, 5, 9), HOLIDAYS, 2)  # Fri 9 May + 2 working days = Tue 13 May
    assert reminder is not None and reminder.kind == "reminder"
    assert due_on(replace(case, reminded=(reminder.key,)), date(2025, 5, 12), HOLIDAYS, 2) is None


def test_resolution_requires_a_party_and_a_date_not_in_the_future():
    case = dispute()
    with pytest.raises(WorkflowRefusal) as refused:
        m.resolve(case, QU9, DAY0, "QRV", DAY0)
    assert refused.value.rule == "responsible-not-a-party"
    with pytest.raises(WorkflowRefusal) as future:
        m.resolve(case, QU9, DAY0, QU9, DAY0 + timedelta(days=1))
    assert future.value.rule == "responsible-from-in-future"


class _Costs:
    """What each ICB carried: 100p a day, half each before the agreed 70:30 from 10 May."""

    def carried(self, person_id, kind, start, end):  # noqa: ANN001, ANN201
        days = (end - start).days + 1
        return {QU9: 50 * days, QGH: 50 * days} if start < date(2025, 5, 10) else {QU9: 70 * days, QGH: 30 * days}


def test_reimbursement_statement_names_the_payer_periods_and_shares():
    case = dispute("commissioner")  # opened 28 April, 50:50 by default
    case, _ = m.agree_interim(case, QU9, date(2025, 5, 8), QU9, {QU9: 7000, QGH: 3000})
    case, _ = m.agree_interim(case, QGH, date(2025, 5, 10), QU9, {QU9: 7000, QGH: 3000})
    case, _ = agreed(case, date(2025, 6, 1), QGH, date(2025, 4, 1))
    statement = reimbursement_statement(case)
    assert statement.payer == QGH and statement.payees == (QU9,)
    assert [(line.start, line.end, line.share_bp, line.interim_agreed) for line in statement.lines] == [
        (date(2025, 4, 28), date(2025, 5, 9), 5000, False),
        (date(2025, 5, 10), date(2025, 5, 31), 7000, True),
    ]
    assert statement.total_pence is None and "Worcs 4.4.8, 15.6" in statement.citation
    costed = reimbursement_statement(case, _Costs())
    assert costed.lines[0].amount_pence == 600  # 12 days x 100 x 50%
    assert costed.total_pence == 600 + 1540 and costed.side == "NHS"
    bodies = {b.org: b for b in costed.bodies}
    assert (bodies[QU9].paid_pence, bodies[QU9].owed_pence, bodies[QU9].balance_pence) == (2140, 0, 2140)
    assert (bodies[QGH].paid_pence, bodies[QGH].owed_pence, bodies[QGH].balance_pence) == (1260, 3400, -2140)


def test_council_found_responsible_after_carrying_the_interim_owes_nothing():
    case = dispute("council")  # Bucks leads and carries 100%
    case, _ = agreed(case, date(2025, 6, 1), BUCKS, DAY0)
    statement = reimbursement_statement(case)
    assert statement.payer == BUCKS and statement.lines == () and "nothing to reimburse" in statement.explanation


# --- Worcs 8.5: held changes --------------------------------------------------------
def test_change_ending_entitlement_or_moving_responsibility_is_held_while_a_dispute_is_open_but_not_a_redetention():
    from tests.unit.domain.fakes import BUCKS_PRACTICE, BUCKINGHAMSHIRE, OXFORD_HEALTH, WORCESTERSHIRE

    history = [
        change(ChangeType.DETAINED, date(2024, 1, 2), legal_status_code="03", hospital_ods=OXFORD_HEALTH,
               gp_practice_ods=BUCKS_PRACTICE, residence_la_gss=BUCKINGHAMSHIRE),
        change(ChangeType.LEFT_HOSPITAL, date(2024, 3, 1)),
        change(ChangeType.DISPUTE_RAISED, date(2024, 4, 1),
               dispute=Dispute("D-9", DisputeKind.COUNCIL, (BUCKINGHAMSHIRE, WORCESTERSHIRE))),
    ]
    before = status(history, date(2024, 6, 1))
    redetained = change(ChangeType.DETAINED, date(2024, 5, 1), legal_status_code="03", hospital_ods=OXFORD_HEALTH,
                        residence_la_gss=WORCESTERSHIRE)
    # A new qualifying detention is a legal event, never held (Worcs 4.3.3, 17.1, 19.2, 19.6, 15.1): it moves
    # the council and is recorded, and the dispute stays open. (This test held it before, citing Worcs 8.5.)
    after = status([*history, redetained], date(2024, 6, 1))
    assert after.council_basis_code == WORCESTERSHIRE != before.council_basis_code
    assert hold_reason(before, after, redetained) is None
    assert [d.dispute_id for d in after.open_disputes] == ["D-9"]
    # A change that would end the entitlement is still held (Worcs 8.5): the second body's agreement
    # to a joint discharge (the first only awaits it, and ends nothing).
    first, second = joint_discharge("2024-05-01")
    pending = status([*history, first], date(2024, 6, 1))
    assert hold_reason(before, pending, first) is None and pending.entitled
    reason = hold_reason(pending, status([*history, first, second], date(2024, 6, 1)), second)
    assert reason is not None and "end the s117 entitlement" in reason and "Worcs 8.5" in reason
    gp = change(ChangeType.GP_CHANGED, date(2024, 5, 1), gp_practice_ods=BUCKS_PRACTICE)
    assert hold_reason(before, status([*history, gp], date(2024, 6, 1)), gp) is None
    no_dispute = status(history[:2], date(2024, 6, 1))
    assert hold_reason(no_dispute, status([*history[:2], redetained], date(2024, 6, 1)), redetained) is None


# --- invariants -----------------------------------------------------------------------
ORGS = [BUCKS, WORCS, QU9, QGH, OXON, CLOCK_ACTOR, DETERMINATION_ACTOR]
steps = st.lists(st.tuples(
    st.sampled_from(["accept", "contest", "breach", "agree-interim", "escalate", "resolve"]),
    st.sampled_from(ORGS), st.integers(min_value=0, max_value=40)), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["transfer", "council", "commissioner"]), script=steps)
def test_a_case_is_always_in_exactly_one_state_and_every_clock_has_an_owner(kind, script):
    case = transfer() if kind == "transfer" else dispute(kind, area=BUCKS_AREA if kind == "council" else AREA)
    states = TransferState if case.kind is CaseKind.TRANSFER else DisputeState
    on = DAY0
    for action, actor, days in script:
        on = on + timedelta(days=days)
        before = case
        try:
            if case.kind is CaseKind.TRANSFER:
                if action in ("accept", "contest", "breach"):
                    case, step = _act_transfer(case, action, actor, on)
                else:
                    continue
            elif action == "agree-interim":
                party = case.parties[0]
                case, step = m.agree_interim(case, actor, on, party, {party: 10_000})
            elif action == "escalate":
                case, step = m.escalate(case, actor, on, HOLIDAYS)
            elif action == "resolve":
                # Two outcomes a party may propose, so proposals are sometimes replaced, sometimes agreed.
                responsible = case.parties[days % 2]
                case, step = m.resolve(case, actor, on, responsible, DAY0,
                                       "determined" if actor == DETERMINATION_ACTOR else "")
            elif action == "breach":
                case, step = m.dispute_breach(case, on)
            else:
                continue
        except WorkflowRefusal as refusal:
            assert refusal.status in (403, 409, 422) and refusal.rule and refusal.citation
            continue
        assert step.citation, "every transition cites a paragraph"
        assert [s for s in states if s == case.state] == [case.state]  # exactly one state of its kind
        if case.state == DisputeState.RESOLVED and before.state != DisputeState.RESOLVED:
            # Never one party alone: every other party had agreed these terms, or the final stage determined.
            if actor == DETERMINATION_ACTOR:
                assert before.stage_index == len(before.stages) - 1
            else:
                assert before.resolution is not None
                assert set(before.resolution.agreed_by) == set(before.parties) - {actor}
                assert before.resolution.same_terms(case.responsible, case.responsible_from)
        if case.state in FINAL_STATES:
            assert case.clock is None
        else:
            assert case.clock is not None and case.clock.owner and case.clock.due_on >= case.clock.started_on
        if case.kind is CaseKind.DISPUTE:
            assert sum(dict(case.interims[-1].shares).values()) == 10_000
            assert case.interims[-1].lead_body in case.parties


def test_a_dispute_raised_and_resolved_on_the_same_day_is_resolved_whatever_the_order():
    from tests.unit.domain.fakes import BUCKS_PRACTICE, BUCKINGHAMSHIRE, OXFORD_HEALTH, WORCESTERSHIRE

    history = [
        change(ChangeType.DETAINED, date(2024, 1, 2), legal_status_code="03", hospital_ods=OXFORD_HEALTH,
               gp_practice_ods=BUCKS_PRACTICE, residence_la_gss=BUCKINGHAMSHIRE),
        change(ChangeType.LEFT_HOSPITAL, date(2024, 3, 1)),
    ]
    parties = (BUCKINGHAMSHIRE, WORCESTERSHIRE)
    raised = change(ChangeType.DISPUTE_RAISED, date(2024, 4, 1), change_id="Z-raised",
                    dispute=Dispute("D-1", DisputeKind.COUNCIL, parties))
    # Each party records the outcome: a register-recorded dispute needs every party's.
    resolved = [change(ChangeType.DISPUTE_RESOLVED, date(2024, 4, 1), change_id=f"A-resolved-{party}",
                       source=party,
                       dispute=Dispute("D-1", DisputeKind.COUNCIL, parties, resolved_responsible=WORCESTERSHIRE))
                for party in parties]
    after = status([*history, raised, *resolved], date(2024, 6, 1))
    assert after.open_disputes == ()
    assert after.responsible_council.org.code == WORCESTERSHIRE
