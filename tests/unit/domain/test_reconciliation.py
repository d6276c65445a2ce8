"""Reconciliation rules: each kind of difference, who must act, items across
successive snapshots, and the no-oracle rule, table-driven; and properties:
a list built from the register has no differences, an injected difference is
reported exactly once with the right kind."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.reconciliation import (
    Belief,
    Difference,
    Item,
    ItemState,
    Kind,
    Position,
    compare,
    set_state,
    track,
)

AS_OF = date(2026, 11, 1)
BUCKS, BIRMINGHAM, BOB, BSOL = "E06000060", "E08000025", "QU9", "QHL"


def position(**kw) -> Position:  # noqa: ANN003
    base = dict(
        person_key="k1", person_id="p1", roles=frozenset({"responsible-council"}), entitled=True,
        council=BUCKS, council_basis=BUCKS, commissioner=BOB, commissioner_basis="10Q",
        entitlement_start=date(2025, 4, 7), entitlement_end=None, next_review_due=date(2027, 1, 7),
        next_review_kind="annual", explanation="s3 detention; left hospital", citation="Worcs 4.3.1",
    )
    return Position(**(base | kw))


def belief_from(p: Position, **kw) -> Belief:  # noqa: ANN003
    base = dict(person_key=p.person_key, local_id="SW-1", entitled=p.entitled, responsible_council=p.council,
                responsible_icb=p.commissioner, entitlement_start=p.entitlement_start,
                entitlement_end=p.entitlement_end, next_review_due=p.next_review_due)
    return Belief(**(base | kw))


def kinds(diffs: list[Difference]) -> list[tuple[str, str]]:
    return [(d.kind.value, d.field) for d in diffs]


CASES = [
    # (name, belief builder, position, expected kinds)
    ("agree", lambda p: belief_from(p), position(), []),
    ("not on the body's list", lambda p: None, position(), [("missing-on-body-list", "entitled")]),
    ("not on the body's list, and not entitled either", lambda p: None, position(entitled=False), []),
    ("on the body's list, unknown to the hub", lambda p: Belief("k1", entitled=True), None,
     [("missing-on-hub-register", "entitled")]),
    ("listed as not entitled, unknown to the hub", lambda p: Belief("k1", entitled=False), None, []),
    ("the body says entitled, the hub says ended", lambda p: belief_from(p, entitled=True),
     position(entitled=False, entitlement_end=date(2026, 5, 1)), [("entitlement-differs", "entitled")]),
    ("the body says not entitled, the hub says entitled", lambda p: belief_from(p, entitled=False),
     position(), [("entitlement-differs", "entitled")]),
    ("another council", lambda p: belief_from(p, responsible_council=BIRMINGHAM), position(),
     [("responsible-body-differs", "responsible_council")]),
    ("another ICB", lambda p: belief_from(p, responsible_icb=BSOL), position(),
     [("responsible-body-differs", "responsible_icb")]),
    ("the ICB by its sub-ICB (basis) code is the same body", lambda p: belief_from(p, responsible_icb="10Q"),
     position(), []),
    ("start date differs", lambda p: belief_from(p, entitlement_start=date(2025, 4, 8)), position(),
     [("dates-differ", "entitlement_start")]),
    ("a blank date is not a difference", lambda p: belief_from(p, entitlement_start=None), position(), []),
    ("overdue on the hub only", lambda p: belief_from(p, next_review_due=date(2027, 1, 1)),
     position(next_review_due=date(2026, 10, 1)), [("review-overdue", "next_review_due")]),
    ("overdue on the body's list only", lambda p: belief_from(p, next_review_due=date(2026, 10, 1)),
     position(), [("review-overdue", "next_review_due")]),
    ("both overdue: the same", lambda p: belief_from(p, next_review_due=date(2026, 9, 1)),
     position(next_review_due=date(2026, 10, 1)), []),
]


@pytest.mark.parametrize(("name", "make_belief", "pos", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_kind_of_difference(name, make_belief, pos, expected) -> None:  # noqa: ANN001
    belief = make_belief(pos if pos is not None else position())
    assert kinds(compare(BUCKS, "council", belief, pos, AS_OF)) == expected


def test_who_must_act_and_why() -> None:
    [missing] = compare(BUCKS, "council", None, position(), AS_OF)
    assert missing.who_must_act == "body" and missing.hub_says == "yes"
    assert (missing.explanation, missing.citation) == ("s3 detention; left hospital", "Worcs 4.3.1")
    [unknown] = compare(BUCKS, "council", Belief("k9", entitled=True), None, AS_OF)
    assert unknown.who_must_act == "trust" and "detaining trust" in unknown.action
    assert unknown.person_id is None and unknown.hub_says is None
    [overdue] = compare(BUCKS, "council", belief_from(position()), position(next_review_due=date(2026, 1, 1)), AS_OF)
    assert "review-completed" in overdue.action and overdue.citation == "Worcs 14.1"


def test_a_person_the_body_has_no_part_in_is_answered_as_an_unknown_one() -> None:
    """No oracle: Birmingham listing Bucks' person learns what it would for a number the hub never saw."""
    theirs = position(roles=frozenset())
    belief = Belief("k1", local_id="BHM-7", entitled=True, responsible_council=BIRMINGHAM)
    known = compare(BIRMINGHAM, "council", belief, theirs, AS_OF)
    unknown = compare(BIRMINGHAM, "council", belief, None, AS_OF)
    assert known == unknown
    assert [d.kind for d in known] == [Kind.MISSING_ON_HUB_REGISTER]
    assert known[0].person_id is None and known[0].hub_says is None
    # And the hub's person is never reported to a body with no part as missing from its list.
    assert compare(BIRMINGHAM, "council", None, theirs, AS_OF) == []


def _item(d: Difference, state: ItemState, sid: str = "s1") -> Item:
    return Item(item_id=f"i-{d.kind.value}-{d.field}", key=d.key, state=state, difference=d, first_seen=sid,
                last_seen=sid)


def test_items_across_successive_snapshots() -> None:
    [council_diff] = compare(BUCKS, "council", belief_from(position(), responsible_council=BIRMINGHAM),
                             position(), AS_OF)
    [review_diff] = compare(BUCKS, "council", belief_from(position(), next_review_due=date(2026, 1, 1)),
                            position(person_key="k2", person_id="p2"), AS_OF)
    night1 = track([], [council_diff, review_diff], "s1")
    assert [d.key for d in night1.opened] == [council_diff.key, review_diff.key]
    items = [_item(council_diff, ItemState.OPEN), _item(review_diff, ItemState.ACCEPTED)]
    # Night 2: the same two differences: not opened afresh; accepted stays accepted.
    night2 = track(items, [council_diff, review_diff], "s2")
    assert night2.opened == () and night2.fixed == ()
    assert {(i.key, i.state, i.last_seen) for i in night2.seen_again} == {
        (council_diff.key, ItemState.OPEN, "s2"), (review_diff.key, ItemState.ACCEPTED, "s2")}
    # Night 3: the council difference is gone: fixed. The accepted one gone too: it was not live, stays.
    night3 = track(items, [], "s3")
    assert [(i.key, i.state) for i in night3.fixed] == [(council_diff.key, ItemState.FIXED)]
    # Night 4: it is back: the fixed item opens again, not a new one.
    fixed = [replace(items[0], state=ItemState.FIXED)]
    night4 = track(fixed, [council_diff], "s4")
    assert night4.opened == () and [(i.item_id, i.state) for i in night4.reopened] == [(fixed[0].item_id, ItemState.OPEN)]


def test_item_decisions() -> None:
    [d] = compare(BUCKS, "council", None, position(), AS_OF)
    item = _item(d, ItemState.OPEN)
    assert set_state(item, ItemState.ACCEPTED, "known: moving to Birmingham's list next week").state is ItemState.ACCEPTED
    with pytest.raises(ValueError, match="^reason: "):
        set_state(item, ItemState.ACCEPTED, " ")
    with pytest.raises(ValueError, match="^state: "):
        set_state(item, ItemState.FIXED, "done")
    with pytest.raises(ValueError, match="^state: "):
        set_state(replace(item, state=ItemState.FIXED), ItemState.OPEN, None)


dates = st.dates(min_value=date(2015, 1, 1), max_value=date(2030, 12, 31))
positions = st.builds(
    position,
    person_key=st.uuids().map(str),
    roles=st.sampled_from([frozenset({"responsible-council"}), frozenset({"coordinating-council"}),
                           frozenset({"responsible-council", "dispute-party"})]),
    entitled=st.booleans(),
    council=st.sampled_from([BUCKS, "E10000034"]),
    commissioner=st.sampled_from([BOB, "QGH"]),
    entitlement_start=st.one_of(st.none(), dates),
    entitlement_end=st.one_of(st.none(), dates),
    next_review_due=st.one_of(st.none(), dates),
)


@settings(max_examples=200, deadline=None)
@given(positions)
def test_a_list_built_from_the_register_has_no_differences(pos: Position) -> None:
    assert compare(BUCKS, "council", belief_from(pos), pos, AS_OF) == []


INJECTIONS = {
    Kind.MISSING_ON_BODY_LIST: lambda b, p: None,
    Kind.ENTITLEMENT_DIFFERS: lambda b, p: replace(b, entitled=not b.entitled),
    Kind.RESPONSIBLE_BODY_DIFFERS: lambda b, p: replace(b, responsible_icb="QHL"),
    Kind.DATES_DIFFER: lambda b, p: replace(b, entitlement_start=(p.entitlement_start or AS_OF) + timedelta(days=1)),
    Kind.REVIEW_OVERDUE: lambda b, p: replace(
        b, next_review_due=AS_OF + timedelta(days=30) if p.next_review_due and p.next_review_due < AS_OF
        else AS_OF - timedelta(days=1)),
}


@settings(max_examples=200, deadline=None)
@given(positions.filter(lambda p: p.entitled), st.sampled_from(sorted(INJECTIONS)))
def test_an_injected_difference_is_reported_exactly_once_with_its_kind(pos: Position, kind: Kind) -> None:
    belief = INJECTIONS[kind](belief_from(pos), pos)
    found = compare(BUCKS, "council", belief, pos, AS_OF)
    assert [d.kind for d in found] == [kind]
    # Found again the next night it is the same item, not a second one.
    first = track([], found, "s1")
    again = track([_item(d, ItemState.OPEN) for d in first.opened], found, "s2")
    assert (len(first.opened), again.opened, len(again.seen_again)) == (1, (), 1)
