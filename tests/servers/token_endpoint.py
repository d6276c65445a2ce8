"""A real HTTPS OAuth 2.0 token endpoint on loopback (http.server in a thread) whose certificate a CA of the
test's own signed (tests/tls_certs.py), answering every POST with TOKEN: for the OAUTHBEARER provider's
tests of the CA file (tests/unit/test_kafka_oauth_settings.py) and of the outbound proxy
(tests/integration/test_kafka_oauth_proxy.py). It counts the requests it answered (`posts`)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.tls_certs import CertAuthority

TOKEN = "eyJhbGciOiJub25lIn0.e30."


@dataclass
class HttpsTokenEndpoint:
    url: str
    ca: CertAuthority  # signs other loopback servers' certificates too (an https:// proxy's)
    port: int
    posts: list[str] = field(default_factory=list)  # each request's path

    @property
    def ca_file(self) -> Path:
        return self.ca.pem


def answer_json(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """A token endpoint's answer: `status` with the JSON `body`."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """`server` answering in a thread of its own until the block ends."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def https_token_endpoint(directory: Path) -> Iterator[HttpsTokenEndpoint]:
    endpoint: HttpsTokenEndpoint

    class Token(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            endpoint.posts.append(self.path)
            answer_json(self, 200, b'{"access_token": "' + TOKEN.encode() + b'", "token_type": "Bearer", '
                                   b'"expires_in": 300}')

        def log_message(self, *args: object) -> None:
            pass

    ca = CertAuthority.make(directory)
    server_cert = ca.issue(directory, "token endpoint", hosts=("127.0.0.1",))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Token)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(server_cert.cert), str(server_cert.key))
    httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    port = httpd.server_address[1]
    endpoint = HttpsTokenEndpoint(f"https://127.0.0.1:{port}/token", ca, port)
    with serving(httpd):
        yield endpoint
