"""The webhook client: signed POSTs over kept-alive HTTP/1.1 connections,
one pool per endpoint origin, the SSRF guard at every connection.

What a delivery needs of HTTP is small: send one POST with a body (or a
window of them written back to back on one connection, pipelined: `post_window`) and
read the answer's status (the answer's body is read up to
`ANSWER_READ_MAX` and thrown away; its head up to `ANSWER_HEAD_MAX`, only
`Retry-After` kept, heeded on a 429 or 503: hub.delivery.leases, "Outcome"). The answer is parsed by httptools
(llhttp, Node.js's parser: Content-Length, chunked, read-until-close,
interim 1xx answers), the bytes are asyncio's. aiohttp did the same for
about 200 us of CPU a POST, three times this client's (bench/JOURNAL.md);
at four or so deliveries per register change that was the largest single
cost of a change's deliveries.

* Pools (`HostClients`): each origin (scheme, host, port) has at most
  `per_host` connections and its own idle list, kept for `keepalive`
  seconds (less than common servers' 5 s, so a POST is rarely sent on a
  connection the subscriber is closing; when it is, on a reused connection
  and before any byte of an answer, the POST is sent once more on a new
  connection: deliveries are at least once). Origins share nothing: an
  endpoint that keeps its connections busy cannot starve another's.
* Guard: before every connection the host is resolved and every address
  checked (hub.delivery.targets); the connection goes to the very address
  checked, the name still in the Host header and in TLS SNI and
  certificate checks (the system's trust store, and the CAs of
  S117_WEBHOOK_TLS_CA_FILE: `client_tls`). Operator-allowed names are
  connected to by name.
* Mutual TLS: with S117_WEBHOOK_TLS_CLIENT_CERT and _KEY the hub presents
  its certificate to every endpoint that asks for one (a council's gateway
  that admits only known senders); one that asks and gets none refuses the
  handshake, recorded as `SSLError` and retried.
* Nothing else: no redirects followed (a 3xx is the answer), no proxies
  from the environment, no cookies, no decompression. The caller's
  deadline (`asyncio.timeout`) covers waiting for a connection, connecting,
  sending and the answer (and `timeout`, the client's own bound, covers
  each POST whatever its caller sets); a connection interrupted by either is
  closed, never reused.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import ssl
from pathlib import Path
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httptools

from hub.delivery import targets
from hub.delivery.targets import AllowList, WebhookTargetRefused

# The most of a subscriber's answer that is read (and thrown away): an answer is
# its status; a longer body is not read, and its connection is not kept.
ANSWER_READ_MAX = 64 * 1024

# Control characters have no place in a header value (CR LF would split the request).
_CTL = re.compile(r"[\x00-\x1f\x7f]")
_OWN_HEADERS = frozenset(("host", "content-length"))  # written by the client itself, never the caller's


class AnswerError(ConnectionError):
    """The subscriber's answer was not HTTP, or the connection ended before one came."""


# The most of an answer's status line and headers that is read: a subscriber whose head runs on
# past it (one endless header) is an error, its connection dropped, whatever the deadline.
ANSWER_HEAD_MAX = 64 * 1024
# Retry-After is heeded only on these answers (RFC 9110 15.6.4, RFC 6585 4).
_RETRY_AFTER_STATUSES = frozenset((429, 503))


class WebhookAnswer(int):
    """What a delivery needs of the subscriber's answer: its status (the int
    itself, and `status_code`) and, on a 429 or 503, the seconds its
    `Retry-After` asks the hub to wait (`retry_after`; None when absent or
    not a delta-seconds or HTTP-date)."""

    retry_after: float | None = None

    @property
    def status_code(self) -> int:
        return int(self)

    @classmethod
    def of(cls, status: int, retry_after: bytes | None) -> "WebhookAnswer":
        answer = cls(status)
        if retry_after is not None and status in _RETRY_AFTER_STATUSES:
            answer.retry_after = parse_retry_after(retry_after)
        return answer


def parse_retry_after(value: bytes, now: float | None = None) -> float | None:
    """Seconds from `Retry-After` (delta-seconds or an HTTP-date; a date past is 0); None if neither."""
    text = value.decode("latin-1").strip()
    if text.isascii() and text.isdigit():
        return float(min(int(text[:12]), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: its requests' answers parsed as they arrive,
    in the order the requests were written (one at a time, or a window of
    them written back to back: pipelined)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiters: deque[asyncio.Future[int]] = deque()  # one per request not yet answered, in order
        self._status = 0
        self._body = 0
        self._head = 0  # bytes received while the answer's head was being read (its body's first bytes too)
        self._head_parsed = 0  # the answer's header lines so far (bounded by ANSWER_HEAD_MAX)
        self._in_head = True
        self._retry_after: bytes | None = None
        self.answered_bytes = False  # any byte of an answer to the current request(s)
        self.reusable = False
        self.closed = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered_bytes = True
        if self._in_head:
            self._head += len(data)
            # One header running on (httptools holds a header until it ends): dropped well before
            # memory matters; the slack is one read's worth of body behind a short head.
            if self._head > ANSWER_HEAD_MAX + 256 * 1024:
                self._finish(error=AnswerError("the answer's head is too long"))
                self.close()
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish(error=AnswerError("the answer is not HTTP/1.1"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._status >= 200:  # an answer read until the connection closed: its status stands
            self._finish(status=WebhookAnswer.of(self._status, self._retry_after))
        self._finish(error=AnswerError("the connection closed before an answer"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools keeps a header's name and value until it ends: the head's bound is checked here too.
        self._head_parsed += len(name) + len(value) + 4
        if self._head_parsed > ANSWER_HEAD_MAX:
            raise AnswerError("the answer's head is too long")  # llhttp: a callback error stops the parse
        if name.lower() == b"retry-after":
            self._retry_after = value[:64]

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > ANSWER_READ_MAX:  # more than an answer needs: drop the connection rather than read on
            status, self._status = self._status, 0  # this answer's; those behind it get the closed connection's error
            self._finish(status=WebhookAnswer.of(status, self._retry_after))
            self.close()

    def on_message_complete(self) -> None:
        status, self._body = self._status, 0
        retry_after, self._retry_after = self._retry_after, None
        self._status, self._head, self._head_parsed, self._in_head = 0, 0, 0, True
        if status < 200:  # an interim answer (100 Continue, 103): the real one follows
            return
        self.reusable = self._parser.should_keep_alive()
        self._finish(status=WebhookAnswer.of(status, retry_after))

    def _finish(self, *, status: int = 0, error: Exception | None = None) -> None:
        """An answer's status for the oldest request waiting; an error for every request waiting."""
        if error is not None:
            self.reusable = False
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(error)
            return
        if self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(status)

    def _ready(self) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise AnswerError("the connection closed before an answer")
        self._status, self._body, self.answered_bytes, self.reusable = 0, 0, False, False
        self._head, self._head_parsed, self._in_head, self._retry_after = 0, 0, True, None

    async def request(self, data: bytes) -> int:
        self._ready()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.transport.write(data)
        return await waiter

    def request_window(self, requests: list[bytes]) -> list[asyncio.Future[int]]:
        """Write every request at once (pipelined); each answer's status, in order."""
        self._ready()
        loop = asyncio.get_running_loop()
        waiters = [loop.create_future() for _ in requests]
        self._waiters.extend(waiters)
        self.transport.write(b"".join(requests))
        return waiters

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Origin:
    scheme: str
    host: str
    port: int
    host_header: str
    slots: asyncio.Semaphore
    idle: list[_Connection] = field(default_factory=list)
    expiry: asyncio.TimerHandle | None = None  # closes connections idle past the keep-alive



def client_tls(ca_file: Path | None = None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """The TLS context of the hub's connections to subscribers: the system's trust store (host names
    checked, TLS 1.2 at least) with the CAs of `ca_file` added, and the hub's own certificate and key
    for endpoints that ask for one. A file that cannot be used is a ValueError naming its setting
    (never its content)."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"webhook_tls_ca_file: cannot be read as PEM certificates ({type(exc).__name__})") \
                from None
    if (cert is None) != (key is None):
        raise ValueError("webhook_tls_client_cert, webhook_tls_client_key: S117_WEBHOOK_TLS_CLIENT_CERT and "
                         "S117_WEBHOOK_TLS_CLIENT_KEY go together")
    if cert is not None:
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"webhook_tls_client_cert: cannot be read as a PEM certificate with its key "
                             f"({type(exc).__name__})") from None
    return ctx

class HostClients:
    """One pool of kept-alive HTTP/1.1 connections per endpoint origin; see the module doc.

    `post(url, content=..., headers=...)` -> `WebhookAnswer`; raises
    `WebhookTargetRefused` (an address the hub must not reach), `OSError`
    (cannot resolve or connect, the connection reset) or `AnswerError` (no
    HTTP answer): the deliverer records each by its class name."""

    def __init__(self, timeout: float, per_host: int = 10, allowed_hosts: list[str] | tuple[str, ...] = (),
                 *, keepalive: float = 2.0, ssl_context: ssl.SSLContext | None = None,
                 require_https: bool = False) -> None:
        self._timeout = timeout  # the most one POST may take, whatever deadline its caller sets
        # S117_WEBHOOK_REQUIRE_HTTPS at sending too: a subscription made with an http:// URL before the
        # operator set it is refused here (nothing sent in clear), not only new ones at the API.
        self._require_https = require_https
        self._per_host = per_host
        self._allow = AllowList.parse(allowed_hosts)
        self._keepalive = keepalive
        self._ssl = ssl_context
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._targets: dict[str, tuple[_Origin, bytes]] = {}  # url -> its origin and request line with Host

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = client_tls()  # the system's trust store, host names checked
        return self._ssl

    def _target(self, url: str) -> tuple[_Origin, bytes]:
        known = self._targets.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        if scheme not in ("http", "https") or not host:
            raise WebhookTargetRefused("webhook URL is not an http(s) URL with a host")
        if self._require_https and scheme != "https":
            raise WebhookTargetRefused("webhook URL is http:// and the hub requires https (S117_WEBHOOK_REQUIRE_HTTPS)")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise WebhookTargetRefused("webhook URL has an invalid port") from None
        key = (scheme, host, port)
        origin = self._origins.get(key)
        if origin is None:
            shown = f"[{host}]" if ":" in host else host
            default = port == (443 if scheme == "https" else 80)
            origin = self._origins[key] = _Origin(scheme, host, port, shown if default else f"{shown}:{port}",
                                                  asyncio.Semaphore(self._per_host))
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
        line = f"POST {path} HTTP/1.1\r\nHost: {origin.host_header}\r\n".encode("ascii")
        if len(self._targets) > 10_000:
            self._targets.clear()
        self._targets[url] = (origin, line)
        return origin, line

    async def post(self, url: str, *, content: bytes, headers: dict[str, str],
                   deadline: float | None = None) -> WebhookAnswer:
        """`deadline`: the caller's own limit for this POST (at most the client's
        `timeout`), kept by the same timer rather than a second one around the call."""
        async with asyncio.timeout(self._timeout if deadline is None else min(deadline, self._timeout)):
            return await self._post(url, content, headers)

    @staticmethod
    def _request(line: bytes, content: bytes, headers: dict[str, str]) -> bytes:
        # The usual case (the hub's own headers: no control character, no Host or Content-Length)
        # checked with one search over the names and one over the values, not two a header.
        if (_CTL.search("".join(headers)) is None and _CTL.search("".join(headers.values())) is None
                and _OWN_HEADERS.isdisjoint(map(str.lower, headers))):
            head = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
        else:  # a name with a control character is left out; in a value each is a space
            head = "".join(f"{k}: {_CTL.sub(' ', v)}\r\n" for k, v in headers.items()
                           if not _CTL.search(k) and k.lower() not in _OWN_HEADERS)
        return b"".join((line, head.encode("latin-1", "replace"),
                         b"Content-Length: %d\r\n\r\n" % len(content), content))

    async def post_window(self, url: str, requests: list[tuple[bytes, dict[str, str]]],
                          deadline: float) -> list[int | BaseException]:
        """POST every `(content, headers)` to `url` on one connection, written
        back to back (pipelined), the answers read in order: each request's
        status, or the exception that stands for it (`TimeoutError` once
        `deadline` seconds (at most the client's `timeout`) have passed, the
        connection's error for those after a connection that ended). Every
        request is given a result; none is left unknown. A reused connection
        the subscriber closed before any byte of an answer: the window is
        written once more on a new connection, as `post` does. Shorter than
        `requests` when an answer closed the connection (`Connection: close`,
        or an answer longer than is read): those behind it have no outcome
        (a server that closes takes none of them); they can be sent again."""
        results: list[int | BaseException] = []
        try:
            origin, line = self._target(url)
            datas = [self._request(line, content, headers) for content, headers in requests]
            async with asyncio.timeout(min(deadline, self._timeout)):
                async with origin.slots:
                    conn, reused = self._idle(origin), True
                    if conn is None:
                        conn, reused = await self._connect(origin), False
                    try:
                        await self._window(conn, datas, results)
                        if reused and isinstance(results[0], AnswerError) and not conn.answered_bytes:
                            conn.close()  # closed as the window went out: once more, anew
                            conn = await self._connect(origin)
                            results.clear()
                            await self._window(conn, datas, results)
                    except BaseException:
                        conn.close()  # interrupted by the deadline (or cancelled): never reused
                        raise
                    self._put_back(origin, conn)
        except TimeoutError as exc:
            results.extend([exc] * (len(requests) - len(results)))
        except (OSError, WebhookTargetRefused) as exc:  # no connection (or a refused target): nothing was sent
            results = [exc] * len(requests)
        return results

    @staticmethod
    async def _window(conn: _Connection, datas: list[bytes], out: list[int | BaseException]) -> None:
        """Each answer appended to `out` as it comes (kept if the deadline cuts the window short)."""
        try:
            waiters = conn.request_window(datas)
        except AnswerError as exc:
            out.extend([exc] * len(datas))
            return
        try:
            for waiter in waiters:
                try:
                    out.append(await waiter)
                except AnswerError as exc:
                    out.append(exc)
                    continue
                if not conn.reusable:  # the answer closed the connection (or was too long to read on):
                    return  # the requests behind it have no outcome; they can be sent again
        finally:
            for waiter in waiters:  # cut short (the deadline): nobody waits for the rest
                if not waiter.done():
                    waiter.cancel()

    def _put_back(self, origin: _Origin, conn: _Connection) -> None:
        if conn.reusable and not conn.closed:
            conn.idle_since = time.monotonic()
            origin.idle.append(conn)
            if origin.expiry is None:
                origin.expiry = asyncio.get_running_loop().call_later(self._keepalive, self._expire, origin)
        else:
            conn.close()

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> WebhookAnswer:
        origin, line = self._target(url)
        data = self._request(line, content, headers)
        async with origin.slots:
            conn, reused = self._idle(origin), True
            if conn is None:
                conn, reused = await self._connect(origin), False
            try:
                try:
                    status = await conn.request(data)
                except AnswerError:
                    if not reused or conn.answered_bytes:
                        raise
                    # The subscriber closed the kept-alive connection as this POST went out: once more, anew.
                    conn.close()
                    conn = await self._connect(origin)
                    status = await conn.request(data)
            except BaseException:
                conn.close()  # failed, or interrupted by the deadline: never reused
                raise
            self._put_back(origin, conn)
        return status if isinstance(status, WebhookAnswer) else WebhookAnswer(status)

    def _idle(self, origin: _Origin) -> _Connection | None:
        now = time.monotonic()
        while origin.idle:
            conn = origin.idle.pop()  # the most recently used first
            if not conn.closed and now - conn.idle_since < self._keepalive:
                return conn
            conn.close()
        return None

    def _expire(self, origin: _Origin) -> None:
        origin.expiry = None
        now = time.monotonic()
        keep = []
        for conn in origin.idle:
            if not conn.closed and now - conn.idle_since < self._keepalive:
                keep.append(conn)
            else:
                conn.close()
        origin.idle[:] = keep
        if keep:  # again when the oldest of those left would pass the keep-alive
            wait = self._keepalive - (now - min(c.idle_since for c in keep))
            origin.expiry = asyncio.get_running_loop().call_later(max(wait, 0.01), self._expire, origin)

    async def _connect(self, origin: _Origin) -> _Connection:
        """A new connection to a checked address of the origin's host (hub.delivery.targets)."""
        addresses = await targets.checked_addresses(origin.host, origin.port, self._allow)
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if origin.scheme == "https" else None
        last: OSError | None = None
        for address in addresses:
            try:
                _, conn = await loop.create_connection(
                    _Connection, host=address, port=origin.port, ssl=tls,
                    server_hostname=origin.host if tls is not None else None)
                return conn
            except OSError as exc:  # this address refused or unreachable: the next one
                last = exc
        raise last if last is not None else OSError("no address to connect to")

    async def aclose(self) -> None:
        for origin in self._origins.values():
            if origin.expiry is not None:
                origin.expiry.cancel()
                origin.expiry = None
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()
        await asyncio.sleep(0)  # let the transports close
