"""A `moved` change naming a successor of a split council that changes nothing (hazard H-03) is accepted
and noted in the person's history, and the sender is told, as a warning naming the field and why (no value
from the change, no person's details): REST's 202 body `warnings`, the FHIR response message's
OperationOutcome a `warning` issue at the extension, the council file's report row `accepted` with
`warnings` naming the column. Judged from the rules engine's note on the change, made in the transaction
that records it; a naming a child's stay in hospital uses (the s85 notice's council) is no warning."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from adapters.council_files import SWIFT_CSV, SWIFT_FIXED
from hub.clients import add_client
from hub.domain.agreements import AgreementBook
from hub.domain.children import addresses_a_stays_council
from hub.domain.model import ChangeType, RegisterChange
from hub.domain.rules.engine import evaluate
from hub.ingest import service
from hub.refdata.loader import load_reference_data
from hub.store.schema import register_changes
from tests.unit.adapters.test_council_files import csv_file, fixed_file
from tests.unit.test_split_successor_channels import (
    CUMBERLAND, NHS, OXFORDSHIRE, PAT, ROW, WESTMORLAND, moved, position, post_fhir, send, split_person,
)

FIELD = "residence_before_detention_la_gss"
BUCKS = "E06000060"  # a council in place today, no successor of any split
NOT_ONE = ("is not one of the councils the split council's area is split between (the person query's "
           "responsibility_undetermined names them): recorded in the person's history; the responsible council "
           "is unchanged")
NO_SPLIT = ("no council split awaits a successor for this person (the person query's responsibility_undetermined "
            "names none): recorded in the person's history; the responsible council is unchanged")
PERSONAL = (NHS, "9990000026", "Grace", "Hopper", "HOPPER")


async def post_move(app_hub, smid: str, council: str, on: str = "2026-01-05"):  # noqa: ANN001, ANN201
    return await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RiO", "source_message_id": smid, "change_type": "moved", "effective_date": on,
        "person": {"nhs_number": NHS}, FIELD: council})


def assert_nothing_personal(text: str) -> None:
    for value in PERSONAL:
        assert value not in text


# -- REST ----------------------------------------------------------------------------------------------------------

async def test_rest_a_council_not_a_successor_is_accepted_with_a_warning_naming_the_field(app_hub):
    person_id = await split_person(app_hub)
    r = await post_move(app_hub, "warn-1", BUCKS)
    assert r.status_code == 202, r.text
    assert r.json()["warnings"] == [{"field": FIELD, "reason": NOT_ONE}]
    assert_nothing_personal(r.text)
    body = await position(app_hub, person_id)
    assert body["responsible_council"] is None  # unchanged: still awaiting the successor
    assert [u["role"] for u in body["responsibility_undetermined"]] == ["responsible-council"]
    # Recorded (its history says so), and the same change again gets the first answer, warning included.
    async with app_hub.hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(register_changes)
                                .where(register_changes.c.person_id == person_id))).scalar_one()
    assert n == 3
    again = await post_move(app_hub, "warn-1", BUCKS)
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert again.json()["warnings"] == [{"field": FIELD, "reason": NOT_ONE}]
    # A move naming none has none.
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RiO", "source_message_id": "warn-4", "change_type": "moved",
        "effective_date": "2026-01-06", "person": {"nhs_number": NHS}, "residence_la_gss": BUCKS})
    assert r.status_code == 202, r.text
    assert "warnings" not in r.json()


async def test_rest_a_naming_with_no_split_awaiting_one_is_accepted_with_a_warning(app_hub):
    person_id = await split_person(app_hub)
    named = await post_move(app_hub, "warn-2", CUMBERLAND)
    assert named.status_code == 202, named.text
    assert "warnings" not in named.json()  # it made Cumberland responsible: nothing to warn of
    assert (await position(app_hub, person_id))["responsible_council"]["org"]["code"] == CUMBERLAND
    r = await post_move(app_hub, "warn-3", WESTMORLAND)
    assert r.status_code == 202, r.text
    assert r.json()["warnings"] == [{"field": FIELD, "reason": NO_SPLIT}]
    assert (await position(app_hub, person_id))["responsible_council"]["org"]["code"] == CUMBERLAND


async def test_rest_a_naming_a_childs_stay_uses_is_no_warning(app_hub):
    """A child in hospital under s2 (not qualifying: no council determined, so the rules' note says no split
    awaits a successor), resident in Cumbria before: the naming addresses the s85 long-stay notice (hub/domain/
    children.py `s85_council`), so it is not one that changes nothing."""
    base = {"source_system": "RiO", "person": {"nhs_number": NHS, "birth_date": "2012-03-01"}}
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        **base, "source_message_id": "child-1", "change_type": "detained", "effective_date": "2026-11-02",
        "legal_status_code": "02", "hospital_ods": "RNU", "residence_la_gss": "E10000006",
        "expected_stay_weeks": 20})
    assert r.status_code == 202, r.text
    r = await post_move(app_hub, "child-2", CUMBERLAND, on="2026-11-20")
    assert r.status_code == 202, r.text
    assert "warnings" not in r.json()
    # A council that is no successor of that stay's council is still told of.
    r = await post_move(app_hub, "child-3", BUCKS, on="2026-11-20")
    assert r.json()["warnings"] == [{"field": FIELD, "reason": NO_SPLIT}]


def test_the_202_body_states_its_warnings_in_the_openapi_document(app_hub):
    doc = app_hub.http._transport.app.openapi()
    schema = doc["paths"]["/v1/register-changes"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    warnings = schema["properties"]["warnings"]
    assert warnings["type"] == "array"
    assert set(warnings["items"]["properties"]) == {"field", "reason"}


# -- FHIR $process-message -----------------------------------------------------------------------------------------

def outcome_issues(r) -> list[dict[str, Any]]:  # noqa: ANN001
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle"
    [outcome] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "OperationOutcome"]
    header = bundle["entry"][0]["resource"]
    assert header["response"]["details"]["reference"].endswith(outcome["id"])
    return outcome["issue"]


async def test_fhir_a_council_not_a_successor_gets_a_warning_issue_at_the_extension(app_hub):
    person_id = await split_person(app_hub)
    r = await post_fhir(app_hub, moved(council=BUCKS, message_id="fhir-warn-1"))
    assert r.status_code == 200, r.text
    issues = outcome_issues(r)
    assert [i for i in issues if i["severity"] == "warning"] == [{
        "severity": "warning", "code": "business-rule", "diagnostics": NOT_ONE,
        "expression": [f"{PAT}.extension[0].valueIdentifier.value"]}]
    assert [i["severity"] for i in issues] == ["information", "warning"]
    assert_nothing_personal(r.text)
    assert (await position(app_hub, person_id))["responsible_council"] is None


async def test_fhir_a_naming_that_resolves_has_no_warning_and_one_after_it_has(app_hub):
    await split_person(app_hub)
    r = await post_fhir(app_hub, moved(council=CUMBERLAND, message_id="fhir-warn-2"))
    assert r.status_code == 200, r.text
    assert [i["severity"] for i in outcome_issues(r)] == ["information"]
    r = await post_fhir(app_hub, moved(council=WESTMORLAND, message_id="fhir-warn-3"))
    assert [(i["severity"], i["diagnostics"]) for i in outcome_issues(r) if i["severity"] != "information"] == [
        ("warning", NO_SPLIT)]


# -- council files -------------------------------------------------------------------------------------------------

@pytest.fixture
async def writers(app_hub) -> dict[str, dict[str, str]]:  # noqa: ANN001
    """The case systems of Oxfordshire (the hospital's council: coordinating while none is responsible) and
    Cumberland, allowed to write."""
    return {code: {"X-API-Key": (await add_client(app_hub.hub.engine, name, code, "council", ["register:write"]))[1]}
            for code, name in ((OXFORDSHIRE, "Oxfordshire"), (CUMBERLAND, "Cumberland"))}


@pytest.mark.parametrize(("layout", "fmt"), [(SWIFT_CSV, "swift_csv"), (SWIFT_FIXED, "swift_fixed")])
async def test_file_rows_that_change_nothing_are_accepted_with_a_warning_naming_the_column(
        app_hub, writers, layout, fmt):
    """The coordinating council's rows in file order: a council no successor (warned), then the successor
    (responsible, no warning); then the successor's own file naming the other successor (no split awaits
    one any more: warned)."""
    person_id = await split_person(app_hub)

    def file(rows_: list[dict[str, str]], council: str) -> bytes:
        return csv_file(rows_) if layout is SWIFT_CSV else fixed_file(rows_, header=f"HS117REG1{council}20260105SWIFT")

    report = await send(app_hub, writers[OXFORDSHIRE], file([
        {**ROW, "RECORD_ID": "OX-1", "PRE_DETENTION_LA_GSS": BUCKS},
        {**ROW, "RECORD_ID": "OX-2", "PRE_DETENTION_LA_GSS": CUMBERLAND}], OXFORDSHIRE), fmt)
    first, second = report["report"]
    assert (first["status"], first["warnings"]) == ("accepted", [
        {"field": "row 1, column PRE_DETENTION_LA_GSS", "reason": NOT_ONE}]), first
    assert second["status"] == "accepted" and "warnings" not in second, second
    assert report["accepted"] == 2 and report["rejected"] == 0
    assert_nothing_personal(orjson.dumps(report).decode())
    assert (await position(app_hub, person_id))["responsible_council"]["org"]["code"] == CUMBERLAND
    report = await send(app_hub, writers[CUMBERLAND], file([
        {**ROW, "RECORD_ID": "CU-1", "EFFECTIVE_DATE": "2026-02-01", "PRE_DETENTION_LA_GSS": WESTMORLAND}],
        CUMBERLAND), fmt)
    [row] = report["report"]
    assert (row["status"], row["warnings"]) == ("accepted", [
        {"field": "row 1, column PRE_DETENTION_LA_GSS", "reason": NO_SPLIT}]), row
    assert (await position(app_hub, person_id))["responsible_council"]["org"]["code"] == CUMBERLAND


# -- the children's use of a naming (hub/domain/children.py) -----------------------------------------------------

def _change(n: int, kind: ChangeType, on: str, **fields: Any) -> RegisterChange:
    day = date.fromisoformat(on)
    return RegisterChange(change_id=f"c{n}", person_id="p", change_type=kind, effective_date=day, notified_on=day,
                          recorded_on=day, source_message_id=f"m{n}", **fields)


_REF = load_reference_data()
TODAY = date(2026, 12, 5)
S2_FROM_CUMBRIA = _change(1, ChangeType.DETAINED, "2026-11-02", legal_status_code="02", hospital_ods="RNU",
                          residence_la_gss="E10000006")


@pytest.mark.parametrize(("history", "named", "uses"), [
    ([S2_FROM_CUMBRIA, _change(2, ChangeType.MOVED, "2026-11-20", **{FIELD: CUMBERLAND})], CUMBERLAND, True),
    # The other successor named after it: the first named addresses the stay's notices (`addressed`).
    ([S2_FROM_CUMBRIA, _change(2, ChangeType.MOVED, "2026-11-20", **{FIELD: CUMBERLAND}),
      _change(3, ChangeType.MOVED, "2026-11-21", **{FIELD: WESTMORLAND})], WESTMORLAND, False),
    # Named before the stay began: not this stay's.
    ([_change(2, ChangeType.MOVED, "2026-10-01", **{FIELD: CUMBERLAND}), S2_FROM_CUMBRIA], CUMBERLAND, False),
    # A council no successor of the stay's council.
    ([S2_FROM_CUMBRIA, _change(2, ChangeType.MOVED, "2026-11-20", **{FIELD: BUCKS})], BUCKS, False),
    # A residence not split: naming its own council addresses nothing.
    ([_change(1, ChangeType.DETAINED, "2026-11-02", legal_status_code="02", hospital_ods="RNU",
              residence_la_gss=BUCKS), _change(2, ChangeType.MOVED, "2026-11-20", **{FIELD: BUCKS})], BUCKS, False),
    # An EHC plan's council split since the admission, the residence not.
    ([_change(1, ChangeType.DETAINED, "2022-06-01", legal_status_code="02", hospital_ods="RNU",
              residence_la_gss=BUCKS, ehc_plan_la_gss="E10000006"),
      _change(2, ChangeType.MOVED, "2026-11-20", **{FIELD: WESTMORLAND})], WESTMORLAND, True),
], ids=["first-named", "named-second", "before-the-stay", "no-successor", "not-split", "ehc-plan"])
def test_a_naming_a_stays_notice_may_use(history: list[RegisterChange], named: str, uses: bool) -> None:
    assert addresses_a_stays_council(history, named, _REF, TODAY) is uses


# -- a successor named earlier in the stay, the qualifying section after it ------------------------------------------

@pytest.mark.parametrize("late", [False, True], ids=["in-order", "named-late"])
async def test_rest_a_successor_named_under_s2_is_responsible_once_s3_begins_in_the_stay(app_hub, late):
    """An adult from Cumbria (split 2023) held under s2 (no council determined), then s3 in the same stay: the
    successor named during the s2 is responsible from the s3 (hub/domain/rules/engine.py
    `_take_successor_named_in_stay`), not awaited again; whether the naming arrives before the s3 or after it,
    dated between the two. No warning either way (the naming changed the responsibility)."""
    base = {"source_system": "RiO", "person": {"nhs_number": NHS, "birth_date": "1980-03-01"}}

    async def post(smid: str, change: dict[str, Any]):  # noqa: ANN202
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json={**base, "source_message_id": smid, **change})
        assert r.status_code == 202, r.text
        return r.json()

    s2 = {"change_type": "detained", "effective_date": "2026-11-02", "legal_status_code": "02",
          "hospital_ods": "RNU", "residence_la_gss": "E10000006"}
    s3 = {"change_type": "section-changed", "effective_date": "2026-11-16", "legal_status_code": "03",
          "hospital_ods": "RNU"}
    naming = {"change_type": "moved", "effective_date": "2026-11-05", FIELD: CUMBERLAND}
    person_id = (await post("stay-1", s2))["person_id"]
    for smid, change in ((("stay-3", s3), ("stay-2", naming)) if late else (("stay-2", naming), ("stay-3", s3))):
        assert "warnings" not in await post(smid, change)
    body = await position(app_hub, person_id)
    assert body["responsible_council"]["org"]["code"] == CUMBERLAND  # was: none, Oxfordshire coordinating
    assert body.get("coordinating_council") is None and not body.get("responsibility_undetermined")


def test_the_rules_alone_say_a_naming_taken_later_in_the_stay_changed_something(monkeypatch) -> None:
    """`successor_warnings` from the rules' note alone (the children's use of the naming set aside): a naming
    under s2 that the s3 of the same stay took is no warning; one the s3 did not take (no successor of the split)
    still is."""
    monkeypatch.setattr(service, "addresses_a_stays_council", lambda *args: False)
    s3 = _change(4, ChangeType.SECTION_CHANGED, "2026-11-16", legal_status_code="03", hospital_ods="RNU")
    for named, warned in ((CUMBERLAND, None), (BUCKS, [{"field": FIELD, "reason": NOT_ONE}])):
        naming = _change(2, ChangeType.MOVED, "2026-11-05", **{FIELD: named})
        history = [S2_FROM_CUMBRIA, s3, naming]
        after = evaluate("p", history, _REF, AgreementBook(), TODAY)
        assert service.successor_warnings(naming, after, history, _REF, TODAY) == warned, named
