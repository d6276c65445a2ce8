"""hub.periodic: the one loop every background job of the hub runs in."""

from __future__ import annotations

import asyncio

import pytest

from hub.periodic import every, pause


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def error(self, event: str, **kw: object) -> None:
        self.lines.append(("error", event, kw))

    def warning(self, event: str, **kw: object) -> None:
        self.lines.append(("warning", event, kw))


async def test_pause_ends_early_when_stopped_and_says_so() -> None:
    stop = asyncio.Event()
    assert await pause(stop, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, stop.set)
    started = asyncio.get_running_loop().time()
    assert await pause(stop, 30) is True
    assert asyncio.get_running_loop().time() - started < 5


async def test_a_failing_job_is_logged_by_kind_only_and_tried_again() -> None:
    stop, log, runs = asyncio.Event(), Log(), []

    async def job() -> None:
        runs.append(1)
        if len(runs) == 3:
            stop.set()
        raise ValueError("9990000018 Jane Doe")  # what a failure's message may hold: never logged

    await asyncio.wait_for(every(0.001, stop, job, log=log, failed="scan failed", level="warning"), 5)
    assert len(runs) == 3
    assert log.lines == [("warning", "scan failed", {"exc_type": "ValueError"})] * 3


async def test_wait_first_and_a_stop_during_the_wait_means_no_run() -> None:
    stop, runs = asyncio.Event(), []

    async def job() -> None:
        runs.append(1)

    asyncio.get_running_loop().call_later(0.02, stop.set)
    await asyncio.wait_for(every(30, stop, job, log=Log(), failed="x", wait_first=True), 5)
    assert runs == []
    stop.clear()
    asyncio.get_running_loop().call_later(0.02, stop.set)
    await asyncio.wait_for(every(30, stop, job, log=Log(), failed="x"), 5)
    assert runs == [1]  # at once, then waited until stopped


@pytest.mark.parametrize("until_idle, expected", [(True, 4), (False, 1)])
async def test_until_idle_drains_without_waiting(until_idle: bool, expected: int) -> None:
    stop, work = asyncio.Event(), [3]
    calls = []

    async def job() -> int:
        calls.append(1)
        found = work[0]
        work[0] = max(0, found - 1)
        return found

    asyncio.get_running_loop().call_later(0.1, stop.set)
    await asyncio.wait_for(every(30, stop, job, log=Log(), failed="x", until_idle=until_idle), 5)
    assert len(calls) == expected  # 3, 2, 1 found, then 0: rests (until_idle); else one run a 30 s interval
