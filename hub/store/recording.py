"""Work done on a snapshot, its writes kept to be made later under the lock.

SQLite has one write lock. A worker that reads a batch, computes and writes
holds it for the whole batch, so a change posted meanwhile waits for the
batch to end. `RecordingConn` lets such a worker compute first: its reads
go to a WAL snapshot (`hub.store.db.snapshot`), its writes are kept in
order (`records`), a savepoint that fails drops the writes made inside it,
and `replay(conn)` makes them, in order, on a write connection. What the
caller read must still hold when it replays: checking that is the caller's
part (hub/delivery/dispatcher.py checks its claim on the log, the
subscriptions and the event counters it read).

A statement is a read only if it is a SELECT (a SQLAlchemy `Select`, or a
`Prepared` built on one); anything else is kept as a write, so a write can
never run on the snapshot and be lost with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.sql.selectable import CompoundSelect, Select

from hub.store.db import Prepared, execute_prepared


def _is_read(statement: Any) -> bool:
    return isinstance(statement, (Select, CompoundSelect))


@dataclass(frozen=True, slots=True)
class _Written:
    """A write kept for later: a SQLAlchemy statement or a prepared one, and its parameters."""

    statement: Any
    params: Any
    prepared: bool


class _Rowcount:
    """What a kept write answers now: the number of parameter sets (no rows)."""

    __slots__ = ("rowcount",)

    def __init__(self, params: Any) -> None:
        self.rowcount = len(params) if isinstance(params, list) else 1

    def all(self) -> list[Any]:
        return []

    def first(self) -> None:
        return None

    def scalar(self) -> None:
        return None


class _KeptSavepoint:
    def __init__(self, conn: "RecordingConn") -> None:
        self._conn = conn
        self._mark = 0

    async def __aenter__(self) -> "_KeptSavepoint":
        self._mark = len(self._conn.records)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None:
            del self._conn.records[self._mark:]
            self._conn.rolled_back += 1
        return False


class RecordingConn:
    """Reads on `snapshot` (an inline SQLite snapshot connection), writes kept."""

    def __init__(self, snapshot: Any) -> None:
        self._snapshot = snapshot
        self.records: list[_Written] = []
        self.rolled_back = 0  # savepoints that failed (their writes dropped)

    @property
    def dialect(self) -> Any:
        return self._snapshot.dialect

    @property
    def sync_connection(self) -> Any:
        return self._snapshot.sync_connection

    def begin_nested(self) -> _KeptSavepoint:
        return _KeptSavepoint(self)

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        if _is_read(statement):
            return await self._snapshot.execute(statement, parameters)
        self.records.append(_Written(statement, parameters, prepared=False))
        return _Rowcount(parameters)

    def run_prepared(self, prepared: Prepared, parameters: Any = None) -> Any:
        if _is_read(prepared.statement):
            return self._snapshot.run_prepared(prepared, parameters)
        self.records.append(_Written(prepared, parameters, prepared=True))
        return _Rowcount(parameters)

    async def replay(self, conn: Any) -> int:
        """Make every kept write on `conn` (a write transaction), in order."""
        for w in self.records:
            if w.prepared:
                await execute_prepared(conn, w.statement, w.params)
            elif w.params is None:
                await conn.execute(w.statement)
            else:
                await conn.execute(w.statement, w.params)
        return len(self.records)
