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


def test_an_entrys_content_is_jsonable_of_every_column_whichever_way_the_row_is_read():
    """`_content` takes a row of the table's columns whole and converts only the
    columns whose type can hold a datetime, a date or bytes: the same content
    as `_jsonable` of every value, for every source."""
    from collections import namedtuple

    from sqlalchemy import JSON, Boolean, Integer, String

    from hub.audit import SOURCES, _columns, _content

    as_read = [None, "text", 7, True, {"a": [1, 2]}, ["x"], 1.5]  # what a string, number or JSON column gives
    dated = [None, datetime(2026, 12, 1, 9, 30, 0, 5), datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
             date(2026, 12, 1), b"raw"]  # and what a date, time or binary one may
    for source in SOURCES:
        names = _columns(source.table)
        row_type = namedtuple("Row", names)
        assert any(not isinstance(c.type, (String, Integer, Boolean, JSON)) for c in source.table.columns)
        for shift in range(len(as_read) * len(dated)):
            values = [(as_read if isinstance(c.type, (String, Integer, Boolean, JSON)) else dated)[(i + shift) % (
                len(as_read) if isinstance(c.type, (String, Integer, Boolean, JSON)) else len(dated))]
                for i, c in enumerate(source.table.columns)]
            expected = {"source": source.name, **{n: _jsonable(v) for n, v in zip(names, values, strict=True)}}
            assert _content(source, row_type(*values)) == expected
            # A row read another way (its columns in another order) goes by name.
            other = namedtuple("Other", tuple(reversed(names)))(*reversed(values))
            assert _content(source, other) == expected


def test_a_value_already_made_jsonable_is_used_for_that_object_only():
    """`extend` passes the record's time with its `_jsonable` (made for the sort):
    the content is the same as without it, and a column holding another object,
    even an equal one, is converted itself."""
    from collections import namedtuple

    from hub.audit import SOURCES, _columns, _content

    source = next(s for s in SOURCES if s.name == "disclosures")
    names = _columns(source.table)
    at = datetime(2026, 12, 2, 13, 31, 7, 23635)
    row = namedtuple("Row", names)(*[at if n == "at" else None for n in names])
    expected = _content(source, row)
    assert expected["at"] == "2026-12-02T13:31:07.023635+00:00"
    assert _content(source, row, (at, _jsonable(at))) == expected
    equal_not_same = datetime(2026, 12, 2, 13, 31, 7, 23635)
    assert _content(source, row, (equal_not_same, "not used"))["at"] == expected["at"]
