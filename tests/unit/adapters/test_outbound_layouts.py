"""Outbound council file layouts: every column present whatever the agreement
(withheld groups give empty cells), CSV and fixed width read back with their
trailer count and SHA-256 checked, event codes, and the published page kept
true to the data."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from adapters.council_files.outbound import (
    COLUMNS,
    OUT_LAYOUTS,
    ExportFileError,
    ExportWriter,
    event_code,
    published_layout_markdown,
    read_export,
    row_values,
)

ROW = {"EVENT_ID": "6f1c0f8e-0000-5000-8000-000000000001", "EVENT_NO": 7, "EVENT_CODE": "S117_START",
       "EFFECTIVE_DATE": date(2025, 4, 7), "LOCAL_ID": "SW-1001", "NHS_NO": "9991100016", "S117_FLAG": True,
       "RESP_LA_GSS": "E06000060", "RESP_ICB_ODS": "QU9", "S117_START": date(2025, 4, 7), "S117_END": None,
       "NEXT_REVIEW": date(2025, 7, 7), "REVIEW_KIND": "first", "OPEN_DISPUTE": False, "LEGAL_STATUS": "03",
       "CITATION": "Worcs 4.3.1",
       # both bodies owed and undetermined: the longest value, exactly the fixed-width column's 65 characters
       "RESP_UNDETERMINED": "responsible-council=temp-unknown;responsible-commissioner=unknown"}
ALL = frozenset({"identity", "responsibility", "legal-status", "explanations"})

AGREEMENTS = [
    # (granted groups, columns that must be empty)
    (ALL, set()),
    (frozenset({"identity", "responsibility"}), {"LEGAL_STATUS", "CITATION"}),
    (frozenset({"responsibility"}), {"NHS_NO", "LEGAL_STATUS", "CITATION"}),
    (frozenset(), {"NHS_NO", "RESP_LA_GSS", "RESP_ICB_ODS", "OPEN_DISPUTE", "LEGAL_STATUS", "CITATION",
                   "RESP_UNDETERMINED"}),
]


@pytest.mark.parametrize("layout", sorted(OUT_LAYOUTS))
@pytest.mark.parametrize(("groups", "withheld"), AGREEMENTS, ids=["all", "id+resp", "resp", "none"])
def test_withheld_groups_give_empty_columns_never_fewer(layout: str, groups, withheld) -> None:  # noqa: ANN001
    lay = OUT_LAYOUTS[layout]
    w = ExportWriter(lay, "E06000060", datetime(2026, 11, 30, 2, 0, tzinfo=UTC), "delta")
    data = w.header() + w.row(row_values(ROW, groups, lay))
    tail, digest = w.trailer()
    [back] = read_export(data + tail, lay)
    assert list(back) == [c.name for c in COLUMNS]  # the same shape for every agreement
    assert {k for k, v in back.items() if v == ""} == withheld | {"S117_END"}
    if "NHS_NO" not in withheld:
        assert back["NHS_NO"] == "9991100016"
    if "RESP_UNDETERMINED" not in withheld:  # whole, in either layout
        assert back["RESP_UNDETERMINED"] == ROW["RESP_UNDETERMINED"]
    assert back["S117_START"] == ("07/04/2025" if lay.kind == "csv" else "20250407")
    assert (back["S117_FLAG"], back["OPEN_DISPUTE"] or "N") == ("Y", "N")
    assert len(digest) == 64


@pytest.mark.parametrize("layout", sorted(OUT_LAYOUTS))
def test_a_changed_or_cut_file_is_refused(layout: str) -> None:
    lay = OUT_LAYOUTS[layout]
    w = ExportWriter(lay, "E06000060", datetime(2026, 11, 30, tzinfo=UTC), "full")
    data = w.header() + w.row(row_values(ROW, ALL, lay)) + w.row(row_values(ROW, ALL, lay))
    tail, _ = w.trailer()
    good = data + tail
    assert len(read_export(good, lay)) == 2
    with pytest.raises(ExportFileError, match="SHA256"):
        read_export(good.replace(b"E06000060", b"E06000061", 2), lay)
    lines = good.split(b"\r\n")
    cut = b"\r\n".join(lines[:2] + lines[3:])  # a record lost in transfer: count and checksum both catch it
    with pytest.raises(ExportFileError):
        read_export(cut, lay)


def test_fixed_width_records_have_one_length() -> None:
    lay = OUT_LAYOUTS["swift_fixed"]
    w = ExportWriter(lay, "E06000060", datetime(2026, 11, 30, tzinfo=UTC), "delta")
    data = w.header() + w.row(row_values(ROW, ALL, lay))
    tail, _ = w.trailer()
    lengths = {len(line) for line in (data + tail).split(b"\r\n") if line}
    assert lengths == {lay.record_length}


@pytest.mark.parametrize(("event_type", "change_type", "code"), [
    ("s117-register-change-recorded", "moved", "ADDR_CHANGE"),  # the inbound council code
    ("s117-register-change-recorded", "s117-discharge-decided", "S117_END"),
    ("s117-register-change-recorded", "left-hospital", "LEFT_HOSPITAL"),  # a trust change: its own name
    ("s117-entitlement-started", None, "S117_START"),
    ("s117-moved-out-of-area", None, "ADDR_CHANGE"),
    ("s117-dispute-raised", None, "DISPUTE_RAISED"),
    ("s117-notification-corrected", None, "NOTIFICATION_CORRECT"),  # a later event type: 20 characters at most
])
def test_event_codes(event_type: str, change_type: str | None, code: str) -> None:
    assert event_code(event_type, change_type) == code


def test_the_published_page_is_generated_from_the_layout_data() -> None:
    page = Path(__file__).resolve().parents[3] / "adapters" / "council_files" / "OUTBOUND.md"
    assert page.read_text() == published_layout_markdown() + "\n", "run: python -m adapters.council_files.outbound"
