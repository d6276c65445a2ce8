"""The Alembic migrations build exactly the schema hub/store/schema.py declares,
on each store backend, and running them again is a no-op."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from hub.store.db import create_engine, create_schema
from hub.store.schema import for_dialect, metadata

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
