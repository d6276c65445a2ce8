"""Engine creation for the two modes: SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import threading
import time
import weakref
from collections import namedtuple

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from operator import itemgetter, methodcaller
from functools import cache, lru_cache, partial
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from pathlib import Path
from urllib.parse import quote

import orjson

from sqlalchemy import JSON, Table, bindparam, event, text
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.engine import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import MultipleResultsFound, NoResultFound, OperationalError
from sqlalchemy.sql.dml import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util.concurrency import greenlet_spawn

from hub.observability.logging import get_logger
from hub.observability import metrics
from hub.store.private_files import private_sqlite



READ_ONLY = "s117_read_only"
# Set in a connection's `info` when its BEGIN IMMEDIATE was made on the driver
# (InlineWriter._begin_at_once): the begin event then issues none of its own.
BEGUN_ON_DRIVER = "s117_begun_on_driver"


def _json_dumps(value: Any) -> str:
    # orjson: several times faster than the standard library for the outbox's
    # event, change and status documents; keys that are not strings (none are
    # expected) are written as strings, as json.dumps would.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# JSON columns in and out with orjson, on every engine the hub makes.
JSON_CODEC: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


@asynccontextmanager
async def read_only(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads only (its transaction is rolled back at the end).
    On SQLite it begins a deferred transaction (a WAL snapshot, no write lock);
    a write on it fails rather than queueing. PostgreSQL: each statement on
    its own (autocommit), as READ COMMITTED would read it inside a
    transaction, without the BEGIN and ROLLBACK round trips around it."""
    async with engine.connect() as conn:
        options: dict[str, Any] = {READ_ONLY: True}
        if conn.dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        await conn.execution_options(**options)
        try:
            yield conn
        finally:
            await conn.rollback()


# PostgreSQL: a pooled connection idle this long is pinged before it is used
# (a restart, an idle timeout or a firewall may have cut it meanwhile);
# one used more recently is not. SQLAlchemy's pool_pre_ping pinged on every
# checkout: a BEGIN, a `;` and a ROLLBACK, three round trips before each
# use, a third of all the hub's round trips under load (bench/JOURNAL.md,
# "Eighth session"). A connection cut while in use fails its statement,
# and the pool then replaces every connection older than the failure.
PING_AFTER_IDLE_SECONDS = 2.0


def ping_when_idle(sync_engine: Engine) -> None:
    """Pessimistic disconnect handling for connections that sat idle: ping
    on checkout after `PING_AFTER_IDLE_SECONDS` in the pool; a failed ping
    replaces the connection (DisconnectionError: the pool retries with a new one)."""
    from sqlalchemy import exc as sa_exc  # noqa: PLC0415

    @event.listens_for(sync_engine, "checkin")
    def _idle_from(_dbapi_conn, record):  # noqa: ANN001
        if record is not None:
            record.info["s117_idle_from"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy):  # noqa: ANN001
        since = record.info.get("s117_idle_from")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # new, or in use a moment ago
        try:
            dbapi_conn.ping()
        except Exception as exc:  # noqa: BLE001 - any failure: this connection is gone
            raise sa_exc.DisconnectionError("connection lost while idle") from exc

    name_unreachable(sync_engine)  # and a new connection that cannot be made says so


# SQLite's page size for a database file the hub creates (`S117_SQLITE_PAGE_SIZE`).
# 4 KB, SQLite's own: at 16 KB a council file's chunk of 500 rows writes a
# quarter of the WAL frames (and `pwrite` calls), but that paid 2-3% of a row's
# CPU in-process and nothing measurable over HTTP, while a single change's
# transaction wrote about 3.3x the WAL bytes (the fsync on the path of every
# POST's p99; bench/JOURNAL.md, "Fifteenth session"). A file keeps the page size
# it was made with: under WAL `PRAGMA page_size` changes nothing once the file has pages.
DEFAULT_PAGE_SIZE = 4096
# WAL thresholds in bytes, so that a file of any page size checkpoints at the
# same WAL size: SQLite's automatic checkpoint (its default, 1,000 pages, was
# set for 4 KB pages) and the shared writer's backstop (WRITER_AUTOCHECKPOINT_BYTES below).
AUTOCHECKPOINT_BYTES = 1000 * 4096


def wal_pages(nbytes: int, page_size: int) -> int:
    """`nbytes` of WAL as pages of `page_size` (`PRAGMA wal_autocheckpoint` counts pages)."""
    return max(1, nbytes // page_size)


# The store's own faults (not the request's, not a bug): what SQLite says when its file cannot be written
# (ENOSPC is SQLITE_FULL; EFBIG, a file-size limit, and other write errors SQLITE_IOERR; a file or
# directory the hub may not write SQLITE_READONLY; the write lock held past the busy wait SQLITE_BUSY)
# and PostgreSQL's SQLSTATEs for the same (53100 disk_full, 53300 too_many_connections, other 53xxx
# insufficient resources, 25006 a read-only transaction: a standby); and a PostgreSQL server that cannot
# be reached (stopped, restarting, failed over, its sessions ended: a connection refused or cut, SQLSTATE
# class 08, 57P01-57P03). Each kind's words are said to the client and logged: they name the cause,
# never what was being written.
STORE_FAULTS = {
    "full": "the hub's store has no space left on its disk",
    "io": "the hub's store could not be written (a disk input/output error or a file-size limit)",
    "read-only": "the hub's store is read-only",
    "locked": "the hub's store is locked by another process",
    "unreachable": "the hub's store (its database server) cannot be reached",
    "connections": "the hub's store (its database server) takes no more connections",
    "resources": "the hub's store (its database server) is out of resources",
    # A server that takes the connection but does not answer (stopped, hung, a network partition):
    # a statement past S117_STORE_STATEMENT_TIMEOUT_SECONDS; every pooled connection held by one past
    # S117_STORE_POOL_TIMEOUT_SECONDS.
    "no-answer": "the hub's store (its database server) did not answer in time",
    "pool": "the hub's connections to its store are all in use (its database server slow or not answering)",
}
_FAULT_WORDS = (("database or disk is full", "full"), ("disk i/o error", "io"),
                ("readonly database", "read-only"), ("read-only", "read-only"),
                ("database is locked", "locked"), ("database table is locked", "locked"))
_FAULT_STATES = {"53100": "full", "53300": "connections", "25006": "read-only",
                 "57P01": "unreachable", "57P02": "unreachable", "57P03": "unreachable"}


class StoreUnreachable(Exception):
    """A connection to the PostgreSQL store could not be made (refused, reset, timed out: the server
    stopped, restarting or not reachable); raised by the pool (`name_unreachable`) from the driver's
    own error, which is an OSError and would otherwise pass for any other."""


class StoreNoAnswer(StoreUnreachable):
    """A statement on the PostgreSQL store got no answer within S117_STORE_STATEMENT_TIMEOUT_SECONDS
    (the server hung, stopped with SIGSTOP, or cut off by a partition that leaves the connection open);
    raised (`bound_waits`) from the driver's bare TimeoutError, its connection dropped."""


def store_fault(exc: BaseException) -> str | None:
    """The kind of store fault (a key of STORE_FAULTS) `exc` is, or was raised from, or None: a
    database error that is not one (a constraint, a bug) and every other exception stay faults of
    their own. Looks through SQLAlchemy's wrapping (`orig`) and the exception's causes."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen or len(seen) > 16:
            continue
        seen.add(id(err))
        if isinstance(err, StoreNoAnswer):
            return "no-answer"
        if isinstance(err, StoreUnreachable):
            return "unreachable"
        if isinstance(err, sa_exc.TimeoutError):  # the pool's: no connection free within pool_timeout
            return "pool"
        state = getattr(err, "sqlstate", None)
        if isinstance(state, str):
            if state in _FAULT_STATES:
                return _FAULT_STATES[state]
            if state.startswith("53"):
                return "resources"
            if state.startswith("08"):
                return "unreachable"
        # SQLAlchemy's word that the connection is gone (its dialect's is_disconnect: a connection
        # closed or cut mid-statement), whatever the driver's class for it.
        if getattr(err, "connection_invalidated", False) is True:
            return "unreachable"
        if isinstance(err, (sqlite3.OperationalError, sqlite3.DatabaseError)) or \
                type(err).__name__ in ("OperationalError", "DatabaseError", "DiskFullError"):
            text_ = str(err).lower()
            kind = next((k for words, k in _FAULT_WORDS if words in text_), None)
            if kind is not None:
                return kind
        orig = getattr(err, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None, err.__cause__, err.__context__]
    return None


def name_unreachable(sync_engine: Engine) -> None:
    """A connection the pool cannot make (the server refused it, reset it or did not answer in time)
    raises `StoreUnreachable` from the driver's error: the answers name the store as the cause
    (`store_fault`) rather than a bare OSError. Errors the server itself answered (a wrong password,
    too many connections, starting up) keep their SQLSTATE."""

    @event.listens_for(sync_engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):  # noqa: ANN001, ANN202
        try:
            return dialect.connect(*cargs, **cparams)
        except (OSError, TimeoutError) as exc:
            raise StoreUnreachable(f"cannot connect to the store: {type(exc).__name__}") from exc


def bound_waits(sync_engine: Engine, statement_timeout: float | None) -> None:
    """A statement the PostgreSQL server does not answer within `statement_timeout` (asyncpg's
    `command_timeout`, raising a bare TimeoutError) is a store fault: raised as `StoreNoAnswer`, and
    its connection dropped (SQLAlchemy's is_disconnect: its rollback, and the pool's, would wait as
    long again on a server that does not answer). None: no limit."""
    if not statement_timeout:
        return

    @event.listens_for(sync_engine, "handle_error")
    def _no_answer(context):  # noqa: ANN001, ANN202
        if isinstance(context.original_exception, TimeoutError):
            context.is_disconnect = True
            return StoreNoAnswer(f"no answer from the store within {statement_timeout:g} s")
        return None


@asynccontextmanager
async def no_statement_timeout(conn: AsyncConnection) -> AsyncIterator[None]:
    """The statement timeout lifted on `conn`'s asyncpg connection while the block runs (the
    migrations at start: one may rebuild a large table, or wait on another process's migration
    lock). asyncpg keeps `command_timeout` in its connection's private `_config`; where that is not
    there, the block runs under the timeout."""
    raw = getattr(await conn.get_raw_connection(), "driver_connection", None)
    config = getattr(raw, "_config", None)
    if config is None or not hasattr(config, "_replace") or getattr(config, "command_timeout", None) is None:
        yield
        return
    raw._config = config._replace(command_timeout=None)
    try:
        yield
    finally:
        raw._config = config


# Each engine's page size for new files, for the writer engine made beside it (`sqlite_writer_engine`).
_page_sizes: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()


def engine_options(settings: Any) -> dict[str, Any]:
    """`create_engine`'s options from the hub's Settings."""
    return {"sqlite_page_size": settings.sqlite_page_size,
            "connect_timeout": settings.store_connect_timeout_seconds,
            "statement_timeout": settings.store_statement_timeout_seconds or None,
            "pool_timeout": settings.store_pool_timeout_seconds}


def create_engine(database_url: str, *, sqlite_page_size: int = DEFAULT_PAGE_SIZE,
                  connect_timeout: float = 5.0, statement_timeout: float | None = None,
                  pool_timeout: float = 10.0) -> AsyncEngine:
    """An engine on `database_url`; on SQLite, a database file it creates
    gets pages of `sqlite_page_size` bytes (`S117_SQLITE_PAGE_SIZE`), an
    existing one keeps its own. On PostgreSQL every wait is bounded, so that a
    server that takes connections but does not answer is a store fault answered
    in seconds (`503`), not a request held to its time limit: a new connection
    within `connect_timeout` (asyncpg's default is 60 s), each statement within
    `statement_timeout` (asyncpg's `command_timeout`; None or 0: no limit, as for
    the command-line tools' batch work; the hub passes its settings, `engine_options`),
    a pooled connection within `pool_timeout` (S117_STORE_*_TIMEOUT_SECONDS)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            private_sqlite(Path(url.database))  # 0600 file (and -wal/-shm), 0700 directory
        engine = create_async_engine(url, connect_args={"timeout": 30}, **JSON_CODEC)
        configure_sqlite(engine.sync_engine, sqlite_page_size)
    else:
        from hub.store.postgres_tls import connect_tls  # noqa: PLC0415 - PostgreSQL only

        url, tls = connect_tls(url)  # libpq's sslmode / sslrootcert / sslcert / sslkey, as asyncpg takes them
        bounds = {"timeout": connect_timeout, **({"command_timeout": statement_timeout} if statement_timeout else {}),
                  **tls}
        engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_timeout=pool_timeout,
                                     connect_args=bounds, **JSON_CODEC)
        bound_waits(engine.sync_engine, statement_timeout or None)  # before the store-writes watch: it sees its fault
        ping_when_idle(engine.sync_engine)
    from hub.store.writable import store_writes, watch_engine  # noqa: PLC0415 - it imports this module

    watch_engine(engine.sync_engine, store_writes(engine))  # a write's store fault: not ready (/health/ready)
    return engine


def configure_sqlite(sync_engine: Engine, page_size: int = DEFAULT_PAGE_SIZE) -> None:
    """The hub's SQLite settings, for the async engine and for the group
    commit's own synchronous writer connection (hub/ingest/group_commit.py);
    `page_size` for a file the connection creates."""
    _page_sizes[sync_engine] = page_size

    @event.listens_for(sync_engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
        cur = dbapi_conn.cursor()
        # Before journal_mode: WAL mode writes a new file's header, and with it its page size.
        cur.execute(f"PRAGMA page_size={int(page_size)}")
        # WAL + synchronous=FULL: a committed change survives SIGKILL and power loss.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA page_size")
        actual = cur.fetchone()[0]  # the file's own (an existing file keeps its page size)
        cur.execute(f"PRAGMA wal_autocheckpoint={wal_pages(AUTOCHECKPOINT_BYTES, actual)}")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
        # Let SQLAlchemy's begin event issue the BEGIN instead of pysqlite.
        dbapi_conn.isolation_level = None

    @event.listens_for(sync_engine, "begin")
    def _sqlite_begin(conn):  # noqa: ANN001
        # Take the write lock at BEGIN so two writers queue rather than deadlock;
        # a read-only connection (`read_only`) takes a snapshot and no lock, so
        # reads never wait behind a writer's fsync (WAL).
        if conn.info.pop(BEGUN_ON_DRIVER, False):  # InlineWriter already took the lock on the driver
            return
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def _inline_capable(async_engine: AsyncEngine) -> bool:
    url = async_engine.url
    return url.get_backend_name() == "sqlite" and bool(url.database) and url.database != ":memory:" \
        and not url.database.startswith("file:")


def sqlite_writer_engine(async_engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on the same SQLite file as `async_engine`, with
    one connection usable from any thread (used by one writer at a time), or
    None when the store is not a SQLite file (PostgreSQL, `:memory:`)."""
    if not _inline_capable(async_engine):
        return None
    engine = sa_create_engine(async_engine.url.set(drivername="sqlite+pysqlite"), poolclass=StaticPool,
                              connect_args={"timeout": 30, "check_same_thread": False}, **JSON_CODEC)
    configure_sqlite(engine, _page_sizes.get(async_engine.sync_engine, DEFAULT_PAGE_SIZE))
    from hub.store.writable import store_writes, watch_engine  # noqa: PLC0415 - it imports this module

    watch_engine(engine, store_writes(async_engine))  # its failed COMMITs mark its engine's store
    return engine


class _Savepoint:
    """`async with conn.begin_nested():` on a `SyncConn`: a SAVEPOINT,
    released if the block ends normally, rolled back to (and released) if it
    raises. Issued on the driver connection: SQLAlchemy's nested transaction
    costs more than the statement (the dispatcher takes one per message)."""

    __slots__ = ("_dbapi", "_name")
    _seq = 0

    def __init__(self, conn: Connection) -> None:
        self._dbapi = conn.connection.dbapi_connection
        _Savepoint._seq += 1
        self._name = f"s117_sp_{_Savepoint._seq}"

    async def __aenter__(self) -> _Savepoint:
        self._dbapi.execute(f"SAVEPOINT {self._name}")
        return self

    async def __aexit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self._dbapi.execute(f"ROLLBACK TO SAVEPOINT {self._name}")
        self._dbapi.execute(f"RELEASE SAVEPOINT {self._name}")


@dataclass(frozen=True, slots=True)
class _Inserted:
    rowcount: int


_ONE_ROW = _Inserted(1)


@dataclass(frozen=True, slots=True)
class _InsertPlan:
    """A plain INSERT of a table's given columns, compiled once: its SQL, the
    parameter names in order and SQLAlchemy's own bind processors for them
    (dates, JSON through `JSON_CODEC`, booleans), run on the driver's
    cursor with `executemany`. The hot paths (the group commit's
    write-behind, the dispatcher's deliveries, views and disclosures) insert
    thousands of rows a second; SQLAlchemy's execution around each
    statement cost more than the insert."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    get: Callable[[Any], tuple[Any, ...]]  # a row's values in `names` order (operator.itemgetter)
    process: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, bind processor) where there is one

    def run(self, dbapi: Any, rows: list[dict[str, Any]]) -> _Inserted:
        one = len(rows) == 1
        data = [_bind_one(self.get, self.process, rows[0])] if one else _bind_rows(self.get, self.process, rows)
        cursor = dbapi.cursor()
        try:
            cursor.executemany(self.sql, data)
        finally:
            cursor.close()
        return _ONE_ROW if one else _Inserted(len(data))


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """`operator.itemgetter` over `names`, always giving a tuple."""
    if len(names) == 1:
        only = names[0]
        return lambda r: (r[only],)
    return itemgetter(*names) if names else (lambda r: ())


def _bind_rows(get: Callable[[Any], tuple[Any, ...]], process: tuple[tuple[int, Callable[[Any], Any]], ...],
               rows: list[Any]) -> list[Any]:
    """Each row's values in order through their bind processors, a column at
    a time: the values taken with one C call a row, each processed column
    with one `map` (a whole column of plain dates or datetimes formatted in
    C, `_fast_bind`), the rows put back together by `zip`. Only the
    processors themselves run in Python (and none for such a column)."""
    if not process:
        return [get(r) for r in rows]
    columns = list(zip(*map(get, rows)))
    if not columns:
        return []
    for i, proc in process:
        whole = getattr(proc, "column", None)
        columns[i] = whole(columns[i]) if whole is not None else list(map(proc, columns[i]))
    return list(zip(*columns))


def _bind_one(get: Callable[[Any], tuple[Any, ...]], process: tuple[tuple[int, Callable[[Any], Any]], ...],
              row: Any) -> tuple[Any, ...]:
    """`_bind_rows` of a single row (the same values): each processed value
    through its processor. A transaction of one change runs its inserts and
    prepared statements a row at a time, where taking the row apart into
    columns and putting it back cost more than the processors (4-7 us a
    row against about 1.5)."""
    values = get(row)
    if not process:
        return values
    out = list(values)
    for i, proc in process:
        out[i] = proc(out[i])
    return tuple(out)


_SQLITE_DATETIME_FORMAT = sqlite.DATETIME._storage_format
_SQLITE_DATE_FORMAT = sqlite.DATE._storage_format


def _fast_bind(dialect: Dialect, type_: Any, proc: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """SQLAlchemy's bind processor, or a faster one giving the same value:
    SQLite's DATETIME in its default storage format is
    `YYYY-MM-DD HH:MM:SS.ffffff` (no offset) and its DATE `YYYY-MM-DD`,
    what `isoformat` gives in C (a third of the time of its `%`-format of
    the fields; a change's handling binds about fifteen). Anything but a
    plain datetime or date (None, a subclass) goes to SQLAlchemy's own."""
    if proc is None or dialect.name != "sqlite" or type_ is None:
        return proc
    impl = type_.dialect_impl(dialect)
    if isinstance(impl, JSON) and getattr(dialect, "_json_serializer", None) is _json_dumps \
            and impl._str_impl.bind_processor(dialect) is None:
        return _json_column(proc)
    for kind, default, plain, fast, in_c in _FAST_FORMATS:
        if isinstance(impl, kind) and impl._storage_format == default:
            def process(value: Any, plain: type = plain, fast: Callable[[Any], str] = fast) -> Any:
                return fast(value) if type(value) is plain else proc(value)

            def column(values: tuple[Any, ...], plain: type = plain,
                       in_c: Callable[[tuple[Any, ...]], list[str]] = in_c) -> list[Any]:
                """`process` over a column (`_bind_rows`): in C where every value is a plain one, each
                object once (a batch's rows often share one: the time it was received, today's date)."""
                if set(map(type, values)) != {plain}:
                    return list(map(process, values))
                ids = list(map(id, values))  # the values are alive (in `values`): their ids are theirs
                distinct = dict(zip(ids, values))
                if len(distinct) == len(ids):
                    return in_c(values)
                made = dict(zip(distinct, in_c(distinct.values())))
                return list(map(made.__getitem__, ids))

            process.column = column  # type: ignore[attr-defined]
            return process
    return proc


def _json_column(proc: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLAlchemy's JSON bind processor (here `_json_dumps` of the value, None and SQL NULL aside),
    with a column of documents (`_bind_rows`) written by orjson without a Python call a value."""

    def process(value: Any) -> Any:
        if type(value) in _JSON_DOCUMENTS:  # a row bound alone (`_bind_one`): the same bytes as a column's
            return _document_json(value)
        return proc(value)

    def column(values: tuple[Any, ...]) -> list[Any]:
        if set(map(type, values)) <= _JSON_DOCUMENTS:
            try:  # string keys only (all the hub writes): the same bytes, in half the time for a dict
                return list(map(_DECODE, map(orjson.dumps, values)))
            except orjson.JSONEncodeError:
                return list(map(_document_json, values))
        return list(map(proc, values))

    process.column = column  # type: ignore[attr-defined]
    return process


_DUMPS = partial(orjson.dumps, option=orjson.OPT_NON_STR_KEYS)  # _json_dumps, less its decode
_DECODE = methodcaller("decode")
_JSON_DOCUMENTS = frozenset({dict, list, orjson.Fragment, str, int, float, bool})
_TIME_MICROSECONDS = methodcaller("isoformat", "microseconds")


def _document_json(value: Any) -> str:
    """SQLAlchemy's `_json_dumps` of a document: orjson's plain call where every key is a string (all
    the hub writes), the same bytes as with OPT_NON_STR_KEYS, which takes the rest."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _DUMPS(value).decode()


# (SQLite type, its default storage format, the plain Python type, the same string by isoformat, and the
# same for a column of them, in C)
_FAST_FORMATS: tuple[tuple[Any, str, type, Callable[[Any], str], Callable[[Any], list[str]]], ...] = (
    # The date's and the time's isoformat joined: an aware value's own isoformat asks its tzinfo for the
    # offset, a fifth more for a column of them (the hub's times are aware: `datetime.now(UTC)`).
    (sqlite.DATETIME, _SQLITE_DATETIME_FORMAT, datetime,
     lambda v: f"{v.date().isoformat()} {v.time().isoformat('microseconds')}",
     lambda values: list(map("{} {}".format, map(date.isoformat, map(datetime.date, values)),
                             map(_TIME_MICROSECONDS, map(datetime.time, values))))),
    (sqlite.DATE, _SQLITE_DATE_FORMAT, date, date.isoformat, lambda values: list(map(date.isoformat, values))),
)


def _plan_processors(compiled: Any, dialect: Dialect, names: tuple[str, ...]) -> tuple[Any, ...]:
    procs, binds = compiled._bind_processors, compiled.binds
    return tuple(_fast_bind(dialect, getattr(binds.get(n), "type", None), procs.get(n)) for n in names)


@lru_cache(maxsize=512)
def _insert_plan(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> _InsertPlan | None:
    """None where SQLAlchemy must run the insert itself: a column default or
    a key that is not a column of the table (then the compiled parameters are
    not exactly `keys`)."""
    compiled = table.insert().compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup or ())
    if set(names) != set(keys) or len(names) != len(keys):
        return None
    procs = _plan_processors(compiled, dialect, names)
    return _InsertPlan(compiled.string, names, procs, _getter(names),
                       tuple((i, p) for i, p in enumerate(procs) if p is not None))


class _Rows:
    """What a prepared statement gives back on the driver path: the part of
    SQLAlchemy's `Result` the hub uses (`all`, `first`, `one`,
    `scalar`, `scalars`, `mappings`, `rowcount`, iteration)."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    fetchall = all

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise NoResultFound("expected one row") if not self._rows else MultipleResultsFound("more than one row")
        return self._rows[0]

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise MultipleResultsFound("more than one row")
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        row = self.one_or_none()
        return None if row is None else row[0]

    def scalars(self) -> _Rows:
        return _Rows([r[0] for r in self._rows], self.rowcount)

    def mappings(self) -> _Rows:
        return _Rows([r._asdict() for r in self._rows], self.rowcount)


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any]
    binds: tuple[Callable[[Any], Any] | None, ...]
    row_type: Any  # a namedtuple of the result's columns; None for DML
    results: tuple[tuple[int, Callable[[Any], Any]], ...]  # (column index, result processor)
    get: Callable[[Any], tuple[Any, ...]]  # the parameters in order when all are given
    process: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, bind processor)

    def args(self, params: Any) -> tuple[Any, ...]:
        out = []
        for name, proc in zip(self.names, self.binds):
            if params is not None and name in params:
                value = params[name]
            elif name in self.defaults:
                value = self.defaults[name]
            else:
                raise KeyError(f"prepared statement: no value for parameter {name!r}")
            out.append(value if proc is None else proc(value))
        return tuple(out)

    def _all_args(self, params: list[Any]) -> list[Any]:
        """Every parameter set in order: one C call a set where each gives
        every parameter (the usual case), `args` for those that lean on defaults."""
        try:
            return _bind_rows(self.get, self.process, params)
        except KeyError:
            return [self.args(p) for p in params]

    def one_args(self, params: Any) -> tuple[Any, ...]:
        """`_all_args([params])[0]`, without taking one set apart into columns."""
        if params is None:
            return self.args(params)
        try:
            return _bind_one(self.get, self.process, params)
        except KeyError:
            return self.args(params)

    def run(self, dbapi: Any, params: Any) -> _Rows:
        cursor = dbapi.cursor()
        try:
            if isinstance(params, list):
                cursor.executemany(self.sql, self._all_args(params))
                return _Rows([], cursor.rowcount)
            if params is None:
                args = self.args(params)
            else:  # `one_args`, inline
                try:
                    args = _bind_one(self.get, self.process, params)
                except KeyError:
                    args = self.args(params)
            cursor.execute(self.sql, args)
            if self.row_type is None:
                return _Rows([], cursor.rowcount)
            raw = cursor.fetchall()
        finally:
            cursor.close()
        return self.rows_of(raw)

    def rows_of(self, raw: Any) -> _Rows:
        """The driver's rows made the statement's rows (its result processors applied)."""
        make, results = self.row_type._make, self.results
        if not results:
            return _Rows([make(r) for r in raw], -1)
        rows = []
        for r in raw:
            values = list(r)
            for i, proc in results:
                if values[i] is not None:
                    values[i] = proc(values[i])
            rows.append(make(values))
        return _Rows(rows, -1)


def _row_type(fields: tuple[str, ...]) -> Any:
    base = namedtuple("Row", fields)  # noqa: PYI024 - a plain row type, made once per statement

    class Row(base):  # type: ignore[misc, valid-type]
        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return self._asdict()

    return Row


_UNPLANNED = object()


class Prepared:
    """A statement built once (its varying values `bindparam`s) and run with
    `execute_prepared(conn, prepared, params)`. On the inline SQLite
    connections (`SyncConn`: the shared writer and the WAL snapshots) it is
    compiled once and run on the driver's cursor, with SQLAlchemy's own bind
    and result processors (datetimes, JSON through `JSON_CODEC`, booleans),
    its rows light named tuples (attribute and index access, `_mapping`);
    SQLAlchemy's execution around each statement (cache key, context, result
    metadata, row objects) cost several times the statement on the pollers'
    and the dispatcher's hot paths. Elsewhere (PostgreSQL, `:memory:`) the
    statement is executed by SQLAlchemy as usual. Statements SQLAlchemy
    must rewrite per call (expanding IN lists) are refused when built."""

    __slots__ = ("statement", "_plans")

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._plans: dict[Dialect, _Plan] = {}

    def plan(self, dialect: Dialect) -> _Plan:
        got = self._plans.get(dialect)
        if got is None:
            got = self._plans[dialect] = self._compile(dialect)
        return got

    def driver_plan(self, dialect: Dialect) -> _Plan | None:
        """`plan`, or None where it cannot be made for this dialect (a result
        type whose processor needs the driver's column type: SQLAlchemy runs it)."""
        got = self._plans.get(dialect, _UNPLANNED)
        if got is _UNPLANNED:
            try:
                got = self._compile(dialect)
            except Exception:  # noqa: BLE001 - SQLAlchemy's execution handles every statement
                got = None
            self._plans[dialect] = got  # type: ignore[assignment]
        return got

    def _compile(self, dialect: Dialect) -> _Plan:
        compiled = self.statement.compile(dialect=dialect)
        if "POSTCOMPILE" in compiled.string or compiled.positiontup is None:
            raise ValueError("a prepared statement cannot take an expanding IN list")
        names = tuple(compiled.positiontup)
        procs = _plan_processors(compiled, dialect, names)
        defaults = {n: b.effective_value for n, b in compiled.binds.items() if not b.required}
        row_type, results = None, ()
        cols = compiled._result_columns
        if cols:
            row_type = _row_type(tuple(c.keyname for c in cols))
            results = tuple((i, p) for i, c in enumerate(cols)
                            if (p := c.type._cached_result_processor(dialect, None)) is not None)
        return _Plan(compiled.string, names, defaults, procs, row_type, results, _getter(names),
                     tuple((i, p) for i, p in enumerate(procs) if p is not None))


class InList:
    """A statement with one list of values (`column IN (...)`), built once by
    `build(values_clause)`: on SQLite's inline connections a prepared
    statement whose list is one JSON parameter, `IN (SELECT value FROM
    json_each(?))`, compiled once (the dispatcher reads a batch's people and
    event ids this way); on PostgreSQL the list is one array parameter,
    `IN (SELECT unnest(?))` (`element`: the type of its values), so the
    statement's text, and the statement asyncpg prepares for it, is the same
    whatever the list's length; elsewhere (`:memory:`) an expanding IN list,
    re-rendered for each length."""

    __slots__ = ("_name", "_expanding", "_json", "_array")

    def __init__(self, name: str, build: Callable[[Any], Any], element: Any = None) -> None:
        from sqlalchemy import String, func, select as sa_select
        from sqlalchemy.dialects.postgresql import ARRAY

        self._name = name
        self._expanding = build(bindparam(name, expanding=True))
        each = func.json_each(bindparam(f"{name}__json")).table_valued("value")
        self._json = Prepared(build(sa_select(each.c.value)))
        array = bindparam(f"{name}__array", type_=ARRAY(element if element is not None else String))
        self._array = Prepared(build(sa_select(func.unnest(array))))

    async def execute(self, conn: Any, values: Any, params: dict[str, Any] | None = None) -> Any:
        name = conn.dialect.name
        if name == "postgresql":
            return await execute_prepared(conn, self._array, {**(params or {}), f"{self._name}__array": list(values)})
        run = getattr(conn, "run_prepared", None)
        if run is not None and name == "sqlite":
            got = run(self._json, {**(params or {}), f"{self._name}__json": orjson.dumps(list(values)).decode()})
            if got is not None:
                return got
        return await conn.execute(self._expanding, {**(params or {}), self._name: list(values)})


async def execute_prepared(conn: Any, prepared: Prepared, params: Any = None) -> Any:
    """`prepared` on `conn`: on the driver if `conn` is an inline SQLite
    connection (or wraps one) or an asyncpg connection in a transaction or in
    autocommit (`_on_asyncpg`), else through SQLAlchemy."""
    run = getattr(conn, "run_prepared", None)
    if run is not None:
        got = run(prepared, params)
        if got is not None:
            return got
    if PG_DRIVER_PATH and conn.dialect.name == "postgresql":
        plan = prepared.driver_plan(conn.dialect)
        if plan is not None:
            got = await _on_asyncpg(conn, plan, params)
            if got is not None:
                return got
    if params is None:
        return await conn.execute(prepared.statement)
    return await conn.execute(prepared.statement, params)


# False: every statement through SQLAlchemy's execution on PostgreSQL (before; bench A/B).
PG_DRIVER_PATH = True


async def insert_rows(conn: Any, table: Table, rows: list[dict[str, Any]]) -> bool:
    """A plain INSERT of `rows` (each with the same columns) as one executemany
    on the asyncpg connection under `conn` (`_on_asyncpg`); False, with nothing
    done, where SQLAlchemy must run it (another database, a column default, no
    transaction begun)."""
    if not (PG_DRIVER_PATH and rows and conn.dialect.name == "postgresql"):
        return False
    plan = _insert_plan(conn.dialect, table, tuple(rows[0]))
    if plan is None or not all(len(r) == len(plan.names) for r in rows):
        return False
    return await _on_asyncpg(conn, plan, rows) is not None


async def _on_asyncpg(conn: Any, plan: _Plan | _InsertPlan, params: Any) -> _Rows | None:
    """A compiled statement run on the asyncpg connection under `conn`, as
    SQLAlchemy's asyncpg adapter runs it (its statement cache: each statement
    prepared once a connection, shared with SQLAlchemy's own executions; its
    lock; its transaction, begun as its cursor begins it), without
    SQLAlchemy's execution around it (cache key, execution context, result
    metadata, row objects, the greenlet hop): about 90 us of CPU a statement
    of the 130 SQLAlchemy costs (bench/JOURNAL.md). None, for SQLAlchemy to
    run it, where SQLAlchemy has not begun a transaction (it would begin one
    as it executes) and the connection is not in autocommit. Errors go
    through SQLAlchemy's own handling (the `handle_error` event, a lost
    connection invalidated, the exception wrapped as `sqlalchemy.exc`'s)."""
    sync = conn.sync_connection
    if sync is None or not _driver_path_fits(type(sync), type(sync.connection.dbapi_connection)):
        return None
    if not (sync.in_transaction() or sync._is_autocommit_isolation()):
        return None
    adapt = sync.connection.dbapi_connection
    sql = plan.sql
    if isinstance(params, list):
        args: Any = plan._all_args(params) if isinstance(plan, _Plan) else _bind_rows(plan.get, plan.process, params)
    elif isinstance(plan, _Plan):
        args = plan.one_args(params)
    else:
        args = _bind_one(plan.get, plan.process, params)
    if sync._has_events or sync.engine._has_events:  # statement observers (tests) see it as SQLAlchemy's own
        sync.dispatch.before_cursor_execute(sync, None, sql, args, None, isinstance(params, list))
    try:
        async with adapt._execute_mutex:
            if adapt._transaction is None:
                await adapt._start_transaction()
            if isinstance(params, list):
                await adapt._connection.executemany(sql, args)
                return _Rows([], -1)
            stmt, _ = await adapt._prepare(sql, getattr(sync.dialect, "_invalidate_schema_cache_asof", 0))
            raw = await stmt.fetch(*args)
            status = stmt.get_statusmsg() or ""
    except Exception as exc:  # noqa: BLE001 - as SQLAlchemy's cursor handles it
        try:
            adapt._handle_exception(exc)  # raises the adapter's DB-API exception
        except Exception as dbapi_exc:  # noqa: BLE001
            await greenlet_spawn(sync._handle_dbapi_exception, dbapi_exc, sql, args, None, None)
        raise
    if getattr(plan, "row_type", None) is None:
        counted = _ROWCOUNT.match(status)
        return _Rows([], int(counted.group(1)) if counted else -1)
    return plan.rows_of(raw)


@cache
def _driver_path_fits(connection_type: type, adapter_type: type) -> bool:
    """The SQLAlchemy internals `_on_asyncpg` uses are there (another SQLAlchemy
    version may name them otherwise: then every statement goes through
    SQLAlchemy's execution, as before, and the hub says so once)."""
    fits = all(hasattr(adapter_type, a) for a in ("_execute_mutex", "_transaction", "_start_transaction",
                                                  "_connection", "_prepare", "_handle_exception")) \
        and all(hasattr(connection_type, a) for a in ("_is_autocommit_isolation", "_handle_dbapi_exception"))
    if not fits:
        log.warning("PostgreSQL statements through SQLAlchemy's execution: its asyncpg adapter is not the one "
                    "the driver path was written for", adapter=adapter_type.__name__)
    return fits


_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")  # as SQLAlchemy's asyncpg cursor reads it


class SyncConn:
    """The part of `AsyncConnection` the hot paths use (`execute`,
    `begin_nested`, `dialect`, `sync_connection`), over a synchronous SQLite
    connection, run at once on the event loop. Only where a statement cannot
    wait for a lock: a writer once it holds the write lock (`InlineWriter`),
    and WAL snapshot reads (`InlineReads`)."""

    __slots__ = ("_conn", "_dbapi", "dialect", "_after_commit")

    def __init__(self, conn: Connection, dbapi: Any = None) -> None:
        self._conn = conn
        # The driver's connection and the dialect, taken once: neither changes while a transaction or a
        # snapshot lasts, and every statement run on the driver needs both (SQLAlchemy's properties).
        self._dbapi = dbapi if dbapi is not None else conn.connection.dbapi_connection
        self.dialect: Dialect = conn.dialect
        self._after_commit: list[Callable[[], None]] | None = None

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once this transaction's COMMIT has returned (the
        change is durable), never if it rolls back. SQLAlchemy's commit event
        fires before the COMMIT is issued: a reader woken by it can look too soon."""
        if self._after_commit is None:
            self._after_commit = []
        if callback not in self._after_commit:
            self._after_commit.append(callback)

    @property
    def sync_connection(self) -> Connection:
        """As `AsyncConnection.sync_connection`: where commit events are heard
        and the transaction is looked at (the Kafka log's watch, hub/bus/kafka.py).
        A transaction the inline writer began on the driver is taken up by
        SQLAlchemy first (its begin event issues no second BEGIN), so a caller
        sees, and hears the commit of, SQLAlchemy's transaction as before."""
        conn = self._conn
        if BEGUN_ON_DRIVER in conn.info:
            conn.begin()
        return conn

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        if parameters is None:
            return self._conn.execute(statement)
        if type(statement) is Insert and statement._values is None and not statement._returning \
                and statement._post_values_clause is None:
            rows = parameters if isinstance(parameters, list) else [parameters]
            if rows and isinstance(rows[0], dict):
                plan = _insert_plan(self.dialect, statement.table, tuple(rows[0]))
                # The plan is for the first row's keys; any other row must have as many.
                if plan is not None and (len(rows) == 1 or all(len(r) == len(plan.names) for r in rows)):
                    return plan.run(self._dbapi, rows)
        return self._conn.execute(statement, parameters)

    def insert_rows(self, table: Table, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bool:
        """A plain INSERT of `rows`, each with exactly `columns` (in that
        order), on the driver: what `execute(table.insert(), rows)` does for
        them, without working out again that it may (the group commit's
        write-behind queues rows by table and column set). False, with
        nothing done, where SQLAlchemy must run it (a column default)."""
        plan = _insert_plan(self.dialect, table, columns)
        if plan is None:
            return False
        plan.run(self._dbapi, rows)
        return True

    def begin_nested(self) -> _Savepoint:
        return _Savepoint(self._conn)

    async def rollback(self) -> None:
        """Roll the transaction back (as `AsyncConnection.rollback`); its block then commits nothing."""
        _end_transaction(self._conn, self._dbapi, commit=False)

    def run_prepared(self, prepared: Prepared, params: Any = None) -> _Rows:
        # On the driver: no BEGIN of its own (a snapshot that must see one
        # moment across statements is begun when taken, `snapshot(consistent=True)`).
        plan = prepared._plans.get(self.dialect) or prepared.plan(self.dialect)  # `plan`, its look-up inline
        return plan.run(self._dbapi, params)


def _end_transaction(conn: Connection, dbapi: Any, commit: bool) -> bool:
    """Commit (or roll back) `conn`'s transaction: SQLAlchemy's if it took
    the transaction up (a statement it ran, `sync_connection`), else the one
    `InlineWriter` began on the driver, with the driver's COMMIT or ROLLBACK
    (a failure goes through SQLAlchemy's error handling, as from its own
    commit: the same exception types, the same `handle_error` event). False
    if there was no transaction to end. A rollback also ends what a failed
    COMMIT left open (SQLite keeps the transaction, and the write lock, after
    one), so the writer goes on."""
    if conn.in_transaction():
        conn.commit() if commit else conn.rollback()
        return True
    if not commit and conn.get_transaction() is not None:
        conn.rollback()  # SQLAlchemy's, left inactive by a COMMIT that failed: let go (the driver's ended below)
    conn.info.pop(BEGUN_ON_DRIVER, None)
    if not dbapi.in_transaction:
        return False
    try:
        dbapi.commit() if commit else dbapi.rollback()
    except BaseException as exc:
        conn._handle_dbapi_exception(exc, None, None, None, None)  # raises SQLAlchemy's wrapping of it
        raise
    return True


# The shared writer's own automatic checkpoint, as a backstop only: the WAL is
# checkpointed by `WalCheckpointer` in a thread of its own; should that fall
# behind, the writer checkpoints once the WAL holds this many bytes (10,000
# pages of 4 KB, 2,500 of 16 KB).
WRITER_AUTOCHECKPOINT_BYTES = 10_000 * 4096
# False: SQLite's own automatic checkpoint every AUTOCHECKPOINT_BYTES (1,000
# pages of 4 KB) in the writer's COMMIT, no thread (what the hub did before; bench/bench_checkpoint.py's baseline).
CHECKPOINT_THREAD = True
log = get_logger("hub.store")


class WalCheckpointer:
    """Checkpoints a SQLite file's WAL (copies the committed pages into the
    database file and fsyncs it) in a thread of its own, off the event loop.

    SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL
    past its threshold (AUTOCHECKPOINT_BYTES), in the committing connection: for the shared inline
    writer, on the event loop, which then stops for the checkpoint's
    writes and fsync (every few ingest batches; bench/JOURNAL.md, "Tenth
    session"). Here, every `interval` seconds (a quarter of a second) in which a transaction was
    committed, a PASSIVE checkpoint (it waits for no reader or writer:
    writers append to the WAL meanwhile, readers keep their snapshots) runs on
    the thread's own connection, `synchronous=FULL` as every hub connection,
    with the GIL released while SQLite works. The writer's own automatic
    checkpoint stays, at `WRITER_AUTOCHECKPOINT_BYTES`, should this thread
    fall behind. Durability is unchanged: every COMMIT is fsync'd in the WAL."""

    interval = 0.25

    def __init__(self, database: str) -> None:
        self._database = database
        self._stop = threading.Event()
        self._committed = 0  # counted by the writer (the loop's thread); read here
        self._seen = 0
        self.checkpoints = 0
        self._thread = threading.Thread(target=self._run, name="s117-wal-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A transaction was committed (the writer, after its COMMIT)."""
        self._committed += 1

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failing = False
        try:
            while not self._stop.wait(self.interval):
                seen = self._committed
                if seen == self._seen:
                    continue
                try:
                    if conn is None:  # mode=rw: never makes a database where the file is gone
                        conn = sqlite3.connect(f"file:{quote(os.path.abspath(self._database))}?mode=rw",
                                               uri=True, timeout=0, isolation_level=None)
                        conn.execute("PRAGMA synchronous=FULL")
                    began = time.perf_counter()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    metrics.STORE_CHECKPOINT_SECONDS.observe(time.perf_counter() - began)
                    self.checkpoints += 1
                    self._seen = seen
                    failing = False
                except sqlite3.Error as exc:  # busy or gone a moment: tried again at the next interval
                    if not failing:  # once a run of failures, not at every interval
                        log.warning("wal checkpoint failed, will retry", exc_type=type(exc).__name__)
                    failing = True
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        """Ask the thread to end after its current checkpoint (without waiting for it)."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class InlineWriter:
    """Write transactions on a SQLite file without the aiosqlite thread hop
    per statement: one synchronous connection whose statements run at once
    on the event loop. With the write lock held and WAL, a statement never
    waits for a lock, only for the page cache, so the loop is held for tens
    of microseconds a statement, where aiosqlite costs a queue put, a thread
    wake-up and a future for each. `BEGIN IMMEDIATE` is tried at once (busy
    timeout 0) and, only if another connection holds the lock, waited for
    in a worker thread. `COMMIT` (the fsync of the WAL, a fraction of a
    millisecond on a local disk: see the bare-insert baseline of bench/) runs
    on the loop too: handed to a thread, the GIL hand-over back and forth
    cost more than the fsync and held each batch open for milliseconds.
    One transaction at a time (a lock): the process's writers share one per
    engine (`write_transaction`) and take turns in FIFO order.
    `for_engine` gives None for PostgreSQL and `:memory:`: use the async
    engine there."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._checkpointer: WalCheckpointer | None = None
        self._conn: Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._no_wait: Any = None  # the DBAPI connection whose busy timeout is 0
        # Set when the hub's processes share the file (hub/worker_process.py):
        # the front process raises `turns` while it waits for the lock, and a
        # writer that `yields` (the worker process) lets it go first.
        self.turns: WriterTurns | None = None
        self.yields = False

    @classmethod
    def for_engine(cls, async_engine: AsyncEngine) -> InlineWriter | None:
        engine = sqlite_writer_engine(async_engine)
        return cls(engine) if engine is not None else None

    def transaction(self) -> _InlineTransaction:
        """An async context manager giving the transaction's `SyncConn`:
        committed if the block ends normally (and is still open), rolled back
        if it raises."""
        return _InlineTransaction(self)

    async def _begin(self) -> SyncConn:
        """The writer's turn taken (its lock held): the write lock, a transaction begun."""
        loop = self._loop
        assert loop is not None
        if self._conn is None or self._conn.closed:
            self._conn = await asyncio.to_thread(self._engine.connect)
        conn = self._conn
        dbapi = conn.connection.dbapi_connection
        if conn.get_transaction() is not None or dbapi.in_transaction:  # a cancelled transaction left one open
            _end_transaction(conn, dbapi, commit=False)
        turns = self.turns
        if turns is not None and self.yields:
            await turns.let_through(loop)
        if not self._begin_at_once(conn, dbapi):
            if turns is not None and not self.yields:
                with turns.waiting():
                    await self._wait_for_lock(conn, loop)
            else:
                await self._wait_for_lock(conn, loop)
        return SyncConn(conn, dbapi)

    def _end(self, sconn: SyncConn, failed: bool) -> None:
        """The block is over: commit (the fsync) and tell the after-commit
        callbacks, or, if it `failed`, roll back."""
        conn, dbapi = sconn._conn, sconn._dbapi
        if failed:
            _end_transaction(conn, dbapi, commit=False)
            return
        try:
            began = time.perf_counter()
            if not _end_transaction(conn, dbapi, commit=True):  # the fsync
                return  # rolled back by the block itself: nothing committed, nobody told
            metrics.STORE_COMMIT_SECONDS.observe(time.perf_counter() - began)
        except BaseException:
            _end_transaction(conn, dbapi, commit=False)
            raise
        if self._checkpointer is not None:
            self._checkpointer.committed()
        for callback in sconn._after_commit or ():
            callback()

    async def _wait_for_lock(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        """Another connection holds the write lock (another process: the
        worker process of `S117_SEPARATE_WORKERS`, another instance, or an
        aiosqlite writer of this one). Try again on the loop every 0.2 ms,
        backing off to 4 ms: SQLite's own busy handler sleeps 1, 2, 5, 10,
        ... 100 ms between tries, so a writer that gives the lock up and takes
        it again at once (a busy dispatcher) starves the one sleeping. After
        30 s, one last wait in a thread with SQLite's busy timeout (then
        'database is locked', as before)."""
        delay, deadline = 0.0002, loop.time() + 30.0
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            if self._begin_at_once(conn):
                return
            delay = min(delay * 2, 0.004)
        await asyncio.to_thread(self._begin_waiting, conn)

    def _begin_at_once(self, conn: Connection, dbapi: Any = None) -> bool:
        """`BEGIN IMMEDIATE` on the loop if the write lock is free (the usual
        case: this process's writers take turns on this connection), without
        the thread hop; False, with nothing begun, if another connection
        holds it (then the caller waits for it in a thread). The connection's
        busy timeout is 0 (set once, not around every BEGIN: two statements
        a transaction): only BEGIN can meet a lock under WAL, and the thread's
        last wait raises it for its own BEGIN."""
        if dbapi is None:
            dbapi = conn.connection.dbapi_connection
        if dbapi is not self._no_wait:
            dbapi.execute("PRAGMA busy_timeout=0")
            # Checkpoints are the checkpointer thread's; the writer's own only a backstop.
            page_size = dbapi.execute("PRAGMA page_size").fetchone()[0]
            backstop = WRITER_AUTOCHECKPOINT_BYTES if CHECKPOINT_THREAD else AUTOCHECKPOINT_BYTES
            dbapi.execute(f"PRAGMA wal_autocheckpoint={wal_pages(backstop, page_size)}")
            if self._checkpointer is None and self._engine.url.database and CHECKPOINT_THREAD:
                self._checkpointer = WalCheckpointer(self._engine.url.database)
                # A writer dropped without `close` (its engine gone) stops its thread too.
                weakref.finalize(self, self._checkpointer.stop)
            self._no_wait = dbapi
        # The lock is tried on the driver: a busy one is a cheap sqlite3 error,
        # where SQLAlchemy's wrapping of it cost about 0.1 ms of CPU, and a
        # writer waiting for another process tries again every few milliseconds.
        try:
            dbapi.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return False
            # Any other failure: BEGIN again through SQLAlchemy, which raises its own error for it.
        else:
            # The transaction is the driver's, committed on the driver (`_end_transaction`):
            # SQLAlchemy's begin and commit around it cost about 35 Python calls a transaction
            # (bench/JOURNAL.md, "Twenty-seventh session"). Should a statement go through
            # SQLAlchemy (or `SyncConn.sync_connection` be asked for), SQLAlchemy takes the
            # transaction up: its begin event then leaves BEGIN out.
            conn.info[BEGUN_ON_DRIVER] = True
            return True
        try:
            conn.begin()
            return True
        except BaseException as exc:
            if conn.info.pop(BEGUN_ON_DRIVER, False) and dbapi.in_transaction:
                dbapi.execute("ROLLBACK")  # begun on the driver, not taken up by SQLAlchemy
            if conn.in_transaction():
                conn.rollback()
            if isinstance(exc, OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
                return False
            raise

    @staticmethod
    def _begin_waiting(conn: Connection) -> None:
        """BEGIN IMMEDIATE with SQLite's busy timeout (30 s; in a worker thread)."""
        dbapi = conn.connection.dbapi_connection
        dbapi.execute("PRAGMA busy_timeout=30000")
        try:
            conn.begin()
        finally:
            dbapi.execute("PRAGMA busy_timeout=0")

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()


class _InlineTransaction:
    """`InlineWriter.transaction()`: the writer's turn (its lock, FIFO), the
    write lock and a transaction, then the commit or the rollback. A class
    rather than an `asynccontextmanager`: the generator's frames and hooks
    cost more than the rest of an empty transaction's Python."""

    __slots__ = ("_writer", "_lock", "_sconn")

    def __init__(self, writer: InlineWriter) -> None:
        self._writer = writer

    async def __aenter__(self) -> SyncConn:
        writer = self._writer
        loop = asyncio.get_running_loop()
        if writer._lock is None or writer._loop is not loop:  # a new event loop (tests): a new lock
            writer._lock, writer._loop = asyncio.Lock(), loop
        lock = self._lock = writer._lock
        await lock.acquire()
        try:
            self._sconn = await writer._begin()
        except BaseException:
            lock.release()
            raise
        return self._sconn

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._writer._end(self._sconn, exc_type is not None)
        finally:
            self._lock.release()


class WriterTurns:
    """Whose turn it is at a SQLite file's one write lock, between the hub's
    front process and its worker process: a byte in `<database>-turns`
    (shared memory, mmap), set while the front waits for the lock. The
    worker process checks it before each write transaction and, while it is
    set, waits (up to 50 ms) for the front to go first. Without it, a busy
    dispatcher gives the lock up and takes it again at once, and the front's
    ingest, retrying every few milliseconds, almost never finds it free."""

    def __init__(self, database: str) -> None:
        import mmap

        path = Path(database + "-turns")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 1:
                os.write(fd, b"\0")
            self._map = mmap.mmap(fd, 1)
        finally:
            os.close(fd)

    @contextmanager
    def waiting(self) -> Iterator[None]:
        self._map[0] = 1
        try:
            yield
        finally:
            self._map[0] = 0

    # How often a worker waiting for the front looks at the byte again. Not
    # under 1 ms: uvloop rounds a timer's delay to whole milliseconds, so
    # 0.5 ms was a timer due at once, the loop polled without sleeping, a
    # core's worth of CPU for as long as the front waited (up to `most`).
    poll_seconds = 0.001

    async def let_through(self, loop: asyncio.AbstractEventLoop, most: float = 0.05) -> None:
        if not self._map[0]:
            return
        until = loop.time() + most
        while self._map[0] and loop.time() < until:
            await asyncio.sleep(self.poll_seconds)


class InlineReads:
    """Read-only snapshots of a SQLite file on the event loop, without the
    aiosqlite thread hop per statement: WAL readers take no lock and wait
    for no writer, so a handful of indexed reads costs tens of microseconds
    of loop time. A small pool of synchronous connections (one per reader in
    flight: a reader never yields to the loop between its statements, but
    callers may). None of this for PostgreSQL or `:memory:`: use `read_only`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._idle: list[Connection] = []  # connections kept checked out between snapshots

    @classmethod
    def for_engine(cls, async_engine: AsyncEngine) -> InlineReads | None:
        if not _inline_capable(async_engine):
            return None
        engine = sa_create_engine(async_engine.url.set(drivername="sqlite+pysqlite"), pool_size=4, max_overflow=16,
                                  connect_args={"timeout": 30, "check_same_thread": False}, **JSON_CODEC)
        configure_sqlite(engine)
        return cls(engine)

    @contextmanager
    def snapshot(self, consistent: bool = False) -> Iterator[SyncConn]:
        # A connection is reused while idle (a pool check-out and check-in
        # cost more than the pollers' statements); its read transaction
        # ends (rollback) before it is put back, so each snapshot is new.
        conn = self._idle.pop() if self._idle else self._engine.connect().execution_options(**{READ_ONLY: True})
        try:
            if consistent and not conn.in_transaction():
                # BEGIN now: every statement after it, the driver's too, reads this moment. Issued
                # on the driver, as `InlineWriter` issues its BEGIN IMMEDIATE (the begin event then
                # leaves it out): SQLAlchemy's `exec_driver_sql` of it cost more than the BEGIN
                # itself, once a dispatcher batch (bench/JOURNAL.md, "Seventeenth session").
                conn.connection.dbapi_connection.execute("BEGIN")
                conn.info[BEGUN_ON_DRIVER] = True
                conn.begin()
            yield SyncConn(conn)
        except BaseException:
            conn.close()
            raise
        conn.rollback()
        if len(self._idle) < 4:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
        self._engine.dispose()


_SNAPSHOTS: "weakref.WeakKeyDictionary[AsyncEngine, InlineReads | None]" = weakref.WeakKeyDictionary()


@asynccontextmanager
async def snapshot(engine: AsyncEngine, consistent: bool = False) -> AsyncIterator[Any]:
    """A read-only snapshot for a short block of reads that awaits nothing
    else (pollers: the event log's fetch and lag, the deliverers' due heads):
    on a SQLite file inline on the loop (`InlineReads`, shared per engine),
    elsewhere `read_only`. `close_inline` releases the inline connections.
    `consistent`: all its reads see one moment (its transaction begun at
    once; otherwise a prepared statement run on the driver, outside
    SQLAlchemy's transaction, reads the latest commit)."""
    if engine not in _SNAPSHOTS:
        _SNAPSHOTS[engine] = InlineReads.for_engine(engine)
    reads = _SNAPSHOTS[engine]
    if reads is None:
        async with read_only(engine) as conn:
            yield conn
        return
    with reads.snapshot(consistent) as sconn:
        yield sconn


_WRITERS: "weakref.WeakKeyDictionary[AsyncEngine, tuple[InlineWriter | None, asyncio.Lock | None]]" = \
    weakref.WeakKeyDictionary()


def _writer_of(engine: AsyncEngine) -> tuple[InlineWriter | None, asyncio.Lock | None]:
    got = _WRITERS.get(engine)
    if got is None:
        inline = InlineWriter.for_engine(engine)
        # SQLite without an inline writer (`:memory:`): writers still take turns in-process.
        got = _WRITERS[engine] = (inline, asyncio.Lock() if inline is None and engine.dialect.name == "sqlite"
                                  else None)
    return got


def inline_writer(engine: AsyncEngine) -> InlineWriter | None:
    """The engine's shared inline SQLite writer (None for PostgreSQL and `:memory:`)."""
    return _writer_of(engine)[0]


# Callbacks to run once a transaction begun by `begin_with_hooks` has committed (PostgreSQL,
# aiosqlite): what the inline SQLite writer's `SyncConn.after_commit` does for its own.
_AFTER_COMMIT: "weakref.WeakKeyDictionary[Connection, list[Callable[[], None]]]" = weakref.WeakKeyDictionary()


def after_commit_hook(conn: Any) -> Callable[[Callable[[], None]], None] | None:
    """How to have a callback run once `conn`'s transaction has committed
    (not if it rolls back): the inline writer's `SyncConn.after_commit` (or a
    wrapper's, the group commit's `WriteBehind`), or the hook of a transaction
    `begin_with_hooks` began; None if `conn` cannot say (then SQLAlchemy's
    `commit` event, which fires just before the COMMIT, is what there is)."""
    own = getattr(conn, "after_commit", None)
    if own is not None:
        return own
    sync = getattr(conn, "sync_connection", None)
    callbacks = _AFTER_COMMIT.get(sync) if sync is not None else None
    if callbacks is None:
        return None

    def register(callback: Callable[[], None]) -> None:
        if callback not in callbacks:
            callbacks.append(callback)
    return register


@asynccontextmanager
async def begin_with_hooks(conn: AsyncConnection) -> AsyncIterator[Any]:
    """`conn.begin()`, whose `after_commit_hook` callbacks run once it has committed."""
    sync = conn.sync_connection
    callbacks: list[Callable[[], None]] = []
    _AFTER_COMMIT[sync] = callbacks
    try:
        async with conn.begin() as tx:
            yield tx
    finally:
        _AFTER_COMMIT.pop(sync, None)
    for callback in callbacks:  # reached only once committed: an exception ends the block above
        callback()


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[Any]:
    """One write transaction, committed if the block ends normally. On a
    SQLite file through the engine's shared `InlineWriter`: the process's
    writers take turns in FIFO order on one connection (SQLite has one
    writer at a time, and a writer that finds the lock taken sleeps and
    polls in steps of up to 100 ms), and statements run inline. PostgreSQL:
    `engine.begin()`, row locks order the writers."""
    inline, turn = _writer_of(engine)
    if inline is not None:
        async with inline.transaction() as conn:
            yield conn
        return
    if turn is not None:
        async with turn, engine.connect() as conn, begin_with_hooks(conn):
            yield conn
        return
    async with engine.connect() as conn, begin_with_hooks(conn):
        yield conn


def close_inline(engine: AsyncEngine) -> None:
    """Release the engine's inline readers and writer (the hub is stopping)."""
    reads = _SNAPSHOTS.pop(engine, None)
    if reads is not None:
        reads.close()
    inline, _ = _WRITERS.pop(engine, (None, None))
    if inline is not None:
        inline.close()


def insert_or_merge(dialect: Dialect, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can take `ON CONFLICT ... DO NOTHING / DO UPDATE`.

    Both backends spell it the same in SQL; SQLAlchemy has one construct per
    dialect, so pick by the connection's dialect (`conn.dialect`).
    """
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    if dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for {dialect.name}")


MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key: two hub processes starting together migrate one at a time.
_MIGRATION_LOCK = 117_000_001


def _upgrade(sync_conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


async def create_schema(engine: AsyncEngine) -> None:
    """Bring the store to the newest schema (Alembic migrations in
    hub/store/migrations), the same way for SQLite and PostgreSQL."""
    async with engine.begin() as conn:
        if conn.dialect.name != "postgresql":
            await conn.run_sync(_upgrade)
            return
        async with no_statement_timeout(conn):
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            await conn.run_sync(_upgrade)
