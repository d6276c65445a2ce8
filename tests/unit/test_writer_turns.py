"""The hub's processes hand SQLite's write lock over through a file lock
(hub/store/db.py `WriterTurns.hold`): a waiter is woken as the holder lets
go (not at its next poll); a waiter cancelled meanwhile leaves the lock
free; a process that dies holding it loses it. (Two `WriterTurns` on one
file stand for two processes: a flock belongs to an open file description.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from hub.store.db import WriterTurns


async def test_a_waiter_is_woken_as_the_holder_lets_go(tmp_path: Path) -> None:
    db = str(tmp_path / "hub.db")
    front, worker = WriterTurns(db), WriterTurns(db)
    await front.hold()
    waiting = asyncio.create_task(worker.hold())
    await asyncio.sleep(0.05)
    assert not waiting.done() and worker.waited == 1
    let_go_at = time.monotonic()
    front.let_go()
    await asyncio.wait_for(waiting, 1.0)
    assert time.monotonic() - let_go_at < 0.1
    # Now the worker holds it: the front waits in turn.
    again = asyncio.create_task(front.hold())
    await asyncio.sleep(0.05)
    assert not again.done()
    worker.let_go()
    await asyncio.wait_for(again, 1.0)
    front.let_go()


async def test_a_cancelled_waiter_never_keeps_the_lock(tmp_path: Path) -> None:
    db = str(tmp_path / "hub.db")
    holder, cancelled, third = WriterTurns(db), WriterTurns(db), WriterTurns(db)
    await holder.hold()
    waiting = asyncio.create_task(cancelled.hold())
    await asyncio.sleep(0.05)
    waiting.cancel()
    holder.let_go()  # the cancelled waiter's thread gets it now, and lets go at once
    await asyncio.wait_for(third.hold(), 1.0)
    third.let_go()


async def test_a_process_that_dies_holding_the_lock_loses_it(tmp_path: Path) -> None:
    db = str(tmp_path / "hub.db")
    turns = WriterTurns(db)  # creates the file
    child = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({db + '-turns'!r}, os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"held"
        waiting = asyncio.create_task(turns.hold())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        child.kill()
        await asyncio.wait_for(waiting, 5.0)
        turns.let_go()
    finally:
        child.kill()
        child.wait()
