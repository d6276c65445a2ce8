"""`map_record` (each record read through its EVENT's plan, worked out once
per layout and event) gives exactly what reading each column by name gave
(`map_record_by_name`, the code before the plan, kept as the reference): the
same MappedRow, the same problems in the same order, the same change with its
keys in the same order, over random records of both layouts, good and bad
values, every EVENT code and unknown ones."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from adapters.council_files import LAYOUTS
from adapters.council_files.events import COUNCIL_EVENTS, PACKAGE_EVENTS, REFUSED_EVENTS
from adapters.council_files.mapping import map_record, map_record_by_name

# Values of each kind, good and bad (a few of each: the parsers themselves have their own tests).
GOOD_AND_BAD = {
    "RECORD_ID": ["SW-1", "B-17", "x", "9991100016", "999 110 0016", "-bad", "a b", "SW-1"],
    "EFFECTIVE_DATE": ["01/02/2024", "20240201", "31/02/2024", "2024-02-01", "1/2/2024", "01/02/2124"],
    "NOTIFIED_DATE": ["02/02/2024", "", "99/99/9999", "20240203"],
    "NHS_NO": ["9991100016", "999 110 0016", "9991100017", "123", "999-110-0024", ""],
    "SURNAME": ["Testpatient", "", "x" * 101],
    "FORENAME": ["Alex", ""],
    "DOB": ["14/03/1971", "", "14/13/1971"],
    "POSTCODE": ["WR1 2AA", "wr12aa", "NOT A CODE", ""],
    "LA_GSS": ["E10000034", "E06000060", "X1", "", "e10000034"],
    "NFA": ["Y", "N", "y", "maybe", ""],
    "GP_ODS": ["K82001", "M81001", "k82001", "TOO-LONG-CODE", ""],
    "REVIEW_REASON": ["annual", "", "r" * 201],
    "LA_AGREES": ["Y", "N", "x", ""],
    "NHS_AGREES": ["Y", "N", ""],
    "PERSON_INVOLVED": ["Y", "", "?"],
    "END_REASONS": ["NO_NEED", "NO_NEED;MOVED_AWAY", "BOGUS", ";", ""],
    "PARTICIPANTS": ["care coordinator;AMHP", "", "p" * 101],
    "DISPUTE_ID": ["OR-88", "", "d" * 201],
    "DISPUTE_TYPE": ["LA", "NHS", "other", ""],
    "DISPUTE_PARTIES": ["E06000060;E10000034", "E06000060", "E06000060;??", ""],
    "RESOLVED_RESPONSIBLE": ["E06000060", "??", ""],
}
EVENTS = [*COUNCIL_EVENTS, *list(PACKAGE_EVENTS)[:1], *list(REFUSED_EVENTS)[:2], "", "NOPE", " gp_change "]


@st.composite
def records(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    names = [c.name for c in LAYOUTS[layout].columns if c.name != "REC_TYPE"]
    values: dict[str, str] = {"EVENT": draw(st.sampled_from(EVENTS))}
    for name in names:
        if name == "EVENT" or not draw(st.booleans()):  # absent: blank
            continue
        choices = GOOD_AND_BAD.get(name)
        values[name] = draw(st.sampled_from(choices) if choices else st.text(max_size=12)).strip()
    return layout, values


@settings(max_examples=1500, deadline=None)
@given(records(), st.integers(min_value=1, max_value=10_000), st.booleans())
def test_the_planned_mapping_is_the_by_name_mapping(record, row, with_seen):
    layout_name, values = record
    layout = LAYOUTS[layout_name]
    seen_a: dict[str, int] | None = {"SW-1": 1} if with_seen else None
    seen_b = dict(seen_a) if seen_a is not None else None
    got = map_record(layout, row, values, b"raw", seen_a)
    want = map_record_by_name(layout, row, values, b"raw", seen_b)
    assert got == want
    assert seen_a == seen_b
    if want.data is not None:  # the same keys in the same order, all the way down
        assert repr(got.data) == repr(want.data)


def test_a_row_of_every_council_event_maps_the_same_both_ways():
    layout = LAYOUTS["swift_csv"]
    full = {name: choices[0] for name, choices in GOOD_AND_BAD.items()}
    for event in COUNCIL_EVENTS:
        values = {**full, "EVENT": event}
        got, want = map_record(layout, 3, values, b"raw"), map_record_by_name(layout, 3, values, b"raw")
        assert got == want and repr(got.data) == repr(want.data)


def test_kept_dates_read_as_the_parser_reads_and_stay_bounded(monkeypatch):
    import re

    import pytest

    import adapters.council_files.mapping as mapping

    layout = LAYOUTS["swift_csv"]
    parse = mapping._parser(layout, layout.column("EFFECTIVE_DATE"))
    monkeypatch.setattr(mapping, "_KEPT_DATES", 8)
    kept = mapping._kept_dates(parse)
    texts = [f"{d:02d}/0{m}/2024" for m in (1, 2, 3) for d in range(1, 29)] + ["31/02/2024", "x", "2024-01-01"]
    for _ in range(2):
        for text in texts:
            try:
                want = parse(text)
            except mapping._Bad as exc:
                with pytest.raises(mapping._Bad, match=re.escape(str(exc))):
                    kept(text)
                continue
            assert kept(text) == want
    assert len(kept.__closure__[0].cell_contents) <= 8  # the kept dict, emptied when full
