"""Two byte-identical council files arriving at the same instant: the repeat check (`_previous` in
hub/api/files.py) and the receipt's insert were two steps, so both could pass the check and both have
their rows recorded and their bad rows quarantined twice. The receipt the rows are recorded under now
holds a claim unique per (source, sha256) (migration 0028): the second file's insert fails and it is
answered from the first's receipt. Both files are held between the check and the insert until both
have passed the check (not a timing race), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

import hub.api.files as files_api
from hub.clients import add_client
from hub.store.schema import file_receipts, quarantine, register_changes
from tests.unit.test_council_files_api import PERSON_A, PERSON_C, trust_changes

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "council_files"


async def _count(hub, table, *where) -> int:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()


async def test_two_identical_files_at_once_record_the_rows_once(store_hub, monkeypatch: pytest.MonkeyPatch) -> None:
    http, hub = store_hub.http, store_hub.hub
    _, key = await add_client(hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    for person, run in ((PERSON_A, "a"), (PERSON_C, "c")):
        for change in trust_changes(person, run):
            r = await http.post("/v1/register-changes", headers={"X-API-Key": store_hub.keys["trust"]}, json=change)
            assert r.status_code == 202, r.text
    changes_before = await _count(hub, register_changes)
    data = (FIXTURES / "bucks_nightly.csv").read_bytes()  # 4 rows accepted, 4 rejected (2 of them quarantined)

    arrived, both = 0, asyncio.Event()

    async def held(hub_, file_id: str) -> None:  # noqa: ANN001
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both.set()
        await both.wait()  # each has looked for an earlier receipt and found none

    monkeypatch.setattr(files_api, "_before_claim", held)
    post = lambda: http.post("/v1/council-files?format=swift_csv", content=data,  # noqa: E731
                             headers={"X-API-Key": key, "Content-Type": "text/csv"})
    first, second = await asyncio.wait_for(asyncio.gather(post(), post()), 60)
    assert arrived == 2
    answers = sorted((first.json(), second.json()), key=lambda b: bool(b.get("duplicate")))
    winner, loser = answers
    assert (winner["status"], winner.get("duplicate")) == ("processing", None), answers
    assert loser["duplicate"] is True, answers
    assert loser.get("replay_of", loser["file_id"]) == winner["file_id"]  # its id (processing) or replayed from it
    await hub.files.wait(winner["file_id"])

    assert await _count(hub, register_changes) == changes_before + 4  # each accepted row once
    assert await _count(hub, quarantine, quarantine.c.channel == "file") == 2  # no copies of the bad rows
    assert await _count(hub, file_receipts, file_receipts.c.status.in_(("processing", "processed"))) == 1

    # Sent again later: answered from the first receipt, as before.
    r = await post()
    assert r.status_code == 200 and r.json()["replay_of"] == winner["file_id"], r.text


async def test_0028_gives_the_claim_to_each_file_s_first_recorded_receipt_and_back(store_url) -> None:
    """Receipts from before 0028 (a race's two processed receipts among them): the earliest processing or
    processed receipt of each (source, sha256) takes the claim; a later one, a replay, a rejected or failed
    receipt keeps its status without one. The downgrade drops the column, every receipt kept."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import inspect

    from hub.store.db import create_engine, create_schema
    from tests.contract.test_migrations import _migrate

    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    receipts = [  # (file_id, source, sha256, status, seconds after t0)
        ("f-1", "council-a", "aa", "processed", 0), ("f-2", "council-a", "aa", "processed", 0),  # the race
        ("f-3", "council-a", "aa", "replayed", 5), ("f-4", "council-a", "bb", "rejected", 0),
        ("f-5", "council-a", "cc", "failed", 0), ("f-6", "council-a", "cc", "processing", 9),
        ("f-7", "council-b", "aa", "processed", 3),  # another council's identical file: its own
    ]
    engine = create_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "upgrade", "0027")
            for fid, source, sha, status, s in receipts:
                await conn.execute(file_receipts.insert().values(
                    file_id=fid, source=source, format="swift_csv", sha256=sha, size_bytes=1, status=status,
                    row_count=0, accepted=0, duplicates=0, rejected=0, received_at=t0 + timedelta(seconds=s)))
        await create_schema(engine)
        async with engine.connect() as conn:
            claims = dict((await conn.execute(select(file_receipts.c.file_id, file_receipts.c.claim))).all())
        assert claims == {"f-1": "aa", "f-2": None, "f-3": None, "f-4": None, "f-5": None, "f-6": "cc", "f-7": "aa"}
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "downgrade", "0027")
            columns = {c["name"] for c in await conn.run_sync(lambda c: inspect(c).get_columns("file_receipts"))}
            kept = (await conn.execute(select(file_receipts.c.file_id, file_receipts.c.status)
                                       .order_by(file_receipts.c.file_id))).all()
        assert "claim" not in columns
        assert [tuple(r) for r in kept] == [(fid, status) for fid, _, _, status, _ in receipts]
    finally:
        await engine.dispose()
