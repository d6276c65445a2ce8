"""The successor of a split council (hazard H-03: `residence_before_detention_la_gss`) over FHIR
`$process-message` and council files, as over REST. FHIR: the Patient extension
Extension-S117-ResidenceBeforeDetentionCouncil (valueIdentifier, the GSS system); council files: the column
PRE_DETENTION_LA_GSS, appended at the end of both layouts (fixed width 598-606), read on ADDR_CHANGE. A malformed
value is refused at its FHIR location / `row N, column PRE_DETENTION_LA_GSS`; the value is held to the contract
as REST's is (a council in place today, a `moved` change only), with REST's reasons, named in the channel's terms
and quarantined. Through the hub: a Cumbria person undetermined after the 2023 split has Cumberland responsible
once a FHIR message or a council's row names it; the access policy decides the row as any ADDR_CHANGE."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.council_files import SWIFT_CSV, SWIFT_FIXED, map_file
from adapters.fhir_inbound import EXT_RESIDENCE_BEFORE_DETENTION_COUNCIL, map_message
from hub.clients import add_client
from hub.fhir.namespaces import GSS_CODE_SYSTEM
from hub.ingest.contract import RegisterChangeIn
from tests.unit.adapters.test_council_files import csv_file, fixed_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CUMBRIA, CUMBERLAND, WESTMORLAND = "E10000006", "E06000063", "E06000064"
OXFORDSHIRE = "E10000025"  # the council of the trust's hospital (RNU): coordinates while no council is responsible
NHS = "9990000026"
PAT = "Bundle.entry[1].resource"
URL = "/v1/fhir/$process-message"
ROW = {"RECORD_ID": "SW-1", "EVENT": "ADDR_CHANGE", "EFFECTIVE_DATE": "2026-01-05", "NHS_NO": NHS}


# -- FHIR: the mapping ---------------------------------------------------------------------------------------------

def moved(council: str = CUMBERLAND, message_id: str | None = None, event: str | None = None) -> dict[str, Any]:
    """The fixture moved_successor.json, its extension naming `council`."""
    bundle = copy.deepcopy(json.loads((FIXTURES / "fhir_inbound" / "moved_successor.json").read_text()))
    pat = bundle["entry"][1]["resource"]
    pat["extension"][0]["valueIdentifier"]["value"] = council
    if message_id is not None:
        bundle["identifier"]["value"] = message_id
        bundle["entry"][0]["resource"]["id"] = message_id
    if event is not None:
        bundle["entry"][0]["resource"]["eventCoding"]["code"] = event
    return bundle


def test_fhir_the_fixture_maps_to_the_successor_alone():
    """tests/fixtures/fhir_inbound/moved_successor.json (the FHIR validator checks it against the package too)."""
    r = map_message((FIXTURES / "fhir_inbound" / "moved_successor.json").read_bytes())
    assert r.ok, r.problems
    assert r.change["change_type"] == "moved"
    assert r.change["residence_before_detention_la_gss"] == CUMBERLAND
    assert "residence_la_gss" not in r.change and "no_fixed_abode" not in r.change
    assert r.location_of("residence_before_detention_la_gss") == f"{PAT}.extension[0].valueIdentifier.value"
    RegisterChangeIn.model_validate(r.change)  # what REST would take


def test_fhir_the_code_is_read_in_capitals_and_a_move_may_come_with_it():
    bundle = moved(council=" e06000064")
    bundle["entry"][1]["resource"]["address"] = [{"use": "home", "extension": [{
        "url": "https://s117-hub.localhost/fhir/StructureDefinition/Extension-S117-ResidenceCouncil",
        "valueIdentifier": {"system": GSS_CODE_SYSTEM, "value": "E06000060"}}]}]
    r = map_message(orjson.dumps(bundle))
    assert r.ok, r.problems
    assert (r.change["residence_before_detention_la_gss"], r.change["residence_la_gss"]) == (WESTMORLAND, "E06000060")


@pytest.mark.parametrize(("identifier", "location", "code"), [
    ({"system": GSS_CODE_SYSTEM}, "extension[0].valueIdentifier", "required"),
    ({"system": "urn:oid:2.16.840.1.113883.2.1.3.2.4.18.48", "value": CUMBERLAND},
     "extension[0].valueIdentifier.system", "value"),
    ({"value": CUMBERLAND}, "extension[0].valueIdentifier.system", "value"),
], ids=["no-value", "another-system", "no-system"])
def test_fhir_a_malformed_extension_is_a_problem_at_its_location(identifier, location, code):
    bundle = moved()
    bundle["entry"][1]["resource"]["extension"][0]["valueIdentifier"] = identifier
    r = map_message(orjson.dumps(bundle))
    assert not r.ok
    assert [(p.location, p.code) for p in r.problems] == [(f"{PAT}.{location}", code)]


def test_fhir_another_value_type_is_a_problem_at_its_location():
    bundle = moved()
    bundle["entry"][1]["resource"]["extension"][0] = {"url": EXT_RESIDENCE_BEFORE_DETENTION_COUNCIL,
                                                      "valueString": CUMBERLAND}
    r = map_message(orjson.dumps(bundle))
    assert [(p.location, p.code) for p in r.problems] == [(f"{PAT}.extension[0].valueIdentifier", "required")]


def test_fhir_two_of_the_extension_are_refused():
    bundle = moved()
    ext = bundle["entry"][1]["resource"]["extension"]
    ext.append(copy.deepcopy(ext[0]))
    ext[1]["valueIdentifier"]["value"] = WESTMORLAND
    r = map_message(orjson.dumps(bundle))
    assert [(p.location, p.code) for p in r.problems] == [(f"{PAT}.extension", "invalid")]


def test_fhir_on_another_change_it_is_carried_for_ingest_to_refuse_by_name():
    """Not dropped unseen (the person would stay with no council): mapped, and refused by ingest as REST's."""
    r = map_message(orjson.dumps(moved(event="gp-changed")))
    assert r.ok, r.problems
    assert r.change["residence_before_detention_la_gss"] == CUMBERLAND
    assert r.location_of("residence_before_detention_la_gss") == f"{PAT}.extension[0].valueIdentifier.value"


# -- council files: the mapping ------------------------------------------------------------------------------------

BOTH = pytest.mark.parametrize("layout", [SWIFT_CSV, SWIFT_FIXED], ids=["csv", "fixed"])


def rows(layout, values: list[dict[str, str]]):  # noqa: ANN001, ANN201
    data = csv_file(values) if layout is SWIFT_CSV else fixed_file(values)
    mapping = map_file(data, layout)
    assert mapping.ok, mapping.problems
    return mapping.rows


def test_the_column_is_the_last_of_each_layout_and_earlier_columns_stay_where_they_were():
    assert SWIFT_CSV.columns[-1].name == SWIFT_FIXED.columns[-1].name == "PRE_DETENTION_LA_GSS"
    col = SWIFT_FIXED.columns[-1]
    assert (col.start, col.end, SWIFT_FIXED.record_length) == (598, 606, 606)
    assert SWIFT_FIXED.columns[-2].name == "END_DATE" and SWIFT_FIXED.columns[-2].end == 597


@BOTH
def test_an_addr_change_naming_only_the_successor_maps_to_the_field_with_no_residence(layout):
    [row] = rows(layout, [{**ROW, "PRE_DETENTION_LA_GSS": "e06000063"}])
    assert row.ok, row.problems
    assert row.data["change_type"] == "moved"
    assert row.data["residence_before_detention_la_gss"] == CUMBERLAND
    assert "residence_la_gss" not in row.data
    RegisterChangeIn.model_validate(row.data)


@BOTH
def test_an_addr_change_may_move_and_name_the_successor(layout):
    [row] = rows(layout, [{**ROW, "LA_GSS": "E06000060", "PRE_DETENTION_LA_GSS": CUMBERLAND}])
    assert (row.data["residence_la_gss"], row.data["residence_before_detention_la_gss"]) == ("E06000060", CUMBERLAND)


@BOTH
def test_an_addr_change_with_neither_still_needs_a_residence(layout):
    [row] = rows(layout, [ROW])
    assert [p.field for p in row.problems] == ["row 1, column LA_GSS"]
    assert "PRE_DETENTION_LA_GSS" in row.problems[0].reason


@BOTH
@pytest.mark.parametrize("text", ["E0600006", "CUMBERLAN", "06000063E"])
def test_a_value_not_a_gss_code_is_a_row_problem_naming_the_column(layout, text):
    [row] = rows(layout, [{**ROW, "PRE_DETENTION_LA_GSS": text}])
    assert not row.ok
    assert [(p.field, p.reason) for p in row.problems] == [
        ("row 1, column PRE_DETENTION_LA_GSS", "is not a GSS code (a letter and 8 digits, e.g. E06000060)")]
    assert row.about == {"change_type": "moved", "person": {"nhs_number": NHS}}  # the policy is still asked


@BOTH
def test_another_event_ignores_the_column_as_every_column_it_does_not_use(layout):
    [row] = rows(layout, [{**ROW, "EVENT": "REVIEW_DONE", "PRE_DETENTION_LA_GSS": "no code"}])
    assert row.ok, row.problems
    assert "residence_before_detention_la_gss" not in row.data


def test_an_export_that_stops_before_the_new_column_is_read_as_before():
    record = fixed_file([{**ROW, "LA_GSS": "E06000060"}]).decode().split("\n")[1]
    assert len(record) == 606
    data = f"HS117REG1E0600006020250302SWIFT\n{record[:597]}\n{record[:460]}\nT000000002\n".encode()
    got = map_file(data, SWIFT_FIXED).rows
    assert [r.ok for r in got] == [True, True] and all("residence_before_detention_la_gss" not in r.data for r in got)
    # A CSV whose header has no such column is read as before too.
    header = [c.name for c in SWIFT_CSV.columns if c.name != "PRE_DETENTION_LA_GSS"]
    [row] = map_file(csv_file([{**ROW, "LA_GSS": "E06000060"}], columns=header), SWIFT_CSV).rows
    assert row.ok and row.data["residence_la_gss"] == "E06000060"


# -- through the hub (in-process app) ------------------------------------------------------------------------------

async def split_person(app_hub) -> str:  # noqa: ANN001
    """A Cumbria resident detained in 2022 and discharged: after Cumbria's split (2023) no council is
    responsible; Oxfordshire (the hospital's council) coordinates."""
    base = {"source_system": "RiO", "person": {"nhs_number": NHS, "given_name": "Grace", "family_name": "Hopper"}}
    for n, change in enumerate((
        {"change_type": "detained", "effective_date": "2022-01-05", "legal_status_code": "03",
         "hospital_ods": "RNU", "gp_practice_ods": "K82001", "residence_la_gss": CUMBRIA},
        {"change_type": "left-hospital", "effective_date": "2022-03-01", "hospital_ods": "RNU"},
    )):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json={**base, "source_message_id": f"split-{n}", **change})
        assert r.status_code == 202, r.text
    person_id = r.json()["person_id"]
    body = await position(app_hub, person_id)
    assert body["responsible_council"] is None and body["coordinating_council"]["org"]["code"] == OXFORDSHIRE
    return person_id


async def position(app_hub, person_id: str) -> dict[str, Any]:  # noqa: ANN001
    r = await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 200, r.text
    return r.json()


async def post_fhir(app_hub, bundle: dict[str, Any]):  # noqa: ANN001, ANN201
    return await app_hub.http.post(URL, content=orjson.dumps(bundle), headers={
        "X-API-Key": app_hub.keys["trust"], "Content-Type": "application/fhir+json"})


def errors(r) -> list[tuple[list[str], str]]:  # noqa: ANN001
    issues = r.json()["issue"]
    assert any(i["severity"] == "information" and "quarantin" in i["diagnostics"] for i in issues), issues
    return [(i["expression"], i["diagnostics"]) for i in issues if i["severity"] == "error"]


async def test_fhir_a_move_naming_the_successor_makes_it_responsible(app_hub):
    person_id = await split_person(app_hub)
    r = await post_fhir(app_hub, moved())
    assert r.status_code == 200, r.text
    body = await position(app_hub, person_id)
    assert body["responsible_council"]["org"]["code"] == CUMBERLAND
    assert body["coordinating_council"] is None and body["responsibility_undetermined"] == []


@pytest.mark.parametrize(("council", "event", "reason"), [
    (CUMBRIA, None, "must be the GSS code of a council in place today: a successor of the split council the "
                    "person query's responsibility_undetermined names"),
    ("E99999999", None, "must be the GSS code of a council in place today: a successor of the split council the "
                        "person query's responsibility_undetermined names"),
    ("X1", None, "must be an ONS GSS code: E, W, S or N and 8 digits"),
    (CUMBERLAND, "gp-changed", "is not used by a 'gp-changed' change: send it on a change that takes it (or leave "
                               "it out)"),
], ids=["split-county", "no-council", "not-gss", "another-event"])
async def test_fhir_values_are_checked_as_rest_checks_them_at_their_location(app_hub, council, event, reason):
    person_id = await split_person(app_hub)
    bundle = moved(council=council, message_id="split-bad", event=event)
    if event == "gp-changed":
        bundle["entry"][1]["resource"]["generalPractitioner"] = [
            {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "K82001"}}]
    r = await post_fhir(app_hub, bundle)
    assert r.status_code == 422, r.text
    assert errors(r) == [([f"{PAT}.extension[0].valueIdentifier.value"], reason)]
    body = await position(app_hub, person_id)
    assert body["responsible_council"] is None  # nothing recorded
    held = (await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})).json()["items"]
    assert [(q["channel"], q["source_message_id"]) for q in held] == [("fhir", "split-bad")]


async def test_fhir_a_detention_carrying_it_is_refused_naming_the_extension(app_hub):
    bundle = json.loads((FIXTURES / "fhir_inbound" / "detained.json").read_text())
    bundle["entry"][1]["resource"]["extension"] = [{"url": EXT_RESIDENCE_BEFORE_DETENTION_COUNCIL,
                                                    "valueIdentifier": {"system": GSS_CODE_SYSTEM,
                                                                        "value": CUMBERLAND}}]
    r = await post_fhir(app_hub, bundle)
    assert r.status_code == 422, r.text
    assert errors(r) == [([f"{PAT}.extension[0].valueIdentifier.value"],
                          "is not used by a 'detained' change: send it on a change that takes it (or leave it out)")]


@pytest.fixture
async def councils(app_hub):  # noqa: ANN001, ANN201
    """Oxfordshire's and Cumberland's case systems, allowed to write to the register."""
    keys = {}
    for code, name in ((OXFORDSHIRE, "Oxfordshire"), (CUMBERLAND, "Cumberland")):
        keys[code] = {"X-API-Key": (await add_client(app_hub.hub.engine, name, code, "council",
                                                     ["register:write"]))[1]}
    return keys


async def send(app_hub, headers, data: bytes, fmt: str = "swift_csv") -> dict[str, Any]:  # noqa: ANN001
    r = await app_hub.http.post(f"/v1/council-files?format={fmt}", content=data,
                                headers={**headers, "Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    await app_hub.hub.files.wait(r.json()["file_id"])
    got = await app_hub.http.get(r.headers["location"], headers=headers)
    assert got.status_code == 200, got.text
    return got.json()


@pytest.mark.parametrize(("layout", "fmt"), [(SWIFT_CSV, "swift_csv"), (SWIFT_FIXED, "swift_fixed")])
async def test_file_the_coordinating_councils_row_naming_the_successor_makes_it_responsible(
        app_hub, councils, layout, fmt):
    person_id = await split_person(app_hub)
    rows_ = [{**ROW, "RECORD_ID": "OX-1", "PRE_DETENTION_LA_GSS": CUMBRIA},
             {**ROW, "RECORD_ID": "OX-2", "PRE_DETENTION_LA_GSS": CUMBERLAND}]
    data = csv_file(rows_) if layout is SWIFT_CSV else fixed_file(rows_, header="HS117REG1E1000002520260105SWIFT")
    report = await send(app_hub, councils[OXFORDSHIRE], data, fmt)
    [bad, good] = report["report"]
    assert (good["record_id"], good["status"]) == ("OX-2", "accepted"), good
    assert (bad["status"], bad["errors"]) == ("rejected", [{
        "field": "row 1, column PRE_DETENTION_LA_GSS",
        "reason": "must be the GSS code of a council in place today: a successor of the split council the person "
                  "query's responsibility_undetermined names"}]) and "quarantine_id" in bad, bad
    body = await position(app_hub, person_id)
    assert body["responsible_council"]["org"]["code"] == CUMBERLAND
    assert body["coordinating_council"] is None and body["responsibility_undetermined"] == []


async def test_file_a_council_with_no_role_for_the_person_gets_the_policys_row_error(app_hub):
    """Cumbria itself (abolished), each successor before it is named (neither responsible nor coordinating),
    and a council with nothing to do with the person: no role, each refused by the access policy with the one
    row error a row about someone not on the register gets (the whole entry but its row and RECORD_ID),
    audited, nothing kept (tests/unit/test_split_successor_refusal.py: REST and FHIR)."""
    from sqlalchemy import func, select

    from hub.store.schema import access_decisions, persons, quarantine, register_changes

    person_id = await split_person(app_hub)
    senders = {code: {"X-API-Key": (await add_client(app_hub.hub.engine, name, code, "council",
                                                     ["register:write"]))[1]}
               for code, name in ((CUMBRIA, "Cumbria"), (CUMBERLAND, "Cumberland"),
                                  (WESTMORLAND, "Westmorland and Furness"), ("E06000060", "Buckinghamshire"))}

    async def kept() -> list[int]:
        async with app_hub.hub.engine.connect() as conn:
            return [(await conn.execute(select(func.count()).select_from(t))).scalar_one()
                    for t in (persons, register_changes, quarantine)]

    before = await kept()
    entries = {}
    for n, (code, headers) in enumerate(senders.items()):
        report = await send(app_hub, headers, csv_file([
            {**ROW, "RECORD_ID": f"R-{n}", "PRE_DETENTION_LA_GSS": CUMBERLAND},
            {**ROW, "RECORD_ID": f"U-{n}", "NHS_NO": "9990000018", "PRE_DETENTION_LA_GSS": CUMBERLAND}]))
        for row in report["report"]:  # the entry but its row and RECORD_ID (the row named in its errors too)
            entries[(code, row["record_id"][0])] = orjson.loads(orjson.dumps(
                {k: v for k, v in row.items() if k not in ("row", "record_id")}).replace(
                f'"row {row["row"]}, '.encode(), b'"row N, '))
        assert report["rejected"] == 2 and report["accepted"] == 0, report
    first = entries[(CUMBRIA, "R")]
    assert (first["status"], first["rule"]) == ("rejected", "no-relationship"), first
    assert set(first) == {"status", "rule", "errors"}  # no quarantine_id: nothing kept
    assert [e["field"] for e in first["errors"]] == ["row N, column NHS_NO"]
    assert {k: e for k, e in entries.items() if e != first} == {}
    async with app_hub.hub.engine.connect() as conn:
        audited = (await conn.execute(
            select(access_decisions.c.org_code, access_decisions.c.rule, access_decisions.c.person_id)
            .where(access_decisions.c.channel == "file").order_by(access_decisions.c.decision_id))).all()
    assert [tuple(a) for a in audited] == [x for code in senders for x in (
        (code, "no-relationship", person_id), (code, "no-relationship", None))]
    assert await kept() == before
    assert (await position(app_hub, person_id))["responsible_council"] is None
