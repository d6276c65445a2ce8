"""A child's detention's two fields (`expected_stay_weeks`, `ehc_plan_la_gss`: hub/domain/children.py) over HL7 v2
and FHIR, as over REST. HL7: PV2-10 (Estimated Length of Inpatient Stay, days, NM) in whole weeks rounded down
(84 days is 12 weeks, 83 days 11), ZU5-9 (hub-local) the EHC plan's council; FHIR: Encounter extensions
Extension-S117-ExpectedStayWeeks (valuePositiveInt) and Extension-S117-EhcPlanCouncil (valueIdentifier). Both on a
`detained` change only. A malformed value is refused naming the HL7 field (AE, nothing recorded) or the FHIR
location (422); the values are held to the contract as REST's are, with REST's reasons. Through the hub: a
child's A01 / FHIR detention expected to stay 84 days / 12 weeks brings the s85 notice at admission (83 days
does not), and the EHC plan's council named is told."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from adapters.fhir_inbound import EXT_EHC_PLAN_COUNCIL, EXT_EXPECTED_STAY_WEEKS, map_message
from adapters.hl7v2 import Disposition, map_adt
from hub.children import ChildNoticeScanner
from hub.domain.dates import england_day
from hub.fhir.namespaces import GSS_CODE_SYSTEM
from hub.ingest.contract import RegisterChangeIn
from hub.mllp import MllpServer
from hub.store.schema import disclosures

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ZU5_S3 = "ZU5|2025|3|3|1|202501061000|1"
HL7_NHS = "9990001006"
FHIR_NHS = "9990000018"
OTHER_NHS = "9434765919"
BUCKS, OXON = "E06000060", "E10000025"
ENC = "Bundle.entry[2].resource"
URL = "/v1/fhir/$process-message"
TODAY = england_day()
ADMITTED = TODAY - timedelta(days=3)
CHILD_BIRTH = TODAY.replace(year=TODAY.year - 14)
LONG_STAY, EHC = "s117-child-long-stay-notice", "s117-child-ehc-plan-notice"


# -- HL7 v2 ----------------------------------------------------------------------------------------------------

def a01(control_id: str = "RNU-A01-child", pv2_10: str | None = None, zu5_9: str | None = None,
        child: bool = False, name: str = "ADT_A01_s3_detained.hl7") -> str:
    """The fixture A01 (s3), with PV2-10 and ZU5-9 as given; `child`: a 14-year-old admitted 3 days ago."""
    text = (FIXTURES / "hl7v2" / name).read_bytes().decode()
    text = text.replace(text.split("|")[9], control_id, 1)  # MSH-10
    if pv2_10 is not None:
        text = text.replace("\rZU1|", "\rPV2" + "|" * 10 + pv2_10 + "\rZU1|") if "\rZU1|" in text else \
            text.replace("\rZU5|", "\rPV2" + "|" * 10 + pv2_10 + "\rZU5|")
    if zu5_9 is not None:
        zu5 = next(s for s in text.split("\r") if s.startswith("ZU5|"))
        text = text.replace(zu5, zu5 + "|||" + zu5_9)
    if child:
        text = text.replace("20250106", ADMITTED.strftime("%Y%m%d")).replace("19800214", CHILD_BIRTH.strftime("%Y%m%d"))
    return text


@pytest.mark.parametrize(("days", "weeks"), [("84", 12), ("83", 11), ("90", 12), ("84.0", 12), ("83.9", 11),
                                             ("+90", 12), ("7", 1), ("13", 1), ("14", 2), ("1826", 260),
                                             ("084", 12)])
def test_hl7_pv2_10_days_map_to_whole_weeks_rounded_down(days, weeks):
    r = map_adt(a01(pv2_10=days))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change["expected_stay_weeks"] == weeks
    assert r.hl7_field("expected_stay_weeks") == "PV2-10"
    RegisterChangeIn.model_validate(r.change)  # what REST would take


@pytest.mark.parametrize("days", ["0", "3", "6", "6.9"])
def test_hl7_pv2_10_under_a_week_is_not_carried_and_the_ack_says_so(days):
    r = map_adt(a01(pv2_10=days))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert "expected_stay_weeks" not in r.change
    assert any(n.startswith("PV2-10: an expected stay under 7 days") for n in r.notes), r.notes


@pytest.mark.parametrize(("days", "reason"), [
    ("twelve weeks", "is not a number"), ("12w", "is not a number"), ("1e3", "is not a number"),
    ("٨٤", "is not a number"), ("84^d", None), ("-1", "must not be negative"), ("-84.5", "must not be negative"),
    ("1827", "must be at most 1826 days"), ("9" * 5000, "must be at most 1826 days")])
def test_hl7_pv2_10_malformed_is_an_error_naming_pv2_10(days, reason):
    r = map_adt(a01(pv2_10=days))
    if reason is None:  # a component: PV2-10.1 is read ("84"), an NM has no components
        assert r.disposition is Disposition.CHANGE and r.change["expected_stay_weeks"] == 12
        return
    assert r.disposition is Disposition.ERROR
    assert [p.field for p in r.problems] == ["PV2-10"]
    assert r.problems[0].reason.startswith(reason), r.problems
    assert days not in r.problems[0].reason
    assert r.about == {"change_type": "detained", "person": {"nhs_number": HL7_NHS}, "hospital_ods": "RNU"}


def test_hl7_zu5_9_maps_to_ehc_plan_la_gss():
    r = map_adt(a01(zu5_9="e10000025^Oxfordshire County Council"))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change["ehc_plan_la_gss"] == OXON
    assert r.hl7_field("ehc_plan_la_gss") == "ZU5-9"
    RegisterChangeIn.model_validate(r.change)


def test_hl7_the_two_fields_are_read_on_a_detention_only():
    assert map_adt(a01(pv2_10="90", zu5_9=OXON)).change["expected_stay_weeks"] == 12
    # An A08 repeats PV2 as it stands: a change of legal status takes neither field (REST refuses them on it).
    a08 = a01("RNU-A08-child", pv2_10="90", zu5_9=OXON, name="ADT_A08_s2_to_s3_update.hl7")
    r = map_adt(a08)
    assert r.disposition is Disposition.CHANGE and r.change["change_type"] == "section-changed", r.problems
    assert "expected_stay_weeks" not in r.change and "ehc_plan_la_gss" not in r.change
    # Nor a CTO recall (ZU5-8), which takes neither; a malformed PV2-10 there is not read either.
    recall = a01(pv2_10="banana", zu5_9=OXON).replace(ZU5_S3 + "|||" + OXON, ZU5_S3 + "||cto-recall|" + OXON)
    r = map_adt(recall)
    assert r.disposition is Disposition.CHANGE and r.change["change_type"] == "cto-recalled", r.problems
    assert "expected_stay_weeks" not in r.change and "ehc_plan_la_gss" not in r.change


def test_hl7_pv2_twice_is_an_error_naming_pv2():
    text = a01(pv2_10="90")
    pv2 = next(s for s in text.split("\r") if s.startswith("PV2|"))
    r = map_adt(text.replace(pv2, pv2 + "\r" + pv2.replace("|90", "|30")))
    assert r.disposition is Disposition.ERROR
    assert [(p.field, p.reason) for p in r.problems] == [("PV2", "appears twice: the A01 message allows it once")]


@pytest.fixture
async def mllp(app_hub):
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    yield server
    server._sock.close()


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA|")).split("|")


def errs(ack: str) -> list[str]:
    return [s for s in ack.split("\r") if s.startswith("ERR|")]


async def decisions(app_hub) -> list[tuple[str, str]]:  # noqa: ANN001
    hub = app_hub.hub
    scanner = ChildNoticeScanner(hub.engine, hub.ref, hub.sharing, hub.protector, hub.settings.hub_endpoint,
                                 hub.settings.namespaces())
    await scanner.run_once()
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(disclosures.c.event_type, disclosures.c.recipient_org)
                                   .where(disclosures.c.event_type.like("s117-child-%")))).all()
    return sorted(tuple(r) for r in rows)


async def test_hl7_a01_of_a_child_expected_to_stay_84_days_brings_the_s85_notice_at_admission_83_does_not(
        app_hub, mllp):
    ack = await mllp.handle(a01("A01-84", pv2_10="84", zu5_9=OXON, child=True).encode())
    assert msa(ack)[1:3] == ["AA", "A01-84"], ack
    # Another child, expected to stay 83 days (11 weeks): told once in hospital 12 weeks, not at admission.
    ack = await mllp.handle(a01("A01-83", pv2_10="83", child=True).replace(HL7_NHS, OTHER_NHS).encode())
    assert msa(ack)[1:3] == ["AA", "A01-83"], ack
    # The first child's council (ordinary residence, PID-11.9: Bucks) and the EHC plan's (Oxfordshire) decided.
    assert await decisions(app_hub) == [(EHC, OXON), (LONG_STAY, BUCKS)]


@pytest.mark.parametrize(("sent", "reason"), [
    ("oxon", "(ehc_plan_la_gss) must be an ONS GSS code: E, W, S or N and 8 digits"),
    ("E99999999", "(ehc_plan_la_gss) is not an English social services authority (GSS) code")])
async def test_hl7_zu5_9_is_checked_as_rest_checks_ehc_plan_la_gss(app_hub, mllp, sent, reason):
    ack = await mllp.handle(a01("A01-ehc-bad", zu5_9=sent).encode())
    assert msa(ack)[1:3] == ["AE", "A01-ehc-bad"] and "quarantine id" in msa(ack)[3], ack
    (err,) = errs(ack)
    assert err.startswith("ERR|ZU5^1^9^") and reason in err, ack
    r = await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": app_hub.keys["trust"]},
                                json={"nhs_number": HL7_NHS})
    assert r.status_code == 404, r.text  # nothing recorded


async def test_hl7_malformed_pv2_10_is_ae_naming_pv2_10_and_nothing_recorded(app_hub, mllp):
    ack = await mllp.handle(a01("A01-stay-bad", pv2_10="-84").encode())
    assert msa(ack)[1:3] == ["AE", "A01-stay-bad"] and "quarantine id" in msa(ack)[3], ack
    (err,) = errs(ack)
    assert err.startswith("ERR|PV2^1^10^207&PV2-10 must not be negative"), ack
    assert "-84" not in err
    r = await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": app_hub.keys["trust"]},
                                json={"nhs_number": HL7_NHS})
    assert r.status_code == 404, r.text


# -- FHIR ------------------------------------------------------------------------------------------------------

def fhir(name: str = "detained.json", weeks: Any = None, council: Any = None, message_id: str | None = None,
         child: bool = False) -> dict[str, Any]:
    bundle = copy.deepcopy(json.loads((FIXTURES / "fhir_inbound" / name).read_text()))
    enc = bundle["entry"][2]["resource"]
    if weeks is not None:
        enc["extension"].append({"url": EXT_EXPECTED_STAY_WEEKS, "valuePositiveInt": weeks})
    if council is not None:
        enc["extension"].append({"url": EXT_EHC_PLAN_COUNCIL,
                                 "valueIdentifier": {"system": GSS_CODE_SYSTEM, "value": council}})
    if message_id is not None:
        bundle["identifier"]["value"] = message_id
        bundle["entry"][0]["resource"]["id"] = message_id
    if child:
        enc["period"]["start"] = ADMITTED.isoformat()
        bundle["entry"][1]["resource"]["birthDate"] = CHILD_BIRTH.isoformat()
    return bundle


def test_fhir_extensions_map_to_the_two_fields():
    r = map_message(orjson.dumps(fhir(weeks=12, council="e10000025 ")))
    assert r.ok, r.problems
    assert r.change["expected_stay_weeks"] == 12 and r.change["ehc_plan_la_gss"] == OXON
    assert r.location_of("expected_stay_weeks") == f"{ENC}.extension[1].valuePositiveInt"
    assert r.location_of("ehc_plan_la_gss") == f"{ENC}.extension[2].valueIdentifier.value"
    RegisterChangeIn.model_validate(r.change)


def test_fhir_the_child_fixture_maps_to_the_two_fields():
    """tests/fixtures/fhir_inbound/detained_child.json (the FHIR validator checks it against the package too)."""
    r = map_message((FIXTURES / "fhir_inbound" / "detained_child.json").read_bytes())
    assert r.ok, r.problems
    assert (r.change["expected_stay_weeks"], r.change["ehc_plan_la_gss"]) == (16, OXON)
    RegisterChangeIn.model_validate(r.change)


def test_fhir_the_two_extensions_are_read_on_a_detention_only():
    assert map_message(orjson.dumps(fhir(weeks=20, council=OXON))).change["expected_stay_weeks"] == 20
    # The Encounter sent again as it stands for its discharge: the admission's facts are not read.
    r = map_message(orjson.dumps(fhir("left_hospital.json", weeks=20, council=OXON)))
    assert r.ok, r.problems
    assert r.change["change_type"] == "left-hospital"
    assert "expected_stay_weeks" not in r.change and "ehc_plan_la_gss" not in r.change


def test_fhir_weeks_not_a_positive_int_are_refused_by_the_type_and_the_rest_go_to_ingest():
    for weeks in (0, -3, 12.5):  # FHIR's own positiveInt (fhir.resources), at the element
        r = map_message(orjson.dumps(fhir(weeks=weeks)))
        assert [(p.location, p.code) for p in r.problems] == [(f"{ENC}.extension[1].valuePositiveInt", "value")]
    # A positiveInt the contract does not take (over 260 weeks) is carried as sent: ingest refuses it, as on REST.
    r = map_message(orjson.dumps(fhir(weeks=261)))
    assert r.ok and r.change["expected_stay_weeks"] == 261, r.problems


@pytest.mark.parametrize(("ext", "location", "code"), [
    ({"url": EXT_EXPECTED_STAY_WEEKS, "valueInteger": 12}, "extension[1].valuePositiveInt", "required"),
    ({"url": EXT_EHC_PLAN_COUNCIL, "valueIdentifier": {"system": "urn:oid:2.16.840.1.113883.2.1.3.2.4.18.48",
                                                       "value": OXON}}, "extension[1].valueIdentifier.system", "value"),
    ({"url": EXT_EHC_PLAN_COUNCIL, "valueIdentifier": {"system": GSS_CODE_SYSTEM}}, "extension[1].valueIdentifier",
     "required"),
])
def test_fhir_a_malformed_extension_is_a_problem_at_its_location(ext, location, code):
    bundle = fhir()
    bundle["entry"][2]["resource"]["extension"].append(ext)
    r = map_message(orjson.dumps(bundle))
    assert not r.ok
    assert [(p.location, p.code) for p in r.problems] == [(f"{ENC}.{location}", code)]


@pytest.mark.parametrize("url", [EXT_EXPECTED_STAY_WEEKS, EXT_EHC_PLAN_COUNCIL])
def test_fhir_two_of_one_extension_are_refused(url):
    bundle = fhir(weeks=12, council=OXON)
    enc = bundle["entry"][2]["resource"]
    enc["extension"].append(next(e for e in enc["extension"] if e["url"] == url))
    r = map_message(orjson.dumps(bundle))
    assert [(p.location, p.code) for p in r.problems] == [(f"{ENC}.extension", "invalid")]


async def post(app_hub, bundle: dict[str, Any]):  # noqa: ANN001, ANN201
    return await app_hub.http.post(URL, content=orjson.dumps(bundle), headers={
        "X-API-Key": app_hub.keys["trust"], "Content-Type": "application/fhir+json"})


@pytest.mark.parametrize(("weeks", "told"), [(12, [(EHC, OXON), (LONG_STAY, BUCKS)]), (11, [(EHC, OXON)])])
async def test_fhir_detention_of_a_child_expected_to_stay_12_weeks_brings_the_s85_notice_at_admission(
        app_hub, weeks, told):
    r = await post(app_hub, fhir(weeks=weeks, council=OXON, child=True))
    assert r.status_code == 200, r.text
    assert await decisions(app_hub) == told


@pytest.mark.parametrize(("weeks", "council", "location", "reason"), [
    (261, None, "extension[1].valuePositiveInt", "must be a whole number of weeks from 1 to 260"),
    ("12", None, "extension[1].valuePositiveInt", "must be a whole number of weeks from 1 to 260"),
    (True, None, "extension[1].valuePositiveInt", "must be a whole number of weeks from 1 to 260"),
    (None, "oxon", "extension[1].valueIdentifier.value", "must be an ONS GSS code: E, W, S or N and 8 digits"),
    (None, "E99999999", "extension[1].valueIdentifier.value", "is not an English social services authority (GSS) code"),
])
async def test_fhir_values_are_checked_as_rest_checks_them_at_their_location(app_hub, weeks, council, location,
                                                                              reason):
    r = await post(app_hub, fhir(weeks=weeks, council=council, message_id="child-bad"))
    assert r.status_code == 422, r.text
    issues = r.json()["issue"]
    errors = [i for i in issues if i["severity"] == "error"]
    assert [(i["expression"], i["diagnostics"]) for i in errors] == [([f"{ENC}.{location}"], reason)], issues
    assert any(i["severity"] == "information" and "quarantin" in i["diagnostics"] for i in issues), issues
    lookup = await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": app_hub.keys["trust"]},
                                     json={"nhs_number": FHIR_NHS})
    assert lookup.status_code == 404, lookup.text
