"""MLLP's only proof of who is sending is a TLS client certificate (MSH-4 can
name any registered trust). A hub refuses to start an MLLP listener that
machines beyond its own could reach without one, unless the operator says the
network is closed to all but the trusts' engines; and half-configured TLS is
refused, naming the settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hub.settings import Settings

DB = "sqlite+aiosqlite:///:memory:"


def _settings(**kw: object) -> Settings:
    return Settings(database_url=DB, _env_file=None, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "hub.trust.nhs.uk"])
def test_mllp_reachable_from_the_network_without_client_certificates_is_refused(host: str) -> None:
    with pytest.raises(ValidationError) as exc:
        _settings(mllp_port=2575, mllp_host=host)
    text = str(exc.value)
    assert "mllp_host" in text and "S117_MLLP_TLS_CLIENT_CA" in text and "S117_MLLP_ALLOW_UNAUTHENTICATED" in text
    # The server certificate alone is not enough: it proves the hub, not the sender.
    with pytest.raises(ValidationError):
        _settings(mllp_port=2575, mllp_host=host, mllp_tls_cert=Path("hub.crt"), mllp_tls_key=Path("hub.key"))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.53"])
def test_mllp_on_loopback_needs_no_client_certificates(host: str) -> None:
    assert _settings(mllp_port=2575, mllp_host=host).mllp_host == host


def test_client_certificates_or_the_operators_word_allow_a_network_listener() -> None:
    tls = {"mllp_tls_cert": Path("hub.crt"), "mllp_tls_key": Path("hub.key"), "mllp_tls_client_ca": Path("ca.crt")}
    assert _settings(mllp_port=2575, mllp_host="0.0.0.0", **tls).mllp_tls_client_ca == Path("ca.crt")
    assert _settings(mllp_port=2575, mllp_host="0.0.0.0", mllp_allow_unauthenticated=True).mllp_port == 2575
    assert _settings(mllp_host="0.0.0.0").mllp_port is None  # MLLP off: nothing listens


def test_half_configured_tls_is_refused_naming_the_settings() -> None:
    with pytest.raises(ValidationError, match="S117_MLLP_TLS_CERT and S117_MLLP_TLS_KEY go together"):
        _settings(mllp_tls_cert=Path("hub.crt"))
    with pytest.raises(ValidationError, match="mllp_tls_client_ca"):
        _settings(mllp_tls_client_ca=Path("ca.crt"))


def test_the_listeners_refusal_acks_wait_for_the_write_refusal_floor_set() -> None:
    """S117_WRITE_REFUSAL_FLOOR_MS reaches the MLLP listener as it reaches REST and FHIR (it kept the
    default 50 ms whatever was set)."""
    from hub.bootstrap import mllp_limits

    assert mllp_limits(_settings(mllp_port=2575, write_refusal_floor_ms=120)).refusal_floor == 0.12
    assert mllp_limits(_settings(mllp_port=2575)).refusal_floor == 0.05
