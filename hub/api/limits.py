"""Bounded requests: body size and time, and the API key, checked before any
handler reads a byte of the body.

`LimitsMiddleware` is a pure ASGI middleware, the outermost layer of the app
but for the correlation id, so it sees every request first:

* a `Content-Length` over the route's limit is answered `413` at once, the
  body never read (the server stops reading once its small buffer is full);
  a malformed `Content-Length` is a `400`;
* then, under `/v1/`, the API key (`key_check`: hub/api/deps.py): none, or
  one not recognised, is answered `401` at once, the body never read nor
  waited for; the client found is handed to the route, which does not look
  it up again;
* a body without `Content-Length` (chunked) for a route whose limit is small
  (at most `PREBUFFER_MAX_BYTES`) is read here, up to the limit, before the
  app runs: `413` as soon as it passes the limit, so an upload costs at most
  that much memory;
* a larger route (council files) is counted while the handler streams it
  (after authentication); past the limit the handler is stopped and the
  answer is `413`, whatever the handler was about to say;
* the body must arrive within the route's `body_seconds` (`408`), and the
  answer must start within `total_seconds` (`503`: anything committed before
  stays, and re-sending is safe: every channel is idempotent); a streamed
  answer is not cut off once it has started.

Slow request heads (slowloris) and connection caps are the server's business:
`hub/server.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from hub.api.outcomes import FHIR_JSON, outcome_body
from hub.codec import DUPLICATE_KEY, duplicate_keys, json_path
from hub.fhir.namespaces import HUB_BASE
from hub.observability.logging import get_logger

log = get_logger("hub.limits")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KB = 1024
MB = 1024 * KB
PREBUFFER_MAX_BYTES = 1 * MB
PROBLEM_BASE = f"{HUB_BASE}/problems/"


@dataclass(frozen=True, slots=True)
class RouteLimit:
    max_body_bytes: int
    body_seconds: float = 30.0  # the whole body must have arrived by then
    total_seconds: float = 120.0  # the answer must have started by then


DEFAULT_LIMIT = RouteLimit(1 * MB)
# (method, exact path) -> limit. Everything else gets DEFAULT_LIMIT.
ROUTE_LIMITS: dict[tuple[str, str], RouteLimit] = {
    ("POST", "/v1/council-files"): RouteLimit(20 * MB, body_seconds=300.0, total_seconds=900.0),
    # A body's whole s117 list (hub/api/reconciliations.py MAX_SNAPSHOT), streamed.
    ("POST", "/v1/reconciliations"): RouteLimit(200 * MB, body_seconds=900.0, total_seconds=1800.0),
    ("POST", "/v1/register-changes"): RouteLimit(256 * KB),
    ("POST", "/v1/fhir/$process-message"): RouteLimit(256 * KB),
}


# Routes that refuse a JSON body naming a key twice themselves, and quarantine it (their input is a
# record a source sent): every other JSON body under /v1/ is checked here (`_repeated_keys`).
CHECKS_OWN_JSON: frozenset[tuple[str, str]] = frozenset({
    ("POST", "/v1/register-changes"), ("POST", "/v1/fhir/$process-message"), ("POST", "/v1/packages"),
    ("POST", "/v1/split-decisions"), ("POST", "/v1/reconciliations"), ("POST", "/v1/council-files"),
})


def _json_body(scope: Scope) -> bool:
    """A body sent as JSON (any `+json` or `/json` media type), or with no type at all."""
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media.endswith(b"/json") or media.endswith(b"+json")
    return True


def _repeated_keys(body: bytes, fhir: bool) -> list[Message] | None:
    """A `422` naming each key a JSON object of `body` names twice (its path, never a value), or None.
    A body that is not JSON is left to the route (its own `422` or `400`)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    twice = duplicate_keys(body, parsed)
    if not twice:
        return None
    fields = [json_path(p) for p in twice]
    if fhir:
        payload = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "structure", "diagnostics": f"{f}: {DUPLICATE_KEY}", "expression": [f]}
            for f in fields]}
        media_type = FHIR_JSON.encode()
    else:
        payload = {"type": PROBLEM_BASE + "invalid-request", "title": "Request rejected", "status": 422,
                   "detail": "; ".join(f"{f} {DUPLICATE_KEY}" for f in fields),
                   "errors": [{"field": f, "reason": DUPLICATE_KEY} for f in fields]}
        media_type = b"application/problem+json"
    data = orjson.dumps(payload)
    return [{"type": "http.response.start", "status": 422,
             "headers": [(b"content-type", media_type), (b"content-length", str(len(data)).encode())]},
            {"type": "http.response.body", "body": data, "more_body": False}]


def limit_for(method: str, path: str, routes: dict[tuple[str, str], RouteLimit] = ROUTE_LIMITS,
              default: RouteLimit = DEFAULT_LIMIT) -> RouteLimit:
    return routes.get((method.upper(), path.rstrip("/") or "/"), default)


class _TooLarge(Exception):
    pass


class _BodyTimeout(Exception):
    pass


class _BadLength(Exception):
    pass


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length, None if absent; _BadLength unless it is
    one run of ASCII digits (no sign, no "²", no two different values)."""
    return request_fields(headers)[0]


def request_fields(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bytes | None]:
    """What the front needs of the head, in one pass: the Content-Length (as
    `declared_length`) and the first X-API-Key, if any."""
    length: bytes | None = None
    api_key: bytes | None = None
    for k, v in headers:
        k = k.lower()
        if k == b"content-length":
            v = v.strip()
            if length is None:
                length = v
            elif v != length:
                raise _BadLength("more than one Content-Length")
        elif k == b"x-api-key" and api_key is None:
            api_key = v
        elif k == b"content-encoding" and v.strip().lower() not in (b"", b"identity"):
            raise _Encoded()
    if length is None:
        return None, api_key
    if len(length) > 19 or not length.isdigit():  # bytes: ASCII digits only, and not empty
        raise _BadLength("Content-Length is not a number")
    return int(length), api_key


class _Encoded(Exception):
    """A request body sent with a Content-Encoding (gzip, say): the hub reads bodies as sent, so a
    compressed one would be refused as not UTF-8 or not JSON, or read as the wrong text."""


ENCODED_DETAIL = "send the body uncompressed, without a Content-Encoding"
ENCODED_ERRORS = [{"field": "Content-Encoding", "reason": "is not taken: the hub reads a request body as sent "
                   "(uncompressed)"}]


class Refusal(Exception):
    """Raised by a `KeyCheck`: the request is answered with this problem, its
    body unread."""

    def __init__(self, status: int, kind: str, title: str, detail: str) -> None:
        super().__init__(title)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail


class KeyCheck(Protocol):
    """The API-key check the front makes before a byte of the body is read
    (hub/api/deps.py `ApiKeyCheck`), on every request whose path starts with
    `prefix`."""

    prefix: str

    async def check(self, scope: Scope, api_key: bytes | None) -> Any:
        """A token for `done`, or `Refusal`."""

    def done(self, token: Any) -> None:
        """The request is over (answered, or failed)."""


def problem_messages(status: int, kind: str, title: str, detail: str,
                     extra_headers: tuple[tuple[bytes, bytes], ...] = (), fhir: bool = False,
                     close: bool = True, errors: list[dict[str, str]] | None = None) -> list[Message]:
    """The refusal as RFC 9457 problem details, or as a FHIR OperationOutcome
    on the FHIR endpoints (their clients read nothing else). `close`: the
    connection is not kept alive (a body may follow, and is not read).
    `errors`: each `{field, reason}` named (an issue each in an OperationOutcome)."""
    if fhir:
        media_type = FHIR_JSON.encode()
        body = orjson.dumps(outcome_body(status, detail, errors))
    else:
        media_type = b"application/problem+json"
        problem = {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail}
        if errors:
            problem["errors"] = errors
        body = orjson.dumps(problem)
    headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the body is not read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    headers.extend(extra_headers)
    return [{"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body, "more_body": False}]


def is_fhir(scope: Scope) -> bool:
    return scope["path"].startswith("/v1/fhir/")


def too_large(limit: RouteLimit, fhir: bool = False) -> list[Message]:
    return problem_messages(413, "too-large", "Body too large",
                            f"the body of this request must be at most {limit.max_body_bytes} bytes", fhir=fhir)


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], RouteLimit] | None = None,
                 default: RouteLimit = DEFAULT_LIMIT, prebuffer_max_bytes: int = PREBUFFER_MAX_BYTES,
                 key_check: KeyCheck | None = None) -> None:
        self.app = app
        self.routes = ROUTE_LIMITS if routes is None else routes
        self.default = default
        self.prebuffer_max = prebuffer_max_bytes
        self.key_check = key_check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["method"], scope["path"], self.routes, self.default)
        fhir = is_fhir(scope)
        try:
            declared, api_key = request_fields(scope.get("headers") or [])
        except _BadLength as exc:
            await self._send_all(send, problem_messages(400, "bad-request", "Bad request", str(exc), fhir=fhir))
            return
        except _Encoded:
            self._refused(scope, 415)
            await self._send_all(send, problem_messages(415, "unsupported-media-type", "Unsupported media type",
                                                        ENCODED_DETAIL, fhir=fhir, errors=ENCODED_ERRORS))
            return
        if declared is not None and declared > limit.max_body_bytes:
            self._refused(scope, 413)
            await self._send_all(send, too_large(limit, fhir))
            return

        loop = asyncio.get_running_loop()
        body_deadline = loop.time() + limit.body_seconds
        state = {"started": False, "refusal": None}  # refusal: the problem that replaces the app's answer
        deadline = asyncio.timeout(limit.total_seconds)

        async def guarded_send(message: Message) -> None:
            if state["refusal"] is not None:
                return  # the app's answer to a refused request is dropped; ours follows
            if message["type"] == "http.response.start":
                state["started"] = True
                # The time limit is for starting the answer: a long download
                # (a streamed export) is not cut off half way.
                deadline.reschedule(None)
            await send(message)

        key_check = self.key_check
        keyed = key_check is None or scope["path"].startswith(key_check.prefix)
        token = None
        try:
            async with deadline:
                if key_check is not None and keyed:
                    # The key before the body: a request without a valid one is
                    # answered at once, whatever (and whenever) its body.
                    token = await key_check.check(scope, api_key)
                # Outside the keyed prefix no route takes a body (the pages, health,
                # metrics: GETs): nothing is read ahead for the app, which answers
                # (404, 405) without waiting for a body. Read ahead there, an
                # unauthenticated sender held up to the limit in memory for up to
                # the body deadline per connection (1 MB x every connection allowed).
                # A JSON body is read here too, whatever its length, unless its route checks
                # it itself: one naming a key twice is a `422` naming where, before the route
                # reads it (a JSON parser keeps the last value, and the meaning changes unseen).
                small = keyed and limit.max_body_bytes <= self.prebuffer_max and _may_have_body(scope)
                check_json = small and declared != 0 and (scope["method"], scope["path"]) not in CHECKS_OWN_JSON \
                    and _json_body(scope)
                if small and (declared is None or check_json):
                    body = await _read_body(receive, limit, body_deadline)
                    if check_json and (twice := _repeated_keys(body, fhir)) is not None:
                        await self._send_all(send, twice)
                        return
                    app_receive = _replay(body, receive)
                else:
                    app_receive = _counting(receive, limit, body_deadline, state, fhir)
                await self.app(scope, app_receive, guarded_send)
        except Refusal as refused:
            # Not a limit (not logged as one). The connection is kept alive
            # unless a body may follow, which is not read.
            body_follows = declared > 0 if declared is not None else _may_have_body(scope)
            await self._send_all(send, problem_messages(refused.status, refused.kind, refused.title,
                                                        refused.detail, fhir=fhir, close=body_follows))
            return
        except _TooLarge:
            state["refusal"] = state["refusal"] or too_large(limit, fhir)
        except _BodyTimeout:
            state["refusal"] = state["refusal"] or _body_timeout(limit, fhir)
        except TimeoutError:
            if state["started"]:
                raise
            state["refusal"] = problem_messages(
                503, "timed-out", "Request timed out",
                f"the hub did not answer within {limit.total_seconds:g} s; anything already committed stays "
                "recorded, and sending the same request again is safe", ((b"retry-after", b"5"),), fhir)
        except Exception:
            if state["refusal"] is None:
                raise
            # The app failed because its body was cut off: the refusal is the answer.
        finally:
            if token is not None:
                key_check.done(token)  # type: ignore[union-attr]
        if state["refusal"] is not None and not state["started"]:
            status = state["refusal"][0]["status"]
            self._refused(scope, status)
            await self._send_all(send, state["refusal"])

    @staticmethod
    def _refused(scope: Scope, status: int) -> None:
        route = scope["path"] if (scope["method"], scope["path"]) in ROUTE_LIMITS else "(other)"
        log.info("request refused by limits", method=scope["method"], path=route, status_code=status)

    @staticmethod
    async def _send_all(send: Send, messages: list[Message]) -> None:
        for m in messages:
            await send(m)


def _body_timeout(limit: RouteLimit, fhir: bool = False) -> list[Message]:
    return problem_messages(408, "body-timeout", "Request body too slow",
                            f"the body of this request must arrive within {limit.body_seconds:g} s", fhir=fhir)


def _may_have_body(scope: Scope) -> bool:
    return scope["method"] not in ("GET", "HEAD", "OPTIONS", "DELETE")


async def _receive_by(receive: Receive, deadline: float) -> Message:
    try:
        async with asyncio.timeout_at(deadline):
            return await receive()
    except TimeoutError:
        raise _BodyTimeout from None


async def _read_body(receive: Receive, limit: RouteLimit, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await _receive_by(receive, deadline)
        if message["type"] == "http.disconnect":
            raise _BodyTimeout  # nobody is listening for an answer; stop here
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit.max_body_bytes:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would

    return replay


def _counting(receive: Receive, limit: RouteLimit, deadline: float, state: dict, fhir: bool) -> Receive:
    size = 0
    done = False

    async def counted() -> Message:
        nonlocal size, done
        if done:
            return await receive()
        try:
            message = await _receive_by(receive, deadline)
        except _BodyTimeout:
            state["refusal"] = _body_timeout(limit, fhir)
            raise
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit.max_body_bytes:
                state["refusal"] = too_large(limit, fhir)
                raise _TooLarge
            done = not message.get("more_body", False)
        return message

    return counted
