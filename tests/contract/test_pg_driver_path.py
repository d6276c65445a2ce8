"""PostgreSQL: prepared statements (`hub.store.db.execute_prepared`) and the
group commit's inserts run on the asyncpg connection itself, without
SQLAlchemy's execution around them (`_on_asyncpg`). They must behave exactly
as through SQLAlchemy: the same rows and row counts, inside SQLAlchemy's
transaction (rolled back with it, committed with it), a failure raised as
SQLAlchemy's exception with its `handle_error` event, and a connection lost
in use invalidated so the pool hands out a working one next."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, event, exc, func, select, text

import hub.store.db as db
from hub.store.db import Prepared, create_schema, execute_prepared, insert_rows, read_only
from hub.store.schema import ingest_results

pytestmark = pytest.mark.integration

_ANSWER = Prepared(select(ingest_results.c.status_code, ingest_results.c.body, ingest_results.c.created_at)
                   .where(ingest_results.c.source == bindparam("source")).order_by(ingest_results.c.source_message_id))
_INSERT = Prepared(ingest_results.insert().values(
    source=bindparam("source"), source_message_id=bindparam("smid"), status_code=bindparam("code"),
    body=bindparam("body"), payload_sha256=None, created_at=bindparam("at")))
_SET_CODE = Prepared(ingest_results.update().where(ingest_results.c.source == bindparam("source"))
                     .values(status_code=bindparam("code")))


@pytest.fixture
async def engine(pg_engine):  # noqa: ANN001, ANN201
    await create_schema(pg_engine)
    return pg_engine


def _row(smid: str, code: int = 202) -> dict:
    return {"source": "s", "smid": smid, "code": code, "body": {"n": smid, "nested": [1, "x"]},
            "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}


async def _taken(monkeypatch) -> list[int]:  # noqa: ANN001
    """Counts the statements the driver path ran (None from it: SQLAlchemy ran the statement)."""
    ran: list[int] = []
    real = db._on_asyncpg

    async def spy(conn, plan, params):  # noqa: ANN001, ANN202
        got = await real(conn, plan, params)
        if got is not None:
            ran.append(1)
        return got
    monkeypatch.setattr(db, "_on_asyncpg", spy)
    return ran


async def test_the_same_rows_and_counts_as_through_sqlalchemy(engine, monkeypatch) -> None:  # noqa: ANN001
    ran = await _taken(monkeypatch)
    async with engine.begin() as conn:
        await execute_prepared(conn, _INSERT, [_row("a"), _row("b")])  # an executemany
        await execute_prepared(conn, _INSERT, _row("c", 409))
        updated = await execute_prepared(conn, _SET_CODE, {"source": "s", "code": 201})
        got = (await execute_prepared(conn, _ANSWER, {"source": "s"})).all()
    assert len(ran) == 4 and updated.rowcount == 3
    monkeypatch.setattr(db, "PG_DRIVER_PATH", False)
    async with engine.connect() as conn:
        through_sqlalchemy = (await execute_prepared(conn, _ANSWER, {"source": "s"})).all()
        await conn.rollback()
    assert len(ran) == 4
    assert [tuple(r) for r in got] == [tuple(r) for r in through_sqlalchemy]
    assert [(r.status_code, r.body, r.created_at) for r in got] == \
        [(201, {"n": m, "nested": [1, "x"]}, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) for m in "abc"]


async def test_statements_are_in_sqlalchemys_transaction(engine, monkeypatch) -> None:  # noqa: ANN001
    ran = await _taken(monkeypatch)
    async with engine.connect() as conn:
        async with conn.begin() as tx:
            await execute_prepared(conn, _INSERT, _row("gone"))
            assert await insert_rows(conn, ingest_results, [
                {"source": "s", "source_message_id": "gone-too", "status_code": 202, "body": {},
                 "payload_sha256": None, "created_at": datetime.now(UTC)}])
            await tx.rollback()
        async with conn.begin():
            await execute_prepared(conn, _INSERT, _row("kept"))
    async with read_only(engine) as conn:  # autocommit: no transaction begun for it either
        assert [r.body["n"] for r in (await execute_prepared(conn, _ANSWER, {"source": "s"})).all()] == ["kept"]
        assert not (await conn.get_raw_connection()).driver_connection.is_in_transaction()
    assert len(ran) == 4
    # With no transaction begun by SQLAlchemy (which would begin one as it executes), SQLAlchemy runs it.
    async with engine.connect() as conn:
        assert (await execute_prepared(conn, _ANSWER, {"source": "s"})).first().body["n"] == "kept"
        assert conn.in_transaction()
        await conn.rollback()
    assert len(ran) == 4


async def test_a_failure_is_sqlalchemys_exception_and_the_transaction_is_undone(engine, monkeypatch) -> None:  # noqa: ANN001
    ran = await _taken(monkeypatch)
    errors: list[type] = []
    event.listen(engine.sync_engine, "handle_error", lambda context: errors.append(type(context.original_exception)))
    with pytest.raises(exc.IntegrityError):
        async with engine.begin() as conn:
            await execute_prepared(conn, _INSERT, _row("dup"))
            await execute_prepared(conn, _INSERT, _row("dup"))  # the primary key again
    assert len(ran) == 1 and errors
    with pytest.raises(exc.IntegrityError):
        async with engine.begin() as conn:
            await insert_rows(conn, ingest_results, [
                {"source": "s", "source_message_id": "twice", "status_code": 202, "body": {},
                 "payload_sha256": None, "created_at": datetime.now(UTC)}] * 2)
    async with read_only(engine) as conn:
        n = (await conn.execute(select(func.count()).select_from(ingest_results))).scalar_one()
    assert n == 0


async def test_a_connection_lost_in_use_is_invalidated_and_replaced(engine, postgres_database_url) -> None:  # noqa: ANN001
    async with engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await conn.rollback()
        other = db.create_engine(postgres_database_url)
        try:
            async with other.connect() as killer:
                assert (await killer.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})).scalar_one()
        finally:
            await other.dispose()
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(exc.DBAPIError) as lost:
            await execute_prepared(conn, _ANSWER, {"source": "s"})
        assert lost.value.connection_invalidated
    async with read_only(engine) as conn:  # the pool's next connection works
        assert (await execute_prepared(conn, _ANSWER, {"source": "s"})).all() == []
