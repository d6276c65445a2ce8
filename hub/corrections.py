"""The one shape of a correction of the register: a retraction of a change
recorded in error (hub/retraction.py), a merge of two NHS numbers
(hub/merges.py) and the reversal of a merge made in error (hub/unmerges.py).

Each is one write transaction, in this order: the events topic's publish
lock (taken first, as ingest takes it: no event of the person is published in
between), the row lock of each person it changes, the access decision
recorded (allowed or refused: `access_decisions`, the service's action), the
correction written, the register counts' row of each person it changes, one
`s117-notification-corrected` a person on the log (told as late history, a
header naming the correction); then, once it commits, the log line saying
what was done (and the dispatcher tells it). `correction` opens that
transaction with the topic's lock taken and hands a `Correction` for the
rest; what a service asks `then` to say is said only if it commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.access import record_decision
from hub.bus.payload import event_payload, status_on_the_bus
from hub.bus.port import EVENTS_TOPIC, HISTORY_CHANGES, LATE, BusMessage, history_changes
from hub.bus.sql import lock_topic, publish
from hub.codec import to_jsonable
from hub.crypto import DataProtector
from hub.domain.access import Decision
from hub.domain.agreements import AgreementBook
from hub.domain.dates import england_day
from hub.domain.model import DomainEvent, EventType, RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.ingest.service import Client
from hub.register_counts import record_status
from hub.store.db import write_transaction
from hub.store.schema import persons, register_status


class CorrectionService:
    """What each correction service holds: the store, the reference data and agreements a history is
    evaluated against, the data key, and the day (England's)."""

    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook,
                 protector: DataProtector, today: Callable[[], date] = england_day) -> None:
        self._engine = engine
        self._ref = ref
        self._agreements = agreements
        self._protector = protector
        self._today = today


@dataclass(slots=True)
class Correction:
    """One correction's transaction (see the module): its connection, who asks, on which channel, the
    action its access decisions record and the request's correlation id."""

    conn: AsyncConnection
    client: Client
    channel: str
    action: str
    correlation_id: str
    _said: list[Callable[[], None]] = field(default_factory=list)

    async def lock_person(self, where: ColumnElement[bool], *columns: Any) -> Any:
        """The `persons` row `where` picks, locked until the commit (as ingest locks it): its `person_id`
        and `columns`; None if there is none."""
        return (await self.conn.execute(select(persons.c.person_id, *columns).where(where)
                                        .with_for_update())).first()

    async def decided(self, decision: Decision | None = None, **fields: Any) -> None:
        """The access decision, allowed or refused, in `access_decisions` (`fields`: `record_decision`'s)."""
        await record_decision(self.conn, self.client, channel=self.channel, action=self.action, decision=decision,
                              correlation_id=self.correlation_id, **fields)

    async def counted(self, person_id: str, history: Sequence[RegisterChange], after: S117Status) -> None:
        """The register counts' row of `person_id` as `history` (`after`) stands; none left: no row."""
        if history:
            await record_status(self.conn, person_id, after, late=False)
        else:
            await self.conn.execute(delete(register_status).where(register_status.c.person_id == person_id))

    async def publish(self, event: DomainEvent, event_id: str, carried: RegisterChange, after: S117Status,
                      history: Sequence[str], marker: tuple[str, str]) -> None:
        """`event` on the log under its person's key, told as late history: `history` the ids of the
        person's history now, `marker` the header naming the correction (e.g. `(RETRACTED, change id)`)."""
        await publish(self.conn, BusMessage(
            topic=EVENTS_TOPIC, key=event.person_id, event_id=event_id,
            payload=event_payload(event, to_jsonable(carried), status_on_the_bus(after)),
            headers={"correlation_id": self.correlation_id, "source": self.client.client_id,
                     "event_type": event.event_type.value, LATE: "1", marker[0]: marker[1],
                     HISTORY_CHANGES: history_changes(history)}))

    def then(self, say: Callable[[], None]) -> None:
        """`say` once the transaction has committed (the log line of what was done); never if it does not."""
        self._said.append(say)


@asynccontextmanager
async def correction(engine: AsyncEngine, client: Client, *, action: str, channel: str,
                     correlation_id: str) -> AsyncIterator[Correction]:
    """One correction's write transaction, the events topic's lock taken; committed if the block ends
    normally (a refusal recorded and returned too), then what it asked `then` to say, said."""
    async with write_transaction(engine) as conn:
        await lock_topic(conn, EVENTS_TOPIC)
        done = Correction(conn, client, channel, action, correlation_id)
        yield done
    for say in done._said:
        say()


def corrected(person_id: str, carried: RegisterChange, summary: str, **details: Any) -> DomainEvent:
    """The event a merge or its reversal publishes for a person: a correction carrying `carried` (the
    change it is told against), routed to no one as it is (the dispatcher tells each body it concerns)."""
    return DomainEvent(event_type=EventType.NOTIFICATION_CORRECTED, person_id=person_id,
                       change_id=carried.change_id, occurred_on=carried.effective_date, summary=summary,
                       details=details)
