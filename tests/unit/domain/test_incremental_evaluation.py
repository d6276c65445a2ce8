"""Incremental evaluation (`evaluation(...).extended(change)`) gives exactly
`evaluate`'s status at every prefix of a history, whatever the arrival order,
and extending never changes an earlier evaluation or status (hypothesis)."""

from dataclasses import replace
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings, strategies as st

from hub.domain.model import ChangeType as T
from hub.domain.rules import Evaluation, evaluate, evaluation
from hub.domain.rules.engine import _CONTAINER_FIELDS, _fold_all
from tests.unit.domain.builders import BOOK, PERSON, REF, change, detained, left
from tests.unit.domain.test_properties import histories

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def arrivals(draw) -> tuple[list, object]:
    """A generated history with same-day groups, ties on the whole sort key,
    and an arrival order that is mostly the narrative one with some changes
    late (swapped with a neighbour or moved to the end); and an `as_of` that
    may leave the newest changes in the future."""
    changes = draw(histories())
    out = []
    for c in changes:
        if out and draw(st.integers(0, 3)) == 0:  # the same day as the one before
            c = replace(c, effective_date=out[-1].effective_date, notified_on=out[-1].notified_on)
        out.append(c)
        if draw(st.integers(0, 6)) == 0:  # an exact tie on change_order (same type, day, notice, source)
            out.append(replace(c, change_id=c.change_id + "-tie", gp_practice_ods="Z99999"))
    for i in range(len(out) - 1):
        if draw(st.integers(0, 4)) == 0:
            out[i], out[i + 1] = out[i + 1], out[i]
    if len(out) > 2 and draw(st.booleans()):
        out.append(out.pop(draw(st.integers(0, len(out) - 2))))
    last = max(c.effective_date for c in out)
    as_of = last + timedelta(days=draw(st.sampled_from([-200, -1, 0, 1, 30])))
    return out, as_of


@FAST
@given(arrivals(), st.integers(0, 3))
def test_extending_gives_evaluate_at_every_prefix(arrival, start):
    changes, as_of = arrival
    start = min(start, len(changes))
    made = [evaluation(PERSON, changes[:start], REF, BOOK, as_of)]
    for c in changes[start:]:
        made.append(made[-1].extended(c))
    for k, ev in enumerate(made, start):
        assert ev.status == evaluate(PERSON, changes[:k], REF, BOOK, as_of)
        assert ev.changes == tuple(changes[:k])
    # Nothing folded later reached an earlier evaluation or its status.
    for k, ev in enumerate(made, start):
        assert ev.status == evaluate(PERSON, changes[:k], REF, BOOK, as_of)
        assert ev.extended(changes[-1]).status == evaluate(PERSON, [*changes[:k], changes[-1]], REF, BOOK, as_of)


@FAST
@given(arrivals(), st.data())
def test_branches_from_one_evaluation_do_not_share_state(arrival, data):
    changes, as_of = arrival
    k = data.draw(st.integers(0, len(changes) - 1))
    base = evaluation(PERSON, changes[:k], REF, BOOK, as_of)
    before = base.status
    a = base.extended(changes[k])
    b = base.extended(data.draw(st.sampled_from(changes)))
    a2 = a.extended(changes[-1])
    assert base.status is before and base.status == evaluate(PERSON, changes[:k], REF, BOOK, as_of)
    assert a.status == evaluate(PERSON, changes[:k + 1], REF, BOOK, as_of)
    assert a2.status == evaluate(PERSON, [*changes[:k + 1], changes[-1]], REF, BOOK, as_of)
    assert b.status == evaluate(PERSON, list(b.changes), REF, BOOK, as_of)


@FAST
@given(histories())
def test_the_fold_holds_no_other_mutable_value(changes):
    """_copy_fold copies the containers it knows of; every other field of the
    fold must hold an immutable value, or a copy would share it."""
    fold, _ = _fold_all(PERSON, changes, REF, BOOK, changes[-1].effective_date + timedelta(days=1))
    for name, value in vars(fold).items():
        if name in _CONTAINER_FIELDS or name in ("ref", "agreements"):
            continue
        hash(value)  # frozen dataclasses, dates, strings, None: all hashable


def test_a_late_change_replays_the_history_and_an_in_order_one_does_not():
    as_of = date(2025, 1, 1)
    ev = evaluation(PERSON, [detained("2024-01-10")], REF, BOOK, as_of)
    discharged = ev.extended(left("2024-03-01"))
    assert discharged.replays == 0 and discharged.status.entitled
    late_move = change(T.MOVED, "2023-12-01", residence_la_gss="E06000060")  # before the detention: re-determines
    corrected = discharged.extended(late_move)
    assert corrected.replays == 1
    assert corrected.status == evaluate(PERSON, list(corrected.changes), REF, BOOK, as_of)
    assert discharged.status.responsible_council is None
    assert corrected.status.responsible_council.org.code == "E06000060"
    future = corrected.extended(change(T.DIED, "2030-01-01"))  # after as_of: no change to the status
    assert future.status is corrected.status and not future.status.died
    assert isinstance(future, Evaluation)


@FAST
@given(arrivals())
def test_access_facts_extend_by_union_over_the_changes(arrival):
    """The bulk path extends a person's access facts row by row: the trusts
    of the history plus the new change's, the roles of the new status. That
    is person_facts of the whole history, at every prefix."""
    from hub.domain.access import PersonFacts, person_facts

    def trust_of(ods: str) -> str | None:  # some sites' trusts unknown
        return None if ods.endswith("A") else ods[:3]

    changes, as_of = arrival
    ev = evaluation(PERSON, [], REF, BOOK, as_of)
    facts = person_facts(ev.status, [], trust_of)
    for k, c in enumerate(changes, 1):
        ev = ev.extended(c)
        added = person_facts(ev.status, (c,), trust_of)
        facts = PersonFacts(facts.care_trusts | added.care_trusts, added.roles_by_org)
        assert facts == person_facts(ev.status, changes[:k], trust_of)


@FAST
@given(histories())
def test_extended_statuses_share_the_determination_of_an_unchanged_responsibility(changes):
    """An evaluation chain re-uses a responsibility's determination while the
    fold keeps that responsibility (hub/bus/payload.py then re-uses its JSON);
    `evaluate` and a new chain make their own. Equal either way."""
    as_of = max(c.effective_date for c in changes)
    ev = evaluation(PERSON, changes[:1], REF, BOOK, as_of)
    for c in changes[1:]:
        nxt = ev.extended(c)
        for name in ("council", "commissioner", "coordinating_council"):
            before, after = getattr(ev._fold, name), getattr(nxt._fold, name)
            field = {"council": "responsible_council", "commissioner": "responsible_commissioner"}.get(name, name)
            if before is not None and after is before and nxt.replays == ev.replays:
                assert getattr(nxt.status, field) is getattr(ev.status, field)
        assert nxt.status == evaluate(PERSON, list(nxt.changes), REF, BOOK, as_of)
        ev = nxt
    assert len(ev._memo) <= 16
    fresh = evaluate(PERSON, list(ev.changes), REF, BOOK, as_of)
    assert fresh == ev.status
    if fresh.responsible_council is not None:
        assert fresh.responsible_council is not ev.status.responsible_council


def test_pending_reviews_are_worked_out_again_only_when_what_they_come_from_changes():
    """A change that adds no review, placement or trigger keeps the pending
    reviews (the same tuple); one that does gets them worked out again, as
    `evaluate` would."""
    as_of = date(2025, 6, 1)
    ev = evaluation(PERSON, [detained("2024-01-10", residence_la_gss="E06000060"), left("2024-03-01")],
                    REF, BOOK, as_of)
    gp = ev.extended(change(T.GP_CHANGED, "2024-04-01", gp_practice_ods="K82901"))
    assert gp.status.pending_reviews is ev.status.pending_reviews
    steps = [change(T.PLACEMENT_STARTED, "2024-05-01"), change(T.REVIEW_COMPLETED, "2024-06-01"),
             change(T.REVIEW_REQUESTED, "2024-07-01"), change(T.MOVED, "2024-08-01", residence_la_gss="E09000015")]
    for step in steps:
        nxt = gp.extended(step)
        assert nxt.status.pending_reviews != gp.status.pending_reviews
        assert nxt.status == evaluate(PERSON, list(nxt.changes), REF, BOOK, as_of)
        gp = nxt


def test_a_new_fold_is_the_dataclass_default_and_shares_no_container():
    from hub.domain.rules.engine import _Fold, _new_fold

    as_of = date(2025, 1, 1)
    made = _new_fold(PERSON, REF, BOOK, as_of)
    assert vars(made) == vars(_Fold(person_id=PERSON, ref=REF, agreements=BOOK, as_of=as_of))
    other = _new_fold("P-0002", REF, BOOK, as_of)
    assert other.person_id == "P-0002" and made.person_id == PERSON
    for name in _CONTAINER_FIELDS:
        assert getattr(made, name) is not getattr(other, name)
    made.open_disputes["D1"] = object()
    made.resolved_disputes.add("D1")
    assert not _new_fold(PERSON, REF, BOOK, as_of).open_disputes and not other.resolved_disputes
