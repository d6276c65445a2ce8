"""ZU5-8 (hub-local): whether a qualifying detention reported over HL7 v2 is the recall of a community patient
(MHA s17E, `cto-recall` -> `cto-recalled`) or a fresh application or order (`fresh-application` -> `detained`
/ `section-changed`). England's legal status codes have none for a recall, so without ZU5-8 the mapping says
so (`recall_unstated`) and the hub asks when the register shows the person on a CTO (tests/unit/
test_mllp_cto_recall.py)."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest

from adapters.hl7v2 import Disposition, map_adt
from adapters.hl7v2.legal_status import QUALIFYING
from adapters.hl7v2.mapping import TABLE_VALUE_NOT_FOUND
from hub.ingest.contract import RegisterChangeIn
from hub.ingest.validation import semantic_problems
from hub.refdata.loader import load_reference_data

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "hl7v2"
NHS = "9990001006"
A01 = (FIXTURES / "ADT_A01_s3_detained.hl7").read_bytes().decode()
A03 = (FIXTURES / "ADT_A03_discharge.hl7").read_bytes().decode()
A08 = (FIXTURES / "ADT_A08_s2_to_s3_update.hl7").read_bytes().decode()
# The A01 on 1 May 2025 (MSH-7, EVN, PV1-44), its ZU5-5 the original detention's day, 6 January.
RECALL_DAY = "20250501"


def zu5(text: str, fields: str) -> str:
    lines = text.split("\r")
    i = next(i for i, line in enumerate(lines) if line.startswith("ZU5|"))
    lines[i] = "ZU5|" + fields
    return "\r".join(lines)


def a01(admission: str = "3", zu5_8: str | None = None, zu5_7: str = "") -> str:
    return zu5(A01.replace("20250106", RECALL_DAY), f"2025|{admission}|{admission}|1|202501061000|1"
               + (f"|{zu5_7}|{zu5_8}" if zu5_8 is not None else ""))


def a08(before: str, after: str, zu5_8: str | None = None) -> str:
    return zu5(A08, f"2025|{before}|{after}|1|202501061000|1" + (f"||{zu5_8}" if zu5_8 is not None else ""))


@pytest.mark.parametrize("sent", ["cto-recall", "CTO-RECALL", "Cto-Recall^Recalled under s17E"])
def test_zu5_8_cto_recall_maps_an_a01_to_cto_recalled_dated_by_the_admission(sent):
    r = map_adt(a01(zu5_8=sent))
    assert r.disposition is Disposition.CHANGE, r.problems
    change = r.change
    assert change["change_type"] == "cto-recalled"
    assert change["effective_date"] == "2025-05-01" and r.hl7_field("effective_date") == "PV1-44"
    # cto-recalled takes no legal status, order type or council (ingest refuses what a change does not use).
    assert not {"legal_status_code", "order_type", "residence_la_gss", "no_fixed_abode"} & set(change)
    assert change["hospital_ods"] == "RNU" and change["gp_practice_ods"] == "K82001"
    assert change["person"]["nhs_number"] == NHS
    assert r.hl7_field("change_type") == "ZU5-8" and r.recall_unstated is False
    valid = RegisterChangeIn.model_validate(change)
    assert semantic_problems(valid, load_reference_data(), date(2025, 6, 1)) == []


def test_a_recall_without_pv1_44_is_dated_by_zu5_5():
    text = a01(zu5_8="cto-recall").replace(f"{RECALL_DAY}1000", "")
    r = map_adt(text)
    assert r.change["change_type"] == "cto-recalled"
    assert r.change["effective_date"] == "2025-01-06" and r.hl7_field("effective_date") == "ZU5-5"


@pytest.mark.parametrize("sent", ["fresh-application", "FRESH-APPLICATION"])
def test_zu5_8_fresh_application_maps_to_detained_as_before(sent):
    r = map_adt(a01(zu5_8=sent))
    assert r.disposition is Disposition.CHANGE, r.problems
    unstated = map_adt(a01())
    assert r.change == unstated.change and r.change["change_type"] == "detained"
    assert r.change["legal_status_code"] == "03" and r.change["effective_date"] == "2025-01-06"
    assert r.recall_unstated is False and unstated.recall_unstated is True
    assert r.hl7_field("change_type") == "ZU5-8"


def test_zu5_8_goes_with_zu5_7_on_a_cp_i_a_hospital_order():
    r = map_adt(a01("31", "fresh-application", "hospital-order"))
    assert r.change["change_type"] == "detained" and r.change["order_type"] == "hospital-order"
    assert r.recall_unstated is False and map_adt(a01("31", "", "hospital-order")).recall_unstated is True


@pytest.mark.parametrize("sent", ["banana", "cto_recall", "cto-recalled", "detained", "CTO-RECALİ"])
def test_another_zu5_8_value_is_an_error_naming_zu5_8(sent):
    r = map_adt(a01(zu5_8=sent))
    assert r.disposition is Disposition.ERROR
    (problem,) = r.problems
    assert problem.field == "ZU5-8" and problem.code == TABLE_VALUE_NOT_FOUND
    assert sent not in problem.reason and "cto-recall" in problem.reason and "fresh-application" in problem.reason
    # Read as it would be without ZU5-8, for the access precheck: a detention.
    assert r.about == {"change_type": "detained", "person": {"nhs_number": NHS}, "hospital_ods": "RNU"}


@pytest.mark.parametrize("admission", ["2", "5", "1", "35"])
def test_a_recall_under_a_legal_status_that_is_not_a_qualifying_detention_is_an_error(admission):
    r = map_adt(a01(admission, "cto-recall"))
    assert r.disposition is Disposition.ERROR
    assert [p.field for p in r.problems] == ["ZU5-8"], r.problems
    assert "(ZU5-2) is not a qualifying detention" in r.problems[0].reason
    # A recall is asked about as one: it needs a relationship with the person (the care provider's).
    assert r.about == {"change_type": "cto-recalled", "person": {"nhs_number": NHS}, "hospital_ods": "RNU"}


def test_zu5_8_is_not_read_on_an_informal_admission_unless_it_says_recall():
    assert map_adt(a01("1", "cto-recall")).disposition is Disposition.ERROR
    r = map_adt(a01("1", "banana"))
    assert r.disposition is Disposition.NO_CHANGE and not r.problems
    assert map_adt(a01("1", "fresh-application")).disposition is Disposition.NO_CHANGE


def test_a08_to_a_qualifying_section_takes_zu5_8_too():
    recall = map_adt(a08("1", "3", "cto-recall"))
    assert recall.disposition is Disposition.CHANGE, recall.problems
    assert recall.change["change_type"] == "cto-recalled" and recall.change["effective_date"] == "2025-01-13"
    assert "legal_status_code" not in recall.change and recall.hl7_field("change_type") == "ZU5-8"
    fresh = map_adt(a08("1", "3", "fresh-application"))
    assert fresh.change["change_type"] == "section-changed" and fresh.recall_unstated is False
    unstated = map_adt(a08("1", "3"))
    assert unstated.change == fresh.change and unstated.recall_unstated is True
    bad = map_adt(a08("2", "3", "maybe"))
    assert bad.disposition is Disposition.ERROR and [p.field for p in bad.problems] == ["ZU5-8"]
    assert bad.about["change_type"] == "section-changed"
    assert map_adt(a08("2", "5", "cto-recall")).problems[0].field == "ZU5-8"  # s5(2) is no recall


def test_recall_unstated_only_where_a_cto_could_end():
    assert map_adt(a08("3", "1")).change["change_type"] == "section-ended-stayed-informally"
    assert map_adt(a08("3", "1")).recall_unstated is False
    assert map_adt(A03).recall_unstated is False


def test_qualifying_is_the_england_lists_qualifying_detentions():
    with open(ROOT / "hub" / "refdata" / "data" / "mha_legal_status_england.csv", newline="") as f:
        listed = {row["code"] for row in csv.DictReader(f) if row["s117_qualifying"] in ("yes", "review")}
    assert QUALIFYING == listed
