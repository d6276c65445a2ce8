"""X-Correlation-Id: one id per request, bound to every log line, stored with
the change and forwarded to every subscriber of its events.

A client's id is kept only if it is opaque, a machine's id:
- a UUID, any version, canonical 8-4-4-4-12 hex in either case (kept in
  lower case);
- a ULID, 26 characters of Crockford base32 in upper case, as its spec
  writes them;
- a token of 8-64 characters of `[A-Za-z0-9._:-]` that, its separators
  `._:-` removed, has no run of 8 or more digits (an NHS number however
  spaced, `999.100.0011`; a date of birth, `1970-05-05`) and no run of 3 or
  more letters with any outside a-f (a word or a name, `Zebedee`, `Jane-Doe`;
  hex ids such as W3C trace ids pass). A ULID is exempt from the letter rule,
  not the digit rule.
Anything else (free text, a name and a date of birth, a counter behind a word
such as HL7's `MSG00001`) is replaced by a fresh UUID, so nothing a client
writes there is logged, stored or forwarded. The answer carries the id used.
MLLP takes no correlation id from a message (each gets a new one; MSH-10 is
only the source message id for idempotency).
"""

from __future__ import annotations

import re
import time

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
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE)
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.ASCII)  # Crockford base32: no I, L, O, U
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{8,64}", re.ASCII)
_SEPARATORS = re.compile(r"[._:-]", re.ASCII)
_TEN_DIGITS = re.compile(r"[0-9]{10}", re.ASCII)  # an NHS number, however it was separated
_EIGHT_DIGITS = re.compile(r"(?=([0-9]{8}))", re.ASCII)  # every 8-digit window: a date of birth?
_BARE_TEN_IN_GROUP = re.compile(r"(?<![0-9])[0-9]{10,}(?![0-9])", re.ASCII)
_LETTER_RUN = re.compile(r"[A-Za-z]{3,}", re.ASCII)
_NOT_HEX = re.compile(r"[G-Zg-z]", re.ASCII)


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
    if _UUID.fullmatch(value):
        # A group of a UUID may hold a bare run of ten digits (about 1 in 60 at random): not kept.
        return None if _BARE_TEN_IN_GROUP.search(value) else value.lower()
    if _TOKEN.fullmatch(value) is None:
        return None
    bare = _SEPARATORS.sub("", value)
    if _TEN_DIGITS.search(bare) or any(_a_date(w) for w in _EIGHT_DIGITS.findall(bare)):
        return None
    if _ULID.fullmatch(value) is None and any(_NOT_HEX.search(run) for run in _LETTER_RUN.findall(bare)):
        return None
    return value


def _a_date(digits: str) -> bool:
    """Whether 8 digits read as a date from 1900 to 2099, year first or last
    (a date of birth in an id); a random hex trace id's 8-digit runs seldom do."""
    for year, month, day in ((digits[:4], digits[4:6], digits[6:]), (digits[4:], digits[2:4], digits[:2])):
        if year[:2] in ("19", "20") and 1 <= int(month) <= 12 and 1 <= int(day) <= 31:
            return True
    return False


def correlation_id_for(value: str | bytes | None) -> str:
    return accepted_correlation_id(value) or new_correlation_id()


NO_STORE = (b"cache-control", b"no-store")


class CorrelationMiddleware:
    """Binds the correlation id for the request, sets it on the answer (with
    `Cache-Control: no-store` on every /v1 answer that states no caching of its own), and
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
        api = scope["path"].startswith("/v1/")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                answer, stated = [], False
                for k, v in message.get("headers", []):
                    name = k.lower()
                    if name == HEADER:
                        continue
                    stated = stated or name == b"cache-control"
                    answer.append((k, v))
                answer.append(cid_header)
                if api and not stated:
                    # Every /v1 answer may hold personal data (a person's position, quarantined input
                    # as sent) or say who is on the register (a refusal): no browser or proxy keeps it.
                    answer.append(NO_STORE)
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
