"""The dispatcher's linger (`run_dispatcher`, S117_DISPATCH_LINGER_MS): after
a batch shorter than its limit the next is fetched no sooner than `linger`
from that batch's start, so changes arriving steadily are dispatched in
fewer, larger batches; after a quiet spell (a fetch that found nothing) a
publish is dispatched at once, and a full batch is followed at once."""

from __future__ import annotations

import asyncio

from hub.delivery.dispatcher import Dispatcher, run_dispatcher


class _Log:
    def __init__(self) -> None:
        self._new = asyncio.Event()

    async def published(self) -> None:
        await self._new.wait()
        self._new.clear()


class _Dispatcher:
    """What `run_dispatcher` uses of a Dispatcher: `run_once`, `batch_limit`, `linger`, `_log`."""

    batch_limit = 10
    linger = Dispatcher.linger

    def __init__(self, sizes: list[int]) -> None:
        self._log = _Log()
        self._sizes = sizes
        self.calls: list[tuple[float, int]] = []

    async def run_once(self) -> int:
        n = self._sizes.pop(0) if self._sizes else 0
        self.calls.append((asyncio.get_running_loop().time(), n))
        return n


async def _run(d: _Dispatcher, until: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run_dispatcher(d, poll_seconds=5.0, stop=stop))  # type: ignore[arg-type]
    for _ in range(400):
        if len(d.calls) >= until:
            break
        await asyncio.sleep(0.005)
    stop.set()
    await task


async def test_short_batches_are_spaced_by_the_linger_and_full_ones_are_not() -> None:
    d = _Dispatcher([2, 3, 10, 1, 0])
    d.linger = 0.1
    await _run(d, until=5)
    (t0, _), (t1, _), (t2, _), (t3, _), (t4, _) = d.calls[:5]
    assert t1 - t0 >= 0.095 and t2 - t1 >= 0.095  # after a short batch: the linger from its start
    assert t3 - t2 < 0.05  # after a full one: at once
    assert t4 - t3 >= 0.095


async def test_a_publish_after_a_quiet_spell_is_dispatched_at_once() -> None:
    d = _Dispatcher([0, 1])
    d.linger = 0.5
    stop = asyncio.Event()
    task = asyncio.create_task(run_dispatcher(d, poll_seconds=5.0, stop=stop))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert len(d.calls) == 1  # found nothing: waiting for a publish (or the 5 s poll)
    sent = asyncio.get_running_loop().time()
    d._log._new.set()
    for _ in range(100):
        if len(d.calls) >= 2:
            break
        await asyncio.sleep(0.002)
    assert d.calls[1][0] - sent < 0.1  # not the linger, not the poll
    stop.set()
    await task


async def test_no_linger_fetches_again_at_once() -> None:
    d = _Dispatcher([1, 1, 1, 0])
    d.linger = 0.0
    await _run(d, until=4)
    assert d.calls[3][0] - d.calls[0][0] < 0.05
