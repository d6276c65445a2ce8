"""`hub.store.db.store_fault` names the store's own faults from the errors real SQLite raises (a
read-only file, the write lock held by another connection), through SQLAlchemy's wrapping and an
exception raised from them, and leaves every other database error (a constraint, a bug) alone: those
stay the request's or the hub's, never answered as a store that cannot be written
(tests/e2e/test_store_faults.py fills the disk under a running hub)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from hub.store.db import STORE_FAULTS, store_fault


def _raised(fn) -> BaseException:  # noqa: ANN001
    with pytest.raises(Exception) as caught:  # noqa: PT011 - whichever the driver raises
        fn()
    return caught.value


def test_real_sqlite_faults_are_named(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    # The file opened read-only (as a file the hub's user may not write is): SQLITE_READONLY.
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert store_fault(_raised(lambda: ro.execute("INSERT INTO t VALUES (1)"))) == "read-only"
    ro.close()
    # Another connection holds the write lock past the wait (an operator's shell): SQLITE_BUSY.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    with engine.connect() as conn:
        wrapped = _raised(lambda: conn.execute(text("INSERT INTO t VALUES (2)")))
    assert isinstance(wrapped, DBAPIError) and store_fault(wrapped) == "locked"
    try:
        raise RuntimeError("a layer above") from wrapped
    except RuntimeError as above:
        assert store_fault(above) == "locked"
    holder.execute("ROLLBACK")
    holder.close()
    # Not the store's fault: a constraint, a statement the hub got wrong, anything else.
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO t VALUES (3)"))
        assert store_fault(_raised(lambda: conn.execute(text("INSERT INTO t VALUES (3)")))) is None
        assert store_fault(_raised(lambda: conn.execute(text("SELECT * FROM no_such_table")))) is None
    engine.dispose()
    assert store_fault(ValueError("database or disk is full")) is None  # words alone are not a fault


def test_postgresql_states_and_the_words_said() -> None:
    class PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__("x")
            self.sqlstate = sqlstate

    assert store_fault(PgError("53100")) == "full"
    assert store_fault(PgError("25006")) == "read-only"
    # The server gone (stopped, restarting, failed over) or out of connections is not a full disk.
    for state in ("08006", "08001", "57P01", "57P02", "57P03"):
        assert store_fault(PgError(state)) == "unreachable", state
    assert store_fault(PgError("53300")) == "connections"
    assert store_fault(PgError("53200")) == "resources"
    assert store_fault(PgError("23505")) is None  # a unique violation is the request's
    for words in STORE_FAULTS.values():
        assert not any(ch.isdigit() for ch in words)  # a cause, never a value


def test_a_postgresql_server_that_cannot_be_reached_is_named() -> None:
    """A connection refused is raised by the pool as StoreUnreachable (an OSError would pass for any
    other); a connection SQLAlchemy found cut mid-statement is named by its `connection_invalidated`."""
    import asyncio
    import socket

    from sqlalchemy.exc import InterfaceError

    from hub.store.db import StoreUnreachable, create_engine

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def connect() -> BaseException:
        engine = create_engine(f"postgresql+asyncpg://u:p@127.0.0.1:{port}/db")
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - the one under test
            return exc
        finally:
            await engine.dispose()
        raise AssertionError("connected to nothing")

    refused = asyncio.run(connect())
    assert isinstance(refused, StoreUnreachable) and isinstance(refused.__cause__, ConnectionRefusedError)
    assert store_fault(refused) == "unreachable"
    assert store_fault(ConnectionRefusedError(111, "refused")) is None  # an OSError alone may be anything's
    cut = InterfaceError("SELECT 1", {}, Exception("connection is closed"), connection_invalidated=True)
    assert store_fault(cut) == "unreachable"
    assert store_fault(InterfaceError("SELECT 1", {}, Exception("x"))) is None


def test_a_store_that_does_not_answer_is_named_apart_from_a_bare_timeout():
    """A statement past the statement timeout (raised by `bound_waits` as StoreNoAnswer) and a pool
    with no connection free past its timeout are store faults, each named; a TimeoutError alone may
    be anything's (a webhook, a lock of the hub's own) and is not."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from hub.store.db import StoreNoAnswer

    assert store_fault(StoreNoAnswer("no answer within 3 s")) == "no-answer"
    assert store_fault(PoolTimeout("QueuePool limit of size 10 overflow 10 reached")) == "pool"
    assert store_fault(TimeoutError()) is None
    assert "did not answer" in STORE_FAULTS["no-answer"] and "all in use" in STORE_FAULTS["pool"]
