"""HL7 v2 ADT mapping, from the thirtieth outside review (an NHS trust's integration engineer sending real
messages to the hub over MLLP):

- the HL7 null `""` (v2.4 2.5.3: "present, and null") is no value: it was read as the two characters, so a
  given name sent as `""` was recorded as the name `""`, and a `""` date of birth, postcode or GP practice
  made a detention an AE;
- an A11 / A13 the access policy refuses names the HL7 field (PV1-3.4) in its ERR, as every other refusal
  does, where it named the canonical `hospital_ods` with an empty ERR-1;
- a batch frame holding BTS or FTS but no FHS / BHS names the batch segment, where it said "MSH appears more
  than once" of a frame with one MSH."""

from __future__ import annotations

from pathlib import Path

from adapters.hl7v2 import Disposition, map_adt

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2"
A01 = (FIXTURES / "ADT_A01_s3_detained.hl7").read_bytes().decode()
A08 = (FIXTURES / "ADT_A08_s2_to_s3_update.hl7").read_bytes().decode()
A11 = (FIXTURES / "ADT_A11_cancel_admit.hl7").read_bytes().decode()
A13 = (FIXTURES / "ADT_A13_cancel_discharge.hl7").read_bytes().decode()


def test_an_hl7_null_given_name_is_no_name_not_the_two_characters() -> None:
    result = map_adt(A01.replace("TESTPATIENT^ALEX^J", 'TESTPATIENT^""^J'))
    assert result.disposition is Disposition.CHANGE, result.problems
    assert "given_name" not in result.change["person"]
    assert result.change["person"]["family_name"] == "TESTPATIENT"


def test_hl7_nulls_in_optional_fields_leave_the_detention_valid() -> None:
    text = (A01.replace("|19800214|", '|""|').replace("HP20 1AA", '""')
            .replace("SYNTHETIC GP PRACTICE^^K82001", 'SYNTHETIC GP PRACTICE^^""')
            .replace("EVN||202501061010", 'EVN||""').replace("MSH|^~\\&|RIO|", 'MSH|^~\\&|""|'))
    result = map_adt(text)
    assert result.disposition is Disposition.CHANGE, result.problems
    person = result.change["person"]
    assert "birth_date" not in person and "postcode" not in person
    assert "gp_practice_ods" not in result.change and "notified_on" not in result.change
    assert result.change["source_system"] == "RNU"  # MSH-3 null: MSH-4, as for an empty MSH-3


def test_an_hl7_null_nhs_number_is_no_nhs_number() -> None:
    result = map_adt(A01.replace("9990001006^^^NHS^NH", '""^^^NHS^NH'))
    assert result.disposition is Disposition.ERROR
    assert [(p.field, p.code) for p in result.problems] == [("PID-3", "101")]


def test_an_hl7_null_control_id_is_no_control_id() -> None:
    result = map_adt(A01.replace("|RNU-A01-0001|", '|""|'))
    assert result.disposition is Disposition.REJECT
    assert result.problems[0].field == "MSH-10"


def test_a_null_legal_status_on_an_update_is_no_legal_status() -> None:
    result = map_adt(A08.replace("ZU5|2025|2|3|", 'ZU5|2025|2|""|'))
    assert result.disposition is Disposition.NO_CHANGE


def test_a_quoted_value_that_is_not_the_null_is_read() -> None:
    result = map_adt(A01.replace("TESTPATIENT^ALEX", 'TESTPATIENT^"AL"'))
    assert result.change["person"]["given_name"] == '"AL"'


def test_a_held_cancellation_maps_the_hospital_back_to_its_hl7_field() -> None:
    for text in (A11, A13):
        result = map_adt(text.replace("WHITELEAF^WARD1^BED1^RNU", "WHITELEAF^WARD1^BED1^R1A"))
        assert result.about is not None and result.about["hospital_ods"] == "R1A"
        assert result.hl7_field("hospital_ods") == "PV1-3.4"
        assert result.hl7_field("person.nhs_number") == "PID-3"


def test_a_held_cancellation_without_pv1_names_msh4_for_the_hospital() -> None:
    text = "\r".join(s for s in A11.split("\r") if not s.startswith("PV1|"))
    result = map_adt(text)
    assert result.about["hospital_ods"] == "RNU" and result.hl7_field("hospital_ods") == "MSH-4"


def test_a_frame_with_a_batch_trailer_names_the_trailer() -> None:
    for trailer in ("BTS|1", "FTS|1", "BTS|1\rFTS|1"):
        result = map_adt(A01 + "\r" + trailer)
        assert result.disposition is Disposition.REJECT
        problem = result.problems[0]
        assert problem.field == trailer[:3], problem
        assert "appears more than once" not in problem.reason and "own MLLP frame" in problem.reason


def test_two_messages_in_a_frame_still_name_msh() -> None:
    result = map_adt(A01 + "\r" + A01)
    assert result.problems[0].field == "MSH" and "appears more than once" in result.problems[0].reason
