"""The worker process gets the front's settings whole (a hub built from a
Settings object, not only from the environment, runs its workers on the same
store), and reads them once."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.settings import Settings
from hub.worker_process import SETTINGS_ENV, WorkerProcess, sqlite_file, worker_settings


def test_the_front_settings_reach_the_worker_process_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    front = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", data_key_file=tmp_path / "k",
                     webhook_allowed_hosts=["127.0.0.1", "hooks.example"], worker_poll_seconds=0.05,
                     separate_workers=True)
    monkeypatch.setenv("S117_DATABASE_URL", "sqlite+aiosqlite:////elsewhere.db")  # what the environment says
    monkeypatch.setenv(SETTINGS_ENV, WorkerProcess(front)._env[SETTINGS_ENV])
    got = worker_settings()
    assert got == front and got.database_url.endswith("hub.db")
    assert SETTINGS_ENV not in __import__("os").environ  # read once, not handed on
    assert worker_settings().database_url == "sqlite+aiosqlite:////elsewhere.db"  # none passed: the environment's


def test_only_a_sqlite_file_is_watched() -> None:
    assert sqlite_file("sqlite+aiosqlite:////var/lib/s117/hub.db") == "/var/lib/s117/hub.db"
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_file("postgresql+asyncpg://hub@db/s117") is None


def test_the_worker_process_runs_on_uvloop_where_installed() -> None:
    """`s117hub workers` runs its loop as uvicorn runs the front's: on uvloop
    (installed with uvicorn[standard] on Linux), returning what the coroutine returns."""
    import asyncio

    import uvloop

    from hub.cli import run_loop

    async def which() -> type:
        return type(asyncio.get_running_loop())

    assert run_loop(which()) is uvloop.Loop
