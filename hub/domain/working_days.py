"""Working days: Monday to Friday, less England and Wales bank holidays."""

from __future__ import annotations

from datetime import date, timedelta


def is_working_day(day: date, holidays: frozenset[date]) -> bool:
    return day.weekday() < 5 and day not in holidays


def add_working_days(start: date, n: int, holidays: frozenset[date]) -> date:
    """The n-th working day after `start` (the notice day itself is day 0).

    n = 0 gives `start` itself, even on a weekend: nothing has elapsed yet.
    """
    if n < 0:
        raise ValueError("n must not be negative")
    day = start
    remaining = n
    while remaining:
        day += timedelta(days=1)
        if is_working_day(day, holidays):
            remaining -= 1
    return day


def working_days_between(start: date, end: date, holidays: frozenset[date]) -> int:
    """Working days in (start, end]: 0 when end is on or before start.

    Counting from the day after notice matches "within 5 working days after
    receiving notice" (Worcs 19.6).
    """
    if end <= start:
        return 0
    count = 0
    day = start
    while day < end:
        day += timedelta(days=1)
        if is_working_day(day, holidays):
            count += 1
    return count
