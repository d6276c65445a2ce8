"""A hub, `s117hub export` or `s117hub audit` given a data key other than the
one the store was written under stops before it reads or writes anything
(hub/store/key_check.py), on each store backend. Without the check such a
process found nobody by NHS number (the index is keyed from the data key),
so it recorded a known person again as someone new, and wrote rows the
other instances could not read."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import delete, func, select

from hub.api.app import create_app
from hub.clients import add_client
from hub.crypto import DataProtector
from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE
from hub.settings import REPO_ROOT, Settings
from hub.store.key_check import DataKeyMismatch, check_data_key, store_protector
from hub.store.schema import persons, register_changes, store_keys
from tests.unit.test_council_files_api import PERSON_A, trust_changes

pytestmark = pytest.mark.integration

DETENTION, LEFT = trust_changes(PERSON_A, "key-check")


def _settings(store_url: str, key: str) -> Settings:
    return Settings(database_url=store_url, canonical_base=DEFAULT_CANONICAL_BASE, data_key=key,
                    sharing_agreements_path=REPO_ROOT / "contracts" / "data-sharing-agreements.yaml",
                    run_workers=False)


async def _counts(engine) -> tuple[int, int]:  # noqa: ANN001
    async with engine.connect() as conn:
        return ((await conn.execute(select(func.count()).select_from(persons))).scalar_one(),
                (await conn.execute(select(func.count()).select_from(register_changes))).scalar_one())


async def test_a_hub_given_another_key_stops_before_it_records_anyone_again(store_url: str) -> None:
    first, other = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app = create_app(_settings(store_url, first))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        _, key = await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            r = await http.post("/v1/register-changes", json=DETENTION, headers={"X-API-Key": key})
            assert r.status_code == 202, r.text
        recorded = await _counts(hub.engine)
    assert recorded == (1, 1)

    # Another key: the hub does not start (no answer to anyone), and says which settings to look at.
    app = create_app(_settings(store_url, other))
    with pytest.raises(DataKeyMismatch) as refused:
        async with app.router.lifespan_context(app):
            pytest.fail("the hub started under another key")
    text = str(refused.value)
    assert "S117_DATA_KEY" in text and "S117_DATA_KEY_FILE" in text
    assert first not in text and other not in text  # no key material in the error

    # The right key again: it starts, finds the person by NHS number, and records nobody twice.
    app = create_app(_settings(store_url, first))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        _, key = await add_client(hub.engine, "Oxford Health 2", "RNU", "trust", ["register:write", "s117:read"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            r = await http.post("/v1/register-changes", json=LEFT, headers={"X-API-Key": key})
            assert r.status_code == 202, r.text
        assert await _counts(hub.engine) == (1, 2), r.text


async def test_a_store_from_before_the_check_is_proved_on_a_persons_details(engine) -> None:  # noqa: ANN001
    """A store migrated to 0031 has no key record yet: a wrong key is caught on the people it
    holds, and the right one is recorded at its first start."""
    right, wrong = DataProtector(Fernet.generate_key()), DataProtector(Fernet.generate_key())
    await check_data_key(engine, right)
    async with engine.begin() as conn:
        await conn.execute(delete(store_keys))  # as a store from before migration 0031 has it
        await conn.execute(persons.insert().values(
            person_id="p-1", nhs_number_index=right.index("9434765919"), details=right.encrypt(b'{"x": 1}'),
            created_at=func.now(), updated_at=func.now()))
    with pytest.raises(DataKeyMismatch, match="the people already on the register"):
        await check_data_key(engine, wrong)
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(store_keys))).scalar_one() == 0
    await check_data_key(engine, right)  # proved on the person: recorded
    with pytest.raises(DataKeyMismatch, match="store_keys"):
        await check_data_key(engine, wrong)


async def test_two_processes_starting_together_with_different_keys_one_of_them_stops(engine) -> None:  # noqa: ANN001
    keys = [DataProtector(Fernet.generate_key()) for _ in range(2)]
    results = await asyncio.gather(*(check_data_key(engine, k) for k in keys), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["DataKeyMismatch", "NoneType"]
    winner = keys[results.index(None)]
    await check_data_key(engine, winner)  # and it stays the store's key
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(store_keys))).scalar_one() == 1


async def test_a_fresh_store_records_its_key_and_a_restart_with_it_passes(engine, tmp_path: Path) -> None:  # noqa: ANN001
    key_file = tmp_path / "data.key"
    await store_protector(engine, None, key_file)  # embedded mode's first run: the key file made, recorded
    assert key_file.exists()
    await store_protector(engine, None, key_file)  # a restart with it
    key_file.unlink()  # the key file lost: refused, and no new key file is made to be refused next time
    with pytest.raises(DataKeyMismatch, match="does not exist") as refused:
        await store_protector(engine, None, key_file)
    assert not key_file.exists()
    assert "no new key file was made" in str(refused.value)


async def test_a_missing_key_file_beside_a_store_holding_data_is_refused_without_making_one(
        engine, tmp_path: Path) -> None:  # noqa: ANN001
    """A store from before the check (no key record) that holds someone: the same refusal."""
    right = DataProtector(Fernet.generate_key())
    async with engine.begin() as conn:
        await conn.execute(persons.insert().values(
            person_id="p-1", nhs_number_index=right.index("9434765919"), details=right.encrypt(b'{"x": 1}'),
            created_at=func.now(), updated_at=func.now()))
    with pytest.raises(DataKeyMismatch, match="the people already on the register"):
        await store_protector(engine, None, tmp_path / "data.key")
    assert not (tmp_path / "data.key").exists()
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(store_keys))).scalar_one() == 0
