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
from datetime import date
from typing import Any

from adapters.council_files.mapping import (
    COMMON_COLUMNS, EventSpec, FieldProblem, Layout, MappedRow, PackageSpec, _Bad, _map_package, _plan, map_record,
)

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
    "PRE_DETENTION_LA_GSS": ["E06000063", "X1", "", "e06000064"],
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


# ----------------------------------------------------------------- reference


def map_record_by_name(layout: Layout, row: int, values: dict[str, str], original: bytes,
               seen_ids: dict[str, int] | None = None) -> MappedRow:
    """`map_record` as it was written before its per-event plan: each column
    read by name. The reference `map_record` is compared with (not the hub's code)."""
    problems: list[FieldProblem] = []

    def bad(column: str | None, reason: str) -> None:
        where = f"row {row}, column {column}" if column else f"row {row}"
        problems.append(FieldProblem(where, reason))

    parsers, every_record_requires, targets = _plan(layout)

    def read(name: str) -> Any:
        text = values.get(name, "")
        if not text:
            return None
        found = parsers.get(name)
        if found is None:
            return None
        try:
            return found[1](text)
        except _Bad as exc:
            bad(name, str(exc))
            return None

    record_id = read("RECORD_ID")
    if record_id is not None and seen_ids is not None:
        first = seen_ids.setdefault(record_id, row)
        if first != row:
            bad("RECORD_ID", f"repeats the RECORD_ID of row {first}: each record needs its own id")

    spec: EventSpec | None = None
    package: PackageSpec | None = None
    event_text = values.get("EVENT", "").strip().upper()
    if event_text:
        spec = COUNCIL_EVENTS.get(event_text)
        package = PACKAGE_EVENTS.get(event_text)
        if spec is None and package is None:
            refused = REFUSED_EVENTS.get(event_text)
            bad("EVENT", refused or "is not an EVENT code of the layout ("
                + ", ".join([*COUNCIL_EVENTS, *PACKAGE_EVENTS]) + ")")

    if package is not None:
        return _map_package(layout, row, values, original, package, event_text, read, bad, problems, record_id)

    names = [*COMMON_COLUMNS, *(spec.uses if spec else ())]
    # RECORD_ID as read above, never read again: a bad one is reported once, a blank one as required.
    parsed: dict[str, Any] = {n: record_id if n == "RECORD_ID" else read(n)
                              for n in names if n != "EVENT"}

    required = [*every_record_requires, *spec.requires] if spec else every_record_requires
    for name in required:
        if not values.get(name, "").strip():
            what = f"is required for {event_text}" if spec and name in spec.requires else "is required"
            bad(name, what)

    if spec is not None and spec.change_type.value == "moved":
        if parsed.get("NFA") is True and parsed.get("LA_GSS") is not None:
            bad("LA_GSS", "must be blank when NFA is Y (no fixed abode)")
        elif (parsed.get("NFA") is not True and not values.get("PRE_DETENTION_LA_GSS", "").strip()
              and not values.get("LA_GSS", "").strip()):
            bad("LA_GSS", "is required for ADDR_CHANGE (the council of ordinary residence after the move), "
                          "or NFA Y when the person has no fixed abode, or PRE_DETENTION_LA_GSS alone when the "
                          "row only names the successor of a split council")

    if problems or spec is None:
        return MappedRow(row, record_id, original, None, tuple(problems))

    data: dict[str, Any] = {"schema_version": "1", "source_system": layout.source_system,
                            "change_type": spec.change_type.value}
    for name, value in parsed.items():  # _set(data, column.target, _jsonable(value)), the path split once
        if value is None:
            continue
        where = targets.get(name)
        if where is None:
            continue
        parents, leaf = where
        target = data
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value.isoformat() if isinstance(value, date) else value
    return MappedRow(row, record_id, original, data, ())
