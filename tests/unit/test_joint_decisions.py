"""Joint decisions count a body's agreement only from that body (or one
entitled to act for it), never on another's word (Worcs 16.1; 15.4-15.6).

* An s117 discharge ends entitlement only once the responsible council and
  the NHS commissioner (or a care-provider trust acting for it) have each
  recorded it: one side's decision claiming the other's agreement is held
  pending, the person stays entitled, and entitlement ends on the day the
  second side agreed. The guards still judge the completing decision.
* A dispute recorded on the register is resolved only when every party has
  recorded the same outcome; the hub's workflows (which check every party
  agreed) still resolve at once.
"""

from __future__ import annotations

import itertools
from datetime import date

from sqlalchemy import select

from hub.clients import add_client
from hub.domain.model import ChangeType, Dispute, DisputeKind, DischargeReason, EventType
from hub.domain.rules import derive_events, evaluate
from hub.domain.rules.engine import HUB_SOURCES, evaluation, source_org
from hub.store.schema import bus_messages
from hub.workflows.service import WORKFLOW_SOURCE
from tests.unit.domain.builders import BOOK, PERSON, REF, change, detained, discharge, lawful_decision, left, status
from tests.unit.domain.fakes import (AYLESBURY_VALE_CCG, BOB_ICB, BUCKINGHAMSHIRE, BUCKS_CCG, BUCKS_COUNTY_OLD,
                                     BUCKS_PRACTICE, CUMBRIA_OLD, HW_CCG, HW_ICB, OXFORD_HEALTH, OXFORDSHIRE, OXON_CCG)

# The sources as the ingest sets them: the API client's id, `<org code in lower case>-<8 hex>`.
COUNCIL = "e06000060-1a2b3c4d"  # Buckinghamshire, the responsible council
TRUST = "rnu-0f0f0f0f"  # Oxford Health: runs the hospital of the detention, so acts for the NHS commissioner
OTHER_COUNCIL = "e09000015-99aa88bb"  # Harrow: neither responsible nor acting for anyone


def stay() -> list:
    return [detained("2024-01-10", hospital_ods=OXFORD_HEALTH, residence_la_gss=BUCKINGHAMSHIRE,
                     gp_practice_ods=BUCKS_PRACTICE),
            left("2024-03-01")]


def commissioner_source() -> str:
    """The responsible NHS commissioner's client id (whatever ICB the practice gives)."""
    code = status(stay(), "2024-06-01").responsible_commissioner.org.code
    return f"{code.lower()}-5e5e5e5e"


def test_sources_name_the_org_that_recorded_them():
    assert source_org(COUNCIL) == BUCKINGHAMSHIRE
    assert source_org(TRUST) == OXFORD_HEALTH
    assert source_org("E06000060") == "E06000060"  # an org code itself
    assert source_org("") is None and source_org(WORKFLOW_SOURCE) is None
    # The hub's workflows record dispute changes under this source (hub/workflows/service.py).
    assert WORKFLOW_SOURCE in HUB_SOURCES


# ------------------------------------------------------------------ discharge


def test_a_trust_claiming_the_council_agreed_leaves_the_person_entitled_until_the_council_confirms():
    trust_decision = discharge("2024-06-03", source=TRUST)
    pending = status([*stay(), trust_decision], "2024-06-05")
    assert pending.entitled and not pending.discharged_from_s117 and pending.entitlement_end is None
    assert pending.pending_discharge is not None and pending.pending_discharge.rule == "joint-agreement-awaited"
    assert "awaiting the council's own agreement" in pending.pending_discharge.explanation
    assert "decided on 2024-06-03" in pending.pending_discharge.explanation
    assert "awaiting the council's own agreement" in pending.entitlement.explanation
    assert pending.history[-1].text == "s117 discharge awaiting the council's own agreement"
    assert pending.refused_discharges == ()
    assert pending.next_review is not None  # still owed reviews

    confirmed = status([*stay(), trust_decision, discharge("2024-06-10", source=COUNCIL)], "2024-06-11")
    assert not confirmed.entitled and confirmed.discharged_from_s117
    assert confirmed.entitlement_end == date(2024, 6, 10)  # the day both had agreed
    assert confirmed.pending_discharge is None
    assert confirmed.history[-1].text == "discharged from s117 by joint decision"


def test_each_body_may_record_only_its_own_agreement_and_is_refused_only_for_withholding_its_own():
    """A body's record need not claim the other side agreed (it cannot speak for it): the council's
    own agreement alone is held pending, not refused; the commissioner's own completes it. A body
    saying it does not agree itself is refused (joint-agreement-required, naming it)."""
    council_only = change(ChangeType.S117_DISCHARGE_DECIDED, "2024-06-03", source=COUNCIL,
                          discharge=lawful_decision(commissioner_agrees=False))
    pending = status([*stay(), council_only], "2024-06-05")
    assert pending.refused_discharges == () and pending.entitled
    assert "awaiting the NHS commissioner's own agreement" in pending.pending_discharge.explanation
    icb_only = change(ChangeType.S117_DISCHARGE_DECIDED, "2024-06-10", source=commissioner_source(),
                      discharge=lawful_decision(council_agrees=False))
    done = status([*stay(), council_only, icb_only], "2024-06-11")
    assert not done.entitled and done.entitlement_end == date(2024, 6, 10)

    withholding = change(ChangeType.S117_DISCHARGE_DECIDED, "2024-06-03", source=COUNCIL,
                         discharge=lawful_decision(council_agrees=False))
    refused = status([*stay(), withholding], "2024-06-05")
    assert refused.entitled and refused.pending_discharge is None
    (why,) = refused.refused_discharges
    assert why.rule == "joint-agreement-required" and "the council did not agree" in why.explanation


def test_a_council_recording_both_agreed_waits_for_the_commissioner_or_a_care_trust():
    council_decision = discharge("2024-06-03", source=COUNCIL)
    pending = status([*stay(), council_decision], "2024-06-04")
    assert pending.entitled
    assert "awaiting the NHS commissioner's own agreement" in pending.pending_discharge.explanation
    # The council saying so again is still only the council.
    again = status([*stay(), council_decision, discharge("2024-06-04", source=COUNCIL)], "2024-06-05")
    assert again.entitled and again.pending_discharge is not None
    # Another council, neither responsible nor acting for the commissioner, completes nothing.
    other = status([*stay(), council_decision, discharge("2024-06-04", source=OTHER_COUNCIL)], "2024-06-05")
    assert other.entitled and other.pending_discharge is not None
    for nhs_side in (commissioner_source(), TRUST):
        done = status([*stay(), council_decision, discharge("2024-06-20", source=nhs_side)], "2024-07-01")
        assert not done.entitled and done.entitlement_end == date(2024, 6, 20), nhs_side


def test_a_decision_without_a_source_is_no_bodys_agreement():
    alone = status([*stay(), discharge("2024-06-03")], "2024-06-04")
    assert alone.entitled
    assert ("awaiting the council's and the NHS commissioner's own agreement"
            in alone.pending_discharge.explanation)
    both_sourceless = status([*stay(), discharge("2024-06-03"), discharge("2024-06-04")], "2024-06-05")
    assert both_sourceless.entitled
    # It holds nothing the bodies then give: both of them still have to record it.
    with_council = status([*stay(), discharge("2024-06-03"), discharge("2024-06-04", source=COUNCIL)], "2024-06-05")
    assert with_council.entitled
    assert "awaiting the NHS commissioner's own agreement" in with_council.pending_discharge.explanation


def test_the_same_day_pair_ends_entitlement_that_day_whatever_the_arrival_order():
    pair = [discharge("2024-06-10", source=TRUST), discharge("2024-06-10", source=COUNCIL)]
    spread = [discharge("2024-06-03", source=TRUST), discharge("2024-06-10", source=COUNCIL)]
    for decisions in (pair, spread):
        base = stay()
        changes = [*base, *decisions]
        expected = status(changes, "2024-07-01")
        assert not expected.entitled and expected.entitlement_end == date(2024, 6, 10)
        for order in itertools.permutations(changes):
            assert status(list(order), "2024-07-01") == expected
        # Late history through the incremental evaluation gives the same status as the whole fold.
        late_first = evaluation(PERSON, [*base, decisions[1]], REF, BOOK, date(2024, 7, 1))
        assert late_first.status.entitled
        assert late_first.extended(decisions[0]).status == expected


def test_the_guards_still_judge_the_completing_decision():
    trust_decision = discharge("2024-06-03", source=TRUST)
    on_cto = [*stay(), trust_decision, change(ChangeType.CTO_STARTED, "2024-06-05"),
              discharge("2024-06-10", source=COUNCIL)]
    result = status(on_cto, "2024-06-11")
    assert result.entitled and result.on_cto
    assert [r.rule for r in result.refused_discharges] == ["cto-blocks-discharge"]
    assert result.pending_discharge is not None  # still awaiting the council's own (lawful) agreement
    forbidden = status([*stay(), trust_decision,
                        discharge("2024-06-10", lawful_decision(reasons=(DischargeReason.TIME_PASSED,)),
                                  source=COUNCIL)], "2024-06-11")
    assert forbidden.entitled and forbidden.refused_discharges[0].rule == "forbidden-sole-grounds"
    # A refused first decision is not pending: the lawful second one is alone.
    refused_first = status([*stay(), discharge("2024-06-03", lawful_decision(person_involved=False), source=TRUST),
                            discharge("2024-06-10", source=COUNCIL)], "2024-06-11")
    assert refused_first.entitled
    assert "awaiting the NHS commissioner's own agreement" in refused_first.pending_discharge.explanation


def test_a_pending_discharge_lapses_on_a_new_qualifying_detention():
    changes = [*stay(), discharge("2024-06-03", source=TRUST),
               detained("2024-07-01", hospital_ods=OXFORD_HEALTH), discharge("2024-07-05", source=COUNCIL)]
    result = status(changes, "2024-07-06")
    assert result.entitled
    assert any("lapsed" in h.text for h in result.history)
    # The council's decision after the re-detention is alone: the trust's agreement went with the old one.
    assert "awaiting the NHS commissioner's own agreement" in result.pending_discharge.explanation


def test_events_tell_the_end_only_when_both_have_agreed():
    first = discharge("2024-06-03", source=TRUST)
    second = discharge("2024-06-10", source=COUNCIL)
    before = evaluate(PERSON, stay(), REF, BOOK, date(2024, 6, 3))
    after = evaluate(PERSON, [*stay(), first], REF, BOOK, date(2024, 6, 3))
    assert [e.event_type for e in derive_events(before, after, first)] == [EventType.REGISTER_CHANGE_RECORDED]
    before = evaluate(PERSON, [*stay(), first], REF, BOOK, date(2024, 6, 10))
    after = evaluate(PERSON, [*stay(), first, second], REF, BOOK, date(2024, 6, 10))
    assert EventType.ENTITLEMENT_ENDED in [e.event_type for e in derive_events(before, after, second)]


# ------------------------------------------------------------------- disputes

PARTIES = (BUCKINGHAMSHIRE, OXFORDSHIRE)
RAISED = change(ChangeType.DISPUTE_RAISED, "2024-04-01", source=COUNCIL,
                dispute=Dispute("REG-1", DisputeKind.COUNCIL, PARTIES))


def resolved(on: str, by: str, found: str, dispute_id: str = "REG-1"):
    return change(ChangeType.DISPUTE_RESOLVED, on, source=by,
                  dispute=Dispute(dispute_id, DisputeKind.COUNCIL, PARTIES, resolved_responsible=found))


def test_a_register_dispute_is_resolved_only_once_both_parties_record_the_same_outcome():
    one = status([*stay(), RAISED, resolved("2024-05-01", COUNCIL, OXFORDSHIRE)], "2024-05-02")
    assert [d.dispute_id for d in one.open_disputes] == ["REG-1"]
    assert one.responsible_council.org.code == BUCKINGHAMSHIRE  # current arrangements stay
    assert "recorded by 1 of 2 parties" in one.history[-1].text
    both = status([*stay(), RAISED, resolved("2024-05-01", COUNCIL, OXFORDSHIRE),
                   resolved("2024-05-08", "e10000025-77777777", OXFORDSHIRE)], "2024-05-09")
    assert both.open_disputes == ()
    assert both.responsible_council.org.code == OXFORDSHIRE
    assert "resolved on 2024-05-08" in both.responsible_council.explanation


def test_a_different_outcome_from_the_second_party_keeps_the_dispute_open_until_one_party_changes_its_own():
    disagree = [*stay(), RAISED, resolved("2024-05-01", COUNCIL, OXFORDSHIRE),
                resolved("2024-05-08", "e10000025-77777777", BUCKINGHAMSHIRE)]
    result = status(disagree, "2024-05-09")
    assert [d.dispute_id for d in result.open_disputes] == ["REG-1"]
    assert result.responsible_council.org.code == BUCKINGHAMSHIRE
    assert "recorded by 1 of 2 parties" in result.history[-1].text
    # Buckinghamshire records the other outcome: its own earlier one is replaced, and both now agree.
    settled = status([*disagree, resolved("2024-05-15", COUNCIL, BUCKINGHAMSHIRE)], "2024-05-16")
    assert settled.open_disputes == () and settled.responsible_council.org.code == BUCKINGHAMSHIRE
    assert "resolved on 2024-05-15" in settled.responsible_council.explanation


def test_a_body_not_a_party_and_a_sourceless_record_resolve_nothing():
    for by in (OTHER_COUNCIL, TRUST, ""):
        result = status([*stay(), RAISED, resolved("2024-05-01", by, OXFORDSHIRE)], "2024-05-02")
        assert [d.dispute_id for d in result.open_disputes] == ["REG-1"], by
        assert "recorded by 0 of 2 parties" in result.history[-1].text


def test_the_parties_outcomes_resolve_the_same_whatever_the_arrival_order():
    changes = [*stay(), RAISED, resolved("2024-05-01", "e10000025-77777777", OXFORDSHIRE),
               resolved("2024-05-01", COUNCIL, OXFORDSHIRE)]
    expected = status(changes, "2024-06-01")
    assert expected.open_disputes == () and expected.responsible_council.org.code == OXFORDSHIRE
    for order in itertools.permutations(changes):
        assert status(list(order), "2024-06-01") == expected
    late = evaluation(PERSON, changes[:-1], REF, BOOK, date(2024, 6, 1)).extended(changes[-1])
    assert late.status == expected


def test_a_resolution_the_hubs_workflows_record_is_immediate():
    result = status([*stay(), RAISED, resolved("2024-05-01", WORKFLOW_SOURCE, OXFORDSHIRE)], "2024-05-02")
    assert result.open_disputes == () and result.responsible_council.org.code == OXFORDSHIRE


def test_one_partys_outcome_of_a_dispute_never_raised_opens_it_until_the_other_agrees():
    one = status([*stay(), resolved("2024-05-01", COUNCIL, OXFORDSHIRE, "REG-2")], "2024-05-02")
    assert [d.dispute_id for d in one.open_disputes] == ["REG-2"]
    before = evaluate(PERSON, stay(), REF, BOOK, date(2024, 5, 1))
    lone = resolved("2024-05-01", COUNCIL, OXFORDSHIRE, "REG-2")
    events = derive_events(before, evaluate(PERSON, [*stay(), lone], REF, BOOK, date(2024, 5, 1)), lone)
    assert EventType.DISPUTE_RESOLVED not in [e.event_type for e in events]


def test_a_resolved_dispute_is_not_reopened_or_moved_by_one_partys_later_outcome():
    changes = [*stay(), RAISED, resolved("2024-05-01", WORKFLOW_SOURCE, OXFORDSHIRE),
               resolved("2024-06-01", COUNCIL, BUCKINGHAMSHIRE)]
    result = status(changes, "2024-06-02")
    assert result.open_disputes == () and result.responsible_council.org.code == OXFORDSHIRE


# ------------------------------------------------------------- successors
#
# A party named as a CCG (the NHS commissioner before 1 July 2022) is spoken
# for by the body holding its duties on the fold's day, as the NHS
# commissioner's side of a joint discharge is (`_speaks_for`: the code as
# determined, or the ICB holding it now): the ICB that took over the CCG's
# liabilities. Not by another ICB, nor by another sub-ICB location of the
# same ICB; nor, the other way round, by a CCG's (sub-ICB location's) code
# for a party named as the ICB itself.

CCG_PARTIES = (BUCKS_CCG, HW_CCG)  # a dispute raised in the CCG era
CCG_ERA_RAISED = change(ChangeType.DISPUTE_RAISED, "2021-06-01", source="14y-0a0a0a0a",
                        dispute=Dispute("REG-7", DisputeKind.COMMISSIONER, CCG_PARTIES))
BOB = "qu9-1b1b1b1b"  # NHS Buckinghamshire, Oxfordshire and Berkshire West ICB: took over 14Y (and 10Q)
HW = "qgh-2c2c2c2c"  # NHS Herefordshire and Worcestershire ICB: took over 18C
NWL = "qrv-3d3d3d3d"  # NHS North West London ICB: took over neither


def ccg_era_stay() -> list:
    return [detained("2021-01-10", hospital_ods=OXFORD_HEALTH, residence_la_gss=BUCKINGHAMSHIRE,
                     gp_practice_ods=BUCKS_PRACTICE),
            left("2021-03-01")]


def outcome(on: str, by: str, found: str, parties=CCG_PARTIES, dispute_id: str = "REG-7"):
    return change(ChangeType.DISPUTE_RESOLVED, on, source=by,
                  dispute=Dispute(dispute_id, DisputeKind.COMMISSIONER, parties, resolved_responsible=found))


def test_the_icbs_that_took_over_the_ccg_parties_resolve_a_dispute_raised_in_the_ccg_era():
    one = status([*ccg_era_stay(), CCG_ERA_RAISED, outcome("2024-05-01", BOB, HW_CCG)], "2024-05-02")
    assert [d.dispute_id for d in one.open_disputes] == ["REG-7"]
    assert "recorded by 1 of 2 parties" in one.history[-1].text
    both = status([*ccg_era_stay(), CCG_ERA_RAISED, outcome("2024-05-01", BOB, HW_CCG),
                   outcome("2024-05-08", HW, HW_CCG)], "2024-05-09")
    assert both.open_disputes == ()
    assert both.history[-1].text == "responsibility dispute resolved"
    assert both.responsible_commissioner.org.code == HW_ICB  # 18C, now held by its ICB
    assert "resolved on 2024-05-08" in both.responsible_commissioner.explanation


def test_a_ccgs_own_outcome_before_july_2022_and_its_icbs_after_count_as_the_same_party():
    ccg_then = outcome("2021-12-01", "18c-4e4e4e4e", HW_CCG)  # recorded by the CCG itself, before it was abolished
    settled = status([*ccg_era_stay(), CCG_ERA_RAISED, ccg_then, outcome("2024-05-01", BOB, HW_CCG)], "2024-05-02")
    assert settled.open_disputes == () and settled.responsible_commissioner.org.code == HW_ICB
    # The successor's later outcome replaces its predecessor's: the party has one outcome, not two.
    changed = status([*ccg_era_stay(), CCG_ERA_RAISED, ccg_then, outcome("2024-05-01", HW, BUCKS_CCG),
                      outcome("2024-05-02", BOB, HW_CCG)], "2024-05-03")
    assert [d.dispute_id for d in changed.open_disputes] == ["REG-7"]
    assert "recorded by 1 of 2 parties" in changed.history[-1].text


def test_a_body_that_did_not_take_over_a_party_speaks_for_none():
    for by in (NWL, "10q-5f5f5f5f", "10y-6a6a6a6a"):  # another ICB; another sub-ICB location of BOB; 14Y's predecessor
        result = status([*ccg_era_stay(), CCG_ERA_RAISED, outcome("2024-05-01", by, HW_CCG),
                         outcome("2024-05-02", HW, HW_CCG)], "2024-05-03")
        assert [d.dispute_id for d in result.open_disputes] == ["REG-7"], by
        assert "recorded by 1 of 2 parties" in result.history[-1].text, by


def test_before_1_july_2022_no_icb_held_a_ccgs_duties():
    changes = [*ccg_era_stay(), CCG_ERA_RAISED, outcome("2022-06-01", BOB, HW_CCG), outcome("2022-06-02", HW, HW_CCG)]
    assert [d.dispute_id for d in status(changes, "2022-06-30").open_disputes] == ["REG-7"]
    assert status(changes, "2022-07-01").open_disputes == ()  # the same records, once the ICBs hold the duties


def test_an_outcome_recorded_by_the_ccg_then_holding_a_merged_partys_duties_stays_counted():
    """Aylesbury Vale CCG (10Y) merged into Buckinghamshire CCG (14Y) on 1 April 2018: 14Y's outcome of
    2019 was Aylesbury Vale's, and still is once BOB holds both (the dispute does not reopen). A key
    still held under 14Y's code recording now is not the body holding 10Y's duties (BOB is)."""
    parties = (AYLESBURY_VALE_CCG, HW_CCG)
    raised = change(ChangeType.DISPUTE_RAISED, "2017-06-01", source="18c-4e4e4e4e",
                    dispute=Dispute("REG-6", DisputeKind.COMMISSIONER, parties))
    changes = [*ccg_era_stay(), raised, outcome("2019-01-07", "14y-0a0a0a0a", HW_CCG, parties, "REG-6"),
               outcome("2019-01-08", "18c-4e4e4e4e", HW_CCG, parties, "REG-6")]
    for as_of in ("2019-02-01", "2024-05-01"):
        assert status(changes, as_of).open_disputes == (), as_of
    late = [*ccg_era_stay(), raised, outcome("2019-01-08", "18c-4e4e4e4e", HW_CCG, parties, "REG-6"),
            outcome("2024-04-01", "14y-0a0a0a0a", HW_CCG, parties, "REG-6")]
    assert [d.dispute_id for d in status(late, "2024-05-01").open_disputes] == ["REG-6"]
    by_bob = [*late[:-1], outcome("2024-04-01", BOB, HW_CCG, parties, "REG-6")]
    assert status(by_bob, "2024-05-01").open_disputes == ()

def test_one_icb_that_took_over_both_ccg_parties_records_the_outcome_for_both():
    parties = (BUCKS_CCG, OXON_CCG)  # both became sub-ICB locations of BOB on 1 July 2022
    raised = change(ChangeType.DISPUTE_RAISED, "2021-06-01", source="14y-0a0a0a0a",
                    dispute=Dispute("REG-8", DisputeKind.COMMISSIONER, parties))
    result = status([*ccg_era_stay(), raised, outcome("2024-05-01", BOB, OXON_CCG, parties, "REG-8")], "2024-05-02")
    assert result.open_disputes == () and result.responsible_commissioner.org.code == BOB_ICB


def test_a_ccgs_code_does_not_speak_for_a_party_named_as_the_icb():
    """Clients are ICBs now: a key still held under a CCG's (or sub-ICB location's) code is not the ICB's
    own word when the dispute names the ICB itself; the ICB's own key is."""
    parties = (BOB_ICB, HW_ICB)
    raised = change(ChangeType.DISPUTE_RAISED, "2023-06-01", source=HW,
                    dispute=Dispute("REG-9", DisputeKind.COMMISSIONER, parties))
    by_ccg_key = status([*ccg_era_stay(), raised, outcome("2024-05-01", "14y-0a0a0a0a", HW_ICB, parties, "REG-9"),
                         outcome("2024-05-02", HW, HW_ICB, parties, "REG-9")], "2024-05-03")
    assert [d.dispute_id for d in by_ccg_key.open_disputes] == ["REG-9"]
    assert "recorded by 1 of 2 parties" in by_ccg_key.history[-1].text
    by_icb = status([*ccg_era_stay(), raised, outcome("2024-05-01", BOB, HW_ICB, parties, "REG-9"),
                     outcome("2024-05-02", HW, HW_ICB, parties, "REG-9")], "2024-05-03")
    assert by_icb.open_disputes == () and by_icb.responsible_commissioner.org.code == HW_ICB


def test_the_council_that_took_over_a_former_councils_area_records_for_it_and_a_split_has_no_one_successor():
    """Buckinghamshire Council took over Buckinghamshire County Council on 1 April 2020: it records the
    county's outcome. Cumbria split into Cumberland and Westmorland and Furness on 1 April 2023:
    neither records Cumbria's alone. Another council records for neither."""
    for old, by, resolves in ((BUCKS_COUNTY_OLD, COUNCIL, True), (BUCKS_COUNTY_OLD, OTHER_COUNCIL, False),
                              (CUMBRIA_OLD, "e06000063-7b7b7b7b", False)):
        parties = (old, OXFORDSHIRE)
        raised = change(ChangeType.DISPUTE_RAISED, "2019-06-01", source="e10000025-77777777",
                        dispute=Dispute("REG-5", DisputeKind.COUNCIL, parties))
        decided = [change(ChangeType.DISPUTE_RESOLVED, on, source=src, dispute=Dispute(
                       "REG-5", DisputeKind.COUNCIL, parties, resolved_responsible=OXFORDSHIRE))
                   for on, src in (("2024-05-01", by), ("2024-05-02", "e10000025-77777777"))]
        result = status([*stay(), raised, *decided], "2024-05-03")
        assert (result.open_disputes == ()) is resolves, (old, by)
        assert (result.responsible_council.org.code == OXFORDSHIRE) is resolves, (old, by)

def test_successors_outcomes_resolve_the_same_whatever_the_arrival_order():
    changes = [*ccg_era_stay(), CCG_ERA_RAISED, outcome("2024-05-01", HW, HW_CCG), outcome("2024-05-01", BOB, HW_CCG)]
    expected = status(changes, "2024-06-01")
    assert expected.open_disputes == () and expected.responsible_commissioner.org.code == HW_ICB
    for order in itertools.permutations(changes):
        assert status(list(order), "2024-06-01") == expected
    late = evaluation(PERSON, changes[:-1], REF, BOOK, date(2024, 6, 1)).extended(changes[-1])
    assert late.status == expected


def test_a_discharges_commissioner_side_named_as_a_ccg_is_the_icbs_that_took_it_over():
    """The NHS commissioner determined from a CCG (the practice's in 2021, or one already paying, here
    Aylesbury Vale CCG, merged into Buckinghamshire CCG in 2018) is the ICB holding it now: the ICB's own
    decision is the commissioner's agreement; another ICB's is not."""
    council = discharge("2024-06-03", source=COUNCIL)
    receiving = [detained("2021-01-10", hospital_ods=OXFORD_HEALTH, residence_la_gss=BUCKINGHAMSHIRE,
                          already_receiving_s117_from=AYLESBURY_VALE_CCG), left("2021-03-01")]
    for base in (ccg_era_stay(), receiving):
        assert status(base, "2024-06-01").responsible_commissioner.org.code == BOB_ICB
        done = status([*base, council, discharge("2024-06-04", source=BOB)], "2024-06-05")
        assert not done.entitled and done.entitlement_end == date(2024, 6, 4)
        other = status([*base, council, discharge("2024-06-04", source=NWL)], "2024-06-05")
        assert other.entitled and "NHS commissioner's own agreement" in other.pending_discharge.explanation


# --------------------------------------------------------- through the API


DECISION = {"council_agrees": True, "commissioner_agrees": True, "reasons": ["no-longer-needs-services"],
            "participants": ["care coordinator", "AMHP"], "person_involved": True}
PERSON_IN = {"nhs_number": "9991100016", "given_name": "Alex", "family_name": "Testpatient",
             "birth_date": "1971-03-14", "postcode": "HP20 1AA"}


async def test_through_the_api_a_trusts_decision_waits_for_the_councils(app_hub):
    http, hub = app_hub.http, app_hub.hub
    trust = {"X-API-Key": app_hub.keys["trust"]}
    base = {"source_system": "RiO", "person": PERSON_IN}
    for n, body in enumerate([
        {"change_type": "detained", "effective_date": "2025-01-06", "legal_status_code": "03",
         "hospital_ods": "RNU", "gp_practice_ods": "K82001", "residence_la_gss": BUCKINGHAMSHIRE},
        {"change_type": "left-hospital", "effective_date": "2025-04-07", "hospital_ods": "RNU"},
        {"change_type": "s117-discharge-decided", "effective_date": "2025-06-02", "discharge": DECISION},
    ]):
        r = await http.post("/v1/register-changes", headers=trust, json={**base, "source_message_id": f"j-{n}", **body})
        assert r.status_code == 202, r.text
    person_id = r.json()["person_id"]
    _, admin = await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"])

    async def position() -> dict:
        r = await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": admin})
        assert r.status_code == 200, r.text
        return r.json()

    async def event_types() -> set[str]:
        async with hub.engine.connect() as conn:
            return {row.headers["event_type"] for row in (await conn.execute(select(bus_messages.c.headers))).all()}

    held = await position()
    assert held["entitled"] is True and held["discharged_from_s117"] is False
    assert "awaiting the council's own agreement" in held["entitlement"]["explanation"]
    assert "council" in held["pending_discharge"]["explanation"]  # shown in the person query too
    assert "s117-entitlement-ended" not in await event_types()

    # The responsible council's own decision completes it.
    _, council_key = await add_client(hub.engine, "Bucks case system", BUCKINGHAMSHIRE, "council", ["register:write"])
    r = await http.post("/v1/register-changes", headers={"X-API-Key": council_key}, json={
        **base, "source_system": "Mosaic", "source_message_id": "j-council", "change_type": "s117-discharge-decided",
        "effective_date": "2025-06-09", "discharge": DECISION})
    assert r.status_code == 202, r.text
    done = await position()
    assert done["entitled"] is False and done["discharged_from_s117"] is True
    assert done["entitlement_end"] == "2025-06-09"
    assert done.get("pending_discharge") is None
    assert "s117-entitlement-ended" in await event_types()


async def _entitled_in_the_ccg_era(app_hub, prefix: str) -> tuple[str, str, dict]:  # noqa: ANN001
    """A person detained in 2021 from Buckinghamshire (GP K82001: 14Y's then, BOB ICB's now) and discharged:
    their id, an operator's key, and the base of a register change about them."""
    trust = {"X-API-Key": app_hub.keys["trust"]}
    base = {"source_system": "RiO", "person": PERSON_IN}
    for n, body in enumerate([
        {"change_type": "detained", "effective_date": "2021-01-06", "legal_status_code": "03",
         "hospital_ods": "RNU", "gp_practice_ods": "K82001", "residence_la_gss": BUCKINGHAMSHIRE},
        {"change_type": "left-hospital", "effective_date": "2021-04-07", "hospital_ods": "RNU"},
    ]):
        r = await app_hub.http.post("/v1/register-changes", headers=trust,
                                    json={**base, "source_message_id": f"{prefix}-{n}", **body})
        assert r.status_code == 202, r.text
    _, admin = await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"])
    return r.json()["person_id"], admin, base


async def test_through_the_api_the_icb_that_took_over_a_ccg_party_records_its_outcome(app_hub):
    """A dispute recorded on the register in the CCG era, between Buckinghamshire CCG (14Y) and
    Herefordshire and Worcestershire CCG (18C): 18C recorded its outcome before 1 July 2022; the ICB
    that took over 14Y (BOB, QU9) records the same outcome now, and the dispute is resolved."""
    http, hub = app_hub.http, app_hub.hub
    person_id, admin, base = await _entitled_in_the_ccg_era(app_hub, "s")
    _, bob = await add_client(hub.engine, "BOB ICB", "QU9", "icb", ["register:write", "s117:read"])
    _, hw_ccg = await add_client(hub.engine, "H&W CCG", "18C", "icb", ["register:write"])
    dispute = {"dispute_id": "REG-CCG-1", "kind": "commissioner", "parties": ["14Y", "18C"]}

    async def record(key: str, message_id: str, change_type: str, on: str, **extra) -> None:
        r = await http.post("/v1/register-changes", headers={"X-API-Key": key}, json={
            **base, "source_system": "ICB register", "source_message_id": message_id, "change_type": change_type,
            "effective_date": on, "dispute": {**dispute, **extra}})
        assert r.status_code == 202, r.text

    async def position() -> dict:
        r = await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": admin})
        assert r.status_code == 200, r.text
        return r.json()

    await record(bob, "d-raised", "dispute-raised", "2021-06-01")
    await record(hw_ccg, "d-18c", "dispute-resolved", "2021-12-01", resolved_responsible="18C")
    held = await position()
    assert [d["dispute_id"] for d in held["open_disputes"]] == ["REG-CCG-1"]
    await record(bob, "d-qu9", "dispute-resolved", "2025-06-02", resolved_responsible="18C")
    done = await position()
    assert done["open_disputes"] == []
    assert done["responsible_commissioner"]["org"]["code"] == "QGH"  # 18C's area, held by its ICB now
    async with hub.engine.connect() as conn:
        types = [row.headers["event_type"] for row in (await conn.execute(select(bus_messages.c.headers))).all()]
    assert types.count("s117-dispute-resolved") == 1


async def test_through_the_api_the_access_policy_lets_a_ccg_partys_icb_record_for_it_and_no_other_icb(app_hub):
    """The ICB holding a CCG party's duties (QGH for 18C since 1 July 2022) has no other relationship to
    the person, yet it must be able to record the outcome the engine counts for 18C: the access policy
    gives it the party's role (hub/domain/succession.py `duty_holder`), where it answered 403
    no-relationship. An ICB holding no party's duties is still refused."""
    http, hub = app_hub.http, app_hub.hub
    person_id, admin, base = await _entitled_in_the_ccg_era(app_hub, "a")
    _, bob = await add_client(hub.engine, "BOB ICB", "QU9", "icb", ["register:write"])
    _, hw = await add_client(hub.engine, "H&W ICB", "QGH", "icb", ["register:write"])
    _, other = await add_client(hub.engine, "Another ICB", "QHL", "icb", ["register:write"])
    dispute = {"dispute_id": "REG-CCG-2", "kind": "commissioner", "parties": ["14Y", "18C"]}

    async def record(key: str, message_id: str, change_type: str, on: str, **extra):
        return await http.post("/v1/register-changes", headers={"X-API-Key": key}, json={
            **base, "source_system": "ICB register", "source_message_id": message_id, "change_type": change_type,
            "effective_date": on, "dispute": {**dispute, **extra}})

    assert (await record(bob, "b-raised", "dispute-raised", "2021-06-01")).status_code == 202
    assert (await record(bob, "b-qu9", "dispute-resolved", "2025-06-02", resolved_responsible="18C")).status_code == 202
    refused = await record(other, "b-qhl", "dispute-resolved", "2025-06-03", resolved_responsible="18C")
    assert refused.status_code == 403, refused.text
    r = await record(hw, "b-qgh", "dispute-resolved", "2025-06-03", resolved_responsible="18C")
    assert r.status_code == 202, r.text
    r = await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": admin})
    assert r.status_code == 200, r.text
    assert r.json()["open_disputes"] == []
