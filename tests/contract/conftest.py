"""Contract fixtures: the same tests against every store backend.

`store_url` is an empty database of each kind: SQLite in the test's tmp_path,
PostgreSQL a fresh database (random name) on the session's server
(tests/servers/postgres.py), so no test truncates or shares tables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.api.app import create_app
from hub.bootstrap import Hub
from hub.clients import add_client
from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE
from hub.settings import REPO_ROOT, Settings
from hub.store.db import create_engine, create_schema
from tests.conftest import InProcessHub

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue("postgres_database_url")


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(store_url)
    await create_schema(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def pg_engine(postgres_database_url: str) -> AsyncIterator[AsyncEngine]:
    """The hub's engine on a fresh PostgreSQL database (no schema): tests of PostgreSQL alone."""
    engine = create_engine(postgres_database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def store_hub(store_url: str, tmp_path: Path) -> AsyncIterator[InProcessHub]:
    """The app in-process on each backend (lifespan run, workers off)."""
    settings = Settings(
        database_url=store_url,
        canonical_base=DEFAULT_CANONICAL_BASE,  # required on PostgreSQL
        data_key_file=tmp_path / "data.key",
        sharing_agreements_path=REPO_ROOT / "contracts" / "data-sharing-agreements.yaml",
        run_workers=False,
        # council.invalid: a subscriber reached only through a mock transport.
        webhook_allowed_hosts=["127.0.0.1", "council.invalid"],
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        hub: Hub = app.state.hub
        keys = {
            "trust": (await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"]))[1],
            "E06000060": (await add_client(hub.engine, "Bucks", "E06000060", "council",
                                           ["subscriptions:write", "s117:read"]))[1],
        }
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            yield InProcessHub(http, hub, keys)
