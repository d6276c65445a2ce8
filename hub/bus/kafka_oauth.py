"""SASL/OAUTHBEARER for the hub's Kafka clients: an access token from an OAuth 2.0 token endpoint by
the client-credentials grant (RFC 6749 §4.4), as Confluent Cloud, Azure Event Hubs and Strimzi with
an identity provider ask (`S117_KAFKA_SASL_MECHANISM=OAUTHBEARER`, hub/bus/kafka_security.py; README
"Kafka security").

`OAuthBearerTokenProvider` is aiokafka's `AbstractTokenProvider`: every connection a client opens
(and opens again, when the broker ends a session whose token ran out) awaits `token()`. One provider
serves every client of one cluster in a process (kafka_security.KafkaSecurity.client_options, called
once a cluster at start), so the clients share one token:

* fetched once and kept; fetched again when less than a fifth of its life is left (`expires_in`; at
  least half a minute before it ends where its life allows), so a connection opened near the end never
  carries a token the broker is about to refuse. If that early fetch fails, the token still in force
  is used until it ends;
* fetched by one caller at a time (the others wait for its answer), each fetch bounded
  (`TOKEN_TIMEOUT` in all, connecting and reading; an answer over `MAX_ANSWER_BYTES` is refused);
  after a failure the same error is given again for `RETRY_AFTER` seconds rather than asking again
  at every one of aiokafka's reconnections;
* the client authenticated per RFC 6749 §2.3.1: HTTP Basic (the default; id and secret
  form-urlencoded first, as that section says) or both in the form body (`client_auth="body"`).

A failure is a KafkaError, so aiokafka's clients treat it as a connection that failed (logged,
retried) and kafka_security classifies it: `OAuthTokenRefused` (an AuthenticationFailedError:
`misconfigured: authentication`) when the endpoint refused the client or answered what is not a
token (a 4xx but 408/429, a redirect, a 2xx without a usable `access_token`): retrying will not mend
it; `OAuthTokenUnavailable` (unreachable, retried as ever) for a timeout, a network fault, a 5xx,
408 or 429. Its text names the setting, the HTTP status and the OAuth `error` code (RFC 6749 §5.2)
only: never the token, the secret, the client id or the answer's `error_description`.

Through an outbound HTTP(S) proxy (`proxy`: `S117_KAFKA_SASL_OAUTHBEARER_PROXY`, an NHS network's way
to an identity provider): an https:// endpoint through a CONNECT tunnel (TLS to the endpoint inside
it, verified as without the proxy: the CA file's or the system's CAs), an http:// one forwarded; the
proxy's `user:password@` sent as Proxy-Authorization Basic; an https:// proxy's own certificate
verified with the same CAs. The proxy's refusal (its answer to CONNECT, or a 407 forwarding) is said
under the proxy's setting with its HTTP status only, classed as the endpoint's answers are (407, 403:
refused; 5xx, 408, 429: unavailable: `S117_KAFKA_SASL_OAUTHBEARER_PROXY: the proxy answered 407`),
and a proxy that cannot be reached is an outage; never the proxy's URL or credentials. (A TLS
handshake that fails is said as the token endpoint's, as without a proxy, even when it was an
https:// proxy's own.) The environment's HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY are not
used (httpx's `trust_env` off, as for the CAs and .netrc): the token's way is what the settings say.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import ssl
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote_plus

import httpx
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import AuthenticationFailedError, KafkaError

from hub.observability.logging import get_logger

log = get_logger("hub.bus.kafka_oauth")

TOKEN_TIMEOUT = 10.0  # seconds for one fetch, all told
MAX_ANSWER_BYTES = 64 * 1024
RETRY_AFTER = 2.0  # seconds a failure is given again without asking the endpoint
DEFAULT_LIFETIME = 300.0  # an answer without `expires_in` (only RECOMMENDED by RFC 6749 §5.1)
REFRESH_SHARE = 0.2  # fetch again once less than this share of a token's life is left ...
REFRESH_AT_LEAST = 30.0  # ... or less than this many seconds, if that is at most half its life
CLIENT_AUTH = ("basic", "body")
# RFC 6750 §2.1 b64token: what may follow "Bearer " (a JWT is one).
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 6749 §5.2: the `error` code's characters; anything else is not said.
_ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5B\x5D-\x7E]{1,64}")


class OAuthTokenError(KafkaError):
    """No token from the endpoint. The text names the setting and what was wrong, never a secret."""

    retriable = True


class OAuthTokenUnavailable(OAuthTokenError):
    """The endpoint could not be reached or failed (timeout, network, 5xx, 408, 429): an outage."""


class OAuthTokenRefused(OAuthTokenError, AuthenticationFailedError):
    """The endpoint refused the hub or answered no token: a misconfiguration (kafka_security `authentication`)."""

    retriable = False


class OAuthBearerTokenProvider(AbstractTokenProvider):
    """Access tokens of one cluster's clients; see the module doc. `setting` names the token endpoint's
    variable in errors (`S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL`); `transport` and `clock` are
    for the unit tests."""

    def __init__(self, *, token_url: str, client_id: str, client_secret: str, scope: str | None = None,
                 audience: str | None = None, client_auth: str = "basic",
                 extensions: Mapping[str, str] | None = None, setting: str = "token endpoint",
                 cluster: str = "bus", timeout: float = TOKEN_TIMEOUT, verify: ssl.SSLContext | None = None,
                 proxy: str | None = None, proxy_setting: str = "proxy",
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if client_auth not in CLIENT_AUTH:
            raise ValueError(f"client_auth: one of {', '.join(CLIENT_AUTH)}")
        self._url = token_url
        self._client_id = client_id
        self.__secret = client_secret
        self._scope = scope
        self._audience = audience
        self._client_auth = client_auth
        self._extensions = dict(extensions or {})
        self._setting = setting
        self._cluster = cluster
        self._timeout = timeout
        self._verify = verify
        self.__proxy = proxy  # may hold the proxy's password
        self._proxy_setting = proxy_setting
        self._transport = transport
        self._clock = clock
        self._lock: asyncio.Lock | None = None
        self._token: str | None = None
        self._expires = 0.0  # clock time the token ends
        self._refresh = 0.0  # clock time it is fetched again
        self._failure: OAuthTokenError | None = None
        self._failed_at = 0.0
        self.fetches = 0  # answers asked for (tests, and the log's count)

    def __repr__(self) -> str:  # never the secret or the token
        return f"OAuthBearerTokenProvider(cluster={self._cluster!r}, client_auth={self._client_auth!r})"

    def extensions(self) -> dict[str, str]:
        """SASL extensions sent beside the token (RFC 7628 §3.1; Confluent Cloud's logicalCluster and
        identityPoolId)."""
        return dict(self._extensions)

    async def token(self) -> str:
        now = self._clock()
        if self._token is not None and now < self._refresh:
            return self._token
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = self._clock()
            if self._token is not None and now < self._refresh:  # another caller fetched it meanwhile
                return self._token
            if self._failure is not None and now - self._failed_at < RETRY_AFTER:
                return self._still_in_force(now, self._failure)
            try:
                token, lifetime = await self._fetch()
            except OAuthTokenError as exc:
                if self._failure is None or str(self._failure) != str(exc):  # once while it lasts
                    refused = isinstance(exc, OAuthTokenRefused)
                    log.warning("kafka oauth token refused" if refused else "kafka oauth token endpoint unavailable",
                                cluster=self._cluster, problem=str(exc), exc_type=type(exc).__name__,
                                error_kind="misconfigured: authentication" if refused else "unreachable")
                self._failure, self._failed_at = exc, self._clock()
                return self._still_in_force(self._clock(), exc)
            now = self._clock()
            self._token, self._failure = token, None
            self._expires = now + lifetime
            self._refresh = now + lifetime - refresh_margin(lifetime)
            log.info("kafka oauth token fetched", cluster=self._cluster, expires_in=round(lifetime),
                     count=self.fetches)
            return token

    def _still_in_force(self, now: float, exc: OAuthTokenError) -> str:
        """The token fetched before, if it has not ended (an early fetch failed), else `exc` raised."""
        if self._token is not None and now < self._expires:
            return self._token
        raise exc

    async def _fetch(self) -> tuple[str, float]:
        """One token and its lifetime in seconds, or OAuthTokenError."""
        self.fetches += 1
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        if self._audience:
            form["audience"] = self._audience
        headers = {"Accept": "application/json"}
        if self._verify is None and self._url.startswith("https:"):
            self._verify = ssl.create_default_context()  # the system's CAs, host names checked
        if self._client_auth == "basic":
            pair = f"{quote_plus(self._client_id)}:{quote_plus(self.__secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            form.update(client_id=self._client_id, client_secret=self.__secret)
        proxy = None
        if self.__proxy is not None:
            https = self.__proxy.lower().startswith("https:")
            if https and self._verify is None:
                self._verify = ssl.create_default_context()
            proxy = httpx.Proxy(self.__proxy, ssl_context=self._verify if https else None)
        try:
            async with asyncio.timeout(self._timeout):
                # trust_env off: no HTTPS_PROXY/NO_PROXY, SSL_CERT_FILE or .netrc from the environment.
                async with httpx.AsyncClient(
                        timeout=self._timeout, follow_redirects=False, trust_env=False,
                        verify=self._verify if self._verify is not None else True, proxy=proxy,
                        transport=self._transport) as http, \
                        http.stream("POST", self._url, data=form, headers=headers) as answer:
                    status = answer.status_code
                    if status == 407 and proxy is not None:  # forwarded (an http:// endpoint): the proxy's
                        raise self._by_proxy(status)
                    body = bytearray()
                    async for chunk in answer.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_ANSWER_BYTES:
                            raise self._refused(f"answered {status} with more than {MAX_ANSWER_BYTES} bytes")
        except TimeoutError:
            raise self._unavailable(f"did not answer within {self._timeout:g}s") from None
        except httpx.ProxyError as exc:  # CONNECT answered other than 2xx: "407 Proxy Authentication Required"
            said = re.match(r"[1-5][0-9][0-9](?![0-9])", str(exc))
            raise self._by_proxy(int(said.group()) if said else None) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if proxy is not None and not _tls_failure(exc):  # the proxy's TCP (or TLS) did not answer
                raise OAuthTokenUnavailable(f"{self._proxy_setting}: the proxy could not be reached "
                                            f"({type(exc).__name__})") from None
            raise self._unavailable(f"could not be reached ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:  # the class only: its text may carry the URL
            raise self._unavailable(f"could not be reached ({type(exc).__name__})") from None
        except OSError as exc:
            raise self._unavailable(f"could not be reached ({type(exc).__name__})") from None
        return self._read(status, bytes(body))

    def _read(self, status: int, body: bytes) -> tuple[str, float]:
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not 200 <= status < 300:
            code = answer.get("error") if isinstance(answer, dict) else None
            said = f" ({code})" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
            why = f"answered {status}{said}"
            if status >= 500 or status in (408, 429):
                raise self._unavailable(why)
            raise self._refused(why)
        if not isinstance(answer, dict):
            raise self._refused(f"answered {status} with no JSON object")
        token = answer.get("access_token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise self._refused(f"answered {status} without a usable access_token")
        expires_in = answer.get("expires_in")
        if expires_in is None:
            return token, DEFAULT_LIFETIME
        try:
            lifetime = float(expires_in)  # a number, or (some providers) its digits as a string
        except (TypeError, ValueError):
            lifetime = math.nan
        if isinstance(expires_in, bool) or not math.isfinite(lifetime) or lifetime <= 0:
            raise self._refused(f"answered {status} with an expires_in that is not a positive number")
        return token, lifetime

    def _refused(self, why: str) -> OAuthTokenRefused:
        return OAuthTokenRefused(f"{self._setting}: the token endpoint {why}")

    def _unavailable(self, why: str) -> OAuthTokenUnavailable:
        return OAuthTokenUnavailable(f"{self._setting}: the token endpoint {why}")

    def _by_proxy(self, status: int | None) -> OAuthTokenError:
        """The proxy refused to carry the request: its status only (classed as the endpoint's answers)."""
        if status is None:
            return OAuthTokenUnavailable(f"{self._proxy_setting}: the proxy refused the tunnel")
        said = f"{self._proxy_setting}: the proxy answered {status}"
        if status >= 500 or status in (408, 429):
            return OAuthTokenUnavailable(said)
        return OAuthTokenRefused(said)


def _tls_failure(exc: BaseException) -> bool:
    """A TLS handshake's failure among `exc`'s causes (httpx says it as a ConnectError)."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 8:
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            return True
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return False


def refresh_margin(lifetime: float) -> float:
    """How long before a token of `lifetime` seconds ends it is fetched again."""
    return max(REFRESH_SHARE * lifetime, min(REFRESH_AT_LEAST, lifetime / 2))
