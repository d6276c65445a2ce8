"""The deliverers' own writes, coalesced: every subscription's task in the
process (webhook, Kafka topic, file export, FHIR rest-hook) leases its next
batch and records its outcomes through one `Ledger` per engine, which makes
all the operations that are waiting in one write transaction.

A change shared with a council, its host council and an ICB becomes three
deliveries on three subscriptions; their tasks wake together, claim
together and, their receivers answering within the same millisecond or two,
record together. Each claim and each record was its own transaction: at a
steady 100 changes/s that was 2.25 of the hub's 4.2 commits per change
(each a BEGIN IMMEDIATE, a turn of the write lock and, when it wrote, a WAL
fsync on the event loop). Coalesced, the operations of one turn of the loop,
and those that arrive while the transaction waits for the write lock, share
one (bench/JOURNAL.md, "Sixth session").

On PostgreSQL each operation keeps its own transaction (see `Ledger`).

Order and atomicity are unchanged: an operation touches only its own
subscription's rows, operations run in the order they were asked for, and
each caller is answered only once the transaction that holds its operation
has committed. If that transaction fails, nothing of it was written and
each of its operations is made again in a transaction of its own: one that
fails (a subscription whose rows cannot be read) fails only its own caller,
as before, and never holds up the other subscriptions. An operation whose
caller has gone (cancelled: the hub is stopping) before its transaction
starts is not made."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from hub.store.db import inline_writer, write_transaction

T = TypeVar("T")
Op = Callable[[Any], Awaitable[Any]]


class Ledger:
    """Operations (`async def op(conn) -> result`) made a transaction at a time."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._taken: list[tuple[Op, asyncio.Future[Any]]] = []  # in the transaction being made
        self.transactions = 0  # how many it has committed (tests, bench)
        # SQLite (one writer at a time: BEGIN IMMEDIATE) shares; PostgreSQL
        # does not: there two instances' shared transactions could lock two
        # subscriptions' rows in opposite orders and deadlock, and its
        # commits do not queue behind one write lock.
        self._shared = inline_writer(engine) is not None

    async def run(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """`op` made in the next transaction (with whatever else is waiting); its result once committed."""
        if not self._shared:
            return await self._alone(op)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): nothing of the old one carries over
            self._loop, self._waiting, self._flusher = loop, [], None
        done: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((op, done))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # the other tasks woken in this turn of the loop join
            while self._waiting:
                began = False
                try:
                    async with write_transaction(self._engine) as conn:
                        # Taken once the lock is held: those that came while it was awaited join too.
                        began = True
                        self._taken = [w for w in self._waiting if not w[1].done()]
                        self._waiting = []
                        results = [await op(conn) for op, _ in self._taken]
                except Exception:  # noqa: BLE001 - rolled back whole: each operation again, alone
                    if not began:  # BEGIN itself failed: all that were waiting
                        self._taken, self._waiting = self._waiting, []
                    await self._one_by_one()
                    continue
                self.transactions += 1
                for (_, done), result in zip(self._taken, results, strict=True):
                    if not done.done():
                        done.set_result(result)
                self._taken = []
        finally:
            self._flusher = None
            # Cancelled (the loop is closing): nobody is left waiting for an answer.
            for _, done in self._taken + self._waiting:
                if not done.done():
                    done.cancel()
            self._taken, self._waiting = [], []

    async def _alone(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """`op` in a transaction of its own."""
        async with write_transaction(self._engine) as conn:
            result = await op(conn)
        self.transactions += 1
        return result

    async def _one_by_one(self) -> None:
        """The shared transaction failed and nothing of it was written: each of
        its operations is made again in a transaction of its own, so that one
        that fails (a subscription whose rows cannot be read) fails only its
        own caller, never the other subscriptions' (a store that is down fails each)."""
        for op, done in self._taken:
            if done.done():
                continue
            try:
                result = await self._alone(op)
            except Exception as exc:  # noqa: BLE001 - the caller's own failure
                if not done.done():
                    done.set_exception(exc)
                continue
            if not done.done():
                done.set_result(result)
        self._taken = []


_LEDGERS: "weakref.WeakKeyDictionary[AsyncEngine, Ledger]" = weakref.WeakKeyDictionary()


def ledger_for(engine: AsyncEngine) -> Ledger:
    """The process's one ledger for `engine`, shared by every deliverer."""
    got = _LEDGERS.get(engine)
    if got is None:
        got = _LEDGERS[engine] = Ledger(engine)
    return got
