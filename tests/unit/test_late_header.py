"""A register change's first event says in its header whether the change came
late (sorts before a change recorded before it) or in its turn: the workflows'
consumer withdraws a transfer case only on late history, and reads the history
only for a late change (hub/workflows/consumer.py)."""

from __future__ import annotations

import random
from datetime import date

from sqlalchemy import select

from hub.bus.port import LATE
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import bus_messages

RECORDED = "s117-register-change-recorded"


async def _recorded_headers(app_hub) -> list[str | None]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.headers).order_by(bus_messages.c.offset))).scalars().all()
    return [h.get(LATE) for h in rows if h["event_type"] == RECORDED]


async def test_the_recorded_event_says_whether_its_change_came_late(app_hub):  # noqa: ANN001
    changes = detention_to_move_scenario(random.Random(11), "late", date(2025, 1, 6))
    trust = {"X-API-Key": app_hub.keys["trust"]}
    # The detention, then leaving hospital, then the section change between them (late), then the move.
    for c in (changes[0], changes[2], changes[1]):
        r = await app_hub.http.post("/v1/register-changes", headers=trust, json=c)
        assert r.status_code == 202, r.text
    r = await app_hub.http.post("/v1/register-changes", headers=trust, json=changes[3])
    assert r.status_code == 202, r.text
    assert await _recorded_headers(app_hub) == ["0", "0", "1", "0"]
    # Only the recorded event carries it.
    async with app_hub.hub.engine.connect() as conn:
        others = (await conn.execute(select(bus_messages.c.headers))).scalars().all()
    assert all(LATE not in h for h in others if h["event_type"] != RECORDED)
