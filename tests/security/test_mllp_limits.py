"""Issue #6, item 4 (MLLP): probes replayed with small limits. Before: 300
idle connections stayed open after 60 s, a slow sender held one for 45 s, and
1,100 idle connections used up the process's file descriptors. Now: idle and
slow connections are closed after their timeouts, connections over the cap
(per peer and in total) are closed at once, an oversize frame gets AR and a
close. Real TCP sockets on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.mllp import MllpLimits, MllpServer, frame

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2" / "ADT_A01_s3_detained.hl7"


def a01(control_id: str = "LIM-1") -> bytes:
    return FIXTURE.read_text().replace("\n", "\r").replace("RNU-A01-0001", control_id).encode()


@pytest.fixture
async def mllp(app_hub, request) -> AsyncIterator[MllpServer]:  # noqa: ANN001
    limits = getattr(request, "param", None) or MllpLimits(read_timeout=0.6, idle_timeout=0.6, max_connections=6,
                                                           max_per_peer=3, max_frame_bytes=4096)
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0, limits=limits, drain_seconds=2)
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(stop))
    try:
        yield server
    finally:
        stop.set()
        await task


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (reads until EOF)."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass  # closed while we were still writing: the kernel answers with a reset
    return time.monotonic() - started


async def test_an_idle_connection_is_closed_after_the_idle_timeout(mllp):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    took = await closed_within(reader, 5)
    assert 0.4 < took < 3, took
    writer.close()


async def test_bytes_outside_frames_do_not_keep_a_connection_alive(mllp):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)

    async def chatter() -> None:
        try:
            for _ in range(50):
                writer.write(b"noise")
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass

    noise = asyncio.create_task(chatter())
    took = await closed_within(reader, 5)
    noise.cancel()
    assert took < 3, took
    writer.close()


async def test_a_slow_sender_is_cut_off_after_the_read_timeout(mllp):
    """A frame trickled a byte at a time must still end within the read timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    message = frame(a01("SLOW-1"))

    async def trickle() -> None:
        try:
            for byte in message:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass

    slow = asyncio.create_task(trickle())
    took = await closed_within(reader, 5)
    slow.cancel()
    assert took < 3, took
    writer.close()


async def test_a_connection_in_use_is_not_cut_while_it_keeps_sending_messages(mllp):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    for i in range(4):  # 4 x 0.3 s: longer than the idle timeout in all
        writer.write(frame(a01(f"BUSY-{i}")))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 10)
        assert b"MSA|A" in ack
        await asyncio.sleep(0.3)
    writer.close()


async def test_connections_over_the_per_peer_cap_are_closed_at_once(mllp):
    held = [await asyncio.open_connection("127.0.0.1", mllp.port) for _ in range(3)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    took = await closed_within(reader, 2)
    assert took < 0.3, took  # refused promptly, not after the idle timeout
    assert mllp.refused >= 1
    # The three admitted connections still work.
    r0, w0 = held[0]
    w0.write(frame(a01("CAP-1")))
    await w0.drain()
    assert b"MSA|A" in await asyncio.wait_for(r0.readuntil(b"\x1c\x0d"), 10)
    for _, w in [*held, (reader, writer)]:
        w.close()


@pytest.mark.parametrize("mllp", [MllpLimits(idle_timeout=5, read_timeout=5, max_connections=4, max_per_peer=100)],
                         indirect=True)
async def test_connections_over_the_total_cap_are_closed_at_once(mllp):
    # One peer address on loopback, so the per-peer cap is set high: the total cap is what bites.
    held = [await asyncio.open_connection("127.0.0.1", mllp.port) for _ in range(4)]
    await asyncio.sleep(0.05)
    extra = [await asyncio.open_connection("127.0.0.1", mllp.port) for _ in range(20)]
    for reader, _ in extra:
        assert await closed_within(reader, 2) < 0.5
    assert mllp.refused == 20
    for _, w in held + extra:
        w.close()
    await asyncio.sleep(0.1)
    # Capacity comes back once connections close.
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    writer.write(frame(a01("AFTER-1")))
    await writer.drain()
    assert b"MSA|A" in await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 10)
    writer.close()


async def test_an_oversize_frame_gets_ar_and_the_connection_is_closed(mllp):
    reader, writer = await asyncio.open_connection("127.0.0.1", mllp.port)
    writer.write(b"\x0b" + a01("BIG-1") + b"Z" * 10_000)
    await writer.drain()
    ack = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 5)
    assert b"MSA|AR|BIG-1|" in ack and b"size limit" in ack
    assert await closed_within(reader, 5) < 4
    writer.close()


class _StuckTransport:
    """A socket whose peer reads nothing: the ACK stays in the buffer."""

    def __init__(self, buffered: int) -> None:
        self.buffered = buffered

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False


class _Writer:
    def __init__(self, buffered: int) -> None:
        self.transport = _StuckTransport(buffered)
        self.written: list[bytes] = []
        self.drains = 0

    def write(self, data: bytes) -> None:
        self.written.append(data)

    async def drain(self) -> None:
        self.drains += 1
        await asyncio.Event().wait()  # never drained: the sender does not read


async def test_a_sender_that_does_not_read_its_acks_is_cut_off_after_the_read_timeout() -> None:
    server = MllpServer.__new__(MllpServer)
    server.limits = MllpLimits(read_timeout=0.3)
    stuck = _Writer(buffered=64 * 1024)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await server._answer(stuck, "MSH|^~\\&|S117HUB\rMSA|AA|X\r")  # type: ignore[arg-type]
    assert 0.25 < time.monotonic() - started < 2.0
    assert stuck.written == [frame("MSH|^~\\&|S117HUB\rMSA|AA|X\r")]
    # A socket that took the whole ACK is not waited on.
    taken = _Writer(buffered=0)
    await server._answer(taken, "MSH|^~\\&|S117HUB\rMSA|AA|Y\r")  # type: ignore[arg-type]
    assert taken.written and taken.drains == 0
