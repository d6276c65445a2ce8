"""The audit chain's record values (hub/audit.py `_jsonable`): its fast
paths give the strings the hashes of chains already written were made from."""

from datetime import UTC, date, datetime, timedelta, timezone

from hypothesis import given, strategies as st

from hub.audit import _jsonable

OFFSETS = st.one_of(st.none(), st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))))


@given(st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=OFFSETS))
def test_datetimes_are_utc_iso_strings(v: datetime) -> None:
    assert _jsonable(v) == (v if v.tzinfo else v.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def test_other_values() -> None:
    assert _jsonable(date(2026, 12, 1)) == "2026-12-01"
    assert _jsonable(b"x") == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    assert [_jsonable(v) for v in ("a", None, 3, True, 1.5)] == ["a", None, 3, True, 1.5]
