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
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


class HeadDeadlineProtocol(HttpToolsProtocol):
    head_timeout: float = 10.0
    max_head_bytes: int = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._awaiting_head = False
        self._head_refused = False

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
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

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
        super().on_headers_complete()
        if self.cycle is not before:  # a request (not an upgrade): its response's head and body in one write
            self.cycle.transport = _OneWriteResponse(self.transport, self.loop)  # type: ignore[assignment]

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
        # Beyond this many connections and tasks, new requests get a 503 at once.
        "limit_concurrency": settings.http_max_concurrency,
        "h11_max_incomplete_event_size": settings.http_max_head_bytes,
        "timeout_graceful_shutdown": 30,
        "server_header": False,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
