"""The deliverers' polls when there is nothing to do (hub/delivery/leases.py
`SubscriptionDeliverer.serve`): they come further apart, up to
`idle_poll_max_seconds`; a wake-up is answered at once whatever the wait; a
head backing off is looked for when it falls due, not a whole idle wait later."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hub.delivery.leases import SubscriptionDeliverer


class _Polled(SubscriptionDeliverer):
    channel = "test"
    handler = "test"

    def __init__(self, next_due: list[float | None] | None = None) -> None:
        self.polls: list[float] = []
        self._next = next_due or []

    async def _due_heads(self) -> list[Any]:
        self.polls.append(time.monotonic())
        self._next_due_in = self._next.pop(0) if self._next else None
        return []


async def _serve_for(d: _Polled, seconds: float, during=None) -> None:  # noqa: ANN001
    stop = asyncio.Event()
    task = asyncio.create_task(d.serve(0.05, stop))
    if during is not None:
        await during()
    await asyncio.sleep(seconds)
    stop.set()
    await task


async def test_idle_polls_come_further_apart_up_to_the_cap() -> None:
    d = _Polled()
    d.idle_poll_max_seconds = 0.4
    await _serve_for(d, 2.0)
    gaps = [b - a for a, b in zip(d.polls, d.polls[1:])]
    # 0.05, 0.1, 0.2, 0.4, 0.4, ...: about 7 polls in 2 s, where a fixed 0.05 s poll makes 40.
    assert len(d.polls) <= 10, len(d.polls)
    assert gaps[-1] > 0.3 and max(gaps) < 0.4 + 0.4  # at the cap (the margin: a busy host's late timers)


async def test_a_wake_up_is_answered_at_once_after_a_long_idle_wait() -> None:
    d = _Polled()
    d.idle_poll_max_seconds = 5.0
    woken: list[float] = []

    async def wake_later() -> None:
        await asyncio.sleep(1.5)  # the idle wait is now well over a second
        woken.append(time.monotonic())
        d.wake()

    await _serve_for(d, 1.8, wake_later)
    assert woken and any(0 <= p - woken[0] < 0.05 for p in d.polls), "the wake-up waited for the idle poll"


async def test_a_head_backing_off_is_looked_for_when_it_falls_due() -> None:
    # Idle for a while (the idle wait grown to 3.2 s), then the store says a head falls due in 0.3 s.
    d = _Polled(next_due=[None] * 6 + [0.3])
    d.idle_poll_max_seconds = 5.0
    await _serve_for(d, 4.5)
    gap = d.polls[7] - d.polls[6]
    assert 0.28 <= gap < 1.5, gap
