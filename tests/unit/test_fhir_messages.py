"""Outbound FHIR event messages: CodeSystem, field groups, validation, golden files.

Set S117_UPDATE_GOLDEN=1 to rewrite tests/golden/*.json after an intended change.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.domain.model import Determination, EventType
from hub.fhir import examples
from hub.fhir.messages import (
    read_position,
    ADDRESS,
    DEMOGRAPHICS,
    EVENT_DISPLAYS,
    EXPLANATIONS,
    FIELD_GROUPS,
    IDENTITY,
    PROFILES,
    LEGAL_STATUS,
    RESPONSIBILITY,
    build_event_message,
)
from hub.fhir.namespaces import (
    EVENT_CODESYSTEM_URL,
    EXT_DETERMINATION,
    EXT_RESPONSIBLE_COMMISSIONER,
    GSS_CODE_SYSTEM,
    HUB_FHIR_BASE,
    HUB_PERSON_ID_SYSTEM,
    LEGAL_STATUS_ENGLAND_SYSTEM,
    LEGAL_STATUS_EXTENSION_URL,
    NHS_NUMBER_SYSTEM,
    ODS_ORGANIZATION_SYSTEM,
    Namespaces,
)
from hub.fhir.validate import (
    SCHEMAS_DIR,
    FhirMessageInvalid,
    codesystem_codes,
    is_valid_nhs_number,
    validate_message,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = ROOT / "tests" / "golden"
CASES = examples.golden_cases()


def _build(case: str = "entitlement-started-all-groups", **overrides: Any) -> dict[str, Any]:
    return build_event_message(**{**CASES[case], **overrides})


def _resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def _text(bundle: dict[str, Any]) -> str:
    return orjson.dumps(bundle).decode()


# --- the event CodeSystem ---------------------------------------------------


def test_event_codesystem_codes_equal_event_type_values() -> None:
    cs = json.loads((ROOT / "schemas" / "CodeSystem-s117-event.json").read_text())
    codes = [c["code"] for c in cs["concept"]]
    assert sorted(codes) == sorted(e.value for e in EventType)
    assert len(codes) == len(set(codes))
    assert cs["count"] == len(codes)


def test_event_codesystem_header_and_concepts_complete() -> None:
    from fhir.resources.R4B.codesystem import CodeSystem

    cs = json.loads((ROOT / "schemas" / "CodeSystem-s117-event.json").read_text())
    CodeSystem.model_validate(cs)
    assert cs["url"] == EVENT_CODESYSTEM_URL
    assert cs["status"] == "active"
    assert cs["content"] == "complete"
    for concept in cs["concept"]:
        assert concept["display"] == EVENT_DISPLAYS[EventType(concept["code"])]
        assert concept["definition"].strip()


def test_validator_reads_the_repository_schemas_not_shared_refdata() -> None:
    assert SCHEMAS_DIR == ROOT / "schemas"
    england = codesystem_codes(LEGAL_STATUS_ENGLAND_SYSTEM)
    assert len(england) == 27 and "11" not in england and england["03"].endswith("Section 3")


# --- NHS numbers --------------------------------------------------------------


@pytest.mark.parametrize("value", ["9990000018", "9990000026", "9912003888", "9999999999"])
def test_valid_test_range_nhs_numbers(value: str) -> None:
    assert is_valid_nhs_number(value)


@pytest.mark.parametrize("value", ["9990000019", "999000001", "99900000180", "999000001X", "", "9990000000"])
def test_invalid_nhs_numbers(value: str) -> None:
    # 999000000 has check value 10: no valid number starts with it.
    assert not is_valid_nhs_number(value)


# --- message shape ---------------------------------------------------------------


def test_message_bundle_header_and_entries() -> None:
    b = _build()
    assert b["resourceType"] == "Bundle" and b["type"] == "message"
    assert b["id"] == CASES["entitlement-started-all-groups"]["message_id"]
    assert b["timestamp"] == "2024-03-18T09:30:00Z"
    types = [e["resource"]["resourceType"] for e in b["entry"]]
    assert types == ["MessageHeader", "Patient", "Encounter", "EpisodeOfCare"]
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in b["entry"])
    assert len({e["fullUrl"] for e in b["entry"]}) == 4

    (header,) = _resources(b, "MessageHeader")
    assert header["eventCoding"] == {
        "system": EVENT_CODESYSTEM_URL,
        "code": "s117-entitlement-started",
        "display": EVENT_DISPLAYS[EventType.ENTITLEMENT_STARTED],
    }
    assert header["source"]["endpoint"] == examples.SOURCE_ENDPOINT
    (dest,) = header["destination"]
    assert dest["receiver"]["identifier"] == {"system": GSS_CODE_SYSTEM, "value": "E06000060"}
    assert dest["endpoint"].startswith("urn:uuid:")
    (episode,) = _resources(b, "EpisodeOfCare")
    (encounter,) = _resources(b, "Encounter")
    # The entitlement, and the detention it flows from (shared: legal-status).
    assert header["focus"] == [{"reference": f"urn:uuid:{episode['id']}"},
                               {"reference": f"urn:uuid:{encounter['id']}"}]
    for entry in [b, *(e["resource"] for e in b["entry"])]:
        assert entry["meta"]["profile"] == [
            f"{HUB_FHIR_BASE}/StructureDefinition/{PROFILES[entry['resourceType']]}"]


def test_every_hub_url_follows_the_canonical_base() -> None:
    ns = Namespaces.for_base("https://s117.example.nhs.uk")
    text = orjson.dumps(_build(ns=ns, source_endpoint="https://s117.example.nhs.uk/fhir")).decode()
    assert "https://s117-hub.localhost" not in text
    assert '"system":"https://s117.example.nhs.uk/fhir/CodeSystem/s117-event"' in text
    assert "https://s117.example.nhs.uk/fhir/StructureDefinition/Extension-S117-Determination" in text
    assert "https://s117.example.nhs.uk/fhir/StructureDefinition/S117-EpisodeOfCare" in text


def test_messages_under_two_bases_alternated_each_name_their_own() -> None:
    # The URLs are formatted once per base (hub/fhir/messages.py `_urls`): alternating
    # bases, and a base made again equal to one before, each message names only its own.
    bases = ["https://a.example.nhs.uk", "https://b.example.nhs.uk", "https://a.example.nhs.uk"]
    for base in bases * 2:
        other = next(b for b in bases if b != base)
        text = orjson.dumps(_build(ns=Namespaces.for_base(base), source_endpoint=f"{base}/fhir")).decode()
        assert f"{base}/fhir/StructureDefinition/S117-MessageBundle" in text
        assert f"{base}/fhir/StructureDefinition/Extension-S117-Determination" in text
        assert other not in text and "https://s117-hub.localhost" not in text


def test_no_dict_is_shared_between_two_messages() -> None:
    first, second = _build(), _build()
    first["meta"]["profile"].append("changed")
    for resource in (e["resource"] for e in first["entry"]):
        resource["meta"]["profile"].append("changed")
    assert "changed" not in orjson.dumps(second).decode()


def test_icb_recipient_is_named_by_ods_code() -> None:
    b = _build("entitlement-started-responsibility-only")
    (header,) = _resources(b, "MessageHeader")
    assert header["destination"][0]["receiver"]["identifier"] == {
        "system": ODS_ORGANIZATION_SYSTEM,
        "value": "QU9",
    }


def test_patient_identifiers_with_identity() -> None:
    (patient,) = _resources(_build(), "Patient")
    assert patient["identifier"] == [
        {"system": HUB_PERSON_ID_SYSTEM, "value": examples.PERSON_ID},
        {"system": NHS_NUMBER_SYSTEM, "value": examples.NHS_NUMBER},
    ]
    assert patient["name"] == [{"use": "official", "family": "Testperson", "given": ["Alex"]}]
    assert patient["birthDate"] == "1980-02-29"
    assert patient["address"] == [{"postalCode": "HP20 1AA"}]


def test_encounter_carries_uk_core_legal_status_and_hospital() -> None:
    (enc,) = _resources(_build(), "Encounter")
    assert enc["class"]["code"] == "IMP"
    assert enc["period"] == {"start": "2024-01-08"}
    assert enc["serviceProvider"]["identifier"] == {"system": ODS_ORGANIZATION_SYSTEM, "value": "RX3"}
    (ext,) = enc["extension"]
    assert ext["url"] == LEGAL_STATUS_EXTENSION_URL
    parts = {p["url"]: p["valueCodeableConcept"]["coding"][0] for p in ext["extension"]}
    assert parts["legalStatusContext"]["code"] == "discharge"  # has left hospital
    assert parts["legalStatusClassification"] == {
        "system": LEGAL_STATUS_ENGLAND_SYSTEM,
        "code": "03",
        "display": examples.LEGAL_STATUS_03,
    }
    assert enc["status"] == "finished"


def test_encounter_context_admission_while_detained() -> None:
    (enc,) = _resources(_build("responsibility-transferred"), "Encounter")
    parts = {p["url"]: p["valueCodeableConcept"]["coding"][0] for p in enc["extension"][0]["extension"]}
    assert parts["legalStatusContext"]["code"] == "admission"
    assert enc["status"] == "in-progress"
    assert enc["period"] == {"start": "2025-02-03"}


def test_episode_of_care_entitlement_and_responsibility() -> None:
    (eoc,) = _resources(_build(), "EpisodeOfCare")
    assert eoc["status"] == "active"
    assert eoc["period"] == {"start": "2024-03-15"}
    assert eoc["managingOrganization"]["identifier"] == {"system": GSS_CODE_SYSTEM, "value": "E06000060"}
    commissioner = [e for e in eoc["extension"] if e["url"] == EXT_RESPONSIBLE_COMMISSIONER]
    assert commissioner[0]["valueReference"]["identifier"] == {
        "system": ODS_ORGANIZATION_SYSTEM,
        "value": "QU9",
    }
    aspects = {
        next(p["valueCode"] for p in e["extension"] if p["url"] == "aspect")
        for e in eoc["extension"]
        if e["url"] == EXT_DETERMINATION
    }
    assert aspects == {"event", "entitlement", "responsible-council", "responsible-commissioner", "next-review"}
    assert "Ordinarily resident in Buckinghamshire" in _text(_build())


@pytest.mark.parametrize(
    ("end", "entitled", "detained", "expected"),
    [
        ("2025-01-01", False, False, "finished"),
        (None, True, False, "active"),
        (None, False, True, "planned"),
        (None, False, False, "cancelled"),
    ],
)
def test_episode_status_follows_entitlement(
    end: str | None, entitled: bool, detained: bool, expected: str
) -> None:
    from datetime import date

    status = dataclasses.replace(
        CASES["entitlement-started-all-groups"]["status"],
        entitled=entitled,
        detained=detained,
        entitlement_end=date.fromisoformat(end) if end else None,
    )
    b = _build(status=status)
    (eoc,) = _resources(b, "EpisodeOfCare")
    assert eoc["status"] == expected
    if end:
        assert eoc["period"] == {"start": "2024-03-15", "end": end}
    validate_message(b)


# --- field groups: what is left out really is absent -------------------------------


def test_field_group_names_are_the_documented_ones() -> None:
    assert FIELD_GROUPS == {
        "identity",
        "demographics",
        "address",
        "legal-status",
        "responsibility",
        "explanations",
        "workflow",
    }


def test_unknown_field_group_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown field group"):
        _build(include=frozenset({"identity", "nhs-number"}))


def test_no_groups_leaves_only_the_hub_person_id() -> None:
    b = _build(include=frozenset())
    validate_message(b)
    (patient,) = _resources(b, "Patient")
    assert patient == {
        "resourceType": "Patient",
        "id": patient["id"],
        "meta": {"profile": [f"{HUB_FHIR_BASE}/StructureDefinition/S117-Patient"]},
        "identifier": [{"system": HUB_PERSON_ID_SYSTEM, "value": examples.PERSON_ID}],
    }
    assert not _resources(b, "Encounter")
    (eoc,) = _resources(b, "EpisodeOfCare")
    assert "managingOrganization" not in eoc
    text = _text(b)
    for secret in (
        examples.NHS_NUMBER,
        NHS_NUMBER_SYSTEM,
        "Testperson",
        "Alex",
        "1980-02-29",
        "HP20",
        LEGAL_STATUS_EXTENSION_URL,
        "RX3",
        "QU9",
        "E06000060",  # the recipient's own code is in destination: check below
    ):
        if secret == "E06000060":
            assert text.count(secret) == 1  # the receiver identifier only (endpoint: urn:uuid)
        else:
            assert secret not in text, secret


@pytest.mark.parametrize(
    ("group", "needles"),
    [
        (IDENTITY, [examples.NHS_NUMBER, NHS_NUMBER_SYSTEM]),
        (DEMOGRAPHICS, ["Testperson", "Alex", "1980-02-29", "birthDate"]),
        (ADDRESS, ["HP20 1AA", "postalCode"]),
        (LEGAL_STATUS, [LEGAL_STATUS_EXTENSION_URL, "Encounter", "RX3", "2024-01-08"]),
        (RESPONSIBILITY, ["managingOrganization", EXT_RESPONSIBLE_COMMISSIONER, "QU9"]),
        (EXPLANATIONS, [EXT_DETERMINATION, "Ordinarily resident", "Worcs 4.4.1"]),
    ],
)
def test_each_group_is_absent_exactly_when_excluded(group: str, needles: list[str]) -> None:
    with_all = _text(_build())
    without = _build(include=FIELD_GROUPS - {group})
    validate_message(without)
    text = _text(without)
    for needle in needles:
        assert needle in with_all, needle
        assert needle not in text, f"{needle!r} present although {group!r} excluded"


def test_identity_excluded_hides_nhs_number_in_any_spelling() -> None:
    text = _text(_build(include=FIELD_GROUPS - {IDENTITY}))
    assert examples.NHS_NUMBER not in text
    assert "999 000 0018" not in text and "999-000-0018" not in text


def test_build_is_deterministic_and_json_serialisable() -> None:
    a, b = _build(), _build()
    assert a == b
    assert orjson.loads(orjson.dumps(a)) == a


def test_messages_share_no_mutable_state() -> None:
    a = _build()
    a["entry"][3]["resource"]["type"][0]["text"] = "tampered"
    a["entry"][0]["resource"]["sender"]["display"] = "tampered"
    a["entry"][2]["resource"]["subject"]["reference"] = "tampered"
    b = _build()
    assert "tampered" not in _text(b)
    assert b["entry"][3]["resource"]["patient"]["reference"] != "tampered"


def test_naive_sent_at_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        _build(sent_at=datetime(2024, 3, 18, 9, 30))


def test_blank_explanations_are_left_out() -> None:
    status = dataclasses.replace(
        CASES["entitlement-started-all-groups"]["status"],
        entitlement=Determination(None, "", ""),
    )
    event = dataclasses.replace(CASES["entitlement-started-all-groups"]["event"], summary="")
    b = _build(status=status, event=event)
    validate_message(b)
    assert '"valueString":""' not in _text(b)


def test_no_legal_status_display_omits_display() -> None:
    b = _build(legal_status_display=None)
    validate_message(b)
    (enc,) = _resources(b, "Encounter")
    coding = enc["extension"][0]["extension"][1]["valueCodeableConcept"]["coding"][0]
    assert "display" not in coding


# --- validation ------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_case_validates(case: str) -> None:
    validate_message(_build(case))


def _problems(bundle: dict[str, Any]) -> list[str]:
    with pytest.raises(FhirMessageInvalid) as info:
        validate_message(bundle)
    assert str(info.value).startswith("invalid FHIR message")
    return info.value.problems


def test_r4b_structural_error_is_reported_clearly() -> None:
    b = _build()
    del b["entry"][0]["resource"]["source"]
    (problem,) = _problems(b)
    assert problem.startswith("R4B: entry.0.resource.source")


def test_bundle_type_binding_checked() -> None:
    b = _build()
    b["type"] = "messagex"  # fhir.resources accepts this
    assert any("Bundle.type" in p for p in _problems(b))


def test_legal_status_code_must_be_in_england_codesystem() -> None:
    b = _build()
    coding = b["entry"][2]["resource"]["extension"][0]["extension"][1]["valueCodeableConcept"]["coding"][0]
    coding["code"] = "11"  # no code 11 in the England list
    assert any("'11' is not in" in p for p in _problems(b))


def test_wales_legal_status_system_rejected() -> None:
    b = _build()
    coding = b["entry"][2]["resource"]["extension"][0]["extension"][1]["valueCodeableConcept"]["coding"][0]
    coding["system"] = "https://fhir.hl7.org.uk/CodeSystem/UKCore-LegalStatusClassificationWales"
    assert any("no coding from" in p for p in _problems(b))


def test_legal_status_display_must_match() -> None:
    b = _build(legal_status_display="Formally detained under Mental Health Act Section 2")
    assert any("does not match" in p for p in _problems(b))


def test_event_code_must_be_in_our_codesystem() -> None:
    b = _build()
    b["entry"][0]["resource"]["eventCoding"]["code"] = "s117-made-up"
    assert any("'s117-made-up' is not in" in p for p in _problems(b))


def test_nhs_number_system_and_check_digit() -> None:
    b = _build()
    b["entry"][1]["resource"]["identifier"][1]["system"] = "https://fhir.nhs.uk/Id/nhs-number-x"
    problems = _problems(b)
    assert any("not an allowed patient identifier system" in p for p in problems)
    assert any("looks like an NHS number" in p for p in problems)

    b = _build(patient=dataclasses.replace(examples.PATIENT, nhs_number="9990000019"))
    assert any("check digit" in p for p in _problems(b))


def test_references_must_resolve() -> None:
    b = _build()
    b["entry"][0]["resource"]["focus"][0]["reference"] = "EpisodeOfCare/elsewhere"
    assert any("does not resolve" in p for p in _problems(b))


def test_logical_reference_systems_checked() -> None:
    b = _build()
    b["entry"][3]["resource"]["managingOrganization"]["identifier"]["system"] = "urn:mystery"
    assert any("logical reference" in p for p in _problems(b))


def test_episode_status_binding_checked() -> None:
    b = _build()
    b["entry"][3]["resource"]["status"] = "zzz"  # fhir.resources accepts this
    assert any("EpisodeOfCare.status" in p for p in _problems(b))


def test_header_must_come_first_and_fullurls_unique() -> None:
    b = _build()
    b["entry"].reverse()
    assert any("first entry" in p for p in _problems(b))
    b = _build()
    b["entry"][2]["fullUrl"] = b["entry"][1]["fullUrl"]
    assert any("duplicate fullUrl" in p for p in _problems(b))


def test_extension_value_xor_extensions() -> None:
    b = _build()
    b["entry"][2]["resource"]["extension"][0]["valueString"] = "x"  # fhir.resources accepts this
    assert any("ext-1" in p for p in _problems(b))


def test_validation_does_not_mutate() -> None:
    b = _build()
    before = copy.deepcopy(b)
    validate_message(b)
    assert b == before


# --- golden files --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    bundle = _build(name)
    validate_message(bundle)
    path = GOLDEN_DIR / f"{name}.json"
    rendered = orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n"
    if os.environ.get("S117_UPDATE_GOLDEN") == "1":
        path.write_bytes(rendered)
    assert path.exists(), f"{path} missing: run with S117_UPDATE_GOLDEN=1"
    golden = orjson.loads(path.read_bytes())
    validate_message(golden)
    assert bundle == golden, f"{name} differs from {path}; S117_UPDATE_GOLDEN=1 rewrites it"
    assert rendered == path.read_bytes()


def test_golden_dir_has_no_strays() -> None:
    assert {p.stem for p in GOLDEN_DIR.glob("*.json")} == set(CASES)


# --- agreement with the rest of the hub -------------------------------------------------


def test_refdata_legal_status_descriptions_are_valid_displays() -> None:
    """The delivery layer takes legal_status_display from refdata: it must pass validation."""
    from hub.refdata.loader import load_reference_data

    refdata = load_reference_data()
    for code, display in codesystem_codes(LEGAL_STATUS_ENGLAND_SYSTEM).items():
        status = refdata.legal_status(code)
        assert status is not None and status.description == display, code


@pytest.mark.parametrize("flag", ["discharged_from_s117", "died"])
def test_episode_finished_on_discharge_or_death(flag: str) -> None:
    status = dataclasses.replace(CASES["entitlement-started-all-groups"]["status"], **{flag: True})
    (eoc,) = _resources(_build(status=status), "EpisodeOfCare")
    assert eoc["status"] == "finished"


def test_determination_rule_is_carried_when_named() -> None:
    status = dataclasses.replace(
        CASES["entitlement-started-all-groups"]["status"],
        refused_discharges=(
            Determination(None, "On a CTO: s117 cannot end.", "Worcs 16.2", rule="cto-blocks-discharge"),
        ),
    )
    b = _build(status=status)
    validate_message(b)
    (eoc,) = _resources(b, "EpisodeOfCare")
    refused = [
        e
        for e in eoc["extension"]
        if e["url"] == EXT_DETERMINATION and {"url": "aspect", "valueCode": "discharge-refused"} in e["extension"]
    ]
    assert {"url": "rule", "valueCode": "cto-blocks-discharge"} in refused[0]["extension"]


# --- the recipient's position and version ---------------------------------------


def test_position_travels_in_a_parameters_entry_and_reads_back_exactly() -> None:
    case = CASES["entitlement-started-with-position"]
    b = _build("entitlement-started-with-position")
    validate_message(b)
    (params,) = _resources(b, "Parameters")
    header = b["entry"][0]["resource"]
    assert {"reference": f"urn:uuid:{params['id']}"} in header["focus"]
    position = read_position(b)
    assert position is not None
    assert position.version == 1 and position.supersedes is None
    assert position.view == case["position"]
    assert position.view["roles"] == ["responsible-council"]
    assert position.view["responsible_council"] == "E06000060"
    assert position.view["reviews"] and position.view["reviews"][0]["kind"] == "first"


def test_a_correction_names_the_event_it_supersedes() -> None:
    b = _build("notification-corrected")
    validate_message(b)
    assert b["entry"][0]["resource"]["eventCoding"]["code"] == "s117-notification-corrected"
    position = read_position(b)
    assert (position.version, position.view) == (2, {"roles": []})
    assert position.supersedes == "5d41c3a4-7c1e-5f0b-9a55-2f0e4d6b1a01"
    assert position.reason.startswith("no longer the responsible council")


def test_a_position_needs_its_version() -> None:
    with pytest.raises(ValueError, match="version"):
        _build("entitlement-started-with-position", version=None)


def test_messages_without_a_position_have_no_parameters() -> None:
    assert not _resources(_build(), "Parameters")
    assert read_position(_build()) is None


@pytest.mark.parametrize(("given", "family", "expected"), [
    ("", "", None),  # no name recorded (a change that sent only the NHS number): no name, not ""
    ("Alex", "", [{"use": "official", "given": ["Alex"]}]),
    ("", "Smith", [{"use": "official", "family": "Smith"}]),
])
def test_a_name_the_source_never_sent_is_left_out_not_sent_empty(given: str, family: str, expected: Any) -> None:
    patient = dataclasses.replace(CASES["entitlement-started-all-groups"]["patient"], given_name=given,
                                  family_name=family)
    bundle = _build(patient=patient)
    assert _resources(bundle, "Patient")[0].get("name") == expected
    assert '""' not in _text(bundle)


def test_entry_uuids_are_the_message_ids_digest_as_four_version_4_uuids():
    """The four entry ids: the BLAKE2b-512 of the message id, 32 hex digits
    each, version nibble 4 and RFC 4122 variant (the digest's low two bits
    kept), as first written with string slices; stable across releases (a
    re-sent message is byte-identical)."""
    import uuid as uuid_module
    from hashlib import blake2b

    from hypothesis import given, settings, strategies as st

    from hub.fhir.messages import _entry_uuids, _entry_uuids_ascii

    def by_slices(message_id: str) -> tuple[str, ...]:
        h = blake2b(message_id.encode(), digest_size=64).hexdigest()
        return tuple(f"{s[0:8]}-{s[8:12]}-4{s[13:16]}-{'89ab'[int(s[16], 16) & 3]}{s[17:20]}-{s[20:32]}"
                     for s in (h[i:i + 32] for i in range(0, 128, 32)))

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.uuids().map(str), st.text(max_size=80)))
    def check(message_id: str) -> None:
        got = _entry_uuids(message_id)
        assert got == by_slices(message_id)
        assert _entry_uuids_ascii(message_id) == tuple(u.encode() for u in got)  # the renderer's bytes
        assert len(set(got)) == 4
        assert all(uuid_module.UUID(u).version == 4 and str(uuid_module.UUID(u)) == u for u in got)

    check()


def test_position_parameters_are_the_plain_lists_of_the_view():
    """`_position_params` (made for every view the dispatcher sends) grows its list with `+=` and reads
    the view with `in`: the same parameters, in the same order, as the first writing (kept here) for
    views with and without each key, several reviews and disputes, partial parts."""
    import itertools

    from hub.fhir.messages import _DISPUTE_PARTS, _REVIEW_PARTS, _SCALARS, _position_params

    def plain(position):
        params = [{"name": "role", "valueCode": role} for role in position.get("roles", [])]
        for name, key, kind in _SCALARS:
            if key in position:
                params.append({"name": name, kind: position[key]})
        for review in position.get("reviews", []):
            params.append({"name": "review", "part": [
                {"name": name, kind: review[key]} for name, key, kind in _REVIEW_PARTS if key in review]})
        for dispute in position.get("disputes", []):
            params.append({"name": "dispute", "part": [
                {"name": name, kind: dispute[key]} for name, key, kind in _DISPUTE_PARTS if key in dispute]})
        return params

    pieces = {
        "roles": [[], ["coordinating-council", "responsible-council"]],
        "entitled": [False, True], "entitlement_start": ["2024-03-31"], "entitlement_end": ["2025-01-02"],
        "ended_by": ["death"], "responsible_council": ["E06000060"], "responsible_commissioner": ["QU9"],
        "coordinating_council": ["E10000034"],
        "reviews": [[], [{"kind": "first", "due_on": "2024-06-30", "trigger": "left-hospital"},
                         {"kind": "annual", "due_on": "2025-06-30", "triggered_on": "2024-06-30", "citation": "c"}]],
        "disputes": [[], [{"dispute_id": "d-1", "kind": "council"}, {"dispute_id": "d-2"}]],
    }
    keys = list(pieces)
    tried = 0
    for n in range(len(keys) + 1):
        for chosen in itertools.combinations(keys, n):
            if n > 3 and tried % 7:
                tried += 1
                continue
            for values in itertools.product(*(pieces[k] for k in chosen)):
                position = dict(zip(chosen, values))
                assert _position_params(position) == plain(position), position
            tried += 1
    assert tried == 2 ** len(keys)
