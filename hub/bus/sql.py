"""The embedded durable log: messages in a SQL table, offsets per consumer group.

Publishing takes the caller's connection, so the message is written in the
same transaction as the register change: the log is the outbox. A consumer
commits `offset + 1` only after its own work is durable, ideally in the same
transaction as that work (pass `conn`), which makes handling exactly-once in
effect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.bus.port import BusMessage, Capabilities
from hub.store.schema import bus_messages, consumer_offsets


async def publish(conn: AsyncConnection, message: BusMessage) -> None:
    await conn.execute(
        bus_messages.insert().values(
            topic=message.topic,
            key=message.key,
            event_id=message.event_id,
            payload=message.payload,
            headers=message.headers,
            created_at=datetime.now(UTC),
        )
    )


class SqlLog:
    capabilities = Capabilities(ordered_per_key=True, persistent=True, transactional_with_store=True)

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _committed(self, conn: AsyncConnection, group_id: str, topic: str) -> int:
        row = (
            await conn.execute(
                select(consumer_offsets.c.next_offset).where(
                    consumer_offsets.c.group_id == group_id, consumer_offsets.c.topic == topic
                )
            )
        ).first()
        return int(row[0]) if row else 0

    async def fetch(self, group_id: str, topic: str, limit: int = 100) -> list[BusMessage]:
        async with self._engine.connect() as conn:
            start = await self._committed(conn, group_id, topic)
            rows = (
                await conn.execute(
                    select(bus_messages)
                    .where(bus_messages.c.topic == topic, bus_messages.c.offset >= start)
                    .order_by(bus_messages.c.offset)
                    .limit(limit)
                )
            ).all()
            await conn.rollback()
        return [
            BusMessage(
                topic=r.topic, key=r.key, event_id=r.event_id, payload=r.payload,
                headers=r.headers, offset=int(r.offset),
            )
            for r in rows
        ]

    async def commit(self, group_id: str, topic: str, next_offset: int, conn: Any = None) -> None:
        if conn is None:
            async with self._engine.begin() as own:
                await self._upsert(own, group_id, topic, next_offset)
        else:
            await self._upsert(conn, group_id, topic, next_offset)

    async def _upsert(self, conn: AsyncConnection, group_id: str, topic: str, next_offset: int) -> None:
        now = datetime.now(UTC)
        current = await self._committed(conn, group_id, topic)
        if next_offset <= current:
            return  # never move a committed offset backwards
        exists = (
            await conn.execute(
                select(func.count()).select_from(consumer_offsets).where(
                    consumer_offsets.c.group_id == group_id, consumer_offsets.c.topic == topic
                )
            )
        ).scalar_one()
        if exists:
            await conn.execute(
                consumer_offsets.update()
                .where(consumer_offsets.c.group_id == group_id, consumer_offsets.c.topic == topic)
                .values(next_offset=next_offset, updated_at=now)
            )
        else:
            await conn.execute(
                consumer_offsets.insert().values(
                    group_id=group_id, topic=topic, next_offset=next_offset, updated_at=now
                )
            )

    async def rewind(self, group_id: str, topic: str, to_offset: int) -> None:
        """Replay: move a group back (an operator action, audited by the caller)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                consumer_offsets.update()
                .where(consumer_offsets.c.group_id == group_id, consumer_offsets.c.topic == topic)
                .values(next_offset=to_offset, updated_at=datetime.now(UTC))
            )

    async def lag(self, group_id: str, topic: str) -> int:
        async with self._engine.connect() as conn:
            start = await self._committed(conn, group_id, topic)
            n = (
                await conn.execute(
                    select(func.count()).select_from(bus_messages).where(
                        bus_messages.c.topic == topic, bus_messages.c.offset >= start
                    )
                )
            ).scalar_one()
            await conn.rollback()
        return int(n)
