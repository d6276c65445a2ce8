"""The dispatcher's reads take only what it keeps: the log's fetch the
columns a `BusMessage` carries (not the row's `created_at` and `relayed_at`,
a time parsed a message for nothing), the held views what a `_Held` keeps (not
`updated_at`); what a fetch gives is the message as published."""

from __future__ import annotations

import random
from datetime import date

from hub.bus import sql as bus_sql
from hub.bus.port import EVENTS_TOPIC
from hub.delivery import dispatcher as dispatcher_module
from hub.sample_data import detention_to_move_scenario
from hub.store.db import snapshot
from hub.store.schema import bus_messages
from sqlalchemy import select


def _columns(statement) -> list[str]:  # noqa: ANN001
    return [c.name for c in statement.selected_columns]


def test_the_fetch_reads_a_bus_message_s_columns_only() -> None:
    assert _columns(bus_sql._FETCH.statement) == ["topic", "key", "event_id", "payload", "headers", "offset"]


def test_the_held_views_are_read_without_their_time() -> None:
    assert _columns(dispatcher_module._HELD_VIEWS._expanding) == \
        ["person_id", "org_code", "version", "view", "last_event_id"]


async def test_a_fetch_gives_each_message_as_published(app_hub) -> None:  # noqa: ANN001
    hub = app_hub.hub
    for change in detention_to_move_scenario(random.Random(5), "reads", date(2025, 1, 6))[:2]:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
        assert r.status_code == 202, r.text
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages).where(bus_messages.c.topic == EVENTS_TOPIC)
                                   .order_by(bus_messages.c.offset))).all()
        await conn.rollback()
    assert rows
    async with snapshot(hub.engine, consistent=True) as snap:
        start, fetched = await hub.bus.fetch_on(snap, "reads-test", EVENTS_TOPIC, 100)
    assert start == 0
    assert [(m.topic, m.key, m.event_id, m.payload, m.headers, m.offset) for m in fetched] == \
        [(r.topic, r.key, r.event_id, r.payload, r.headers, int(r.offset)) for r in rows]
    assert all(m.payload["event"]["person_id"] == m.key for m in fetched)  # decoded, not left as text
