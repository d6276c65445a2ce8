"""POST /v1/register-changes past the router (hub/api/register_changes.py
`RegisterChangeRoute`) reads its two headers, its body and sends its answer
itself, as Starlette's `Request` and `Response` would, without making them:
the same messages as through the router for a body in several parts, a
client gone before its body ended, header names not in lower case, a key
sent twice and no content type at all."""

from __future__ import annotations

import asyncio
import random
import re
from datetime import date
from typing import Any

import orjson
import pytest

from hub.api.register_changes import RegisterChangeRoute
from hub.sample_data import detention_to_move_scenario

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PATH = "/v1/register-changes"


def _route_layer(app: Any) -> RegisterChangeRoute:
    if app.middleware_stack is None:  # built at the first request, as Starlette does
        app.middleware_stack = app.build_middleware_stack()
    layer = app.middleware_stack
    while not isinstance(layer, RegisterChangeRoute):
        layer = layer.app
    return layer


async def _post(app: Any, headers: list[tuple[bytes, bytes]], parts: list[bytes],
                disconnect: bool = False) -> tuple[list[dict[str, Any]], type | None]:
    """The app called as a server calls it, the body in `parts` (then, with
    `disconnect`, the client gone); the messages sent and any exception raised."""
    messages = [{"type": "http.request", "body": p, "more_body": i + 1 < len(parts) or disconnect}
                for i, p in enumerate(parts)]
    if disconnect:
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # never
        raise AssertionError

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "root_path": "", "query_string": b"",
             "server": ("hub", 80), "client": ("127.0.0.1", 5000), "headers": headers}
    raised = None
    try:
        await app(scope, receive, send)
    except Exception as exc:  # noqa: BLE001 - compared between the two ways
        raised = type(exc)
    return sent, raised


def _masked(sent: list[dict[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for m in sent:
        if m["type"] == "http.response.start":
            out.append((m["status"], [(k, _UUID.sub(b"<id>", v)) for k, v in m["headers"]]))
        else:
            body = _UUID.sub(b"<id>", m.get("body", b"")).replace(b"fast", b"tag").replace(b"routed", b"tag")
            out.append((m["type"], body, m.get("more_body", False)))
    return out


async def _both(app_hub, make) -> tuple[Any, Any]:  # noqa: ANN001
    """`make(tag)` (headers, parts, disconnect) posted past the router, then through it."""
    app = app_hub.http._transport.app
    layer = _route_layer(app)
    fast = await _post(app, *make("fast"))
    layer.enabled = False
    try:
        routed = await _post(app, *make("routed"))
    finally:
        layer.enabled = True
    return fast, routed


def _change(tag: str) -> bytes:
    change = detention_to_move_scenario(random.Random(11), f"direct-{tag}", date(2025, 1, 6))[0]
    change["source_message_id"] = f"direct-{tag}"  # the tag is masked in the answers (`_masked`)
    change["person"]["nhs_number"] = {"fast": "9434765919", "routed": "9434765870"}.get(tag, "9434765919")
    return orjson.dumps(change)


@pytest.fixture
def app_http(app_hub):  # noqa: ANN001, ANN201
    app_hub.hub.clients.ttl = 0
    return app_hub


async def test_a_body_in_parts_and_a_client_gone_answer_as_through_the_router(app_http):
    key = app_http.keys["trust"].encode()

    def parts(tag: str) -> tuple[list[tuple[bytes, bytes]], list[bytes], bool]:
        body = _change(tag)
        return ([(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                 (b"x-api-key", key), (b"x-correlation-id", b"feed-0101")], [body[:7], b"", body[7:]], False)

    fast, routed = await _both(app_http, parts)
    assert fast[1] is None and fast[0][0]["status"] == 202
    assert _masked(fast[0]) == _masked(routed[0])
    assert [m["type"] for m in fast[0]] == ["http.response.start", "http.response.body"]

    def gone(tag: str) -> tuple[list[tuple[bytes, bytes]], list[bytes], bool]:
        body = _change(tag)
        return ([(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                 (b"x-api-key", key)], [body[:7]], True)

    fast, routed = await _both(app_http, gone)
    # The client gone mid-body: the 408 problem the app's ClientDisconnect handler answers (to no one, but
    # logged and counted), through either path (before ae5083b: the exception, on both).
    assert fast[1] is None and routed[1] is None
    assert fast[0][0]["status"] == 408
    assert _masked(fast[0]) == _masked(routed[0])


async def test_headers_are_found_as_starlette_finds_them(app_http):
    """The first of a header sent twice; a name not in lower case is not the
    route's header (Starlette's `Headers.get` compares the name as sent: ASGI
    servers send them in lower case); no content type at all is JSON's."""
    key = app_http.keys["trust"].encode()
    other = app_http.keys["E06000060"].encode()  # no register:write: 403 if the route took it
    body = _change("any")
    length = (b"content-length", str(len(body)).encode())
    cases = [
        [length, (b"x-api-key", key), (b"x-api-key", other)],
        [length, (b"x-api-key", key), (b"Content-Type", b"text/plain")],  # not read as the type: JSON
        [length, (b"X-Api-Key", key)],  # the front's key check takes it; the route finds no key: 401
        [length, (b"x-api-key", key), (b"content-type", b"text/plain"), (b"content-type", b"application/json")],
    ]
    for n, headers in enumerate(cases):
        def make(tag: str, headers: list[tuple[bytes, bytes]] = headers, n: int = n) -> Any:
            change = orjson.loads(_change(tag))
            change["source_message_id"] = f"direct-{tag}-{n}"
            data = orjson.dumps(change)
            return ([(k, str(len(data)).encode()) if k == b"content-length" else (k, v) for k, v in headers],
                    [data], False)

        fast, routed = await _both(app_http, make)
        assert fast[1] is None and routed[1] is None
        assert _masked(fast[0]) == _masked(routed[0]), n
    statuses = []
    for n, headers in enumerate(cases):
        change = orjson.loads(_change("fast"))
        change["source_message_id"] = f"direct-again-{n}"
        data = orjson.dumps(change)
        sent, _ = await _post(app_http.http._transport.app,
                              [(k, str(len(data)).encode()) if k == b"content-length" else (k, v) for k, v in headers],
                              [data])
        statuses.append(sent[0]["status"])
    assert statuses == [202, 202, 401, 415]


async def test_an_accepted_change_makes_no_starlette_request_or_response(app_http, monkeypatch):
    """Before, the route made a `Request` to read the body and a `Response` to
    send the answer (about 50 Python calls a request); an error still goes to
    the app's handlers with a `Request` as before (the 415 here)."""
    from starlette.requests import Request
    from starlette.responses import Response

    made: list[str] = []
    request_init, response_init = Request.__init__, Response.__init__

    def counted_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN001
        made.append("request")
        request_init(self, *args, **kwargs)

    def counted_response(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN001
        made.append("response")
        response_init(self, *args, **kwargs)

    monkeypatch.setattr(Request, "__init__", counted_request)
    monkeypatch.setattr(Response, "__init__", counted_response)
    key = app_http.keys["trust"].encode()
    body = _change("fast")
    sent, raised = await _post(app_http.http._transport.app,
                               [(b"content-length", str(len(body)).encode()), (b"x-api-key", key)], [body])
    assert raised is None and sent[0]["status"] == 202
    assert made == []
    sent, raised = await _post(app_http.http._transport.app,
                               [(b"content-length", b"1"), (b"x-api-key", key), (b"content-type", b"text/plain")],
                               [b"x"])
    assert sent[0]["status"] == 415 and made == ["request", "response"]
