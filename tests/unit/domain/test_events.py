"""derive_events: what others must hear of after each change."""

import re

from hub.domain.model import ChangeType, Dispute, DisputeKind, EventType as E
from hub.domain.rules import derive_events, evaluate
from tests.unit.domain.builders import BOOK, PERSON, REF, change, detained, discharge, joint_discharge, left, moved
from tests.unit.domain.fakes import (
    BANK_HOLIDAYS, BUCKINGHAMSHIRE, BUCKS_CCG, BUCKS_PRACTICE, HARROW, OXFORDSHIRE, WORCESTERSHIRE, WORCS_PRACTICE,
)


def events_of(history, new, as_of=None, **kwargs):
    as_of = as_of or new.effective_date
    before = evaluate(PERSON, history, REF, BOOK, as_of) if history else None
    after = evaluate(PERSON, history + [new], REF, BOOK, as_of)
    return derive_events(before, after, new, **kwargs)


BASE = [detained("2021-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE),
        left("2021-03-01")]


def test_first_event_is_always_the_recorded_change():
    for new in [detained("2021-01-10"), moved("2021-05-01", OXFORDSHIRE), change(ChangeType.GP_CHANGED, "2021-05-01")]:
        assert events_of(BASE[:0], new)[0].event_type is E.REGISTER_CHANGE_RECORDED


def test_entitlement_started_and_ended():
    assert [e.event_type for e in events_of(BASE[:1], BASE[1])] == [E.REGISTER_CHANGE_RECORDED, E.ENTITLEMENT_STARTED]
    council, commissioner = joint_discharge("2022-01-05", commissioner=BUCKS_CCG)
    awaiting = events_of(BASE, council)  # one body's decision awaits the other's own agreement
    assert [e.event_type for e in awaiting] == [E.REGISTER_CHANGE_RECORDED]
    ended = events_of(BASE + [council], commissioner)
    assert [e.event_type for e in ended] == [E.REGISTER_CHANGE_RECORDED, E.ENTITLEMENT_ENDED]
    assert "joint discharge decision" in ended[1].summary
    died = events_of(BASE, change(ChangeType.DIED, "2022-01-05"))
    assert "death" in died[1].summary


def test_a_late_death_before_the_discharge_withdraws_the_entitlement_it_never_began():
    """A death dated before the discharge the entitlement was told from, arriving after it: as the register
    now stands the entitlement never began. Said in words; was "entitlement ended on None (death)"."""
    history = BASE  # detained 10 January 2021, left hospital 1 March: entitled from 1 March
    late = change(ChangeType.DIED, "2021-02-20")
    events = events_of(history, late, as_of=date_("2021-03-10"))
    ended = [e for e in events if e.event_type is E.ENTITLEMENT_ENDED]
    assert len(ended) == 1
    assert "None" not in ended[0].summary
    assert ended[0].summary == ("Section 117 aftercare entitlement withdrawn: as the register now stands it never "
                                "began (the person died before the discharge it was told from).")


def test_re_detention_transfers_council_only_and_notifies_the_outgoing_council():
    history = BASE + [moved("2021-06-01", WORCESTERSHIRE),
                      change(ChangeType.GP_CHANGED, "2021-06-02", gp_practice_ods=WORCS_PRACTICE)]
    events = events_of(history, detained("2023-02-01"))
    transfer = [e for e in events if e.event_type is E.RESPONSIBILITY_TRANSFERRED]
    assert len(transfer) == 1
    assert transfer[0].also_notify == (BUCKINGHAMSHIRE,)
    assert transfer[0].details["council_to"] == WORCESTERSHIRE
    assert "commissioner_from" not in transfer[0].details
    assert "Worcs 4.3.3" in transfer[0].details["council_citation"]


def test_succession_is_not_a_transfer():
    """CCG -> ICB on 1 July 2022 changes the org named, not the body responsible."""
    before = evaluate(PERSON, BASE, REF, BOOK, date_("2022-06-30"))
    new = change(ChangeType.REVIEW_COMPLETED, "2022-07-01")
    after = evaluate(PERSON, BASE + [new], REF, BOOK, date_("2022-07-01"))
    assert before.responsible_commissioner.org.code != after.responsible_commissioner.org.code
    assert E.RESPONSIBILITY_TRANSFERRED not in [e.event_type for e in derive_events(before, after, new)]


def date_(text):
    from datetime import date
    return date.fromisoformat(text)


def test_move_to_another_council_area_notifies_the_host():
    events = events_of(BASE, moved("2021-06-01", HARROW))
    moved_events = [e for e in events if e.event_type is E.MOVED_OUT_OF_AREA]
    assert moved_events and moved_events[0].also_notify == (HARROW,)
    assert E.REVIEW_DUE in [e.event_type for e in events]
    assert E.RESPONSIBILITY_TRANSFERRED not in [e.event_type for e in events]


def test_move_when_not_entitled_is_quiet():
    events = events_of(BASE[:1], moved("2021-02-01", HARROW))
    assert [e.event_type for e in events] == [E.REGISTER_CHANGE_RECORDED]


def test_discharge_refused_names_the_rule():
    history = [detained("2021-01-10", residence_la_gss=BUCKINGHAMSHIRE), change(ChangeType.CTO_STARTED, "2021-03-01")]
    events = events_of(history, discharge("2021-06-01"))
    refused = [e for e in events if e.event_type is E.DISCHARGE_REFUSED]
    assert refused[0].details["rule"] == "cto-blocks-discharge"
    assert "cto-blocks-discharge" in refused[0].summary


def test_dispute_events_notify_all_parties():
    raised = events_of(BASE, change(ChangeType.DISPUTE_RAISED, "2021-06-01",
                                    dispute=Dispute("D9", DisputeKind.COUNCIL, (BUCKINGHAMSHIRE, OXFORDSHIRE))))
    assert raised[-1].event_type is E.DISPUTE_RAISED
    assert raised[-1].also_notify == (BUCKINGHAMSHIRE, OXFORDSHIRE)
    history = BASE + [change(ChangeType.DISPUTE_RAISED, "2021-06-01",
                             dispute=Dispute("D9", DisputeKind.COUNCIL, (BUCKINGHAMSHIRE, OXFORDSHIRE)))]
    first, second = (change(ChangeType.DISPUTE_RESOLVED, "2021-09-01", source=party, dispute=Dispute(
        "D9", DisputeKind.COUNCIL, (BUCKINGHAMSHIRE, OXFORDSHIRE), resolved_responsible=OXFORDSHIRE))
        for party in (BUCKINGHAMSHIRE, OXFORDSHIRE))
    # One party's outcome leaves the dispute open: nothing resolved to tell.
    assert [e.event_type for e in events_of(history, first)] == [E.REGISTER_CHANGE_RECORDED]
    resolved = events_of(history + [first], second)
    types = [e.event_type for e in resolved]
    assert E.DISPUTE_RESOLVED in types and E.RESPONSIBILITY_TRANSFERRED in types
    transfer = next(e for e in resolved if e.event_type is E.RESPONSIBILITY_TRANSFERRED)
    assert transfer.also_notify == (BUCKINGHAMSHIRE,)


def test_service_level_travels_with_the_recorded_event():
    late = change(ChangeType.MOVED, "2024-06-03", residence_la_gss=HARROW, notified_on=date_("2024-06-03"),
                  recorded_on=date_("2024-06-12"))
    recorded = events_of([], late, holidays=BANK_HOLIDAYS)[0]
    assert recorded.details["service_level"] == "breach"
    assert "Worcs 19.6" in recorded.details["service_level_explanation"]


def test_summaries_carry_no_personal_data():
    history = BASE + [moved("2021-06-01", WORCESTERSHIRE)]
    for new in [detained("2023-02-01"), moved("2023-06-01", HARROW), discharge("2024-01-05")]:
        for event in events_of(history, new):
            assert PERSON not in event.summary
            assert not re.search(r"\b[A-Z]\d{5}\b", event.summary)  # no practice codes
            assert not re.search(r"\bE\d{8}\b", event.summary)  # no council codes either
        history = history + [new]
