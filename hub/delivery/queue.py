"""Queuing a delivery: the one place a message is put on a subscription's
queue, with the subscription's next event number.

Event numbers are per subscription, start at 1 and have no gaps: the number
comes from the subscription's counter row (`subscription_counters`), bumped in
the caller's transaction together with the delivery insert. On PostgreSQL the
UPDATE takes the counter row's lock until commit, so two hub instances queuing
for one subscription take turns and neither number is lost nor shared; a
rolled-back transaction gives its number back with it. Every channel carries
the number (webhook `S117-Event-Number`, Kafka `event_number`, the feed cursor
and SSE id, the NDJSON `event_number` field), so a subscriber that sees N+2
after N knows it missed N+1 and can ask GET /v1/subscriptions/{id}/events for it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.store.schema import deliveries, subscription_counters


async def next_event_number(conn: AsyncConnection, subscription_id: str) -> int:
    """Take the subscription's next event number inside the caller's transaction."""
    bumped = (await conn.execute(
        subscription_counters.update()
        .where(subscription_counters.c.subscription_id == subscription_id)
        .values(last_event_number=subscription_counters.c.last_event_number + 1)
        .returning(subscription_counters.c.last_event_number))).scalar_one_or_none()
    if bumped is not None:
        return int(bumped)
    # A subscription made without its counter row (the row is normally created
    # with the subscription, and by the migration for older ones).
    await conn.execute(subscription_counters.insert().values(subscription_id=subscription_id, last_event_number=1))
    return 1


async def create_counter(conn: AsyncConnection, subscription_id: str) -> None:
    """The counter row of a new subscription (call in the creating transaction)."""
    await conn.execute(subscription_counters.insert().values(subscription_id=subscription_id, last_event_number=0))


async def queue_delivery(
    conn: AsyncConnection, *, subscription_id: str, event_id: str, message_id: str, event_type: str,
    payload: bytes, correlation_id: str, now: datetime | None = None, known_new: bool = False,
) -> int | None:
    """Queue one message (`payload` already encrypted) for a subscription in
    the caller's transaction. Returns its event number, or None when this event
    is already on this subscription's queue (a replayed event: the unique
    (subscription, event) key means it is never queued twice). `known_new`:
    the caller knows this event was never queued (the look-up is skipped; the
    unique key still refuses a second row)."""
    exists = not known_new and (await conn.execute(
        select(deliveries.c.delivery_seq).where(
            deliveries.c.subscription_id == subscription_id, deliveries.c.event_id == event_id))).first()
    if exists:
        return None
    number = await next_event_number(conn, subscription_id)
    now = now or datetime.now(UTC)
    await conn.execute(deliveries.insert().values(
        delivery_id=str(uuid.uuid4()), subscription_id=subscription_id, event_id=event_id, message_id=message_id,
        event_type=event_type, payload=payload, status="pending", attempts=0, next_attempt_at=now,
        correlation_id=correlation_id, created_at=now, event_number=number,
    ))
    return number


class EventNumbers:
    """Event numbers for many deliveries queued in one transaction (the
    dispatcher's batch): each subscription's counter row is read once, locked
    until commit (PostgreSQL `FOR UPDATE`; SQLite's BEGIN IMMEDIATE already
    holds the one write lock), numbers are handed out in memory and `flush`
    writes the last one back, once per subscription. Gap-free as
    `next_event_number`: a caller whose savepoint rolls back puts the numbers
    it took back with `restore(snapshot())` (taken before the savepoint); the rows are queued in `take`
    order, so numbers follow `delivery_seq` within each subscription."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._stored: dict[str, int | None] = {}  # what the row holds (None: no row yet)

    async def take(self, conn: AsyncConnection, subscription_id: str) -> int:
        if subscription_id not in self._last:
            row = (await conn.execute(
                select(subscription_counters.c.last_event_number)
                .where(subscription_counters.c.subscription_id == subscription_id)
                .with_for_update())).first()
            stored = int(row.last_event_number) if row is not None else None
            self._stored[subscription_id] = stored
            self._last[subscription_id] = stored or 0
        self._last[subscription_id] += 1
        return self._last[subscription_id]

    def snapshot(self) -> dict[str, int]:
        return dict(self._last)

    def restore(self, snapshot: dict[str, int]) -> None:
        # A counter first read after the snapshot was read (and locked) inside
        # the rolled-back savepoint, which released its lock (PostgreSQL): forget
        # it, so the next `take` reads and locks it again.
        for sid in [sid for sid in self._last if sid not in snapshot]:
            del self._last[sid], self._stored[sid]
        self._last.update(snapshot)

    async def flush(self, conn: AsyncConnection) -> None:
        """Write every counter that moved (call before the transaction commits)."""
        moved = [(sid, n) for sid, n in self._last.items() if n != (self._stored[sid] or 0)]
        new = [{"subscription_id": sid, "last_event_number": n} for sid, n in moved if self._stored[sid] is None]
        old = [{"sid": sid, "n": n} for sid, n in moved if self._stored[sid] is not None]
        if new:
            await conn.execute(subscription_counters.insert(), new)
        if old:
            await conn.execute(subscription_counters.update()
                               .where(subscription_counters.c.subscription_id == bindparam("sid"))
                               .values(last_event_number=bindparam("n")), old)
        for sid, n in moved:
            self._stored[sid] = n


def delivery_row(*, subscription_id: str, event_id: str, message_id: str, event_type: str, payload: bytes,
                 correlation_id: str, event_number: int, now: datetime) -> dict:
    """A pending delivery, as `queue_delivery` writes it, for an executemany insert."""
    return dict(
        delivery_id=str(uuid.uuid4()), subscription_id=subscription_id, event_id=event_id, message_id=message_id,
        event_type=event_type, payload=payload, status="pending", attempts=0, next_attempt_at=now,
        correlation_id=correlation_id, created_at=now, event_number=event_number,
    )
