from __future__ import annotations

pytest_plugins = ["tests.servers.postgres", "tests.servers.kafka"]

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from hub.api.app import create_app
from hub.bootstrap import Hub
from hub.clients import add_client
from hub.settings import REPO_ROOT, Settings
from hub.store.schema import INCLUDES_RETRACTED


@dataclass
class InProcessHub:
    http: httpx.AsyncClient
    hub: Hub
    keys: dict[str, str]


_TEMPLATE: list[Path] = []  # the migrated empty store, made once per test run


def _template_store() -> Path:
    """An empty store at the newest schema, migrated once for the whole run (Alembic's 34 migrations
    cost about 0.2-0.4 s a store, and most tests make one); each test's store starts as a copy of it.
    The migrations themselves are tested from an empty database on every backend
    (tests/contract/test_migrations.py)."""
    if not _TEMPLATE:
        import asyncio
        import atexit
        import shutil
        import sqlite3
        import tempfile
        import threading

        from hub.store.db import create_engine, create_schema

        path = Path(tempfile.mkdtemp(prefix="s117-template-")) / "hub.db"
        atexit.register(shutil.rmtree, path.parent, True)

        async def migrate() -> None:
            engine = create_engine(f"sqlite+aiosqlite:///{path}")
            try:
                await create_schema(engine)
            finally:
                await engine.dispose()

        # Called from inside a test's event loop as often as not: migrate on a loop of its own.
        worker = threading.Thread(target=asyncio.run, args=(migrate(),))
        worker.start()
        worker.join()
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the file itself, to be copied
        finally:
            con.close()
        _TEMPLATE.append(path)
    return _TEMPLATE[0]


def test_settings(tmp_path: Path, **overrides) -> Settings:  # noqa: ANN003
    if (not {"database_url", "sqlite_page_size"} & set(overrides) and tmp_path.is_dir()
            and not (tmp_path / "hub.db").exists()):
        import shutil

        shutil.copyfile(_template_store(), tmp_path / "hub.db")
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


@pytest.fixture(autouse=True)
def _settings_read_afresh():  # noqa: ANN202
    """`get_settings()` is read once a process (hub/settings.py): a test that runs a CLI command in-process
    leaves its environment's settings there for every later test (tests/unit/test_worker_process.py read
    another test's database URL). Forgotten after each test."""
    yield
    from hub.settings import get_settings

    get_settings.cache_clear()


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


# Every read of people's histories (register changes' content, by person)
# either leaves retracted changes out (`hub.store.schema.not_retracted`) or says
# it means to see them (`including_retracted`): a history read that forgot would
# bring a change recorded in error back into someone's position. Checked on
# every statement every test runs through SQLAlchemy (SQLite and PostgreSQL
# alike); a test's own look at the whole table (no person named) is not one.
_UNFILTERED_HISTORY: list[str] = []
_BY_PERSON = ("register_changes.person_id =", "register_changes.person_id IN")


@event.listens_for(Engine, "before_cursor_execute")
def _history_reads_leave_out_retracted(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ANN202
    if ("register_changes.canonical" in statement and "change_retractions" not in statement
            and statement.lstrip()[:6].upper() == "SELECT" and any(p in statement for p in _BY_PERSON)
            and not (context is not None and context.execution_options.get(INCLUDES_RETRACTED))):
        _UNFILTERED_HISTORY.append(statement)


@pytest.fixture(autouse=True)
def _history_reads_checked():  # noqa: ANN202
    start = len(_UNFILTERED_HISTORY)
    yield
    unfiltered = _UNFILTERED_HISTORY[start:]
    assert not unfiltered, ("a read of register changes' content neither leaves retracted changes out "
                            "(not_retracted) nor says it includes them (including_retracted):\n"
                            + "\n".join(dict.fromkeys(unfiltered)))
