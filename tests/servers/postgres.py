"""A real PostgreSQL server for the tests, started and stopped by the suite.

One server per test session, in a temporary directory, on a free loopback
port; each test gets a database of its own (random name, dropped after).

- Binaries: /usr/lib/postgresql/*/bin (newest), or whatever
  scripts/postgres-test-server.sh installs (apt-get, as root) if none exist.
- PostgreSQL refuses to run as root: when the suite runs as root, initdb and
  postgres run as the unprivileged `postgres` system user (which the package
  creates), or as a `s117test` system user made for the purpose, and the
  temporary directory belongs to that user.
- listen_addresses=127.0.0.1 only, the unix socket inside the temporary
  directory, fsync on; the superuser `postgres` has a random password
  (scram-sha-256 over TCP).
- S117_TEST_POSTGRES_URL (postgresql+asyncpg://user:pw@host:port/db, a role
  that may CREATE DATABASE) uses a server you run instead.
- When the server cannot be had: under CI=true or S117_REQUIRE_SERVERS=1 the
  test fails with the reason (never a skip in CI); otherwise it is skipped
  with the reason.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import one_at_a_time, unavailable
from sqlalchemy.engine import URL, make_url

REPO = Path(__file__).resolve().parent.parent.parent
ENSURE_SCRIPT = REPO / "scripts" / "postgres-test-server.sh"
URL_ENV = "S117_TEST_POSTGRES_URL"
START_TIMEOUT = 60.0


class ServerUnavailable(RuntimeError):
    """The server could not be started; the message says why."""


def ensure_binaries() -> Path:
    """The directory holding initdb and postgres, installing them if need be."""
    try:
        with one_at_a_time():
            out = subprocess.run(
                ["sh", str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerUnavailable(f"{ENSURE_SCRIPT.name} did not run: {type(exc).__name__}") from exc
    if out.returncode != 0:
        tail = (out.stderr or "").strip().splitlines()[-3:]
        raise ServerUnavailable(f"{ENSURE_SCRIPT.name} exited {out.returncode}: {' / '.join(tail)}")
    bindir = Path(out.stdout.strip().splitlines()[-1])
    if not (bindir / "initdb").exists() or not (bindir / "postgres").exists():
        raise ServerUnavailable(f"no initdb/postgres in {bindir}")
    return bindir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run as, or None to run as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "s117test"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "s117test"],
        check=True, capture_output=True,
    )
    return pwd.getpwnam("s117test")


@dataclass
class PostgresServer:
    bindir: Path
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="s117-pg-")))
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int = 0
    user: pwd.struct_passwd | None = None
    settings: dict[str, str] = field(default_factory=dict)  # more `-c name=value` (e.g. ssl=on)
    _proc: subprocess.Popen | None = None

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "postgres.log"

    def url(self, database: str = "postgres") -> URL:
        return URL.create("postgresql+asyncpg", username="postgres", password=self.password,
                          host="127.0.0.1", port=self.port, database=database)

    def _run_as(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")
        if self.user is not None:
            env.update(HOME=str(self.base), USER=self.user.pw_name, LOGNAME=self.user.pw_name)
        return env

    def start(self) -> None:
        self.user = _server_user()
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.user is not None:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        init = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres", f"--pwfile={pwfile}",
             "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale"],
            cwd=self.base, env=self._env(), capture_output=True, text=True, timeout=120, **self._run_as(),
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise ServerUnavailable(f"initdb exited {init.returncode}: {init.stderr.strip()[-300:]}")
        last = ""
        for _ in range(3):  # a free port can be taken between finding it and binding it
            self.port = _free_port()
            try:
                self._start_postgres()
                return
            except ServerUnavailable as exc:
                last = str(exc)
                if "could not bind" not in self._log_tail() and "in use" not in self._log_tail():
                    break
        raise ServerUnavailable(last)

    def _start_postgres(self) -> None:
        log = open(self.logfile, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.base}",
                 "-c", "fsync=on", "-c", "max_connections=200", "-c", "shared_buffers=32MB",
                 "-c", "log_min_messages=warning", "-c", "timezone=UTC",
                 *(arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}"))],
                cwd=self.base, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, **self._run_as(),
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerUnavailable(f"postgres exited {self._proc.returncode}: {self._log_tail()}")
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "2"],
                env=self._env(), capture_output=True, check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        self._stop_process()
        raise ServerUnavailable(f"postgres not ready after {START_TIMEOUT:.0f}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return " / ".join(self.logfile.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return ""

    def _stop_process(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGINT)  # fast shutdown: roll back, checkpoint, exit
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def halt(self) -> None:
        """Stop the server (a fast shutdown: its sessions are ended), keeping its data and port, as
        an operator's restart or a failover does; `resume` starts it again (tests/e2e/test_production_faults.py)."""
        self._stop_process()

    def resume(self) -> None:
        """Start a halted server again on the same port and data."""
        self._start_postgres()

    def pause(self) -> None:
        """SIGSTOP the server and each of its backends (each is a session of its own: postmaster
        children call setsid): connections are still accepted by the kernel and kept open, but
        nothing answers, as a hung host or a network partition (tests/e2e/test_production_faults.py);
        `unpause` lets them go on."""
        assert self._proc is not None and self._proc.poll() is None
        self._paused = [self._proc.pid]
        os.kill(self._proc.pid, signal.SIGSTOP)  # first: no new backend is forked meanwhile
        for pid in self._children():
            try:
                os.kill(pid, signal.SIGSTOP)
                self._paused.append(pid)
            except ProcessLookupError:
                pass

    def unpause(self) -> None:
        for pid in reversed(getattr(self, "_paused", [])):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._paused = []

    def _children(self) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self._proc.pid:
                    found.append(int(entry.name))
        return found

    def stop(self) -> None:
        self.unpause()  # a paused server would not take the signal to stop
        try:
            self._stop_process()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Admin URL (asyncpg) of a PostgreSQL server for this test session."""
    given = os.environ.get(URL_ENV)
    if given:
        yield given
        return
    try:
        server = PostgresServer(ensure_binaries())
    except ServerUnavailable as exc:
        unavailable("PostgreSQL test server", str(exc))
    try:
        server.start()
    except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        unavailable("PostgreSQL test server", str(exc))
    try:
        yield server.url().render_as_string(hide_password=False)
    finally:
        server.stop()


async def create_database(admin_url: str, prefix: str = "s117_test") -> str:
    """Create a database with a random name; return its asyncpg URL."""
    import asyncpg

    url = make_url(admin_url)
    name = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(**_connect_args(url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def drop_database(admin_url: str, database_url: str) -> None:
    import asyncpg

    name = make_url(database_url).database
    conn = await asyncpg.connect(**_connect_args(make_url(admin_url)))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _connect_args(url: URL) -> dict:
    return {"user": url.username, "password": url.password, "host": url.host or "127.0.0.1",
            "port": url.port or 5432, "database": url.database or "postgres"}


@pytest.fixture
async def postgres_database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test (asyncpg URL), dropped afterwards."""
    url = await create_database(postgres_url)
    try:
        yield url
    finally:
        await asyncio.shield(drop_database(postgres_url, url))
