"""A worker process is `ready` (and `/health/ready` says `ok` rather than
`starting`) only once it has said so on the pipe the front gave it: its
workers have started. One that exits without saying so never is, and a
restarted one is not ready until it says so again. Real child processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from hub.worker_process import READY_FD_ENV, WorkerProcess, _tell_front_ready

# A stand-in for `s117hub workers`: says it is ready after a pause, then waits to be stopped.
SAYS_READY = ("import os, time; time.sleep(0.4); fd = int(os.environ['" + READY_FD_ENV + "']);"
              " os.write(fd, b'1'); os.close(fd); time.sleep(60)")
NEVER_SAYS = "import time; time.sleep(60)"


async def until(check, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def supervised(script: str, role: str) -> AsyncIterator[WorkerProcess]:
    """`script` run and supervised as the front runs a worker process; stopped afterwards."""
    wp = WorkerProcess(command=[sys.executable, "-c", script], role=role)
    stop = asyncio.Event()
    task = asyncio.create_task(wp.run(stop))
    try:
        await until(lambda: wp.alive)
        yield wp
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_ready_only_once_the_process_says_so_and_again_after_a_restart() -> None:
    async with supervised(SAYS_READY, "back") as wp:
        assert not wp.ready  # started, its workers not yet
        await until(lambda: wp.ready)
        first = wp.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: not wp.ready)
        await until(lambda: wp.alive and wp.pid != first, timeout=15)
        assert not wp.ready  # the new process has not said so yet
        await until(lambda: wp.ready)
        assert wp.restarts == 1
    assert not wp.alive and not wp.ready


async def test_a_process_that_never_says_so_is_never_ready() -> None:
    async with supervised(NEVER_SAYS, "deliver") as wp:
        await asyncio.sleep(1.0)
        assert wp.alive and not wp.ready


def test_telling_the_front_writes_one_byte_once(monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = os.pipe()
    monkeypatch.setenv(READY_FD_ENV, str(w))
    _tell_front_ready()
    assert os.read(r, 10) == b"1"
    assert os.read(r, 10) == b""  # its end closed: said once
    assert READY_FD_ENV not in os.environ
    _tell_front_ready()  # started without a pipe (by hand): nothing to tell
    os.close(r)


class Said:
    """The worker_process module's log, recorded: (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def warning(self, event: str, **kw: object) -> None:
        self.lines.append(("warning", event, kw))

    def info(self, event: str, **kw: object) -> None:
        self.lines.append(("info", event, kw))

    def restarts(self) -> list[dict]:
        return [kw for level, event, kw in self.lines if event == "worker process exited; restarting"]


# Says it is ready, then stops cleanly a moment later, as a worker told to stop (SIGTERM) does.
STOPS_CLEANLY = ("import os, time; fd = int(os.environ['" + READY_FD_ENV + "']); os.write(fd, b'1'); os.close(fd);"
                 " time.sleep(0.3)")
CRASHES = "import sys, time; time.sleep(0.3); sys.exit(3)"


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> Said:
    import hub.worker_process as wp_module

    recorder = Said()
    monkeypatch.setattr(wp_module, "log", recorder)
    return recorder


async def test_a_clean_exit_as_the_hub_stops_is_not_a_restart(said: Said) -> None:
    # systemd signals every process of the unit: the workers may stop a moment before the front does.
    async with supervised(STOPS_CLEANLY, "back") as wp:
        await until(lambda: not wp.alive)
        # the front's own stop follows (the `supervised` exit sets it) within the backoff
    assert said.restarts() == [] and wp.restarts == 0


async def test_a_clean_exit_while_the_hub_runs_is_restarted_after_the_backoff_and_said(said: Said) -> None:
    async with supervised(STOPS_CLEANLY, "deliver") as wp:
        first = wp.pid
        await until(lambda: not wp.alive)
        assert said.restarts() == []  # not yet: the hub may be stopping
        await until(lambda: wp.alive and wp.pid != first, timeout=10)
        assert said.restarts()[0]["status_code"] == 0 and wp.restarts >= 1


async def test_a_crash_is_said_at_once(said: Said) -> None:
    async with supervised(CRASHES, "back") as wp:
        await until(lambda: not wp.alive)
        await until(lambda: said.restarts() != [], timeout=0.5)  # before the 1 s backoff is over
        assert said.restarts()[0]["status_code"] == 3 and said.restarts()[0]["next_attempt_in"] == 1.0
