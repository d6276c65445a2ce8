"""HL7 v2 ADT -> canonical register change: every event, every rejection
reason, the HL7 field each problem names, and the legal status code map."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from adapters.hl7v2 import Disposition, build_ack, map_adt
from adapters.hl7v2.mapping import Header, HL7Problem
from adapters.hl7v2.legal_status import england_code
from hub.ingest.contract import RegisterChangeIn

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"


def load(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode()


A01 = load("ADT_A01_s3_detained.hl7")
A02 = load("ADT_A02_s2_to_s3_transfer.hl7")
A03 = load("ADT_A03_discharge.hl7")
A08 = load("ADT_A08_s2_to_s3_update.hl7")


def seg_replace(text: str, segment: str, new: str | None) -> str:
    """Replace (or drop, with None) the first `segment` line."""
    lines = text.split("\r")
    i = next(i for i, line in enumerate(lines) if line.startswith(segment + "|"))
    if new is None:
        del lines[i]
    else:
        lines[i] = new
    return "\r".join(lines)


def with_zu5(text: str, on_admission: str, at_census: str, commenced: str = "202501061000") -> str:
    return seg_replace(text, "ZU5", f"ZU5|2025|{on_admission}|{at_census}|1|{commenced}|1")


def test_fixtures_are_cr_separated_itk_messages():
    for path in FIXTURES.glob("*.hl7"):
        raw = path.read_bytes()
        assert b"\n" not in raw and raw.count(b"\r") >= 4, path.name
        assert raw.startswith(b"MSH|^~\\&|RIO|RNU|") and b"|P|2.4|" in raw


# -- events that change the register -----------------------------------------

def test_a01_with_a_detained_legal_status_maps_to_detained():
    r = map_adt(A01)
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change == {
        "source_system": "RIO", "source_message_id": "RNU-A01-0001", "change_type": "detained",
        "person": {"nhs_number": "9990001006", "family_name": "TESTPATIENT", "given_name": "ALEX",
                   "birth_date": "1980-02-14", "postcode": "HP20 1AA"},
        "notified_on": "2025-01-06", "hospital_ods": "RNU", "gp_practice_ods": "K82001",
        "legal_status_code": "03", "effective_date": "2025-01-06", "residence_la_gss": "E06000060",
    }
    RegisterChangeIn.model_validate(r.change)  # the canonical contract takes it as it is
    assert r.header.sending_facility == "RNU" and r.header.trigger_event == "A01"
    assert r.hl7_field("person.nhs_number") == "PID-3" and r.hl7_field("effective_date") == "ZU5-5"
    assert r.hl7_field("legal_status_code") == "ZU5-2" and r.hl7_field("residence_la_gss") == "PID-11.9"


def test_a01_lf_separated_is_read_as_cr():
    assert map_adt(A01.replace("\r", "\n")).change == map_adt(A01).change


def test_a01_effective_date_falls_back_to_the_admit_date():
    r = map_adt(with_zu5(A01, "3", "3", commenced="").replace("|202501061000\rZU1", "|202501071000\rZU1"))
    assert r.change["effective_date"] == "2025-01-07" and r.hl7_field("effective_date") == "PV1-44"


@pytest.mark.parametrize(("commenced", "day"), [
    ("20250531233000+0000", "2025-06-01"),  # 00:30 BST on 1 June, given in UTC
    ("202506010030+0100", "2025-06-01"),
    ("20250531225900+0000", "2025-05-31"),  # 23:59 BST on 31 May
    ("20250110233000+0000", "2025-01-10"),  # GMT: UTC's day
    ("202505312330", "2025-05-31"),         # no offset: the sender's local time, its day as written
])
def test_a_time_with_an_offset_is_the_day_it_falls_on_in_england(commenced: str, day: str):
    """ZU5-5 as a TS with an explicit offset: the detention's day is the day that instant falls on in
    England (was: the first eight digits, so 23:30 UTC on 31 May, 00:30 BST on 1 June, was 31 May)."""
    r = map_adt(with_zu5(A01, "3", "3", commenced=commenced))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change["effective_date"] == day and r.hl7_field("effective_date") == "ZU5-5"


def test_a01_no_fixed_abode_from_the_nhs_pseudo_postcode():
    r = map_adt(A01.replace("HP20 1AA^GBR^H^^E06000060", "ZZ99 3VZ^GBR^H"))
    assert r.disposition is Disposition.CHANGE
    assert r.change["no_fixed_abode"] is True and "residence_la_gss" not in r.change


def test_a03_maps_to_left_hospital_on_the_discharge_date():
    r = map_adt(A03)
    assert r.disposition is Disposition.CHANGE
    assert r.change["change_type"] == "left-hospital" and r.change["effective_date"] == "2025-03-03"
    assert r.hl7_field("effective_date") == "PV1-45"
    RegisterChangeIn.model_validate(r.change)


@pytest.mark.parametrize("text", [A08, A02], ids=["A08", "A02"])
def test_a08_and_a02_with_a_changed_legal_status_map_to_section_changed(text):
    r = map_adt(text)
    assert r.disposition is Disposition.CHANGE
    assert r.change["change_type"] == "section-changed" and r.change["legal_status_code"] == "03"
    assert r.hl7_field("legal_status_code") == "ZU5-3" and r.hl7_field("effective_date") == "EVN-6"
    assert "residence_la_gss" not in r.change
    RegisterChangeIn.model_validate(r.change)


def test_a08_section_ended_to_informal_maps_to_stayed_informally():
    r = map_adt(with_zu5(A08, "3", "1"))
    assert r.change["change_type"] == "section-ended-stayed-informally"
    assert "legal_status_code" not in r.change


# -- supported messages that change nothing: AA, nothing stored ---------------

@pytest.mark.parametrize(("text", "why"), [
    (with_zu5(A01, "1", "1"), "not a detention"),
    (with_zu5(A01, "35", "35"), "not a detention"),  # guardianship is not a hospital detention
    (with_zu5(A01, "98", "98"), "not a detention"),
    (seg_replace(A08, "ZU5", None), "no legal status"),
    (seg_replace(A02, "ZU5", None), "no legal status"),
    (with_zu5(A08, "3", "3"), "unchanged"),
    (with_zu5(A02, "2", "2"), "unchanged"),
    (with_zu5(A08, "1", "35"), "not detentions"),
], ids=["A01-informal", "A01-guardianship", "A01-not-applicable", "A08-no-ZU5", "A02-no-ZU5",
        "A08-unchanged", "A02-unchanged", "A08-informal-to-guardianship"])
def test_not_a_register_change(text, why):
    r = map_adt(text)
    assert r.disposition is Disposition.NO_CHANGE
    assert r.change is None and why in r.notes[-1]


# -- content errors: quarantined, AE naming the HL7 field --------------------

ERRORS = [
    ("A01 without ZU5", seg_replace(A01, "ZU5", None), "ZU5-2", "informal admission"),
    ("ZU5-2 not known", with_zu5(A01, "99", "99"), "ZU5-2", "99 (not known)"),
    ("ZU5-2 supervised discharge", with_zu5(A01, "33", "33"), "ZU5-2", "Supervised Discharge"),
    ("ZU5-2 not in the table", with_zu5(A01, "11", "11"), "ZU5-2", "not a value of ITK table"),
    ("ZU5-2 not a code", with_zu5(A01, "S3", "S3"), "ZU5-2", "not a value of ITK table"),
    ("no council of residence", A01.replace("^H^^E06000060", "^H"), "PID-11.9", "not derived from a postcode"),
    ("council not a GSS code", A01.replace("^H^^E06000060", "^H^^BUCKS"), "PID-11.9", "not an English council"),
    ("Welsh council", A01.replace("^H^^E06000060", "^H^^W06000015"), "PID-11.9", "not an English council"),
    ("no NHS number", A01.replace("9990001006^^^NHS^NH~", ""), "PID-3", "no NHS number"),
    ("two NHS numbers", A01.replace("~RNU1234567^^^RNU^PI", "~9990001014^^^NHS^NH"), "PID-3", "more than one"),
    ("no PID", seg_replace(A01, "PID", None), "PID", "required"),
    ("birth date not a date", A01.replace("|19800214|", "|19801314|"), "PID-7", "not a valid HL7 date"),
    ("no detention date", seg_replace(with_zu5(A01, "3", "3", commenced=""), "PV1",
                                      "PV1|1|I|WHITELEAF^WARD1^BED1^RNU"), "ZU5-5", "required"),
    ("detention date not a date", with_zu5(A01, "3", "3", commenced="2025XX06"), "ZU5-5", "not a valid"),
    ("A03 without discharge date", seg_replace(A03, "PV1", "PV1|1|I|WHITELEAF^WARD1^BED1^RNU"), "PV1-45", "required"),
    ("A08 ZU5-3 without ZU5-2", with_zu5(A08, "", "3"), "ZU5-2", "comparing the two"),
    ("A08 ZU5-3 not known", with_zu5(A08, "3", "99"), "ZU5-3", "99 (not known)"),
    ("A08 ZU5-3 supervised discharge", with_zu5(A08, "3", "33"), "ZU5-3", "Supervised Discharge"),
    ("A08 without event occurred", A08.replace("EVN||202501130910|||111111111^Operator^Test^^^Ms^^RNU|202501130900",
                                               "EVN||202501130910"), "EVN-6", "required"),
    ("EVN-2 not a date", A03.replace("EVN||202503031125", "EVN||20250399"), "EVN-2", "not a valid"),
]


@pytest.mark.parametrize(("text", "field", "reason"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_content_errors_name_the_hl7_field(text, field, reason):
    r = map_adt(text)
    assert r.disposition is Disposition.ERROR, r
    assert r.change is None
    assert any(p.field == field and reason in p.reason for p in r.problems), r.problems
    for p in r.problems:  # problems never quote the value
        assert "9990001006" not in p.reason and "TESTPATIENT" not in p.reason
        assert re.match(r"^(MSH|EVN|PID|PD1|PV1|ZU5)(-\d+(\.\d+)?)?$", p.field), p.field


# -- messages the hub does not take: AR ---------------------------------------

REJECTS = [
    ("A11 cancel admit", load("ADT_A11_cancel_admit.hl7"), "MSH-9", "no cancellation", True),
    ("A13 cancel discharge", load("ADT_A13_cancel_discharge.hl7"), "MSH-9", "no cancellation", True),
    ("A28 person", A01.replace("ADT^A01^ADT_A01", "ADT^A28^ADT_A05"), "MSH-9", "council of residence cannot be", False),
    ("A31 person", A01.replace("ADT^A01^ADT_A01", "ADT^A31^ADT_A05"), "MSH-9", "not a register change", False),
    ("A04 outpatient", A01.replace("ADT^A01^ADT_A01", "ADT^A04^ADT_A01"), "MSH-9", "not taken", False),
    ("not ADT", A01.replace("ADT^A01^ADT_A01", "ORU^R01^ORU_R01"), "MSH-9", "only ADT", False),
    ("training message", A01.replace("|P|2.4|", "|T|2.4|"), "MSH-11", "production", False),
    ("HL7 v3", A01.replace("|P|2.4|", "|P|3.0|"), "MSH-12", "version 2", False),
    ("no control id", A01.replace("|RNU-A01-0001|", "||"), "MSH-10", "required", False),
    ("not HL7", "hello\rworld", "MSH", "could not be parsed", False),
    ("empty", "", "MSH", "could not be parsed", False),
]


@pytest.mark.parametrize(("text", "field", "reason", "quarantine"), [e[1:] for e in REJECTS],
                         ids=[e[0] for e in REJECTS])
def test_rejected_messages(text, field, reason, quarantine):
    r = map_adt(text)
    assert r.disposition is Disposition.REJECT
    assert r.problems[0].field == field and reason in r.problems[0].reason
    assert r.quarantine is quarantine


# -- the real ITK examples ------------------------------------------------------

def itk(name: str) -> str:
    return (FIXTURES / "itk" / name).read_text()  # LF-separated, byte-identical to the source


def test_itk_a01_example_is_rejected_for_want_of_a_legal_status():
    r = map_adt(itk("ITK_ADT_A01.hl7"))
    assert r.disposition is Disposition.ERROR
    assert [p.field for p in r.problems] == ["ZU5-2"]
    assert r.header.control_id == "1391320453338055" and r.header.sending_facility == "RCB"


def test_itk_a01_example_with_a_zu5_and_council_maps():
    text = itk("ITK_ADT_A01.hl7").rstrip("\n").replace("^GBR^H|", "^GBR^H^^E06000014|")
    text += "\nZU5|2010|3|3|1|201010101400|1"
    r = map_adt(text)
    assert r.disposition is Disposition.CHANGE, r.problems
    c = r.change
    assert c["person"]["nhs_number"] == "3333333333"  # PID-3 3333333333^^^NHS: authority NHS, no type
    assert c["hospital_ods"] == "RCB55" and r.hl7_field("hospital_ods") == "PV1-3.4"  # the site, not MSH-4
    assert c["gp_practice_ods"] == "Y06601" and c["effective_date"] == "2010-10-10"


def test_itk_a03_example_maps_to_left_hospital():
    r = map_adt(itk("ITK_ADT_A03.hl7"))
    assert r.change["change_type"] == "left-hospital" and r.change["effective_date"] == "2010-10-21"


@pytest.mark.parametrize("name", ["ITK_ADT_A04.hl7", "ITK_ADT_A28.hl7"])
def test_itk_examples_the_hub_does_not_take(name):
    assert map_adt(itk(name)).disposition is Disposition.REJECT


# -- legal status ------------------------------------------------------------------

@pytest.mark.parametrize(("itk_value", "england"), [
    ("1", "01"), ("2", "02"), ("3", "03"), ("03", "03"), ("9", "09"), ("10", "10"), ("12", "12"),
    ("19", "19"), ("20", "20"), ("31", "31"), ("32", "32"), ("35", "35"), ("36", "36"), ("98", "98"),
    ("99", "99"), ("34", "37"),
])
def test_itk_legal_status_to_england(itk_value, england):
    assert england_code(itk_value).england_code == england


def test_s45a_34_is_recorded_as_37_with_a_note():
    assert "37" in england_code("34").note
    r = map_adt(with_zu5(A01, "34", "34"))
    assert r.change["legal_status_code"] == "37" and any("34" in n and "37" in n for n in r.notes)


@pytest.mark.parametrize("value", ["33", "11", "21", "37", "38", "100", "x", "3a"])
def test_values_outside_the_itk_tables_are_refused(value):
    assert england_code(value).england_code is None and england_code(value).problem


def test_every_itk_table_value_is_mapped_or_refused_with_a_reason():
    import csv

    table = Path("/work/shared/refdata/03_hl7v2_adt/itk_reference_tables/hscic_itk_hl7v2_ZU047_ZU048_legal_status_2014.csv")
    if not table.exists():
        pytest.skip("ITK reference table not on this machine")
    england = Path(__file__).resolve().parents[3] / "hub" / "refdata" / "data" / "mha_legal_status_england.csv"
    known = {row["code"] for row in csv.DictReader(england.open())}
    for row in csv.DictReader(table.open()):
        mapped = england_code(row["value"])
        assert mapped.england_code in known or (row["value"] == "33" and mapped.problem), row


# -- ACK text --------------------------------------------------------------------------

def test_ack_has_msa2_and_err_naming_the_field():
    r = map_adt(seg_replace(A01, "ZU5", None))
    from datetime import UTC, datetime

    ack = build_ack(r.header, "AE", "ACK1", datetime(2025, 1, 6, 10, 0, tzinfo=UTC), "rejected | see ERR", r.problems)
    segs = ack.split("\r")
    assert segs[0] == "MSH|^~\\&|S117HUB|S117HUB|RIO|RNU|20250106100000||ACK^A01^ACK|ACK1|P|2.4"
    assert segs[1] == "MSA|AE|RNU-A01-0001|rejected \\F\\ see ERR"
    assert segs[2].startswith("ERR|ZU5^1^2^101&ZU5-2 legal status on admission is required")
    assert segs[2].endswith("&HL70357") and ack.endswith("\r")


def _ack_as_joined(header, ack_code, control_id, now, text="", problems=()):  # noqa: ANN001, ANN202
    """build_ack as it was before its template: the MSH's fields joined at each call."""
    from adapters.hl7v2.ack import HUB_APPLICATION, err_segment, escape

    event = header.trigger_event if header.trigger_event.isalnum() else ""
    msh = "|".join([
        "MSH", "^~\\&", HUB_APPLICATION, HUB_APPLICATION,
        escape(header.sending_application), escape(header.sending_facility),
        now.strftime("%Y%m%d%H%M%S"), "", f"ACK^{event}^ACK", control_id, "P", escape(header.version) or "2.4",
    ])
    # MSA-2: the MSH-10 as sent (mapping.py reads it raw), only a "|" of a sender with other delimiters escaped
    msa = f"MSA|{ack_code}|{header.control_id.replace('|', chr(92) + 'F' + chr(92))}|{escape(text[:200])}"
    return "\r".join([msh, msa, *(err_segment(p) for p in problems)]) + "\r"


_FIELD = st.text(alphabet=st.sampled_from("AZaz09 |^~\\&\r\n-é"), max_size=12)


@given(st.builds(Header, _FIELD, _FIELD, _FIELD, _FIELD, _FIELD, _FIELD), st.sampled_from(["AA", "AE", "AR"]),
       st.text(alphabet="0123456789abcdef", min_size=20, max_size=20),
       st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
       st.one_of(st.just("register change accepted"), st.text(max_size=260)),
       st.lists(st.builds(HL7Problem, st.sampled_from(["PID-3", "ZU5-2", "MSH", "PID-11.9", "x"]), _FIELD,
                          st.sampled_from(["101", "103", "207"])), max_size=3))
def test_the_ack_template_gives_the_ack_the_fields_joined_gave(header, code, control_id, now, text, problems):  # noqa: ANN001
    for _ in range(2):  # the first time and from what was remembered
        assert build_ack(header, code, control_id, now, text, problems) == \
            _ack_as_joined(header, code, control_id, now, text, problems)


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
                    timezones=st.one_of(st.none(), st.just(UTC))))
def test_the_acks_time_is_strftimes(now):  # noqa: ANN001
    from adapters.hl7v2.ack import _timestamp

    assert _timestamp(now) == now.strftime("%Y%m%d%H%M%S")


@given(st.text(max_size=4))
def test_a_remembered_legal_status_is_the_one_worked_out(value):  # noqa: ANN001
    from adapters.hl7v2.legal_status import _england_code

    for _ in range(2):  # the first time and from what was remembered
        assert england_code(value) == _england_code(value)
