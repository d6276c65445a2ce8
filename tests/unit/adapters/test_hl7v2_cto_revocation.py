"""ZU5-8 `cto-revocation` (hub-local): the revocation of a community treatment order (MHA s17F(4)) of a patient
recalled to hospital, who is detained again under the section the CTO was made on (s17G), sent as the change of
legal status it is: an A02 / A08 with ZU5-3 that section, dated EVN-6. It maps to the canonical `cto-revoked`
carrying the section. Before, HL7 v2 had no way to say it: the A08 a PAS sends (ZU5-2 = ZU5-3 = 3, the recall
having been reported under the CTO's section) was "no register change"."""

from __future__ import annotations

from datetime import date

import pytest

from adapters.hl7v2 import Disposition, map_adt
from adapters.hl7v2.mapping import REQUIRED_FIELD_MISSING, TABLE_VALUE_NOT_FOUND
from hub.ingest.contract import RegisterChangeIn
from hub.ingest.validation import semantic_problems
from hub.refdata.loader import load_reference_data
from tests.unit.adapters.test_hl7v2_cto_recall import A08, NHS, a01, zu5

A02 = A08.replace("ADT^A08^ADT_A01", "ADT^A02^ADT_A02")


def revocation(after: str = "3", before: str = "3", zu5_8: str = "cto-revocation", zu5_7: str = "",
               text: str = A08) -> str:
    return zu5(text, f"2025|{before}|{after}|1|202501061000|1|{zu5_7}|{zu5_8}")


@pytest.mark.parametrize("sent", ["cto-revocation", "CTO-REVOCATION", "Cto-Revocation^CTO revoked under s17F"])
@pytest.mark.parametrize("text", [A08, A02], ids=["A08", "A02"])
def test_an_a08_or_a02_with_zu5_8_cto_revocation_maps_to_cto_revoked_under_zu5_3_dated_evn_6(sent, text):
    # ZU5-3 = ZU5-2 = 3, as a PAS sends it after a recall reported under the CTO's section: told by ZU5-8.
    r = map_adt(revocation(zu5_8=sent, text=text))
    assert r.disposition is Disposition.CHANGE, r.problems
    change = r.change
    assert change["change_type"] == "cto-revoked" and r.hl7_field("change_type") == "ZU5-8"
    assert change["legal_status_code"] == "03" and r.hl7_field("legal_status_code") == "ZU5-3"
    assert change["effective_date"] == "2025-01-13" and r.hl7_field("effective_date") == "EVN-6"
    assert change["person"]["nhs_number"] == NHS and change["hospital_ods"] == "RNU"
    assert not {"residence_la_gss", "no_fixed_abode", "order_type"} & set(change)
    assert r.recall_unstated is False  # a revocation is no fresh application: the CTO question is not asked
    valid = RegisterChangeIn.model_validate(change)
    assert semantic_problems(valid, load_reference_data(), date(2025, 6, 1)) == []


def test_zu5_2_is_not_read_on_a_revocation():
    # A community patient admitted informally, recalled (A08 1 -> 3), then revoked; or ZU5-2 not sent at all.
    revoked = map_adt(revocation()).change
    assert revoked is not None and revoked["change_type"] == "cto-revoked"
    assert map_adt(revocation(before="1")).change == revoked
    assert map_adt(revocation(before="")).change == revoked


def test_a_revocation_under_a_hospital_order_carries_it_and_a_cp_i_a_one_its_order_type():
    assert map_adt(revocation("10")).change["legal_status_code"] == "10"
    r = map_adt(revocation("31", zu5_7="hospital-order"))
    assert r.change["legal_status_code"] == "31" and r.change["order_type"] == "hospital-order"
    assert r.hl7_field("order_type") == "ZU5-7"


@pytest.mark.parametrize("after", ["1", "2", "5", "35", "99"])
def test_a_revocation_under_a_legal_status_that_is_not_a_qualifying_detention_is_an_error_naming_zu5_8(after):
    r = map_adt(revocation(after))
    assert r.disposition is Disposition.ERROR
    assert [p.field for p in r.problems] == ["ZU5-8"], r.problems
    assert "(ZU5-3) is not a qualifying detention" in r.problems[0].reason and "s17G" in r.problems[0].reason
    # Asked about as a revocation: the care provider's to report (hub/domain/access.py).
    assert r.about == {"change_type": "cto-revoked", "person": {"nhs_number": NHS}, "hospital_ods": "RNU"}


def test_a_revocation_without_zu5_3_is_an_error_naming_zu5_3():
    r = map_adt(zu5(A08, "2025|3||1|202501061000|1||cto-revocation"))
    assert r.disposition is Disposition.ERROR
    (problem,) = r.problems
    assert problem.field == "ZU5-3" and problem.code == REQUIRED_FIELD_MISSING and "cto-revocation" in problem.reason
    assert r.about["change_type"] == "cto-revoked"
    bad = map_adt(revocation("33"))  # Supervised Discharge: no England code
    assert bad.disposition is Disposition.ERROR and [p.field for p in bad.problems] == ["ZU5-3"]


def test_a_revocation_without_evn_6_is_an_error_naming_evn_6():
    lines = revocation().split("\r")
    lines[1] = "EVN||202501130910|||111111111^Operator^Test^^^Ms^^RNU|"
    r = map_adt("\r".join(lines))
    assert r.disposition is Disposition.ERROR
    (problem,) = r.problems
    assert problem.field == "EVN-6" and "revocation" in problem.reason


@pytest.mark.parametrize("admission", ["3", "1"])
def test_cto_revocation_on_an_a01_is_an_error_naming_zu5_8(admission):
    r = map_adt(a01(admission, "cto-revocation"))
    assert r.disposition is Disposition.ERROR
    (problem,) = r.problems
    assert problem.field == "ZU5-8" and "A02 / A08" in problem.reason and "cto-revocation" in problem.reason
    assert r.about == {"change_type": "cto-revoked", "person": {"nhs_number": NHS}, "hospital_ods": "RNU"}


def test_another_zu5_8_value_on_an_a08_names_the_three_values():
    r = map_adt(revocation(before="2", zu5_8="cto-revoke"))
    assert r.disposition is Disposition.ERROR
    (problem,) = r.problems
    assert problem.field == "ZU5-8" and problem.code == TABLE_VALUE_NOT_FOUND
    assert all(v in problem.reason for v in ("cto-recall", "fresh-application", "cto-revocation"))


def test_an_a11_carrying_cto_revocation_cancels_nothing_and_is_an_error_naming_zu5_8():
    """An A11 cancels an admission; read as cancelling a detention it could retract the detention the CTO
    followed (ZU5-5 its day). Refused as a field error (AE, held), about the revocation it names."""
    a11 = (A08.split("\r")[0].replace("ADT^A08^ADT_A01", "ADT^A11^ADT_A09") + "\r"
           + "\r".join(revocation().split("\r")[1:]))
    r = map_adt(a11)
    assert r.disposition is Disposition.ERROR and r.cancelled_on is None
    (problem,) = r.problems
    assert problem.field == "ZU5-8" and "A11" in problem.reason and "retraction" in problem.reason
    assert r.about == {"change_type": "cto-revoked", "person": {"nhs_number": NHS}, "hospital_ods": "RNU"}
    # Without it, the same A11 cancels a detention (as before).
    plain = map_adt(a11.replace("||cto-revocation", ""))
    assert plain.disposition is Disposition.REJECT and plain.about["change_type"] == "detained"
