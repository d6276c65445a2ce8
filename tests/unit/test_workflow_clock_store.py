"""The end-to-end tests' settable workflow clock is kept in the store
(`workflow_clock`), so a hub in several processes has one clock: set through
the front's endpoint, it is what a worker process's scanner scans by and what
a restarted process works by. Each "process" here is a hub of its own
(`build_hub`, its own engine) over the same SQLite file, as `s117hub serve`'s
processes are. Unset (production), the offset is 0 and the table is never
read."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from hub.api.app import create_app
from hub.bootstrap import build_hub
from hub.clients import add_client
from hub.domain.workflows.model import Action
from hub.workflows.service import WorkflowClock
from hub.domain.dates import england_day
from tests import conftest
from tests.unit.test_workflows_api import BUCKS, WORCS, drain, redetention_in_worcs


def today() -> date:
    return england_day()


async def test_the_clock_set_through_the_front_is_what_another_process_scans_by(tmp_path: Path) -> None:
    settings = conftest.test_settings(tmp_path, workflow_clock_settable=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        front = app.state.hub
        admin = (await add_client(front.engine, "Ops", "HUB", "hub-operator", ["hub:admin"]))[1]
        trust = (await add_client(front.engine, "Oxford Health", "RNU", "trust", ["register:write"]))[1]
        r1a = (await add_client(front.engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1]
        worcs = (await add_client(front.engine, WORCS, WORCS, "council", ["s117:read", "workflows:write"]))[1]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            changes, again = redetention_in_worcs("clock-store")
            for c in [*changes, again]:
                r = await http.post("/v1/register-changes", headers={"X-API-Key": r1a if c is again else trust},
                                    json=c)
                assert r.status_code == 202, r.text
            await drain(conftest.InProcessHub(http, front, {}))  # the consumer opens the transfer
            [transfer] = (await http.get("/v1/transfers", headers={"X-API-Key": worcs})).json()["items"]
            due = date.fromisoformat(transfer["clock"]["due_on"])

            worker = await build_hub(settings)  # the worker process's hub: its own engine on the same file
            try:
                assert worker.workflows.clock.offset_days == 0
                assert await worker.workflows.scan() == {"reminders": 0, "breaches": 0}
                advance = (due - today()).days + 1
                r = await http.post("/v1/ops/workflows/clock", headers={"X-API-Key": admin},
                                    json={"advance_days": advance})
                assert r.status_code == 200 and r.json()["offset_days"] == advance
                assert worker.workflows.clock.offset_days == 0  # its memory: nobody else's to touch
                # Its scanner reads the offset before it scans: the transfer is overdue, once.
                assert await worker.workflows.scan() == {"reminders": 0, "breaches": 1}
                assert worker.workflows.clock.today() == due + timedelta(days=1)
                assert await worker.workflows.scan() == {"reminders": 0, "breaches": 0}
                case = (await http.get(f"/v1/transfers/{transfer['case_id']}", headers={"X-API-Key": worcs})).json()
                assert case["state"] == "overdue" and [h["action"] for h in case["history"]] == ["open", "breach"]

                # Set elsewhere (as another front of the same store could): the front's views and its next
                # action see it.
                await worker.workflows.clock.set(advance + 3)
                later = (today() + timedelta(days=advance + 3)).isoformat()
                assert (await http.get("/v1/transfers", headers={"X-API-Key": worcs})).json()["as_of"] == later
                await front.workflows.clock.set(0)  # this process's memory and the store back to the real date
                await worker.workflows.clock.set(advance + 3)
                r = await http.get(f"/v1/transfers/{transfer['case_id']}", headers={"X-API-Key": worcs})
                assert r.json()["clock"]["working_days_overdue"] > 0  # the case as of the offset set elsewhere
                await front.workflows.clock.set(0)
                await worker.workflows.clock.set(advance + 3)
                with pytest.raises(LookupError):
                    await front.workflows.act("no-such-case", WORCS, Action.ACCEPT, {})
                assert front.workflows.clock.offset_days == advance + 3
            finally:
                await worker.close()

    # A process started afterwards (a restarted front) works by the offset the store holds.
    restarted = await build_hub(settings)
    try:
        assert await restarted.workflows.scan() == {"reminders": 0, "breaches": 0}  # breached once, already
        assert restarted.workflows.clock.today() == today() + timedelta(days=advance + 3)
    finally:
        await restarted.close()


async def test_unset_the_offset_is_always_0_and_the_table_is_never_read(tmp_path: Path) -> None:
    settable = await build_hub(conftest.test_settings(tmp_path, workflow_clock_settable=True))
    try:
        await settable.workflows.clock.set(30)
    finally:
        await settable.close()
    # Without its table any read of it would fail: the unset hub must not need one.
    db = sqlite3.connect(tmp_path / "hub.db")
    db.execute("DROP TABLE workflow_clock")
    db.commit()
    db.close()

    hub = await build_hub(conftest.test_settings(tmp_path))  # started without reading it
    try:
        clock = hub.workflows.clock
        assert clock.offset_days == 0 and clock.today() == today()
        await clock.load()
        assert await hub.workflows.scan() == {"reminders": 0, "breaches": 0}
        with pytest.raises(LookupError):
            await hub.workflows.act("no-such-case", BUCKS, Action.ACCEPT, {})
        assert clock.offset_days == 0
        # The same load on a store-backed clock does read it (and here fails): the unset one did not.
        with pytest.raises(OperationalError, match="workflow_clock"):
            await WorkflowClock(store=hub.engine).load()
    finally:
        await hub.close()
