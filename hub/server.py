"""The hub's HTTP server: uvicorn, with the limits a public-facing server needs.

uvicorn bounds the time between requests on a kept-alive connection
(`timeout_keep_alive`) and, with h11, the size of an incomplete request head,
but it has no deadline for *receiving* a request head: its keep-alive timer is
only armed after a response, and is cancelled by the first byte of the next
request. A client that opens a connection and sends its headers one byte at a
time (slowloris) holds the connection, and its file descriptor, for ever.

`HeadDeadlineProtocol` adds that deadline to uvicorn's httptools protocol: the
request line and headers must be complete within `head_timeout` seconds of
the connection opening (or of the previous response on a kept-alive
connection), and may be at most `max_head_bytes` long; otherwise the
connection is closed (a `431` first for an oversize head). The body's own
deadline and size are the app's (`hub/api/limits.py`).

It also caps connections. One peer address (loopback included; a Unix
socket has none) may hold at most `max_per_peer` open connections: the next
is answered a `503` problem with `Retry-After` as soon as it is accepted,
before any byte of it is read, and closed, so that one client cannot take
every place under uvicorn's `limit_concurrency` (heads that never end, each
held until its head deadline, then renewed). Beyond `limit_concurrency`
connections or requests in progress in all, a request is answered a `503`
problem with `Retry-After` too (the same test as uvicorn's, whose own answer
is plain text).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hub.api.limits import PROBLEM_BASE, Receive, Scope, Send, is_fhir, problem_messages
from hub.observability.logging import get_logger
from hub.settings import Settings

log = get_logger("hub.server")
_GC_TUNED = False


def tune_gc() -> None:
    """Once per process, after start-up: the objects made so far (reference
    data, agreements, modules, schemas: hundreds of thousands, kept for the
    process's life) are moved out of the cyclic collector's view
    (`gc.freeze`), and the youngest generation is collected every 20,000
    allocations rather than 700. Measured under bench/bench_load.py --quick,
    the collector took about 0.5 s of the hub's CPU for 600 changes (0.8 ms a
    change), most of it six full collections walking those start-up objects;
    the hub's own garbage is almost all freed by reference counting."""
    global _GC_TUNED
    if _GC_TUNED:
        return
    _GC_TUNED = True
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


class _OneWriteResponse:
    """One response's view of its connection's transport, through which
    uvicorn's `RequestResponseCycle` writes: the response's first write (its
    head) is held and sent with the next (its body, written in the same turn
    of the event loop by a whole response), so a small response leaves in
    one `send` and one TCP segment rather than two (uvloop writes each at
    once). Should nothing follow in this turn (a streamed body, a `100
    Continue`), it is sent at the turn's end; anything else is the
    transport's own (`close` sends what is held first)."""

    __slots__ = ("_transport", "_loop", "_held", "_first")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self._held = data
            self._loop.call_soon(self._send_held)
            return
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self._transport.write(data)

    def _send_held(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self._send_held()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


RETRY_AFTER = b"5"


def over_peer_cap_answer(max_per_peer: int) -> bytes:
    """The whole answer to a connection over its peer's cap: sent before any
    request is read, so one shape for every client (problem details)."""
    body = orjson.dumps({
        "type": PROBLEM_BASE + "too-many-connections", "title": "Too many connections", "status": 503,
        "detail": f"at most {max_per_peer} connections may be open at once from one address; "
                  "close one, or retry later"})
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n"
            b"content-length: %d\r\nretry-after: %s\r\nconnection: close\r\n\r\n" % (len(body), RETRY_AFTER)) + body


async def overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer beyond `limit_concurrency` (in uvicorn's place: its is plain text)."""
    for message in problem_messages(
            503, "overloaded", "Server busy",
            "the hub has as many connections and requests in progress as it takes; retry later",
            ((b"retry-after", RETRY_AFTER),), fhir=is_fhir(scope)):
        await send(message)


class _Peers:
    """One server's open connections by peer address; how many connections it
    refused over a peer's cap, and requests over `limit_concurrency`."""

    __slots__ = ("open", "refused", "overloaded")

    def __init__(self) -> None:
        self.open: dict[str, int] = {}
        self.refused = 0
        self.overloaded = 0


class HeadDeadlineProtocol(HttpToolsProtocol):
    head_timeout: float = 10.0
    max_head_bytes: int = 64 * 1024
    max_per_peer: int = 0  # open connections from one peer address; 0: no cap
    over_peer_cap: bytes = over_peer_cap_answer(0)
    # A refused connection is closed when its peer closes, or after this long
    # at most: closed at once with the peer's request unread, the connection
    # would be reset, and the reset can destroy the answer before it is read.
    refused_linger: float = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._awaiting_head = False
        self._head_refused = False
        self._peer: str | None = None  # counted in self._peers.open
        # uvicorn's concurrency test is made here (on_headers_complete), with a problem for its answer.
        self._max_concurrency = self.limit_concurrency
        self.limit_concurrency = None
        state = self.server_state
        try:
            self._peers: _Peers = state.hub_peers  # type: ignore[attr-defined]
        except AttributeError:
            self._peers = state.hub_peers = _Peers()  # type: ignore[attr-defined]

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        self._awaiting_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            log.info("http connection closed: request head not received in time", count=self._head_bytes)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.max_per_peer
        if cap and self.client is not None:
            peer = self.client[0]
            open_ = self._peers.open
            count = open_.get(peer, 0)
            if count >= cap:
                self._refuse_connection()
                return
            open_[peer] = count + 1
            self._peer = peer
        self._arm_head_deadline()

    def _release_peer(self) -> None:
        peer = self._peer
        if peer is not None:
            self._peer = None
            open_ = self._peers.open
            count = open_[peer] - 1
            if count:
                open_[peer] = count
            else:
                del open_[peer]

    def _refuse_connection(self) -> None:
        """Over its peer's cap: the 503 at once, nothing read, then closed. It
        is never served, so it does not count against `limit_concurrency`."""
        self.connections.discard(self)
        self._head_refused = True  # whatever it sends is dropped unparsed
        peers = self._peers
        peers.refused += 1
        if peers.refused == 1 or peers.refused % 100 == 0:
            log.warning("http connection refused: over the per-peer connection cap", count=peers.refused,
                        status_code=503)
        transport = self.transport
        transport.write(self.over_peer_cap)
        if transport.can_write_eof():
            transport.write_eof()  # the peer reads the answer, then its end (it closes: so do we)
        self._head_timer = self.loop.call_later(self.refused_linger, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        self._release_peer()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The connection passes to another protocol, whose connection_lost this one never hears.
        self._release_peer()
        super().handle_websocket_upgrade()

    def _refuse_head(self, size: int) -> None:
        self._disarm_head_deadline()
        self._head_refused = True
        log.info("http connection closed: request head too large", count=size)
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                 b"content-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._head_refused:
            return
        counting = self._awaiting_head
        if counting:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still no complete head after this many bytes: refuse it.
        if counting and self._awaiting_head and self._head_bytes > self.max_head_bytes:
            self._refuse_head(self._head_bytes)

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        # A head that arrived whole in one read: measure what was parsed.
        size = len(self.url or b"") + sum(len(k) + len(v) + 4 for k, v in self.headers or ())
        if size > self.max_head_bytes:
            self._refuse_head(size)
            return
        before = self.cycle
        limit = self._max_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self._overloaded()
        else:
            super().on_headers_complete()
        if self.cycle is not before:  # a request (not an upgrade): its response's head and body in one write
            self.cycle.transport = _OneWriteResponse(self.transport, self.loop)  # type: ignore[assignment]

    def _overloaded(self) -> None:
        """This request, over `limit_concurrency`: answered by `overloaded`."""
        peers = self._peers
        peers.overloaded += 1
        if peers.overloaded == 1 or peers.overloaded % 100 == 0:
            log.warning("http request refused: over the concurrency limit", count=peers.overloaded,
                        status_code=503)
        app, self.app = self.app, overloaded
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_body(self, body: bytes) -> None:
        if not self._head_refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._head_refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A kept-alive connection: the next request head gets the same deadline
        # (a pipelined request already queued has its head).
        if not self.transport.is_closing() and not self.pipeline:
            self._arm_head_deadline()


def protocol_class(settings: Settings) -> type[HeadDeadlineProtocol]:
    return type("HubHttpProtocol", (HeadDeadlineProtocol,), {
        "head_timeout": settings.http_head_timeout_seconds,
        "max_head_bytes": settings.http_max_head_bytes,
        "max_per_peer": settings.http_max_connections_per_peer,
        "over_peer_cap": over_peer_cap_answer(settings.http_max_connections_per_peer),
    })


def uvicorn_config(app: Any, settings: Settings, host: str | None = None, port: int | None = None,
                   **overrides: Any) -> uvicorn.Config:
    """The one server configuration (`s117hub serve`, the demo, the tests)."""
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": settings.port if port is None else port,
        "log_config": None,
        "access_log": False,
        "http": protocol_class(settings),
        "timeout_keep_alive": settings.http_keep_alive_seconds,
        # Beyond this many connections and tasks, new requests get a 503 at once
        # (the protocol's problem details, not uvicorn's text).
        "limit_concurrency": settings.http_max_concurrency,
        "h11_max_incomplete_event_size": settings.http_max_head_bytes,
        "timeout_graceful_shutdown": 30,
        "server_header": False,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
