"""Review of the council exports' one-builder claim (hub/exports.py `_take`, `_keep_claim`, `BUILD_LEASE`):
a builder whose claim lapsed (stalled, and unable to renew, for longer than BUILD_LEASE as the taker's own
clock measures it) must not publish anything under the file's name, nor remove the part file of the
builder that took it over. Two ExportService objects on one store and one export directory stand for two
processes."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hub.exports import BUILD_LEASE, ExportRequest, ExportService, _Claim
from tests.support import detention

NHS = ["9991100016", "9991100032"]


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class Ticks:
    """A process's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.at = 0.0

    def __call__(self) -> float:
        return self.at


def service(app_hub, clock: Clock, directory: Path, ticks: Ticks | None = None) -> ExportService:  # noqa: ANN001
    h = app_hub.hub
    return ExportService(h.engine, h.ref, h.agreements, h.sharing, h.protector, directory, 36.0, now=clock,
                         **({"ticks": ticks} if ticks else {}))


def paused_after_first_row(svc: ExportService) -> tuple[asyncio.Event, asyncio.Event]:
    """`svc`'s full extract stops after its first row until `go` is set; `at_pause` is set when it stops."""
    at_pause, go = asyncio.Event(), asyncio.Event()
    rows_of = svc._full_rows

    async def rows(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        first = True
        async for values in rows_of(*args, **kwargs):
            yield values
            if first:
                first = False
                at_pause.set()
                await go.wait()

    svc._full_rows = rows  # type: ignore[method-assign]
    return at_pause, go


async def test_a_builder_whose_claim_lapsed_publishes_nothing_and_leaves_the_new_builder_alone(
        app_hub, tmp_path: Path) -> None:  # noqa: ANN001
    for nhs, run in zip(NHS, "ab"):
        for c in detention(nhs, run):
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
            assert r.status_code == 202, r.text
    while await app_hub.hub.dispatcher.run_once():
        pass
    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    directory = tmp_path / "exports"
    a = service(app_hub, Clock(start), directory)
    b_ticks = Ticks()
    b = service(app_hub, Clock(start), directory, b_ticks)

    async def frozen(claim: _Claim) -> None:  # A cannot renew while it stalls (frozen, the database out of reach)
        await asyncio.Event().wait()

    a._keep_claim = frozen  # type: ignore[method-assign]
    a_paused, a_go = paused_after_first_row(a)
    b_paused, b_go = paused_after_first_row(b)
    export = await a.request(ExportRequest("E06000060", "swift_csv", "full"), builder="a")
    row = await a.export_row(export["export_id"])

    a_task = asyncio.create_task(a.build(row, builder="a"))
    await a_paused.wait()
    assert await b.build(row, builder="b") is False  # A's claim seen: B times it on its own clock
    b_ticks.at += BUILD_LEASE.total_seconds()  # A stalled, unrenewed, for the whole lease
    b_task = asyncio.create_task(b.build(row, builder="b"))  # A's claim has lapsed: B takes it over
    await b_paused.wait()
    # A goes on while B is half-way through the same file.
    a_go.set()
    assert await a_task is False  # it gave way: nothing published, no error
    outbound = directory / "E06000060" / "outbound"
    assert [p.name for p in outbound.iterdir() if not p.name.startswith(".")] == []  # B's half file not published
    assert (await a.export(export["export_id"]))["state"] == "building"
    b_go.set()
    assert await b_task is True
    done = await b.export(export["export_id"])
    assert (done["state"], done["record_count"]) == ("ready", 2)
    data = (outbound / done["file_name"]).read_bytes()
    assert hashlib.sha256(data[:data.rindex(b"SHA256,")]).hexdigest() == done["sha256"]  # the whole, B's file
    assert (outbound / (done["file_name"] + ".sha256")).read_text() == f"{done['sha256']}  {done['file_name']}\n"
    assert [p.name for p in outbound.iterdir() if p.name.endswith(".part")] == []


async def test_a_lapsed_builder_stops_at_its_next_renewal_and_does_not_extend_the_new_claim(
        app_hub, tmp_path: Path) -> None:  # noqa: ANN001
    """A's renewal is its own claim's: once B holds the export, A's renewal neither extends B's lease
    nor writes its own progress over B's, and A stops there."""
    from hub.store.schema import council_exports
    from sqlalchemy import select

    for c in detention(NHS[0], "a"):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    while await app_hub.hub.dispatcher.run_once():
        pass
    start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    directory = tmp_path / "exports"
    a = service(app_hub, Clock(start), directory)
    export = await a.request(ExportRequest("E06000060", "swift_csv", "full"), builder="a")
    async with app_hub.hub.engine.begin() as conn:  # B took it over (A's claim lapsed)
        await conn.execute(council_exports.update().where(council_exports.c.export_id == export["export_id"])
                           .values(builder="b", builder_until=start + timedelta(seconds=1)))
    lapsed = _Claim(export["export_id"], "a", count=1)
    assert await a._renew(lapsed) is False and lapsed.lost
    async with app_hub.hub.engine.connect() as conn:
        now = (await conn.execute(select(council_exports).where(
            council_exports.c.export_id == export["export_id"]))).one()
    assert (now.builder, now.builder_until.replace(tzinfo=UTC), now.record_count) == (
        "b", start + timedelta(seconds=1), 0)
    assert await a._renew(_Claim(export["export_id"], "b", count=1)) is True
