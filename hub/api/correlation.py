"""X-Correlation-Id: one id per request, bound to every log line, stored with
the change and forwarded to every subscriber of its events.

A client's id is kept only if it is a UUID or a short token of
`[A-Za-z0-9._-]` (at most 64 characters, no run of ten digits, which could be
an NHS number); anything else (free text, a name and a date of birth) is
replaced by a fresh UUID, so nothing a client writes there is logged, stored
or forwarded. The answer carries the id used.
"""

from __future__ import annotations

import re
import time
import uuid


from hub.api.limits import ASGIApp, Message, Receive, Scope, Send
from hub.observability.logging import (
    bind_correlation_id,
    close_request_line,
    get_logger,
    new_correlation_id,
    open_request_line,
    unbind_correlation_id,
)

log = get_logger("hub.http")
HEADER = b"x-correlation-id"
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_TEN_DIGITS = re.compile(r"[0-9]{10}", re.ASCII)


def accepted_correlation_id(value: str | bytes | None) -> str | None:
    """The client's correlation id if it is acceptable, else None (mint one)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = value.strip()
    try:
        return str(uuid.UUID(value)) if len(value) == 36 else _token(value)
    except ValueError:
        return _token(value)


def _token(value: str) -> str | None:
    if _TOKEN.fullmatch(value) is None or _TEN_DIGITS.search(value):
        return None
    return value


def correlation_id_for(value: str | bytes | None) -> str:
    return accepted_correlation_id(value) or new_correlation_id()


class CorrelationMiddleware:
    """Binds the correlation id for the request, sets it on the answer, and
    logs one line per request (route template, never the raw path): `request`,
    or the one register change it recorded, `register change accepted`, with
    the request's fields (hub.observability.logging.RequestLine)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The client's id (its first such header) and the other headers, in one pass.
        sent, headers = None, []
        for k, v in scope.get("headers") or ():
            if k.lower() != HEADER:
                headers.append((k, v))
            elif sent is None:
                sent = v
        cid = correlation_id_for(sent)
        cid_header = (HEADER, cid.encode())
        # Handlers read the header through the request; they see the id in use.
        headers.append(cid_header)
        scope["headers"] = headers
        status = {"code": 500}
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                answer = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                answer.append(cid_header)
                message["headers"] = answer
            await send(message)

        token = bind_correlation_id(cid)
        line, line_token = open_request_line(cid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            unbind_correlation_id(token)
            close_request_line(line, line_token)
            route = scope.get("route")
            request = {"method": scope["method"], "path": getattr(route, "path", "(unmatched)"),
                       "status_code": status["code"],
                       "duration_ms": round((time.perf_counter() - started) * 1000, 1), "correlation_id": cid}
            if line.fields is None:
                log.info("request", **request)
            else:  # one line for the request and the change it recorded (RequestLine)
                log.info(line.event, **(line.fields | request))
