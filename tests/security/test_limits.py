"""Issue #6, item 4 (HTTP): bodies and time are bounded before anything reads
them. Probes replayed: a 100 MB POST with no API key to /v1/persons/lookup or
/v1/subscriptions was read into memory before the 401 (now 413 from the
declared length; with no length sent, 401 with nothing read, or with a key
413 after at most the route's limit);
50 connections sending headers slowly were never closed (now closed at the
head deadline). The RSS figures under 20 x 100 MB uploads are in
bench/bench_limits.py."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, StreamingResponse

from hub.api.limits import MB, LimitsMiddleware, RouteLimit, limit_for
from hub.server import uvicorn_config
from hub.settings import Settings
from tests.support import free_port

UNAUTHENTICATED_ROUTES = ["/v1/persons/lookup", "/v1/subscriptions", "/v1/register-changes",
                          "/v1/fhir/$process-message"]


class Source:
    """A request body sent chunk by chunk without Content-Length, counting what was pulled."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    async def __aiter__(self):  # noqa: ANN204
        while self.pulled < self.total:
            self.pulled += self.chunk
            yield b"x" * self.chunk


@pytest.mark.parametrize("path", UNAUTHENTICATED_ROUTES)
async def test_a_declared_oversize_body_is_413_before_authentication(app_hub, path):
    r = await app_hub.http.post(path, content=b"x" * (2 * MB), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text  # not 401: nothing looked at the (missing) key
    assert r.headers["content-type"].startswith(("application/problem+json", "application/fhir+json"))


@pytest.mark.parametrize("path", UNAUTHENTICATED_ROUTES)
async def test_an_oversize_body_without_content_length_is_401_unread_without_a_key_and_413_with_one(app_hub, path):
    source = Source(100 * MB)
    r = await app_hub.http.post(path, content=source, headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 401, r.text  # the key before the body: none of it read
    assert source.pulled <= source.chunk
    source = Source(100 * MB)
    r = await app_hub.http.post(path, content=source, headers={"Content-Type": "application/json",
                                                               "X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 413, r.text
    assert source.pulled <= 1 * MB + source.chunk  # stopped at the limit, not at 100 MB


async def test_a_council_file_over_20_mb_without_content_length_is_413(app_hub):
    from hub.clients import add_client

    _, key = await add_client(app_hub.hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    source = Source(100 * MB, chunk=1 * MB)
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=source,
                                headers={"X-API-Key": key, "Content-Type": "text/csv"})
    assert r.status_code == 413, r.text
    assert source.pulled <= 21 * MB
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=b"x" * (21 * MB),
                                headers={"Content-Type": "text/csv"})  # declared, no key: 413 first
    assert r.status_code == 413


async def test_a_malformed_content_length_is_400_not_500(app_hub):
    for value in ("²", "-1", "1e9", "12 34"):
        r = await app_hub.http.post("/v1/persons/lookup", content=b"{}",
                                    headers={"Content-Length": value.encode("latin-1"), "X-API-Key": "k"})
        assert r.status_code == 400, (value, r.text)


def test_every_route_has_a_limit_and_the_big_one_is_council_files():
    assert limit_for("POST", "/v1/council-files").max_body_bytes == 20 * MB
    assert limit_for("POST", "/v1/persons/lookup").max_body_bytes <= 1 * MB
    assert limit_for("POST", "/v1/anything-new").max_body_bytes <= 1 * MB
    assert limit_for("POST", "/v1/register-changes").max_body_bytes == 256 * 1024


def _app(handler_delay: float = 0.0) -> LimitsMiddleware:
    app = FastAPI()

    @app.get("/download")
    async def download() -> StreamingResponse:
        async def chunks():  # noqa: ANN202
            for _ in range(3):
                yield b"x" * 10
                await asyncio.sleep(0.5)  # 1.5 s in all: longer than total_seconds

        return StreamingResponse(chunks())

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        await asyncio.sleep(handler_delay)
        return JSONResponse({"size": len(body)})

    routes = {("POST", "/echo"): RouteLimit(1000, body_seconds=0.5, total_seconds=1.0)}
    return LimitsMiddleware(app, routes=routes, prebuffer_max_bytes=100,  # 1000 > 100: counted while streaming
                            default=RouteLimit(1000, body_seconds=0.5, total_seconds=1.0))


async def test_a_streamed_body_past_the_limit_is_413_whatever_the_handler_says():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as http:
        assert (await http.post("/echo", content=b"x" * 1000)).json() == {"size": 1000}
        r = await http.post("/echo", content=Source(5000, chunk=300))
        assert r.status_code == 413 and r.json()["status"] == 413


async def test_a_slow_body_is_408_and_a_slow_answer_503():
    class Slow:
        async def __aiter__(self):  # noqa: ANN204
            yield b"x"
            await asyncio.sleep(5)
            yield b"y"

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as http:
        started = time.monotonic()
        r = await http.post("/echo", content=Slow())
        assert r.status_code == 408 and time.monotonic() - started < 3
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(handler_delay=5)), base_url="http://t") as http:
        started = time.monotonic()
        r = await http.post("/echo", content=b"x")
        assert r.status_code == 503 and time.monotonic() - started < 3
        assert r.headers["retry-after"]


async def test_the_time_limit_is_for_starting_the_answer_not_for_streaming_it():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as http:
        r = await http.get("/download")
        assert r.status_code == 200 and r.content == b"x" * 30


async def _real_server(app, **settings):  # noqa: ANN001, ANN003, ANN202
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, Settings(**settings), host="127.0.0.1", port=port, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    return server, task, port


def _tiny_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict:
        return {"ok": True}

    return app


async def test_fifty_slow_header_connections_are_closed_at_the_head_deadline():
    server, task, port = await _real_server(_tiny_app(), http_head_timeout_seconds=1.0)
    try:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
        started = time.monotonic()

        async def slowloris(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
            writer.write(b"GET /ping HTTP/1.1\r\nHost: hub\r\n")
            try:
                while not reader.at_eof():
                    writer.write(b"X-Slow: 1\r\n")  # never the blank line that ends the head
                    await writer.drain()
                    try:
                        if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                            break
                    except TimeoutError:
                        pass
            except ConnectionError:
                pass
            return time.monotonic() - started

        closed_after = await asyncio.wait_for(asyncio.gather(*(slowloris(r, w) for r, w in conns)), 10)
        assert max(closed_after) < 3, closed_after
        # An ordinary client is served meanwhile and after.
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/ping")).status_code == 200
    finally:
        server.should_exit = True
        await task


async def test_an_oversize_request_head_is_431():
    server, task, port = await _real_server(_tiny_app(), http_max_head_bytes=8 * 1024)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ping HTTP/1.1\r\nHost: hub\r\n" + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(1000), 5)
        assert answer.startswith(b"HTTP/1.1 431"), answer
        writer.close()
    finally:
        server.should_exit = True
        await task


async def test_a_100_mb_declared_upload_is_refused_over_real_http_without_reading_it(tmp_path):
    """The real app on a real server: the answer comes after the headers and a
    first chunk; the client never has to send the other 99.9 MB."""
    from hub.api.app import create_app
    from tests.conftest import test_settings

    settings = test_settings(tmp_path)
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings, host="127.0.0.1", port=port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        for path in ("/v1/persons/lookup", "/v1/subscriptions"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"POST {path} HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {100 * MB}\r\n\r\n".encode() + b"x" * 65536)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 413"), head
            writer.close()
    finally:
        server.should_exit = True
        await task
