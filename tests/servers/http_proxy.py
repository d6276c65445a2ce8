"""A real outbound HTTP proxy for the tests (asyncio, on 127.0.0.1:0), as an NHS organisation's network
puts between the hub and an identity provider: CONNECT tunnels (RFC 9110 §9.3.6) to any host:port,
optionally only with `Proxy-Authorization: Basic` credentials (else 407 with `Proxy-Authenticate`),
optionally over TLS itself (an https:// proxy: `tls`, a certificate and key for 127.0.0.1).
It records every request line it was asked (`asked`: "CONNECT 127.0.0.1:8443", or a forwarded
request's method and absolute URI) and every tunnel it opened (`tunnels`: "host:port"), so a test can
prove the traffic went through it. A request other than CONNECT is answered 407 without the
credentials, else 501 (it forwards nothing). Used by tests/integration/test_kafka_oauth_proxy.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

MAX_HEAD = 16 * 1024


@dataclass
class ConnectProxy:
    port: int = 0
    scheme: str = "http"
    credentials: tuple[str, str] | None = None
    asked: list[str] = field(default_factory=list)
    tunnels: list[str] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # statuses it answered instead of tunnelling
    proxy_authorizations: list[str] = field(default_factory=list)  # the header as received, if any

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """Its URL, with `user:password@` (percent-encoded) when given."""
        auth = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user is not None else ""
        return f"{self.scheme}://{auth}127.0.0.1:{self.port}"

    def _authorized(self, headers: dict[str, str]) -> bool:
        given = headers.get("proxy-authorization")
        if given is not None:
            self.proxy_authorizations.append(given)
        if self.credentials is None:
            return True
        scheme, _, encoded = (given or "").partition(" ")
        try:
            pair = base64.b64decode(encoded, validate=True).decode()
        except ValueError:
            return False
        return scheme.lower() == "basic" and pair == ":".join(self.credentials)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            self.asked.append(f"{method} {target}")
            if not self._authorized(headers):
                self.refused.append(407)
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b'Proxy-Authenticate: Basic realm="nhs-proxy"\r\nContent-Length: 0\r\n'
                             b"Connection: close\r\n\r\n")
                await writer.drain()
                return
            if method != "CONNECT":
                self.refused.append(501)
                writer.write(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            host, _, port = target.rpartition(":")
            try:
                up_reader, upstream = await asyncio.open_connection(host.strip("[]"), int(port))
            except (OSError, ValueError):
                self.refused.append(502)
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            self.tunnels.append(target)
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError, ssl.SSLError):
            return
        finally:
            for w in (upstream, writer):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()


@contextlib.asynccontextmanager
async def connect_proxy(credentials: tuple[str, str] | None = None,
                        tls: tuple[Path, Path] | None = None) -> AsyncIterator[ConnectProxy]:
    """A ConnectProxy listening on a free loopback port for the block's time (in the test's event loop);
    with `tls` (certificate and key files) an https:// one."""
    context = None
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
    proxy = ConnectProxy(credentials=credentials, scheme="https" if tls else "http")
    server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0, limit=MAX_HEAD, ssl=context)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
