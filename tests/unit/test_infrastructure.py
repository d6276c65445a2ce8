"""Sharing agreements, webhook signatures, backoff, log redaction, contracts."""

from __future__ import annotations

import io
import json
import random
import sys
from datetime import date

import pytest
from hypothesis import given, strategies as st
import structlog

from hub.crypto import sign_webhook, verify_webhook
from hub.delivery.webhook import backoff_seconds
from hub.fhir.messages import FIELD_GROUPS
from hub.sharing import FUNDING
from hub.ingest.contract import RegisterChangeIn
from hub.ingest.nhs_number import nhs_number_problem, with_check_digit
from hub.observability.logging import configure_logging, get_logger
from hub.settings import REPO_ROOT
from hub.sharing import AgreementFileError, SharingAgreements

DOC = {"agreements": [
    {"id": "A", "valid_from": "2024-01-01", "valid_to": "2024-12-31", "recipients": [
        {"org_code": "E06000060", "events": ["s117-entitlement-started"], "field_groups": ["identity"]}]},
    {"id": "B", "valid_from": "2024-06-01", "recipients": [
        {"org_code": "E06000060", "events": ["*"], "field_groups": ["responsibility"]}]},
]}


def test_sharing_denies_by_default_and_unions_what_agreements_allow():
    sharing = SharingAgreements.from_document(DOC, FIELD_GROUPS)
    assert not sharing.decide("E10000034", "s117-entitlement-started", date(2024, 7, 1)).allowed
    early = sharing.decide("E06000060", "s117-moved-out-of-area", date(2024, 3, 1))
    assert not early.allowed and "does not cover" in early.reason
    both = sharing.decide("E06000060", "s117-entitlement-started", date(2024, 7, 1))
    assert both.allowed and both.field_groups == {"identity", "responsibility"} and both.agreement_id == "A,B"
    later = sharing.decide("E06000060", "s117-entitlement-started", date(2025, 2, 1))
    assert later.field_groups == {"responsibility"}  # A has lapsed


@pytest.mark.parametrize("doc, names", [
    ({"agreements": [{"recipients": []}]}, "agreements[0].id"),
    ({"agreements": [{"id": "X", "recipients": [{"org_code": "Q", "events": ["nope"]}]}]}, "events"),
    ({"agreements": [{"id": "X", "recipients": [{"org_code": "Q", "events": ["*"], "field_groups": ["dob"]}]}]},
     "field_groups"),
    ({"agreements": [{"id": "X", "valid_from": "soon", "recipients": []}]}, "valid_from"),
    ({"agreements": [{"id": "X", "recipients": [{"org_code": "Q", "events": ["*"],
                                                 "field_groups": ["explanations"]}]}]}, "needs"),
])
def test_a_malformed_agreement_file_names_the_entry_and_field(doc, names):
    with pytest.raises(AgreementFileError, match=names.replace("[", r"\[").replace("]", r"\]")):
        SharingAgreements.from_document(doc, FIELD_GROUPS)


def test_the_shipped_agreements_file_is_valid():
    SharingAgreements.load(REPO_ROOT / "contracts" / "data-sharing-agreements.yaml", FIELD_GROUPS | {FUNDING})


def test_webhook_signature_verifies_and_detects_tampering_and_replay():
    body = b'{"resourceType":"Bundle"}'
    eid = "ev-1"
    header = f"t=1700000000,v1={sign_webhook('s' * 32, 1700000000, eid, body)}"
    assert verify_webhook("s" * 32, header, body, event_id=eid, now=1700000010)
    assert not verify_webhook("s" * 32, header, body + b" ", event_id=eid, now=1700000010)
    assert not verify_webhook("s" * 32, header, body, event_id="ev-2", now=1700000010)  # the event id is signed
    assert not verify_webhook("t" * 32, header, body, event_id=eid, now=1700000010)
    assert not verify_webhook("s" * 32, header, body, event_id=eid, now=1700000000 + 3600)  # stale: replay window
    assert not verify_webhook("s" * 32, "garbage", body, event_id=eid)


def test_backoff_grows_exponentially_and_is_capped():
    rng = random.Random(0)
    ceilings = [max(backoff_seconds(n, 1.0, 60.0, rng) for _ in range(200)) for n in range(1, 10)]
    assert ceilings[0] <= 1.0 and ceilings[3] > 4.0 and ceilings[3] <= 8.0
    assert all(c <= 60.0 for c in ceilings) and ceilings[-1] > 30.0


def test_logs_keep_only_allowlisted_fields_and_mask_ten_digit_runs(monkeypatch, restore_logging):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    configure_logging("INFO", json=True)
    try:
        get_logger("t").info("accepted", nhs_number="9990000018", family_name="Testpatient",
                             birth_date="1970-01-01", change_id="c1", fields=["person.nhs_number"],
                             status="error for 999 000 0018")
        try:
            raise ValueError("input 9990000018 rejected")
        except ValueError:
            get_logger("t").exception("failed")
    finally:
        structlog.reset_defaults()
        import importlib

        import hub.observability.logging as hub_logging

        importlib.reload(hub_logging)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    first = lines[0]
    assert first["nhs_number"] == first["family_name"] == first["birth_date"] == "[redacted]"
    assert first["change_id"] == "c1" and first["fields"] == ["person.nhs_number"]
    assert "999" not in first["status"]
    assert lines[1]["exc_type"] == "ValueError" and "9990000018" not in out.getvalue()


def test_nhs_number_check_digit():
    assert nhs_number_problem("9990000018") is None
    assert nhs_number_problem("999 000 0018") is None
    assert nhs_number_problem("9990000010") == "fails the modulus-11 check digit"
    assert nhs_number_problem("12345").startswith("must be 10 digits")
    assert with_check_digit("999000001") == "9990000018"
    assert nhs_number_problem("3333333333") is None  # the ITK specification's example


@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_the_check_digit_is_the_modulus_11_definition(first_nine):
    """hub/ingest/nhs_number.py computes it unrolled: the same as the Data Dictionary's weighted sum."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1)))
    check = 11 - total % 11
    expected = None if check == 10 else first_nine + str(0 if check == 11 else check)
    assert with_check_digit(first_nine) == expected
    for last in "0123456789":
        assert (nhs_number_problem(first_nine + last) is None) == (first_nine + last == expected
                                                                   and expected != "0000000000")


def test_register_change_contract_file_matches_the_model():
    from hub.cli import contract_schema

    on_disk = json.loads((REPO_ROOT / "contracts" / "register-change.schema.json").read_text())
    assert on_disk == contract_schema(RegisterChangeIn), "run `make contracts` and commit the result"


def test_logging_redacts_even_before_it_is_configured(capsys, restore_logging):
    import importlib

    import hub.observability.logging as hub_logging

    structlog.reset_defaults()
    importlib.reload(hub_logging)  # the module's import-time safe default
    hub_logging.get_logger("t").info("hello", nhs_number="9990000018", change_id="c9")
    err = capsys.readouterr().err
    assert "c9" in err and "9990000018" not in err and "[redacted]" in err
