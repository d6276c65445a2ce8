"""Review s28: the council export claim as a heartbeat (hub/exports.py, module docstring) on each store
backend. The claim tests of tests/unit/test_export_lease_clock.py run on SQLite only; the compare-and-set
on `builder_until` (a timestamp read back and compared for equality) and the renewal beside the build are
the same on PostgreSQL: a dead builder is taken over a lease after it is first seen, a stalled build keeps
its claim against another builder trying all the while, and a renewal cancelled while its UPDATE waits
for the row lock (the build ended meanwhile) leaves the build to finish `ready` and the pool usable.
No defect found: these pass on the code as it was reviewed."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from hub.store.db import create_engine

import hub.exports
from hub.api.app import create_app
from hub.clients import add_client
from hub.exports import ExportRequest
from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE
from hub.settings import REPO_ROOT, Settings
from tests.conftest import InProcessHub
from tests.contract.conftest import store_url  # noqa: F401 (the fixture: each backend)
from tests.unit.test_export_lease_clock import people, service, stalled_after_first_row

LEASE = timedelta(seconds=0.6)


@pytest.fixture
async def store_hub(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InProcessHub]:
    monkeypatch.setattr(hub.exports, "BUILD_LEASE", LEASE)
    settings = Settings(database_url=store_url, canonical_base=DEFAULT_CANONICAL_BASE,
                        data_key_file=tmp_path / "data.key",
                        sharing_agreements_path=REPO_ROOT / "contracts" / "data-sharing-agreements.yaml",
                        run_workers=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        h = app.state.hub
        keys = {"trust": (await add_client(h.engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"]))[1]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            yield InProcessHub(http, h, keys)


async def test_dead_builder_taken_over(store_hub, tmp_path: Path) -> None:  # noqa: ANN001
    await people(store_hub)
    d = tmp_path / "exports"
    died, worker = service(store_hub, d), service(store_hub, d)
    export = await died.request(ExportRequest("E06000060", "swift_csv", "full"), builder="died")
    assert await worker.build_waiting() == 0
    await asyncio.sleep(LEASE.total_seconds() * 1.1)
    assert await worker.build_waiting() == 1
    done = await worker.export(export["export_id"])
    assert (done["state"], done["record_count"]) == ("ready", 2)


async def test_stalled_keeps_claim(store_hub, tmp_path: Path) -> None:  # noqa: ANN001
    await people(store_hub)
    d = tmp_path / "exports"
    a, other = service(store_hub, d), service(store_hub, d)
    stalled, go = stalled_after_first_row(a)
    export = await a.request(ExportRequest("E06000060", "swift_csv", "full"), builder="a")
    row = await a.export_row(export["export_id"])
    task = asyncio.create_task(a.build(row, builder="a"))
    await stalled.wait()
    got = 0
    for _ in range(40):
        got += await other.build(row, builder="other") + await other.build_waiting()
        await asyncio.sleep(0.06)
    assert got == 0
    go.set()
    assert await task is True


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # a row lock another connection holds
async def test_keeper_cancelled_mid_renewal(store_hub, store_url: str, tmp_path: Path) -> None:  # noqa: ANN001
    await people(store_hub)
    d = tmp_path / "exports"
    a = service(store_hub, d)
    stalled, go = stalled_after_first_row(a)
    export = await a.request(ExportRequest("E06000060", "swift_csv", "full"), builder="a")
    row = await a.export_row(export["export_id"])
    task = asyncio.create_task(a.build(row, builder="a"))
    await stalled.wait()
    eng = create_engine(store_url)
    conn = await eng.connect()
    tx = await conn.begin()
    await conn.execute(text("SELECT 1 FROM council_exports WHERE export_id = :e FOR UPDATE"), {"e": export["export_id"]})
    await asyncio.sleep(LEASE.total_seconds() / 2)  # the keeper's renewal now waits on the lock
    go.set()
    await asyncio.sleep(0.3)  # rows end; the keeper is cancelled mid-UPDATE
    await tx.rollback()
    await conn.close()
    await eng.dispose()
    assert await asyncio.wait_for(task, 10) is True
    done = await a.export(export["export_id"])
    assert (done["state"], done["record_count"]) == ("ready", 2)
    for _ in range(20):  # every pooled connection usable after the cancelled renewal
        async with store_hub.hub.engine.connect() as c:
            assert (await c.execute(select(1))).scalar_one() == 1
