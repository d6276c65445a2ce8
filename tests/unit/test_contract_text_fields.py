"""Every string of the register change refuses C0 / C1 control characters and
Unicode bidirectional formatting characters (tab, CR and LF only in free
text); identifiers are not blank or padded; a postcode is a UK postcode.
Before, NUL, U+202E, "   " and "<script>" were all accepted (202; FHIR 200)."""

from __future__ import annotations

import pytest

from tests.unit.contract_inputs import change, only, problems, trust, with_person

CONTROLS = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f"]


@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("field", ["person.family_name", "person.given_name", "source_system",
                                   "source_message_id"])
def test_control_and_bidi_characters_are_refused_in_every_string(field, char):
    value = f"Test{char}patient"
    data = with_person(**{field.split(".")[1]: value}) if field.startswith("person.") \
        else change(**{field: value})
    reason = only(data, field)
    assert "control" in reason and value not in reason


@pytest.mark.parametrize("char", ["\t", "\n", "\r"], ids=["tab", "LF", "CR"])
def test_tab_and_line_breaks_are_refused_in_names_and_identifiers(char):
    assert only(with_person(family_name=f"Test{char}patient"), "person.family_name")
    assert only(change(source_message_id=f"m{char}1"), "source_message_id")


def test_free_text_keeps_tab_and_line_breaks_but_no_other_control():
    review = {"source_system": "RiO", "source_message_id": "r-1", "change_type": "review-requested",
              "effective_date": "2025-01-06", "person": {"nhs_number": "9990001006"}}
    assert problems({**review, "review_reason": "moved placement\r\n\tneeds review"}) == []
    assert only({**review, "review_reason": "moved\x00"}, "review_reason")
    assert only({**review, "review_reason": "moved \u202eweiver"}, "review_reason")


def test_control_characters_are_refused_inside_a_discharge_and_a_dispute():
    base = {"source_system": "RiO", "source_message_id": "x-1", "effective_date": "2025-01-06",
            "person": {"nhs_number": "9990001006"}}
    decision = {"council_agrees": True, "commissioner_agrees": True, "person_involved": True,
                "reasons": ["no-longer-needs-services"], "participants": ["AMHP\x00"]}
    assert only({**base, "change_type": "s117-discharge-decided", "discharge": decision},
                "discharge.participants.0")
    dispute = {"dispute_id": "D\u202e1", "kind": "council", "parties": ["E06000060", "E08000025\x00"]}
    found = problems({**base, "change_type": "dispute-raised", "dispute": dispute})
    assert [p.field for p in found] == ["dispute.dispute_id", "dispute.parties.1"]


@pytest.mark.parametrize("value", ["   ", " m-1", "m-1 ", "\tm-1", "m-1\n", "\u00a0m-1", "m-1\u3000"])
@pytest.mark.parametrize("field", ["source_message_id", "source_system"])
def test_an_identifier_is_not_blank_or_padded(field, value):
    reason = only(change(**{field: value}), field)
    assert "whitespace" in reason


@pytest.mark.parametrize("field", ["source_message_id", "source_system"])
def test_an_identifier_is_not_empty(field):
    assert only(change(**{field: ""}), field)


def test_inner_spaces_are_kept_in_an_identifier():
    assert problems(change(source_system="SWIFT (council file)", source_message_id="ADT A01 42")) == []


@pytest.mark.parametrize("value", ["<script>", "HP20", "HP20 1A", "hp20 1aa", "HP20  1AA", "12345", "HP20-1AA",
                                   "HP20 1AA\x00", "ZZ99 3VZ\u202e"])
def test_a_postcode_must_be_a_uk_postcode(value):
    reason = only(with_person(postcode=value), "person.postcode")
    assert "UK postcode" in reason and value not in reason


@pytest.mark.parametrize("value", ["HP20 1AA", "HP201AA", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT", "W1A 0AX",
                                   "EC1A 1BB", "ZZ99 3VZ"])
def test_uk_postcodes_are_accepted(value):
    assert problems(with_person(postcode=value)) == []


async def test_over_rest_each_is_a_422_naming_the_field_without_the_value(app_hub):
    bad = change(source_message_id="http-1", effective_date=1736121600, no_fixed_abode="yes",
                 order_type="Hospital Order", legal_status_code="31",
                 person={"nhs_number": "9990001006", "family_name": "Test\x00patient", "postcode": "<script>"})
    r = await app_hub.http.post("/v1/register-changes", headers=trust(app_hub), json=bad)
    assert r.status_code == 422, r.text
    fields = {e["field"]: e["reason"] for e in r.json()["errors"]}
    assert set(fields) == {"effective_date", "no_fixed_abode", "order_type", "person.family_name",
                           "person.postcode"}
    for secret in ("1736121600", "Hospital Order", "Test", "script"):
        assert secret not in r.text
