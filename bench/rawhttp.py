"""A minimal HTTP/1.1 keep-alive client and webhook receiver for the load benches.

httpx spends a few milliseconds of CPU per request; on a 2-core machine the
bench's own clients then take the core the hub would use, and the figures
measure the client. This client writes a pre-formatted request and reads one
`Content-Length` response per request on its own connection (no pipelining,
no chunked bodies: the hub answers with a length), for about 50 us a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson


class RawClient:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self._host, self._port = host, port
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        data = await self._reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, data

    async def post_json(self, path: str, body: bytes) -> tuple[int, dict]:
        status, data = await self.post(path, body)
        return status, orjson.loads(data) if data else {}

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        self._reader = self._writer = None


class _Receiving(asyncio.Protocol):
    """One connection of `serve_receiver`: requests read one after another
    (keep-alive, `Content-Length` bodies, as the hub's webhook client sends
    them), each answered 204 once its body is in."""

    def __init__(self, on_request: Callable[[bytes], None]) -> None:
        self._on_request = on_request
        self._buf = bytearray()
        self._body: int | None = None  # the body length still awaited, once a head is in
        self._event_id = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            if self._body is None:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                length, event_id = 0, b""
                for line in bytes(self._buf[:end]).split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"s117-event-id":
                        event_id = value.strip()
                del self._buf[:end + 4]
                self._body, self._event_id = length, event_id
            if len(self._buf) < self._body:
                return
            del self._buf[:self._body]
            self._body = None
            self._on_request(self._event_id)
            assert self._transport is not None
            self._transport.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")


async def serve_receiver(port: int, on_request: Callable[[bytes], None]) -> asyncio.Server:
    """A webhook receiver that does nothing but answer 204 and call
    `on_request(event id header)` for each POST: tens of microseconds of CPU
    a request where uvicorn with FastAPI takes a few hundred, so that on 2
    cores the receiver does not take the CPU the hub under test would use."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Receiving(on_request), "127.0.0.1", port)
