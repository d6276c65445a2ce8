"""The deliverers' ledger (hub/delivery/ledger.py): operations waiting at the
same moment are made in one write transaction, each caller answered only
once it has committed; an operation that fails fails its own caller alone
(the others are made again, each alone); an operation whose caller has gone
before its transaction begins is not made."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from hub.delivery.ledger import Ledger
from hub.store.db import read_only, write_transaction


async def _ids(engine, t) -> list[int]:  # noqa: ANN001
    async with read_only(engine) as conn:
        return list((await conn.execute(select(t.c.id).order_by(t.c.id))).scalars())


def _insert(t, i: int):  # noqa: ANN001, ANN202
    async def op(conn):  # noqa: ANN001, ANN202
        await conn.execute(t.insert(), {"id": i, "v": "x"})
        return i
    return op


async def test_operations_asked_for_together_share_one_transaction_and_answer_after_commit(table_engine) -> None:  # noqa: ANN001
    engine, t = table_engine
    ledger = Ledger(engine)
    seen_by_caller: list[list[int]] = []

    async def call(i: int) -> int:
        got = await ledger.run(_insert(t, i))
        seen_by_caller.append(await _ids(engine, t))  # answered: the row is committed (another connection sees it)
        return got

    assert await asyncio.gather(*(call(i) for i in range(1, 6))) == [1, 2, 3, 4, 5]
    assert ledger.transactions == 1
    assert all(seen == [1, 2, 3, 4, 5] for seen in seen_by_caller)


async def test_those_that_come_while_the_lock_is_awaited_join_the_transaction(table_engine) -> None:  # noqa: ANN001
    engine, t = table_engine
    ledger = Ledger(engine)
    async with write_transaction(engine):  # another writer of this process holds the lock
        first = asyncio.create_task(ledger.run(_insert(t, 1)))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(ledger.run(_insert(t, 2)))
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()
    assert await asyncio.gather(first, second) == [1, 2]
    assert ledger.transactions == 1


async def test_an_operation_that_fails_fails_its_own_caller_alone(table_engine) -> None:  # noqa: ANN001
    """The shared transaction is rolled back whole (nothing of the failing
    operation is written) and the others are made again, each alone."""
    engine, t = table_engine
    ledger = Ledger(engine)

    async def broken(conn):  # noqa: ANN001, ANN202
        await conn.execute(t.insert(), {"id": 2, "v": "x"})
        raise RuntimeError("this subscription's rows cannot be read")

    results = await asyncio.gather(ledger.run(_insert(t, 1)), ledger.run(broken), ledger.run(_insert(t, 3)),
                                   return_exceptions=True)
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], RuntimeError)
    assert await _ids(engine, t) == [1, 3]
    assert ledger.transactions == 2  # each good one alone, after the shared one failed
    assert await ledger.run(_insert(t, 4)) == 4  # the ledger goes on
    assert await _ids(engine, t) == [1, 3, 4]


async def test_when_the_store_fails_every_caller_is_told(table_engine, monkeypatch) -> None:  # noqa: ANN001
    import hub.delivery.ledger as ledger_module

    engine, t = table_engine
    ledger = Ledger(engine)

    def unavailable(_engine):  # noqa: ANN001, ANN202
        raise ConnectionError("database unavailable")

    monkeypatch.setattr(ledger_module, "write_transaction", unavailable)
    results = await asyncio.gather(ledger.run(_insert(t, 1)), ledger.run(_insert(t, 2)), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    monkeypatch.undo()
    assert await _ids(engine, t) == []


async def test_an_operation_whose_caller_has_gone_is_not_made(table_engine) -> None:  # noqa: ANN001
    engine, t = table_engine
    ledger = Ledger(engine)
    async with write_transaction(engine):
        gone = asyncio.create_task(ledger.run(_insert(t, 1)))
        kept = asyncio.create_task(ledger.run(_insert(t, 2)))
        await asyncio.sleep(0.05)
        gone.cancel()
    assert await kept == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await _ids(engine, t) == [2]
