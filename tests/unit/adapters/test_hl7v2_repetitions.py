"""HL7 v2 repetitions (`~`) in a field the mapping reads as one value (README.md, "Repetitions").

From an outside review: the reader took a field's first repetition wherever the mapping read one value, so a
field sent with repetitions was silently cut to its first: PV2-10 `84~90` was read as 84 days, a second council in
ZU5-9 dropped, a second date in EVN-6 or a second location in PV1-3 ignored. A field HL7 v2.4 (the ITK profile, or
the hub for its own ZU5 fields) does not let repeat, sent with a repetition, is now refused: `AE` naming the field
("repeats: the field takes one value ..."), never quoting it, nothing recorded (quarantined by the listener as any
AE); the fields that decide whether the message is taken at all (MSH-4, MSH-9, MSH-11, MSH-12, EVN-1) `AR`, as
their other problems are. Fields the standard lets repeat keep a documented rule: PID-3, PID-11, MRG-1 as before;
PID-5 the repetition typed L (legal), else the first; PD1-3 and PV1-45 the one value their repetitions agree on.
The fixtures (the ITK examples among them) map exactly as they did before (`hl7v2_fixtures_mapped.json`)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.hl7v2 import Disposition, build_ack, map_adt
from adapters.hl7v2.mapping import MappingResult, _Msg, _normalise_segments
from hub.ingest.contract import RegisterChangeIn

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
GOLDEN = Path(__file__).resolve().parent / "hl7v2_fixtures_mapped.json"


def load(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode()


A01 = load("ADT_A01_s3_detained.hl7")  # ZU5 3/3, ZU5-5 2025-01-06, PV1-44 2025-01-06
A03 = load("ADT_A03_discharge.hl7")  # PV1-45 2025-03-03 11:00
A08 = load("ADT_A08_s2_to_s3_update.hl7")  # ZU5 2 -> 3, EVN-6 2025-01-13
A11 = load("ADT_A11_cancel_admit.hl7")
A13 = load("ADT_A13_cancel_discharge.hl7")
A01_CHILD = A01.replace("ZU5|2025|3|3|1|202501061000|1", "PV2||||||||||84\rZU5|2025|3|3|1|202501061000|1|||E10000025")


def set_field(text: str, segment: str, position: int, value: str) -> str:
    """`segment`-`position` (the first such segment) set to `value`, the segment padded with empty fields."""
    lines = text.split("\r")
    i = next(i for i, line in enumerate(lines) if line.startswith(segment + "|"))
    fields = lines[i].split("|")
    index = position - 1 if segment == "MSH" else position  # MSH-1 is the field separator itself
    fields += [""] * (index + 1 - len(fields))
    fields[index] = value
    lines[i] = "|".join(fields)
    return "\r".join(lines)


def field_of(text: str, segment: str, position: int) -> str:
    line = next(line for line in text.split("\r") if line.startswith(segment + "|"))
    fields = line.split("|")
    index = position - 1 if segment == "MSH" else position
    return fields[index] if index < len(fields) else ""


# (name, message, the field repeated, a text of its second repetition that must never be quoted)
NOT_REPEATING = [
    ("PV2-10 expected stay", set_field(A01_CHILD, "PV2", 10, "84~91"), "PV2-10", "91"),
    ("ZU5-9 EHC plan council", set_field(A01_CHILD, "ZU5", 9, "E10000025~E10000014"), "ZU5-9", "E10000014"),
    ("PV1-3 assigned location", set_field(A01, "PV1", 3, "WHITELEAF^WARD1^BED1^RNU~QQ^W^B^RQQ"), "PV1-3", "RQQ"),
    ("PV1-39 servicing facility", set_field(set_field(A01, "PV1", 3, "WHITELEAF^WARD1^BED1"), "PV1", 39,
                                            "RNU~RQQ"), "PV1-39", "RQQ"),
    ("PV1-44 admit date", set_field(set_field(A01, "ZU5", 5, ""), "PV1", 44, "202501061000~202409090000"),
     "PV1-44", "20240909"),
    ("EVN-6 event occurred", set_field(A08, "EVN", 6, "202501130900~202409090000"), "EVN-6", "20240909"),
    ("EVN-2 recorded", set_field(A01, "EVN", 2, "202501061010~202409090000"), "EVN-2", "20240909"),
    ("ZU5-2 legal status on admission", set_field(A01, "ZU5", 2, "3~37"), "ZU5-2", "37"),
    ("ZU5-3 legal status at the event", set_field(A08, "ZU5", 3, "3~19"), "ZU5-3", "19"),
    ("ZU5-5 detention commenced", set_field(A01, "ZU5", 5, "202501061000~202409090000"), "ZU5-5", "20240909"),
    ("ZU5-7 CP(I)A order", set_field(set_field(set_field(A01, "ZU5", 2, "31"), "ZU5", 3, "31"), "ZU5", 7,
                                     "hospital-order~absolute-discharge"), "ZU5-7", "absolute"),
    ("ZU5-8 recall or fresh", set_field(A01, "ZU5", 8, "fresh-application~cto-recall"), "ZU5-8", "cto-recall"),
    ("PID-7 birth date", set_field(A01, "PID", 7, "19800214~19790101"), "PID-7", "19790101"),
    ("PID-29 death date", set_field(set_field(A08, "PID", 29, "20250113~20250101"), "PID", 30, "Y"), "PID-29",
     "20250101"),
    ("PID-30 death indicator", set_field(A08, "PID", 30, "N~Y"), "PID-30", "N~Y"),
    ("PV1-36 discharge disposition", set_field(A03, "PV1", 36, "1~4"), "PV1-36", "1~4"),
    ("MSH-3 sending application", set_field(A01, "MSH", 3, "RIO~OTHERAPP"), "MSH-3", "OTHERAPP"),
    ("MSH-10 control id", set_field(A01, "MSH", 10, "RNU-A01-0001~SECONDID"), "MSH-10", "SECONDID"),
]


@pytest.mark.parametrize(("text", "position", "second"), [c[1:] for c in NOT_REPEATING],
                         ids=[c[0] for c in NOT_REPEATING])
def test_a_field_that_takes_one_value_sent_with_repetitions_is_refused_naming_it(text, position, second):
    r = map_adt(text)
    assert r.disposition is Disposition.ERROR, r
    assert r.change is None  # nothing mapped: nothing for ingest to record
    named = [p for p in r.problems if p.field == position]
    assert len(named) == 1, r.problems
    assert named[0].reason.startswith("repeats: the field takes one value"), named[0]
    assert named[0].code == "102"
    segment, f = position.split("-")
    ack = build_ack(r.header, "AE", "ACK1", datetime(2025, 1, 6), "register change rejected", r.problems)
    assert f"ERR|{segment}^1^{f}^102&{position} repeats: the field takes one value" in ack, ack
    for p in r.problems:  # never quoted
        assert second not in p.reason and second not in p.field
    assert second not in ack.split("\rMSA|", 1)[1] or position == "MSH-10"  # (MSA-2 echoes MSH-10 as sent)


@pytest.mark.parametrize(("text", "position", "second"), [c[1:] for c in NOT_REPEATING],
                         ids=[c[0] for c in NOT_REPEATING])
def test_the_same_message_without_the_repetition_is_taken(text, position, second):
    """The repetition is the only problem of each case above: the first repetition alone maps (or, the
    A08 with PID-30 N, the informal ..., changes nothing), never refused."""
    segment, f = position.split("-")
    single = set_field(text, segment, int(f), field_of(text, segment, int(f)).split("~")[0])
    assert map_adt(single).disposition in (Disposition.CHANGE, Disposition.NO_CHANGE), map_adt(single).problems


GATES = [
    ("MSH-4 sending facility", set_field(A01, "MSH", 4, "RNU~RQQ"), "MSH-4"),
    ("MSH-9 message type", set_field(A01, "MSH", 9, "ADT^A01^ADT_A01~ADT^A08^ADT_A01"), "MSH-9"),
    ("MSH-11 processing id", set_field(A01, "MSH", 11, "P~T"), "MSH-11"),
    ("MSH-12 version", set_field(A01, "MSH", 12, "2.4~2.5"), "MSH-12"),
    ("EVN-1 event type", set_field(set_field(A01, "MSH", 9, "ADT"), "EVN", 1, "A01~A08"), "EVN-1"),
]


@pytest.mark.parametrize(("text", "position"), [g[1:] for g in GATES], ids=[g[0] for g in GATES])
def test_a_repeated_field_that_decides_whether_the_message_is_taken_is_ar(text, position):
    r = map_adt(text)
    assert r.disposition is Disposition.REJECT and not r.quarantine, r
    assert r.problems[0].field == position and r.problems[0].reason.startswith("repeats: the field takes one")


def test_a_cancellation_read_from_a_repeated_date_cancels_nothing():
    """An A11 whose ZU5-5 repeats: which detention it cancels cannot be told; AE (quarantined), no date for the
    listener to retract by. An A13 whose PV1-45 repetitions differ, likewise."""
    a11 = A11 + "\rZU5|2025|3|3|1|202501061000~202409090000|1"
    r = map_adt(a11)
    assert r.disposition is Disposition.ERROR and r.cancelled_on is None
    assert [p.field for p in r.problems] == ["ZU5-5"] and r.about["change_type"] == "detained"
    r = map_adt(set_field(A13, "PV1", 45, "202503031100~202503051100"))
    assert r.disposition is Disposition.ERROR and r.cancelled_on is None
    assert [p.field for p in r.problems] == ["PV1-45"] and r.about["change_type"] == "left-hospital"
    assert map_adt(a11.replace("~202409090000", "")).disposition is Disposition.REJECT  # as before: AR, held


def test_a_merge_with_a_repeated_control_id_is_refused():
    a40 = set_field(A01, "MSH", 9, "ADT^A40^ADT_A39").split("\rPD1|")[0] + "\rMRG|9990001014^^^NHS^NH"
    assert map_adt(a40).disposition is Disposition.MERGE
    r = map_adt(set_field(a40, "MSH", 10, "A40-1~A40-2"))
    assert r.disposition is Disposition.ERROR and [p.field for p in r.problems] == ["MSH-10"]


def test_a_repeated_hospital_field_tells_the_access_policy_no_hospital():
    """`about` carries the hospital the access policy asks about only when it can be told: a PV1-3 sent with two
    locations names none (read as its first, a hospital of another trust could be told for one of the trust's
    own, or the reverse)."""
    r = map_adt(set_field(A01, "PV1", 3, "X^W^B^RQQ~WHITELEAF^WARD1^BED1^RNU"))
    assert r.disposition is Disposition.ERROR
    assert r.about == {"change_type": "detained", "person": {"nhs_number": "9990001006"}}


def test_a_repeated_field_on_a_message_that_would_change_nothing_is_refused():
    """The repetition is refused wherever the field is read: an A08 whose legal status is unchanged (no register
    change) with ZU5-8 repeated, about the change of legal status it may be (the care provider's to report); an
    A01 whose ZU5-2 repeats cannot be told a detention or an informal admission (`about` None)."""
    r = map_adt(set_field(set_field(A08, "ZU5", 2, "3"), "ZU5", 8, "fresh-application~cto-recall"))
    assert r.disposition is Disposition.ERROR and [p.field for p in r.problems] == ["ZU5-8"]
    assert r.about["change_type"] == "section-changed"
    r = map_adt(set_field(A01, "ZU5", 2, "1~3"))
    assert r.disposition is Disposition.ERROR and [p.field for p in r.problems] == ["ZU5-2"] and r.about is None
    assert map_adt(set_field(A01, "ZU5", 2, "1")).disposition is Disposition.NO_CHANGE  # informal: AA as before


def test_a_problem_of_the_first_repetition_gives_way_to_the_repetition():
    r = map_adt(set_field(A01_CHILD, "PV2", 10, "twelve weeks~84"))
    assert [(p.field, p.reason[:8]) for p in r.problems] == [("PV2-10", "repeats:")]


def test_several_repeated_fields_are_each_named():
    text = set_field(set_field(set_field(A01_CHILD, "PV2", 10, "84~91"), "ZU5", 9, "E10000025~E10000014"),
                     "EVN", 2, "202501061010~202501061011")
    assert sorted(p.field for p in map_adt(text).problems) == ["EVN-2", "PV2-10", "ZU5-9"]


def test_the_reader_records_a_field_as_repeated_exactly_when_it_holds_a_repetition():
    """Every field of every fixture, with a repetition added to each field in turn: the one-value read gives the
    first repetition's value (as before) and records the field only when it holds the separator."""
    for path in sorted([*FIXTURES.glob("*.hl7"), *FIXTURES.glob("itk/*.hl7")]):
        text = _normalise_segments(path.read_bytes().decode())
        for line in text.split("\r"):
            name, count = line[:3], len(line.split("|"))
            for f in range(1 if name != "MSH" else 3, count + (name == "MSH")):
                if (name, f) in (("PD1", 3), ("PV1", 45)):
                    continue  # read as the value their repetitions agree on (below)
                plain = _Msg(text)
                value = plain.get(name, f, 1)
                assert value == plain.get(name, f, 1, 1), (path.name, name, f)
                assert (plain.repeats is not None) == ("~" in field_of(text, name, f)), (path.name, name, f)
                repeated = _Msg(set_field(text, name, f, field_of(text, name, f) + "~X^Y"))
                assert repeated.get(name, f, 1) == value
                assert repeated.repeats == {f"{name}-{f}": "repeats: the field takes one value, and which of its "
                                            "repetitions is meant cannot be told"}, (path.name, name, f)


# -- fields HL7 v2.4 lets repeat: a rule each -----------------------------------

def test_pid5_takes_the_legal_name():
    """PID-5 (XPN) repeats in v2.4: the repetition typed L (legal), else the first (v2.4 sends the legal name
    first). An alias sent first is not taken for the name."""
    r = map_adt(set_field(A01, "PID", 5, "ALIASNAME^AL^^^^^A~TESTPATIENT^ALEX^J^^MR^^L"))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert (r.change["person"]["family_name"], r.change["person"]["given_name"]) == ("TESTPATIENT", "ALEX")
    r = map_adt(set_field(A01, "PID", 5, "TESTPATIENT^ALEX~MAIDEN^ALEX"))
    assert r.disposition is Disposition.CHANGE and r.change["person"]["family_name"] == "TESTPATIENT"


def test_pd1_3_takes_the_one_gp_practice_its_repetitions_name():
    """PD1-3 (XON, patient primary facility) repeats in v2.4: the practice its repetitions name (XON-3); two
    different practices are refused naming PD1-3 (the ICB responsible follows GP registration)."""
    same = map_adt(set_field(A01, "PD1", 3, "SYNTHETIC GP PRACTICE^^K82001~SYNTHETIC SURGERY^^K82001"))
    assert same.disposition is Disposition.CHANGE and same.change["gp_practice_ods"] == "K82001"
    later = map_adt(set_field(A01, "PD1", 3, "A PRACTICE NAME ONLY~SYNTHETIC GP PRACTICE^^K82001"))
    assert later.disposition is Disposition.CHANGE and later.change["gp_practice_ods"] == "K82001"
    two = map_adt(set_field(A01, "PD1", 3, "SYNTHETIC GP PRACTICE^^K82001~OTHER PRACTICE^^Y06601"))
    assert two.disposition is Disposition.ERROR and [p.field for p in two.problems] == ["PD1-3"]
    assert two.problems[0].reason.startswith("repeats with different values") and "Y06601" not in str(two.problems)


def test_pv1_45_takes_the_one_discharge_date_its_repetitions_give():
    """PV1-45 (TS, discharge date/time) repeats in v2.4: the date its repetitions give; two dates are refused."""
    same = map_adt(set_field(A03, "PV1", 45, "202503031100~202503031100"))
    assert same.disposition is Disposition.CHANGE and same.change["effective_date"] == "2025-03-03"
    two = map_adt(set_field(A03, "PV1", 45, "202503031100~202503101100"))
    assert two.disposition is Disposition.ERROR and [p.field for p in two.problems] == ["PV1-45"]
    assert two.about["change_type"] == "left-hospital"


def test_repeating_fields_read_repetition_by_repetition_are_unchanged():
    """PID-3 (CX) and PID-11 (XAD) repeat in v2.4 and were always read repetition by repetition: a patient
    identifier list and several addresses map as before."""
    text = set_field(A01, "PID", 11, "9 WORK ROAD^^LEEDS^^LS1 1AA^GBR^B~1 HIGH STREET^^AYLESBURY^BUCKINGHAMSHIRE^"
                     "HP20 1AA^GBR^H^^E06000060")
    r = map_adt(text)
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change["person"]["postcode"] == "HP20 1AA" and r.change["residence_la_gss"] == "E06000060"
    RegisterChangeIn.model_validate(r.change)


# -- every fixture (the real ITK examples among them) maps as it did --------------

def fixture_messages() -> dict[str, str]:
    names = sorted([*FIXTURES.glob("*.hl7"), *FIXTURES.glob("itk/*.hl7")])
    messages = {str(p.relative_to(FIXTURES)): p.read_bytes().decode() for p in names}
    # The ITK A01 example with the ZU5 and council it lacks: the whole detention path over a real ITK message.
    itk_a01 = messages["itk/ITK_ADT_A01.hl7"].rstrip("\n").replace("^GBR^H|", "^GBR^H^^E06000014|")
    messages["itk/ITK_ADT_A01.hl7 + ZU5"] = itk_a01 + "\nZU5|2010|3|3|1|201010101400|1"
    return messages


def summary(r: MappingResult) -> dict[str, Any]:
    out = asdict(r)
    out["disposition"] = r.disposition.value
    out["cancelled_on"] = r.cancelled_on.isoformat() if r.cancelled_on else None
    return out


def test_every_fixture_maps_as_before():
    """`hl7v2_fixtures_mapped.json` was written from the mapping before repetitions were refused (run this
    module as a script to write it again, after a change meant to alter what a fixture maps to)."""
    expected = json.loads(GOLDEN.read_text())
    messages = fixture_messages()
    assert set(expected) == set(messages)
    assert any(name.startswith("itk/") for name in messages) and len(messages) >= 11
    for name, text in messages.items():
        assert json.loads(json.dumps(summary(map_adt(text)), default=str)) == expected[name], name


if __name__ == "__main__":  # write the expected results (review the diff)
    results = {name: summary(map_adt(text)) for name, text in fixture_messages().items()}
    GOLDEN.write_text(json.dumps(results, indent=1, sort_keys=True, default=str) + "\n")
    sys.exit(0)
