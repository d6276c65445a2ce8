"""When a subscription's task ends, `SubscriptionDeliverer.serve` polls for
due heads again only if it may have missed something: the task failed or was
stopped (not emptied), or a poll found the subscription due while its task
ran (deliveries queued after its last claim). A task whose last claim found
nothing due ends without a poll of its own: a poll a burst at one client
(bench/JOURNAL.md, "Eighteenth session")."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from hub.delivery.leases import SubscriptionDeliverer


class _Tasks(SubscriptionDeliverer):
    channel = "test"
    handler = "test"

    def __init__(self, heads: list[list[str]], drain_seconds: float, empties: bool = True) -> None:
        self.polls: list[float] = []
        self.ended: list[float] = []
        self._heads = heads  # what each poll finds due, in turn (then nothing)
        self._drain_seconds = drain_seconds
        self._empties = empties

    async def _due_heads(self) -> list[Any]:
        self.polls.append(time.monotonic())
        self._next_due_in = None
        found = self._heads.pop(0) if self._heads else []
        return [SimpleNamespace(subscription_id=sid) for sid in found]

    async def _drain(self, subscription_id: str, limit: int | None, stop: asyncio.Event | None = None,
                     emptied: set[str] | None = None) -> int:
        await asyncio.sleep(self._drain_seconds)
        if self._empties and emptied is not None:
            emptied.add(subscription_id)  # its last claim found nothing
        self.ended.append(time.monotonic())
        return 1


async def _serve(d: _Tasks, seconds: float, during=None) -> None:  # noqa: ANN001
    stop = asyncio.Event()
    task = asyncio.create_task(d.serve(5.0, stop))  # no timed poll within the test
    if during is not None:
        await during()
    await asyncio.sleep(seconds)
    stop.set()
    await task


async def test_a_task_that_emptied_its_queue_ends_without_a_poll() -> None:
    d = _Tasks([["a", "b"]], drain_seconds=0.02)
    await _serve(d, 0.3)
    assert len(d.ended) == 2
    assert len(d.polls) == 1, d.polls  # the first poll only, none at each task's end


async def test_a_subscription_found_due_while_its_task_ran_is_polled_when_it_ends() -> None:
    d = _Tasks([["a"], ["a"], []], drain_seconds=0.15)

    async def wake_while_running() -> None:
        await asyncio.sleep(0.05)
        d.wake()  # deliveries queued for "a" after its task's last claim, maybe

    await _serve(d, 0.4, wake_while_running)
    assert len(d.polls) == 3, d.polls  # the first, the wake-up's (a busy: noted), and at the end of a's task
    assert d.ended and 0 <= d.polls[2] - d.ended[0] < 0.05


async def test_a_task_that_did_not_empty_its_queue_is_polled_after_at_once() -> None:
    d = _Tasks([["a"], []], drain_seconds=0.02, empties=False)  # failed (a backoff) or cut short
    await _serve(d, 0.3)
    assert len(d.polls) == 2, d.polls
    assert 0 <= d.polls[1] - d.ended[0] < 0.05
