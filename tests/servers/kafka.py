"""A real Apache Kafka broker for the tests, started and stopped by the suite.

One broker per test session: KRaft combined mode (broker + controller, no
ZooKeeper), on free loopback ports, with a freshly formatted log directory in
a temporary folder, heap 512m.

- Jars: scripts/kafka/fetch.sh gathers org.apache.kafka:kafka_2.13 and its
  runtime dependencies from Maven Central (mvn) into var/kafka/libs (or
  $S117_KAFKA_LIBS) the first time; later sessions reuse them.
- Start: scripts/kafka/run-broker.sh (the same script developers use) writes
  server.properties and log4j.properties, formats the log directory
  (kafka.tools.StorageTool format --standalone) and execs `java ... kafka.Kafka`.
  Ready when the port accepts connections and a metadata request succeeds.
- S117_TEST_KAFKA_BOOTSTRAP=host:port uses a broker you run instead.
- When the broker cannot be had: under CI=true or S117_REQUIRE_SERVERS=1 the
  test fails with the reason and the tail of the broker's log (never a skip in
  CI); otherwise it is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import unavailable

REPO = Path(__file__).resolve().parent.parent.parent
FETCH_SCRIPT = REPO / "scripts" / "kafka" / "fetch.sh"
RUN_SCRIPT = REPO / "scripts" / "kafka" / "run-broker.sh"
BOOTSTRAP_ENV = "S117_TEST_KAFKA_BOOTSTRAP"
FETCH_TIMEOUT = 900.0
START_TIMEOUT = 120.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BrokerUnavailable(RuntimeError):
    """The broker could not be started; the message says why."""


def fetch_jars() -> Path:
    """The folder of broker jars, gathering them from Maven Central if need be."""
    if shutil.which("java") is None:
        raise BrokerUnavailable("no `java` on PATH (Java 17: apt-get install openjdk-17-jre-headless)")
    try:
        out = subprocess.run(["bash", str(FETCH_SCRIPT)], capture_output=True, text=True,
                             timeout=FETCH_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerUnavailable(f"{FETCH_SCRIPT.name} did not finish: {type(exc).__name__}") from exc
    if out.returncode != 0:
        lines = [_ANSI.sub("", line).strip() for line in (out.stderr or "").splitlines()]
        errors = [line for line in lines if line.startswith("[ERROR]") and len(line) > 8][:2]
        raise BrokerUnavailable(f"{FETCH_SCRIPT.name} exited {out.returncode}: {' / '.join(errors or lines[-5:])}")
    return Path(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _metadata_ok(bootstrap: str, timeout: float) -> str | None:
    """None if the broker answers a metadata request, else why not."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        info = await asyncio.wait_for(admin.describe_cluster(), timeout)
        if not info.get("brokers"):
            return "no brokers in the cluster metadata yet"
        return None
    except Exception as exc:  # noqa: BLE001 - the reason is reported, and we retry
        return f"{type(exc).__name__}: {exc}"
    finally:
        await admin.close()


def broker_answers(bootstrap: str, timeout: float = 5.0) -> str | None:
    # The fixture is synchronous: check on a loop of our own, in a thread, so as
    # not to disturb the event loop pytest-asyncio keeps for the tests.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _metadata_ok(bootstrap, timeout)).result()


@dataclass
class KafkaBroker:
    libs: Path
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="s117-kafka-")))
    port: int = 0
    controller_port: int = 0
    started_in: float = 0.0
    _proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def logfile(self) -> Path:
        return self.base / "broker.log"

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        last = ""
        for _ in range(3):  # a free port can be taken between finding it and binding it
            self.port, self.controller_port = _free_port(), _free_port()
            try:
                self._start_once()
                return
            except BrokerUnavailable as exc:
                last = str(exc)
                if "Address already in use" not in self.log_tail(200):
                    break
        raise BrokerUnavailable(last)

    def _start_once(self, fresh: bool = True) -> None:
        begun = time.monotonic()
        env = {**os.environ, "S117_KAFKA_LIBS": str(self.libs)}
        log = open(self.logfile, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                ["bash", str(RUN_SCRIPT), "--port", str(self.port), "--controller-port", str(self.controller_port),
                 "--data-dir", str(self.base / "node"), *(["--fresh"] if fresh else []), "--heap", "512m"],
                cwd=self.base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        deadline = begun + START_TIMEOUT
        why = "port not open"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerUnavailable(f"broker exited {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:
                time.sleep(0.2)
                continue
            why = broker_answers(self.bootstrap) or ""
            if not why:
                self.started_in = time.monotonic() - begun
                return
            time.sleep(0.3)
        self.stop_process()
        raise BrokerUnavailable(f"broker not ready after {START_TIMEOUT:.0f}s ({why}):\n{self.log_tail()}")

    def stop_process(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        # run-broker.sh execs the JVM in its own session: signal that group (ours alone).
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # controlled shutdown
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def resume(self) -> None:
        """Start a stopped broker (`stop_process`) again on the same ports, its log data kept,
        as a broker's restart does (tests/e2e/test_production_faults.py)."""
        self._start_once(fresh=False)

    def stop(self, keep_log: bool = False) -> None:
        try:
            self.stop_process()
        finally:
            if not keep_log:
                shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """`127.0.0.1:<port>` of a Kafka broker for this test session."""
    given = os.environ.get(BOOTSTRAP_ENV)
    if given:
        why = broker_answers(given, timeout=10)
        if why:
            unavailable("Kafka test broker", f"{BOOTSTRAP_ENV}={given} does not answer: {why}")
        yield given
        return
    reason = None
    try:
        broker = KafkaBroker(fetch_jars())
    except BrokerUnavailable as exc:
        reason = str(exc)
    if reason is not None:
        unavailable("Kafka test broker", reason)
    try:
        broker.start()
    except (BrokerUnavailable, OSError, subprocess.SubprocessError) as exc:
        tail = broker.log_tail()
        reason = str(exc) if not tail or tail in str(exc) else f"{exc}\nbroker log:\n{tail}"
        broker.stop()
    if reason is not None:
        unavailable("Kafka test broker", reason)
    print(f"\nkafka broker {broker.bootstrap} ready in {broker.started_in:.1f}s")  # noqa: T201 - shown with -s / -rA
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
