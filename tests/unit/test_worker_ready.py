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
