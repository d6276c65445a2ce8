"""The England and Wales bank holiday calendar the working-day clocks count with.

The hub ships the calendar as published when it was built (hub/refdata/data,
2018-2027). GOV.UK publishes later years, and changes to published ones (a
one-off holiday), at https://www.gov.uk/bank-holidays.json; an operator points
`S117_BANK_HOLIDAYS_FILE` at a copy of that file so the clocks (the 5 working
days of Worcs 19.6, a transfer's acknowledgement, a dispute stage) keep
counting holidays without a new release of the hub. For each year the file
lists, its England and Wales dates replace the shipped ones; other years keep
the shipped dates. A file that cannot be read as that document stops the hub
at start, naming the element and the reason (never a calendar silently
without holidays).

`covered_until` is the last day of the last year the calendar has holidays
for: a clock running past it counts no holidays there. The hub logs a warning
at start, and exports `s117_bank_holidays_covered_until_timestamp_seconds` for
the `S117BankHolidayCalendarEndsSoon` alert, when less than half a year is left.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

DIVISION = "england-and-wales"
WARN_DAYS = 183  # the calendar should reach half a year ahead: a dispute stage's clock is months long


class CalendarError(ValueError):
    """The bank holidays file is not GOV.UK's document: `where` names the element."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"S117_BANK_HOLIDAYS_FILE: {where}: {reason}")
        self.where = where
        self.reason = reason


def read_govuk_file(path: Path) -> frozenset[date]:
    """The England and Wales dates of a GOV.UK `bank-holidays.json`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CalendarError("(file)", f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        doc: Any = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise CalendarError("(file)", "not JSON (GOV.UK's bank-holidays.json is expected)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(DIVISION), dict):
        raise CalendarError(DIVISION, "missing: the file must hold the England and Wales division")
    events = doc[DIVISION].get("events")
    if not isinstance(events, list) or not events:
        raise CalendarError(f"{DIVISION}.events", "must be a list of at least one holiday")
    days: set[date] = set()
    for i, event in enumerate(events):
        value = event.get("date") if isinstance(event, dict) else None
        if not isinstance(value, str) or len(value) != 10:
            raise CalendarError(f"{DIVISION}.events[{i}].date", "must be a YYYY-MM-DD date")
        try:
            days.add(date.fromisoformat(value))
        except ValueError:
            raise CalendarError(f"{DIVISION}.events[{i}].date", "must be a YYYY-MM-DD date") from None
    return frozenset(days)


def merged(shipped: frozenset[date], published: frozenset[date]) -> frozenset[date]:
    """For each year `published` lists, its dates; for every other year the shipped ones."""
    years = {d.year for d in published}
    return frozenset({d for d in shipped if d.year not in years} | published)


def covered_until(holidays: frozenset[date]) -> date | None:
    """The last day of the last year with holidays (a year with none is not covered)."""
    return date(max(holidays).year, 12, 31) if holidays else None
