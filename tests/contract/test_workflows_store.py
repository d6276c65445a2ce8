"""Transfer and dispute cases on SQLite and PostgreSQL: the consumer opens the
case from the log, the scanner reminds before the deadline and records the
breach after it (each once), a contest opens a dispute whose stage clock
escalates it, and the history is append-only. The end-to-end tests' settable
clock is one row every engine of the store reads."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub.clients import add_client
from hub.domain.working_days import add_working_days
from hub.store.db import create_engine
from hub.store.schema import bus_messages, workflow_clock, workflow_stages, workflow_transitions
from hub.workflows.service import WorkflowClock
from hub.domain.dates import england_day
from tests.unit.test_workflows_api import BUCKS, WORCS, drain, redetention_in_worcs

pytestmark = pytest.mark.integration


async def deadline_events(hub) -> list[str]:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.payload).where(
            bus_messages.c.headers["event_type"].as_string() == "s117-workflow-deadline"))).all()
        await conn.rollback()
    return [r.payload["event"]["details"]["deadline"] for r in rows]


async def test_transfer_clock_reminds_then_breaches_once_and_contest_escalates(store_hub):
    http, hub = store_hub.http, store_hub.hub
    keys = {org: (await add_client(hub.engine, org, org, "council", ["s117:read", "workflows:write"]))[1]
            for org in (BUCKS, WORCS)}
    r1a = (await add_client(hub.engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1]
    changes, again = redetention_in_worcs("ct")
    for c in [*changes, again]:
        key = r1a if c is again else store_hub.keys["trust"]  # the re-detention: the trust running that hospital
        r = await http.post("/v1/register-changes", headers={"X-API-Key": key}, json=c)
        assert r.status_code == 202, r.text
    await drain(store_hub)
    [transfer] = (await http.get("/v1/transfers", headers={"X-API-Key": keys[WORCS]})).json()["items"]
    due = transfer["clock"]["due_on"]
    svc = hub.workflows
    today = svc.clock.today()
    from datetime import date

    due_day = date.fromisoformat(due)
    assert due_day == add_working_days(today, 10, hub.ref.bank_holidays())

    # One working day before the deadline: a reminder, once.
    reminder_day = add_working_days(today, 9, hub.ref.bank_holidays())
    svc.clock.offset_days = (reminder_day - today).days
    assert (await svc.scan()) == {"reminders": 1, "breaches": 0}
    assert (await svc.scan()) == {"reminders": 0, "breaches": 0}
    # The day after the deadline: overdue, once.
    svc.clock.offset_days = (due_day - today).days + 1
    assert (await svc.scan()) == {"reminders": 0, "breaches": 1}
    assert (await svc.scan()) == {"reminders": 0, "breaches": 0}
    assert await deadline_events(hub) == ["reminder", "breach"]
    case = (await http.get(f"/v1/transfers/{transfer['case_id']}", headers={"X-API-Key": keys[BUCKS]})).json()
    assert case["state"] == "overdue" and case["clock"]["breached"] is True
    assert [h["action"] for h in case["history"]] == ["open", "breach"]
    r = await http.post(f"/v1/transfers/{transfer['case_id']}/contest", headers={"X-API-Key": keys[WORCS]},
                        json={"reason": "late"})
    assert r.status_code == 409 and r.json()["rule"] == "contest-after-deadline"
    r = await http.post(f"/v1/transfers/{transfer['case_id']}/accept", headers={"X-API-Key": keys[WORCS]})
    assert r.status_code == 200 and r.json()["state"] == "accepted"

    # A dispute raised by a party: its stage clock runs out and it escalates once.
    r = await http.post("/v1/disputes", headers={"X-API-Key": keys[WORCS]},
                        json={"person_id": r.json()["person_id"], "kind": "council", "parties": [WORCS, BUCKS],
                              "reason": "ordinary residence"})
    assert r.status_code == 201, r.text
    dispute = r.json()
    # A council dispute: the 2014 Disputes Regulations' procedure (Worcs 4.3.4, 15.4), local resolution for
    # 85 working days (the hub's default) before the Secretary of State; was 40 days into Bucks' JMG -> ICET.
    assert dispute["clock"]["owner"] == WORCS and dispute["stages"][-1]["owner"] == "Secretary of State"
    svc.clock.offset_days = (date.fromisoformat(dispute["clock"]["due_on"]) - today).days + 1
    assert (await svc.scan())["breaches"] == 1
    assert (await svc.scan())["breaches"] == 0
    async with hub.engine.connect() as conn:
        stages = (await conn.execute(select(workflow_stages.c.stage_index, workflow_stages.c.outcome)
                                     .where(workflow_stages.c.case_id == dispute["case_id"])
                                     .order_by(workflow_stages.c.stage_index))).all()
        steps = (await conn.execute(select(func.count()).select_from(workflow_transitions))).scalar_one()
        await conn.rollback()
    assert [tuple(s) for s in stages] == [(0, "escalated"), (1, None)]
    assert steps == 5  # open, breach, accept (transfer); raise, escalate (dispute)


async def test_the_settable_clock_is_one_row_every_engine_reads(engine):
    """The end-to-end tests' clock on each store: set (a first insert, then the
    update of its one row) is what a clock on another engine of the same store
    (another process) loads; one without a store never reads it."""
    other = create_engine(engine.url.render_as_string(hide_password=False))
    try:
        here, there = WorkflowClock(store=engine), WorkflowClock(store=other)
        await there.load()
        assert there.offset_days == 0  # never set: the real date
        await here.set(12)
        await here.set(40)  # the same row again: updated, not a second row or a conflict
        await there.load()
        assert there.offset_days == 40 and there.today() == england_day() + timedelta(days=40)
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(workflow_clock))).scalar_one() == 1
            await conn.rollback()
        unset = WorkflowClock()
        await unset.load()
        assert unset.offset_days == 0
    finally:
        await other.dispose()
