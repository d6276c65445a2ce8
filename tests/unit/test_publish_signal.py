"""hub.bus.sql.publish_signal: set when a transaction in this process that
published commits, not before, and not for one rolled back."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hub.bus.port import BusMessage
from hub.bus.sql import publish, publish_signal
from hub.store.db import create_engine, create_schema


def message() -> BusMessage:
    return BusMessage(topic="s117.events", key="p1", event_id=str(uuid.uuid4()), payload={"n": 1},
                      headers={"event_type": "x"})


@pytest.fixture
async def engine(tmp_path: Path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_schema(engine)
    yield engine
    await engine.dispose()


async def test_set_once_the_publishing_transaction_commits(engine) -> None:
    signal = publish_signal()
    async with engine.begin() as conn:
        await publish(conn, message())
        assert not signal.is_set(), "told before the rows can be read"
    assert signal.is_set()


async def test_not_set_by_a_transaction_rolled_back_or_one_that_did_not_publish(engine) -> None:
    signal = publish_signal()
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await publish(conn, message())
            raise RuntimeError("the unit of work failed")
    async with engine.begin() as conn:
        await conn.exec_driver_sql("SELECT 1")
    assert not signal.is_set()
