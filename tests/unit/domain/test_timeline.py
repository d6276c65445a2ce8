"""Transfers belong to the history, not to the order it arrived in
(hub/domain/rules/timeline.py, derive_events(revealed=)).

The README's worked example: detained from Worcestershire (H&W commissioner)
in March, onto a CTO in May, moved to Buckinghamshire in July, re-detained
from there in September with a Buckinghamshire GP. The re-detention moves the
council (Worcs 4.3.3) and keeps the commissioner already funding aftercare
(Worcs 4.4.2): one transfer, the council's, in September. Posted in any
order, ingest must tell exactly that transfer: comparing the status before
and after a late change named a commissioner "transfer" from a body that
never held the duty and missed the council's."""

from __future__ import annotations

import itertools
from datetime import date

from hub.domain.model import ChangeType, EventType
from hub.domain.rules import derive_events, evaluate
from hub.domain.rules.precedence import is_late
from hub.domain.rules.timeline import revealed_steps, transfer_steps
from tests.unit.domain.builders import BOOK, PERSON, REF, change, detained, left, moved
from tests.unit.domain.fakes import BUCKINGHAMSHIRE, BUCKS_PRACTICE, WORCESTERSHIRE, WORCS_PRACTICE

TODAY = date(2025, 1, 6)


def _history():
    return [
        detained("2024-03-04", residence_la_gss=WORCESTERSHIRE, gp_practice_ods=WORCS_PRACTICE),
        left("2024-05-01"),
        change(ChangeType.CTO_STARTED, "2024-05-01"),
        moved("2024-07-01", BUCKINGHAMSHIRE),
        detained("2024-09-02", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=BUCKS_PRACTICE),
    ]


def _transfers_told(arrivals) -> list[tuple[str, str, str, date]]:
    """What ingest derives as each change arrives: every transfer event's (role, from, to, date)."""
    told, history = [], []
    for c in arrivals:
        before = evaluate(PERSON, history, REF, BOOK, TODAY) if history else None
        after = evaluate(PERSON, [*history, c], REF, BOOK, TODAY)
        revealed = revealed_steps(PERSON, history, c, REF, BOOK, TODAY) if history and is_late(c, history) else None
        for e in derive_events(before, after, c, revealed=revealed):
            if e.event_type is EventType.RESPONSIBILITY_TRANSFERRED:
                for role in ("council", "commissioner"):
                    if f"{role}_from" in e.details:
                        told.append((role, e.details[f"{role}_from"], e.details[f"{role}_to"], e.occurred_on))
        history.append(c)
    return told


def test_the_history_holds_one_transfer_the_councils_at_the_re_detention():
    history = _history()
    steps = transfer_steps(PERSON, history, REF, BOOK, TODAY)
    assert [(s.change.change_id, s.key[1]) for s in steps] == [
        (history[-1].change_id, (("council", WORCESTERSHIRE, BUCKINGHAMSHIRE),))]
    assert _transfers_told(history) == [("council", WORCESTERSHIRE, BUCKINGHAMSHIRE, date(2024, 9, 2))]


def test_every_arrival_order_tells_the_same_one_transfer():
    history = _history()
    expected = [("council", WORCESTERSHIRE, BUCKINGHAMSHIRE, date(2024, 9, 2))]
    for order in itertools.permutations(range(len(history))):
        assert _transfers_told([history[i] for i in order]) == expected, order


def test_a_late_change_that_only_corrects_who_was_responsible_is_no_transfer():
    """A GP change dated before the detention, heard after it: the commissioner
    was H&W all along, not a hand-over from BOB (no transfer case to open)."""
    detention = detained("2024-03-04", residence_la_gss=BUCKINGHAMSHIRE, gp_practice_ods=None)
    gp = change(ChangeType.GP_CHANGED, "2024-02-01", gp_practice_ods=WORCS_PRACTICE)
    assert _transfers_told([detention, gp]) == []
    assert _transfers_told([gp, detention]) == []
    # The status did change: who is the commissioner (a correction the dispatcher tells).
    assert (evaluate(PERSON, [detention], REF, BOOK, TODAY).commissioner_basis_code
            != evaluate(PERSON, [detention, gp], REF, BOOK, TODAY).commissioner_basis_code)


def test_revealed_steps_are_the_whole_historys_steps_with_the_change_less_those_without_it():
    """revealed_steps folds what sorts before the change once: the same steps
    as comparing the whole timelines, for every change of every order of
    histories with moves, GP changes and re-detentions."""
    import random

    rng = random.Random(5)
    places = [(WORCESTERSHIRE, WORCS_PRACTICE), (BUCKINGHAMSHIRE, BUCKS_PRACTICE)]
    for _ in range(40):
        history = []
        for month in range(1, 13):
            gss, gp = rng.choice(places)
            kind = rng.choice(["detained", "left", "moved", "gp", "none"])
            on = f"2024-{month:02d}-{rng.choice([1, 15]):02d}"
            if kind == "detained":
                history.append(detained(on, residence_la_gss=gss, gp_practice_ods=gp))
            elif kind == "left":
                history.append(left(on))
            elif kind == "moved":
                history.append(moved(on, gss))
            elif kind == "gp":
                history.append(change(ChangeType.GP_CHANGED, on, gp_practice_ods=gp))
        rng.shuffle(history)
        for k in range(1, len(history)):
            earlier, c = history[:k], history[k]
            whole = {s.key for s in transfer_steps(PERSON, [*earlier, c], REF, BOOK, TODAY)} - {
                s.key for s in transfer_steps(PERSON, earlier, REF, BOOK, TODAY)}
            revealed = revealed_steps(PERSON, earlier, c, REF, BOOK, TODAY)
            # (a step's key is worked out from the statuses either side: they say the same moves)
            assert {s.key for s in revealed} == whole
