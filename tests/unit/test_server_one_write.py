"""A response's head and body go out in one write (hub/server.py
`_OneWriteResponse`): the head is held until the body's first write in the
same turn of the event loop. A head with nothing after it in that turn (a
streamed body) still leaves at the turn's end, and a close sends it first."""

from __future__ import annotations

import asyncio

import uvicorn

from hub.server import _OneWriteResponse, uvicorn_config
from hub.settings import Settings
from tests.support import free_port


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_a_head_and_its_body_in_the_same_turn_are_one_write() -> None:
    t = _Transport()
    w = _OneWriteResponse(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert t.writes == []
    w.write(b"ok")
    assert t.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    await asyncio.sleep(0)
    assert len(t.writes) == 1 and not w.is_closing()  # the rest is the transport's own


async def test_a_head_alone_leaves_at_the_end_of_the_turn_and_a_close_sends_it_first() -> None:
    t = _Transport()
    w = _OneWriteResponse(t, asyncio.get_running_loop())  # type: ignore[arg-type]
    w.write(b"head")
    await asyncio.sleep(0)
    assert t.writes == [b"head"]
    w.write(b"chunk")
    assert t.writes == [b"head", b"chunk"]
    t2 = _Transport()
    w2 = _OneWriteResponse(t2, asyncio.get_running_loop())  # type: ignore[arg-type]
    w2.write(b"head")
    w2.close()
    assert t2.writes == [b"head"] and t2.closed


async def test_over_http_a_streamed_answer_s_head_is_not_kept_for_its_body() -> None:
    body_may_go = asyncio.Event()

    async def app(scope, receive, send):  # noqa: ANN001, ANN202
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await body_may_go.wait()
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, Settings(), host="127.0.0.1", port=port, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # before the body is sent
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
        body_may_go.set()
        assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5) == b"4\r\nlate\r\n0\r\n\r\n"
        writer.close()
    finally:
        body_may_go.set()
        server.should_exit = True
        await serving
