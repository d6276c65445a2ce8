"""TLS to PostgreSQL, as libpq's connection parameters say it.

An operator writes the store's URL as for any PostgreSQL client (psql,
pg_dump): `postgresql+asyncpg://hub@db.example.nhs.uk/s117?sslmode=verify-full
&sslrootcert=/etc/s117hub/pg-ca.pem` (with `sslcert` and `sslkey` for a client
certificate). asyncpg takes none of these four as connect arguments (it reads
`sslrootcert` only from a DSN or PGSSLROOTCERT, and SQLAlchemy hands the URL's
query to it as keyword arguments, where `sslrootcert` is refused), so the hub
reads them off the URL here and gives asyncpg the one `ssl` argument it takes:

- `verify-full`: encrypted; the server's certificate must chain to
  `sslrootcert` (the system's trusted CAs when not given) and name the host;
- `verify-ca`: the same, without the host name check;
- `require`: encrypted, the server not verified (libpq's meaning);
- `prefer`, `allow`, `disable`: as libpq (the first two may fall back to
  plain text).

A store beyond this machine must be reached with `verify-ca` or `verify-full`
(`Settings` refuses anything else at start), unless the operator says the
network is otherwise protected (`S117_DATABASE_ALLOW_UNVERIFIED=true`): health
and care records cross that connection, and `require` alone lets anyone on the
path stand in for the server and read them.
"""

from __future__ import annotations

from hub.hosts import loopback, without_port
import ssl
from typing import Any

from sqlalchemy.engine import URL

MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
VERIFIED = ("verify-ca", "verify-full")
_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


class StoreTlsError(ValueError):
    """A TLS parameter of the store's URL the hub cannot use; the message names the
    parameter, never its value or the URL (which may hold the password)."""


def _one(url: URL, name: str) -> str | None:
    value = url.query.get(name)
    if isinstance(value, tuple):
        raise StoreTlsError(f"database_url: {name} is given more than once")
    return value


def tls_mode(url: URL) -> str | None:
    """The connection's TLS mode as the URL gives it (`sslmode`, or asyncpg's own `ssl`), None if
    neither: asyncpg then tries TLS and falls back to plain text (`prefer`), unverified."""
    mode = _one(url, "sslmode") or _one(url, "ssl")
    return mode


def _context(mode: str, rootcert: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=rootcert if mode in VERIFIED else None)
    except (OSError, ssl.SSLError) as exc:
        raise StoreTlsError(f"database_url: sslrootcert cannot be read as PEM certificates ({type(exc).__name__})") \
            from None
    if mode not in VERIFIED:  # require: encrypted, the server not verified (libpq)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = mode == "verify-full"
    if cert is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise StoreTlsError(f"database_url: sslcert / sslkey cannot be read as a PEM certificate and its key "
                                f"({type(exc).__name__})") from None
    return ctx


def connect_tls(url: URL) -> tuple[URL, dict[str, Any]]:
    """`url` without libpq's TLS parameters, and the connect arguments (`ssl`) that say the same to
    asyncpg. A URL with none of them is given back as it is, with no arguments."""
    given = {name: _one(url, name) for name in _PARAMS if name in url.query}
    if not given:
        return url, {}
    if "ssl" in url.query:
        raise StoreTlsError("database_url: give sslmode (libpq's) or ssl (asyncpg's), not both")
    mode = given.get("sslmode") or "prefer"
    if mode not in MODES:
        raise StoreTlsError(f"database_url: sslmode must be one of {', '.join(MODES)}")
    cert, key = given.get("sslcert"), given.get("sslkey")
    if (cert is None) != (key is None):
        raise StoreTlsError("database_url: sslcert and sslkey go together")
    rest = url.set(query={k: v for k, v in url.query.items() if k not in _PARAMS})
    if mode == "disable":
        return rest, {"ssl": False}
    if mode in ("allow", "prefer") and cert is None:
        return rest, {"ssl": mode}
    return rest, {"ssl": _context(mode, given.get("sslrootcert"), cert, key)}


def _local(host: str) -> bool:
    return not host or host.startswith("/") or loopback(host)  # a Unix socket's directory, or loopback


def on_this_machine(url: URL) -> bool:
    """True when the store is reached over a Unix socket or loopback: no network between. A URL naming
    several servers (`?host=a:5432&host=b:5432`, with `target_session_attrs` for a failover pair) is
    on this machine only if every one is."""
    hosts = url.query.get("host") or ()
    hosts = [hosts] if isinstance(hosts, str) else list(hosts)
    if url.host:
        hosts.append(url.host)
    return all(_local(without_port(h)) for h in hosts)


def check(url: URL, allow_unverified: bool) -> None:
    """At start: the TLS parameters are usable, and a store beyond this machine is verified."""
    connect_tls(url)  # the files read, the mode known
    if url.get_backend_name() != "postgresql" or on_this_machine(url) or allow_unverified:
        return
    if tls_mode(url) not in VERIFIED:
        raise StoreTlsError(
            "database_url: a PostgreSQL store beyond this machine must be reached with sslmode=verify-full "
            "(or verify-ca) and sslrootcert=<its CA file>: health and care records cross that connection; set "
            "S117_DATABASE_ALLOW_UNVERIFIED=true only where the network between is otherwise protected")
