"""The `history_received_by` header of a workflow's or the review scanner's
event, written from a stored `received_at` and read back as the history's own
values are (naive UTC on SQLite, aware on PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hub.bus.port import history_received_by
from hub.delivery.dispatcher import _received_by

AWARE = datetime(2024, 6, 3, 10, 15, 30, 123456, tzinfo=UTC)
NAIVE = AWARE.replace(tzinfo=None)


def test_written_as_utc_from_a_naive_or_aware_received_at() -> None:
    assert history_received_by(NAIVE) == history_received_by(AWARE) == "2024-06-03T10:15:30.123456+00:00"
    assert history_received_by(AWARE.astimezone(timezone(timedelta(hours=1)))) == history_received_by(AWARE)


def test_read_as_the_history_s_own_values_are() -> None:
    header = history_received_by(AWARE)
    assert _received_by(header, [(None, NAIVE)]) == NAIVE  # type: ignore[list-item]
    assert _received_by(header, [(None, AWARE)]) == AWARE  # type: ignore[list-item]


def test_absent_it_is_the_whole_history() -> None:
    assert _received_by(None, [(None, AWARE)]) is None  # type: ignore[list-item]
    assert _received_by("", [(None, AWARE)]) is None  # type: ignore[list-item]
    assert _received_by(history_received_by(AWARE), []) is None
