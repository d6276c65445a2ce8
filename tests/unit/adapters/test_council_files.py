"""Council files (adapters/council_files): SWIFT-style CSV and fixed-width
exports to canonical register changes, row by row, never quoting a value."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

import adapters.council_files.mapping as mapping
from adapters.council_files import LAYOUTS, SWIFT_CSV, SWIFT_FIXED, Layout, column_for, map_file
from adapters.council_files.events import PACKAGE_EVENTS
from adapters.council_files.events import COUNCIL_CHANGE_TYPES, COUNCIL_EVENTS, REFUSED_EVENTS
from hub.domain.model import ChangeType
from hub.ingest.contract import RegisterChangeIn

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "council_files"
NHS = "9991100016"  # 999 test range, valid modulus-11 check digit
BASE = {"RECORD_ID": "R-1", "EFFECTIVE_DATE": "2025-03-01", "NHS_NO": NHS}


# ------------------------------------------------------------------ builders


def _date(layout: Layout, iso: str) -> str:
    """ISO date -> the layout's own form (a non-ISO text is passed through as is)."""
    y, m, d = iso.split("-") if iso.count("-") == 2 and len(iso) == 10 else (None, None, None)
    if y is None:
        return iso
    return f"{d}/{m}/{y}" if layout is SWIFT_CSV else f"{y}{m}{d}"


DATE_COLUMNS = ("EFFECTIVE_DATE", "NOTIFIED_DATE", "DOB", "END_DATE")


def csv_file(rows: list[dict[str, str]], columns: list[str] | None = None, eol: str = "\r\n", bom: bool = False,
             convert_dates: bool = True) -> bytes:
    columns = columns or [c.name for c in SWIFT_CSV.columns]

    def cell(text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\r\n') else text

    lines = [",".join(columns)]
    for row in rows:
        row = {k: (_date(SWIFT_CSV, v) if k in DATE_COLUMNS and convert_dates else v) for k, v in row.items()}
        lines.append(",".join(cell(row.get(c, "")) for c in columns))
    return (("\ufeff" if bom else "") + eol.join(lines) + eol).encode("utf-8")


def fixed_record(values: dict[str, str]) -> str:
    line = [" "] * SWIFT_FIXED.record_length
    values = {"REC_TYPE": "D", **values}
    for col in SWIFT_FIXED.columns:
        text = values.get(col.name, "")
        if col.name in DATE_COLUMNS:
            text = _date(SWIFT_FIXED, text)
        assert len(text) <= col.width, f"{col.name} wider than {col.width}"
        line[col.start - 1: col.start - 1 + len(text)] = text
    return "".join(line)


def fixed_file(rows: list[dict[str, str]], count: int | None = None, header: str | None = None,
               eol: str = "\n") -> bytes:
    header = header if header is not None else "HS117REG1E0600006020250302SWIFT"
    trailer = f"T{(len(rows) if count is None else count):09d}"
    return (eol.join([header, *(fixed_record(r) for r in rows), trailer]) + eol).encode("utf-8")


def build(layout: Layout, rows: list[dict[str, str]]) -> bytes:
    return csv_file(rows) if layout is SWIFT_CSV else fixed_file(rows)


def one(layout: Layout, values: dict[str, str], raw_dates: bool = False):  # noqa: ANN201
    data = csv_file([values], convert_dates=False) if raw_dates and layout is SWIFT_CSV else build(layout, [values])
    mapping = map_file(data, layout)
    assert mapping.ok, mapping.problems
    (row,) = mapping.rows
    return row


def reasons(row) -> dict[str, str]:  # noqa: ANN001
    return {p.field: p.reason for p in row.problems}


BOTH = pytest.mark.parametrize("layout", [SWIFT_CSV, SWIFT_FIXED], ids=["csv", "fixed"])


# ------------------------------------------------------------------ events


EVENT_CASES = [
    ("ADDR_CHANGE", {"LA_GSS": "E10000034"}, "moved", {"residence_la_gss": "E10000034"}),
    ("ADDR_CHANGE", {"NFA": "Y"}, "moved", {"no_fixed_abode": True}),
    ("GP_CHANGE", {"GP_ODS": "K82001"}, "gp-changed", {"gp_practice_ods": "K82001"}),
    ("PLACEMENT", {}, "placement-started", {}),
    ("REVIEW_DONE", {}, "review-completed", {}),
    ("REVIEW_REQ", {"REVIEW_REASON": "plan not meeting needs"}, "review-requested",
     {"review_reason": "plan not meeting needs"}),
    ("REVIEW_REQ", {}, "review-requested", {}),
    ("END_CONSIDERED", {}, "discharge-considered", {}),
    ("S117_END", {"LA_AGREES": "Y", "NHS_AGREES": "n", "PERSON_INVOLVED": "Y", "END_REASONS": "NO_NEED;time_passed",
                  "PARTICIPANTS": "care coordinator; AMHP"}, "s117-discharge-decided",
     {"discharge": {"council_agrees": True, "commissioner_agrees": False, "person_involved": True,
                    "reasons": ["no-longer-needs-services", "time-passed"],
                    "participants": ["care coordinator", "AMHP"]}}),
    ("DISPUTE_RAISED", {"DISPUTE_ID": "OR-77", "DISPUTE_TYPE": "LA", "DISPUTE_PARTIES": "E06000060;E10000034"},
     "dispute-raised", {"dispute": {"dispute_id": "OR-77", "kind": "council", "parties": ["E06000060", "E10000034"]}}),
    ("DISPUTE_RESOLVED", {"DISPUTE_ID": "OR-78", "DISPUTE_TYPE": "NHS", "DISPUTE_PARTIES": "QU9;QGH",
                          "RESOLVED_RESPONSIBLE": "QU9"}, "dispute-resolved",
     {"dispute": {"dispute_id": "OR-78", "kind": "commissioner", "parties": ["QU9", "QGH"],
                  "resolved_responsible": "QU9"}}),
    ("DECEASED", {}, "died", {}),
    ("review_done", {}, "review-completed", {}),  # codes are case-insensitive
]


@BOTH
@pytest.mark.parametrize(("event", "extra", "change_type", "canonical"), EVENT_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(EVENT_CASES)])
def test_every_council_event_maps_to_its_change_type(layout, event, extra, change_type, canonical):
    row = one(layout, {**BASE, "EVENT": event, **extra})
    assert row.problems == ()
    data = row.data
    assert data["change_type"] == change_type
    assert data["source_message_id"] == "R-1"
    assert data["effective_date"] == "2025-03-01"
    assert data["person"] == {"nhs_number": NHS}
    for key, value in canonical.items():
        assert data[key] == value
    RegisterChangeIn.model_validate(data)  # the canonical contract takes it as is


def test_every_council_event_code_is_covered_and_only_council_change_types_are_reachable():
    assert {c[0] for c in EVENT_CASES} >= set(COUNCIL_EVENTS)
    assert COUNCIL_CHANGE_TYPES == {
        ChangeType.MOVED, ChangeType.GP_CHANGED, ChangeType.PLACEMENT_STARTED, ChangeType.REVIEW_COMPLETED,
        ChangeType.REVIEW_REQUESTED, ChangeType.DISCHARGE_CONSIDERED, ChangeType.S117_DISCHARGE_DECIDED,
        ChangeType.DISPUTE_RAISED, ChangeType.DISPUTE_RESOLVED, ChangeType.DIED}


def test_columns_an_event_does_not_use_are_ignored():
    # A SWIFT export fills every column it has: the GP on a review row is not a GP change.
    row = one(SWIFT_CSV, {**BASE, "EVENT": "REVIEW_DONE", "GP_ODS": "K82001", "LA_GSS": "E10000034",
                          "LA_AGREES": "maybe"})
    assert row.problems == ()
    assert "gp_practice_ods" not in row.data and "residence_la_gss" not in row.data and "discharge" not in row.data


REFUSED = ["DETAINED", "ADMISSION", "SECTION_CHANGE", "LEFT_HOSPITAL", "CTO_START", "CTO_RECALL", "S17_LEAVE_START",
           "S117_START", "detained", "LEFT-HOSPITAL".replace("-", "_"), "SECTION_ENDED_STAYED_INFORMALLY"]


@BOTH
@pytest.mark.parametrize("event", [e for e in REFUSED if len(e) <= 16])
def test_a_council_reporting_a_detention_or_other_trust_event_is_refused_with_the_reason(layout, event):
    row = one(layout, {**BASE, "EVENT": event, "LA_GSS": "E06000060", "GP_ODS": "K82001"})
    assert row.data is None
    why = reasons(row)["row 1, column EVENT"]
    assert "trust" in why
    assert event.lower() not in why.lower()  # the code is named by its column, never quoted


def test_every_trust_only_change_type_is_refused_not_unknown():
    trust_only = [ct for ct in ChangeType if ct not in COUNCIL_CHANGE_TYPES]
    assert trust_only
    for ct in trust_only:
        code = ct.value.upper().replace("-", "_")
        row = one(SWIFT_CSV, {**BASE, "EVENT": code})
        assert "detaining trust" in reasons(row)["row 1, column EVENT"], code
    assert "S117_START" in REFUSED_EVENTS and "entitlement" in REFUSED_EVENTS["S117_START"]


@BOTH
def test_an_unknown_event_code_names_the_codes_there_are(layout):
    row = one(layout, {**BASE, "EVENT": "TEA_BREAK"})
    why = reasons(row)["row 1, column EVENT"]
    assert "ADDR_CHANGE" in why and "TEA_BREAK" not in why


EVENT_REQUIREMENTS = [
    ("ADDR_CHANGE", {}, {"LA_GSS"}),
    ("ADDR_CHANGE", {"NFA": "Y", "LA_GSS": "E10000034"}, {"LA_GSS"}),
    ("GP_CHANGE", {}, {"GP_ODS"}),
    ("S117_END", {"LA_AGREES": "Y"}, {"NHS_AGREES", "PERSON_INVOLVED", "END_REASONS", "PARTICIPANTS"}),
    ("DISPUTE_RAISED", {"DISPUTE_ID": "X1", "DISPUTE_TYPE": "LA"}, {"DISPUTE_PARTIES"}),
    ("DISPUTE_RESOLVED", {"DISPUTE_ID": "X1", "DISPUTE_TYPE": "LA", "DISPUTE_PARTIES": "E06000060;E10000034"},
     {"RESOLVED_RESPONSIBLE"}),
]


@BOTH
@pytest.mark.parametrize(("event", "extra", "missing"), EVENT_REQUIREMENTS)
def test_what_each_event_needs_is_required(layout, event, extra, missing):
    row = one(layout, {**BASE, "EVENT": event, **extra})
    assert row.data is None
    assert {f.removeprefix("row 1, column ") for f in reasons(row)} == missing


BAD_VALUES = [
    ("NHS_NO", "9991100017", "fails the modulus-11 check digit"),
    ("NHS_NO", "99911000", "must be 10 digits"),
    ("LA_GSS", "X123", "is not a GSS code"),
    ("GP_ODS", "K8-001", "is not an ODS code"),
    ("POSTCODE", "NOT A PC", "is not a UK postcode"),
    ("LA_AGREES", "X", "must be Y or N"),
    ("END_REASONS", "NO_NEED;BORED", "entry 2 is not a reason code"),
    ("DISPUTE_TYPE", "ICB", "must be LA"),
    ("DISPUTE_PARTIES", "E06000060", "at least two parties"),
    ("RECORD_ID", "has space", "must be 1-100 letters"),
]


@pytest.mark.parametrize(("column", "value", "reason"), BAD_VALUES)
def test_bad_values_are_named_by_row_and_column_without_the_value(column, value, reason):
    event = {"LA_GSS": "ADDR_CHANGE", "GP_ODS": "GP_CHANGE", "LA_AGREES": "S117_END", "END_REASONS": "S117_END",
             "DISPUTE_TYPE": "DISPUTE_RAISED", "DISPUTE_PARTIES": "DISPUTE_RAISED"}.get(column, "REVIEW_DONE")
    full = {"S117_END": {"LA_AGREES": "Y", "NHS_AGREES": "Y", "PERSON_INVOLVED": "Y", "END_REASONS": "NO_NEED",
                         "PARTICIPANTS": "AMHP"},
            "DISPUTE_RAISED": {"DISPUTE_ID": "D1", "DISPUTE_TYPE": "LA", "DISPUTE_PARTIES": "E06000060;E10000034"},
            }.get(event, {})
    values = {**BASE, "EVENT": event, **full, column: value}
    mapping = map_file(csv_file([values]), SWIFT_CSV)
    (row,) = mapping.rows
    assert row.data is None
    why = reasons(row)[f"row 1, column {column}"]
    assert reason in why
    assert value not in why


# ------------------------------------------------------------------ dates


DATES = [
    (SWIFT_CSV, "01/02/2025", "2025-02-01"),
    (SWIFT_CSV, "2025-02-01", "2025-02-01"),
    (SWIFT_CSV, "29/02/2024", "2024-02-29"),
    (SWIFT_FIXED, "20250201", "2025-02-01"),
    (SWIFT_FIXED, "20240229", "2024-02-29"),
]
BAD_DATES = [
    (SWIFT_CSV, "31/02/2025"), (SWIFT_CSV, "29/02/2025"), (SWIFT_CSV, "2025-02-30"), (SWIFT_CSV, "01/02/25"),
    (SWIFT_CSV, "01.02.2025"), (SWIFT_CSV, "20250201"),
    (SWIFT_FIXED, "20250230"), (SWIFT_FIXED, "01022025"), (SWIFT_FIXED, "2025-2-1"),
]


@pytest.mark.parametrize(("layout", "text", "iso"), DATES)
def test_date_formats(layout, text, iso):
    for column, target in (("EFFECTIVE_DATE", "effective_date"), ("NOTIFIED_DATE", "notified_on")):
        row = one(layout, {**BASE, "EVENT": "DECEASED", column: text}, raw_dates=True)
        assert row.data[target] == iso
    row = one(layout, {**BASE, "EVENT": "DECEASED", "DOB": text}, raw_dates=True)
    assert row.data["person"]["birth_date"] == iso


@pytest.mark.parametrize(("layout", "text"), BAD_DATES)
def test_impossible_or_foreign_dates_are_refused(layout, text):
    row = one(layout, {**BASE, "EVENT": "DECEASED", "EFFECTIVE_DATE": text}, raw_dates=True)
    why = reasons(row)["row 1, column EFFECTIVE_DATE"]
    assert layout.date_format_label in why and text not in why


# ------------------------------------------------------------------ CSV


GOOD = {**BASE, "EVENT": "REVIEW_REQ", "SURNAME": "Testpatient", "FORENAME": "Alex",
        "REVIEW_REASON": 'plan not meeting needs, housing; "urgent"'}


@pytest.mark.parametrize("eol", ["\r\n", "\n"])
@pytest.mark.parametrize("bom", [True, False])
def test_csv_with_or_without_bom_crlf_or_lf_reads_the_same(eol, bom):
    mapping = map_file(csv_file([GOOD, {**GOOD, "RECORD_ID": "R-2"}], eol=eol, bom=bom), SWIFT_CSV)
    assert mapping.ok
    assert [r.data["review_reason"] for r in mapping.rows] == ['plan not meeting needs, housing; "urgent"'] * 2
    assert mapping.rows[0].data["person"] == {"nhs_number": NHS, "family_name": "Testpatient", "given_name": "Alex"}


def test_quoted_fields_keep_commas_quotes_and_line_breaks_and_the_original_bytes():
    data = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO,REVIEW_REASON\n"
            'R-1,REVIEW_REQ,01/03/2025,9991100016,"two\nlines, and a ""quote"""\n'
            "R-2,REVIEW_DONE,01/03/2025,9991100016,\n").encode()
    mapping = map_file(data, SWIFT_CSV)
    assert [r.data["review_reason"] if "review_reason" in r.data else None for r in mapping.rows] == [
        'two\nlines, and a "quote"', None]
    assert mapping.rows[0].original == b'R-1,REVIEW_REQ,01/03/2025,9991100016,"two\nlines, and a ""quote"""'
    assert mapping.rows[1].original == b"R-2,REVIEW_DONE,01/03/2025,9991100016,"
    assert [r.row for r in mapping.rows] == [1, 2]


def test_csv_columns_in_any_order_optional_ones_may_be_absent_names_are_case_insensitive():
    data = b"nhs_no , Event,EFFECTIVE_DATE,RECORD_ID\n9991100016,DECEASED,01/03/2025,R-9\n\n"
    (row,) = map_file(data, SWIFT_CSV).rows
    assert row.data["change_type"] == "died" and row.data["source_message_id"] == "R-9"


def test_csv_header_problems_reject_the_file_without_quoting_header_cells():
    data = b"RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NUMBER,EVENT,\n"
    mapping = map_file(data, SWIFT_CSV)
    assert not mapping.ok and mapping.rows == ()
    text = [p.reason for p in mapping.problems]
    assert text == ["header column 4 is not a column of the swift_csv layout",
                    "header column 5 repeats an earlier column",
                    "header column 6 is blank",
                    "the header has no NHS_NO column (required)"]


def test_a_csv_sent_without_its_header_row_never_echoes_the_first_record():
    data = b"R-1,REVIEW_DONE,01/03/2025,9991100016,Testpatient,Alex\n"
    mapping = map_file(data, SWIFT_CSV)
    assert not mapping.ok
    blob = " ".join(p.reason for p in mapping.problems)
    for value in ("9991100016", "Testpatient", "Alex", "01/03/2025"):
        assert value not in blob


def test_csv_row_with_wrong_field_count_or_bad_quoting_is_that_rows_problem_only():
    data = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO\n"
            "R-1,DECEASED,01/03/2025,9991100016,extra\n"
            'R-2,DECEASED,"01/03/2025"x,9991100016\n'
            "R-3,DECEASED,01/03/2025,9991100016\n").encode()
    rows = map_file(data, SWIFT_CSV).rows
    assert reasons(rows[0]) == {"row 1": "has 5 fields; the header has 4"}
    assert "not valid CSV" in reasons(rows[1])["row 2"]
    assert rows[2].ok


def test_an_unclosed_quote_rejects_the_file():
    data = b'RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO\nR-1,DECEASED,"01/03/2025,9991100016\n'
    mapping = map_file(data, SWIFT_CSV)
    assert [p.code for p in mapping.problems] == ["quoting"]


def test_a_header_only_csv_is_a_file_with_no_rows():
    mapping = map_file(b"RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO\r\n", SWIFT_CSV)
    assert mapping.ok and mapping.rows == ()


# ------------------------------------------------------------------ fixed width


def test_fixed_width_layout_is_contiguous_and_documented_offsets_hold():
    cols = SWIFT_FIXED.columns
    assert cols[0].start == 1
    for a, b in zip(cols, cols[1:]):
        assert b.start == a.end + 1, (a.name, b.name)
    assert SWIFT_FIXED.record_length == 606
    offsets = {c.name: (c.start, c.width) for c in cols}
    assert offsets["RECORD_ID"] == (2, 20)
    assert offsets["EVENT"] == (22, 16)
    assert offsets["EFFECTIVE_DATE"] == (38, 8)
    assert offsets["NHS_NO"] == (54, 10)
    assert offsets["LA_GSS"] == (150, 9)
    assert offsets["RESOLVED_RESPONSIBLE"] == (452, 9)
    assert offsets["PACKAGE_ID"] == (461, 20)  # package columns appended: a 460-character export stays valid
    assert offsets["END_DATE"] == (590, 8)
    # The successor of a split council (H-03) appended after them: a 597-character export stays valid.
    assert offsets["PRE_DETENTION_LA_GSS"] == (598, 9)
    assert [c.name for c in SWIFT_CSV.columns] == [c.name for c in cols[1:]]


def test_fixed_width_values_are_read_from_their_offsets():
    line = fixed_record({**BASE, "EVENT": "ADDR_CHANGE", "LA_GSS": "E10000034"})
    assert line[53:63] == NHS and line[149:158] == "E10000034"
    (row,) = map_file(fixed_file([{**BASE, "EVENT": "ADDR_CHANGE", "LA_GSS": "E10000034"}]), SWIFT_FIXED).rows
    assert row.data["residence_la_gss"] == "E10000034"
    assert row.original == line.encode()  # the record exactly as sent, for quarantine
    # A record shifted by one character is misread, and says so, rather than mapped wrongly.
    shifted = fixed_file([]).replace(b"T000000000", ("D " + line[1:-1] + "\nT000000001").encode())
    (row,) = map_file(shifted, SWIFT_FIXED).rows
    assert row.data is None and any("EFFECTIVE_DATE" in f or "NHS_NO" in f for f in reasons(row))


def test_fixed_width_trailing_spaces_may_be_trimmed_but_a_longer_record_is_refused():
    rec = fixed_record({**BASE, "EVENT": "DECEASED"})
    data = f"HS117REG1E0600006020250302\r\nD{rec[1:].rstrip()}\r\n{rec}XX\r\nT000000002\r\n".encode()
    rows = map_file(data, SWIFT_FIXED).rows
    assert rows[0].ok
    assert reasons(rows[1]) == {"row 2": "is 608 characters long; a data record has 606"}


@pytest.mark.parametrize(("count", "reason"), [
    (5, "trailer record: RECORD_COUNT says 5 data records; the file has 2"),
    (1, "trailer record: RECORD_COUNT says 1 data records; the file has 2"),
])
def test_trailer_count_must_match(count, reason):
    rows = [{**BASE, "EVENT": "DECEASED"}, {**BASE, "RECORD_ID": "R-2", "EVENT": "DECEASED"}]
    mapping = map_file(fixed_file(rows, count=count), SWIFT_FIXED)
    assert mapping.rows == ()
    assert [p.reason.split(":")[0] + ":" + p.reason.split(":")[1] for p in mapping.problems] == [reason]


FIXED_FILE_PROBLEMS = [
    (b"DR-1\nT000000001\n", "header", "the first record is not a header record (H)"),
    (b"HS117REG1E0600006020250302\n" + fixed_record({**BASE, "EVENT": "DECEASED"}).encode() + b"\n", "trailer",
     "the last record is not a trailer record (T): the file may be truncated"),
    (b"HS117REG9E0600006020250302\nT000000000\n", "header", "header record: FILE_TYPE is not S117REG1"),
    (b"HS117REG1E06X0006020250302\nT000000000\n", "header", "header record: COUNCIL_GSS (columns 10-18) is not a GSS"),
    (b"HS117REG1E0600006020251302\nT000000000\n", "header", "header record: CREATED (columns 19-26) is not a date"),
    (b"HS117REG1E0600006020250302\nT0000000X0\n", "trailer", "trailer record: RECORD_COUNT (columns 2-10) is not"),
]


@pytest.mark.parametrize(("data", "code", "reason"), FIXED_FILE_PROBLEMS)
def test_fixed_width_header_and_trailer_problems_reject_the_file(data, code, reason):
    mapping = map_file(data, SWIFT_FIXED)
    assert mapping.rows == ()
    assert mapping.problems[0].code == code and mapping.problems[0].reason.startswith(reason)


def test_fixed_width_header_names_the_sender_and_an_empty_night_is_fine():
    mapping = map_file(b"HS117REG1E1000003420250302MOSAIC\nT000000000\n", SWIFT_FIXED)
    assert mapping.ok and mapping.rows == () and mapping.sender == "E10000034"
    assert mapping.header["CREATED"] == "2025-03-02" and mapping.header["SYSTEM"] == "MOSAIC"


def test_fixed_width_record_of_another_type_is_that_rows_problem():
    data = fixed_file([{**BASE, "EVENT": "DECEASED"}]).replace(b"\nDR-1", b"\nXR-1")
    (row,) = map_file(data, SWIFT_FIXED).rows
    assert reasons(row) == {"row 1, column REC_TYPE": "is not a data record (D)"}


# ------------------------------------------------------------------ whole files


FILE_PROBLEMS = [
    (b"", "empty"),
    (b"\xef\xbb\xbf", "empty"),
    (b"\r\n\r\n  \n", "empty"),
    ("RECORD_ID,EVENT\n".encode("utf-16"), "encoding"),
    ("RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO\nR-1,DECEASED,01/03/2025,9991100016,Lefèvre\n".encode("latin-1"),
     "encoding"),
    (b"RECORD_ID,EVENT\x00\n", "encoding"),
]


@BOTH
@pytest.mark.parametrize(("data", "code"), FILE_PROBLEMS)
def test_empty_or_not_utf8_files_are_rejected_whole(layout, data, code):
    mapping = map_file(data, layout)
    assert [p.code for p in mapping.problems] == [code] and mapping.rows == ()


def test_not_utf8_names_the_line_but_not_the_bytes():
    data = "RECORD_ID,EVENT\nR-1,DECEASED\nR-2,Lefèvre\n".encode("cp1252")
    (problem,) = map_file(data, SWIFT_CSV).problems
    assert "line 3" in problem.reason and "Lef" not in problem.reason


@BOTH
def test_a_record_id_used_twice_in_one_file_is_refused_the_second_time(layout):
    rows = map_file(build(layout, [{**BASE, "EVENT": "DECEASED"}, {**BASE, "EVENT": "REVIEW_DONE"}]), layout).rows
    assert rows[0].ok
    assert reasons(rows[1]) == {"row 2, column RECORD_ID": "repeats the RECORD_ID of row 1: each record needs its "
                                                           "own id"}


@BOTH
def test_rows_are_independent_and_problems_never_contain_values(layout):
    # Every column holds a distinctive wrong value; none may appear in any problem.
    csv = layout is SWIFT_CSV
    poison = {"RECORD_ID": "bad id!", "EVENT": "S117_END", "EFFECTIVE_DATE": "13/13/2025" if csv else "20251313",
              "NOTIFIED_DATE": "99999999",
              "NHS_NO": "9991100017", "SURNAME": "S" * 101 if csv else "Zzyzx",
              "FORENAME": "Quimby", "DOB": "40/01/1970" if csv else "19704001", "POSTCODE": "QQ QQQ", "LA_GSS": "E0600", "NFA": "Q",
              "GP_ODS": "K8!", "LA_AGREES": "P", "NHS_AGREES": "Q", "PERSON_INVOLVED": "R",
              "END_REASONS": "FELT_LIKE_IT", "PARTICIPANTS": "Ms Person", "DISPUTE_ID": "D-secret"}
    rows = map_file(build(layout, [{**BASE, "EVENT": "DECEASED"}, poison, {**BASE, "RECORD_ID": "R-3",
                                                                           "EVENT": "PLACEMENT"}]), layout).rows
    assert [r.ok for r in rows] == [True, False, True]
    bad = rows[1]
    blob = " ".join(p.field + " " + p.reason for p in bad.problems)
    for column, value in poison.items():
        if len(value) > 2:
            assert value not in blob, column
    assert {"row 2, column RECORD_ID", "row 2, column EFFECTIVE_DATE", "row 2, column NHS_NO",
            "row 2, column LA_AGREES", "row 2, column END_REASONS"} <= set(reasons(bad))
    assert bad.record_id is None and bad.original  # kept for quarantine


def test_sample_exports_map_as_documented():
    csv_map = map_file((FIXTURES / "bucks_nightly.csv").read_bytes(), LAYOUTS["swift_csv"])
    assert [(r.record_id, r.ok) for r in csv_map.rows] == [
        ("SW-1001", True), ("SW-1002", True), ("SW-1003", True), ("SW-1004", False), ("SW-1005", False),
        ("SW-1006", False), ("SW-1007", True), ("SW-1008", True)]
    fixed_map = map_file((FIXTURES / "bucks_nightly.txt").read_bytes(), LAYOUTS["swift_fixed"])
    assert fixed_map.sender == "E06000060"
    assert [(r.record_id, r.ok) for r in fixed_map.rows] == [
        ("MOS-2001", True), ("MOS-2002", True), ("MOS-2003", True), ("MOS-2004", False), ("MOS-2005", False),
        ("MOS-2006", True), ("MOS-2007", True)]


@pytest.mark.parametrize(("field", "column"), [
    ("person.nhs_number", "NHS_NO"), ("person.birth_date", "DOB"), ("residence_la_gss", "LA_GSS"),
    ("effective_date", "EFFECTIVE_DATE"), ("notified_on", "NOTIFIED_DATE"), ("discharge.reasons.0", "END_REASONS"),
    ("dispute.resolved_responsible", "RESOLVED_RESPONSIBLE"), ("hospital_ods", None),
])
def test_canonical_fields_are_named_in_the_files_own_columns(field, column):
    assert column_for(SWIFT_CSV, field) == column


def test_the_published_readme_matches_the_declared_layout():
    readme = (Path(__file__).resolve().parents[3] / "adapters" / "council_files" / "README.md").read_text()
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| (\d+)-(\d+) \|", readme, flags=re.M)
    assert [(name, int(a), int(b)) for name, a, b in rows] == [(c.name, c.start, c.end) for c in SWIFT_FIXED.columns]
    for code, spec in COUNCIL_EVENTS.items():
        assert f"| `{code}` | `{spec.change_type.value}` |" in readme
    for code in PACKAGE_EVENTS:
        assert f"| `{code}` |" in readme


# ------------------------------------------------------------------ package records

PKG = {**BASE, "EVENT": "PKG_START", "PACKAGE_ID": "PK-77", "SERVICE_TYPE": "supported accommodation",
       "PROVIDER_TYPE": "LA", "PROVIDER": "BCC-PRV-00123", "NEED": "SC", "WEEKLY_COST": "1250.50",
       "COHORT": "LD", "SURNAME": "Example"}


@BOTH
def test_package_start_maps_to_the_package_contract_without_personal_details(layout):
    row = one(layout, PKG)
    assert row.ok, row.problems
    assert row.data == {"record": "package", "action": "start", "source_message_id": "R-1",
                        "effective_date": "2025-03-01", "person": {"nhs_number": NHS}, "package_id": "PK-77",
                        "service_type": "supported accommodation", "provider": {"kind": "council",
                                                                               "code": "BCC-PRV-00123"},
                        "need": "social-care", "weekly_cost_pence": 125_050, "cohort": "learning-disability"}


@BOTH
@pytest.mark.parametrize(("values", "column", "reason"), [
    ({"WEEKLY_COST": "£12"}, "WEEKLY_COST", "is not an amount in pounds"),
    ({"WEEKLY_COST": "12.345"}, "WEEKLY_COST", "is not an amount in pounds"),
    ({"NEED": "X"}, "NEED", "must be H (health), SC (social care) or J (joint)"),
    ({"EXCLUSION": "RENT"}, "EXCLUSION", "must be blank or one of: FNC, UNIVERSAL, TOPUP"),
    ({"PROVIDER": ""}, "PROVIDER", "is required for PKG_START"),
    ({"PACKAGE_ID": ""}, "PACKAGE_ID", "is required for PKG_START"),
])
def test_package_record_problems_are_named_by_column(layout, values, column, reason):
    row = one(layout, {**PKG, **values})
    assert not row.ok
    assert reasons(row)[f"row 1, column {column}"].startswith(reason)


@BOTH
def test_package_change_and_end_need_only_the_line(layout):
    change = one(layout, {**BASE, "EVENT": "PKG_CHANGE", "PACKAGE_ID": "PK-77", "UNIT_COST": "25.50",
                          "UNITS_PER_WEEK": "12.5", "EXCLUSION": "TOPUP"})
    assert change.data["unit_cost_pence"] == 2_550 and change.data["units_per_week"] == "12.5"
    assert change.data["exclusion"] == "top-up" and change.data["action"] == "change"
    end = one(layout, {**BASE, "EVENT": "PKG_END", "PACKAGE_ID": "PK-77", "WEEKLY_COST": "5"})
    assert end.data == {"record": "package", "action": "end", "source_message_id": "R-1",
                        "effective_date": "2025-03-01", "person": {"nhs_number": NHS}, "package_id": "PK-77"}


@given(st.text(alphabet=['a', '1', ',', ' ', '"', '\r', '/', 'é', '\t'], max_size=30))
def test_a_records_fields_are_what_the_csv_reader_reads(record):
    """mapping._fields splits a record without quotes or CR itself: the same fields, or the same refusal."""
    try:
        expected = next(csv.reader([record], strict=True), [])
    except csv.Error:
        with pytest.raises(csv.Error):
            mapping._fields(record)
        return
    if record:
        assert mapping._fields(record) == expected
