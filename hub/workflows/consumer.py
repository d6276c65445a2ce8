"""The workflows' own consumer of the event log (group "workflows") and the
clock scanner's loop.

The consumer opens a transfer case when `s117-responsibility-transferred`
appears and a dispute case when `s117-dispute-raised` does (a source's own
register change), and closes a dispute a source resolves on the register. It claims each
message under the group's offset row lock and commits the offset in the same
transaction as the case it opens (as the dispatcher does), so a replay opens
nothing twice; case ids are derived from the event id for the same reason.
A run of events that concern no case is passed over with one offset commit.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from hub.bus.port import EVENTS_TOPIC, BusMessage, Subscriber
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.schema import dead_letters
from hub.workflows.service import WorkflowService

log = get_logger("hub.workflows.consumer")
GROUP = "workflows"
INTERESTING = frozenset({"s117-responsibility-transferred", "s117-dispute-raised", "s117-dispute-resolved"})


class WorkflowConsumer:
    def __init__(self, service: WorkflowService, bus: Subscriber, engine, max_attempts: int = 3) -> None:  # noqa: ANN001
        self._service = service
        self._bus = bus
        self._engine = engine
        self._max_attempts = max_attempts
        self._failures: dict[str, int] = {}

    async def run_once(self, limit: int = 100) -> int:
        batch = await self._bus.fetch(GROUP, EVENTS_TOPIC, limit)
        handled = 0
        i = 0
        while i < len(batch):
            # Most events open or close no case: a run of them costs one offset
            # commit (one transaction), not a transaction each.
            j = i
            while j < len(batch) and batch[j].headers.get("event_type") not in INTERESTING:
                j += 1
            if j > i:
                await self._bus.commit(GROUP, EVENTS_TOPIC, batch[j - 1].offset + 1)
                handled += j - i
                i = j
                continue
            if not await self._handle(batch[i]):
                break  # retry this message (and keep order) after a pause
            handled += 1
            i += 1
        metrics.CONSUMER_LAG.labels(group=GROUP, topic=EVENTS_TOPIC).set(await self._bus.lag(GROUP, EVENTS_TOPIC))
        return handled

    async def _handle(self, msg: BusMessage) -> bool:
        try:
            async with self._engine.begin() as conn:
                claim = getattr(self._bus, "claim", None)
                if claim is not None and not await claim(conn, GROUP, EVENTS_TOPIC, msg.offset):
                    return True
                if msg.headers.get("event_type") in INTERESTING:
                    await self._service.on_event(conn, msg.payload, msg.event_id)
                await self._bus.commit(GROUP, EVENTS_TOPIC, msg.offset + 1, conn)
            self._failures.pop(msg.event_id, None)
            return True
        except Exception as exc:  # noqa: BLE001 - retry, then dead-letter; never stop the flow
            n = self._failures.get(msg.event_id, 0) + 1
            self._failures[msg.event_id] = n
            log.warning("workflow consumer failed", attempt=n, exc_type=type(exc).__name__, offset=msg.offset)
            if n < self._max_attempts:
                return False
            async with self._engine.begin() as conn:
                await conn.execute(dead_letters.insert().values(
                    topic=msg.topic, group_id=GROUP, offset=msg.offset, event_id=msg.event_id,
                    handler="workflows", reason=f"{type(exc).__name__} after {n} attempts"[:300], at=datetime.now(UTC)))
                await self._bus.commit(GROUP, EVENTS_TOPIC, msg.offset + 1, conn)
            self._failures.pop(msg.event_id, None)
            metrics.DEAD_LETTERS.labels(handler="workflows").inc()
            return True


async def run_workflow_consumer(consumer: WorkflowConsumer, poll_seconds: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            handled = await consumer.run_once()
        except Exception as exc:  # noqa: BLE001 - logged; the next round retries
            log.error("workflow consumer round failed", exc_type=type(exc).__name__)
            handled = 0
        if not handled:
            try:
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
            except TimeoutError:
                pass


async def run_workflow_scanner(service: WorkflowService, interval_seconds: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await service.scan()
        except Exception as exc:  # noqa: BLE001 - the next scan retries
            log.error("workflow clock scan failed", exc_type=type(exc).__name__)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
        except TimeoutError:
            pass
