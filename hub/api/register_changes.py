"""Trust push: POST /v1/register-changes, and the quarantine of what was rejected."""

from __future__ import annotations

import time
import typing
from collections.abc import Awaitable, Callable, Iterator
from functools import cache
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import select
from starlette._exception_handler import _lookup_exception_handler
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from hub.access import no_sooner_than, refused_by_policy
from hub.api.deps import ClientDep, HubDep, Limit, get_client, own_row, require
from hub.api.limits import ASGIApp, Receive, Scope, Send
from hub.api.problems import PROBLEM_JSON, ProblemError
from hub.audit import record_operator_action
from hub.codec import DUPLICATE_KEY, JsonPath, duplicate_keys, json_path
from hub.ingest.contract import RegisterChangeIn
from hub.ingest.service import Client, Outcome
from hub.ingest.validation import FieldProblem
from hub.observability.logging import get_logger
from hub.store.schema import quarantine

log = get_logger("hub.api")
router = APIRouter(prefix="/v1", tags=["register"])
MAX_BODY = 256 * 1024
PATH = "/v1/register-changes"


# The key is read here rather than through FastAPI's dependencies (`ClientDep`):
# on the busiest route, solving them cost about as much as the rest of FastAPI
# (a back-load posts thousands a second). Same checks, same problems; the
# header is documented as on every other route.
_API_KEY_HEADER = {"name": "x-api-key", "in": "header", "required": False,
                   "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "X-Api-Key"}}


# The 202 body (hub/ingest/service.py `write_recorded`), as integrators read it. `warnings`: a change recorded
# that changed nothing it named, each the field and why, never a value (a `moved` change's
# residence_before_detention_la_gss naming no successor a split council awaits: `successor_warnings`); absent
# otherwise.
ACCEPTED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["change_id", "person_id", "status"],
    "properties": {
        "change_id": {"type": "string"},
        "person_id": {"type": "string"},
        "status": {"type": "string", "enum": ["accepted"]},
        "correlation_id": {"type": "string"},
        "events": {"type": "array", "items": {"type": "object", "properties": {
            "event_id": {"type": "string"}, "event_type": {"type": "string"}}}},
        "entitled": {"type": "boolean"},
        "service_level": {"type": "object"},
        "duplicate": {"type": "boolean", "description": "the first answer to this source_message_id, again"},
        "warnings": {
            "type": "array",
            "description": "recorded, but it changed nothing it named: the field and why (never a value)",
            "items": {"type": "object", "required": ["field", "reason"], "properties": {
                "field": {"type": "string", "examples": ["residence_before_detention_la_gss"]},
                "reason": {"type": "string"}}},
        },
    },
}


@router.post(
    PATH.removeprefix("/v1"),
    status_code=202,
    summary="Record a change to a person's s117 register entry",
    responses={202: {"description": "Recorded (or the first answer again, `duplicate`): the change and person ids, "
                                    "events, the register service level and, for a change recorded that changed "
                                    "nothing it named, `warnings`",
                     "content": {"application/json": {"schema": ACCEPTED_SCHEMA}}},
               403: {"description": "Refused by the access policy (hub/access.py); problem details name the rule"},
               413: {"description": "Body over 256 KB (refused before authentication)"},
               409: {"description": "The source_message_id was already used for a different change; nothing "
                                    "recorded"},
               415: {"description": "A Content-Type other than application/json"},
               422: {"description": "Rejected and quarantined; problem details name each field"}},
    openapi_extra={"parameters": [_API_KEY_HEADER]},
)
async def post_register_change(request: Request) -> Response:
    headers = request.headers
    status, body, media_type = await register_change(
        request.app.state.hub, headers.get("x-api-key"), headers.get("content-type", ""), request.body)
    return Response(body, status_code=status, media_type=media_type)


async def register_change(hub: Any, api_key: str | None, content_type: str,
                          read_body: Callable[[], Awaitable[bytes]]) -> tuple[int, bytes, str]:
    """The route's work, whichever way the request came (`post_register_change`
    through the router, `RegisterChangeRoute` past it): the key, the scope, the
    media type, then the body (`read_body`), the change; the answer's status,
    body and media type."""
    client = await get_client(hub, api_key)
    require(client, "register:write")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        # Nothing read, nothing recorded: a text/plain or form body is not a register change.
        raise ProblemError(415, "unsupported-media-type", "Unsupported media type",
                           "send the register change as application/json")
    raw = await read_body()
    if len(raw) > MAX_BODY:
        raise ProblemError(413, "too-large", "Body too large", f"a register change must be under {MAX_BODY} bytes")
    started = time.monotonic()
    data, twice = _keys_named_twice(raw)
    if twice:
        outcome = await _refuse_keys_named_twice(hub, client, raw, (data, twice))
    else:
        outcome = await hub.ingest.accept(client, raw, channel="rest", data=data)
    if refused_by_policy(outcome):  # unknown and not-yours alike, in time too
        await no_sooner_than(started, hub.settings.write_refusal_floor_ms / 1000)
    # orjson: the answer to every change of a back-load (the standard library's encoder cost more than the rest of the response).
    return outcome.status_code, orjson.dumps(outcome.body), PROBLEM_JSON if outcome.is_problem else "application/json"


def _keys_named_twice(raw: bytes) -> tuple[dict[str, Any] | None, list[JsonPath]]:
    """The body as orjson reads it (None if it is not a JSON object: ingest says so) and where it names a
    key twice in one object (none: []). Ingest takes the body as read here; `duplicate_keys` only counts
    keys unless more were written than read."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, []
    if type(data) is not dict:
        return None, []
    return data, duplicate_keys(raw, data)


@cache
def _contract_keys() -> dict[str, Any]:
    """The contract's keys, nested: {key: its object's keys (a dict) or None}."""
    def keys(model: type[BaseModel]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, f in model.model_fields.items():
            nested = [t for t in (f.annotation, *typing.get_args(f.annotation))
                      if isinstance(t, type) and issubclass(t, BaseModel)]
            out[f.alias or name] = keys(nested[0]) if nested else None
        return out
    return keys(RegisterChangeIn)


def _in_contract(path: JsonPath) -> bool:
    level: Any = _contract_keys()
    for part in path:
        if not isinstance(level, dict) or part not in level:
            return False
        level = level[part]
    return True


def _without(data: dict[str, Any], paths: list[JsonPath]) -> dict[str, Any]:
    """`data` without the values of the keys named twice: what can be read of it unambiguously."""
    out = dict(data)
    for path in paths:
        holder: Any = out
        for part in path[:-1]:
            item = holder[part] if isinstance(holder, (dict, list)) and (
                part in holder if isinstance(holder, dict) else isinstance(part, int) and part < len(holder)) else None
            if not isinstance(item, (dict, list)):
                holder = None
                break
            item = dict(item) if isinstance(item, dict) else list(item)
            holder[part] = item
            holder = item
        if isinstance(holder, dict):
            holder.pop(path[-1], None)
    return out


async def _refuse_keys_named_twice(hub: Any, client: Client, raw: bytes,
                                   twice: tuple[dict[str, Any], list[JsonPath]]) -> Outcome:
    """A change naming a key twice is a 422 naming each such key (its JSON path, never a value), held in
    quarantine as any other rejected change: never read as whichever value the parser kept. First, as for
    any change that does not validate, the access policy is asked on what can be read without those keys
    (nothing is kept of a change about someone the source has no role for). A key outside the contract is
    named to the sender but stored and logged as "(unknown key)" (a key is free text)."""
    data, paths = twice
    readable = _without(data, paths)
    problems = [FieldProblem(json_path(p), DUPLICATE_KEY, unknown_key=not _in_contract(p)) for p in paths]
    refused = await hub.ingest.write_precheck(client, readable, "rest", partial=("hospital_ods",) in paths)
    if refused is not None:
        return refused
    smid = readable.get("source_message_id")
    return await hub.ingest.reject_unmapped(client, raw, "rest", problems, smid if isinstance(smid, str) else None)


@router.get("/quarantine", summary="Inputs held in quarantine, with the reasons")
async def list_quarantine(hub: HubDep, client: ClientDep, limit: Limit = 100) -> dict:
    require(client, "register:write")
    q = select(quarantine.c.quarantine_id, quarantine.c.source, quarantine.c.channel,
               quarantine.c.source_message_id, quarantine.c.errors, quarantine.c.received_at,
               quarantine.c.status).order_by(quarantine.c.received_at.desc()).limit(limit)
    if "hub:admin" not in client.scopes:
        q = q.where(quarantine.c.source == client.client_id)  # a source sees only its own
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(q)).all()
        await conn.rollback()
    return {"items": [
        {"quarantine_id": r.quarantine_id, "source": r.source, "channel": r.channel,
         "source_message_id": r.source_message_id, "errors": r.errors,
         "received_at": r.received_at.isoformat(), "status": r.status}
        for r in rows
    ]}


@router.get("/quarantine/{quarantine_id}", summary="One quarantined input, with the raw input for its own source",
            responses={404: {"description": "No quarantined input with that id for this client"}})
async def get_quarantined(quarantine_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "register:write")
    row = await own_row(hub, client, quarantine, quarantine.c.quarantine_id, quarantine_id, "quarantined input")
    if row.raw and row.source != client.client_id:
        # The hub operator reading what a source sent (a person's details, as sent): an operator
        # action, recorded before the input is shown (its own source reading it is not a disclosure).
        async with hub.engine.begin() as conn:
            await record_operator_action(conn, client.client_id, "read-quarantined-input", row.quarantine_id,
                                         {"source": row.source, "channel": row.channel})
    return {"quarantine_id": row.quarantine_id, "source": row.source, "channel": row.channel,
            "errors": row.errors, "received_at": row.received_at.isoformat(), "status": row.status,
            "resolved_by": row.resolved_by, "resolution_reason": row.resolution_reason,
            # Emptied by the retention job after S117_RETAIN_QUARANTINE_RAW_DAYS.
            "raw": hub.protector.decrypt(row.raw).decode("utf-8", "replace") if row.raw else None}


class RegisterChangeRoute:
    """POST /v1/register-changes straight to `post_register_change`, past
    Starlette's and FastAPI's inner layers (the exception middleware, the
    router, the route's exit stacks and dependency solving): about a tenth of
    the front's CPU a change at a steady rate, where each request is handled
    on its own (bench/JOURNAL.md). The innermost of the app's own middleware,
    so the correlation id and the body and time limits (hub/api/limits.py)
    come first, as for every route, and Starlette's outer layers (the 500
    handler among them) stay around it.

    The same answers as through the router: the same work (`register_change`,
    the endpoint's), the headers it reads found as Starlette finds them, the
    body read as `Request.body` reads it, and the answer sent as Starlette's
    `Response` sends it, without making either object (about 50 Python calls
    a request: bench/JOURNAL.md, "Twenty-seventh session"); an exception it
    raises goes to the handler the app has registered for its type
    (`install_problem_handlers`: ProblemError's problem details), one without
    a handler up to the 500 handler, as the router's exception middleware
    does. Anything else (another method, a trailing slash, a root path) goes
    through the router, unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None
        self._handlers: tuple[dict[Any, Any], dict[int, Any]] | None = None
        self.enabled = True  # False once it finds no route to stand for (all through the router)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" or scope.get("root_path") \
                or not self.enabled:
            await self.app(scope, receive, send)
            return
        route = self._route
        if route is None:
            if not self._prepare(scope["app"]):
                await self.app(scope, receive, send)
                return
            route = self._route
        # What the router puts in the scope for this route (the correlation
        # middleware logs the route's template).
        scope["endpoint"] = post_register_change
        scope["path_params"] = {}
        scope["route"] = route
        # The two headers the route reads, as Starlette's `Headers.get` finds them:
        # the first whose name is exactly the lower-case one, its value as latin-1.
        api_key = content_type = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                if api_key is None:
                    api_key = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        try:
            status, body, media_type = await register_change(
                scope["app"].state.hub, api_key, "" if content_type is None else content_type,
                lambda: _read_body(receive))
        except Exception as exc:  # noqa: BLE001 - the handler registered for it, as the router's middleware
            handler = self._handler_for(exc)
            if handler is None:
                raise
            request = Request(scope, receive, send)
            response = await handler(request, exc) if is_async_callable(handler) \
                else await run_in_threadpool(handler, request, exc)
            exc.__traceback__ = None  # as Starlette does: a reused exception keeps no traceback
            await response(scope, receive, send)
            return
        # Starlette's `Response(body, status_code, media_type)` as sent: its length, then its type
        # (neither a text/ type nor a status without a body here).
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode("latin-1")),
                                (b"content-type", _MEDIA_TYPES[media_type])]})
        await send({"type": "http.response.body", "body": body})

    def _prepare(self, app: Any) -> bool:
        """The route the router would put in the scope, and the exception
        handlers its middleware would call; False (and every request through
        the router from then on) if the route is not found."""
        route = next((r for r in _api_routes(app.routes) if r.path == PATH and "POST" in (r.methods or ())
                      and r.endpoint is post_register_change), None)
        if route is None:
            self.enabled = False
            log.warning("register-changes route not found; its requests go through the router")
            return False
        # FastAPI's own body limit (`max_body_size`: the app's, an inclusion's, the
        # route's) is applied by the router: with one set, leave every request to it.
        limits = [getattr(app, "max_body_size", None), getattr(route, "max_body_size", None),
                  *(getattr(getattr(r, "include_context", None), "max_body_size", None) for r in app.router.routes)]
        if any(limit is not None for limit in limits):
            self.enabled = False
            return False
        # The handlers the router's exception middleware has: FastAPI hands it every
        # handler but the 500 one (`Exception`: the outer ServerErrorMiddleware's).
        inner = ExceptionMiddleware(self.app, handlers={k: v for k, v in app.exception_handlers.items()
                                                        if k not in (500, Exception)})
        self._handlers = (inner._exception_handlers, inner._status_handlers)
        self._route = route
        return True

    def _handler_for(self, exc: Exception) -> Any:
        """The handler Starlette's `wrap_app_handling_exceptions` would pick for `exc`, or None."""
        assert self._handlers is not None
        exception_handlers, status_handlers = self._handlers
        handler = status_handlers.get(exc.status_code) if isinstance(exc, StarletteHTTPException) else None
        return handler or _lookup_exception_handler(exception_handlers, exc)


_MEDIA_TYPES = {"application/json": b"application/json", PROBLEM_JSON: PROBLEM_JSON.encode("latin-1")}


async def _read_body(receive: Receive) -> bytes:
    """The body, as Starlette's `Request.body` reads it: every `http.request`
    message's bytes until one says no more follow; `ClientDisconnect` if the
    client goes first (the limits' own refusals, a body too large or too
    slow, are raised by their `receive`)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif kind == "http.disconnect":
            raise ClientDisconnect()


def _api_routes(routes: Any) -> Iterator[Any]:
    """Every route of the app as the router matches them: FastAPI keeps an
    included router's routes, with their prefixes, as effective route
    contexts (`scope["route"]` is their `original_route`)."""
    for r in routes:
        contexts = getattr(r, "effective_route_contexts", None)
        if callable(contexts):
            for context in contexts():
                original = getattr(context, "original_route", None)
                if isinstance(original, Route):
                    yield original
        elif isinstance(r, Route):
            yield r
