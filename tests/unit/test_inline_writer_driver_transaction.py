"""The inline SQLite writer's transaction on the driver (hub/store/db.py
`InlineWriter`, `_end_transaction`): a transaction whose statements all run
on the driver (the hot paths' prepared statements and plain inserts) is
begun and committed there, without SQLAlchemy's begin and commit around it;
one that runs a statement through SQLAlchemy, or whose `sync_connection` is
asked for (the Kafka log's commit watch), is SQLAlchemy's as before. Either
way the same rows, the same rollbacks, the same errors."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, event, select, text
from sqlalchemy.exc import IntegrityError

from hub.store.db import BEGUN_ON_DRIVER, InlineWriter, create_engine, read_only


async def _ids(engine, t) -> list[int]:  # noqa: ANN001
    async with read_only(engine) as conn:
        return list((await conn.execute(select(t.c.id).order_by(t.c.id))).scalars())


def _events(writer: InlineWriter) -> list[str]:
    seen: list[str] = []
    for name in ("begin", "commit", "rollback"):
        event.listen(writer._engine, name, lambda _conn, name=name: seen.append(name))
    return seen


async def test_a_transaction_run_on_the_driver_is_begun_and_committed_there(table_engine) -> None:  # noqa: ANN001
    """Before: SQLAlchemy's begin and commit (about 35 Python calls) around every transaction."""
    engine, t = table_engine
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    seen = _events(writer)
    told: list[str] = []
    async with writer.transaction() as conn:
        await conn.execute(t.insert(), {"id": 1, "v": "a"})  # a plain insert: on the driver
        conn.after_commit(lambda: told.append("committed"))
        assert await _ids(engine, t) == []  # not yet committed
    assert seen == []  # neither SQLAlchemy's BEGIN nor its COMMIT
    assert told == ["committed"]
    assert await _ids(engine, t) == [1]
    assert BEGUN_ON_DRIVER not in writer._conn.info
    assert not writer._conn.connection.dbapi_connection.in_transaction
    writer.close()


async def test_a_statement_through_sqlalchemy_takes_the_transaction_up(table_engine) -> None:  # noqa: ANN001
    engine, t = table_engine
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    seen = _events(writer)
    async with writer.transaction() as conn:
        await conn.execute(t.insert(), {"id": 1, "v": "driver"})
        await conn.execute(t.update().where(t.c.id == 1).values(v="sqlalchemy"))  # SQLAlchemy's execution
        assert conn.sync_connection.in_transaction()
    assert seen == ["begin", "commit"]  # one BEGIN, the driver's (the begin event issues none), one COMMIT
    async with read_only(engine) as c:
        assert (await c.execute(select(t.c.v))).scalar_one() == "sqlalchemy"
    writer.close()


async def test_asking_for_the_sync_connection_hands_over_a_transaction_that_commits_through_sqlalchemy(
        table_engine) -> None:  # noqa: ANN001
    """What the Kafka log's watch reads (hub/bus/kafka.py `_TransactionWatch`): the
    transaction, open until the COMMIT, and SQLAlchemy's commit event."""
    from hub.bus.kafka import _TransactionWatch

    engine, t = table_engine
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    async with writer.transaction() as conn:
        await conn.execute(t.insert(), {"id": 1, "v": "a"})
        watch = _TransactionWatch(conn)
        assert watch.state == "open"
    assert watch.state == "committed"
    watch.forget()
    with pytest.raises(RuntimeError):
        async with writer.transaction() as conn:
            await conn.execute(t.insert(), {"id": 2, "v": "b"})
            watch = _TransactionWatch(conn)
            raise RuntimeError
    assert watch.state == "aborted"
    watch.forget()
    assert await _ids(engine, t) == [1]
    writer.close()


async def test_a_rollback_on_the_driver_ends_the_transaction_and_keeps_nothing(table_engine) -> None:  # noqa: ANN001
    engine, t = table_engine
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    told: list[str] = []
    async with writer.transaction() as conn:
        await conn.execute(t.insert(), {"id": 1, "v": "a"})
        conn.after_commit(lambda: told.append("committed"))
        await conn.rollback()
        assert not writer._conn.connection.dbapi_connection.in_transaction  # the write lock given up
    assert told == []  # nothing committed, nobody told
    with pytest.raises(ValueError):
        async with writer.transaction() as conn:
            await conn.execute(t.insert(), {"id": 2, "v": "b"})
            raise ValueError
    async with writer.transaction() as conn:  # the writer goes on
        await conn.execute(t.insert(), {"id": 3, "v": "c"})
    assert await _ids(engine, t) == [3]
    assert BEGUN_ON_DRIVER not in writer._conn.info
    writer.close()


async def test_a_commit_that_fails_raises_sqlalchemys_error_and_the_writer_goes_on(tmp_path) -> None:  # noqa: ANN001
    """A deferred foreign key is checked at COMMIT: the driver's failure comes out
    as SQLAlchemy's IntegrityError (as from SQLAlchemy's own commit), the
    transaction is rolled back, and the next one begins at once."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fk.db'}")
    md = MetaData()
    parent = Table("parent", md, Column("id", Integer, primary_key=True))
    child = Table("child", md, Column("id", Integer, primary_key=True),
                  Column("parent_id", Integer, ForeignKey("parent.id", deferrable=True, initially="DEFERRED")),
                  Column("v", String(10)))
    async with engine.begin() as c:
        await c.run_sync(md.create_all)
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    told: list[str] = []
    with pytest.raises(IntegrityError):
        async with writer.transaction() as conn:
            await conn.execute(child.insert(), {"id": 1, "parent_id": 99, "v": "orphan"})
            conn.after_commit(lambda: told.append("committed"))
    assert told == []
    assert not writer._conn.connection.dbapi_connection.in_transaction
    async with writer.transaction() as conn:
        await conn.execute(parent.insert(), {"id": 99})
        await conn.execute(child.insert(), {"id": 2, "parent_id": 99, "v": "kept"})
    async with read_only(engine) as c:
        assert (await c.execute(text("SELECT id FROM child"))).scalars().all() == [2]
    writer.close()
    await engine.dispose()


async def test_a_commit_through_sqlalchemy_that_fails_leaves_the_writer_usable(tmp_path) -> None:  # noqa: ANN001
    """The same with the transaction taken up by SQLAlchemy (a statement it ran):
    before, the failed COMMIT left SQLite's transaction open (the write lock
    held) and SQLAlchemy's inactive, and every later transaction failed."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fk.db'}")
    md = MetaData()
    parent = Table("parent", md, Column("id", Integer, primary_key=True))
    child = Table("child", md, Column("id", Integer, primary_key=True),
                  Column("parent_id", Integer, ForeignKey("parent.id", deferrable=True, initially="DEFERRED")))
    async with engine.begin() as c:
        await c.run_sync(md.create_all)
    writer = InlineWriter.for_engine(engine)
    assert writer is not None
    with pytest.raises(IntegrityError):
        async with writer.transaction() as conn:
            await conn.execute(child.insert().values(id=1, parent_id=99))  # through SQLAlchemy
    assert not writer._conn.connection.dbapi_connection.in_transaction
    async with writer.transaction() as conn:
        await conn.execute(parent.insert().values(id=99))
    async with read_only(engine) as c:
        assert (await c.execute(text("SELECT id FROM parent"))).scalars().all() == [99]
    writer.close()
    await engine.dispose()
