"""Review s28: the data key check (hub/store/key_check.py) on a store from before migration 0031 that
holds no person yet but already holds data encrypted under its key: a subscription's signing secret
(councils subscribe before the first trust sends anyone), or quarantined input (everything sent so far
was refused). Before, only `persons.details` was tried, so a process given another key found nothing
to prove it on, recorded its own key as the store's, and from then on the instances with the real key
were refused while the secrets and quarantined input it holds could not be read. Each backend."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.crypto import DataProtector
from hub.store.key_check import DataKeyMismatch, check_data_key
from hub.store.schema import quarantine, store_keys, subscriptions
from tests.contract.conftest import engine, store_url  # noqa: F401 (the fixtures: each backend)


async def _before_0031(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(store_keys))  # as a store from before migration 0031 has it


async def _recorded(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(store_keys))).scalar_one()


async def test_a_store_with_subscriptions_but_nobody_yet_refuses_another_key(engine: AsyncEngine) -> None:
    right, wrong = DataProtector(Fernet.generate_key()), DataProtector(Fernet.generate_key())
    await _before_0031(engine)
    async with engine.begin() as conn:
        await conn.execute(subscriptions.insert().values(
            subscription_id="s-1", org_code="E06000060", client_id="c-1", channel="webhook",
            url="https://council.example/hook", secret=right.encrypt(b"whsec"), active=True,
            created_at=datetime.now(UTC)))
    with pytest.raises(DataKeyMismatch) as refused:
        await check_data_key(engine, wrong)
    assert "S117_DATA_KEY" in str(refused.value)
    assert await _recorded(engine) == 0  # nothing recorded under the wrong key
    await check_data_key(engine, right)  # the right key: proved on the secret and recorded
    assert await _recorded(engine) == 1
    with pytest.raises(DataKeyMismatch):
        await check_data_key(engine, wrong)


async def test_a_store_with_only_quarantined_input_refuses_another_key(engine: AsyncEngine) -> None:
    right, wrong = DataProtector(Fernet.generate_key()), DataProtector(Fernet.generate_key())
    await _before_0031(engine)
    async with engine.begin() as conn:
        # One emptied by the retention purge (nothing to prove a key on), one still held.
        await conn.execute(quarantine.insert(), [
            {"quarantine_id": "q-1", "source": "RNU", "channel": "rest", "errors": [], "raw": b"",
             "received_at": datetime.now(UTC), "status": "held"},
            {"quarantine_id": "q-2", "source": "RNU", "channel": "rest", "errors": [],
             "raw": right.encrypt(b'{"nhs_number": "9434765919"}'), "received_at": datetime.now(UTC),
             "status": "held"}])
    with pytest.raises(DataKeyMismatch):
        await check_data_key(engine, wrong)
    assert await _recorded(engine) == 0
    await check_data_key(engine, right)
    assert await _recorded(engine) == 1


async def test_a_store_whose_quarantine_was_all_purged_takes_the_first_key(engine: AsyncEngine) -> None:
    """Nothing encrypted left to prove a key on: the first key is recorded, as on an empty store."""
    key = DataProtector(Fernet.generate_key())
    await _before_0031(engine)
    async with engine.begin() as conn:
        await conn.execute(quarantine.insert().values(
            quarantine_id="q-1", source="RNU", channel="rest", errors=[], raw=b"", received_at=datetime.now(UTC),
            status="held"))
    await check_data_key(engine, key)
    assert await _recorded(engine) == 1


class _Together:
    """`engine` whose write transactions begin only once both checks have read the store: the two
    processes of a simultaneous first start each find no key recorded, then both insert."""

    def __init__(self, engine: AsyncEngine, barrier: asyncio.Barrier) -> None:
        self._engine, self._barrier = engine, barrier

    def connect(self):  # noqa: ANN201
        return self._engine.connect()

    @contextlib.asynccontextmanager
    async def begin(self):  # noqa: ANN201
        await self._barrier.wait()
        async with self._engine.begin() as conn:
            yield conn


async def test_two_first_starts_that_both_insert_one_loses_and_the_store_stays_usable(engine: AsyncEngine) -> None:
    """The IntegrityError path (the existing race test's second check reads the first's row and never
    reaches it): the loser reads the winner's record on a fresh connection and is refused; the pool is
    usable after the failed insert (asyncpg too). No defect found: passes on the code as reviewed."""
    keys = [DataProtector(Fernet.generate_key()) for _ in range(2)]
    together = _Together(engine, asyncio.Barrier(2))
    results = await asyncio.gather(*(check_data_key(together, k) for k in keys),  # type: ignore[arg-type]
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["DataKeyMismatch", "NoneType"]
    await check_data_key(engine, keys[results.index(None)])
    assert await _recorded(engine) == 1
    for _ in range(10):
        async with engine.connect() as conn:
            assert (await conn.execute(select(1))).scalar_one() == 1
