"""The OAUTHBEARER token fetched through an organisation's outbound proxy (S117_KAFKA_SASL_OAUTHBEARER_PROXY;
hub/bus/kafka_oauth.py), over real sockets: a real CONNECT proxy (tests/servers/http_proxy.py, in the test's
event loop, counting the tunnels it opened) and a real HTTPS token endpoint on loopback signed by a test CA
(tests/servers/token_endpoint.py), reached with the settings as the hub reads them.

- The token comes through the proxy named (the proxy counted one CONNECT to the endpoint's host:port), with
  the proxy's Basic credentials, the endpoint still verified with the CA file inside the tunnel; without the
  setting the proxy is not used, even with HTTPS_PROXY/ALL_PROXY naming it (the environment is not read),
  and NO_PROXY does not take the token past a proxy that is set.
- Wrong proxy credentials: the proxy answers 407, said under the proxy's setting with the status only
  (`misconfigured: authentication`), in the error and the log line, never the proxy's password, the client
  secret or the token; a proxy that cannot be reached or cannot reach the endpoint is an outage."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import orjson
import pytest

from hub.bus.kafka_oauth import OAuthTokenRefused, OAuthTokenUnavailable
from hub.bus.kafka_security import misconfiguration
from hub.observability.logging import configure_logging
from hub.settings import Settings
from tests.servers.http_proxy import connect_proxy
from tests.servers.token_endpoint import TOKEN, https_token_endpoint

pytestmark = pytest.mark.integration

SECRET = "oauth-cs-proxy-8f2a-never-shown"
PROXY_USER = "s117@hub"
PROXY_PASSWORD = "pr0xy:p@ss/5e1-never-shown"  # characters a URL's userinfo has percent-encoded
WRONG = "wrong-proxy-pw-77c1-never-shown"
PROXY_SETTING = "S117_KAFKA_SASL_OAUTHBEARER_PROXY"


def _settings(url: str, ca_file: Path | None, proxy: str | None, prefix: str = "kafka_") -> Settings:
    oauth = {f"{prefix}security_protocol": "SASL_SSL", f"{prefix}sasl_mechanism": "OAUTHBEARER",
             f"{prefix}sasl_oauthbearer_token_endpoint_url": url, f"{prefix}sasl_oauthbearer_client_id": "s117-hub",
             f"{prefix}sasl_oauthbearer_client_secret": SECRET, f"{prefix}sasl_oauthbearer_ca_file": ca_file,
             f"{prefix}sasl_oauthbearer_proxy": proxy}
    if prefix == "kafka_outbound_":
        oauth["kafka_outbound_bootstrap"] = "kafka.council.example:9093"
    return Settings(**oauth)


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_token_comes_through_the_proxy_named_and_only_through_it(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    async with connect_proxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as proxy, \
            connect_proxy() as env_proxy:
        with https_token_endpoint(tmp_path) as endpoint:
            # The environment names another proxy, and says loopback needs none: neither is heeded.
            monkeypatch.setenv("HTTPS_PROXY", env_proxy.url())
            monkeypatch.setenv("ALL_PROXY", env_proxy.url())
            monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
            s = _settings(endpoint.url, endpoint.ca_file, proxy.url(PROXY_USER, PROXY_PASSWORD))
            assert await s.kafka_security("bus").token_provider().token() == TOKEN
            assert proxy.tunnels == [f"127.0.0.1:{endpoint.port}"]  # the one CONNECT, to the endpoint
            assert proxy.proxy_authorizations == [
                "Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()]
            assert endpoint.posts == ["/token"]  # the tunnel reached it: TLS verified with the CA file inside
            assert env_proxy.asked == []

            # Without the setting the token endpoint is reached directly: no proxy, the environment's neither.
            direct = _settings(endpoint.url, endpoint.ca_file, None)
            assert await direct.kafka_security("bus").token_provider().token() == TOKEN
            assert endpoint.posts == ["/token", "/token"]
            assert proxy.asked == [f"CONNECT 127.0.0.1:{endpoint.port}"] and env_proxy.asked == []


async def test_the_outbound_clusters_proxy_is_its_own(tmp_path: Path) -> None:
    async with connect_proxy() as proxy:
        with https_token_endpoint(tmp_path) as endpoint:
            s = _settings(endpoint.url, endpoint.ca_file, proxy.url(), prefix="kafka_outbound_")
            assert await s.kafka_security("outbound").token_provider("outbound").token() == TOKEN
            assert proxy.tunnels == [f"127.0.0.1:{endpoint.port}"]


async def test_wrong_proxy_credentials_are_a_named_refusal_that_leaks_nothing(
        tmp_path: Path, capsys, restore_logging) -> None:  # noqa: ANN001
    configure_logging("INFO")
    async with connect_proxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        with https_token_endpoint(tmp_path) as endpoint:
            for given in (proxy.url(PROXY_USER, WRONG), proxy.url()):  # wrong, then none
                s = _settings(endpoint.url, endpoint.ca_file, given)
                with pytest.raises(OAuthTokenRefused) as caught:
                    await s.kafka_security("bus").token_provider().token()
                assert caught.value.args[0] == f"{PROXY_SETTING}: the proxy answered 407"
                assert misconfiguration(caught.value) == "authentication"  # retrying will not mend it
            assert proxy.refused == [407, 407] and proxy.tunnels == [] and endpoint.posts == []
    out = capsys.readouterr()
    lines = [orjson.loads(line) for line in out.out.splitlines() if line.startswith("{")]
    refused = [line for line in lines if line["event"] == "kafka oauth token refused"]
    said_407 = f"OAuthTokenRefused: {PROXY_SETTING}: the proxy answered 407"  # KafkaError's text: its class first
    assert [line["problem"] for line in refused] == [said_407] * 2, lines
    assert all(line["error_kind"] == "misconfigured: authentication" for line in refused)
    said = out.out + out.err
    for secret in (PROXY_PASSWORD, WRONG, SECRET, TOKEN, base64.b64encode(f"{PROXY_USER}:{WRONG}".encode()).decode(),
                   "p%40ss", f"127.0.0.1:{proxy.port}"):
        assert secret not in said, secret


async def test_a_proxy_that_cannot_be_reached_or_cannot_reach_the_endpoint_is_an_outage(tmp_path: Path) -> None:
    with https_token_endpoint(tmp_path) as endpoint:
        nobody = f"http://{PROXY_USER.replace('@', '%40')}:{WRONG}@127.0.0.1:{_free_port()}"
        s = _settings(endpoint.url, endpoint.ca_file, nobody)
        with pytest.raises(OAuthTokenUnavailable) as caught:
            await s.kafka_security("bus").token_provider().token()
        assert caught.value.args[0] == f"{PROXY_SETTING}: the proxy could not be reached (ConnectError)"
        assert misconfiguration(caught.value) is None  # unreachable: retried as ever
        async with connect_proxy() as proxy:
            gone = _settings(f"https://127.0.0.1:{_free_port()}/token", endpoint.ca_file, proxy.url())
            with pytest.raises(OAuthTokenUnavailable) as caught:
                await gone.kafka_security("bus").token_provider().token()
            assert caught.value.args[0] == f"{PROXY_SETTING}: the proxy answered 502"
            # Through the proxy, the token endpoint's certificate is still checked (no CA file: the system's
            # CAs, which do not know the test's): the tunnel opened, the TLS inside it failed, the endpoint's.
            untrusted = _settings(endpoint.url, None, proxy.url())
            with pytest.raises(OAuthTokenUnavailable) as caught:
                await untrusted.kafka_security("bus").token_provider().token()
            assert caught.value.args[0] == ("S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: the token endpoint could "
                                         "not be reached (ConnectError)")
            assert proxy.tunnels == [f"127.0.0.1:{endpoint.port}"] and endpoint.posts == []


async def test_an_http_endpoint_forwarded_by_the_proxy_names_its_407(tmp_path: Path) -> None:
    """An http:// token endpoint (loopback here) goes to the proxy as a forwarded request, no CONNECT: the proxy's
    407 is still the proxy's."""
    async with connect_proxy(credentials=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        s = _settings(f"http://127.0.0.1:{_free_port()}/token", None, proxy.url(PROXY_USER, WRONG))
        with pytest.raises(OAuthTokenRefused) as caught:
            await s.kafka_security("bus").token_provider().token()
        assert caught.value.args[0] == f"{PROXY_SETTING}: the proxy answered 407"
        assert len(proxy.asked) == 1 and proxy.asked[0].startswith("POST http://127.0.0.1:")


async def test_an_https_proxy_is_verified_with_the_token_endpoints_cas(tmp_path: Path) -> None:
    """An https:// proxy (TLS to the proxy, and the token endpoint's TLS inside its tunnel): its certificate is
    checked with S117_KAFKA_SASL_OAUTHBEARER_CA_FILE, as the endpoint's is."""
    with https_token_endpoint(tmp_path) as endpoint:
        issued = endpoint.ca.issue(tmp_path / "proxy", "proxy", hosts=("127.0.0.1",))
        async with connect_proxy(credentials=(PROXY_USER, PROXY_PASSWORD), tls=(issued.cert, issued.key)) as proxy:
            s = _settings(endpoint.url, endpoint.ca_file, proxy.url(PROXY_USER, PROXY_PASSWORD))
            assert await s.kafka_security("bus").token_provider().token() == TOKEN
            assert proxy.tunnels == [f"127.0.0.1:{endpoint.port}"] and endpoint.posts == ["/token"]
