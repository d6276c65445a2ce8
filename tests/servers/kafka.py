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
- `sasl_kafka` (a module's own, started only by the tests that ask for it): a broker
  with a SASL_SSL listener as well (TLS with a certificate signed by a CA made
  here with `cryptography`, then SASL PLAIN users from the listener's JAAS
  config, or SCRAM-SHA-512 users written at format time), an SSL listener
  requiring a client certificate (mutual TLS), and KRaft's StandardAuthorizer
  with `hub` (and the client certificate's CN=s117-hub) a super user and
  `reader` allowed nothing (tests/e2e/test_kafka_security.py).
- `oauth_kafka` (likewise a module's own): `sasl_kafka`'s broker with a SASL_SSL listener taking
  SASL/OAUTHBEARER as well (`oauth_bootstrap`): Kafka's unsecured validator, tokens needing the scope
  `OAUTH_SCOPE`, sessions ending when their token does (tests/e2e/test_kafka_oauthbearer.py).
- When the broker cannot be had: under CI=true or S117_REQUIRE_SERVERS=1 the
  test fails with the reason and the tail of the broker's log (never a skip in
  CI); otherwise it is skipped with the reason.
"""

from __future__ import annotations

from typing import Any

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

from tests.servers import one_at_a_time, unavailable

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
        with one_at_a_time():
            out = subprocess.run(["bash", str(FETCH_SCRIPT)], capture_output=True, text=True,
                                 timeout=FETCH_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerUnavailable(f"{FETCH_SCRIPT.name} did not finish: {type(exc).__name__}") from exc
    if out.returncode != 0:
        lines = [_ANSI.sub("", line).strip() for line in (out.stderr or "").splitlines()]
        errors = [line for line in lines if line.startswith("[ERROR]") and len(line) > 8][:2]
        raise BrokerUnavailable(f"{FETCH_SCRIPT.name} exited {out.returncode}: {' / '.join(errors or lines[-5:])}")
    return Path(out.stdout.strip().splitlines()[-1])


def _free_ports(n: int, avoid: tuple[int, ...] = ()) -> list[int]:
    """`n` distinct free ports, none of `avoid` (the broker's ports chosen before): every socket held open
    until all are chosen, since a port closed and asked for again can be handed out twice, and Kafka refuses
    two listeners on one port."""
    socks: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < n:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in avoid:
                ports.append(port)
        return ports
    finally:
        for s in socks:
            s.close()


def _free_port(avoid: tuple[int, ...] = ()) -> int:
    return _free_ports(1, avoid)[0]


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
    extra_args: list[str] = field(default_factory=list)  # more run-broker.sh options (`SaslBroker`)
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
            self.port, self.controller_port = _free_ports(2)
            self.choose_ports()
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
                 "--data-dir", str(self.base / "node"), *(["--fresh"] if fresh else []), "--heap", "512m",
                 *self.extra_args],
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

    def choose_ports(self) -> None:
        """Free ports for listeners beyond the two (`SaslBroker`)."""

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


def _started(kind: Any, what: str) -> Any:
    """A broker of `kind` made and started, or the test failed (CI) or skipped naming `what` and why (the
    broker's log tail with it)."""
    reason = None
    try:
        broker = kind(fetch_jars())
    except BrokerUnavailable as exc:
        reason = str(exc)
    if reason is not None:
        unavailable(what, reason)
    try:
        broker.start()
    except (BrokerUnavailable, OSError, subprocess.SubprocessError) as exc:
        tail = broker.log_tail()
        reason = str(exc) if not tail or tail in str(exc) else f"{exc}\nbroker log:\n{tail}"
        broker.stop()
    if reason is not None:
        unavailable(what, reason)
    return broker


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
    broker = _started(KafkaBroker, "Kafka test broker")
    print(f"\nkafka broker {broker.bootstrap} ready in {broker.started_in:.1f}s")  # noqa: T201 - shown with -s / -rA
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


# --------------------------------------------------------------------------- SASL_SSL


USERS = {"hub": "hub-secret-7f3a9c", "reader": "reader-secret-51be2d"}


@dataclass
class TlsFiles:
    ca_file: Path  # the CA that signed the broker's certificate (PEM)
    other_ca_file: Path  # a CA the broker's certificate does not chain to
    keystore: Path  # the broker's certificate and unencrypted PKCS#8 key (PEM)
    client_cert: Path  # a client certificate signed by the CA, and its key (mutual TLS)
    client_key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """A CA, a broker certificate for 127.0.0.1/localhost signed by it, a client certificate, and an
    unrelated CA, written into `folder` (made with `cryptography`, RSA 2048)."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import ip_address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        k = key()
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(k.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
                .sign(k, hashes.SHA256()))
        return k, cert

    def leaf(cn: str, ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate,
             san: list[x509.GeneralName] | None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        k = key()
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
             .not_valid_after(now + timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return k, b.sign(ca_key, hashes.SHA256())

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def pkcs8(k: rsa.RSAPrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key, ca_cert = ca("s117 test kafka CA")
    _, other_cert = ca("s117 test other CA")
    broker_key, broker_cert = leaf("127.0.0.1", ca_key, ca_cert,
                                   [x509.IPAddress(ip_address("127.0.0.1")), x509.DNSName("localhost")])
    client_key, client_cert = leaf("s117-hub", ca_key, ca_cert, None)
    files = TlsFiles(folder / "ca.pem", folder / "other-ca.pem", folder / "broker.pem", folder / "client.pem",
                     folder / "client.key")
    files.ca_file.write_bytes(pem(ca_cert))
    files.other_ca_file.write_bytes(pem(other_cert))
    files.keystore.write_bytes(pkcs8(broker_key) + pem(broker_cert))
    files.client_cert.write_bytes(pem(client_cert))
    files.client_key.write_bytes(pkcs8(client_key))
    for f in (files.keystore, files.client_key):
        f.chmod(0o600)
    return files


@dataclass
class SaslBroker(KafkaBroker):
    """A broker with a SASL_SSL listener beside its PLAINTEXT one (which the readiness check uses)."""

    sasl_port: int = 0
    ssl_port: int = 0  # mutual TLS: a client certificate signed by `tls.ca_file` (principal User:CN=s117-hub)
    tls: TlsFiles | None = None

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    def choose_ports(self) -> None:
        self.sasl_port, self.ssl_port = _free_ports(2, avoid=(self.port, self.controller_port))
        if self.tls is None:
            folder = self.base / "tls"
            folder.mkdir(exist_ok=True)
            self.tls = make_tls_files(folder)
        users = self.base / "plain-users"
        users.write_text("".join(f"{n} {p}\n" for n, p in USERS.items()))
        users.chmod(0o600)
        # The same users for SCRAM-SHA-512, in the metadata at format time (a fresh log directory).
        self.extra_args = ["--sasl-ssl-port", str(self.sasl_port), "--tls-keystore", str(self.tls.keystore),
                           "--plain-users", str(users), "--scram-users", str(users),
                           "--ssl-port", str(self.ssl_port), "--tls-truststore", str(self.tls.ca_file),
                           "--super-users", "User:hub;User:CN=s117-hub"]


@pytest.fixture(scope="module")
def sasl_kafka() -> Iterator[SaslBroker]:
    """A broker of the module's own with a SASL_SSL listener (`sasl_bootstrap`, CA `tls.ca_file`, users
    `USERS`), stopped after the module's tests, failed or not."""
    broker = _started(SaslBroker, "Kafka SASL_SSL test broker")
    print(f"\nkafka SASL_SSL broker {broker.sasl_bootstrap} ready in {broker.started_in:.1f}s")  # noqa: T201
    try:
        yield broker
    finally:
        broker.stop()


# --------------------------------------------------------------------------- SASL_SSL with OAUTHBEARER


OAUTH_SCOPE = "kafka"


@dataclass
class OAuthBroker(SaslBroker):
    """`SaslBroker` with an OAUTH listener: SASL_SSL, OAUTHBEARER only (an unsigned JWT whose `sub` is the
    principal, `hub` a super user, carrying the scope `OAUTH_SCOPE`; run-broker.sh --oauth-port)."""

    oauth_port: int = 0

    @property
    def oauth_bootstrap(self) -> str:
        return f"127.0.0.1:{self.oauth_port}"

    def choose_ports(self) -> None:
        super().choose_ports()
        self.oauth_port = _free_port(avoid=(self.port, self.controller_port, self.sasl_port, self.ssl_port))
        self.extra_args += ["--oauth-port", str(self.oauth_port), "--oauth-scope", OAUTH_SCOPE]


@pytest.fixture(scope="module")
def oauth_kafka() -> Iterator[OAuthBroker]:
    """A broker of the module's own with an OAUTHBEARER listener (`oauth_bootstrap`, CA `tls.ca_file`) beside
    the SASL_SSL PLAIN one, stopped after the module's tests, failed or not."""
    broker = _started(OAuthBroker, "Kafka OAUTHBEARER test broker")
    print(f"\nkafka OAUTHBEARER broker {broker.oauth_bootstrap} ready in {broker.started_in:.1f}s")  # noqa: T201
    try:
        yield broker
    finally:
        broker.stop()
