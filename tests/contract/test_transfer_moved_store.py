"""A hand-over that later-arriving history moves to another date, on SQLite
and PostgreSQL (tests/unit/test_transfer_moved.py's history): the first case
is superseded (withdrawn, both bodies told once, its Task cancelled) and
exactly one case stays open; an accepted case late history shows never
happened is withdrawn, both told; a replay of the log changes nothing."""

from __future__ import annotations

import pytest

from hub.domain.workflows.model import SUPERSEDED_REASON, WITHDRAWN_REASON
from tests.unit.test_transfer_moved import (
    accepted_first,
    check_moved,
    check_told_cancelled,
    moved_late,
    open_cases,
    transfer_cases,
)
from tests.unit.test_transfer_withdrawn import STILL_IN_HOSPITAL, _post, _told, drain, moved_and_redetained_on

pytestmark = pytest.mark.integration


async def test_a_moved_hand_over_leaves_one_open_case(store_hub):  # noqa: ANN001
    app_hub = await moved_and_redetained_on(store_hub)
    hub = app_hub.hub
    [first] = await transfer_cases(hub)
    await moved_late(app_hub)
    still = await check_moved(app_hub, first)
    before = await transfer_cases(hub)
    await hub.bus.rewind("workflows", "s117.events", 0)
    await drain(app_hub)
    assert await transfer_cases(hub) == before and open_cases(before) == [still]
    check_told_cancelled(await _told(hub, first["case_id"], "withdrawn"), SUPERSEDED_REASON)


async def test_an_accepted_transfer_late_history_undoes_is_withdrawn(store_hub):  # noqa: ANN001
    app_hub = await moved_and_redetained_on(store_hub)
    hub = app_hub.hub
    first = await accepted_first(app_hub)
    await _post(app_hub, "trust", {**app_hub.base, **STILL_IN_HOSPITAL, "source_message_id": "wd-late"})
    await drain(app_hub)
    assert [c["state"] for c in await transfer_cases(hub)] == ["withdrawn"]
    check_told_cancelled(await _told(hub, first["case_id"], "withdrawn"), WITHDRAWN_REASON)
