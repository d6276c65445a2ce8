"""The council exports' one-builder claim (hub/exports.py, module docstring) does not depend on the builders'
clocks, and is kept while its row source stalls: a second builder whose wall clock is ahead does not take
a live claim over; a build whose rows stall for longer than the lease keeps its claim (renewed beside the
build) and finishes `ready` with the whole file while another builder tries meanwhile; a builder that
really died is still taken over (when its clock was ahead, too); and a build whose claim was
taken over while it stalled gives way and publishes nothing. Real SQLite, two ExportService objects on
one store and one export directory standing for two processes, a lease shortened to a fraction of a second
and real time."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import hub.exports
from adapters.council_files.outbound import OUT_LAYOUTS, read_export
from hub.exports import ExportRequest, ExportService
from hub.store.schema import council_exports
from tests.support import detention
from tests.security.test_review_export_lease import paused_after_first_row as stalled_after_first_row

NHS = ["9991100016", "9991100032"]
LEASE = timedelta(seconds=0.6)


class Skewed:
    """A machine's wall clock, `by` ahead of (or behind) the real one."""

    def __init__(self, by: timedelta) -> None:
        self.by = by

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.by


@pytest.fixture(autouse=True)
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub.exports, "BUILD_LEASE", LEASE)


def service(app_hub, directory: Path, skew: timedelta = timedelta(0)) -> ExportService:  # noqa: ANN001
    h = app_hub.hub
    return ExportService(h.engine, h.ref, h.agreements, h.sharing, h.protector, directory, 36.0, now=Skewed(skew))


async def people(app_hub) -> None:  # noqa: ANN001
    for nhs, run in zip(NHS, "ab"):
        for c in detention(nhs, run):
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
            assert r.status_code == 202, r.text
    while await app_hub.hub.dispatcher.run_once():
        pass


async def claim_of(app_hub, export_id: str) -> tuple[str | None, datetime | None]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        r = (await conn.execute(select(council_exports.c.builder, council_exports.c.builder_until)
                                .where(council_exports.c.export_id == export_id))).one()
    return r.builder, r.builder_until


async def keeps_trying(other: ExportService, row, seconds: float) -> int:  # noqa: ANN001
    """`other` tries to build the export (directly and as its worker would) for `seconds`: how often it got it."""
    got = 0
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while loop.time() < until:
        got += await other.build(row, builder="other") + await other.build_waiting()
        await asyncio.sleep(LEASE.total_seconds() / 10)
    return got


def check_whole_file(directory: Path, done: dict) -> None:
    outbound = directory / "E06000060" / "outbound"
    data = (outbound / done["file_name"]).read_bytes()
    assert hashlib.sha256(data[:data.rindex(b"SHA256,")]).hexdigest() == done["sha256"]
    assert sorted(r["NHS_NO"] for r in read_export(data, OUT_LAYOUTS["swift_csv"])) == NHS
    assert (outbound / (done["file_name"] + ".sha256")).read_text() == f"{done['sha256']}  {done['file_name']}\n"
    assert [p.name for p in outbound.iterdir() if p.name.endswith(".part")] == []


async def test_a_builder_whose_clock_is_ahead_does_not_take_over_a_live_claim(app_hub, tmp_path: Path) -> None:  # noqa: ANN001
    await people(app_hub)
    directory = tmp_path / "exports"
    a = service(app_hub, directory)
    ahead = service(app_hub, directory, skew=timedelta(hours=1))  # far more than the lease
    stalled, go = stalled_after_first_row(a)
    export = await a.request(ExportRequest("E06000060", "swift_csv", "full"), builder="a")
    row = await a.export_row(export["export_id"])
    a_task = asyncio.create_task(a.build(row, builder="a"))
    await stalled.wait()
    # Tried at once (its clock says A's claim ran out an hour ago) and for three leases more: never taken.
    assert await keeps_trying(ahead, row, 3 * LEASE.total_seconds()) == 0
    assert (await claim_of(app_hub, export["export_id"]))[0] == "a"
    go.set()
    assert await a_task is True
    done = await a.export(export["export_id"])
    assert (done["state"], done["record_count"]) == ("ready", 2)
    check_whole_file(directory, done)


async def test_a_build_whose_rows_stall_past_the_lease_keeps_its_claim_and_finishes(app_hub, tmp_path: Path) -> None:  # noqa: ANN001
    await people(app_hub)
    directory = tmp_path / "exports"
    a, other = service(app_hub, directory), service(app_hub, directory)  # the same (real) time on both
    stalled, go = stalled_after_first_row(a)
    export = await a.request(ExportRequest("E06000060", "swift_csv", "full"))
    row = await a.export_row(export["export_id"])
    a_task = asyncio.create_task(a.build(row))
    await stalled.wait()
    builder, first = await claim_of(app_hub, export["export_id"])
    # The row source stalls for four leases; the claim is renewed beside it, and the other builder,
    # trying all the while, never gets the export.
    assert await keeps_trying(other, row, 4 * LEASE.total_seconds()) == 0
    holder, later = await claim_of(app_hub, export["export_id"])
    assert holder == builder and later > first  # renewed while no row came
    go.set()
    assert await a_task is True
    done = await a.export(export["export_id"])
    assert (done["state"], done["record_count"]) == ("ready", 2)
    check_whole_file(directory, done)
    assert await claim_of(app_hub, export["export_id"]) == (None, None)


@pytest.mark.parametrize("skew", [timedelta(0), timedelta(hours=1)], ids=["same-clock", "its-clock-was-ahead"])
async def test_a_builder_that_died_is_still_taken_over(app_hub, tmp_path: Path, skew: timedelta) -> None:  # noqa: ANN001
    """Also when the dead builder's clock was ahead: the time it wrote, far in the worker's future, counts for nothing."""
    await people(app_hub)
    directory = tmp_path / "exports"
    died, worker = service(app_hub, directory, skew), service(app_hub, directory)
    export = await died.request(ExportRequest("E06000060", "swift_csv", "full"), builder="died")  # never renewed
    assert await worker.build_waiting() == 0  # first seen
    await asyncio.sleep(LEASE.total_seconds() / 2)
    assert await worker.build_waiting() == 0  # not yet unrenewed for a whole lease
    await asyncio.sleep(LEASE.total_seconds() * 0.6)
    assert await worker.build_waiting() == 1
    done = await worker.export(export["export_id"])
    assert (done["state"], done["record_count"]) == ("ready", 2)
    check_whole_file(directory, done)


async def test_a_build_whose_claim_was_taken_while_it_stalled_gives_way(app_hub, tmp_path: Path) -> None:  # noqa: ANN001
    await people(app_hub)
    directory = tmp_path / "exports"
    a = service(app_hub, directory)
    stalled, go = stalled_after_first_row(a)
    export = await a.request(ExportRequest("E06000060", "swift_csv", "full"), builder="a")
    row = await a.export_row(export["export_id"])
    a_task = asyncio.create_task(a.build(row, builder="a"))
    await stalled.wait()
    async with app_hub.hub.engine.begin() as conn:  # another builder took it over (A could not renew for a lease)
        await conn.execute(council_exports.update().where(council_exports.c.export_id == export["export_id"])
                           .values(builder="b"))
    taken = await claim_of(app_hub, export["export_id"])
    await asyncio.sleep(LEASE.total_seconds() / 2)  # A's next renewal finds the claim lost
    go.set()
    assert await a_task is False  # it gave way: nothing published, no error
    assert [p.name for p in (directory / "E06000060" / "outbound").iterdir() if not p.name.startswith(".")] == []
    assert (await a.export(export["export_id"]))["state"] == "building"
    assert await claim_of(app_hub, export["export_id"]) == taken  # B's claim untouched by A's renewals
