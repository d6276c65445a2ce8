"""The publish/subscribe port. Backends: the embedded SQL log (hub.bus.sql) and,
later, Kafka. Each backend must pass tests/contract/test_bus_contract.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from collections.abc import Collection
from typing import Any, Protocol

EVENTS_TOPIC = "s117.events"


@dataclass(frozen=True, slots=True)
class BusMessage:
    topic: str
    key: str  # partition key: the person id, so one person's events stay in order
    event_id: str
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    offset: int = -1


@dataclass(frozen=True, slots=True)
class Capabilities:
    ordered_per_key: bool
    persistent: bool
    transactional_with_store: bool  # publish joins the register transaction (outbox)


class Subscriber(Protocol):
    capabilities: Capabilities

    async def fetch(self, group_id: str, topic: str, limit: int, *,
                    payload_for: Collection[str] | None = None) -> list[BusMessage]: ...

    async def commit(self, group_id: str, topic: str, next_offset: int, conn: Any = None) -> None: ...

    async def lag(self, group_id: str, topic: str) -> int: ...


# A header of an event on s117.events: the events of the same register change
# published after it, each `<event type>=<bodies it tells besides the
# responsible ones, comma-separated>`, joined by ";" (hub/ingest/service.py).
LATER_EVENTS = "later_events"
# A header of a register change's first event (`s117-register-change-recorded`):
# "1" when the change sorts before a change recorded before it (late history:
# what was told since may be contradicted), "0" when it came in its turn
# (hub/ingest/service.py `write_recorded`). Absent on events published before
# it was kept: read as possibly late.
LATE = "late"
# A header of an event the hub's workflows or the review scanner publish (not
# a register change's): the `received_at` (ISO 8601, UTC) of the latest
# register change of the person in the history it was told against (read in
# the transaction or scan that published it). The dispatcher tells the event
# against the changes received by then, not those received since (each has
# events of its own still to come). Absent on events published before it was
# kept: read as the whole history.
HISTORY_RECEIVED_BY = "history_received_by"


def history_received_by(received: datetime) -> str:
    """The header's value for the latest `received_at` of a history read
    (a naive value, as SQLite gives it back, is UTC)."""
    return (received.replace(tzinfo=UTC) if received.tzinfo is None else received.astimezone(UTC)).isoformat()
