"""The OAUTHBEARER settings (S117_KAFKA_SASL_OAUTHBEARER_*, S117_KAFKA_OUTBOUND_SASL_OAUTHBEARER_*;
hub/bus/kafka_security.py): every Kafka client of a cluster gets one token provider; a bad or missing
setting stops the hub at start naming the variable, never its value; the client secret never shows;
an http:// token endpoint beyond loopback is refused unless the operator says the network protects it;
/asyncapi.json documents the cluster as OAuth 2.0 client credentials with its token endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from hub.bus.kafka_oauth import OAuthBearerTokenProvider
from hub.settings import Settings
from tests.unit.test_kafka_security_settings import _serve

SECRET = "oauth-cs-6b1e-never-shown"
URL = "https://login.example.nhs.uk/tenant/oauth2/v2.0/token"
PG = "postgresql+asyncpg://hub@10.0.0.5/hub?sslmode=verify-full"
SCHEMA = Path(__file__).resolve().parent.parent / "fixtures" / "asyncapi" / "asyncapi-3.0.0.schema.json"


def _oauth(prefix: str = "kafka_", **kw: object) -> dict[str, object]:
    return {f"{prefix}security_protocol": "SASL_SSL", f"{prefix}sasl_mechanism": "oauthbearer",
            f"{prefix}sasl_oauthbearer_token_endpoint_url": URL, f"{prefix}sasl_oauthbearer_client_id": "s117-hub",
            f"{prefix}sasl_oauthbearer_client_secret": SECRET, **{f"{prefix}{k}": v for k, v in kw.items()}}


def _problem(**kw: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**kw)
    errors = caught.value.errors(include_input=False, include_url=False)
    assert len(errors) == 1
    text = str(errors[0]["msg"]).removeprefix("Value error, ")
    assert SECRET not in text and URL not in text  # what `s117hub serve` says (hub/cli.py: the message only)
    return text


def test_oauthbearer_gives_every_client_of_the_cluster_one_token_provider(tmp_path: Path) -> None:
    secret = tmp_path / "client-secret"
    secret.write_text(SECRET + "\n")
    s = Settings(bus_url="kafka://kafka1.nhs.internal:9093", database_url=PG, canonical_base="https://s117.example",
                 **_oauth(sasl_oauthbearer_client_secret="", sasl_oauthbearer_client_secret_file=secret,
                          sasl_oauthbearer_scope="kafka", sasl_oauthbearer_audience="urn:s117",
                          sasl_oauthbearer_client_auth="BODY",
                          sasl_oauthbearer_extensions="logicalCluster=lkc-abc12, identityPoolId=pool-Xy9"))
    options = s.kafka_security("bus").client_options()
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "OAUTHBEARER"
    assert "sasl_plain_username" not in options and "sasl_plain_password" not in options
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, OAuthBearerTokenProvider)
    assert provider.extensions() == {"logicalCluster": "lkc-abc12", "identityPoolId": "pool-Xy9"}
    security = s.kafka_security("bus")
    assert security.client_secret() == SECRET  # the file's content, without its newline
    assert security.oauth_client_auth == "body" and security.oauth_scope == "kafka"
    dumped = s.model_dump_json(exclude={"kafka_sasl_oauthbearer_client_secret"})
    for shown in (repr(s), str(security), repr(provider), dumped):
        assert SECRET not in shown
    # The worker processes get the settings as JSON (hub/worker_process.py): the secret goes with them.
    inline = Settings(**_oauth())
    assert Settings.model_validate_json(inline.model_dump_json()).kafka_security("bus").client_secret() == SECRET
    # The outbound cluster with its own identity provider.
    both = Settings(**_oauth(), kafka_outbound_bootstrap="kafka.council.example:9093",
                    **_oauth("kafka_outbound_", sasl_oauthbearer_client_id="s117-out"))
    out = both.kafka_security("outbound")
    assert out.oauth and out.oauth_client_id == "s117-out" and out.prefix == "S117_KAFKA_OUTBOUND_"


@pytest.mark.parametrize(("settings", "named"), [
    (_oauth(sasl_oauthbearer_token_endpoint_url=None),
     "S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: required with S117_KAFKA_SASL_MECHANISM OAUTHBEARER"),
    (_oauth(sasl_oauthbearer_token_endpoint_url="idp.example.nhs.uk/token"),
     "S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: must be an absolute https:// URL"),
    (_oauth(sasl_oauthbearer_token_endpoint_url="https://hub:" + SECRET + "@idp.example.nhs.uk/token"),
     "S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: must not hold credentials"),
    (_oauth(sasl_oauthbearer_token_endpoint_url="https://idp.example.nhs.uk:99999/token"),
     "S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: not a URL"),
    (_oauth(sasl_oauthbearer_token_endpoint_url="http://idp.example.nhs.uk/token"),
     "S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: http:// beyond loopback would send the client secret"),
    (_oauth(sasl_oauthbearer_client_id=""), "S117_KAFKA_SASL_OAUTHBEARER_CLIENT_ID: required"),
    (_oauth(sasl_oauthbearer_client_secret=None), "S117_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET: required"),
    (_oauth(sasl_oauthbearer_client_secret_file=Path("/nonexistent/secret")),
     "S117_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET, S117_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET_FILE: give one"),
    (_oauth(sasl_oauthbearer_client_secret=None, sasl_oauthbearer_client_secret_file=Path("/nonexistent/secret")),
     "S117_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET_FILE: no such file"),
    (_oauth(sasl_oauthbearer_client_auth="jwt"), "S117_KAFKA_SASL_OAUTHBEARER_CLIENT_AUTH: must be basic"),
    (_oauth(sasl_oauthbearer_extensions="logicalCluster"), "S117_KAFKA_SASL_OAUTHBEARER_EXTENSIONS: item 1 is not"),
    (_oauth(sasl_oauthbearer_extensions="a=1,auth=Bearer x"), "S117_KAFKA_SASL_OAUTHBEARER_EXTENSIONS: item 2 is not"),
    (_oauth(sasl_oauthbearer_extensions="a=1,auth=x"),
     "S117_KAFKA_SASL_OAUTHBEARER_EXTENSIONS: item 2: its key is reserved"),
    (_oauth(sasl_username="hub"), "S117_KAFKA_SASL_USERNAME: set, but S117_KAFKA_SASL_MECHANISM OAUTHBEARER takes no"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "hub",
      "kafka_sasl_password": "pw", "kafka_sasl_oauthbearer_client_secret": SECRET},
     "S117_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET: set, but S117_KAFKA_SASL_MECHANISM is SCRAM-SHA-512"),
    ({"kafka_sasl_oauthbearer_token_endpoint_url": URL},
     "S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL: set, but S117_KAFKA_SECURITY_PROTOCOL PLAINTEXT has no SASL"),
    ({"kafka_outbound_sasl_oauthbearer_client_secret": SECRET},
     "S117_KAFKA_OUTBOUND_SASL_OAUTHBEARER_CLIENT_SECRET: set without S117_KAFKA_OUTBOUND_SECURITY_PROTOCOL"),
    ({**_oauth("kafka_outbound_", sasl_oauthbearer_client_id=None), "kafka_outbound_bootstrap": "k.example:9093"},
     "S117_KAFKA_OUTBOUND_SASL_OAUTHBEARER_CLIENT_ID: required"),
])
def test_a_bad_oauthbearer_setting_is_named_never_its_value(settings: dict, named: str) -> None:
    problem = _problem(**settings)
    assert problem.startswith(named), problem


def test_an_empty_secret_file_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "secret"
    empty.write_text("\n")
    assert _problem(**_oauth(sasl_oauthbearer_client_secret=None, sasl_oauthbearer_client_secret_file=empty)) == (
        "S117_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET_FILE: is empty")


def test_an_http_token_endpoint_only_on_loopback_or_on_the_operators_word() -> None:
    for url in ("http://127.0.0.1:8080/token", "http://localhost/token", "http://[::1]:9/token"):
        Settings(**_oauth(sasl_oauthbearer_token_endpoint_url=url))
    far = _oauth(sasl_oauthbearer_token_endpoint_url="http://idp.internal/token")
    assert "ALLOW_PLAINTEXT=true" in _problem(**far)
    allowed = Settings(**far, kafka_allow_plaintext=True)
    assert allowed.kafka_security("bus").token_url_in_clear()
    assert not Settings(**_oauth()).kafka_security("bus").token_url_in_clear()


def test_serve_with_a_bad_oauthbearer_setting_exits_2_naming_it_never_the_secret(tmp_path: Path) -> None:
    done = _serve(tmp_path, S117_BUS_URL="kafka://127.0.0.1:9", S117_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                  S117_KAFKA_SASL_MECHANISM="OAUTHBEARER", S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL=URL,
                  S117_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET=SECRET)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines == ["s117hub serve: setting S117_KAFKA_SASL_OAUTHBEARER_CLIENT_ID: required with "
                     "S117_KAFKA_SASL_MECHANISM OAUTHBEARER"], done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_the_asyncapi_document_names_the_token_endpoint_as_client_credentials() -> None:
    from hub.asyncapi import asyncapi_document

    bus = Settings(**_oauth(sasl_oauthbearer_token_endpoint_url=URL + "?tenant=x",
                            sasl_oauthbearer_scope="kafka s117"),
                   kafka_outbound_bootstrap="out.hub.nhs.uk:9093",
                   **_oauth("kafka_outbound_", sasl_oauthbearer_token_endpoint_url="https://idp.council.example/t"))
    doc = asyncapi_document(version="1", kafka_servers="kafka-1.hub.nhs.uk:9093",
                            outbound_servers="out.hub.nhs.uk:9093", bus_security=bus.kafka_security("bus"),
                            outbound_security=bus.kafka_security("outbound"))
    assert list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(doc)) == []
    assert doc["servers"]["bus"]["security"] == [{"$ref": "#/components/securitySchemes/saslOauthBearer"}]
    assert doc["servers"]["outbound"]["security"] == [{"$ref": "#/components/securitySchemes/saslOauthBearerOutbound"}]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["saslOauthBearer"]["type"] == "oauth2"
    assert schemes["saslOauthBearer"]["flows"] == {"clientCredentials": {
        "tokenUrl": URL, "availableScopes": {"kafka": "asked for by the hub", "s117": "asked for by the hub"}}}
    assert schemes["saslOauthBearer"]["scopes"] == ["kafka", "s117"]
    outbound = schemes["saslOauthBearerOutbound"]["flows"]["clientCredentials"]
    assert outbound["tokenUrl"] == "https://idp.council.example/t"
    text = json.dumps(doc)
    assert SECRET not in text and "s117-hub" not in text and "tenant=x" not in text


def test_a_ca_file_for_the_token_endpoint_is_checked_at_start(tmp_path: Path) -> None:
    """S117_KAFKA_SASL_OAUTHBEARER_CA_FILE (an organisation's own CA): missing, not a certificate, or set with an
    http:// endpoint, each named (never a value)."""
    from tests.tls_certs import CertAuthority

    assert _problem(**_oauth(sasl_oauthbearer_ca_file=tmp_path / "absent.pem")).startswith(
        "S117_KAFKA_SASL_OAUTHBEARER_CA_FILE: ")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert _problem(**_oauth(sasl_oauthbearer_ca_file=junk)) == (
        "S117_KAFKA_SASL_OAUTHBEARER_CA_FILE: holds no PEM certificate that parses")
    ca = CertAuthority.make(tmp_path)
    assert _problem(**_oauth(sasl_oauthbearer_ca_file=ca.pem,
                             sasl_oauthbearer_token_endpoint_url="http://127.0.0.1:8080/token")).startswith(
        "S117_KAFKA_SASL_OAUTHBEARER_CA_FILE: set, but S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL is not https://")
    s = Settings(**_oauth(sasl_oauthbearer_ca_file=ca.pem))
    assert s.kafka_security("bus").oauth_verify() is not None
    assert Settings(**_oauth()).kafka_security("bus").oauth_verify() is None  # the system's CAs


async def test_the_token_endpoint_is_trusted_through_the_ca_file_and_not_without_it(tmp_path: Path) -> None:
    """A real HTTPS token endpoint on loopback whose certificate a CA of the test's own signed: reached with
    the CA file set (a token), refused without it (the system's CAs do not know it: an outage named by class)."""
    from hub.bus.kafka_oauth import OAuthTokenUnavailable
    from tests.servers.token_endpoint import TOKEN, https_token_endpoint

    with https_token_endpoint(tmp_path) as endpoint:
        trusted = Settings(**_oauth(sasl_oauthbearer_token_endpoint_url=endpoint.url,
                                    sasl_oauthbearer_ca_file=endpoint.ca_file))
        assert await trusted.kafka_security("bus").token_provider().token() == TOKEN
        untrusted = Settings(**_oauth(sasl_oauthbearer_token_endpoint_url=endpoint.url))
        with pytest.raises(OAuthTokenUnavailable) as caught:
            await untrusted.kafka_security("bus").token_provider().token()
        assert "could not be reached" in str(caught.value) and SECRET not in str(caught.value)


PROXY_PASSWORD = "proxy-pw-5d0c-never-shown"


@pytest.mark.parametrize(("proxy", "named"), [
    ("ftp://hub:" + PROXY_PASSWORD + "@proxy.trust.nhs.uk:3128",
     "S117_KAFKA_SASL_OAUTHBEARER_PROXY: must be an http:// or https:// proxy URL"),
    ("socks5://hub:" + PROXY_PASSWORD + "@proxy.trust.nhs.uk:1080",
     "S117_KAFKA_SASL_OAUTHBEARER_PROXY: must be an http:// or https:// proxy URL"),
    ("proxy.trust.nhs.uk:3128", "S117_KAFKA_SASL_OAUTHBEARER_PROXY: must be an http:// or https:// proxy URL"),
    ("http://hub:" + PROXY_PASSWORD + "@proxy.trust.nhs.uk:99999", "S117_KAFKA_SASL_OAUTHBEARER_PROXY: not a URL"),
    ("http://hub:" + PROXY_PASSWORD + "@:3128", "S117_KAFKA_SASL_OAUTHBEARER_PROXY: not a URL: no host"),
    ("http://hub:" + PROXY_PASSWORD + "@proxy.trust.nhs.uk:3128/proxy.pac",
     "S117_KAFKA_SASL_OAUTHBEARER_PROXY: must have no path, query or fragment"),
    ("http://hub:" + PROXY_PASSWORD + "@proxy.trust.nhs.uk:3128?auth=" + PROXY_PASSWORD,
     "S117_KAFKA_SASL_OAUTHBEARER_PROXY: must have no path, query or fragment"),
    ("https://proxy.trust.nhs.uk:3128/#x", "S117_KAFKA_SASL_OAUTHBEARER_PROXY: must have no path, query or fragment"),
    ("http://hub@proxy.trust.nhs.uk:3128", "S117_KAFKA_SASL_OAUTHBEARER_PROXY: credentials must be user:password@"),
    ("http://:" + PROXY_PASSWORD + "@proxy.trust.nhs.uk:3128",
     "S117_KAFKA_SASL_OAUTHBEARER_PROXY: credentials must be user:password@"),
])
def test_a_bad_proxy_for_the_token_endpoint_is_named_never_its_password(proxy: str, named: str) -> None:
    problem = _problem(**_oauth(sasl_oauthbearer_proxy=proxy))
    assert problem.startswith(named), problem
    assert PROXY_PASSWORD not in problem and proxy not in problem and "proxy.trust" not in problem


def test_a_proxy_setting_without_oauthbearer_or_for_an_outbound_cluster_without_its_protocol_is_named() -> None:
    proxy = f"http://hub:{PROXY_PASSWORD}@proxy.trust.nhs.uk:3128"
    for settings, named in (
            ({"kafka_sasl_oauthbearer_proxy": proxy},
             "S117_KAFKA_SASL_OAUTHBEARER_PROXY: set, but S117_KAFKA_SECURITY_PROTOCOL PLAINTEXT has no SASL"),
            ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
              "kafka_sasl_username": "hub", "kafka_sasl_password": "pw", "kafka_sasl_oauthbearer_proxy": proxy},
             "S117_KAFKA_SASL_OAUTHBEARER_PROXY: set, but S117_KAFKA_SASL_MECHANISM is SCRAM-SHA-512"),
            ({"kafka_outbound_sasl_oauthbearer_proxy": proxy},
             "S117_KAFKA_OUTBOUND_SASL_OAUTHBEARER_PROXY: set without S117_KAFKA_OUTBOUND_SECURITY_PROTOCOL"),
            ({**_oauth(), "kafka_outbound_bootstrap": "k.example:9093",
              **_oauth("kafka_outbound_", sasl_oauthbearer_proxy="gopher://proxy.trust.nhs.uk:70")},
             "S117_KAFKA_OUTBOUND_SASL_OAUTHBEARER_PROXY: must be an http:// or https:// proxy URL")):
        problem = _problem(**settings)
        assert problem.startswith(named), problem
        assert PROXY_PASSWORD not in problem


def test_an_http_proxy_beyond_loopback_with_credentials_is_refused_unless_the_network_is_said_protected() -> None:
    """Proxy-Authorization Basic to an http:// proxy crosses the network in clear, before any tunnel: refused as
    an http:// token endpoint is, unless ALLOW_PLAINTEXT says the network is otherwise protected."""
    proxy = f"http://s117%40hub:{PROXY_PASSWORD}@proxy.trust.nhs.uk:3128"
    problem = _problem(**_oauth(sasl_oauthbearer_proxy=proxy))
    assert problem.startswith("S117_KAFKA_SASL_OAUTHBEARER_PROXY: an http:// proxy beyond loopback with "
                              "credentials would send its password unencrypted"), problem
    assert PROXY_PASSWORD not in problem and "proxy.trust" not in problem and "s117%40hub" not in problem
    allowed = Settings(**_oauth(sasl_oauthbearer_proxy=proxy, allow_plaintext=True))
    assert allowed.kafka_security("bus").oauth_proxy == proxy
    Settings(**_oauth(sasl_oauthbearer_proxy="http://proxy.trust.nhs.uk:3128"))  # no credentials: nothing to leak


def test_a_proxy_for_the_token_endpoint_reaches_the_provider_and_its_password_never_shows() -> None:
    proxy = f"https://s117%40hub:{PROXY_PASSWORD}@proxy.trust.nhs.uk:3128"
    for good in (proxy, "https://proxy.trust.nhs.uk:8443", "http://10.1.2.3:8080/", "http://[fd00::1]:3128",
                 f"http://hub:{PROXY_PASSWORD}@127.0.0.1:3128"):
        Settings(**_oauth(sasl_oauthbearer_proxy=good))
    s = Settings(**_oauth(sasl_oauthbearer_proxy=proxy), kafka_outbound_bootstrap="k.example:9093",
                 **_oauth("kafka_outbound_", sasl_oauthbearer_proxy="https://proxy.council.example:8443"))
    security = s.kafka_security("bus")
    assert security.oauth_proxy == proxy
    provider = security.token_provider()
    assert provider._OAuthBearerTokenProvider__proxy == proxy  # noqa: SLF001 - what it fetches through
    assert provider._proxy_setting == "S117_KAFKA_SASL_OAUTHBEARER_PROXY"  # noqa: SLF001
    outbound = s.kafka_security("outbound").token_provider("outbound")
    assert outbound._OAuthBearerTokenProvider__proxy == "https://proxy.council.example:8443"  # noqa: SLF001
    assert outbound._proxy_setting == "S117_KAFKA_OUTBOUND_SASL_OAUTHBEARER_PROXY"  # noqa: SLF001
    dumped = s.model_dump_json(exclude={"kafka_sasl_oauthbearer_proxy"})
    for shown in (repr(s), str(s), repr(security), str(security), repr(provider), dumped):
        assert PROXY_PASSWORD not in shown
    # The worker processes get the settings as JSON (hub/worker_process.py): the proxy goes with them.
    again = Settings.model_validate_json(s.model_dump_json())
    assert again.kafka_security("bus").oauth_proxy == proxy
    # S117_KAFKA_SASL_OAUTHBEARER_PROXY= left empty (hub.env.example's way): no proxy.
    assert Settings(**_oauth(sasl_oauthbearer_proxy=" ")).kafka_security("bus").oauth_proxy is None
    unset = Settings(**_oauth()).kafka_security("bus").token_provider()
    assert unset._OAuthBearerTokenProvider__proxy is None  # noqa: SLF001


def test_serve_with_a_bad_proxy_exits_2_naming_it_never_its_password(tmp_path: Path) -> None:
    done = _serve(tmp_path, S117_BUS_URL="kafka://127.0.0.1:9", S117_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                  S117_KAFKA_SASL_MECHANISM="OAUTHBEARER", S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL=URL,
                  S117_KAFKA_SASL_OAUTHBEARER_CLIENT_ID="s117-hub", S117_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET=SECRET,
                  S117_KAFKA_SASL_OAUTHBEARER_PROXY=f"http://hub:{PROXY_PASSWORD}@proxy.trust.nhs.uk:3128/wpad.dat")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "s117hub serve: setting S117_KAFKA_SASL_OAUTHBEARER_PROXY: must have no path, query or fragment "
        "(http[s]://[user:password@]host:port)"], done.stderr
    assert PROXY_PASSWORD not in done.stderr + done.stdout and SECRET not in done.stderr + done.stdout
