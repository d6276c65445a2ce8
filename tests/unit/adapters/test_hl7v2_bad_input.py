"""HL7 v2 bad input from an outside review: batches and repeated segments
are refused whole rather than half read, MSH-10 is the control id as sent,
a bad escape sequence is an error rather than a silently changed value, and
MSH-18 decides how the bytes are read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.hl7v2 import Disposition, build_ack, map_adt

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
A01 = (FIXTURES / "ADT_A01_s3_detained.hl7").read_bytes().decode()
A03 = (FIXTURES / "ADT_A03_discharge.hl7").read_bytes().decode()
A08 = (FIXTURES / "ADT_A08_s2_to_s3_update.hl7").read_bytes().decode()
NHS = "9990001006"
OTHER_NHS = "9990002010"  # valid check digit, 999 test range
NOW = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)


def segment(text: str, name: str) -> str:
    return next(s for s in text.split("\r") if s.startswith(name + "|"))


def repeat(text: str, name: str, change: tuple[str, str] | None = None) -> str:
    """`text` with its `name` segment followed by a second one (changed by `change`)."""
    seg = segment(text, name)
    second = seg.replace(*change) if change else seg
    return text.replace(seg, seg + "\r" + second, 1)


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA|")).split("|")


def errs(ack: str) -> list[str]:
    return [s for s in ack.split("\r") if s.startswith("ERR|")]


# -- 1. batches and repeated segments ---------------------------------------------

@pytest.mark.parametrize("wrap", ["FHS+BHS", "BHS", "none"])
def test_a_batch_of_two_messages_is_rejected_whole_naming_the_batch(wrap):
    second = A01.replace("RNU-A01-0001", "RNU-A01-0002").replace(NHS, OTHER_NHS)
    body = A01 + "\r" + second
    if wrap == "FHS+BHS":
        text = "FHS|^~\\&|RIO|RNU\rBHS|^~\\&|RIO|RNU\r" + body + "\rBTS|2\rFTS|1"
    elif wrap == "BHS":
        text = "BHS|^~\\&|RIO|RNU\r" + body + "\rBTS|2"
    else:
        text = body  # two MSH in one frame, without the envelope
    r = map_adt(text)
    assert r.disposition is Disposition.REJECT and not r.quarantine and r.change is None
    named = {"FHS+BHS": "FHS", "BHS": "BHS", "none": "MSH"}[wrap]
    assert r.problems[0].field == named
    assert "batches are not taken: send each message in its own MLLP frame" in r.problems[0].reason
    ack = build_ack(r.header, "AR", "ACK1", NOW, r.problems[0].reason, r.problems)
    assert errs(ack)[0].startswith(f"ERR|{named}^1^^")


def test_a_single_message_in_a_batch_envelope_is_a_batch_too():
    r = map_adt("BHS|^~\\&|RIO|RNU\r" + A01 + "\rBTS|1")
    assert r.disposition is Disposition.REJECT and r.problems[0].field == "BHS"


def test_two_pid_segments_with_different_nhs_numbers_are_an_error_naming_pid():
    r = map_adt(repeat(A01, "PID", (NHS, OTHER_NHS)))
    assert r.disposition is Disposition.ERROR and r.change is None
    assert [p.field for p in r.problems] == ["PID"]
    assert r.problems[0].reason.startswith("appears twice")
    ack = build_ack(r.header, "AE", "ACK1", NOW, "register change rejected", r.problems)
    assert "PID appears twice" in errs(ack)[0]
    # Whom it is about cannot be told: no NHS number for the access policy (quarantined, as other AE's)
    assert r.about is not None and r.about["change_type"] == "detained" and "person" not in r.about


def test_a_repeated_segment_naming_the_same_person_still_tells_the_access_policy_who():
    r = map_adt(repeat(A03, "PID"))
    assert r.disposition is Disposition.ERROR and [p.field for p in r.problems] == ["PID"]
    assert r.about == {"change_type": "left-hospital", "person": {"nhs_number": NHS}, "hospital_ods": "RNU"}


@pytest.mark.parametrize("name", ["EVN", "PV1", "ZU5", "PD1"])
def test_each_segment_the_adt_message_allows_once_is_refused_when_repeated(name):
    r = map_adt(repeat(A01, name))
    assert r.disposition is Disposition.ERROR and [p.field for p in r.problems] == [name]


def test_a_repeated_zu5_on_an_update_is_refused_and_about_says_a_change_of_legal_status():
    r = map_adt(repeat(A08, "ZU5", ("ZU5|2025|2|3|", "ZU5|2025|2|2|")))
    assert r.disposition is Disposition.ERROR and [p.field for p in r.problems] == ["ZU5"]
    assert r.about is not None and r.about["change_type"] == "section-changed"
    assert r.about["person"] == {"nhs_number": NHS}


def test_segments_that_may_repeat_are_still_taken():
    r = map_adt(A01.replace("\rPD1|", "\rNK1|1\rNK1|2\rPD1|"))
    assert r.disposition is Disposition.CHANGE, r.problems


# -- 2. MSH-10 as sent -------------------------------------------------------------

@pytest.mark.parametrize("control_id", ["m4-esc\\Xzz\\", "m4-esc\\Xqq\\", "m5-\\", "a\\F\\b", "m6-\\X41\\"])
def test_msh10_is_the_idempotency_key_and_msa2_exactly_as_sent(control_id):
    r = map_adt(A01.replace("RNU-A01-0001", control_id))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.header.control_id == control_id
    assert r.change is not None and r.change["source_message_id"] == control_id
    assert msa(build_ack(r.header, "AA", "ACK1", NOW, "register change accepted"))[2] == control_id


def test_two_control_ids_that_unescape_alike_stay_two_keys():
    ids = {map_adt(A01.replace("RNU-A01-0001", c)).header.control_id for c in ("m4-esc\\Xzz\\", "m4-esc\\Xqq\\")}
    assert len(ids) == 2


# -- 3. bad escapes ------------------------------------------------------------------

@pytest.mark.parametrize("family", ["FOTHERINGAY\\Xzz\\", "FOTHERINGAY\\Q\\", "FOTHERINGAY\\X4\\", "FOTHERINGAY\\",
                                    "FOTHER\\\\INGAY", "FOTHERINGAY\\Z01\\", "FOTHERINGAY\\.br\\"])
def test_a_bad_escape_in_the_name_is_an_error_naming_pid5(family):
    r = map_adt(A01.replace("TESTPATIENT^ALEX", family + "^ALEX"))
    assert r.disposition is Disposition.ERROR, r.change
    assert [p.field for p in r.problems] == ["PID-5"]
    assert r.about is not None and r.about["person"] == {"nhs_number": NHS}  # the access policy still asks


@pytest.mark.parametrize(("family", "read"), [("O\\S\\BRIEN", "O^BRIEN"), ("SMITH\\T\\JONES", "SMITH&JONES"),
                                              ("A\\X4142\\C", "AABC"), ("B\\E\\C", "B\\C")])
def test_valid_escapes_are_still_undone(family, read):
    r = map_adt(A01.replace("TESTPATIENT^ALEX", family + "^ALEX"))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change is not None and r.change["person"]["family_name"] == read


# -- 4. MSH-18 ------------------------------------------------------------------------

def _declared(charset: str, name: bytes) -> bytes:
    raw = A01.encode().replace(b"|GBR|UNICODE|", b"|GBR|" + charset.encode() + b"|", 1)
    return raw.replace(b"TESTPATIENT", name)


def test_a_message_declared_8859_1_is_read_as_latin1():
    from hub.mllp import _decode_declared

    text, problem = _decode_declared(_declared("8859/1", b"M\xfcLLER"))
    assert problem is None and map_adt(text).change["person"]["family_name"] == "M\u00fcLLER"  # type: ignore[index]
    text, problem = _decode_declared(_declared("8859/1", b"M\xc3\xbcLLER"))
    assert problem is None and map_adt(text).change["person"]["family_name"] == "M\u00c3\u00bcLLER"  # type: ignore[index]


@pytest.mark.parametrize("charset", ["UNICODE UTF-8", "UNICODE", "unicode utf-8"])
def test_a_message_declared_utf8_with_bytes_that_are_not_is_refused_naming_msh18(charset):
    from hub.mllp import _decode_declared

    text, problem = _decode_declared(_declared(charset, b"M\xfcLLER"))
    assert problem is not None and problem.field == "MSH-18"
    assert map_adt(text).header.control_id == "RNU-A01-0001"  # the header still read, for the AR
    text, problem = _decode_declared(_declared(charset, b"M\xc3\xbcLLER"))
    assert problem is None and "M\u00fcLLER" in text


def test_ascii_declared_takes_only_ascii():
    from hub.mllp import _decode_declared

    assert _decode_declared(_declared("ASCII", b"MULLER"))[1] is None
    assert _decode_declared(_declared("ASCII", b"M\xc3\xbcLLER"))[1].field == "MSH-18"  # type: ignore[union-attr]


@pytest.mark.parametrize("charset", ["8859/15", "UNICODE UTF-16", "ISO IR87", "LATIN1"])
def test_a_character_set_not_taken_is_refused_naming_msh18(charset):
    from hub.mllp import _decode_declared

    _text, problem = _decode_declared(_declared(charset, b"MULLER"))
    assert problem is not None and problem.field == "MSH-18" and "does not take" in problem.reason


def test_without_msh18_the_bytes_are_read_as_before():
    from hub.mllp import _decode_declared

    raw = _declared("", b"M\xfcLLER")
    assert _decode_declared(raw) == (raw.decode("latin-1"), None)
    raw = _declared("", b"M\xc3\xbcLLER")
    assert _decode_declared(raw) == (raw.decode("utf-8"), None)
