"""The MLLP listener's reads by a deadline (`hub.mllp.ReadDeadline`): one
timer a connection instead of `asyncio.timeout_at` around each read, with the
same answers: the bytes if any come (or are buffered already) by the
deadline, None once it passes with none, and a cancellation from anyone else
passed on."""

from __future__ import annotations

import asyncio

import pytest

from hub.mllp import ReadDeadline


async def _reads() -> tuple[asyncio.AbstractEventLoop, asyncio.StreamReader, ReadDeadline]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    return loop, asyncio.StreamReader(), ReadDeadline(loop, task)


async def test_bytes_that_come_before_the_deadline_are_read_and_none_once_it_passes():
    loop, reader, reads = await _reads()
    loop.call_later(0.02, reader.feed_data, b"abc")
    assert await reads.read(reader, loop.time() + 5) == b"abc"
    started = loop.time()
    assert await reads.read(reader, started + 0.1) is None
    assert 0.09 <= loop.time() - started < 2
    assert asyncio.current_task().cancelling() == 0  # the expiry's cancellation is taken back
    reads.close()


async def test_a_deadline_moved_later_is_the_one_kept():
    loop, reader, reads = await _reads()
    start = loop.time()
    loop.call_later(0.02, reader.feed_data, b"1")
    assert await reads.read(reader, start + 0.1) == b"1"  # the timer is set for start + 0.1
    loop.call_later(0.25, reader.feed_data, b"2")
    assert await reads.read(reader, start + 0.6) == b"2"  # not cut off at start + 0.1
    assert loop.time() - start >= 0.25
    assert await reads.read(reader, loop.time() + 0.05) is None
    reads.close()


async def test_a_deadline_moved_earlier_is_kept_too():
    loop, reader, reads = await _reads()
    loop.call_later(0.01, reader.feed_data, b"1")
    assert await reads.read(reader, loop.time() + 30) == b"1"
    started = loop.time()
    assert await reads.read(reader, started + 0.05) is None
    assert loop.time() - started < 2
    reads.close()


async def test_buffered_bytes_are_read_whatever_the_time():
    loop, reader, reads = await _reads()
    reader.feed_data(b"late")
    assert await reads.read(reader, loop.time() - 1) == b"late"
    assert await reads.read(reader, loop.time() - 1) is None  # nothing buffered: the deadline has passed
    reads.close()


async def test_a_cancellation_from_elsewhere_is_passed_on_deadline_or_not():
    loop = asyncio.get_running_loop()

    async def reading(deadline: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        reads = ReadDeadline(loop, task)
        try:
            await reads.read(asyncio.StreamReader(), deadline)
        finally:
            reads.close()

    # The deadline far off; then passed, with the other cancellation right after the deadline's own
    # (both timers due: the deadline's, set first and due first, fires first).
    for deadline, cancel_at in ((30.0, None), (-1.0, -0.5)):
        task = asyncio.create_task(reading(loop.time() + deadline))
        await asyncio.sleep(0)  # reading, the deadline's timer set
        if cancel_at is None:
            task.cancel()
        else:
            loop.call_at(loop.time() + cancel_at, task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_close_stops_the_timer():
    loop, reader, reads = await _reads()
    reader.feed_data(b"x")
    assert await reads.read(reader, loop.time() + 0.05) == b"x"
    reads.close()
    await asyncio.sleep(0.1)  # the deadline passes with the connection gone: nothing cancels this task
    assert asyncio.current_task().cancelling() == 0
