"""The store over TLS: a real PostgreSQL server with `ssl=on` (its certificate from a CA made here),
reached with libpq's `sslmode` / `sslrootcert` on S117_DATABASE_URL (hub/store/postgres_tls.py), by the
hub as a real process over HTTP, and refused where the server cannot be verified."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from hub.store.db import StoreUnreachable, create_engine
from tests.e2e.conftest import make_clients
from tests.e2e.test_durability import _push_people
from tests.servers import unavailable
from tests.servers.postgres import PostgresServer, ServerUnavailable, create_database, ensure_binaries
from tests.support import HubProcess
from tests.tls_certs import CertAuthority

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL server of its own with TLS on, and the CA that signed its certificate (and one that did not)."""
    pems = tmp_path_factory.mktemp("pg-tls")
    ca, other = CertAuthority.make(pems, "S117 test CA"), CertAuthority.make(pems, "Someone else's CA")
    try:
        server = PostgresServer(ensure_binaries())
    except ServerUnavailable as exc:
        unavailable("PostgreSQL test server", str(exc))
    server.base.chmod(0o755)
    issued = ca.issue(server.base, "pg.test", hosts=("pg.test", "127.0.0.1"))  # not `localhost`
    from tests.servers.postgres import _server_user

    user = _server_user()
    if user is not None:
        for path in (issued.cert, issued.key):
            os.chown(path, user.pw_uid, user.pw_gid)
    server.settings = {"ssl": "on", "ssl_cert_file": str(issued.cert), "ssl_key_file": str(issued.key)}
    try:
        server.start()
    except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        unavailable("PostgreSQL test server (TLS)", str(exc))
    try:
        yield server, ca.pem, other.pem
    finally:
        server.stop()


async def _database(server: PostgresServer, **query: str) -> str:
    url = make_url(await create_database(server.url().render_as_string(hide_password=False)))
    return url.update_query_dict(query).render_as_string(hide_password=False)


async def _over_tls(server: PostgresServer, database: str) -> tuple[int, int]:
    """The hub's connections to `database` now open (other than this one): (over TLS, in all)."""
    conn = await asyncpg.connect(user="postgres", password=server.password, host="127.0.0.1", port=server.port,
                                 database="postgres", ssl=False)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE s.ssl) AS tls, count(*) AS total FROM pg_stat_activity a "
            "JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.backend_type = 'client backend'", database)
    finally:
        await conn.close()
    return row["tls"], row["total"]


async def test_the_hub_keeps_its_register_over_verified_tls(tls_server, tmp_path: Path) -> None:
    server, ca, _ = tls_server
    url = await _database(server, sslmode="verify-full", sslrootcert=str(ca))
    keys = await make_clients(url)
    hub = HubProcess(tmp_path, db_url=url)
    await hub.start(timeout=60)
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            events = await _push_people(http, keys["trust"], people=2, seed=5)
            assert any(e["event_type"] == "s117-entitlement-started" for e in events)
            ready = await http.get("/health/ready")
            assert ready.status_code == 200, ready.text
        tls, total = await _over_tls(server, make_url(url).database)
        assert total > 0 and tls == total, (tls, total)  # every connection of the hub's is encrypted
    finally:
        hub.stop()


async def test_a_server_whose_certificate_does_not_verify_is_refused(tls_server) -> None:
    server, ca, other = tls_server
    # Signed by a CA the hub was not told to trust: refused before anything is sent.
    untrusted = create_engine(await _database(server, sslmode="verify-full", sslrootcert=str(other)))
    try:
        # The store's fault, named by its kind (as /health/ready and the log name it), never the URL.
        with pytest.raises(StoreUnreachable, match="SSLCertVerificationError"):
            async with untrusted.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await untrusted.dispose()
    # The right CA but another name than the certificate's: verify-full refuses, verify-ca takes it.
    for mode, ok in (("verify-full", False), ("verify-ca", True)):
        url = make_url(await _database(server, sslmode=mode, sslrootcert=str(ca))).set(host="localhost")
        engine = create_engine(url.render_as_string(hide_password=False))
        try:
            if ok:
                async with engine.connect() as conn:
                    assert (await conn.execute(text(
                        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))).scalar_one() is True
            else:
                with pytest.raises(StoreUnreachable, match="SSLCertVerificationError"):  # the host name
                    async with engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()
