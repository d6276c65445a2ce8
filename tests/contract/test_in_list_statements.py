"""Statements whose list of values is one parameter (hub.store.db.InList),
on both stores: who of a batch's people has a live reconciliation item (the
item watcher's first question) and the Kafka relay's marking of outbox rows.
Their text is the same whatever the list's length, so PostgreSQL prepares each
once a connection (an expanding IN list was a new statement for each length)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from hub.bus.kafka import _MARK_RELAYED
from hub.reconciliation import _PEOPLE_WITH_LIVE_ITEMS
from hub.store.db import write_transaction
from hub.store.schema import bus_messages, persons, reconciliation_items


async def test_people_with_live_items_whatever_the_batch_size(engine) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    async with write_transaction(engine) as conn:
        await conn.execute(persons.insert(), [
            {"person_id": f"p{i}", "nhs_number_index": f"k{i}", "details": b"x", "created_at": now, "updated_at": now}
            for i in range(6)])
        await conn.execute(reconciliation_items.insert(), [
            {"item_id": f"i{i}", "body_org": "E06000060", "person_key": f"k{i}", "kind": "missing", "field": "all",
             "state": state, "difference": {}, "first_seen": "s1", "last_seen": "s1", "updated_at": now}
            for i, state in ((0, "open"), (1, "explained"), (2, "fixed"), (3, "accepted"), (4, "open"))])
    async with write_transaction(engine) as conn:
        for people, live in ((["p0"], {"p0"}), (["p2", "p3", "p5"], set()), ([f"p{i}" for i in range(6)],
                              {"p0", "p1", "p4"}), (["p1", "p1", "p9"], {"p1"}), ([], set())):
            assert set((await _PEOPLE_WITH_LIVE_ITEMS.execute(conn, people)).scalars()) == live


async def test_the_relay_marks_exactly_the_rows_it_names(engine) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    async with write_transaction(engine) as conn:
        await conn.execute(bus_messages.insert(), [
            {"topic": "s117.events", "key": "p", "event_id": f"e{i}", "payload": {}, "headers": {}, "created_at": now}
            for i in range(8)])
    async with write_transaction(engine) as conn:
        offsets = [r.offset for r in (await conn.execute(select(bus_messages.c.offset)
                                                         .order_by(bus_messages.c.offset))).all()]
        await _MARK_RELAYED.execute(conn, [offsets[1], offsets[4]], {"now": now})
        await _MARK_RELAYED.execute(conn, offsets[6:], {"now": now})
    async with engine.connect() as conn:
        marked = [r.relayed_at is not None for r in (await conn.execute(
            select(bus_messages.c.relayed_at).order_by(bus_messages.c.offset))).all()]
    assert marked == [False, True, False, False, True, False, True, True]
