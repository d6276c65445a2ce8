"""Whether this process's store takes writes, for `/health/ready`.

A write that fails for a store fault (hub/store/db.py `store_fault`: the disk full, the file,
its directory or the database read-only, a file-size limit, the write lock held past the busy
wait) marks the store unwritable: SQLAlchemy's `handle_error` event on every engine the hub
makes (`watch_engine`), so a failed COMMIT of the shared SQLite writer, of aiosqlite or of
asyncpg is seen wherever it happened in the process. While marked, `/health/ready` answers 503
naming the check (`store_writes`) and the fault's words (STORE_FAULTS: the cause, never what was
written), and `run` rewrites one row (`store_write_probe`, a transaction of one tiny UPDATE)
every `PROBE_SECONDS`; the first that commits clears the mark, and the hub is ready again
without a restart. While writes succeed nothing is probed: a readiness probe costs no write.

Each process keeps its own mark (with the workers apart, the front answers readiness from its
own writes: a request it could not record, or its own background writes). `s117_store_writable`
is 0 while any live process's mark is set (alert S117StoreNotWritable)."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.periodic import every
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.db import STORE_FAULTS, insert_or_merge, store_fault, write_transaction

log = get_logger("hub.store.writable")

PROBE_SECONDS = 2.0  # while unwritable: one probe write this often (none while writable)
PROBE_ROW = 1


class StoreWrites:
    """One process's view of whether its store takes writes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.fault: str | None = None  # the kind (a key of STORE_FAULTS) of the last failed write, until one succeeds
        self.since: float | None = None
        self._clock = clock
        metrics.STORE_WRITABLE.set(1)

    def failed(self, kind: str) -> None:
        if self.fault is None:
            self.since = self._clock()
            log.error("store not writable: not ready until a write succeeds", error_kind=kind)
        self.fault = kind
        metrics.STORE_WRITABLE.set(0)

    def succeeded(self) -> None:
        if self.fault is not None:
            log.info("store writable again: ready", error_kind=self.fault)
        self.fault = self.since = None
        metrics.STORE_WRITABLE.set(1)

    def check(self) -> str:
        """`/health/ready`'s `store_writes`: `ok`, or the fault's kind and words."""
        return "ok" if self.fault is None else f"{self.fault}: {STORE_FAULTS[self.fault]}"

    async def probe(self, engine: AsyncEngine) -> bool:
        """One write transaction (the probe row rewritten); True if it committed."""
        from hub.store.schema import store_write_probe

        try:
            async with write_transaction(engine) as conn:
                stmt = insert_or_merge(conn.dialect, store_write_probe).values(
                    probe_id=PROBE_ROW, probed_at=datetime.now(UTC))
                await conn.execute(stmt.on_conflict_do_update(index_elements=["probe_id"],
                                                              set_={"probed_at": stmt.excluded.probed_at}))
        except Exception as exc:  # noqa: BLE001 - the probe's own failure: still unwritable
            kind = store_fault(exc)
            if kind is not None:
                self.failed(kind)
            else:
                log.warning("store write probe failed", exc_type=type(exc).__name__)
            return False
        self.succeeded()
        return True

    async def run(self, engine: AsyncEngine, stop: asyncio.Event, interval: float = PROBE_SECONDS) -> None:
        """Until `stop`: while marked unwritable, a probe every `interval` seconds; else nothing but a
        look at the mark (no I/O)."""
        async def look() -> None:
            if self.fault is not None:
                await self.probe(engine)

        await every(interval, stop, look, log=log, failed="store write probe failed", wait_first=True)


_WRITES: weakref.WeakKeyDictionary[Engine, StoreWrites] = weakref.WeakKeyDictionary()


def store_writes(engine: AsyncEngine | Engine) -> StoreWrites:
    """The tracker of `engine`'s store (one per engine the hub made, the SQLite writer's sharing its engine's)."""
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    got = _WRITES.get(sync)
    if got is None:
        got = _WRITES[sync] = StoreWrites()
    return got


def watch_engine(engine: Engine, writes: StoreWrites) -> None:
    """Mark `writes` unwritable on every store fault an execution or COMMIT on `engine` raises."""
    _WRITES.setdefault(engine, writes)

    @event.listens_for(engine, "handle_error")
    def _store_fault(context) -> None:  # noqa: ANN001
        # bound_waits' StoreNoAnswer, where a handler before this one returned an exception to raise instead
        kind = store_fault(getattr(context, "chained_exception", None) or context.original_exception)
        if kind is not None:
            writes.failed(kind)
