"""The store over TLS: a real PostgreSQL server with `ssl=on` (its certificate from a CA made here),
reached with libpq's `sslmode` / `sslrootcert` on S117_DATABASE_URL (hub/store/postgres_tls.py), by the
hub as a real process over HTTP, and refused where the server cannot be verified."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text
from sqlalchemy.engine import make_url

from hub.store.db import StoreUnreachable, create_engine
from tests.e2e.conftest import make_clients
from tests.e2e.test_durability import _push_people
from tests.servers import unavailable
from tests.servers.postgres import PostgresServer, ServerUnavailable, create_database, ensure_binaries
from tests.support import HubProcess

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key, now = _key(), datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _server_cert(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> tuple[bytes, bytes]:
    """A server certificate naming 127.0.0.1 and pg.test, not `localhost`."""
    key, now = _key(), datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("pg.test")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("pg.test"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL server of its own with TLS on, and the CA that signed its certificate (and one that did not)."""
    pems = tmp_path_factory.mktemp("pg-tls")
    ca_key, ca = _ca("S117 test CA")
    _, other = _ca("Someone else's CA")
    (pems / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (pems / "other-ca.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    try:
        server = PostgresServer(ensure_binaries())
    except ServerUnavailable as exc:
        unavailable("PostgreSQL test server", str(exc))
    cert, key = _server_cert(ca_key, ca)
    server.base.chmod(0o755)
    (server.base / "server.crt").write_bytes(cert)
    (server.base / "server.key").write_bytes(key)
    (server.base / "server.key").chmod(0o600)
    from tests.servers.postgres import _server_user

    user = _server_user()
    if user is not None:
        for name in ("server.crt", "server.key"):
            os.chown(server.base / name, user.pw_uid, user.pw_gid)
    server.settings = {"ssl": "on", "ssl_cert_file": str(server.base / "server.crt"),
                       "ssl_key_file": str(server.base / "server.key")}
    try:
        server.start()
    except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        unavailable("PostgreSQL test server (TLS)", str(exc))
    try:
        yield server, pems
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
    server, pems = tls_server
    url = await _database(server, sslmode="verify-full", sslrootcert=str(pems / "ca.pem"))
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
    server, pems = tls_server
    # Signed by a CA the hub was not told to trust: refused before anything is sent.
    untrusted = create_engine(await _database(server, sslmode="verify-full", sslrootcert=str(pems / "other-ca.pem")))
    try:
        # The store's fault, named by its kind (as /health/ready and the log name it), never the URL.
        with pytest.raises(StoreUnreachable, match="SSLCertVerificationError"):
            async with untrusted.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await untrusted.dispose()
    # The right CA but another name than the certificate's: verify-full refuses, verify-ca takes it.
    for mode, ok in (("verify-full", False), ("verify-ca", True)):
        url = make_url(await _database(server, sslmode=mode, sslrootcert=str(pems / "ca.pem"))).set(host="localhost")
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
