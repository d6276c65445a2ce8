"""Calendar arithmetic the rules need (months clamp to the month's last day), and the register's day.

The register's day is the calendar day in England (`england_day`), not UTC's: from late March to late
October England is an hour ahead of UTC, and between midnight and 01:00 there UTC still has yesterday.
A change a trust records at 00:30 BST on 1 June happened on 1 June; its 5 working days (Worcs 19.6), an
agreement's valid_from / valid_to, "a date in the future", the months of a statement and a review's due
day are all English calendar days. Instants (received_at, created_at) stay in UTC: only the day an
instant falls on in England is asked here.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

ENGLAND = ZoneInfo("Europe/London")


def england_day(at: datetime | None = None) -> date:
    """The calendar day in England at the instant `at` (now when None); a naive `at` is taken as UTC,
    as the store gives back its times on SQLite."""
    if at is None:
        return datetime.now(ENGLAND).date()
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).astimezone(ENGLAND).date()


def add_months(start: date, months: int) -> date:
    """`start` plus whole months; 31 January + 1 month is 28/29 February."""
    month_index = start.month - 1 + months
    year = start.year + month_index // 12
    month = month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return date(year, month, day)
