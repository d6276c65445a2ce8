"""HL7 v2 death -> the canonical change `died`: PID-30 (patient death indicator) `Y`, dated PID-29 (patient death
date and time), else on an A03 the discharge (PV1-45); on an A03 also PV1-36 (the ITK profile's discharge method)
4, "patient died". Before, PID-29/30 were not read: an A03 for a patient who died in hospital was `left-hospital`
(which starts s117 entitlement and a review clock for a dead person) and an A08 saying the patient died changed
nothing. The refusals (AE, quarantined after the access precheck, `about` the death) name PID-29 / PID-30."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.hl7v2 import Disposition, map_adt
from hub.ingest.contract import RegisterChangeIn

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
A02 = (FIXTURES / "ADT_A02_s2_to_s3_transfer.hl7").read_bytes().decode()
A03 = (FIXTURES / "ADT_A03_discharge.hl7").read_bytes().decode()  # PV1-45 2025-03-03 11:00, PV1-36 1
A08 = (FIXTURES / "ADT_A08_s2_to_s3_update.hl7").read_bytes().decode()  # ZU5 2 -> 3: a section-changed
PERSON = {"nhs_number": "9990001006", "family_name": "TESTPATIENT", "given_name": "ALEX",
          "birth_date": "1980-02-14", "postcode": "HP20 1AA"}


def set_field(text: str, segment: str, position: int, value: str) -> str:
    """`segment`-`position` (the first such segment) set to `value`, the segment padded with empty fields."""
    lines = text.split("\r")
    i = next(i for i, line in enumerate(lines) if line.startswith(segment + "|"))
    fields = lines[i].split("|")
    fields += [""] * (position + 1 - len(fields))
    fields[position] = value
    lines[i] = "|".join(fields)
    return "\r".join(lines)


def death(text: str, died_at: str = "", indicator: str = "", method: str | None = None) -> str:
    text = set_field(set_field(text, "PID", 29, died_at), "PID", 30, indicator)
    return set_field(text, "PV1", 36, method) if method is not None else text


def refused(text: str) -> tuple[str, str, str]:
    """The one problem of a message that does not map: (field, reason, code); the access policy is asked
    about the death (`about`) before anything of it is kept."""
    r = map_adt(text)
    assert r.disposition is Disposition.ERROR and r.change is None, r
    assert r.about is not None and r.about["change_type"] == "died", r.about
    assert r.about["person"] == {"nhs_number": "9990001006"}, r.about
    (problem,) = r.problems
    return problem.field, problem.reason, problem.code


# -- A03 discharge of a patient who died ---------------------------------------------------------------------

def test_a03_with_pid_30_y_maps_to_died_on_the_death_date_not_left_hospital():
    r = map_adt(death(A03, died_at="202503020645", indicator="Y"))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change == {
        "source_system": "RIO", "source_message_id": "RNU-A03-0001", "change_type": "died", "person": PERSON,
        "notified_on": "2025-03-03", "effective_date": "2025-03-02",
    }  # no hospital or GP: `died` takes neither (REST refuses them on it)
    RegisterChangeIn.model_validate(r.change)
    assert r.hl7_field("effective_date") == "PID-29" and r.hl7_field("change_type") == "PID-30"


def test_a03_with_pid_30_y_and_no_death_date_is_dated_by_the_discharge():
    r = map_adt(death(A03, indicator="Y"))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change["change_type"] == "died" and r.change["effective_date"] == "2025-03-03"
    assert r.hl7_field("effective_date") == "PV1-45"


def test_a03_whose_discharge_method_pv1_36_is_4_patient_died_maps_to_died():
    """The ITK A03 example carries the NHS Data Dictionary discharge method in PV1-36 (3, with PV1-37 19, the
    discharge destination); 4 is "patient died", whether or not the PAS also fills PID-29/30."""
    r = map_adt(death(A03, method="4"))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change["change_type"] == "died" and r.change["effective_date"] == "2025-03-03"
    assert r.hl7_field("change_type") == "PV1-36"
    r = map_adt(death(A03, died_at="20250302", method="4"))
    assert r.change["change_type"] == "died" and r.change["effective_date"] == "2025-03-02"
    r = map_adt(death(A03, died_at="20250302", indicator="Y", method="4"))
    assert r.change["change_type"] == "died" and r.hl7_field("change_type") == "PID-30"


@pytest.mark.parametrize("indicator", ["y", "Y"])
def test_pid_30_is_read_in_any_case(indicator: str):
    assert map_adt(death(A03, died_at="20250302", indicator=indicator)).change["change_type"] == "died"


def test_the_death_date_is_the_day_in_england_of_a_time_with_an_offset():
    # 23:30 at -01:00 on 11 January is 00:30 GMT on 12 January
    r = map_adt(death(A08, died_at="202501112330-0100", indicator="Y"))
    assert r.change["change_type"] == "died" and r.change["effective_date"] == "2025-01-12"


@pytest.mark.parametrize(("indicator", "method"), [("N", None), ('""', None), ("", None), ("N", "1"), ("", "1"),
                                                   ("", "9")])
def test_a03_of_a_living_patient_is_still_left_hospital(indicator: str, method: str | None):
    r = map_adt(death(A03, indicator=indicator, method=method))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change["change_type"] == "left-hospital" and r.change["hospital_ods"] == "RNU"


def test_a03_with_a_death_after_the_discharge_is_ae_naming_pid_29():
    """Died two days after leaving hospital alive: a `left-hospital` and then a `died`, which one A03 cannot
    carry; recording only the death would lose the discharge (and the entitlement it started)."""
    field, reason, _ = refused(death(A03, died_at="20250305", indicator="Y"))
    assert field == "PID-29" and "after the discharge date (PV1-45)" in reason
    # the same day, or a death before the discharge is recorded (the body leaves the ward after midnight)
    assert map_adt(death(A03, died_at="202503031500", indicator="Y")).change["change_type"] == "died"


def test_a03_with_pid_30_y_and_no_date_at_all_is_ae_naming_pid_29():
    text = death(A03, indicator="Y")
    text = set_field(text, "PV1", 45, "")
    field, reason, code = refused(text)
    assert field == "PID-29" and "death date and time is required" in reason and code == "101"


# -- A08 / A02 saying the patient died -------------------------------------------------------------------

@pytest.mark.parametrize("message", [A08, A02], ids=["A08", "A02"])
def test_an_update_with_pid_30_y_and_pid_29_maps_to_died_and_reads_no_legal_status(message: str):
    r = map_adt(death(message, died_at="20250112", indicator="Y"))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change["change_type"] == "died" and r.change["effective_date"] == "2025-01-12"
    assert r.change["person"] == PERSON
    assert not {"legal_status_code", "hospital_ods", "gp_practice_ods"} & r.change.keys()
    RegisterChangeIn.model_validate(r.change)
    # without it the same message is the change of legal status it was
    assert map_adt(message).change["change_type"] == "section-changed"


def test_an_update_with_pid_30_y_but_no_pid_29_is_ae_naming_pid_29():
    """No other date: EVN-6 is when the PAS recorded the update, not the death."""
    field, reason, code = refused(death(A08, indicator="Y"))
    assert field == "PID-29" and code == "101" and "with PID-30 Y on A08" in reason


def test_an_update_with_pid_30_n_is_read_as_before():
    assert map_adt(death(A08, indicator="N")).change["change_type"] == "section-changed"


def test_an_update_saying_nothing_of_a_legal_status_but_the_death_is_died():
    """An A08 with no ZU5 (before: "no register change") saying the patient died."""
    text = "\r".join(line for line in A08.split("\r") if not line.startswith("ZU5|"))
    assert map_adt(text).disposition is Disposition.NO_CHANGE
    assert map_adt(death(text, died_at="20250112", indicator="Y")).change["change_type"] == "died"


# -- contradictions and values not in HL7 table 0136 -----------------------------------------------------

@pytest.mark.parametrize("message", [A03, A08], ids=["A03", "A08"])
def test_a_death_date_with_pid_30_n_is_ae_naming_pid_30(message: str):
    field, reason, _ = refused(death(message, died_at="20250112", indicator="N"))
    assert field == "PID-30" and "is N (the patient has not died), but PID-29 gives a date of death" in reason


def test_discharge_method_died_with_pid_30_n_is_ae_naming_pid_30():
    field, reason, _ = refused(death(A03, indicator="N", method="4"))
    assert field == "PID-30" and "discharge method (PV1-36) is 4" in reason


@pytest.mark.parametrize("message", [A03, A08], ids=["A03", "A08"])
@pytest.mark.parametrize("value", ["U", "X", "YES", "1"])
def test_pid_30_other_than_y_or_n_is_ae_naming_pid_30(message: str, value: str):
    field, reason, code = refused(death(message, died_at="20250112", indicator=value))
    assert field == "PID-30" and code == "103"
    assert reason == "is not Y (the patient has died) or N (the patient has not died), HL7 table 0136"  # not quoted


@pytest.mark.parametrize("message", [A03, A08], ids=["A03", "A08"])
def test_a_death_date_without_pid_30_is_ae_naming_pid_30(message: str):
    """A date of death alone is not taken as a death: recorded wrongly, it ends a living person's aftercare."""
    field, reason, code = refused(death(message, died_at="20250112"))
    assert field == "PID-30" and code == "101" and "is required (Y)" in reason


def test_a_death_date_that_is_not_a_date_is_ae_naming_pid_29():
    field, reason, code = refused(death(A08, died_at="2025-01-12", indicator="Y"))
    assert (field, code) == ("PID-29", "102") and "not a valid HL7 date" in reason
