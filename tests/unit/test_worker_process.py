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


@pytest.mark.parametrize("delivery_apart", [False, True])
async def test_each_process_runs_its_own_workers_and_no_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               delivery_apart: bool) -> None:
    """With separate workers the front runs no dispatcher and no deliverer
    (a deliverer left in the front, as one was for a while, polls and sends
    beside the worker process's); with the deliverers apart too, the worker
    processes are asked for `back` and `deliver`, else for `all`."""
    import asyncio

    from hub.api.app import create_app
    from hub.bootstrap import Hub
    from hub.worker_process import ROLE_ENV

    started: list[str] = []

    def fake_start(self: Hub) -> None:  # no real processes in a unit test: the roles they would be given
        started.append(WorkerProcess(self.settings, role="back" if self.settings.separate_delivery else "all")
                       ._env[ROLE_ENV])
        if self.settings.separate_delivery:
            started.append(WorkerProcess(self.settings, role="deliver")._env[ROLE_ENV])

    monkeypatch.setattr(Hub, "start_worker_process", fake_start)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", data_key_file=tmp_path / "k",
                        separate_workers=True, separate_delivery=delivery_apart, worker_poll_seconds=0.05)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        front = {t.get_name() for t in app.state.hub.worker_tasks()}
        await asyncio.sleep(0)
    assert "dispatcher" not in front and not any(n.endswith("-deliverer") for n in front), front
    assert started == (["back", "deliver"] if delivery_apart else ["all"])

    # The same hub's tasks as each worker process starts them (hub/worker_process.py run_workers).
    from hub.bootstrap import build_hub

    for back, deliver, has_dispatcher, has_deliverer in ((True, False, True, False), (False, True, False, True),
                                                         (True, True, True, True)):
        hub = await build_hub(settings)
        try:
            hub.start_workers(front=False, back=back, deliver=deliver)
            names = {t.get_name() for t in hub.worker_tasks()}
            assert ("dispatcher" in names) is has_dispatcher, names
            assert ("webhook-deliverer" in names) is has_deliverer, names
            # The deliverers' task names as they were (the readiness check names a stopped one).
            assert ({"file-deliverer", "fhir-rest-hook-deliverer"} <= names) is has_deliverer, names
            assert ("housekeeping" in names) is has_dispatcher, names
        finally:
            await hub.close()


async def test_the_dispatchers_batch_limit_is_the_setting_in_every_process(tmp_path: Path) -> None:
    """`S117_DISPATCH_BATCH_MAX` is the dispatcher's batch limit, and the
    worker process no longer cuts it down (it did, to 20, before batches
    were worked out on a snapshot: a backlog then cost a batch's fixed CPU
    every 20 events, bench/JOURNAL.md "Eleventh session")."""
    import inspect

    from hub import worker_process
    from hub.bootstrap import build_hub

    hub = await build_hub(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
                                   data_key_file=tmp_path / "k", dispatch_batch_max=37))
    try:
        assert hub.dispatcher.batch_limit == 37
    finally:
        await hub.close()
    assert Settings().dispatch_batch_max == 100
    assert "batch_limit" not in inspect.getsource(worker_process.run_workers)
