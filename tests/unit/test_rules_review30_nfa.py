"""Outside review 30: a person of no fixed abode who is re-detained.

In law the new qualifying detention ends the previous council's duty (Worcs
4.3.3); with no place of residence before it, the hospital's council
coordinates while the person is detained and the council of the area
discharged to becomes responsible on discharge (Bucks "If, exceptionally, no
place of residence"). So during the detention no council is responsible; the
council whose duty ended is kept apart (`outgoing_council`), and the
settlement at discharge is a hand-over from it to the new council, told to
both and opening a transfer case, not a first determination told to nobody
(hub/domain/rules/engine.py `handover_bases`). The NHS commissioner already
funding aftercare stays through the re-detention (Worcs 4.4.2, 4.4.9).
"""

from __future__ import annotations

import itertools

from hub.domain.handovers import handovers
from hub.domain.model import ChangeType, Dispute, DisputeKind, EventType
from hub.domain.rules import derive_events, evaluate
from hub.domain.rules.precedence import is_late
from hub.domain.rules.timeline import revealed_steps, transfer_steps
from hub.domain.workflows.held import hold_reason
from tests.unit.domain.builders import BOOK, PERSON, REF, change, d, detained, left, moved, status
from tests.unit.domain.fakes import (
    BUCKINGHAMSHIRE,
    BUCKS_PRACTICE,
    CNWL,
    HARROW,
    HEREFORDSHIRE,
    OXFORD_HEALTH,
    OXFORDSHIRE,
)

NFA = "Bucks 'If, exceptionally, no place of residence'"
REDETENTION = "Worcs 4.3.3 (R (Worcestershire CC) v SSHSC [2021] EWHC 682)"
HISTORY = [
    detained("2024-01-10", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE,
             hospital_ods=OXFORD_HEALTH),
    left("2024-03-01"),
    moved("2024-06-01", no_fixed_abode=True),
    detained("2024-09-01", "03", hospital_ods=CNWL),  # re-detained with no place of residence
    left("2024-11-01", discharge_destination_la_gss=OXFORDSHIRE),
]
DURING, AFTER = HISTORY[:4], HISTORY


def test_the_hospitals_council_coordinates_during_the_re_detention():
    during = status(DURING, "2024-09-02")
    assert during.entitled and during.detained
    assert during.coordinating_council is not None and during.coordinating_council.org.code == HARROW
    assert during.coordinating_council.citation == NFA


def test_on_discharge_the_council_of_the_area_discharged_to_is_responsible():
    after = status(AFTER, "2024-11-02")
    assert after.responsible_council.org.code == OXFORDSHIRE
    assert after.responsible_council.citation == NFA
    assert "no place of residence before detention; discharged to that area on 2024-11-01" in (
        after.responsible_council.explanation)
    assert after.coordinating_council is None


def test_the_hand_over_is_told_to_the_previous_council_and_the_new_one():
    before = status(DURING, "2024-11-01")
    after = status(AFTER, "2024-11-01")
    transfers = [e for e in derive_events(before, after, HISTORY[-1])
                 if e.event_type is EventType.RESPONSIBILITY_TRANSFERRED]
    assert len(transfers) == 1
    told = transfers[0]
    assert (told.details["council_from"], told.details["council_to"]) == (BUCKINGHAMSHIRE, OXFORDSHIRE)
    assert BUCKINGHAMSHIRE in told.also_notify
    # The history's own steps (what a late change is compared against) hold the same hand-over: from the
    # council whose duty the re-detention ended (no council responsible just before the discharge).
    steps = transfer_steps(PERSON, AFTER, REF, BOOK, d("2024-12-01"))
    assert [(s.change.change_id, s.key[1]) for s in steps] == [
        (HISTORY[-1].change_id, (("council", BUCKINGHAMSHIRE, OXFORDSHIRE),))]
    assert (steps[0].before.council_basis_code, steps[0].before.outgoing_council_basis_code) == (
        None, BUCKINGHAMSHIRE)


def test_during_the_re_detention_the_previous_council_is_no_longer_responsible():
    during = status(DURING, "2024-09-02")
    assert during.responsible_council is None and during.council_basis_code is None
    assert during.coordinating_council.org.code == HARROW
    # Kept apart as the outgoing body of the hand-over to come, its duty ended by the re-detention.
    assert during.outgoing_council_basis_code == BUCKINGHAMSHIRE
    assert during.outgoing_council.org.code == BUCKINGHAMSHIRE
    assert during.outgoing_council.citation == f"{REDETENTION}; {NFA}"
    assert "responsible until the new s3 detention on 2024-09-01 ended its duty" in (
        during.outgoing_council.explanation)
    # The NHS commissioner already funding aftercare stays (Worcs 4.4.2, 4.4.9): only the council's duty ended.
    kept = status(DURING[:3], "2024-09-02").responsible_commissioner
    assert during.responsible_commissioner.org.code == kept.org.code
    assert "kept through the s3 re-detention" in during.responsible_commissioner.explanation
    # Once the council of the area discharged to is responsible, nothing is outgoing.
    after = status(AFTER, "2024-11-02")
    assert after.outgoing_council is None and after.outgoing_council_basis_code is None


def test_the_re_detention_itself_tells_no_transfer():
    """The duty ended, but nobody took it over yet: the re-detention hands nothing over (the hospital's
    council coordinating is no transfer), the discharge does."""
    before = status(HISTORY[:3], "2024-09-01")
    during = status(DURING, "2024-09-01")
    assert not [e for e in derive_events(before, during, HISTORY[3])
                if e.event_type is EventType.RESPONSIBILITY_TRANSFERRED]
    assert [(s.change.change_id, s.key[1]) for s in transfer_steps(PERSON, DURING, REF, BOOK, d("2024-12-01"))] == []


def _transfers_told(arrivals, as_of):
    """What ingest derives as each change arrives (a late one through `revealed_steps`):
    every transfer event's (role, from, to, date, also_notify)."""
    told, history = [], []
    for c in arrivals:
        before = evaluate(PERSON, history, REF, BOOK, as_of) if history else None
        after = evaluate(PERSON, [*history, c], REF, BOOK, as_of)
        revealed = revealed_steps(PERSON, history, c, REF, BOOK, as_of) if history and is_late(c, history) else None
        for e in derive_events(before, after, c, revealed=revealed):
            if e.event_type is EventType.RESPONSIBILITY_TRANSFERRED:
                for role in ("council", "commissioner"):
                    if f"{role}_from" in e.details:
                        told.append((role, e.details[f"{role}_from"], e.details[f"{role}_to"], e.occurred_on,
                                     e.also_notify))
        history.append(c)
    return told


def test_every_arrival_order_tells_the_same_one_hand_over():
    expected = [("council", BUCKINGHAMSHIRE, OXFORDSHIRE, d("2024-11-01"), (BUCKINGHAMSHIRE,))]
    for order in itertools.permutations(range(len(HISTORY))):
        assert _transfers_told([HISTORY[i] for i in order], d("2024-12-01")) == expected, order


def test_the_hand_over_is_the_one_a_transfer_case_checks_is_still_held():
    """hub/domain/handovers.py: what the workflows compare an open transfer case against."""
    assert ("council", BUCKINGHAMSHIRE, OXFORDSHIRE, d("2024-11-01")) in handovers(
        transfer_steps(PERSON, AFTER, REF, BOOK, d("2024-12-01")))


def test_left_without_a_destination_the_first_area_settled_in_takes_over():
    history = [*DURING, left("2024-11-01"), moved("2025-01-06", HEREFORDSHIRE)]
    waiting = status(history[:5], "2024-12-01")
    assert waiting.responsible_council is None and waiting.outgoing_council_basis_code == BUCKINGHAMSHIRE
    assert waiting.coordinating_council.org.code == HARROW
    settled = status(history, "2025-01-07")
    assert settled.responsible_council.org.code == HEREFORDSHIRE and settled.outgoing_council is None
    assert _transfers_told(history, d("2025-02-01")) == [
        ("council", BUCKINGHAMSHIRE, HEREFORDSHIRE, d("2025-01-06"), (BUCKINGHAMSHIRE,))]


def test_a_council_dispute_resolved_during_the_re_detention_hands_over_from_the_council_whose_duty_ended():
    dispute = Dispute("D-NFA", DisputeKind.COUNCIL, (HARROW, OXFORDSHIRE), resolved_responsible=OXFORDSHIRE)
    resolved = change(ChangeType.DISPUTE_RESOLVED, "2024-10-01", dispute=dispute, source="hub:workflows")
    history = [*DURING, resolved]
    after = status(history, "2024-10-02")
    assert after.responsible_council.org.code == OXFORDSHIRE and after.outgoing_council is None
    assert [t[:3] for t in _transfers_told(history, d("2024-12-01"))] == [
        ("council", BUCKINGHAMSHIRE, OXFORDSHIRE)]


def test_re_detained_again_with_no_place_of_residence_the_same_council_stays_outgoing():
    history = [*DURING, left("2024-10-01"), detained("2024-10-15", "03", hospital_ods=OXFORD_HEALTH),
               left("2024-12-01", discharge_destination_la_gss=HEREFORDSHIRE)]
    during = status(history[:6], "2024-10-16")
    assert during.responsible_council is None and during.outgoing_council_basis_code == BUCKINGHAMSHIRE
    assert during.coordinating_council.org.code == OXFORDSHIRE
    assert _transfers_told(history, d("2025-01-01")) == [
        ("council", BUCKINGHAMSHIRE, HEREFORDSHIRE, d("2024-12-01"), (BUCKINGHAMSHIRE,))]


def test_with_a_place_of_residence_the_council_there_is_responsible_at_once():
    """Worcs 4.3.3: the council of ordinary residence immediately before the new detention takes over
    when it begins; nothing waits for the discharge and nothing is outgoing."""
    history = [*HISTORY[:2], moved("2024-06-01", HARROW),
               detained("2024-09-01", "03", hospital_ods=OXFORD_HEALTH), left("2024-11-01")]
    during = status(history[:4], "2024-09-02")
    assert during.responsible_council.org.code == HARROW and during.council_basis_code == HARROW
    assert during.coordinating_council is None and during.outgoing_council is None
    assert during.responsible_council.citation == REDETENTION
    assert _transfers_told(history, d("2024-12-01")) == [
        ("council", BUCKINGHAMSHIRE, HARROW, d("2024-09-01"), (BUCKINGHAMSHIRE,))]


def test_a_first_detention_with_no_place_of_residence_is_still_a_first_determination():
    """Nobody held the duty before: the council of the area discharged to is determined, not transferred to."""
    history = [detained("2024-01-10", no_fixed_abode=True, hospital_ods=CNWL),
               left("2024-03-01", discharge_destination_la_gss=OXFORDSHIRE)]
    assert status(history[:1], "2024-01-11").outgoing_council is None
    assert status(history, "2024-03-02").responsible_council.org.code == OXFORDSHIRE
    assert _transfers_told(history, d("2024-04-01")) == []


def test_an_open_dispute_does_not_hold_the_discharge_that_completes_the_re_determination():
    """hub/domain/workflows/held.py: a new qualifying detention re-determines the council by law and is never
    held (Worcs 4.3.3, 15.1). With no place of residence before it, that re-determination ends the previous
    council's duty when the detention begins and names the council of the area discharged to on discharge:
    the discharge moves no council from one that holds the duty, so an open dispute does not hold it (it was
    held, leaving the council whose duty had ended named as responsible until the dispute was resolved)."""
    raised = change(ChangeType.DISPUTE_RAISED, "2024-07-01",
                    dispute=Dispute("D-OPEN", DisputeKind.COUNCIL, (BUCKINGHAMSHIRE, HARROW)))
    history = [*HISTORY[:3], raised, HISTORY[3]]
    discharge = HISTORY[4]
    before, after = status(history, "2024-11-01"), status([*history, discharge], "2024-11-01")
    assert before.open_disputes and hold_reason(before, after, discharge) is None
    assert after.responsible_council.org.code == OXFORDSHIRE
