"""FHIR R4 (UK Core) message Bundle -> canonical register change: the mapping
table, every rejection with the FHIR location it names, and the inbound
event CodeSystem kept equal to ChangeType."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.codesystem import CodeSystem

from adapters.fhir_inbound import CHANGE_TYPE_SYSTEM, EXT_RESIDENCE_COUNCIL, map_message
from hub.domain.model import ChangeType
from hub.fhir.namespaces import EXT_EVENT_OCCURRED, ODS_ORGANIZATION_SYSTEM
from hub.ingest.contract import RegisterChangeIn

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "fhir_inbound"
NHS = "9990000018"

MH = "Bundle.entry[0].resource"
PAT = "Bundle.entry[1].resource"
ENC = "Bundle.entry[2].resource"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


DETAINED = load("detained.json")
LEFT = load("left_hospital.json")


def mutate(base: dict[str, Any], fn: Callable[[dict[str, Any]], Any]) -> bytes:
    d = copy.deepcopy(base)
    fn(d)
    return orjson.dumps(d)


def mh(d: dict) -> dict:
    return d["entry"][0]["resource"]


def pat(d: dict) -> dict:
    return d["entry"][1]["resource"]


def enc(d: dict) -> dict:
    return d["entry"][2]["resource"]


# --- the code system --------------------------------------------------------


def test_change_type_codesystem_codes_equal_the_domain_change_types():
    cs = json.loads((ROOT / "schemas" / "CodeSystem-s117-register-change-type.json").read_text())
    CodeSystem.model_validate(cs)
    assert cs["url"] == CHANGE_TYPE_SYSTEM
    assert [c["code"] for c in cs["concept"]] == [t.value for t in ChangeType]
    assert cs["count"] == len(ChangeType)


def test_fixtures_are_valid_fhir_r4_bundles():
    for name in ("detained.json", "left_hospital.json"):
        Bundle.model_validate(load(name))


# --- mapping -----------------------------------------------------------------


def test_detention_maps_every_field_of_the_table():
    r = map_message(orjson.dumps(DETAINED))
    assert r.ok, r.problems
    assert r.change == {
        "change_type": "detained",
        "source_message_id": "RIO-MSG-0001",
        "source_system": "RiO",
        "legal_status_code": "03",
        "hospital_ods": "RNU",
        "effective_date": "2025-03-01",
        "residence_la_gss": "E06000060",
        "gp_practice_ods": "K82001",
        "person": {"nhs_number": NHS, "family_name": "TESTPATIENT", "given_name": "Alex",
                   "birth_date": "1980-05-17", "postcode": "HP20 1AA"},
    }
    RegisterChangeIn.model_validate(r.change)
    assert r.message_header_id == mh(DETAINED)["id"]
    assert r.origins["person.nhs_number"] == f"{PAT}.identifier[0].value"
    assert r.origins["legal_status_code"] == f"{ENC}.extension[0].extension[1].valueCodeableConcept.coding[0].code"
    assert r.origins["effective_date"] == f"{ENC}.period.start"
    assert r.location_of("person") == f"{PAT}.identifier[0].value"
    assert r.location_of("discharge.reasons") == "Bundle"


def test_left_hospital_takes_the_period_end():
    r = map_message(orjson.dumps(LEFT))
    assert r.ok, r.problems
    assert r.change["change_type"] == "left-hospital"
    assert r.change["effective_date"] == "2025-06-09"
    assert r.origins["effective_date"] == f"{ENC}.period.end"


@pytest.mark.parametrize(("start", "day"), [
    ("2025-05-31T23:30:00Z", "2025-06-01"),         # 00:30 BST on 1 June, given in UTC
    ("2025-06-01T00:30:00+01:00", "2025-06-01"),    # the same instant, given in BST
    ("2025-05-31T23:30:00+00:00", "2025-06-01"),
    ("2025-05-31T22:59:00Z", "2025-05-31"),         # 23:59 BST on 31 May
    ("2025-01-10T23:30:00Z", "2025-01-10"),         # GMT: UTC's day
    ("2025-01-11T00:30:00+01:00", "2025-01-10"),    # given an hour ahead in winter: 23:30 on the 10th in England
    ("2025-06-01", "2025-06-01"),                   # a date is its own day
])
def test_a_datetime_is_the_day_it_falls_on_in_england(start: str, day: str) -> None:
    """Encounter.period.start as a dateTime with a zone (R4 requires one with a time): the detention's day
    is the day that instant falls on in England (was: the first ten characters, so 23:30Z on 31 May, 00:30
    BST on 1 June, was a detention on 31 May)."""
    r = map_message(mutate(DETAINED, lambda d: enc(d)["period"].__setitem__("start", start)))
    assert r.ok, r.problems
    assert r.change["effective_date"] == day


def _event_occurred(d: dict, code: str, when: str = "2025-04-01") -> None:
    mh(d)["eventCoding"]["code"] = code
    mh(d)["extension"] = [{"url": EXT_EVENT_OCCURRED, "valueDate": when}]


def _references(d: dict) -> None:
    """serviceProvider and generalPractitioner as references to Organization entries, Type/id style."""
    d["entry"].append({"fullUrl": "https://trust.example/fhir/Organization/hosp", "resource": {
        "resourceType": "Organization", "id": "hosp",
        "identifier": [{"system": ODS_ORGANIZATION_SYSTEM, "value": "RNU"}]}})
    d["entry"].append({"fullUrl": "urn:uuid:7d1f0000-0000-4000-8000-000000000009", "resource": {
        "resourceType": "Organization", "id": "gp",
        "identifier": [{"system": ODS_ORGANIZATION_SYSTEM, "value": "K82001"}]}})
    enc(d)["serviceProvider"] = {"reference": "Organization/hosp"}
    pat(d)["generalPractitioner"] = [{"reference": "urn:uuid:7d1f0000-0000-4000-8000-000000000009"}]


def _no_fixed_abode(d: dict) -> None:
    pat(d)["address"] = [{"use": "home", "postalCode": "ZZ99 3VZ"}]


def _patient_focus_moved(d: dict) -> None:
    _event_occurred(d, "moved", "2025-07-01")
    mh(d)["focus"] = [{"reference": d["entry"][1]["fullUrl"]}]


def _old_and_home_addresses(d: dict) -> None:
    home = pat(d)["address"][0]
    pat(d)["address"] = [{"use": "old", "postalCode": "OX3 7JX"}, {**home, "postalCode": "hp20 1aa"}]


def _bundle_identifier_absent(d: dict) -> None:
    del d["identifier"]


MAPPED: list[tuple[str, Callable[[dict], Any], dict[str, Any]]] = [
    ("section changed dated by EventOccurred", lambda d: _event_occurred(d, "section-changed"),
     {"change_type": "section-changed", "effective_date": "2025-04-01"}),
    ("EventOccurred agreeing with period.start", lambda d: _event_occurred(d, "detained", "2025-03-01"),
     {"effective_date": "2025-03-01"}),
    ("organisations by reference", _references, {"hospital_ods": "RNU", "gp_practice_ods": "K82001"}),
    ("no fixed abode pseudo-postcode", _no_fixed_abode, {"no_fixed_abode": True}),
    ("Patient as focus", _patient_focus_moved, {"change_type": "moved", "effective_date": "2025-07-01"}),
    ("home address, old one skipped", _old_and_home_addresses, {}),
    ("MessageHeader.id when no Bundle.identifier", _bundle_identifier_absent,
     {"source_message_id": DETAINED["entry"][0]["resource"]["id"]}),
]


@pytest.mark.parametrize(("case", "fn", "expected"), MAPPED, ids=[c[0] for c in MAPPED])
def test_mapping_variants(case: str, fn: Callable, expected: dict):
    r = map_message(mutate(DETAINED, fn))
    assert r.ok, r.problems
    for k, v in expected.items():
        assert r.change[k] == v
    RegisterChangeIn.model_validate(r.change)
    if case == "Patient as focus":
        assert "hospital_ods" not in r.change and "legal_status_code" not in r.change
    if case == "home address, old one skipped":
        assert r.change["person"]["postcode"] == "HP20 1AA"
    if case == "no fixed abode pseudo-postcode":
        assert "postcode" not in r.change["person"]


# --- rejections: each names its FHIR location and never quotes a value -------


def _set(path: Callable[[dict], dict], key: str, value: Any) -> Callable[[dict], None]:
    def fn(d: dict) -> None:
        path(d)[key] = value
    return fn


def _del(path: Callable[[dict], dict], key: str) -> Callable[[dict], None]:
    def fn(d: dict) -> None:
        del path(d)[key]
    return fn


def _wales_only(d: dict) -> None:
    coding = enc(d)["extension"][0]["extension"][1]["valueCodeableConcept"]["coding"][0]
    coding["system"] = "https://fhir.hl7.org.uk/CodeSystem/UKCore-LegalStatusClassificationWales"


def _two_nhs_numbers(d: dict) -> None:
    pat(d)["identifier"].append({"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"})


def _gss_wrong_system(d: dict) -> None:
    pat(d)["address"][0]["extension"][0]["valueIdentifier"]["system"] = "urn:example:not-gss"


def _unknown_resource(d: dict) -> None:
    d["entry"][1]["resource"]["resourceType"] = "Pateint"


def _header_not_first(d: dict) -> None:
    d["entry"].reverse()


def _dangling_subject(d: dict) -> None:
    enc(d)["subject"] = {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}


def _two_gps(d: dict) -> None:
    pat(d)["generalPractitioner"].append({"identifier": {"system": ODS_ORGANIZATION_SYSTEM, "value": "K82002"}})


def _gp_without_ods(d: dict) -> None:
    pat(d)["generalPractitioner"] = [{"display": "a surgery"}]


def _disagreeing_dates(d: dict) -> None:
    _event_occurred(d, "detained", "2025-03-02")


REJECTED: list[tuple[str, Callable[[dict], Any] | bytes, str, str]] = [
    ("not JSON", b"{not json", "Bundle", "invalid"),
    ("not a Bundle", b'{"resourceType": "Patient"}', "Bundle.resourceType", "invalid"),
    ("not a message", _set(lambda d: d, "type", "collection"), "Bundle.type", "value"),
    ("unknown resource type", _unknown_resource, f"{PAT}.resourceType", "value"),
    ("unknown element", _set(pat, "nickname", "Al"), f"{PAT}.nickname", "invalid"),
    ("bad birthDate datatype", _set(pat, "birthDate", "1980-13-45"), f"{PAT}.birthDate", "value"),
    ("bad period datatype", _set(enc, "period", {"start": "yesterday"}), f"{ENC}.period.start", "value"),
    ("header not first", _header_not_first, MH, "required"),
    ("no event[x]", _del(mh, "eventCoding"), f"{MH}.event[x]", "required"),
    ("eventUri instead of eventCoding", lambda d: mh(d).update(eventUri="http://example.org/e") or mh(d).pop("eventCoding"),
     f"{MH}.eventCoding", "not-supported"),
    ("foreign event system", lambda d: mh(d)["eventCoding"].update(system="http://example.org/events"),
     f"{MH}.eventCoding.system", "value"),
    ("unknown event code", lambda d: mh(d)["eventCoding"].update(code="admitted"), f"{MH}.eventCoding.code", "value"),
    ("dispute not carried", lambda d: mh(d)["eventCoding"].update(code="dispute-raised"),
     f"{MH}.eventCoding.code", "not-supported"),
    ("no MessageHeader.id", _del(mh, "id"), f"{MH}.id", "required"),
    ("no source name", lambda d: mh(d)["source"].pop("name"), f"{MH}.source.name", "required"),
    ("no focus", _del(mh, "focus"), f"{MH}.focus", "required"),
    ("focus unresolved", _set(mh, "focus", [{"reference": "Encounter/nope"}]), f"{MH}.focus[0].reference", "value"),
    ("no subject", _del(enc, "subject"), f"{ENC}.subject", "required"),
    ("subject unresolved", _dangling_subject, f"{ENC}.subject.reference", "value"),
    ("no period.start for a detention", _set(enc, "period", {}), f"{ENC}.period.start", "required"),
    ("partial period.start", _set(enc, "period", {"start": "2025-03"}), f"{ENC}.period.start", "value"),
    ("EventOccurred disagrees with period.start", _disagreeing_dates, f"{MH}.extension[0].valueDate", "value"),
    ("section change without a date", lambda d: mh(d)["eventCoding"].update(code="section-changed"),
     f"{MH}.extension", "required"),
    ("Wales classification only", _wales_only,
     f"{ENC}.extension[0].extension[1].valueCodeableConcept.coding", "value"),
    ("legal status without classification", lambda d: enc(d)["extension"][0]["extension"].pop(1),
     f"{ENC}.extension[0].extension", "required"),
    ("serviceProvider without ODS", _set(enc, "serviceProvider", {"display": "a hospital"}),
     f"{ENC}.serviceProvider", "value"),
    ("no NHS number", _set(pat, "identifier", [{"system": "urn:example:mrn", "value": "X1"}]),
     f"{PAT}.identifier", "required"),
    ("two NHS numbers", _two_nhs_numbers, f"{PAT}.identifier", "invalid"),
    ("partial birthDate", _set(pat, "birthDate", "1980"), f"{PAT}.birthDate", "value"),
    ("GSS under another system", _gss_wrong_system,
     f"{PAT}.address[0].extension[0].valueIdentifier.system", "value"),
    ("GP without ODS", _gp_without_ods, f"{PAT}.generalPractitioner", "value"),
    ("two GP practices", _two_gps, f"{PAT}.generalPractitioner", "invalid"),
]


@pytest.mark.parametrize(("case", "fn", "location", "code"), REJECTED, ids=[c[0] for c in REJECTED])
def test_rejections_name_the_fhir_location(case: str, fn: Callable | bytes, location: str, code: str):
    body = fn if isinstance(fn, bytes) else mutate(DETAINED, fn)
    r = map_message(body)
    assert not r.ok and r.change is None
    assert (location, code) in [(p.location, p.code) for p in r.problems], r.problems
    text = json.dumps([p.as_dict() for p in r.problems])
    for value in (NHS, "9990000026", "TESTPATIENT", "1980-13-45", "HP20", "yesterday"):
        assert value not in text


def test_the_extension_url_is_the_hubs():
    assert EXT_RESIDENCE_COUNCIL.startswith("https://s117-hub.localhost/fhir/StructureDefinition/")
    assert pat(DETAINED)["address"][0]["extension"][0]["url"] == EXT_RESIDENCE_COUNCIL


def test_rejected_message_keeps_its_ids_for_quarantine_and_response():
    r = map_message(mutate(DETAINED, _del(enc, "subject")))
    assert r.source_message_id == "RIO-MSG-0001"
    assert r.message_header_id == mh(DETAINED)["id"]


def test_inbound_resources_are_checked_against_the_hub_profiles():
    from hub.fhir.namespaces import HUB_FHIR_BASE

    r = map_message(mutate(DETAINED, lambda d: d["entry"][0]["resource"].update(
        meta={"profile": [f"{HUB_FHIR_BASE}/StructureDefinition/S117-Patient"]})))
    assert not r.ok
    assert ("Bundle.entry[0].resource.meta.profile[0]", "value") in {(p.location, p.code) for p in r.problems}
    enc = next(i for i, e in enumerate(DETAINED["entry"]) if e["resource"]["resourceType"] == "Encounter")
    r = map_message(mutate(DETAINED, lambda d: d["entry"][enc]["resource"].pop("subject")))
    assert not r.ok
    assert any(p.location == f"Bundle.entry[{enc}].resource.subject" and "S117-Encounter" in p.reason
               for p in r.problems), r.problems


def test_inbound_follows_the_configured_canonical_base():
    from hub.fhir.namespaces import Namespaces

    ns = Namespaces.for_base("https://s117.example.nhs.uk")
    text = json.dumps(DETAINED).replace("https://s117-hub.localhost", ns.base)
    assert map_message(text, ns).ok
    assert not map_message(json.dumps(DETAINED), ns).ok  # the default base's event system is foreign there
