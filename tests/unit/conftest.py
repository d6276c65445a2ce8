"""Fixtures shared by unit tests of the store's writers."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table

from hub.store.db import create_engine


@pytest.fixture
async def table_engine(tmp_path):  # noqa: ANN001, ANN201
    """A SQLite file with one small table `t` (id, v), and the engine on it."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gc.db'}")
    md = MetaData()
    t = Table("t", md, Column("id", Integer, primary_key=True), Column("v", String(10), nullable=False))
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
    yield engine, t
    await engine.dispose()
