"""The hub's background loops: a job run again and again until the hub stops.

Every scanner, watcher and poller of the hub (the review and workflow
clocks, the samplers, the agreements' watch, the store's write probe, the
housekeeping, the pollers of the consumers and deliverers) is the same loop:
run the job, log its failure by kind only (never its message: it may name a
person) and go on, then wait for the interval or until the hub stops,
whichever comes first. `every` is that loop, once; `pause` is its wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`, less if `stop` is set first; True once `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return stop.is_set()
    return True


async def every(seconds: float, stop: asyncio.Event, job: Callable[[], Awaitable[Any]], *, log: Any,
                failed: str, level: Literal["error", "warning"] = "error", wait_first: bool = False,
                until_idle: bool = False) -> None:
    """Run `job` every `seconds` until `stop` is set.

    A job that raises is logged as `failed` at `level` with its exception's
    type only, and tried again at the next round. `wait_first`: the first
    run comes after one interval, not at once. `until_idle`: a round whose
    job returned something true (it found work) is followed at once by the
    next, without waiting (a poller drains what is there, then rests)."""
    if wait_first and await pause(stop, seconds):
        return
    while not stop.is_set():
        found = None
        try:
            found = await job()
        except Exception as exc:  # noqa: BLE001 - logged by kind; the next round tries again
            getattr(log, level)(failed, exc_type=type(exc).__name__)
        if until_idle and found:
            continue
        if await pause(stop, seconds):
            return
