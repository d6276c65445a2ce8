"""HTTP connection caps (hub/server.py), over a real uvicorn server and raw
sockets. The probe replayed: one peer without a key opened 600 sockets, each
sending only `GET /health HTTP/1.1\\r\\n` (an unfinished head), and every other
client, valid keys and `/health/ready` included, got uvicorn's plain-text
`503 Service Unavailable` (no problem details, no Retry-After) until the head
deadline, and again as soon as the sockets were renewed. Now one peer (remote
address) holds at most `S117_HTTP_MAX_CONNECTIONS_PER_PEER` connections: the
next one is answered a `503` problem with `Retry-After` at once and closed,
and other peers are served; the global cap's `503` is a problem too."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import uvicorn
from fastapi import FastAPI

from hub.server import uvicorn_config
from hub.settings import Settings
from tests.support import free_port

UNFINISHED_HEAD = b"GET /health HTTP/1.1\r\n"


def _tiny_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict:
        return {"ok": True}

    return app


async def _serve(app, settings: Settings, lifespan: str = "off"):  # noqa: ANN001, ANN202
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1", port=port, lifespan=lifespan))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task, port


async def _stop(server, task) -> None:  # noqa: ANN001
    server.should_exit = True
    await asyncio.wait_for(task, 40)


async def _open(port: int, source: str = "127.0.0.1", send: bytes = UNFINISHED_HEAD):  # noqa: ANN202
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    if send:
        writer.write(send)
        await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout)


def _split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


async def _closed(reader: asyncio.StreamReader, wait: float = 0.3) -> bytes | None:
    """What the server sent before it closed the connection; None if it is
    still open with nothing sent within `wait` seconds."""
    try:
        return await asyncio.wait_for(reader.read(), wait)
    except TimeoutError:
        return None


async def _get(port: int, path: str, source: str) -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        return await http.get(f"http://127.0.0.1:{port}{path}")


def test_the_per_peer_cap_is_a_setting_well_under_the_total():
    s = Settings()
    assert s.http_max_connections_per_peer == 64
    assert s.http_max_connections_per_peer * 4 <= s.http_max_concurrency


async def test_a_peer_over_its_cap_gets_a_503_problem_at_once_and_other_peers_are_served():
    server, task, port = await _serve(_tiny_app(), Settings(http_max_connections_per_peer=3))
    held: list = []
    try:
        held = [await _open(port) for _ in range(3)]
        await asyncio.sleep(0.1)
        # The fourth from the same address: answered and closed at once, whatever it sends.
        started = time.monotonic()
        reader, writer = await _open(port, send=b"GET /ping HTTP/1.1\r\nHost: hub\r\n\r\n")
        answer = await _answer(reader)
        assert time.monotonic() - started < 1.5
        status, headers, body = _split(answer)
        assert status.startswith("HTTP/1.1 503"), answer
        assert headers["content-type"] == "application/problem+json"
        assert int(headers["retry-after"]) > 0 and headers["connection"] == "close"
        problem = json.loads(body)
        assert problem["status"] == 503 and problem["type"].endswith("/too-many-connections")
        assert "3" in problem["detail"] and "address" in problem["detail"]
        writer.close()
        # One that sends nothing at all is answered too (never a silently dropped socket).
        reader, writer = await _open(port, send=b"")
        assert _split(await _answer(reader))[0].startswith("HTTP/1.1 503")
        writer.close()
        # The three it holds are untouched; another address is served meanwhile.
        assert await asyncio.gather(*(_closed(r) for r, _ in held)) == [None] * 3
        assert (await _get(port, "/ping", "127.0.0.2")).status_code == 200
        # Closing one frees its place.
        held.pop()[1].close()
        await asyncio.sleep(0.2)
        reader, writer = await _open(port, send=b"GET /ping HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        assert _split(await _answer(reader))[0].startswith("HTTP/1.1 200"), "a closed connection frees its place"
        writer.close()
    finally:
        for _, w in held:
            w.close()
        await _stop(server, task)


async def test_every_connection_closed_frees_the_peer_s_count():
    server, task, port = await _serve(_tiny_app(), Settings(http_max_connections_per_peer=2))
    try:
        for _ in range(5):  # kept-alive requests, heads that never end, refusals: none leaks a place
            conns = [await _open(port, send=b"GET /ping HTTP/1.1\r\nHost: hub\r\n\r\n") for _ in range(2)]
            refused_r, refused_w = await _open(port)
            assert _split(await _answer(refused_r))[0].startswith("HTTP/1.1 503")
            refused_w.close()
            for r, w in conns:
                assert (await asyncio.wait_for(r.readuntil(b"}"), 2)).startswith(b"HTTP/1.1 200")
                w.close()
            await asyncio.sleep(0.1)
        r = await _get(port, "/ping", "127.0.0.1")
        assert r.status_code == 200
    finally:
        await _stop(server, task)


async def test_600_unfinished_heads_from_one_peer_do_not_lock_out_health_or_ready(tmp_path):
    """The reported probe, scaled to the test's caps: the hub's app, 60 sockets
    with an unfinished head against a total of 50 and 10 a peer."""
    from hub.api.app import create_app
    from tests.conftest import test_settings

    settings = test_settings(tmp_path, http_max_concurrency=50, http_max_connections_per_peer=10)
    server, task, port = await _serve(create_app(settings), settings, lifespan="on")
    conns: list = []
    try:
        conns = [await _open(port) for _ in range(60)]
        await asyncio.sleep(0.2)
        for path in ("/health", "/health/ready"):
            r = await _get(port, path, "127.0.0.2")
            assert r.status_code == 200, (path, r.status_code, r.text)
        r = await _get(port, "/v1/subscriptions", "127.0.0.3")
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        # 50 of the 60 were answered 503 and closed; the peer's 10 are still held.
        answers = await asyncio.gather(*(_closed(r) for r, _ in conns))
        assert sum(a is None for a in answers) == 10
        assert all(a.startswith(b"HTTP/1.1 503") and b"application/problem+json" in a for a in answers if a is not None)
    finally:
        for _, w in conns:
            w.close()
        await _stop(server, task)


async def test_over_the_total_the_503_is_a_problem_with_retry_after():
    server, task, port = await _serve(_tiny_app(), Settings(http_max_concurrency=4, http_max_connections_per_peer=0))
    held: list = []
    try:
        held = [await _open(port) for _ in range(4)]
        await asyncio.sleep(0.1)
        reader, writer = await _open(port, source="127.0.0.2",
                                     send=b"GET /ping HTTP/1.1\r\nHost: hub\r\n\r\n")
        status, headers, body = _split(await _answer(reader))
        assert status.startswith("HTTP/1.1 503")
        assert headers["content-type"] == "application/problem+json"
        assert int(headers["retry-after"]) > 0
        problem = json.loads(body)
        assert problem["status"] == 503 and problem["type"].endswith("/overloaded")
        writer.close()
        # A FHIR client hears an OperationOutcome, as from the body limits.
        reader, writer = await _open(port, source="127.0.0.2",
                                     send=b"POST /v1/fhir/$process-message HTTP/1.1\r\nHost: hub\r\n"
                                          b"Content-Length: 0\r\n\r\n")
        status, headers, body = _split(await _answer(reader))
        assert status.startswith("HTTP/1.1 503") and headers["content-type"] == "application/fhir+json"
        assert json.loads(body)["resourceType"] == "OperationOutcome" and int(headers["retry-after"]) > 0
        writer.close()
    finally:
        for _, w in held:
            w.close()
        await _stop(server, task)


async def test_a_cap_of_zero_is_no_per_peer_cap():
    server, task, port = await _serve(_tiny_app(), Settings(http_max_connections_per_peer=0))
    held: list = []
    try:
        held = [await _open(port) for _ in range(70)]
        await asyncio.sleep(0.1)
        assert await asyncio.gather(*(_closed(r) for r, _ in held[-5:])) == [None] * 5
    finally:
        for _, w in held:
            w.close()
        await _stop(server, task)
