"""The log redactor's belt and braces (hub/observability/logging.py): a
ten-digit run is masked as an NHS number in any allowed value, however it is
spaced, but the hub's UUIDs are kept whole even when a random one holds ten
digits in a row across a hyphen (it used to be cut, and its correlation id
could no longer be traced)."""

from __future__ import annotations

import uuid

from hub.observability.logging import allowlist_redactor


def redact(**kw: object) -> dict:
    return allowlist_redactor(None, "info", dict(kw))


def test_ten_digit_runs_are_masked_however_spaced() -> None:
    for text in ("9434765919", "943 476 5919", "943-476-5919", "failed for 9434765919: no GP"):
        assert "[nhs-number]" in redact(event=text)["event"]
        assert "5919" not in redact(event=text)["event"]


def test_uuids_are_kept_whole_even_with_ten_digits_in_a_row() -> None:
    ids = ["1f196923-0154-4fd1-83b0-068213881018", "12345678-9012-4abc-8def-123456789012",
           *(str(uuid.uuid4()) for _ in range(2000))]
    for cid in ids:
        out = redact(correlation_id=cid, event=f"dispatch failed for {cid}")
        assert out["correlation_id"] == cid and out["event"] == f"dispatch failed for {cid}"


def test_an_nhs_number_beside_a_uuid_is_still_masked() -> None:
    cid = "1f196923-0154-4fd1-83b0-068213881018"
    out = redact(event=f"{cid} 9434765919")["event"]
    assert out == f"{cid} [nhs-number]"
