"""Transfer cases an earlier version stored without their hand-over's date
(`handover_on`), in a store upgraded since.

Such a case was matched without a date: late history that moves its hand-over
to another date left it open beside the new date's case. It is now dated on
first use, from the event that opened it (its `occurred_on`): read from the
log while the log holds it, else derived again from the history as the hub
held it when the change that told it was recorded; a case older still (no
`opened_by_change`) is found among the events of the person's changes by its
own id. The date is that of the step where the hand-over happens, not the
effective date of the change that told it (a late change tells a hand-over it
reveals where it happens).

Through the real path on SQLite (tests/contract/test_transfer_undated_store.py:
SQLite and PostgreSQL), with tests/unit/test_transfer_moved.py's history and
checks: one hand-over, one open case; the undated case superseded, both bodies
told once."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import delete, select

from hub.domain.workflows.model import SUPERSEDED_REASON
from hub.store.schema import bus_messages, workflow_cases
from hub.workflows.service import case_id_for
from tests.unit.test_transfer_moved import (
    check_moved,
    check_told_cancelled,
    moved_late,
    open_cases,
    transfer_cases,
)
from tests.unit.test_transfer_withdrawn import (
    BUCKS,
    LEFT_BEFORE,
    STILL_IN_HOSPITAL,
    WORCS,
    _on,
    _post,
    _told,
    drain,
    moved_and_redetained_on,
)

# How an earlier version left a case: no date kept ("log": its opening event
# still in the log), its opening event purged from the log by retention
# ("history"), and older still, without the change that told it ("oldest").
AGES = ("log", "history", "oldest")


async def as_an_earlier_version_stored_it(hub, case_id: str, age: str) -> None:  # noqa: ANN001
    """The case's data without the keys a later version added (and, for
    "history" and "oldest", the event that opened it gone from the log)."""
    async with hub.engine.begin() as conn:
        data = (await conn.execute(select(workflow_cases.c.data)
                                   .where(workflow_cases.c.case_id == case_id))).scalar_one()
        dropped = {"handover_on", "superseded_by_handover_on"} | ({"opened_by_change"} if age == "oldest" else set())
        await conn.execute(workflow_cases.update().where(workflow_cases.c.case_id == case_id)
                           .values(data={k: v for k, v in data.items() if k not in dropped}))
        if age != "log":
            opening = [r.event_id for r in (await conn.execute(select(bus_messages.c.event_id, bus_messages.c.payload)
                                                               .where(bus_messages.c.topic == "s117.events"))).all()
                       if r.payload["event"]["event_type"] == "s117-responsibility-transferred"
                       and case_id_for(r.event_id, data["role"]) == case_id]
            assert len(opening) == 1
            await conn.execute(delete(bus_messages).where(bus_messages.c.event_id.in_(opening)))


async def stored(hub, case_id: str) -> dict:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        data = (await conn.execute(select(workflow_cases.c.data)
                                   .where(workflow_cases.c.case_id == case_id))).scalar_one()
        await conn.rollback()
    return data


async def check_undated_case_superseded(app_hub, age: str) -> None:  # noqa: ANN001
    """The day-200 case stored undated; the late day-180 detention moves its
    hand-over: it is dated (day 200) and superseded, one case open (day 180),
    both bodies told once; a replay of the log changes nothing."""
    app_hub = await moved_and_redetained_on(app_hub)
    hub = app_hub.hub
    [first] = await transfer_cases(hub)
    await as_an_earlier_version_stored_it(hub, first["case_id"], age)
    [undated] = await transfer_cases(hub)
    assert undated["handover_on"] is None and undated["state"] == "awaiting-acknowledgement"
    await moved_late(app_hub)
    still = await check_moved(app_hub, first)  # one open case, the undated one superseded, both told once
    assert (await stored(hub, first["case_id"]))["handover_on"] == _on(200)  # dated where its hand-over was
    before = await transfer_cases(hub)
    await hub.bus.rewind("workflows", "s117.events", 0)
    await drain(app_hub)
    assert await transfer_cases(hub) == before and open_cases(before) == [still]
    check_told_cancelled(await _told(hub, first["case_id"], "withdrawn"), SUPERSEDED_REASON)


async def check_dated_where_the_hand_over_happens(app_hub, age: str) -> None:  # noqa: ANN001
    """A case opened by a late change that revealed a hand-over at a later
    step: the day-170 left-hospital, heard late, shows the day-200 detention
    was from Worcestershire (the day-140 detention, also heard late, had
    withdrawn the first case). Stored undated, it is dated day 200, the step's
    date, not day 170: late history that keeps that hand-over leaves it open
    (dated 170, it would be superseded by day 200's hand-over, which no new
    case tells: none would be left open); late history that moves it to day
    180 supersedes it, one case open, both told once."""
    app_hub = await moved_and_redetained_on(app_hub)
    hub = app_hub.hub
    await _post(app_hub, "trust", {**app_hub.base, **STILL_IN_HOSPITAL, "source_message_id": "ud-late"})
    await drain(app_hub)
    await _post(app_hub, "trust", {**app_hub.base, **LEFT_BEFORE, "source_message_id": "ud-left"})
    await drain(app_hub)
    [again] = open_cases(await transfer_cases(hub))
    assert again["handover_on"] == _on(200)
    await as_an_earlier_version_stored_it(hub, again["case_id"], age)

    # Late, but the hand-over stays on day 200: a review asked for on day 175.
    await _post(app_hub, "trust", {**app_hub.base, "source_message_id": "ud-review", "change_type": "review-requested",
                                   "effective_date": _on(175)})
    await drain(app_hub)
    assert open_cases(await transfer_cases(hub)) == [{**again, "handover_on": _on(200)}]

    await moved_late(app_hub)
    await check_moved(app_hub, again)


@pytest.mark.parametrize("age", AGES)
async def test_an_undated_case_late_history_moves_is_dated_and_superseded(app_hub, age):  # noqa: ANN001
    await check_undated_case_superseded(app_hub, age)


@pytest.mark.parametrize("age", AGES)
async def test_an_undated_case_is_dated_where_its_hand_over_happens(app_hub, age):  # noqa: ANN001
    await check_dated_where_the_hand_over_happens(app_hub, age)


@pytest.mark.parametrize("age", AGES)
async def test_an_undated_open_case_is_the_hand_over_told_again_on_its_date(app_hub, age):  # noqa: ANN001
    """The same hand-over (role, bodies, date) told again opens nothing beside
    an undated case open for it (`_open_for` dates it first); on another date
    it is not the same hand-over."""
    app_hub = await moved_and_redetained_on(app_hub)
    hub = app_hub.hub
    [first] = await transfer_cases(hub)
    await as_an_earlier_version_stored_it(hub, first["case_id"], age)
    async with hub.engine.begin() as conn:
        found = [await hub.workflows._open_for(conn, app_hub.person_id, "council", BUCKS, WORCS,
                                               date.fromisoformat(_on(d))) for d in (180, 200)]
    assert found == [None, first["case_id"]]
    assert (await stored(hub, first["case_id"]))["handover_on"] == _on(200)
