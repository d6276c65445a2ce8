from __future__ import annotations

pytest_plugins = ["tests.servers.postgres", "tests.servers.kafka"]

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hub.api.app import create_app
from hub.bootstrap import Hub
from hub.clients import add_client
from hub.settings import REPO_ROOT, Settings


@dataclass
class InProcessHub:
    http: httpx.AsyncClient
    hub: Hub
    keys: dict[str, str]


def test_settings(tmp_path: Path, **overrides) -> Settings:  # noqa: ANN003
    return Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        data_key_file=tmp_path / "data.key",
        sharing_agreements_path=REPO_ROOT / "contracts" / "data-sharing-agreements.yaml",
        run_workers=False,
        # The tests' webhook receivers listen on loopback, which the target
        # guard (hub/delivery/targets.py) refuses unless the operator allows it.
        **{"webhook_allowed_hosts": ["127.0.0.1"], **overrides},
    )


@pytest.fixture
async def app_hub(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    """The app in-process (lifespan run, workers off so tests drive them)."""
    app = create_app(test_settings(tmp_path))
    async with app.router.lifespan_context(app):
        hub: Hub = app.state.hub
        keys = {
            "trust": (await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"]))[1],
            "other-trust": (await add_client(hub.engine, "CNWL", "RV3", "trust", ["register:write", "s117:read"]))[1],
            "E06000060": (await add_client(hub.engine, "Bucks", "E06000060", "council",
                                           ["subscriptions:write", "s117:read"]))[1],
            "E08000025": (await add_client(hub.engine, "Birmingham", "E08000025", "council",
                                           ["subscriptions:write", "s117:read"]))[1],
        }
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            yield InProcessHub(http, hub, keys)


@pytest.fixture
def restore_logging():  # noqa: ANN201
    """For a test that configures logging (`configure_logging`: JSON lines to
    stdout): the redacting default (lines to stderr) and the root logger's
    handlers put back afterwards. Left configured, every later test in the
    process that reads the hub's lines from stderr (capsys) found none."""
    import importlib
    import logging

    import structlog

    import hub.observability.logging as hub_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    importlib.reload(hub_logging)  # back to the redacting default
