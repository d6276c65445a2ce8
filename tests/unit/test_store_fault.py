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
    assert store_fault(PgError("23505")) is None  # a unique violation is the request's
    for words in STORE_FAULTS.values():
        assert not any(ch.isdigit() for ch in words)  # a cause, never a value
