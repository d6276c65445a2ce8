"""Council files as real case-system exports arrive (review 30): CR-only line ends, a compressed or
spreadsheet upload, a stray CR, a tab in a fixed-width record, no header or another separator, an
optional `TRAILER,<count>` row, and rows that cannot be read column by column still saying whom they
are about, so the access policy is asked before anything of them is kept. Pure: the mapping alone."""

from __future__ import annotations

import gzip
import io
import zipfile

import pytest

from adapters.council_files import SWIFT_CSV, SWIFT_FIXED
from adapters.council_files.mapping import map_file

HDR = "RECORD_ID,EVENT,EFFECTIVE_DATE,NOTIFIED_DATE,NHS_NO,SURNAME,FORENAME,DOB,POSTCODE,LA_GSS,NFA,GP_ODS,REVIEW_REASON"
NHS = "9991100016"


def row(rid: str, nhs: str = NHS, reason: str = "", event: str = "REVIEW_REQ") -> str:
    return f"{rid},{event},01/07/2025,,{nhs},Testpatient,Alex,14/03/1971,HP20 1AA,,,,{reason}"


def csv_file(*rows: str, sep: str = "\n") -> bytes:
    return (sep.join([HDR, *rows]) + sep).encode()


def fixed_record(rid: str, nhs: str = NHS) -> str:
    return ("D" + rid.ljust(20) + "REVIEW_DONE".ljust(16) + "20250701" + " " * 8 + nhs).ljust(460)


def fixed_file(*records: str, sep: str = "\n", count: int | None = None) -> bytes:
    head = "H" + "S117REG1" + "E06000060" + "20250702" + "SWIFT".ljust(20)
    trailer = "T%09d" % (len(records) if count is None else count)
    return (sep.join([head, *records, trailer]) + sep).encode()


def file_reasons(data: bytes, layout=SWIFT_CSV) -> list[str]:  # noqa: ANN001
    return [p.reason for p in map_file(data, layout).problems]


# ----------------------------------------------------------------- line ends


def test_a_csv_file_whose_lines_end_in_cr_alone_is_read_line_by_line():
    """Excel for Mac's and older exports' line ends: before, one line, refused as "the header row is not
    valid CSV"."""
    m = map_file(csv_file(row("SW-1"), row("SW-2", reason='"two\rlines, quoted"'), sep="\r"), SWIFT_CSV)
    assert m.ok, m.problems
    assert [(r.row, r.record_id, r.ok) for r in m.rows] == [(1, "SW-1", True), (2, "SW-2", True)]
    assert m.rows[1].data["review_reason"] == "two\nlines, quoted"


def test_a_fixed_width_file_whose_lines_end_in_cr_alone_is_read_record_by_record():
    """Before: one line, refused as "the last record is not a trailer record (T): the file may be truncated"."""
    m = map_file(fixed_file(fixed_record("FX-1"), fixed_record("FX-2"), sep="\r"), SWIFT_FIXED)
    assert m.ok, m.problems
    assert [(r.record_id, r.ok) for r in m.rows] == [("FX-1", True), ("FX-2", True)]


def test_a_stray_cr_inside_an_unquoted_field_is_named_as_such():
    """In a file with LF line ends a CR in a field stays a row error, now saying what it is (it used to
    blame a quote)."""
    m = map_file(csv_file(row("SW-1", reason="a\rb"), row("SW-2")), SWIFT_CSV)
    assert [r.ok for r in m.rows] == [False, True]
    [problem] = m.rows[0].problems
    assert problem.field == "row 1"
    assert "carriage return (CR) inside an unquoted field" in problem.reason


# ----------------------------------------------------------------- not the export itself


def _zip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("export.csv", data)
    return buf.getvalue()


@pytest.mark.parametrize(("pack", "named"), [
    (gzip.compress, "gzip-compressed"),
    (_zip, "ZIP archive (or an Excel .xlsx workbook)"),
    (lambda d: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + d, "Excel .xls workbook"),
])
@pytest.mark.parametrize("layout", [SWIFT_CSV, SWIFT_FIXED])
def test_a_compressed_or_spreadsheet_upload_is_refused_naming_what_it_is(pack, named, layout):  # noqa: ANN001
    """Before: "the file is not UTF-8 text (first invalid byte on line 1)"."""
    [reason] = file_reasons(pack(csv_file(row("SW-1"))), layout)
    assert named in reason


# ----------------------------------------------------------------- header


def test_a_file_without_its_header_row_is_one_problem_quoting_nothing():
    """Before: a problem for every cell of the person's row taken as column names, and every required column."""
    reasons = file_reasons((row("SW-1") + "\n").encode())
    assert reasons == ["the first row names none of the layout's columns: the file has no header row, or names its "
                       "columns otherwise (the header names the layout's columns, e.g. RECORD_ID, EVENT, NHS_NO)"]
    assert not any(v in r for r in reasons for v in (NHS, "Testpatient", "HP20"))


@pytest.mark.parametrize("sep", ["\t", ";"])
def test_a_tab_or_semicolon_separated_file_is_named_as_such(sep):  # noqa: ANN001
    reasons = file_reasons(csv_file(row("SW-1")).replace(b",", sep.encode()))
    assert reasons == ["the header row has no commas: the layout is comma-separated (the file looks tab- or "
                       "semicolon-separated)"]


# ----------------------------------------------------------------- trailer


def test_a_csv_trailer_with_the_right_count_is_checked_and_not_a_row():
    """Before: the trailer was a data row, rejected ("has 2 fields") and quarantined."""
    m = map_file(csv_file(row("SW-1"), row("SW-2"), "TRAILER,2"), SWIFT_CSV)
    assert m.ok, m.problems
    assert [(r.record_id, r.ok) for r in m.rows] == [("SW-1", True), ("SW-2", True)]
    # padded to the header's width, any case, quoted: still the trailer
    padded = map_file(csv_file(row("SW-1"), '"trailer",1' + "," * 11), SWIFT_CSV)
    assert padded.ok and [r.record_id for r in padded.rows] == ["SW-1"]


def test_a_csv_trailer_with_a_wrong_count_refuses_the_file():
    """A file cut short whose trailer says more rows: before, its first part was recorded as the night's
    export (the trailer quarantined as a bad row)."""
    assert file_reasons(csv_file(row("SW-1"), row("SW-2"), "TRAILER,5")) == [
        "trailer row: TRAILER says 5 data rows; the file has 2: the file may be truncated or padded"]
    assert file_reasons(csv_file(row("SW-1"), "TRAILER,two")) == [
        "row 2 (the trailer, TRAILER,<count>): the count is not a number"]


def test_rows_after_a_csv_trailer_refuse_the_file():
    assert file_reasons(csv_file(row("SW-1"), "TRAILER,1", row("SW-2"))) == [
        "row 2 is a trailer row (TRAILER,<count>) but rows follow it: the trailer is the last row of a file "
        "(two files joined?)"]


def test_a_data_row_whose_record_id_is_trailer_is_a_data_row():
    m = map_file(csv_file(row("SW-1"), row("TRAILER")), SWIFT_CSV)
    assert m.ok and [r.record_id for r in m.rows] == ["SW-1", "TRAILER"]


def test_a_file_without_a_trailer_is_read_as_before():
    m = map_file(csv_file(row("SW-1")), SWIFT_CSV)
    assert m.ok and [r.record_id for r in m.rows] == ["SW-1"]


# ----------------------------------------------------------------- fixed width


def test_a_tab_in_a_fixed_width_record_is_named_before_the_columns_it_shifts():
    record = fixed_record("FX-1").replace(" " * 8, "\t", 1)
    [r] = map_file(fixed_file(record), SWIFT_FIXED).rows
    assert not r.ok
    assert r.problems[0].field == "row 1" and "tab character" in r.problems[0].reason
    assert len(r.problems) > 1  # the columns it put out of place are still named


def test_a_tab_inside_a_text_column_of_a_good_record_changes_nothing():
    record = fixed_record("FX-1")
    record = record[:165] + "a\tb" + record[168:]  # REVIEW_REASON (166-225): not read for REVIEW_DONE
    [r] = map_file(fixed_file(record), SWIFT_FIXED).rows
    assert r.ok, r.problems


# ----------------------------------------------------------------- whom an unreadable row is about


def test_a_csv_row_with_the_wrong_number_of_fields_still_says_whom_it_is_about():
    """So the access policy is asked before it is quarantined: before, `about` was None and a row about
    someone the council has no role for was kept in quarantine."""
    [r] = map_file(csv_file(row("SW-1") + ",extra"), SWIFT_CSV).rows
    assert not r.ok and r.problems[0].reason == "has 14 fields; the header has 13"
    assert r.about == {"person": {"nhs_number": NHS}}
    [short] = map_file(csv_file("SW-2,REVIEW_DONE"), SWIFT_CSV).rows
    assert short.about is None  # no NHS_NO field to read


def test_a_csv_row_with_a_stray_cr_still_says_whom_it_is_about():
    [r] = map_file(csv_file(row("SW-1", reason="a\rb")), SWIFT_CSV).rows
    assert r.about == {"person": {"nhs_number": NHS}}


def test_a_too_long_fixed_width_record_still_says_whom_it_is_about():
    [r] = map_file(fixed_file(fixed_record("FX-1").ljust(SWIFT_FIXED.record_length) + "X"), SWIFT_FIXED).rows
    assert not r.ok and f"{SWIFT_FIXED.record_length + 1} characters long" in r.problems[0].reason
    assert r.about == {"person": {"nhs_number": NHS}}
    [bad] = map_file(fixed_file(fixed_record("FX-2", nhs="9991100017").ljust(SWIFT_FIXED.record_length + 1)), SWIFT_FIXED).rows
    assert bad.about is None  # not a valid NHS number: no one to ask about


# ----------------------------------------------------------------- the same record twice


@pytest.mark.parametrize("layout", [SWIFT_CSV, SWIFT_FIXED])
def test_the_same_record_twice_in_a_file_maps_twice_for_ingest_to_answer_as_a_duplicate(layout):  # noqa: ANN001
    """Before: the copy was rejected ("repeats the RECORD_ID of row 1") and quarantined, though its record
    was accepted: sent again in a later file it is a duplicate, so in the same file too."""
    data = csv_file(row("SW-1"), row("SW-2"), row("SW-1") + "  ") if layout is SWIFT_CSV else \
        fixed_file(fixed_record("FX-1"), fixed_record("FX-2"), fixed_record("FX-1"))
    m = map_file(data, layout)
    assert [(r.row, r.ok) for r in m.rows] == [(1, True), (2, True), (3, True)]
    assert m.rows[2].data == m.rows[0].data


def test_a_reused_record_id_on_another_record_is_still_refused_naming_the_first_row():
    m = map_file(csv_file(row("SW-1"), row("SW-1", reason="changed")), SWIFT_CSV)
    assert [r.ok for r in m.rows] == [True, False]
    assert [(p.field, p.reason) for p in m.rows[1].problems] == [
        ("row 2, column RECORD_ID", "repeats the RECORD_ID of row 1: each record needs its own id")]


def test_the_same_bad_record_twice_keeps_its_problems_and_names_the_repeat():
    bad = row("SW-1").replace("01/07/2025", "31/02/2025")
    m = map_file(csv_file(bad, bad), SWIFT_CSV)
    assert [p.reason for p in m.rows[1].problems][0] == "repeats the RECORD_ID of row 1: each record needs its own id"
    assert len(m.rows[1].problems) == 2
