"""The webhook client (hub/delivery/http1.py) against real sockets: kept-alive
connections reused and dropped when they must be, every way an answer can
be framed, a subscriber that closes a kept-alive connection as a POST goes
out, answers that are too long or not HTTP, header values that try to
split the request, and TLS with the certificate checked."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.delivery.http1 import ANSWER_READ_MAX, AnswerError, HostClients

OK = b"HTTP/1.1 204 No Content\r\n\r\n"


class Subscriber:
    """A TCP server that reads each request whole (head and Content-Length
    body) and answers it with `answer(n)` for the n-th request of the run;
    `then_close(n)` closes the connection after that answer, `unanswered(n)`
    instead of answering."""

    def __init__(self, answer: Callable[[int], bytes] = lambda n: OK,
                 then_close: Callable[[int], bool] = lambda n: False,
                 unanswered: Callable[[int], bool] = lambda n: False) -> None:
        self.answer, self.then_close, self.unanswered = answer, then_close, unanswered
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> "Subscriber":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                n = len(self.requests)
                self.requests.append((head, body))
                if self.unanswered(n):
                    break
                writer.write(self.answer(n))
                await writer.drain()
                if self.then_close(n):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def post(clients: HostClients, port: int, body: bytes = b"{}", scheme: str = "http", **headers: str) -> int:
    answer = await clients.post(f"{scheme}://127.0.0.1:{port}/hooks/E06000060?v=1", content=body,
                                headers={"Content-Type": "application/fhir+json", **headers})
    return answer.status_code


async def test_a_kept_alive_connection_carries_one_post_after_another() -> None:
    sub = await Subscriber().start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    assert [await post(clients, sub.port, b'{"n":%d}' % i) for i in range(5)] == [204] * 5
    assert sub.connections == 1
    head, body = sub.requests[4]
    assert head.startswith(b"POST /hooks/E06000060?v=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nContent-Length: 7\r\n" in head and body == b'{"n":4}'
    await clients.aclose()
    await sub.stop()


@pytest.mark.parametrize(("answer", "status"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthank", 200),
    (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthank\r\n3\r\nyou\r\n0\r\n\r\n", 202),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 201),
    (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 4\r\n\r\nbusy", 503),
    (b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://elsewhere.test/\r\nContent-Length: 0\r\n\r\n", 301),
])
async def test_every_framing_of_an_answer_gives_its_status_and_keeps_the_connection(answer: bytes,
                                                                                    status: int) -> None:
    sub = await Subscriber(answer=lambda n: answer).start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    assert [await post(clients, sub.port), await post(clients, sub.port)] == [status, status]
    assert sub.connections == 1  # no redirect followed: a 3xx is the answer
    await clients.aclose()
    await sub.stop()


async def test_an_answer_read_until_close_or_marked_close_is_not_reused() -> None:
    sub = await Subscriber(answer=lambda n: b"HTTP/1.0 200 OK\r\n\r\nno length: read until close",
                           then_close=lambda n: True).start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    assert [await post(clients, sub.port), await post(clients, sub.port)] == [200, 200]
    assert sub.connections == 2
    await sub.stop()
    sub = await Subscriber(answer=lambda n: b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").start()
    assert [await post(clients, sub.port), await post(clients, sub.port)] == [204, 204]
    assert sub.connections == 2  # the client closed it, as the answer asked
    await clients.aclose()
    await sub.stop()


async def test_a_kept_alive_connection_closed_as_the_post_goes_out_is_posted_again_anew() -> None:
    """The subscriber closes a kept-alive connection just as the next POST
    reaches it (read, not answered): the POST goes out once more on a new
    connection (at least once), and only then is its answer the outcome."""
    sub = await Subscriber(unanswered=lambda n: n == 1).start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    assert await post(clients, sub.port, b"first") == 204
    assert await post(clients, sub.port, b"second") == 204
    assert [body for _, body in sub.requests] == [b"first", b"second", b"second"]
    assert sub.connections == 2
    await clients.aclose()
    await sub.stop()


async def test_a_connection_the_subscriber_closed_while_idle_is_not_used() -> None:
    sub = await Subscriber(then_close=lambda n: n == 0).start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    assert await post(clients, sub.port, b"first") == 204
    await asyncio.sleep(0.05)  # the close reaches the client's idle connection
    assert await post(clients, sub.port, b"second") == 204
    assert [body for _, body in sub.requests] == [b"first", b"second"]
    assert sub.connections == 2
    await clients.aclose()
    await sub.stop()


async def test_a_new_connection_closed_before_an_answer_is_an_error_not_a_second_post() -> None:
    sub = await Subscriber(unanswered=lambda n: True).start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    with pytest.raises(AnswerError):
        await post(clients, sub.port)
    assert len(sub.requests) == 1  # sent once: only a reused connection's POST goes out again
    await clients.aclose()
    await sub.stop()


async def test_an_answer_longer_than_needed_is_not_read_on_and_its_connection_dropped() -> None:
    big = b"x" * (ANSWER_READ_MAX * 4)
    sub = await Subscriber(answer=lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big).start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    assert [await post(clients, sub.port), await post(clients, sub.port)] == [200, 200]
    assert sub.connections == 2
    await clients.aclose()
    await sub.stop()


async def test_an_answer_that_is_not_http_is_an_error_and_the_next_post_starts_clean() -> None:
    sub = await Subscriber(answer=lambda n: b"SSH-2.0-OpenSSH_9.6\r\n" if n == 0 else OK).start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    with pytest.raises(AnswerError):
        await post(clients, sub.port)
    assert await post(clients, sub.port) == 204
    assert sub.connections == 2
    await clients.aclose()
    await sub.stop()


async def test_a_deadline_mid_answer_drops_the_connection() -> None:
    gate = asyncio.Event()

    class Slow(Subscriber):
        async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.connections == 0:
                self.connections += 1
                await reader.readuntil(b"\r\n\r\n")
                await gate.wait()  # never answers this one
                writer.close()
                return
            await super()._serve(reader, writer)

    sub = await Slow().start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await post(clients, sub.port)
    assert await post(clients, sub.port) == 204  # on a new connection, not the one left waiting
    assert sub.connections == 2
    gate.set()
    await clients.aclose()
    await sub.stop()


async def test_the_clients_own_bound_holds_without_a_callers_deadline() -> None:
    sub = await Subscriber(unanswered=lambda n: False, answer=lambda n: b"").start()  # reads, never answers
    clients = HostClients(0.3, allowed_hosts=["127.0.0.1"])
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await post(clients, sub.port)
    assert asyncio.get_running_loop().time() - started < 2.0
    await clients.aclose()
    await sub.stop()


async def test_header_values_cannot_split_the_request() -> None:
    sub = await Subscriber().start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"])
    assert await post(clients, sub.port, **{"X-Correlation-Id": "abc\r\nX-Injected: yes\r\n\r\nPOST /evil"}) == 204
    assert len(sub.requests) == 1
    head = sub.requests[0][0]
    assert b"\r\nX-Injected" not in head and b"X-Correlation-Id: abc  X-Injected: yes    POST /evil\r\n" in head
    await clients.aclose()
    await sub.stop()


async def test_a_callers_deadline_is_kept_by_the_clients_own_timer() -> None:
    sub = await Subscriber(answer=lambda n: b"").start()  # reads, never answers
    clients = HostClients(30.0, allowed_hosts=["127.0.0.1"])
    # The outer bound only stops a client that ignored the deadline: that would fail with
    # CancelledError/TimeoutError from outside post (the deadline's TimeoutError comes from inside).
    task = asyncio.ensure_future(clients.post(f"http://127.0.0.1:{sub.port}/h", content=b"{}", headers={},
                                              deadline=0.2))
    done, _ = await asyncio.wait([task], timeout=10.0)
    assert task in done, "the caller's 0.2 s deadline was not kept"
    assert isinstance(task.exception(), TimeoutError)
    await clients.aclose()
    await sub.stop()


@pytest.mark.parametrize(("headers", "written"), [
    ({"Content-Type": "application/fhir+json", "S117-Event-Number": "7"},
     b"Content-Type: application/fhir+json\r\nS117-Event-Number: 7\r\n"),
    ({"A": "x\ty", "B": "1"}, b"A: x y\r\nB: 1\r\n"),  # a control character in a value: a space
    ({"Bad\nName": "v", "B": "1"}, b"B: 1\r\n"),  # in a name: the header left out
    ({"host": "elsewhere.test", "Content-Length": "1", "B": "\x7f"}, b"B:  \r\n"),  # the client's own: left out
    ({}, b""),
])
def test_request_head_written_as_given_or_made_safe(headers: dict[str, str], written: bytes) -> None:
    line = b"POST /h HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"
    assert HostClients._request(line, b"{}", headers) == line + written + b"Content-Length: 2\r\n\r\n{}"


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s117 test subscriber")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


async def test_tls_checks_the_subscribers_certificate(tmp_path) -> None:  # noqa: ANN001
    cert, key = _self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    sub = await Subscriber().start(tls=server_tls)
    trusting = ssl.create_default_context(cadata=cert.decode())
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"], ssl_context=trusting)
    assert [await post(clients, sub.port, scheme="https") for _ in range(3)] == [204] * 3
    assert sub.connections == 1
    await clients.aclose()
    default = HostClients(5.0, allowed_hosts=["127.0.0.1"])  # the system's trust store: not this certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        await post(default, sub.port, scheme="https")
    await default.aclose()
    assert len(sub.requests) == 3
    await sub.stop()


async def test_with_https_required_an_http_url_is_refused_before_anything_is_sent() -> None:
    """S117_WEBHOOK_REQUIRE_HTTPS turned on after a subscription was made with an http:// URL: the
    API refuses new ones, and the client refuses to send to the old one in clear (it went on before)."""
    from hub.delivery.targets import WebhookTargetRefused

    sub = await Subscriber().start()
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"], require_https=True)
    with pytest.raises(WebhookTargetRefused, match="requires https"):
        await post(clients, sub.port)
    assert sub.connections == 0 and sub.requests == []
    await clients.aclose()
    await sub.stop()
