"""Review (council files): a file whose background job fails inside the hub.

Before, any exception in the job (a store that went away for a moment, a bug
on one row) ended the task with a log line and left the receipt `processing`
with `rows_done` frozen: `GET` said "processing" until the hub was next
restarted, and a failure that happens again failed again at every start, so
`send-file` waited out its timeout every night. Now the job is tried again
from its first unreported row, and after its last retry the file is given up:
`failed`, a file problem naming the row it stopped at, every row still in the
report (those not recorded rejected, naming the row), the stored file dropped.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.clients import add_client
from hub.file_jobs import FileJobs
from hub.store.schema import file_receipts
from tests.support import detention

PEOPLE = ("9991100016", "9991100032")
HEADER = "RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO"


@pytest.fixture
async def council(app_hub):  # noqa: ANN001, ANN201
    _, key = await add_client(app_hub.hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    for nhs in PEOPLE:
        for change in detention(nhs, nhs):
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                        json=change)
            assert r.status_code == 202, r.text
    files: FileJobs = app_hub.hub.files
    files._chunk = 2  # noqa: SLF001 - several chunks from a small file
    files.retry_seconds = 0.0
    return {"X-API-Key": key}


def nightly(n: int) -> bytes:
    rows = [f"RV-{i},REVIEW_REQ,0{1 + i % 9}/08/2025,{PEOPLE[i % 2]}" for i in range(1, n + 1)]
    return ("\r\n".join([HEADER, *rows]) + "\r\n").encode()


async def post_and_wait(app_hub, headers, data: bytes):  # noqa: ANN001, ANN201
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=data,
                                headers={**headers, "Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    await app_hub.hub.files.wait(r.json()["file_id"])
    return await app_hub.http.get(r.headers["location"], headers=headers)


def failing(monkeypatch, files: FileJobs, times: int | None) -> list[int]:  # noqa: ANN001
    """The second chunk fails `times` times (None: always) inside the hub."""
    calls: list[int] = []
    real = files._bulk_entries  # noqa: SLF001

    async def flaky(client, layout, chunk, own, cache=None):  # noqa: ANN001, ANN202
        if chunk[0].row == 3 and (times is None or len(calls) < times):
            calls.append(chunk[0].row)
            raise RuntimeError("the store went away")
        return await real(client, layout, chunk, own, cache)

    monkeypatch.setattr(files, "_bulk_entries", flaky)
    return calls


async def test_a_failure_that_passes_is_retried_and_the_file_finishes(app_hub, council, monkeypatch) -> None:  # noqa: ANN001
    calls = failing(monkeypatch, app_hub.hub.files, times=2)
    r = await post_and_wait(app_hub, council, nightly(6))
    body = r.json()
    assert calls == [3, 3]
    assert (body["status"], body["rows"], body["rows_done"], body["accepted"], body["rejected"]) == (
        "processed", 6, 6, 6, 0)
    assert [e["row"] for e in body["report"]] == [1, 2, 3, 4, 5, 6]


async def test_a_failure_that_stays_gives_the_file_up_with_every_row_reported(app_hub, council, monkeypatch) -> None:  # noqa: ANN001
    files: FileJobs = app_hub.hub.files
    calls = failing(monkeypatch, files, times=None)
    data = nightly(6)
    r = await post_and_wait(app_hub, council, data)
    body = r.json()
    assert (body["status"], body["rows"], body["rows_done"], body["accepted"], body["rejected"]) == (
        "failed", 6, 6, 2, 4), body
    assert len(calls) == files.retries + 1
    assert body["problems"][0]["field"] == "(file)"
    assert body["problems"][0]["reason"].startswith("the hub stopped recording this file at row 3")
    report = body["report"]
    assert [(e["row"], e["status"]) for e in report] == [
        (1, "accepted"), (2, "accepted"), (3, "rejected"), (4, "rejected"), (5, "rejected"), (6, "rejected")]
    assert report[3] == {"row": 4, "record_id": "RV-4", "status": "rejected",
                         "errors": [{"field": "row 4", "reason": report[3]["errors"][0]["reason"]}]}
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(select(file_receipts.c.content)
                                   .where(file_receipts.c.file_id == body["file_id"]))).scalar_one() is None

    # Sent again once the hub is well: recorded, the rows it had recorded answered as duplicates.
    monkeypatch.undo()
    again = (await post_and_wait(app_hub, council, data)).json()
    assert (again["status"], again["accepted"], again["duplicates"], again["rejected"]) == ("processed", 4, 2, 0)


async def test_a_store_that_cannot_be_written_is_waited_out_not_given_up(app_hub, council, monkeypatch) -> None:  # noqa: ANN001
    """Its disk full for longer than every retry (more failures than `retries`): not the file's fault,
    so the file is not given up (before: `failed`, rows from the third rejected, to be sent again);
    once the store takes writes again it finishes, every row recorded once."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    files: FileJobs = app_hub.hub.files
    calls: list[int] = []
    real = files._bulk_entries  # noqa: SLF001

    async def full(client, layout, chunk, own, cache=None):  # noqa: ANN001, ANN202
        if chunk[0].row == 3 and len(calls) < files.retries + 3:
            calls.append(chunk[0].row)
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
        return await real(client, layout, chunk, own, cache)

    monkeypatch.setattr(files, "_bulk_entries", full)
    body = (await post_and_wait(app_hub, council, nightly(6))).json()
    assert len(calls) == files.retries + 3
    assert (body["status"], body["rows"], body["rows_done"], body["accepted"], body["rejected"]) == (
        "processed", 6, 6, 6, 0), body
    assert [e["row"] for e in body["report"]] == [1, 2, 3, 4, 5, 6]
