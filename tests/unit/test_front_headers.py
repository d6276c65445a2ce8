"""The request path's header handling (hub/api/correlation.py, hub/api/limits.py):
the correlation id taken from the client's first header and the only one the
app and the answer carry; Content-Length accepted only as one run of ASCII digits."""

from __future__ import annotations

import pytest

from hub.api.correlation import HEADER, CorrelationMiddleware
from hub.api.limits import _BadLength, declared_length


async def _through(headers: list[tuple[bytes, bytes]], answer_headers: list[tuple[bytes, bytes]]):  # noqa: ANN202
    seen: dict = {}
    sent: list = []

    async def app(scope, receive, send):  # noqa: ANN001, ANN202
        seen["headers"] = list(scope["headers"])
        await send({"type": "http.response.start", "status": 202, "headers": list(answer_headers)})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message):  # noqa: ANN001, ANN202
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/register-changes", "headers": headers}
    await CorrelationMiddleware(app)(scope, None, send)
    return seen["headers"], sent[0]["headers"]


async def test_the_clients_first_correlation_id_is_the_one_the_app_and_the_answer_carry():
    headers = [(b"host", b"hub"), (b"X-Correlation-Id", b"feed-0001"), (b"content-type", b"application/json"),
               (b"x-correlation-id", b"feed-0002")]
    app_headers, answer = await _through(headers, [(b"content-type", b"application/json"),
                                                   (HEADER, b"from-the-app")])
    assert app_headers == [(b"host", b"hub"), (b"content-type", b"application/json"), (HEADER, b"feed-0001")]
    assert answer == [(b"content-type", b"application/json"), (HEADER, b"feed-0001"), (b"cache-control", b"no-store")]


async def test_without_an_acceptable_id_one_is_minted_and_used_throughout():
    for headers in ([(b"host", b"hub")], [(HEADER, b"Jane Smith 01/02/1980"), (HEADER, b"feed-0002")]):
        app_headers, answer = await _through(headers, [])
        ids = [v for k, v in app_headers if k == HEADER]
        assert len(ids) == 1 and len(ids[0]) == 36 and ids[0] != b"feed-0002"  # the first header decides
        assert answer == [(HEADER, ids[0]), (b"cache-control", b"no-store")]  # a /v1 answer: never stored
        assert [k for k, _ in app_headers if k != HEADER] == [k for k, _ in headers if k.lower() != HEADER]


@pytest.mark.parametrize("value, length", [(b"0", 0), (b"1234", 1234), (b" 56 ", 56), (b"9" * 19, int("9" * 19))])
def test_a_content_length_of_ascii_digits_is_taken(value, length):
    assert declared_length([(b"host", b"hub"), (b"Content-Length", value)]) == length
    assert declared_length([(b"content-length", value), (b"content-length", value)]) == length  # the same twice


@pytest.mark.parametrize("value", [b"", b" ", b"+1", b"-1", b"1.0", b"1 2", b"0x10", "\u00b2".encode(),
                                   "\u0661".encode(), b"9" * 20])
def test_anything_else_is_refused(value):
    with pytest.raises(_BadLength):
        declared_length([(b"content-length", value)])


def test_two_different_lengths_are_refused_and_none_is_none():
    with pytest.raises(_BadLength):
        declared_length([(b"content-length", b"1"), (b"content-length", b"2")])
    assert declared_length([(b"host", b"hub")]) is None
