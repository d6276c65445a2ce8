"""The store's TLS settings (hub/store/postgres_tls.py): libpq's parameters on S117_DATABASE_URL read into
what asyncpg takes, and a store beyond this machine refused at start unless verified. The server side is in
tests/e2e/test_postgres_tls.py (a real PostgreSQL with TLS on)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from hub.settings import Settings
from hub.store.postgres_tls import StoreTlsError, connect_tls
from tests.tls_certs import CertAuthority

REMOTE = "postgresql+asyncpg://hub:s3cret-pw@db.example.nhs.uk:5432/s117"
BASE = "https://s117.example.nhs.uk"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return CertAuthority.make(tmp_path_factory.mktemp("ca"), "test CA").pem


def _refusal(url: str, **kw: object) -> str:
    with pytest.raises(ValidationError) as refused:
        Settings(database_url=url, canonical_base=BASE, **kw)
    message = "; ".join(e["msg"] for e in refused.value.errors())
    assert "s3cret-pw" not in message and "db.example.nhs.uk" not in message  # the URL is never echoed
    return message


def test_a_failover_pair_is_beyond_this_machine_if_either_server_is(ca_file: Path) -> None:
    pair = "postgresql+asyncpg://hub:s3cret-pw@/s117?host=127.0.0.1:5432&host=db.example.nhs.uk:5432" \
           "&target_session_attrs=read-write"
    assert "must be reached with sslmode=verify-full" in _refusal(pair)
    Settings(database_url=f"{pair}&sslmode=verify-full&sslrootcert={ca_file}", canonical_base=BASE)


@pytest.mark.parametrize("query", ["", "?sslmode=require", "?sslmode=prefer", "?sslmode=disable", "?ssl=require"])
def test_a_store_beyond_this_machine_unverified_is_refused_at_start(query: str) -> None:
    assert "database_url: a PostgreSQL store beyond this machine must be reached with sslmode=verify-full" \
        in _refusal(REMOTE + query)
    Settings(database_url=REMOTE + query, canonical_base=BASE, database_allow_unverified=True)  # the operator's say


@pytest.mark.parametrize("url", [
    "postgresql+asyncpg://hub:pw@127.0.0.1/s117", "postgresql+asyncpg://hub:pw@localhost/s117",
    "postgresql+asyncpg://hub:pw@[::1]/s117", "postgresql+asyncpg://hub:pw@/s117?host=/var/run/postgresql",
    "postgresql+asyncpg://hub:pw@/s117?host=127.0.0.1:5432&host=127.0.0.1:5433",
    "postgresql+asyncpg://hub:pw@/s117?host=[::1]:5432&host=localhost",
])
def test_a_store_on_this_machine_needs_no_tls(url: str) -> None:
    Settings(database_url=url, canonical_base=BASE)


def test_verified_tls_is_taken(ca_file: Path) -> None:
    Settings(database_url=f"{REMOTE}?sslmode=verify-full&sslrootcert={ca_file}", canonical_base=BASE)
    Settings(database_url=f"{REMOTE}?sslmode=verify-ca&sslrootcert={ca_file}", canonical_base=BASE)
    Settings(database_url=f"{REMOTE}?ssl=verify-full", canonical_base=BASE)  # asyncpg's own (PGSSLROOTCERT)


@pytest.mark.parametrize("query, named", [
    ("?sslmode=verify-full&sslrootcert=/no/such/ca.pem", "sslrootcert cannot be read"),
    ("?sslmode=strict", "sslmode must be one of"),
    ("?sslmode=verify-full&ssl=require", "not both"),
    ("?sslmode=verify-full&sslmode=require", "sslmode is given more than once"),
    ("?sslmode=verify-full&sslcert=/x.pem", "sslcert and sslkey go together"),
])
def test_tls_parameters_the_hub_cannot_use_are_named(query: str, named: str) -> None:
    message = _refusal(REMOTE + query, database_allow_unverified=True)
    assert message.startswith("Value error, database_url: ") and named in message


def test_the_parameters_become_asyncpgs_ssl_argument(ca_file: Path) -> None:
    url, args = connect_tls(make_url(f"{REMOTE}?sslmode=verify-full&sslrootcert={ca_file}&application_name=hub"))
    assert dict(url.query) == {"application_name": "hub"}  # libpq's four taken off, the rest kept
    ctx = args["ssl"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.get_ca_certs()[0]["subject"] == ((("commonName", "test CA"),),)  # only the CA given
    _, args = connect_tls(make_url(f"{REMOTE}?sslmode=verify-ca&sslrootcert={ca_file}"))
    assert args["ssl"].verify_mode == ssl.CERT_REQUIRED and not args["ssl"].check_hostname
    _, args = connect_tls(make_url(f"{REMOTE}?sslmode=require"))
    assert args["ssl"].verify_mode == ssl.CERT_NONE  # encrypted, not verified (libpq's require)
    assert connect_tls(make_url(f"{REMOTE}?sslmode=disable"))[1] == {"ssl": False}
    assert connect_tls(make_url(REMOTE)) == (make_url(REMOTE), {})
    with pytest.raises(StoreTlsError):
        connect_tls(make_url(f"{REMOTE}?sslmode=verify-full&sslrootcert={ca_file}&sslcert={ca_file}&sslkey={ca_file}"))


def test_the_cli_says_it_in_one_line_naming_the_setting(tmp_path: Path) -> None:
    env = {**os.environ, "S117_DATABASE_URL": REMOTE, "S117_CANONICAL_BASE": BASE}
    done = subprocess.run([sys.executable, "-m", "hub.cli", "serve"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("s117hub serve: setting database_url: "), done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout
