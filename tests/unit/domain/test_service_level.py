"""Register service level: recorded within 5 working days of notice (Worcs 19.6)."""

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.domain.service_level import register_service_level
from hub.domain.working_days import add_working_days, working_days_between
from tests.unit.domain.builders import d
from tests.unit.domain.fakes import BANK_HOLIDAYS

# (start, n, expected): weekends and England & Wales bank holidays skipped
ADD_TABLE = [
    ("2024-06-03", 5, "2024-06-10"),  # Monday -> next Monday
    ("2024-06-07", 1, "2024-06-10"),  # Friday -> Monday
    ("2024-06-08", 1, "2024-06-10"),  # Saturday notice
    ("2024-03-27", 5, "2024-04-05"),  # across Good Friday and Easter Monday 2024
    ("2024-12-23", 5, "2025-01-02"),  # Christmas, Boxing Day, New Year's Day
    ("2025-05-02", 1, "2025-05-06"),  # early May bank holiday 2025
    ("2024-06-03", 0, "2024-06-03"),
]


@pytest.mark.parametrize(("start", "n", "expected"), ADD_TABLE)
def test_add_working_days(start, n, expected):
    assert add_working_days(d(start), n, BANK_HOLIDAYS) == d(expected)


@pytest.mark.parametrize(("start", "end", "expected"), [
    ("2024-06-03", "2024-06-03", 0), ("2024-06-03", "2024-06-10", 5), ("2024-03-28", "2024-04-02", 1),
    ("2024-06-10", "2024-06-03", 0), ("2024-06-07", "2024-06-09", 0),
])
def test_working_days_between(start, end, expected):
    assert working_days_between(d(start), d(end), BANK_HOLIDAYS) == expected


def test_negative_working_days_rejected():
    with pytest.raises(ValueError):
        add_working_days(d("2024-06-03"), -1, BANK_HOLIDAYS)


# (notified, recorded, state, working days taken, deadline)
LEVEL_TABLE = [
    ("2024-06-03", "2024-06-03", "met", 0, "2024-06-10"),
    ("2024-06-03", "2024-06-06", "met", 3, "2024-06-10"),
    ("2024-06-03", "2024-06-07", "met", 4, "2024-06-10"),
    ("2024-06-03", "2024-06-10", "near-breach", 5, "2024-06-10"),
    ("2024-06-03", "2024-06-11", "breach", 6, "2024-06-10"),
    ("2024-03-27", "2024-04-05", "near-breach", 5, "2024-04-05"),  # Easter does not count
    ("2024-03-27", "2024-04-08", "breach", 6, "2024-04-05"),
    ("2024-12-23", "2025-01-02", "near-breach", 5, "2025-01-02"),
]


@pytest.mark.parametrize(("notified", "recorded", "state", "taken", "deadline"), LEVEL_TABLE)
def test_register_service_level(notified, recorded, state, taken, deadline):
    level = register_service_level(d(notified), d(recorded), BANK_HOLIDAYS)
    assert (level.state, level.working_days_taken, level.deadline) == (state, taken, d(deadline))
    assert "Worcs 19.6" in level.explanation and level.citation == "Worcs 19.6"


def test_near_breach_window_is_configurable():
    assert register_service_level(d("2024-06-03"), d("2024-06-07"), BANK_HOLIDAYS, near_breach_days=2).state == (
        "near-breach")
    assert register_service_level(d("2024-06-03"), d("2024-06-10"), BANK_HOLIDAYS, near_breach_days=0).state == "met"


@given(start=st.dates(min_value=d("2010-01-01"), max_value=d("2030-12-31")), span=st.integers(-30, 4000))
def test_working_days_between_equals_counting_day_by_day(start, span):
    """The week-at-a-time count with bisected holidays is the definition:
    each day after `start` up to `end` that is a weekday and not a holiday."""
    end = start + timedelta(days=span)
    by_day, day = 0, start
    while day < end:
        day += timedelta(days=1)
        by_day += day.weekday() < 5 and day not in BANK_HOLIDAYS
    assert working_days_between(start, end, BANK_HOLIDAYS) == by_day


@given(start=st.dates(min_value=d("2010-01-01"), max_value=d("2030-12-31")), n=st.integers(0, 40))
def test_add_working_days_equals_stepping_day_by_day(start, n):
    """The n-th day after `start` that is a weekday and not a holiday (`start` itself when n is 0)."""
    day, left = start, n
    while left:
        day += timedelta(days=1)
        left -= day.weekday() < 5 and day not in BANK_HOLIDAYS
    assert add_working_days(start, n, BANK_HOLIDAYS) == day
