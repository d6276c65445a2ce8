"""Transport security and authentication of the hub's Kafka clients, and telling a
misconfigured cluster from an unreachable one.

Settings (hub/settings.py, README "Kafka security"): the bus's cluster
(`S117_BUS_URL=kafka://...`) is reached with the `S117_KAFKA_*` set below; the
outbound cluster (`kafka` subscriptions) with the same set, unless
`S117_KAFKA_OUTBOUND_SECURITY_PROTOCOL` is given, when the `S117_KAFKA_OUTBOUND_*`
set is used, whole (a second cluster with its own CA and credentials).

    SECURITY_PROTOCOL  PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL
    SSL_CA_FILE        PEM CA bundle the brokers' certificates must chain to (default: the system's)
    SSL_CERT_FILE      PEM client certificate (mutual TLS), with SSL_KEY_FILE
    SSL_KEY_FILE       its unencrypted PEM private key
    SASL_MECHANISM     PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER (SASL_* protocols)
    SASL_USERNAME      the hub's principal (PLAIN, SCRAM)
    SASL_PASSWORD      its password, or SASL_PASSWORD_FILE: a file holding it (a secret store's mount)
    SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL  OAUTHBEARER: the OAuth 2.0 token endpoint (https://; http:// on
                       loopback, or beyond it with ALLOW_PLAINTEXT) the hub gets access tokens from by the
                       client-credentials grant (hub/bus/kafka_oauth.py), with
    SASL_OAUTHBEARER_CLIENT_ID, SASL_OAUTHBEARER_CLIENT_SECRET or SASL_OAUTHBEARER_CLIENT_SECRET_FILE,
    SASL_OAUTHBEARER_SCOPE, SASL_OAUTHBEARER_AUDIENCE (optional, sent as asked), SASL_OAUTHBEARER_CLIENT_AUTH
                       basic (default) | body (RFC 6749 §2.3.1), SASL_OAUTHBEARER_EXTENSIONS
                       key=value,... SASL extensions (Confluent Cloud: logicalCluster, identityPoolId),
    SASL_OAUTHBEARER_CA_FILE (the token endpoint's CAs), SASL_OAUTHBEARER_PROXY http[s]://[user:password@]host:port
                       the outbound proxy the token requests go through (the environment's HTTPS_PROXY
                       and NO_PROXY are not used)
    ALLOW_PLAINTEXT    production (PostgreSQL) only: PLAINTEXT to brokers beyond loopback is refused
                       at start unless this says the network is otherwise protected (in every mode: an
                       http:// token endpoint beyond loopback, likewise)

`client_options` gives the keyword arguments every AIOKafkaProducer, AIOKafkaConsumer
and AIOKafkaAdminClient of the hub is made with (one ssl.SSLContext, made once by
aiokafka.helpers.create_ssl_context: hostname checked, the CA file's certificates
trusted; with OAUTHBEARER one token provider, whose token all of them share).
`problems` says what is wrong with a set, naming the variable and never its value
(the hub stops at start, exit 2: hub/cli.py).

At run time, a failure of a Kafka client is either a passing one (the broker down, a
network fault: `unreachable`, retried as ever) or a misconfiguration that retrying
will not mend: `authentication` (SASL refused, the mechanism not enabled), `tls` (the
handshake failed: a certificate not trusted, a name not matching, a protocol
mismatch), `authorization` (an ACL refuses the topic, the group or the cluster action).
aiokafka hides the first two behind `KafkaConnectionError("Unable to bootstrap ...")`
(its client logs the cause and tries the next broker), so `cause_of` opens one
connection itself (aiokafka.conn.create_conn, the same options) to learn it. Each
process keeps what each of its Kafka components last met (`FAULTS`): `/health/ready`'s
`waiting` names it (`misconfigured: authentication`), `s117_kafka_misconfigured{cluster,
cause}` is 1 meanwhile (alert S117KafkaMisconfigured) and
`s117_kafka_failures_total{cluster,cause}` counts the failures. Changes are still
accepted and kept in the outbox (or the deliveries queue) and go once it is mended.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from hub.hosts import loopback, without_port
from hub.observability.logging import get_logger

# Not hub.observability.metrics at import: the settings (hub/settings.py) use this module when they are
# read, and `s117hub serve` reads them before it chooses where the metrics live
# (hub/observability/multiproc.py: no metric may exist before).

log = get_logger("hub.bus.kafka_security")

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
# The OAUTHBEARER variables (after the prefix) and the KafkaSecurity fields that hold them.
OAUTH_SETTINGS = (("SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", "oauth_token_url"),
                  ("SASL_OAUTHBEARER_CLIENT_ID", "oauth_client_id"),
                  ("SASL_OAUTHBEARER_CLIENT_SECRET", "oauth_client_secret"),
                  ("SASL_OAUTHBEARER_CLIENT_SECRET_FILE", "oauth_client_secret_file"),
                  ("SASL_OAUTHBEARER_SCOPE", "oauth_scope"), ("SASL_OAUTHBEARER_AUDIENCE", "oauth_audience"),
                  ("SASL_OAUTHBEARER_CLIENT_AUTH", "oauth_client_auth"),
                  ("SASL_OAUTHBEARER_EXTENSIONS", "oauth_extensions"),
                  ("SASL_OAUTHBEARER_CA_FILE", "oauth_ca_file"), ("SASL_OAUTHBEARER_PROXY", "oauth_proxy"))
_EXTENSION_KEY = re.compile(r"[A-Za-z]+")  # RFC 7628 §3.1
_EXTENSION_VALUE = re.compile(r"[\x21-\x2B\x2D-\x7E]+")  # printable, no comma (the list's separator)
CLUSTERS = ("bus", "outbound")
CAUSES = ("authentication", "tls", "authorization")
DIAGNOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class KafkaSecurity:
    """One cluster's security settings. `prefix` is the variables' (`S117_KAFKA_` or
    `S117_KAFKA_OUTBOUND_`), for naming them in problems."""

    prefix: str = "S117_KAFKA_"
    protocol: str = "PLAINTEXT"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    sasl_password_file: Path | None = None
    allow_plaintext: bool = False
    oauth_token_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = field(default=None, repr=False)
    oauth_client_secret_file: Path | None = None
    oauth_scope: str | None = None
    oauth_audience: str | None = None
    oauth_client_auth: str | None = None  # basic (None) or body
    oauth_extensions: str | None = None  # key=value,key=value
    oauth_ca_file: Path | None = None  # PEM CAs the token endpoint's certificate chains to (unset: the system's)
    oauth_proxy: str | None = field(default=None, repr=False)  # http[s]://[user:password@]host:port

    @property
    def oauth(self) -> bool:
        return self.sasl and self.sasl_mechanism == "OAUTHBEARER"

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def problems(self) -> list[str]:
        """What is wrong with this set, one line each naming the variable (never a value)."""
        p = self.prefix
        if self.protocol not in PROTOCOLS:
            return [f"{p}SECURITY_PROTOCOL: must be one of {', '.join(PROTOCOLS)}"]
        out: list[str] = []
        if not self.tls:
            for name, value in (("SSL_CA_FILE", self.ca_file), ("SSL_CERT_FILE", self.cert_file),
                                ("SSL_KEY_FILE", self.key_file)):
                if value is not None:
                    out.append(f"{p}{name}: set, but {p}SECURITY_PROTOCOL {self.protocol} has no TLS "
                               "(SSL or SASL_SSL)")
        else:
            out += self._tls_problems()
        if not self.sasl:
            for name, value in (("SASL_MECHANISM", self.sasl_mechanism), ("SASL_USERNAME", self.sasl_username),
                                ("SASL_PASSWORD", self.sasl_password), ("SASL_PASSWORD_FILE", self.sasl_password_file),
                                *((n, getattr(self, f)) for n, f in OAUTH_SETTINGS)):
                if value is not None:
                    out.append(f"{p}{name}: set, but {p}SECURITY_PROTOCOL {self.protocol} has no SASL "
                               "(SASL_PLAINTEXT or SASL_SSL)")
        else:
            out += self._sasl_problems()
        return out

    def _tls_problems(self) -> list[str]:
        p = self.prefix
        if self.ca_file is not None and (why := _ca_problem(self.ca_file)):
            return [f"{p}SSL_CA_FILE: {why}"]
        if (self.cert_file is None) != (self.key_file is None):
            return [f"{p}SSL_CERT_FILE, {p}SSL_KEY_FILE: a client certificate (mutual TLS) needs both"]
        if self.cert_file is not None and self.key_file is not None:
            for name, path in (("SSL_CERT_FILE", self.cert_file), ("SSL_KEY_FILE", self.key_file)):
                why = _unreadable(path)
                if why:
                    return [f"{p}{name}: {why}"]
            try:
                ssl.create_default_context().load_cert_chain(str(self.cert_file), str(self.key_file),
                                                             password=_no_password)
            except (ssl.SSLError, ValueError, OSError, TypeError):
                return [f"{p}SSL_CERT_FILE, {p}SSL_KEY_FILE: not a PEM certificate and its unencrypted "
                        "private key (or they do not match)"]
        return []

    def _sasl_problems(self) -> list[str]:
        p = self.prefix
        if self.sasl_mechanism is None:
            return [f"{p}SASL_MECHANISM: required with {p}SECURITY_PROTOCOL {self.protocol} "
                    f"(one of {', '.join(MECHANISMS)})"]
        if self.sasl_mechanism not in MECHANISMS:
            return [f"{p}SASL_MECHANISM: must be one of {', '.join(MECHANISMS)}"]
        if self.sasl_mechanism == "OAUTHBEARER":
            return self._oauth_problems()
        out = [f"{p}{name}: set, but {p}SASL_MECHANISM is {self.sasl_mechanism} (only OAUTHBEARER uses it)"
               for name, f in OAUTH_SETTINGS if getattr(self, f) is not None]
        if not self.sasl_username:
            out.append(f"{p}SASL_USERNAME: required with {p}SASL_MECHANISM")
        out += _secret_problems(f"{p}SASL_PASSWORD", self.sasl_password, self.sasl_password_file,
                                f"{p}SASL_MECHANISM")
        return out

    def _oauth_problems(self) -> list[str]:
        p = self.prefix
        out = [f"{p}{name}: set, but {p}SASL_MECHANISM OAUTHBEARER takes no user name or password (the hub "
               f"authenticates to the token endpoint with {p}SASL_OAUTHBEARER_CLIENT_ID and its secret)"
               for name, value in (("SASL_USERNAME", self.sasl_username), ("SASL_PASSWORD", self.sasl_password),
                                   ("SASL_PASSWORD_FILE", self.sasl_password_file)) if value is not None]
        url = f"{p}SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"
        if not self.oauth_token_url:
            out.append(f"{url}: required with {p}SASL_MECHANISM OAUTHBEARER (the OAuth 2.0 token endpoint)")
        else:
            why = _token_url_problem(self.oauth_token_url)
            if why:
                out.append(f"{url}: {why}")
            elif self.token_url_in_clear() and not self.allow_plaintext:
                out.append(f"{url}: http:// beyond loopback would send the client secret and the access token "
                           f"unencrypted: use https://, or {p}ALLOW_PLAINTEXT=true if the network to the token "
                           "endpoint is otherwise protected")
        if not self.oauth_client_id:
            out.append(f"{p}SASL_OAUTHBEARER_CLIENT_ID: required with {p}SASL_MECHANISM OAUTHBEARER")
        out += _secret_problems(f"{p}SASL_OAUTHBEARER_CLIENT_SECRET", self.oauth_client_secret,
                                self.oauth_client_secret_file, f"{p}SASL_MECHANISM OAUTHBEARER")
        if self.oauth_client_auth is not None and self.oauth_client_auth not in ("basic", "body"):
            out.append(f"{p}SASL_OAUTHBEARER_CLIENT_AUTH: must be basic (HTTP Basic, the default) or body "
                       "(the client id and secret in the form)")
        if self.oauth_extensions is not None:
            try:
                self.extensions()
            except ValueError as exc:
                out.append(f"{p}SASL_OAUTHBEARER_EXTENSIONS: {exc}")
        if self.oauth_ca_file is not None:
            ca = f"{p}SASL_OAUTHBEARER_CA_FILE"
            if why := _ca_problem(self.oauth_ca_file):
                out.append(f"{ca}: {why}")
            elif self.oauth_token_url and not self.oauth_token_url.lower().startswith("https:"):
                out.append(f"{ca}: set, but {url} is not https:// (the CA checks the token endpoint's "
                           "certificate)")
        if self.oauth_proxy is not None:
            if why := _proxy_problem(self.oauth_proxy):
                out.append(f"{p}SASL_OAUTHBEARER_PROXY: {why}")
            elif _proxy_credentials_in_clear(self.oauth_proxy) and not self.allow_plaintext:
                out.append(f"{p}SASL_OAUTHBEARER_PROXY: an http:// proxy beyond loopback with credentials would "
                           "send its password unencrypted (Proxy-Authorization Basic): use an https:// proxy, "
                           f"or {p}ALLOW_PLAINTEXT=true if the network to the proxy is otherwise protected")
        return out

    def oauth_verify(self) -> ssl.SSLContext | None:
        """The TLS context the token endpoint is reached with: its CA file's (host names checked), or None
        (the system's CAs: hub/bus/kafka_oauth.py)."""
        if self.oauth_ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.oauth_ca_file))

    def token_url_in_clear(self) -> bool:
        """An http:// token endpoint beyond loopback (its secret and tokens cross the network in clear)."""
        if not self.oauth or not self.oauth_token_url:
            return False
        try:
            parts = urlsplit(self.oauth_token_url)
            return parts.scheme.lower() == "http" and not loopback(parts.hostname or "")
        except ValueError:
            return False

    def extensions(self) -> dict[str, str]:
        """SASL_OAUTHBEARER_EXTENSIONS as a dict, or ValueError saying what is wrong (never a value)."""
        out: dict[str, str] = {}
        for n, item in enumerate((self.oauth_extensions or "").split(","), 1):
            key, eq, value = item.strip().partition("=")
            if not eq or not _EXTENSION_KEY.fullmatch(key) or not _EXTENSION_VALUE.fullmatch(value):
                raise ValueError(f"item {n} is not key=value (a key of letters, a value of printable characters "
                                 "without a comma or space)")
            if key == "auth" or key in out:
                raise ValueError(f"item {n}: its key is {'reserved' if key == 'auth' else 'given twice'}")
            out[key] = value
        return out

    def client_secret(self) -> str | None:
        if self.oauth_client_secret_file is not None:
            return _read_secret(self.oauth_client_secret_file)
        return self.oauth_client_secret

    def token_provider(self, cluster: str = "bus") -> Any:
        """The OAUTHBEARER token provider of this cluster's clients (hub/bus/kafka_oauth.py)."""
        from hub.bus.kafka_oauth import OAuthBearerTokenProvider

        assert self.oauth_token_url and self.oauth_client_id
        return OAuthBearerTokenProvider(
            token_url=self.oauth_token_url, client_id=self.oauth_client_id, client_secret=self.client_secret() or "",
            scope=self.oauth_scope, audience=self.oauth_audience, client_auth=self.oauth_client_auth or "basic",
            extensions=self.extensions() if self.oauth_extensions else None,
            setting=f"{self.prefix}SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", cluster=cluster, verify=self.oauth_verify(),
            proxy=self.oauth_proxy, proxy_setting=f"{self.prefix}SASL_OAUTHBEARER_PROXY")

    def plaintext_refusal(self, bootstrap: str) -> str | None:
        """Production: why PLAINTEXT to these brokers is refused, or None (TLS, loopback, or allowed)."""
        if self.tls or self.allow_plaintext:
            return None
        far = [h for h in _hosts(bootstrap) if not loopback(h)]
        if not far:
            return None
        return (f"{self.prefix}SECURITY_PROTOCOL: {self.protocol} to brokers beyond loopback would send health and "
                f"care data unencrypted: set SSL or SASL_SSL (with {self.prefix}SSL_CA_FILE), or "
                f"{self.prefix}ALLOW_PLAINTEXT=true if the network to the brokers is otherwise protected")

    def password(self) -> str | None:
        if self.sasl_password_file is not None:
            return _read_secret(self.sasl_password_file)
        return self.sasl_password

    def client_options(self, cluster: str = "bus") -> dict[str, Any]:
        """The aiokafka keyword arguments for every client of this cluster (call once: it makes the
        SSL context, and with OAUTHBEARER the token provider they all share)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=str(self.ca_file) if self.ca_file else None,
                certfile=str(self.cert_file) if self.cert_file else None,
                keyfile=str(self.key_file) if self.key_file else None)
        if self.oauth:
            options.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=self.token_provider(cluster))
        elif self.sasl:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.password())
        return options


def _split(url: str) -> SplitResult | None:
    """`url`'s parts, or None when it is not a URL (a port that is not one included)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not one
    except ValueError:
        return None
    return parts


def _token_url_problem(url: str) -> str | None:
    if (parts := _split(url)) is None:
        return "not a URL"
    if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
        return "must be an absolute https:// URL"
    if parts.username is not None or parts.password is not None:
        return ("must not hold credentials (user:password@): the hub authenticates with "
                "SASL_OAUTHBEARER_CLIENT_ID and its secret")
    if parts.fragment:
        return "must not have a fragment (#...)"
    return None


def _proxy_problem(url: str) -> str | None:
    """Why an outbound proxy's URL cannot be used, or None. Never quotes it (it may hold a password)."""
    if (parts := _split(url)) is None:
        return "not a URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must be an http:// or https:// proxy URL (http[s]://[user:password@]host:port)"
    if not parts.hostname:
        return "not a URL: no host (http[s]://[user:password@]host:port)"
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in url or "#" in url:
        return "must have no path, query or fragment (http[s]://[user:password@]host:port)"
    if (parts.username is not None or parts.password is not None) and not (parts.username and parts.password):
        return "credentials must be user:password@, both (percent-encoded), or none"
    return None


def _proxy_credentials_in_clear(url: str) -> bool:
    """An http:// proxy beyond loopback given a password (sent in clear Basic before any tunnel)."""
    parts = urlsplit(url)
    return parts.scheme.lower() == "http" and parts.password is not None and not loopback(parts.hostname or "")


def _no_password() -> str:
    raise ValueError("encrypted key")


def _ca_problem(path: Path) -> str | None:
    """Why a CA bundle setting's file cannot be used (unreadable, or no PEM certificate in it), or None."""
    why = _unreadable(path)
    if why is None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(path))
        except (ssl.SSLError, ValueError, OSError):
            why = "holds no PEM certificate that parses"
    return why


def _secret_problems(name: str, value: str | None, file: Path | None, required_with: str) -> list[str]:
    """A secret given as `name` or in the file `name`_FILE: one, not both, a file readable and not empty,
    and one of them (`required_with` says what needs it). Names the variable, never the value."""
    if value is not None and file is not None:
        return [f"{name}, {name}_FILE: give one, not both"]
    if file is not None:
        why = _unreadable(file)
        if why is None and not _read_secret(file):
            why = "is empty"
        return [f"{name}_FILE: {why}"] if why else []
    if not value:
        return [f"{name}: required with {required_with} (or {name}_FILE)"]
    return []


def _unreadable(path: Path) -> str | None:
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a file"
    if not os.access(path, os.R_OK):
        return "not readable by the hub"
    return None


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip("\r\n")
    except (OSError, UnicodeDecodeError):
        return ""


def _hosts(bootstrap: str) -> list[str]:
    hosts = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        hosts.append(without_port(item))  # [::1]:9092 too
    return hosts


# --------------------------------------------------------------------------- at run time


def misconfiguration(exc: BaseException | None) -> str | None:
    """The misconfiguration `exc` (or what caused it) shows, or None for anything else."""
    from aiokafka import errors as e

    auth = (e.SaslAuthenticationFailed, e.AuthenticationFailedError, e.AuthenticationMethodNotSupported,
            e.UnsupportedSaslMechanismError, e.IllegalSaslStateError)
    authz = (e.TopicAuthorizationFailedError, e.GroupAuthorizationFailedError, e.ClusterAuthorizationFailedError,
             e.TransactionalIdAuthorizationFailed)
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, auth):
            return "authentication"
        if isinstance(exc, authz):
            return "authorization"
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return "tls"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


async def diagnose(bootstrap: str, options: Mapping[str, Any], timeout: float = DIAGNOSE_TIMEOUT) -> str | None:
    """Open one connection to each broker named (as aiokafka's clients do, TLS and SASL
    included) and say what misconfiguration refused it, or None (answered, or unreachable)."""
    from aiokafka.conn import create_conn

    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            continue
        conn = None
        try:
            conn = await asyncio.wait_for(create_conn(
                host, int(port), client_id="s117-hub-diagnose", request_timeout_ms=int(timeout * 1000),
                ssl_context=options.get("ssl_context"), security_protocol=options.get("security_protocol", "PLAINTEXT"),
                sasl_mechanism=options.get("sasl_mechanism", "PLAIN"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
                sasl_oauth_token_provider=options.get("sasl_oauth_token_provider")), timeout)
        except Exception as exc:  # noqa: BLE001 - classified; anything else is "unreachable"
            cause = misconfiguration(exc)
            if cause is not None:
                return cause
            continue
        finally:
            if conn is not None:
                conn.close()
        return None
    return None


async def cause_of(exc: BaseException, bootstrap: str | None, options: Mapping[str, Any]) -> str | None:
    """The misconfiguration behind a failure of a Kafka client, or None (a passing failure)."""
    cause = misconfiguration(exc)
    if cause is not None or bootstrap is None:
        return cause
    from aiokafka.errors import KafkaConnectionError

    if isinstance(exc, KafkaConnectionError | OSError | TimeoutError):
        # One diagnosis a cluster every DIAGNOSE_REUSE seconds, however many clients fail meanwhile.
        now = time.monotonic()
        known = _diagnosed.get(bootstrap)
        if known is not None and now - known[0] < DIAGNOSE_REUSE:
            return known[1]
        try:
            cause = await diagnose(bootstrap, options)
        except Exception:  # noqa: BLE001 - a diagnosis never fails the caller
            cause = None
        _diagnosed[bootstrap] = (time.monotonic(), cause)
        return cause
    return None


DIAGNOSE_REUSE = 2.0
_diagnosed: dict[str, tuple[float, str | None]] = {}


async def note_failure(cluster: str, component: str, exc: BaseException, bootstrap: str | None,
                       options: Mapping[str, Any]) -> str | None:
    """A Kafka client of `cluster` failed: its misconfiguration (or None), recorded in FAULTS. A failure
    that is not Kafka's (the store's, a bug) is neither counted nor diagnosed."""
    from aiokafka.errors import KafkaError

    if not isinstance(exc, KafkaError | OSError | TimeoutError):
        return None
    cause = await cause_of(exc, bootstrap, options)
    FAULTS.failed(cluster, component, cause, type(exc).__name__)
    return cause


class Faults:
    """This process's Kafka components and the misconfiguration each last met (none: working,
    or only unreachable)."""

    def __init__(self) -> None:
        self._faults: dict[tuple[str, str], str] = {}

    def failed(self, cluster: str, component: str, cause: str | None, exc_type: str) -> None:
        from hub.observability import metrics

        metrics.KAFKA_FAILURES.labels(cluster=cluster, cause=cause or "unreachable").inc()
        key = (cluster, component)
        before = self._faults.get(key)
        if cause is None:
            self._faults.pop(key, None)
        else:
            self._faults[key] = cause
            if before != cause:
                log.error("kafka misconfigured: not retried into working; fix the setting", cluster=cluster,
                          channel=component, error_kind=f"misconfigured: {cause}", exc_type=exc_type)
        self._show(cluster)

    def succeeded(self, cluster: str, component: str) -> None:
        if self._faults.pop((cluster, component), None) is not None:
            log.info("kafka reachable and accepted again", cluster=cluster, channel=component)
            self._show(cluster)

    def cause(self, cluster: str) -> str | None:
        causes = sorted({c for (cl, _), c in self._faults.items() if cl == cluster})
        return causes[0] if causes else None

    def _show(self, cluster: str) -> None:
        from hub.observability import metrics

        now = {c for (cl, _), c in self._faults.items() if cl == cluster}
        for cause in CAUSES:
            metrics.KAFKA_MISCONFIGURED.labels(cluster=cluster, cause=cause).set(1 if cause in now else 0)

    def waiting(self) -> dict[str, str]:
        """`/health/ready`'s `waiting` entries: every cluster misconfigured in this process or (with the
        workers apart) in any live one."""
        out: dict[str, str] = {}
        shared = _shared_causes()
        for cluster in CLUSTERS:
            cause = self.cause(cluster) or shared.get(cluster)
            if cause is not None:
                out["bus" if cluster == "bus" else "kafka_outbound"] = (
                    f"misconfigured: {cause} (the Kafka {'bus' if cluster == 'bus' else 'outbound cluster'} refuses "
                    "the hub: see the log's 'kafka misconfigured'; changes are accepted and kept, and sent once the "
                    "settings are fixed)")
        return out

    def clear(self) -> None:
        for cluster in CLUSTERS:
            for key in [k for k in self._faults if k[0] == cluster]:
                self._faults.pop(key)
            self._show(cluster)


FAULTS = Faults()


def _shared_causes() -> dict[str, str]:
    """With the workers apart (prometheus_client's multiprocess mode), the misconfigurations the
    other live processes show (their `s117_kafka_misconfigured` gauges)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return {}
    import glob

    from prometheus_client.multiprocess import MultiProcessCollector

    files = glob.glob(os.path.join(directory, "gauge_livemax_*.db"))
    out: dict[str, str] = {}
    try:
        for metric in MultiProcessCollector.merge(files, accumulate=False):
            if metric.name != "s117_kafka_misconfigured":
                continue
            for sample in metric.samples:
                if sample.value >= 1 and sample.labels.get("cluster") in CLUSTERS:
                    cause = sample.labels.get("cause", "")
                    if cause in CAUSES:
                        out[sample.labels["cluster"]] = min(out.get(sample.labels["cluster"], cause), cause)
    except (OSError, ValueError, KeyError):
        return {}
    return out
