"""A reconciliation snapshot's CSV (`swift_snapshot_csv`) as real exports arrive (review 30): CR-only line
ends read line by line, a compressed or spreadsheet upload named as such, and bytes that are not UTF-8
named by their row. The reader alone, fed the body in chunks of any size as a client streams it."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest

from adapters.snapshots import SnapshotFileError, read_csv

SH = "NHS_NO,LOCAL_ID,S117_FLAG,RESP_LA_GSS,RESP_ICB_ODS,S117_START,S117_END,NEXT_REVIEW,FUNDING"


def srow(nhs: str = "9991100016", local_id: str = "L1") -> str:
    return f"{nhs},{local_id},Y,E06000060,QU9,07/04/2025,,,"


def snapshot(*rows: str, sep: str = "\n") -> bytes:
    return (sep.join([SH, *rows, f"TRAILER,{len(rows)}"]) + sep).encode()


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i:i + size]


async def rows_of(body: bytes, size: int = 65536) -> list:
    return [r async for r in read_csv(_chunks(body, size))]


async def problem_of(body: bytes, size: int = 65536) -> tuple[str, str]:
    with pytest.raises(SnapshotFileError) as caught:
        await rows_of(body, size)
    return caught.value.field, caught.value.reason


@pytest.mark.parametrize("size", [1, 3, 7, 65536])
async def test_a_list_whose_lines_end_in_cr_alone_is_read_row_by_row(size):  # noqa: ANN001
    """Before: the whole list one line, failed "header: is not a valid CSV line"."""
    rows = await rows_of(snapshot(srow(), srow("9991100024", '"L, 2"'), sep="\r"), size)
    assert [(r.row, r.problems) for r in rows] == [(1, ()), (2, ())]


@pytest.mark.parametrize("size", [1, 65536])
async def test_crlf_and_lf_lists_are_read_as_before(size):  # noqa: ANN001
    for sep in ("\n", "\r\n"):
        rows = await rows_of(snapshot(srow(), sep=sep), size)
        assert [(r.row, r.problems) for r in rows] == [(1, ())]


@pytest.mark.parametrize(("body", "named"), [
    (gzip.compress(snapshot(srow())), "is gzip-compressed"),
    (b"PK\x03\x04" + snapshot(srow()), "is a ZIP archive (or an Excel .xlsx workbook)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + snapshot(srow()), "is an Excel .xls workbook"),
])
@pytest.mark.parametrize("size", [1, 65536])
async def test_a_compressed_or_spreadsheet_list_is_named_as_such(body, named, size):  # noqa: ANN001
    """Before: "(body) is not UTF-8 text"."""
    field, reason = await problem_of(body, size)
    assert field == "(body)" and reason.startswith(named)


async def test_windows_1252_bytes_are_named_by_their_row():
    """Before: "(body) is not UTF-8 text", which row unsaid."""
    body = snapshot(srow(), srow("9991100024", "Cafe")).replace(b"Cafe", b"Caf\xe9")
    field, reason = await problem_of(body)
    assert field == "row 2"
    assert reason.startswith("is not UTF-8 text")
    assert "Caf" not in reason
