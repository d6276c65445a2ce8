"""Outside review (session 26, access and notifications): a body sent without
a key to a path outside /v1/ (where no route takes one: the pages, health,
metrics) was read ahead by the front, up to the default 1 MB limit, and
waited for up to the 30 s body deadline, before the app answered its 404 or
405. Probe replayed against a running hub: 60 connections from 60 loopback
addresses (each its own peer) trickling chunked bodies to `POST /nowhere`
grew the hub's RSS by 57 MB (about 1 MB each; the 500-connection cap allows
some 500 MB), where the same to `/v1/persons/lookup` grew it by nothing (401
at once). Now the front reads nothing ahead outside /v1/: the app answers at
once, the body unread."""

from __future__ import annotations

import asyncio

import pytest

from tests.security.test_auth_before_body import _real_hub
from tests.security.test_limits import Source


@pytest.mark.parametrize(("method", "path"), [("POST", "/nowhere"), ("POST", "/health"), ("PUT", "/console"),
                                              ("PATCH", "/metrics")])
async def test_a_body_without_a_key_outside_v1_is_answered_unread(app_hub, method, path):
    source = Source(100 * 1024 * 1024)
    r = await app_hub.http.request(method, path, content=source)
    assert "content-length" not in r.request.headers
    assert r.status_code in (404, 405), r.text  # the app's own answer, not a 413 after reading 1 MB
    assert source.pulled <= source.chunk  # old: 1 MB and a chunk pulled into the hub's memory first


async def test_over_real_http_a_body_never_sent_outside_v1_is_not_waited_for(tmp_path):
    """Chunked (or a declared length) whose bytes never come, no key, to a path
    no route takes a body on: answered at once, not after the 30 s body deadline
    (old: no answer within 10 s; the deadline is 30 s)."""
    server, task, port = await _real_hub(tmp_path)
    try:
        for path in ("/nowhere", "/health"):
            for framing in (b"Content-Length: 100\r\n", b"Transfer-Encoding: chunked\r\n"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"POST {path} HTTP/1.1\r\nHost: hub\r\n".encode() + framing + b"\r\n")
                await writer.drain()
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                except TimeoutError:
                    raise AssertionError(f"{path} {framing!r}: no answer within 10 s") from None
                assert head.startswith((b"HTTP/1.1 404", b"HTTP/1.1 405")), (path, framing, head)
                writer.close()
    finally:
        server.should_exit = True
        await task


async def test_keyed_routes_still_read_a_small_body_ahead(app_hub):
    """Inside /v1/ nothing changed: with a key, a chunked body over the route's
    limit is still refused 413 once it passes it (read ahead, bounded)."""
    source = Source(100 * 1024 * 1024)
    r = await app_hub.http.post("/v1/persons/lookup", content=source,
                                headers={"X-API-Key": app_hub.keys["trust"], "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert source.pulled <= 1024 * 1024 + source.chunk
