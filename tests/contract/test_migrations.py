"""The Alembic migrations build exactly the schema hub/store/schema.py declares,
on each store backend, and running them again is a no-op; a migration that
moves data keeps every row's."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import DateTime, LargeBinary, String, bindparam, inspect, select, text

from hub.store.db import MIGRATIONS, create_engine, create_schema
from hub.store.schema import (
    deliveries,
    deliveries_with_messages,
    delivery_messages,
    disclosures,
    for_dialect,
    metadata,
    persons,
    register_changes,
    service_levels,
    subscriptions,
)

pytestmark = pytest.mark.integration


async def test_migrations_match_the_declared_schema(store_url):
    engine = create_engine(store_url)
    try:
        await create_schema(engine)
        await create_schema(engine)  # idempotent: a restart migrates nothing

        def diff(sync_conn):  # noqa: ANN001, ANN202
            ctx = MigrationContext.configure(sync_conn, opts={
                "compare_type": True, "include_object": for_dialect(sync_conn.dialect.name)})
            return compare_metadata(ctx, metadata), inspect(sync_conn).get_table_names()

        async with engine.connect() as conn:
            differences, tables = await conn.run_sync(diff)
        assert differences == []
        assert set(metadata.tables) | {"alembic_version"} == set(tables)
    finally:
        await engine.dispose()


def _migrate(sync_conn, verb: str, target: str) -> None:  # noqa: ANN001
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    getattr(command, verb)(cfg, target)


_OLD_DELIVERY = text(
    "INSERT INTO deliveries (delivery_id, subscription_id, event_id, message_id, event_type, payload, status,"
    " attempts, next_attempt_at, correlation_id, created_at, delivered_at, event_number) VALUES"
    " (:id, 'sub-1', :id, :id, 'entitlement-started', :payload, :status, 1, :at, 'c', :at, NULL, :n)"
).bindparams(bindparam("payload", type_=LargeBinary), bindparam("at", type_=DateTime(timezone=True)))


async def test_0022_moves_each_delivery_message_to_delivery_messages_and_back(store_url):
    """0022 moves every delivery's message (an emptied one too) into
    `delivery_messages` under its `delivery_seq`, and drops the column;
    its downgrade puts each back."""
    engine = create_engine(store_url)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "upgrade", "0021")
            await conn.execute(subscriptions.insert().values(
                subscription_id="sub-1", org_code="E06000060", client_id="c", channel="webhook",
                url="https://example.org/hook", active=True, created_at=at))
            for n, (payload, status) in enumerate([(b"message-1", "pending"), (b"", "delivered"),
                                                   (b"\x00" * 5000, "dead")], start=1):
                await conn.execute(_OLD_DELIVERY, {"id": f"d-{n}", "payload": payload, "status": status,
                                                   "at": at, "n": n})
        await create_schema(engine)
        async with engine.connect() as conn:
            moved = (await conn.execute(
                select(deliveries.c.delivery_id, deliveries.c.status, delivery_messages.c.payload)
                .select_from(deliveries_with_messages).order_by(deliveries.c.event_number))).all()
            columns = {c["name"] for c in await conn.run_sync(lambda c: inspect(c).get_columns("deliveries"))}
        assert [tuple(r) for r in moved] == [("d-1", "pending", b"message-1"), ("d-2", "delivered", b""),
                                             ("d-3", "dead", b"\x00" * 5000)]
        assert "payload" not in columns
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "downgrade", "0021")
            back = (await conn.execute(text("SELECT delivery_id, payload FROM deliveries ORDER BY event_number")
                                       .columns(delivery_id=String, payload=LargeBinary))).all()
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert [tuple(r) for r in back] == [("d-1", b"message-1"), ("d-2", b""), ("d-3", b"\x00" * 5000)]
        assert "delivery_messages" not in tables
    finally:
        await engine.dispose()


def _table_sql(sync_conn, table: str) -> str:  # noqa: ANN001
    if sync_conn.dialect.name != "sqlite":
        return ""
    return sync_conn.execute(text("SELECT sql FROM sqlite_schema WHERE name = :t"), {"t": table}).scalar_one()


async def test_0024_keeps_every_service_level_without_rowid_and_back(store_url):
    """0024 rebuilds `service_levels` WITHOUT ROWID on SQLite (its primary
    key's own index gone), every row kept; its downgrade rebuilds it with a
    rowid, every row kept. PostgreSQL has no rowid: the rows stay as they are."""
    engine = create_engine(store_url)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    day = date(2026, 12, 1)
    levels = [(f"c-{n}", day, day, date(2026, 12, 8), n, state)
              for n, state in enumerate(("met", "breach", "at-risk"))]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "upgrade", "0023")
            await conn.execute(persons.insert().values(person_id="p-1", nhs_number_index="i", details=b"x",
                                                       created_at=at, updated_at=at))
            for change_id, *_ in levels:
                await conn.execute(register_changes.insert().values(
                    change_id=change_id, person_id="p-1", source="s", source_message_id=change_id,
                    change_type="admitted-under-s3", effective_date=day, notified_on=day, recorded_on=day,
                    canonical={}, correlation_id="c", received_at=at))
            for change_id, notified, recorded, deadline, taken, state in levels:
                await conn.execute(service_levels.insert().values(
                    change_id=change_id, notified_on=notified, recorded_on=recorded, deadline=deadline,
                    working_days_taken=taken, state=state))
        sqlite = engine.dialect.name == "sqlite"
        for verb, target, without_rowid in (("upgrade", "head", True), ("downgrade", "0023", False)):
            async with engine.begin() as conn:
                await conn.run_sync(_migrate, verb, target)
                rows = (await conn.execute(select(service_levels).order_by(service_levels.c.change_id))).all()
                sql = await conn.run_sync(_table_sql, "service_levels")
                indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("service_levels"))
            assert [tuple(r) for r in rows] == levels
            if sqlite:
                assert ("WITHOUT ROWID" in sql) is without_rowid, sql
                assert indexes == []  # the primary key is the only index, as before
    finally:
        await engine.dispose()


async def test_0026_fills_each_delivery_s_field_groups_from_its_own_allowed_disclosure_and_back(store_url):
    """0026 adds `deliveries.field_groups` and fills it for the rows queued
    before, whatever their status, from the first `allowed` disclosure of the
    event to the subscription's organisation (what the lease, the feed and the
    replay probed for each delivery): not another organisation's, not a
    denial; NULL where there is none (queued by hand). Its downgrade drops the
    column, every row kept."""
    engine = create_engine(store_url)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    subs = {"sub-council": "E06000060", "sub-council-file": "E06000060", "sub-icb": "QU9"}
    # (delivery, subscription, event, status)
    queued = [("d-1", "sub-council", "e-1", "pending"), ("d-2", "sub-icb", "e-1", "pending"),
              ("d-3", "sub-council", "e-2", "delivered"), ("d-4", "sub-council-file", "e-2", "held"),
              ("d-5", "sub-council", "e-3", "dead")]
    # (event, recipient, decision, groups), in the order written
    audit = [("e-1", "E06000060", "denied", []),  # an earlier refusal of the same event: not the message's
             ("e-1", "QU9", "allowed", ["identity", "responsibility"]),
             ("e-1", "E06000060", "allowed", ["address", "demographics", "identity"]),
             ("e-2", "E06000060", "allowed", ["identity"]),  # one per subscription queued: the first
             ("e-2", "E06000060", "allowed", ["identity", "workflow"]),
             ("e-3", "QU9", "allowed", ["identity"])]  # another organisation's only: e-3's own is unknown
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "upgrade", "0025")
            for sid, org in subs.items():
                await conn.execute(subscriptions.insert().values(
                    subscription_id=sid, org_code=org, client_id="c", channel="feed", active=True, created_at=at))
            for n, (did, sid, eid, status) in enumerate(queued, start=1):
                await conn.execute(deliveries.insert().values(
                    delivery_id=did, subscription_id=sid, event_id=eid, message_id=eid, event_type="t",
                    status=status, attempts=0, next_attempt_at=at, correlation_id="c", created_at=at,
                    event_number=n))
            for eid, org, decision, groups in audit:
                await conn.execute(disclosures.insert().values(
                    event_id=eid, person_id="p-1", event_type="t", recipient_org=org, decision=decision,
                    agreement_id="DSA-1", field_groups=groups, reason="r", channel="feed", at=at))
        await create_schema(engine)
        async with engine.connect() as conn:
            filled = {r.delivery_id: r.field_groups for r in (await conn.execute(
                select(deliveries.c.delivery_id, deliveries.c.field_groups))).all()}
            nulls = (await conn.execute(select(deliveries.c.delivery_id)
                                        .where(deliveries.c.field_groups.is_(None)))).scalars().all()
        assert filled == {"d-1": ["address", "demographics", "identity"], "d-2": ["identity", "responsibility"],
                          "d-3": ["identity"], "d-4": ["identity"], "d-5": None}
        assert nulls == ["d-5"]  # SQL NULL, not JSON null: unknown
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "downgrade", "0025")
            columns = {c["name"] for c in await conn.run_sync(lambda c: inspect(c).get_columns("deliveries"))}
            kept = (await conn.execute(text("SELECT delivery_id, status FROM deliveries ORDER BY event_number")
                                       .columns(delivery_id=String, status=String))).all()
        assert "field_groups" not in columns
        assert [tuple(r) for r in kept] == [(did, status) for did, _, _, status in queued]
    finally:
        await engine.dispose()
