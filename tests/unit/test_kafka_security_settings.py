"""The Kafka security settings (hub/bus/kafka_security.py): one set of aiokafka options for every client;
a bad setting stops `s117hub serve` at start with one line naming the variable, never its value (exit 2);
production refuses PLAINTEXT to brokers beyond loopback unless the operator says the network is
protected; and a misconfiguration is told apart from a broker that is down."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import errors as kafka_errors
from pydantic import ValidationError

from hub.bus.kafka_security import Faults, misconfiguration
from hub.settings import Settings
from tests.servers.kafka import make_tls_files

PASSWORD = "pw-4c1d-never-shown"
PG = "postgresql+asyncpg://hub@10.0.0.5/hub?sslmode=verify-full"  # production, its store verified


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _problem(**kw: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**kw)
    errors = caught.value.errors(include_input=False, include_url=False)
    assert len(errors) == 1
    return str(errors[0]["msg"]).removeprefix("Value error, ")


def test_sasl_ssl_gives_every_client_one_ssl_context_and_the_password_from_its_file(tls, tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")
    s = Settings(bus_url="kafka://broker1.nhs.internal:9093", database_url=PG, canonical_base="https://s117.example",
                 kafka_security_protocol="sasl_ssl", kafka_ssl_ca_file=tls.ca_file,
                 kafka_ssl_cert_file=tls.client_cert, kafka_ssl_key_file=tls.client_key,
                 kafka_sasl_mechanism="scram-sha-512", kafka_sasl_username="s117-hub",
                 kafka_sasl_password_file=secret)
    options = s.kafka_security("bus").client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512" and options["sasl_plain_username"] == "s117-hub"
    assert options["sasl_plain_password"] == PASSWORD  # the file's content, without its newline
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "s117 test kafka CA"),),)]
    # The outbound cluster without its own set: the bus's, whole.
    assert s.kafka_security("outbound") == s.kafka_security("bus")
    assert PASSWORD not in repr(s) and PASSWORD not in str(s.kafka_security("bus"))
    # S117_KAFKA_SASL_PASSWORD= left empty beside the file (as hub.env.example shows it): unset, not both.
    assert Settings(**{**s.model_dump(exclude={"kafka_sasl_password"}), "kafka_sasl_password": ""}
                    ).kafka_security("bus").password() == PASSWORD


def test_the_outbound_cluster_has_a_set_of_its_own_when_its_protocol_is_given(tls) -> None:
    s = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN", kafka_sasl_username="a",
                 kafka_sasl_password="b", kafka_outbound_bootstrap="127.0.0.1:9095",
                 kafka_outbound_security_protocol="SSL", kafka_outbound_ssl_ca_file=tls.other_ca_file)
    out = s.kafka_security("outbound").client_options()
    assert out["security_protocol"] == "SSL" and "sasl_mechanism" not in out
    assert [c["subject"] for c in out["ssl_context"].get_ca_certs()] == [((("commonName", "s117 test other CA"),),)]
    # The worker processes get the settings as JSON (hub/worker_process.py): the password goes with them.
    assert Settings.model_validate_json(s.model_dump_json()).kafka_security("bus").password() == "b"


@pytest.mark.parametrize(("settings", "named"), [
    ({"kafka_security_protocol": "TLS"}, "S117_KAFKA_SECURITY_PROTOCOL: must be one of"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_file": Path("/nonexistent/ca.pem")},
     "S117_KAFKA_SSL_CA_FILE: no such file"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "hub", "kafka_sasl_password": PASSWORD},
     "S117_KAFKA_SASL_MECHANISM: required"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI", "kafka_sasl_username": "hub",
      "kafka_sasl_password": PASSWORD}, "S117_KAFKA_SASL_MECHANISM: must be one of"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_password": PASSWORD},
     "S117_KAFKA_SASL_USERNAME: required"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "hub"},
     "S117_KAFKA_SASL_PASSWORD: required"),
    ({"kafka_sasl_username": "hub", "kafka_sasl_password": PASSWORD}, "S117_KAFKA_SASL_USERNAME: set, but"),
    ({"kafka_outbound_sasl_password": PASSWORD}, "S117_KAFKA_OUTBOUND_SASL_PASSWORD: set without"),
    ({"bus_url": "kafka://10.1.2.3:9092", "database_url": PG, "canonical_base": "https://s117.example"},
     "S117_KAFKA_SECURITY_PROTOCOL: PLAINTEXT to brokers beyond loopback"),
    ({"kafka_outbound_bootstrap": "kafka.council.example:9092", "database_url": PG,
      "canonical_base": "https://s117.example"}, "S117_KAFKA_SECURITY_PROTOCOL: PLAINTEXT to brokers beyond loopback"),
])
def test_a_bad_setting_is_named_never_its_value(settings: dict, named: str) -> None:
    problem = _problem(**settings)
    assert problem.startswith(named), problem
    assert PASSWORD not in problem


def test_a_ca_file_that_does_not_parse_and_a_key_not_matching_are_named(tls, tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    assert _problem(kafka_security_protocol="SSL", kafka_ssl_ca_file=junk).startswith(
        "S117_KAFKA_SSL_CA_FILE: holds no PEM certificate that parses")
    assert _problem(kafka_security_protocol="SSL", kafka_ssl_cert_file=tls.client_cert,
                    kafka_ssl_key_file=tls.keystore).startswith("S117_KAFKA_SSL_CERT_FILE, S117_KAFKA_SSL_KEY_FILE")
    assert _problem(kafka_security_protocol="SSL", kafka_ssl_cert_file=tls.client_cert).startswith(
        "S117_KAFKA_SSL_CERT_FILE, S117_KAFKA_SSL_KEY_FILE: a client certificate (mutual TLS) needs both")


def test_production_plaintext_is_allowed_on_loopback_or_on_the_operators_word() -> None:
    base = {"database_url": PG, "canonical_base": "https://s117.example"}
    Settings(bus_url="kafka://127.0.0.1:9092,localhost:9093", **base)  # the tests' and the demo's brokers
    Settings(bus_url="kafka://10.1.2.3:9092", kafka_allow_plaintext=True, **base)
    Settings(bus_url="kafka://10.1.2.3:9092")  # embedded mode (SQLite): not refused
    assert _problem(bus_url="kafka://127.0.0.1:9092", kafka_outbound_bootstrap="10.9.9.9:9092",
                    kafka_outbound_security_protocol="PLAINTEXT", **base).startswith(
        "S117_KAFKA_OUTBOUND_SECURITY_PROTOCOL: PLAINTEXT to brokers beyond loopback")


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("S117_")}
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "serve"], capture_output=True, text=True, timeout=120,
        env={**clean, "S117_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
             "S117_DATA_KEY_FILE": str(tmp_path / "data.key"), "S117_PORT": "0", **env})


def test_serve_with_a_bad_kafka_setting_exits_2_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    """A real `s117hub serve`: a CA file that is not there, a SASL mechanism without a username, production
    PLAINTEXT beyond loopback: exit 2, one line naming the variable, no traceback, never the password."""
    cases = [
        ({"S117_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "S117_KAFKA_SSL_CA_FILE": str(tmp_path / "missing.pem"),
          "S117_KAFKA_SASL_MECHANISM": "PLAIN", "S117_KAFKA_SASL_USERNAME": "hub",
          "S117_KAFKA_SASL_PASSWORD": PASSWORD}, "S117_KAFKA_SSL_CA_FILE: no such file"),
        ({"S117_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "S117_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
          "S117_KAFKA_SASL_PASSWORD": PASSWORD}, "S117_KAFKA_SASL_USERNAME: required"),
        ({"S117_DATABASE_URL": "postgresql+asyncpg://hub@127.0.0.1:1/hub", "S117_CANONICAL_BASE": "https://s117.example",
          "S117_BUS_URL": "kafka://kafka1.example.nhs.uk:9092"}, "S117_KAFKA_SECURITY_PROTOCOL: PLAINTEXT to brokers"),
    ]
    for env, named in cases:
        done = _serve(tmp_path, **env)
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"s117hub serve: setting {named}"), done.stderr
        assert PASSWORD not in done.stderr + done.stdout


def test_misconfigurations_are_told_from_a_broker_that_is_down() -> None:
    assert misconfiguration(kafka_errors.SaslAuthenticationFailed("Invalid username or password")) == "authentication"
    assert misconfiguration(kafka_errors.UnsupportedSaslMechanismError("SCRAM-SHA-512")) == "authentication"
    assert misconfiguration(ssl.SSLCertVerificationError(1, "certificate verify failed")) == "tls"
    assert misconfiguration(kafka_errors.TopicAuthorizationFailedError("s117.events")) == "authorization"
    assert misconfiguration(kafka_errors.ClusterAuthorizationFailedError()) == "authorization"
    wrapped = kafka_errors.KafkaConnectionError("Unable to bootstrap")
    wrapped.__cause__ = ssl.SSLError(1, "wrong version number")
    assert misconfiguration(wrapped) == "tls"
    assert misconfiguration(kafka_errors.KafkaConnectionError("Unable to bootstrap")) is None
    assert misconfiguration(ConnectionRefusedError()) is None
    assert misconfiguration(kafka_errors.KafkaTimeoutError()) is None


def test_readiness_words_name_the_cause_until_the_component_succeeds() -> None:
    faults = Faults()
    faults.failed("bus", "relay", "authentication", "KafkaConnectionError")
    faults.failed("outbound", "kafka-topic", None, "KafkaConnectionError")  # unreachable: not misconfigured
    waiting = faults.waiting()
    assert list(waiting) == ["bus"] and waiting["bus"].startswith("misconfigured: authentication ("), waiting
    faults.failed("outbound", "kafka-topic", "tls", "KafkaConnectionError")
    assert faults.waiting()["kafka_outbound"].startswith("misconfigured: tls (")
    faults.succeeded("bus", "relay")
    faults.failed("outbound", "kafka-topic", None, "KafkaConnectionError")  # the same component, now only down
    assert faults.waiting() == {}


def test_reading_the_kafka_settings_makes_no_metric(tls) -> None:
    """`s117hub serve` reads the settings before it chooses where every process's metrics live
    (hub/observability/multiproc.py); a metric made by then would keep the worker processes' metrics,
    and the deliverers' Kafka faults, off the front's /metrics and readiness."""
    code = ("import sys; from hub.settings import Settings; "
            f"Settings(kafka_security_protocol='SSL', kafka_ssl_ca_file={str(tls.ca_file)!r}); "
            "print('prometheus_client.values' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stdout + done.stderr


class _RefusingProducer:
    """A producer whose sends Kafka refuses with `error` (a unit test's fake: the broker's answer)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def send(self, *_a: object, **_k: object) -> object:
        raise self.error


async def test_a_record_an_acl_refuses_waits_in_order_rather_than_going_to_the_dead_letters() -> None:
    """TopicAuthorizationFailedError is not retriable to aiokafka; before, the relay dead-lettered each
    such record (every event of the bus, for one missing ACL). Now it waits, in order, like an outage;
    a record Kafka refuses for itself (too large) still goes to the dead letters."""
    from types import SimpleNamespace

    from hub.bus.kafka import KafkaRelay

    row = SimpleNamespace(topic="s117.events", key="p1", offset=7, event_id="e1", payload_json="{}", headers={})
    relay = KafkaRelay.__new__(KafkaRelay)
    sent, refused, error = await relay._send_chain(
        _RefusingProducer(kafka_errors.TopicAuthorizationFailedError("s117.events")), [row, row])
    assert (sent, refused, type(error)) == ([], [], kafka_errors.TopicAuthorizationFailedError)
    sent, refused, error = await relay._send_chain(_RefusingProducer(kafka_errors.MessageSizeTooLargeError()), [row])
    assert (sent, len(refused), error) == ([], 1, None)
