"""Alembic environment: runs on the connection hub.store.db.create_schema hands
over (so one transaction and one set of engine settings), or stand-alone from
alembic.ini with S117_DATABASE_URL for `alembic revision --autogenerate`."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from hub.store.schema import for_dialect, metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE via copy on SQLite
        compare_type=True,
        include_object=for_dialect(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_standalone() -> None:
    from hub.settings import get_settings
    from hub.store.db import create_engine

    async def go() -> None:
        settings = get_settings()
        engine = create_engine(settings.database_url, sqlite_page_size=settings.sqlite_page_size)
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(go())


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    _run_standalone()
