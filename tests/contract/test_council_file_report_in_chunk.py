"""A council file chunk whose rows all go ingest's bulk way has its report
rows and progress written in that chunk's own transaction (hub/file_jobs.py
`_ChunkReport`, hub/ingest/service.py `BULK_REPORT`); a chunk with rows left
to the per-change path, or whose bulk transaction fails, has them written
after, in a transaction of their own, as before. The report is the same."""

from __future__ import annotations

from typing import Any

import hub.file_jobs as file_jobs
from hub.ingest.group_commit import WriteBehind
from tests.contract.test_council_files_bulk import THIRD_NIGHT, csv, hub_at, run_nights, same, send
from tests.unit.test_council_files_api import PERSON_A, PERSON_C, trust_changes


async def _register(h: Any) -> None:
    for person, run in ((PERSON_A, "a"), (PERSON_C, "c")):
        for change in trust_changes(person, run):
            assert (await h.http.post("/v1/register-changes", headers={"X-API-Key": h.keys["trust"]},
                                      json=change)).status_code == 202


def _spy(monkeypatch: Any) -> list[tuple[bool, list[int]]]:
    """Each report written: (in the bulk transaction, its rows)."""
    written: list[tuple[bool, list[int]]] = []
    real = file_jobs._write_report

    async def spy(conn: Any, file_id: str, entries: list, done: int) -> None:
        written.append((isinstance(conn, WriteBehind), [e["row"] for e in entries]))
        await real(conn, file_id, entries, done)

    monkeypatch.setattr(file_jobs, "_write_report", spy)
    return written


async def test_a_chunk_all_through_the_bulk_path_writes_its_report_in_its_own_transaction(tmp_path, monkeypatch):
    written = _spy(monkeypatch)
    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", tmp_path, files_chunk_rows=3) as h:
        await _register(h)
        rows = [f"R-{i},REVIEW_DONE,{1 + i:02d}/07/2025,,{('9991100016', '9991100032')[i % 2]},,,,,,,,,,,,,"
                for i in range(7)]
        rows.insert(4, "R-X,REVIEW_DONE,not a date,,9991100016,,,,,,,,,,,,,")  # rejected: still the bulk way
        body = await send(h, csv(*rows))
    assert (body["status"], body["rows_done"], body["accepted"], body["rejected"]) == ("processed", 8, 7, 1)
    assert [e["row"] for e in body["report"]] == list(range(1, 9))
    assert written == [(True, [1, 2, 3]), (True, [4, 5, 6]), (True, [7, 8])]


async def test_a_chunk_with_rows_left_to_the_per_change_path_writes_its_report_after(tmp_path, monkeypatch):
    written = _spy(monkeypatch)
    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", tmp_path, files_chunk_rows=3) as h:
        await _register(h)
        # A dispute raised about Robin, then an end of entitlement it holds (left to the per-change path,
        # with Robin's later rows), then a GP change; the next chunk: a review of someone else.
        body = await send(h, THIRD_NIGHT)
    assert body["rows_done"] == 4 and [e["row"] for e in body["report"]] == [1, 2, 3, 4]
    assert written == [(False, [1, 2, 3]), (True, [4])]


async def test_the_reports_are_those_of_row_by_row(tmp_path, monkeypatch):
    """The nights' files (rows aside, duplicates, a 409, rejections) give the same reports either way."""
    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'row.db'}", tmp_path / "row", files_bulk=False) as h:
        expected = same(await run_nights(h))
    written = _spy(monkeypatch)
    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}", tmp_path / "bulk", files_chunk_rows=2) as h:
        assert same(await run_nights(h)) == expected
    assert any(inside for inside, _ in written) and not all(inside for inside, _ in written)
