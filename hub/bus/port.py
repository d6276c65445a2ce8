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
# A header of the one event a retraction publishes (hub/retraction.py): the id
# of the register change retracted as recorded in error. The event is told as
# late history is (what was told since may be contradicted), against the
# changes its `HISTORY_CHANGES` names (the person's history without the
# retracted change, read under the topic's lock), and only to the bodies whose
# position that moves (`s117-notification-corrected` to a body told otherwise);
# the workflows withdraw a transfer case whose hand-over it takes away.
RETRACTED = "retracted"
# A header of the one event the reversal of a retraction made in error publishes (hub/unretractions.py): the
# id of the register change reinstated. Told as a retraction is (late history, against its `HISTORY_CHANGES`:
# the person's history with the change again), to each body whose position that moves, and to each body told
# of the change whose position it leaves (the change stands); the workflows open a case the change's own
# events would have opened had the retraction not been read first.
REINSTATED = "reinstated"
# A header of the one event an NHS number merge publishes (hub/merges.py), on the retained person's key:
# the hub person id the superseded number held (the retained person's own when the superseded number's
# person was simply given the retained number). Told as a retraction is (late history, against its
# `HISTORY_CHANGES`: the joined history), and besides, every body told of the superseded number's person
# hears of the merge (`s117-notification-corrected` superseding the last message it had about them).
MERGED = "merged"
# A header of the events a change of reference data publishes (hub/refdata_retell.py), one a person whose
# responsible council or ICB it moves: the data's fingerprint. Told as a retraction is (against its
# `HISTORY_CHANGES`: the whole history), to each body whose position it moves.
REFERENCE_DATA = "reference_data"
# A header of each event the reversal of a merge made in error publishes (hub/unmerges.py), one on each
# person's key: the other person's hub id (the person's own when the merge had given the superseded number's
# person the retained number). Told as a retraction is (late history, against its `HISTORY_CHANGES`: the
# person's history as the reversal left it), and besides, every body told of the person hears the reversal
# (`s117-notification-corrected` superseding the last message it had about them).
UNMERGED = "unmerged"
# A header of an event the hub's workflows or the review scanner publish (not
# a register change's): the change ids of the person's history it was told
# against, sorted, joined by "," (`history_changes`). The publisher reads that
# history holding the topic's publish lock (hub/bus/sql.py `lock_topic`), so no
# change can commit between the read and the event: the ids are exactly the
# person's changes published before the event, in commit order, whatever their
# `received_at` (stamped before commit, and by each instance's own clock). The
# dispatcher tells the event against those changes only, not those committed
# since (each has events of its own after it). An exact set rather than a bus
# offset: the dispatcher knows no change's offset, and in Kafka mode sees the
# topic's offsets, not the outbox's. Absent on events published before it was
# kept: `HISTORY_RECEIVED_BY`.
HISTORY_CHANGES = "history_changes"
# The header such an event carried before `HISTORY_CHANGES`, and still carries
# for a dispatcher of that version (several instances on one store, upgraded
# one by one): the `received_at` (ISO 8601, UTC) of the latest register change
# of the person in the history it was told against. Read only where
# `HISTORY_CHANGES` is absent: the changes received by then (received_at is
# not commit order on PostgreSQL: a change stamped earlier can commit later).
# Absent as well (published before either was kept): the whole history.
HISTORY_RECEIVED_BY = "history_received_by"


def history_changes(change_ids: Collection[str]) -> str:
    """The `HISTORY_CHANGES` header's value for the change ids of a history read."""
    return ",".join(sorted(change_ids))


def history_received_by(received: datetime) -> str:
    """The header's value for the latest `received_at` of a history read
    (a naive value, as SQLite gives it back, is UTC)."""
    return (received.replace(tzinfo=UTC) if received.tzinfo is None else received.astimezone(UTC)).isoformat()
