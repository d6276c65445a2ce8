"""A minimal HTTP/1.1 keep-alive client for the load benches.

httpx spends a few milliseconds of CPU per request; on a 2-core machine the
bench's own clients then take the core the hub would use, and the figures
measure the client. This client writes a pre-formatted request and reads one
`Content-Length` response per request on its own connection (no pipelining,
no chunked bodies: the hub answers with a length), for about 50 us a request.
"""

from __future__ import annotations

import asyncio

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
