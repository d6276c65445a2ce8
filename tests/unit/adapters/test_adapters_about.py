"""What an input the adapters could not map is about (`about`): the change
type, the NHS number when it can be read, the hospital named: all the access
policy asks before anything of it is kept (hub/ingest/service.py
`write_precheck`). Nothing else of the person is carried."""

from __future__ import annotations

from pathlib import Path

from adapters.council_files import LAYOUTS
from adapters.council_files.events import REFUSED_EVENTS, TRUST_EVENTS
from adapters.council_files.mapping import map_record
from adapters.hl7v2 import Disposition, map_adt
from hub.domain.access import TRUST_ONLY_CHANGE_TYPES

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures" / "hl7v2"
NHS = "9990001006"


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_an_a03_that_does_not_map_is_about_a_discharge_of_the_number_it_names():
    result = map_adt(_fixture("ADT_A03_discharge.hl7").replace("||19800214|", "||19801345|"))
    assert result.disposition is Disposition.ERROR and [p.field for p in result.problems] == ["PID-7"]
    assert result.change is None
    assert result.about == {"change_type": "left-hospital", "person": {"nhs_number": NHS}, "hospital_ods": "RNU"}


def test_an_a08_with_an_unreadable_legal_status_is_about_a_change_of_legal_status():
    result = map_adt(_fixture("ADT_A08_s2_to_s3_update.hl7").replace("ZU5|2025|2|3|", "ZU5|2025|77|3|"))
    assert result.disposition is Disposition.ERROR
    assert result.about is not None and result.about["change_type"] == "section-changed"
    assert result.about["person"] == {"nhs_number": NHS}


def test_an_a01_without_a_legal_status_is_about_nothing_the_policy_can_ask():
    """A detention or an informal admission: a detention needs no relationship, so nothing to ask."""
    result = map_adt(_fixture("ADT_A01_s3_detained.hl7").replace("ZU5|2025|3|3|", "ZU5|2025||3|"))
    assert result.disposition is Disposition.ERROR and result.about is None


def test_two_nhs_numbers_or_none_are_no_number():
    two = _fixture("ADT_A03_discharge.hl7").replace("RNU1234567^^^RNU^PI", "9990000018^^^NHS^NH")
    result = map_adt(two.replace("||19800214|", "||19801345|"))
    assert result.about is not None and "person" not in result.about


def _record(**values: str):  # noqa: ANN202
    base = {"RECORD_ID": "SW-1", "EFFECTIVE_DATE": "01/08/2025", "NHS_NO": "999 000 1006", "SURNAME": "Testpatient",
            "DOB": "14/03/1971", "LA_GSS": "E08000025"}
    return map_record(LAYOUTS["swift_csv"], 1, {**base, **values}, b"raw")


def test_a_council_row_that_does_not_map_is_about_its_event_and_number():
    row = _record(EVENT="ADDR_CHANGE", DOB="31/02/1970")
    assert row.data is None and row.about == {"change_type": "moved", "person": {"nhs_number": NHS}}
    row = _record(EVENT="ADDR_CHANGE", DOB="31/02/1970", NHS_NO="123")
    assert row.about == {"change_type": "moved"}
    assert _record(EVENT="ADDR_CHANGE").about is None  # mapped: the change itself says


def test_a_trust_event_from_a_council_is_about_that_trust_only_change():
    for code in TRUST_EVENTS:
        row = _record(EVENT=code.lower())
        assert row.data is None and row.about is not None, code
        assert row.about["change_type"] in {t.value for t in TRUST_ONLY_CHANGE_TYPES}, code
    assert set(TRUST_EVENTS) == {c for c, reason in REFUSED_EVENTS.items() if reason.startswith("is a trust event")}


def test_a_package_row_or_an_unknown_event_is_about_its_number_only():
    row = _record(EVENT="PKG_START", PACKAGE_ID="L-1")  # SERVICE_TYPE and more are missing
    assert row.data is None and row.about == {"record": "package", "person": {"nhs_number": NHS}}
    row = _record(EVENT="NOPE")
    assert row.about == {"person": {"nhs_number": NHS}}
    assert _record(EVENT="S117_START").about == {"person": {"nhs_number": NHS}}
