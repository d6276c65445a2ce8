"""A transfer withdrawn when late history shows no hand-over, on SQLite and
PostgreSQL: the consumer's reads of the people with an open transfer (one
statement for a batch), the case's lock, the history as it stood when the late
change was recorded; a replay of the log withdraws nothing twice."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.store.schema import workflow_transitions
from tests.unit.test_transfer_withdrawn import (
    STILL_IN_HOSPITAL,
    WORCS,
    _cases,
    _post,
    _told,
    drain,
    h,
    moved_and_redetained_on,
)

pytestmark = pytest.mark.integration


async def test_a_transfer_late_history_undoes_is_withdrawn_once(store_hub):  # noqa: ANN001
    app_hub = await moved_and_redetained_on(store_hub)
    http, hub = app_hub.http, app_hub.hub
    [opened] = await _cases(hub)
    assert opened["state"] == "awaiting-acknowledgement"
    await _post(app_hub, "trust", {**app_hub.base, **STILL_IN_HOSPITAL, "source_message_id": "wd-late"})
    await drain(app_hub)
    assert await _cases(hub) == [{**opened, "state": "withdrawn"}]
    told = await _told(hub, opened["case_id"], "withdrawn")
    assert set(told) >= {"E06000060", WORCS}
    r = await http.post(f"/v1/transfers/{opened['case_id']}/accept", headers=h(app_hub, WORCS))
    assert r.status_code == 409 and r.json()["rule"] == "transfer-withdrawn"

    async with hub.engine.connect() as conn:
        steps = (await conn.execute(select(workflow_transitions.c.seq))).scalars().all()
        await conn.rollback()
    await hub.bus.rewind("workflows", "s117.events", 0)
    await drain(app_hub)
    assert await _cases(hub) == [{**opened, "state": "withdrawn"}]
    async with hub.engine.connect() as conn:
        assert (await conn.execute(select(workflow_transitions.c.seq))).scalars().all() == steps
        await conn.rollback()
