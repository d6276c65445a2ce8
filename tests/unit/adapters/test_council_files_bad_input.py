"""Council files: bad input from an outside review. Dates exactly as the
published layouts write them, NHS numbers separated by spaces only, a bad
RECORD_ID named once, and a second header record named as such."""

from __future__ import annotations

import pytest

from adapters.council_files import SWIFT_CSV, SWIFT_FIXED, map_file
from tests.unit.adapters.test_council_files import BASE, BOTH, csv_file, fixed_file, fixed_record, one, reasons

SHORT_DATES = [
    (SWIFT_FIXED, "2025071"), (SWIFT_FIXED, "2025111"), (SWIFT_FIXED, "202571"), (SWIFT_FIXED, "2025701"),
    (SWIFT_FIXED, " 2025071"), (SWIFT_FIXED, "2025-7-1"),
    (SWIFT_CSV, "1/7/2025"), (SWIFT_CSV, "01/7/2025"), (SWIFT_CSV, "1/07/2025"), (SWIFT_CSV, "2025-7-1"),
    (SWIFT_CSV, "2025-07-1"), (SWIFT_CSV, "2025-7-01"), (SWIFT_CSV, "01/07/25"), (SWIFT_CSV, "+2025-07-01"),
]


@pytest.mark.parametrize(("layout", "text"), SHORT_DATES)
@pytest.mark.parametrize("column", ["EFFECTIVE_DATE", "NOTIFIED_DATE", "DOB"])
def test_dates_not_zero_padded_to_full_length_are_a_row_error_naming_the_column(layout, text, column):
    row = one(layout, {**BASE, "EVENT": "DECEASED", column: text}, raw_dates=True)
    assert row.data is None
    why = reasons(row)[f"row 1, column {column}"]
    assert layout.date_format_label in why and text.strip() not in why


def test_the_fixed_width_header_date_must_be_full_length_too():
    mapping = map_file(b"HS117REG1E060000602025032 \nT000000000\n", SWIFT_FIXED)
    assert mapping.rows == () and mapping.problems[0].reason.startswith(
        "header record: CREATED (columns 19-26) is not a date")


@pytest.mark.parametrize(("layout", "text", "iso"), [
    (SWIFT_FIXED, "20250701", "2025-07-01"), (SWIFT_CSV, "01/07/2025", "2025-07-01"),
    (SWIFT_CSV, "2025-07-01", "2025-07-01"), (SWIFT_CSV, "31/12/2025", "2025-12-31"),
])
def test_published_date_forms_still_read(layout, text, iso):
    row = one(layout, {**BASE, "EVENT": "DECEASED", "EFFECTIVE_DATE": text}, raw_dates=True)
    assert row.ok and row.data["effective_date"] == iso


@pytest.mark.parametrize("nhs", ["999-110-0016", "999-1100016", "9991100-016", "999 110-0016"])
def test_an_nhs_number_with_hyphens_is_refused_naming_the_column(nhs):  # CSV: the fixed column is 10 wide
    row = one(SWIFT_CSV, {**BASE, "EVENT": "DECEASED", "NHS_NO": nhs})
    assert row.data is None
    why = reasons(row)["row 1, column NHS_NO"]
    assert nhs not in why and "9991100016" not in why


def test_an_nhs_number_with_spaces_is_still_taken_in_csv():
    row = one(SWIFT_CSV, {**BASE, "EVENT": "DECEASED", "NHS_NO": "999 110 0016"})
    assert row.ok and row.data["person"]["nhs_number"] == "9991100016"


@BOTH
@pytest.mark.parametrize("event", ["DECEASED", "PKG_END", "NO_SUCH_EVENT"])
def test_a_bad_record_id_is_listed_once(layout, event):
    values = {**BASE, "EVENT": event, "RECORD_ID": "-bad", "PACKAGE_ID": "P-1"}
    (row,) = map_file(csv_file([values]) if layout is SWIFT_CSV else fixed_file([values]), layout).rows
    assert [p.field for p in row.problems].count("row 1, column RECORD_ID") == 1, row.problems


@BOTH
def test_a_blank_record_id_is_listed_once_as_required(layout):
    values = {**BASE, "EVENT": "DECEASED", "RECORD_ID": ""}
    (row,) = map_file(csv_file([values]) if layout is SWIFT_CSV else fixed_file([values]), layout).rows
    assert [(p.field, p.reason) for p in row.problems] == [("row 1, column RECORD_ID", "is required")]


def test_a_second_header_record_is_named_as_such_at_its_row():
    first = fixed_record({**BASE, "EVENT": "DECEASED"})
    second = fixed_record({**BASE, "RECORD_ID": "R-2", "EVENT": "DECEASED"})
    header = "HS117REG1E0600006020250302SWIFT"
    data = "\n".join([header, first, header, second, "T000000002", ""]).encode()
    mapping = map_file(data, SWIFT_FIXED)
    assert mapping.rows == ()
    (problem,) = mapping.problems
    assert problem.code == "header" and problem.reason.startswith("row 2 is a second header record (H)")
    assert "RECORD_COUNT" not in problem.reason
