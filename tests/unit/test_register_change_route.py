"""POST /v1/register-changes goes straight to its handler, past the router's
layers (hub/api/register_changes.py `RegisterChangeRoute`): the same answers,
byte for byte, as through the router, for every kind of answer, and the
correlation id and the body and time limits still come first."""

from __future__ import annotations

import random
import re
from datetime import date

import httpx
import pytest

from hub.api.register_changes import RegisterChangeRoute
from hub.sample_data import detention_to_move_scenario

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _route_layer(app) -> RegisterChangeRoute:  # noqa: ANN001
    if app.middleware_stack is None:  # built at the first request, as Starlette does
        app.middleware_stack = app.build_middleware_stack()
    layer = app.middleware_stack
    while not isinstance(layer, RegisterChangeRoute):
        layer = layer.app
    return layer


async def _both(app_hub, post) -> tuple[httpx.Response, httpx.Response]:  # noqa: ANN001
    """`post(tag)` through the shortcut, then through the router."""
    layer = _route_layer(app_hub.http._transport.app)
    assert layer.enabled
    fast = await post("fast")
    layer.enabled = False
    try:
        routed = await post("routed")
    finally:
        layer.enabled = True
    return fast, routed


def _same(fast: httpx.Response, routed: httpx.Response, ids: bool = False) -> None:
    assert fast.status_code == routed.status_code
    assert fast.headers.multi_items() == routed.headers.multi_items() if not ids else \
        [k for k, _ in fast.headers.multi_items()] == [k for k, _ in routed.headers.multi_items()]
    if ids:  # new ids each time (change, person, event, quarantine): the rest the same
        assert _UUID.sub(b"<id>", fast.content).replace(b"fast", b"tag") == \
            _UUID.sub(b"<id>", routed.content).replace(b"routed", b"tag")
    else:
        assert fast.content == routed.content


@pytest.fixture
def app_http(app_hub):  # noqa: ANN001, ANN201
    app_hub.hub.clients.ttl = 0
    return app_hub


async def test_refusals_are_the_routers_byte_for_byte(app_http):
    h = app_http.http
    cid = {"X-Correlation-Id": "feed-0001"}
    trust = {**cid, "X-API-Key": app_http.keys["trust"]}
    change = {"source_message_id": "r-1", "change_type": "detained"}
    cases = [
        lambda tag: h.post("/v1/register-changes", headers=cid, json=change),  # no key
        lambda tag: h.post("/v1/register-changes", headers={**cid, "X-API-Key": "s117_unknown"}, json=change),
        lambda tag: h.post("/v1/register-changes", headers={**cid, "X-API-Key": app_http.keys["E06000060"]},
                           json=change),  # no register:write scope
        lambda tag: h.post("/v1/register-changes", headers={**trust, "Content-Type": "text/plain"}, content=b"x"),
        lambda tag: h.post("/v1/register-changes", headers=trust, content=b"x" * (256 * 1024 + 1)),  # the limits' 413
    ]
    for post in cases:
        fast, routed = await _both(app_http, post)
        assert fast.status_code in (401, 403, 413, 415)
        assert fast.headers["content-type"] == "application/problem+json"
        _same(fast, routed)


async def test_accepted_quarantined_and_repeated_changes_answer_as_through_the_router(app_http):
    h = app_http.http
    trust = {"X-Correlation-Id": "feed-0002", "X-API-Key": app_http.keys["trust"]}
    people = {tag: detention_to_move_scenario(random.Random(7), f"route-{tag}", date(2025, 1, 6))[0]
              for tag in ("fast", "routed")}
    # Two people with the same change (their own NHS numbers and message ids).
    people["routed"]["person"] = {**people["fast"]["person"],
                                  "nhs_number": people["routed"]["person"]["nhs_number"]}
    fast, routed = await _both(app_http, lambda tag: h.post("/v1/register-changes", headers=trust, json=people[tag]))
    assert fast.status_code == 202 and fast.json()["status"] == "accepted"
    _same(fast, routed, ids=True)
    # The same message again: the first answer, marked duplicate, through either.
    again_fast, again_routed = await _both(
        app_http, lambda tag: h.post("/v1/register-changes", headers=trust, json=people["fast"]))
    assert again_fast.json()["duplicate"] is True
    _same(again_fast, again_routed)
    fast, routed = await _both(app_http, lambda tag: h.post(
        "/v1/register-changes", headers={**trust, "Content-Type": "application/json"}, content=b"{not json " + tag.encode()))
    assert fast.status_code == 422 and "quarantine_id" in fast.json()
    _same(fast, routed, ids=True)


async def test_an_unexpected_error_is_the_500_problem_through_either(app_http, monkeypatch):
    async def broken(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("store gone")

    monkeypatch.setattr(app_http.hub.ingest, "accept", broken)
    app = app_http.http._transport.app
    trust = {"X-Correlation-Id": "feed-0003", "X-API-Key": app_http.keys["trust"]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://hub") as h:
        fast, routed = await _both(app_http, lambda tag: h.post("/v1/register-changes", headers=trust,
                                                               json={"source_message_id": tag}))
    assert fast.status_code == 500 and fast.json()["type"].endswith("/internal-error")
    _same(fast, routed)


async def test_only_a_post_to_the_exact_path_takes_the_shortcut(app_http):
    """Another method, a trailing slash: the router's answers (405, the redirect)."""
    h = app_http.http
    trust = {"X-API-Key": app_http.keys["trust"]}
    assert (await h.get("/v1/register-changes", headers=trust)).status_code == 405
    r = await h.post("/v1/register-changes/", headers=trust, json={})
    assert r.status_code in (307, 308) and r.headers["location"].endswith("/v1/register-changes")


async def test_the_shortcut_finds_its_route_and_logs_its_template(app_http, capsys):
    """A FastAPI whose routes it could not find would send every request through
    the router (correct, but slower): this says so."""
    layer = _route_layer(app_http.http._transport.app)
    # A key without register:write: past the front's key check (a request
    # without a key is answered there, before any route), refused by the handler.
    r = await app_http.http.post("/v1/register-changes", json={},
                                 headers={"X-API-Key": app_http.keys["E06000060"]})
    assert r.status_code == 403
    assert layer.enabled and layer._route is not None and layer._route.path == "/v1/register-changes"
    assert "path=/v1/register-changes" in capsys.readouterr().err


async def test_with_fastapis_own_body_limit_set_every_request_goes_through_the_router(app_http):
    """The router applies FastAPI's `max_body_size`; the shortcut does not, so
    with one set it stands aside (the hub sets none: its limits are its own)."""
    app = app_http.http._transport.app
    app.max_body_size = 10
    layer = _route_layer(app)
    r = await app_http.http.post("/v1/register-changes", headers={"X-API-Key": app_http.keys["trust"]},
                                 json={"source_message_id": "x" * 40})
    assert not layer.enabled
    assert r.status_code == 413  # FastAPI's own limit, through the router
