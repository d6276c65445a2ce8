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


async def test_the_dispatchers_check_of_a_batchs_subscriptions_and_counters(engine) -> None:  # noqa: ANN001
    """Under the lock a batch worked out on a snapshot checks what it read in
    one statement each (hub.delivery.queue): every organisation's active
    subscriptions as `active_subscriptions` gives them one organisation at a
    time, and whether any counter it read has moved since."""
    from datetime import timedelta

    from hub.delivery import queue
    from hub.store.schema import subscription_counters, subscriptions

    now = datetime.now(UTC)
    rows = [("s1", "E06000060", True, 3), ("s2", "E06000060", True, 1), ("s3", "E06000060", False, 2),
            ("s4", "QRV", True, 0), ("s5", "E09000005", False, 0)]
    async with write_transaction(engine) as conn:
        await conn.execute(subscriptions.insert(), [
            {"subscription_id": sid, "org_code": org, "client_id": "c", "channel": "webhook", "active": active,
             "created_at": now + timedelta(seconds=age)} for sid, org, active, age in rows])
        await conn.execute(subscription_counters.insert(), [
            {"subscription_id": "s1", "last_event_number": 7}, {"subscription_id": "s4", "last_event_number": 2}])
    async with write_transaction(engine) as conn:
        orgs = ["E06000060", "QRV", "E09000005", "X99"]
        got = await queue.active_subscriptions_of(conn, orgs)
        assert got == {org: await queue.active_subscriptions(conn, org) for org in orgs}
        assert [r.subscription_id for r in got["E06000060"]] == ["s2", "s1"]  # oldest first, the inactive left out
        assert got["E09000005"] == [] and got["X99"] == []
        assert await queue.active_subscriptions_of(conn, []) == {}

        numbers = queue.EventNumbers()
        assert [await numbers.take(conn, sid) for sid in ("s1", "s4", "s2")] == [8, 3, 1]
        assert await numbers.unchanged(conn)  # as read (s2 has no row: still none)
    async with write_transaction(engine) as conn:
        await conn.execute(subscription_counters.insert(), [{"subscription_id": "s2", "last_event_number": 1}])
        assert not await numbers.unchanged(conn)  # a row made since for one read as absent
        await conn.execute(subscription_counters.delete().where(subscription_counters.c.subscription_id == "s2"))
        assert await numbers.unchanged(conn)
        await conn.execute(subscription_counters.update().where(subscription_counters.c.subscription_id == "s4")
                           .values(last_event_number=3))
        assert not await numbers.unchanged(conn)  # another writer took a number
