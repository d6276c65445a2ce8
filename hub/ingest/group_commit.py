"""Group commit: concurrent register changes written in one transaction per
short batch, each caller answered only once its batch is durable.

A caller hands `GroupCommit.run` a *unit of work*: an async function of a
connection that reads what it needs (locking the person), evaluates, and
writes. One writer task takes the units queued since its last commit (up to
`max_batch`, waiting at most `max_wait` seconds for more while others are
arriving), opens one transaction, runs them one after another and commits
once, so a burst of N changes costs one fsync rather than N.

- **Per-person order**: each unit names its keys (the person, the source
  message id); a unit whose key is already in the forming batch waits for the
  next one, in arrival order. So within a batch no unit reads what another
  wrote, and the writes can be deferred:
- **Write-behind**: a plain `INSERT` executed with a parameter dict
  (`conn.execute(table.insert(), {...})`) is queued and executed at the end of
  the batch as one `executemany` per table and column set, in first-seen
  table order (so foreign keys are satisfied; `insert_first`'s rows go
  ahead of all of them); every other statement (reads,
  updates, `ON CONFLICT` inserts, locks) runs at once. A unit must not read
  back rows it inserted itself that way.
- **Failure is per unit**: if any unit raises or asks to roll back
  (`async with conn.begin() as tx: ... await tx.rollback()`: alone, that
  really rolls back, and the unit may then write in a transaction of its
  own, as a held change does), or the batch
  fails to commit (a unique key taken by another instance, a deadlock), the
  batch is rolled back and every unit in it is run again on its own, in its
  own transaction, exactly as without group commit; each caller gets its own
  unit's answer or exception. Units must therefore be re-runnable (functions
  of what is committed), which a register change's unit is.
- **SQLite: no thread hop per statement.** On a SQLite file the writer
  uses the engine's shared synchronous connection (`hub.store.db.InlineWriter`):
  the batch's statements, its `BEGIN IMMEDIATE` (in a thread only when
  another connection holds the lock) and its `COMMIT` run on the event loop,
  rather than paying the aiosqlite hand-off (a queue put, a thread wake-up
  and a future) for each of a change's statements.
  PostgreSQL (and `:memory:`) use the async engine as before.
- **Counts once committed**: `conn.count(counter)` adds to a metric once the
  transaction has committed, each counter once a batch with its total; a
  batch that fails counts nothing (its units, run again alone, count for
  themselves).
- `before_batch(conn)` runs first in every transaction (PostgreSQL: take the
  event topic's lock before any person lock, so batches of two instances
  queue rather than deadlock).
- `prefetch(conn, hints)` runs next in a batch's transaction (not a unit's
  own), with each unit's `hint`: what the units would each read, read once
  for the batch; a unit finds it as `conn.prefetched` (PostgreSQL ingest:
  hub/ingest/prefetch.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect, Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Insert

from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.db import after_commit_hook, begin_with_hooks, inline_writer, insert_rows

log = get_logger("hub.ingest.group_commit")
T = TypeVar("T")


class _UnitTx:
    """What a unit's `async with conn.begin() as tx` yields: its transaction
    is the batch's. `rollback()` inside a batch abandons the batch (every unit
    is run again on its own); run alone, it rolls the real transaction back
    (releasing SQLite's write lock) and the unit may go on to write elsewhere."""

    def __init__(self, wb: WriteBehind) -> None:
        self._wb = wb

    async def __aenter__(self) -> _UnitTx:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def rollback(self) -> None:
        if not self._wb.alone:
            raise _Fallback
        self._wb.undo = True
        self._wb._queued.clear()
        self._wb._first.clear()
        await self._wb._conn.rollback()  # the unit's own transaction is its connection's


class WriteBehind:
    """The connection a unit of work sees inside a batch (see module doc)."""

    def __init__(self, conn: AsyncConnection, defer: bool = True, alone: bool = False) -> None:
        self._conn = conn
        self._defer = defer
        # The connection's dialect, and its after-commit hook (hub.store.db.after_commit_hook: None
        # if it has none), taken once: each unit's statements and publishes ask for them.
        self.dialect: Dialect = conn.dialect
        self.after_commit: Callable[[Callable[[], None]], None] | None = after_commit_hook(conn)
        # A prepared statement (hub.store.db.Prepared) runs at once, on the driver, if the batch's
        # connection is the inline SQLite writer: its own `run_prepared`, which `execute_prepared`
        # calls (None otherwise: it executes the statement through SQLAlchemy).
        self.run_prepared: Callable[..., Any] | None = getattr(conn, "run_prepared", None)
        self.alone = alone  # the unit runs in a transaction of its own (its `rollback()` rolls it back), not a batch's
        self._queued: dict[tuple[Any, tuple[str, ...]], list[dict[str, Any]]] = {}  # (table or statement, columns)
        self._first: dict[tuple[Any, tuple[str, ...]], list[dict[str, Any]]] = {}  # `insert_first`'s
        self.undo = False
        # What `GroupCommit`'s `prefetch` read for the whole batch (None: each unit reads for itself).
        self.prefetched: Any = None
        self.counted: dict[Any, float] = {}  # counter -> amount, added once committed (`count`)

    @property
    def sync_connection(self) -> Connection:
        """The connection whose commit makes the batch durable (hub/bus/sql.py listens for it)."""
        return self._conn.sync_connection

    def begin(self) -> _UnitTx:
        return _UnitTx(self)

    def count(self, counter: Any, amount: float = 1) -> None:
        """`counter.inc(amount)` once the transaction has committed, summed over
        the batch: one increment a counter a batch (in the hub's multiprocess
        metrics each is a write to a shared file), and none for a batch that
        failed (its units, run again alone, count for themselves)."""
        self.counted[counter] = self.counted.get(counter, 0) + amount

    async def execute(self, statement: Any, parameters: Any = None) -> Result | None:
        if self._defer and type(statement) is Insert and isinstance(parameters, dict) \
                and statement._values is None and not statement._returning \
                and statement._post_values_clause is None:
            self._queued.setdefault((statement.table, tuple(parameters)), []).append(parameters)
            return None
        if parameters is None:
            return await self._conn.execute(statement)
        return await self._conn.execute(statement, parameters)

    async def defer(self, statement: Any, parameters: dict[str, Any]) -> None:
        """`statement` (one whose result nobody reads: an upsert, say) run
        with the batch's plain inserts, one executemany per statement and
        parameter set, in first-seen order; at once when not deferring. The
        unit must not read what it writes, nor may another unit of the batch
        (each writes its own rows: keys keep one unit per person in a batch)."""
        await self._later(self._queued, statement, statement, parameters)

    async def insert_first(self, statement: Insert, parameters: dict[str, Any]) -> None:
        """A plain INSERT queued ahead of every other statement of the batch,
        whoever queued theirs first: rows the batch's other rows refer to (a
        person new to the register, whose changes name them). At once when
        not deferring."""
        await self._later(self._first, statement.table, statement, parameters)

    async def _later(self, queue: dict[tuple[Any, tuple[str, ...]], list[dict[str, Any]]], target: Any,
                     statement: Any, parameters: dict[str, Any]) -> None:
        """Queued under `target` (a table: its plain insert; else the statement) for `flush`; at once when not deferring."""
        if not self._defer:
            await self._conn.execute(statement, parameters)
            return
        queue.setdefault((target, tuple(parameters)), []).append(parameters)

    async def flush(self) -> None:
        # dicts keep insertion order: tables in the order first written.
        first, queued, self._first, self._queued = self._first, self._queued, {}, {}
        on_driver = getattr(self._conn, "insert_rows", None)  # the inline SQLite writer's (hub.store.db.SyncConn)
        for (target, cols), rows in (*first.items(), *queued.items()):
            if isinstance(target, Table):
                if on_driver is not None:
                    if on_driver(target, cols, rows):
                        continue  # SQLite: compiled once, on the driver
                elif await insert_rows(self._conn, target, rows):
                    continue  # PostgreSQL: on asyncpg, without SQLAlchemy's execution (hub.store.db)
                target = _plain_insert(target)
            await self._conn.execute(target, rows)


def _add_counts(counted: dict[Any, float]) -> None:
    for counter, amount in counted.items():
        counter.inc(amount)


@cache
def _plain_insert(table: Table) -> Insert:
    """`table.insert()`, made once per table (an Insert is immutable; making one costs
    about 1.5 us, seven a batch)."""
    return table.insert()


@asynccontextmanager
async def _engine_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction on the async engine (PostgreSQL, `:memory:`)."""
    async with engine.connect() as aconn:
        async with begin_with_hooks(aconn):  # `after_commit_hook`: told once committed
            yield aconn


@dataclass(slots=True)
class _Item(Generic[T]):
    unit: Callable[[Any], Awaitable[T]]
    keys: frozenset[Hashable]
    future: asyncio.Future[T]
    hint: Any = None  # handed to `prefetch` with the rest of its batch's


class GroupCommit:
    def __init__(
        self, engine: AsyncEngine, max_batch: int = 64, max_wait: float = 0.002,
        before_batch: Callable[[AsyncConnection], Awaitable[None]] | None = None,
        prefetch: Callable[[AsyncConnection, list[Any]], Awaitable[Any]] | None = None,
    ) -> None:
        self._engine = engine
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._before_batch = before_batch
        # After `before_batch`, with every unit's hint: what the batch's units
        # would each read, read once (`WriteBehind.prefetched`; hub/ingest/prefetch.py).
        self._prefetch = prefetch
        self._queue: deque[_Item[Any]] = deque()
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_batch = 0
        self._inline = inline_writer(engine)  # SQLite file: statements inline (hub/store/db.py), shared
        self.batches = 0
        self.units = 0

    async def run(self, unit: Callable[[Any], Awaitable[T]], keys: Iterable[Hashable] = (), hint: Any = None) -> T:
        """Run `unit(conn)` in the next batch; return its result once committed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): start afresh
            self._loop, self._queue, self._wake, self._writer = loop, deque(), asyncio.Event(), None
        item = _Item(unit, frozenset(keys), loop.create_future(), hint=hint)
        self._queue.append(item)
        assert self._wake is not None
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_loop(), name="group-commit")
        return await item.future

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while self._queue:
            await asyncio.sleep(0)  # let callers that are ready enqueue first
            # Under concurrent load: give the batch a few ms to fill, up to as
            # many as the last one took. Senders that each wait for their
            # answer (an interface engine's MLLP connections) are all back by
            # then: waiting for more only left the loop idle.
            target = min(self.max_batch, self._last_batch)
            if target > 1 and len(self._queue) < target and self.max_wait > 0:
                deadline = time.perf_counter() + self.max_wait
                while len(self._queue) < target:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), left)
                    except TimeoutError:
                        break
            batch = self._take()
            self._last_batch = len(batch)
            try:
                await self._commit(batch)
            except BaseException as exc:  # noqa: BLE001 - every caller must hear
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

    def _take(self) -> list[_Item[Any]]:
        batch: list[_Item[Any]] = []
        taken: set[Hashable] = set()
        held: deque[_Item[Any]] = deque()
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            if item.keys & taken:
                held.append(item)  # same person / message: next batch, order kept
            else:
                batch.append(item)
            taken |= item.keys  # a held item's keys block later items too
        held.extend(self._queue)
        self._queue = held
        return batch

    async def _commit(self, batch: list[_Item[Any]]) -> None:
        if len(batch) == 1:
            await self._alone(batch[0])
            return
        results: list[Any] = []
        try:
            async with self._transaction() as conn:
                if self._before_batch is not None:
                    await self._before_batch(conn)
                wb = WriteBehind(conn)
                if self._prefetch is not None:
                    wb.prefetched = await self._prefetch(conn, [item.hint for item in batch])
                for item in batch:
                    results.append(await item.unit(wb))
                await wb.flush()
        except Exception as exc:  # noqa: BLE001 - each unit is re-run alone and answers for itself
            log.info("group commit batch fell back to one transaction per change", count=len(batch),
                     exc_type=type(exc).__name__)
            metrics.INGEST_FALLBACKS.inc()
            for item in batch:
                await self._alone(item)
            return
        self.batches += 1
        self.units += len(batch)
        metrics.INGEST_BATCH.observe(len(batch))
        _add_counts(wb.counted)
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    async def _alone(self, item: _Item[Any]) -> None:
        try:
            async with self._transaction() as conn:
                if self._before_batch is not None:
                    await self._before_batch(conn)
                wb = WriteBehind(conn, alone=True)
                result = await item.unit(wb)
                if not wb.undo:
                    await wb.flush()
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            if not item.future.done():
                item.future.set_exception(exc)
            return
        self.batches += 1
        self.units += 1
        metrics.INGEST_BATCH.observe(1)
        if not wb.undo:  # rolled back: nothing of the unit's transaction was kept
            _add_counts(wb.counted)
        if not item.future.done():
            item.future.set_result(result)

    def _transaction(self) -> Any:
        """One write transaction (an async context manager giving its
        connection): committed if the block ends normally (and not rolled back
        by a unit: `await conn.rollback()`), rolled back if it raises. On a
        SQLite file the inline writer's own, without a layer around it."""
        if self._inline is not None:
            return self._inline.transaction()
        return _engine_transaction(self._engine)

    def close(self) -> None:
        """Nothing of its own to release: the engine's shared inline writer is
        released with the engine's (hub.store.db.close_inline)."""


class _Fallback(Exception):
    """A unit asked to roll back: undo the batch, run each unit alone."""
