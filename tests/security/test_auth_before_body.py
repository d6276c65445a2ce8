"""The API key is checked before any byte of the body is read, on every /v1
route. The probes replayed: without a key, `POST /v1/persons/lookup` with a
body of `not json` was a `422` (the body was parsed before the key was looked
at), and a declared `Content-Length` whose body never came was waited for
until the body deadline (`408` after 30 s), where `/v1/register-changes`
answered `401` at once. FastAPI resolved body parameters before the client
dependency; now the key is checked in the ASGI layer (hub/api/limits.py,
hub/api/deps.py) and the client handed to the route."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from hub.api.register_changes import _api_routes
from hub.server import uvicorn_config
from tests.support import free_port

PUBLIC = {"/health", "/health/ready", "/metrics", "/asyncapi.json", "/openapi.json", "/docs",
          "/docs/oauth2-redirect", "/redoc", "/console", "/console/workflows",
          "/console/console.js", "/console/workflows.js"}  # the pages and their scripts: no data, the API needs a key
WITH_BODY = ("POST", "PUT", "PATCH", "DELETE")


def _v1_routes(app) -> list[tuple[str, str]]:  # noqa: ANN001
    """(method, a concrete path) for every route of the app under /v1."""
    found = []
    for route in _api_routes(app.routes):
        if not route.path.startswith("/v1/"):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                found.append((method, path))
    return found


def test_every_route_is_either_public_or_under_v1(app_hub):
    app = app_hub.http._transport.app
    paths = {route.path for route in _api_routes(app.routes)}
    assert {p for p in paths if not p.startswith("/v1/")} <= PUBLIC
    assert any(m in WITH_BODY for m, _ in _v1_routes(app))


@pytest.mark.parametrize("key", [None, "s117_not-a-key"])
async def test_no_key_or_a_wrong_key_is_401_whatever_the_body(app_hub, key):
    app = app_hub.http._transport.app
    headers = {"Content-Type": "application/json"} | ({"X-API-Key": key} if key else {})
    wrong = []
    for method, path in _v1_routes(app):
        r = await app_hub.http.request(method, path, headers=headers, content=b"not json")
        if path.startswith("/v1/fhir/"):  # an OperationOutcome there: a FHIR client reads nothing else
            if r.status_code != 401 or r.headers["content-type"] != "application/fhir+json" or \
                    r.json()["issue"][0]["code"] != "login":
                wrong.append((method, path, r.status_code, r.text[:120]))
            continue
        if r.status_code != 401 or r.headers["content-type"] != "application/problem+json":
            wrong.append((method, path, r.status_code, r.text[:120]))
            continue
        problem = r.json()
        assert problem["type"].endswith("/unauthenticated") and problem["status"] == 401
        assert problem["title"] == ("Authentication required" if key is None else "Authentication failed")
    assert not wrong, wrong


async def test_the_401_before_the_body_is_today_s_401(app_hub):
    """The same problem as the routes' own check gave (and still give to a
    request without a body)."""
    before = await app_hub.http.get("/v1/subscriptions")
    after = await app_hub.http.post("/v1/persons/lookup", content=b"not json",
                                    headers={"Content-Type": "application/json"})
    assert before.status_code == after.status_code == 401
    assert before.json() == after.json()
    assert before.headers["content-type"] == after.headers["content-type"] == "application/problem+json"


async def test_a_valid_key_still_reaches_the_route_and_is_looked_up_once(app_hub):
    hub = app_hub.hub
    hub.clients.ttl = 0  # every look-up goes to the store: count them
    calls = []
    looked_up = hub.clients._look_up

    async def counted(*args):  # noqa: ANN002, ANN202
        calls.append(args[1])
        return await looked_up(*args)

    hub.clients._look_up = counted
    h = {"X-API-Key": app_hub.keys["E06000060"], "Content-Type": "application/json"}
    r = await app_hub.http.post("/v1/persons/lookup", headers=h, content=b"not json")
    assert r.status_code == 422, r.text  # past the key: the body is read and refused
    assert len(calls) == 1
    r = await app_hub.http.post("/v1/persons/lookup", headers=h, json={"nhs_number": "9434765919"})
    assert r.status_code in (200, 403, 404), r.text
    assert len(calls) == 2
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={})
    assert r.status_code == 422, r.text
    assert len(calls) == 3
    r = await app_hub.http.get("/v1/subscriptions", headers=h)
    assert r.status_code == 200 and len(calls) == 4
    # Public routes need no key.
    assert (await app_hub.http.get("/health")).status_code == 200
    assert (await app_hub.http.get("/asyncapi.json")).status_code == 200


async def _real_hub(tmp_path):  # noqa: ANN001, ANN202
    import uvicorn

    from hub.api.app import create_app
    from tests.conftest import test_settings

    settings = test_settings(tmp_path)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings, host="127.0.0.1", port=port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task, port


BODY_ROUTES = ["/v1/persons/lookup", "/v1/subscriptions", "/v1/register-changes", "/v1/council-files",
               "/v1/fhir/$process-message", "/v1/reconciliations", "/v1/disputes", "/v1/ops/audit/person"]


async def test_over_real_http_a_body_never_sent_is_not_waited_for(tmp_path):
    """A declared length (or a chunked body) whose bytes never come, and no
    key: `401` at once, not the body deadline's `408` 30 s later."""
    server, task, port = await _real_hub(tmp_path)
    try:
        for path in BODY_ROUTES:
            for framing in (b"Content-Length: 100\r\n", b"Transfer-Encoding: chunked\r\n"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"POST {path} HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n".encode()
                             + framing + b"\r\n")
                await writer.drain()
                started = time.monotonic()
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
                except TimeoutError:
                    raise AssertionError(f"{path} {framing!r}: no answer within 2 s") from None
                assert time.monotonic() - started < 1.0
                assert head.startswith(b"HTTP/1.1 401"), (path, framing, head)
                assert (b"application/fhir+json" if path.startswith("/v1/fhir/") else b"application/problem+json") \
                    in head
                writer.close()
    finally:
        server.should_exit = True
        await task
