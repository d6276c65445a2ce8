"""`order_type` is a closed set of codes (was free text that decided
entitlement: legal status 31 with "Hospital Order" was accepted and left the
person unentitled; only `hospital-order` qualified, and the raw text was
copied into explanations)."""

from __future__ import annotations

import json

import pytest

from hub.domain.rules.legal_status import classify
from hub.settings import REPO_ROOT
from tests.unit.contract_inputs import REF, change, only, problems, trust

ALLOWED = ("hospital-order", "supervision-order", "absolute-discharge")


@pytest.mark.parametrize("order_type", ["Hospital Order", "s37 hospital order", "banana", "\x00" * 50,
                                        "hospital_order", " hospital-order", "HOSPITAL-ORDER", ""])
def test_an_order_type_outside_the_codes_is_refused_naming_them(order_type):
    reason = only(change(legal_status_code="31", order_type=order_type), "order_type")
    assert reason == "must be one of the CP(I)A 1964 order codes: hospital-order, supervision-order, " \
        "absolute-discharge"


@pytest.mark.parametrize("order_type", ALLOWED)
def test_the_order_codes_are_accepted(order_type):
    assert problems(change(legal_status_code="31", order_type=order_type)) == []


def test_the_order_codes_are_every_one_the_rules_tell_apart():
    from hub.domain.rules.legal_status import CPIA_ORDER_TYPES

    assert set(CPIA_ORDER_TYPES) == set(ALLOWED)
    qualifying = {o for o in CPIA_ORDER_TYPES if classify(REF, "31", o).qualifying}
    assert qualifying == {"hospital-order"}


def test_the_published_contract_lists_the_order_codes():
    schema = json.loads((REPO_ROOT / "contracts" / "register-change.schema.json").read_text())
    options = schema["properties"]["order_type"]["anyOf"]
    enum = next(o for o in options if "enum" in o)["enum"]
    assert sorted(enum) == sorted(ALLOWED)


def test_an_explanation_names_the_order_code_and_never_free_text():
    assert "supervision-order" in classify(REF, "31", "supervision-order").explanation
    # A change stored before the codes were closed may hold any text: it is never repeated.
    legacy = classify(REF, "31", "banana <b>Alex</b>")
    assert not legacy.qualifying
    assert "banana" not in legacy.explanation and "Alex" not in legacy.explanation


async def test_over_rest_an_order_spelt_otherwise_is_refused_and_the_code_gives_the_entitlement(app_hub):
    h = trust(app_hub)
    detained = change(source_message_id="cpia-1", legal_status_code="31", order_type="s37 hospital order")
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=detained)
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["order_type"]
    assert "s37 hospital order" not in r.text
    r = await app_hub.http.post("/v1/register-changes", headers=h,
                                json={**detained, "source_message_id": "cpia-2", "order_type": "hospital-order"})
    assert r.status_code == 202, r.text
    left = {"source_system": "RiO", "source_message_id": "cpia-3", "change_type": "left-hospital",
            "effective_date": "2025-02-03", "legal_status_code": "31", "order_type": "hospital-order",
            "person": {"nhs_number": detained["person"]["nhs_number"]}}
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=left)
    assert r.status_code == 202, r.text
    s = await app_hub.http.get(f"/v1/persons/{r.json()['person_id']}/s117",
                               headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert s.status_code == 200 and s.json()["entitled"] is True, s.text
