"""Money review: interim dispute shares never make a body's part negative."""

from __future__ import annotations


from hypothesis import given
from hypothesis import strategies as st

from hub.domain.agreements import WHOLE
from hub.domain.money.responsibility import apportion


def test_four_equal_shares_of_two_pence_leave_no_one_below_nothing():
    # Three parts of 0.5p rounded half up were 1p each, and the lead's rest -1p.
    parts = apportion(2, [("A", 2500), ("B", 2500), ("C", 2500), ("D", 2500)], "A")
    assert sum(parts.values()) == 2 and min(parts.values()) >= 0
    assert parts["A"] == 0 and sorted(parts.values()) == [0, 0, 1, 1]


def test_the_documented_rule_is_unchanged_where_it_was_not_negative():
    assert apportion(3, [("A", 3334), ("B", 3333), ("C", 3333)], "A") == {"B": 1, "C": 1, "A": 1}
    assert apportion(100_001, [("Q1", 6000), ("Q2", 4000)], "Q1") == {"Q2": 40_000, "Q1": 60_001}


@st.composite
def _shares(draw):  # noqa: ANN001, ANN202
    n = draw(st.integers(2, 8))
    cuts = sorted(draw(st.lists(st.integers(0, WHOLE), min_size=n - 1, max_size=n - 1)))
    bps = [b - a for a, b in zip([0, *cuts], [*cuts, WHOLE])]
    return [(f"O{i}", bp) for i, bp in enumerate(bps)]


@given(st.integers(0, 10**9), _shares())
def test_parts_add_up_and_none_is_negative(amount, shares):
    parts = apportion(amount, shares, shares[0][0])
    assert sum(parts.values()) == amount
    assert all(p >= 0 for p in parts.values())
    for org, bp in shares:  # each part within a penny of its exact share
        assert abs(parts.get(org, 0) - amount * bp / WHOLE) <= 1 + amount * 1e-12 or org == max(
            shares, key=lambda s: (s[1], s[0] == shares[0][0]))[0]


