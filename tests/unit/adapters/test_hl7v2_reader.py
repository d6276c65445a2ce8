"""The mapping's field reader (`adapters.hl7v2.mapping._Msg`) splits fields
only when read instead of building python-hl7's full container tree: it must
read every position exactly as python-hl7's own parser and accessor do,
including escapes, other delimiters, repeated segments and missing parts."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hl7.exceptions import HL7Exception

from adapters.hl7v2 import Disposition, map_adt
from adapters.hl7v2.mapping import _Msg, _normalise_segments

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2"
MESSAGES = sorted([*FIXTURES.glob("*.hl7"), *FIXTURES.glob("itk/*.hl7")])


def hl7_reads(message: hl7.Message, segment: str, f: int, c: int, r: int, s: int) -> str:
    """What python-hl7's parser and accessor read there (the accessor unescapes)."""
    try:
        value = message[f"{segment}.F{f}.R{r}.C{c}.S{s}"]
    except (IndexError, KeyError):
        return ""
    return str(value).strip() if value else ""


def every_position(text: str) -> tuple[hl7.Message, _Msg, list[tuple[str, int, int, int, int]]]:
    text = _normalise_segments(text).strip()
    positions = []
    for line in text.split("\r"):
        name, *fields = line.split(text[3])
        for f in range(1, len(fields) + 3):  # past the last field too
            for r in (1, 2, 3):
                for c in range(1, 12):
                    for s in (1, 2, 3):
                        positions.append((name, f, c, r, s))
    return hl7.parse(text), _Msg(text), positions


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.name)
def test_every_position_of_every_fixture_reads_as_python_hl7_reads_it(path: Path) -> None:
    parsed, reader, positions = every_position(path.read_bytes().decode())
    assert len(positions) > 1000
    for pos in positions:
        if pos[0] == "MSH" and pos[1] <= 2:
            continue  # the delimiters themselves: the mapping never reads them
        assert reader.get(*pos) == hl7_reads(parsed, *pos), pos
    for name in {p[0] for p in positions}:
        for f in range(1 if name != "MSH" else 3, 40):
            seg = parsed.segment(name)
            expected = (len(seg[f]) if str(seg[f]) else 0) if f < len(seg) else 0
            assert reader.repetitions(name, f) == expected, (name, f)
    assert not reader.has("ZZZ") and reader.has("PID")


def test_escapes_other_delimiters_repeated_segments_and_whitespace_read_as_python_hl7() -> None:
    # Delimiters # for fields, @ components, * repetitions, $ escape, % subcomponents.
    text = ("  MSH#@*$%#APP#RNU#HUB#HUB#20250106##ADT@A01#C1#P#2.4\r"
            "EVN##202501061010\r"
            "PID#1##9990001006@@@NHS@NH*X1@@@RNU@PI##SMITH$F$JONES@ANN$S$B%sub%more@$T$ ##19800214\r"
            "PID#2##9990001014@@@NHS@NH\r"
            "NTE#1##a$E$b$R$c  \r")
    parsed, reader, positions = every_position(text)
    for pos in positions:
        if pos[0] == "MSH" and pos[1] <= 2:
            continue
        assert reader.get(*pos) == hl7_reads(parsed, *pos), pos
    assert reader.get("PID", 5, 1) == "SMITH#JONES"
    assert reader.get("PID", 5, 2) == "ANN@B"
    assert reader.get("PID", 3, 1, 2) == "X1"
    assert reader.get("PID", 3, 1) == "9990001006"  # the first PID, as hl7's segment()
    # Unescaped once: the mapping used to unescape python-hl7's value (already
    # unescaped) a second time, which read a\E\b\R\c as "a".
    assert reader.get("NTE", 3) == "a$b*c"


@pytest.mark.parametrize("text", ["", "PID|1||x", "MSH", "ADT^A01\rMSH|^~\\&|x"])
def test_text_python_hl7_cannot_parse_is_refused_the_same_way(text: str) -> None:
    with pytest.raises((HL7Exception, IndexError, ValueError)):
        hl7.parse(text.strip())
    with pytest.raises((HL7Exception, IndexError, ValueError)):
        _Msg(text)
    result = map_adt(text)
    assert result.disposition is Disposition.REJECT and result.problems[0].field == "MSH"


def test_an_escaped_value_maps_unescaped_once() -> None:
    text = (FIXTURES / "ADT_A01_s3_detained.hl7").read_bytes().decode()
    text = text.replace("TESTPATIENT^ALEX", "O\\E\\TESTPATIENT\\T\\CO^ALEX\\F\\JO")
    result = map_adt(text)
    assert result.disposition is Disposition.CHANGE
    assert result.change is not None
    assert result.change["person"]["family_name"] == "O\\TESTPATIENT&CO"
    assert result.change["person"]["given_name"] == "ALEX|JO"


_FIELD = st.text(alphabet="AB1 ^~&", max_size=8)  # plain values and values with each separator


@settings(max_examples=300, deadline=None)
@given(st.lists(_FIELD, min_size=1, max_size=6))
def test_any_field_reads_as_python_hl7_reads_it(fields: list[str]) -> None:
    """Any field, plain or with each separator, at every repetition, component
    and subcomponent (a value with no separator is its own first of each)."""
    text = "MSH|^~\\&|APP|RNU|HUB|HUB|20250106||ADT^A01|C1|P|2.4\rPID|" + "|".join(fields)
    parsed, reader = hl7.parse(text), _Msg(text)
    for f in range(1, len(fields) + 2):
        for r in (1, 2, 3):
            for c in (1, 2, 3):
                for s in (1, 2, 3):
                    assert reader.get("PID", f, c, r, s) == hl7_reads(parsed, "PID", f, c, r, s), (f, c, r, s)


def _plan_of(text: str) -> tuple[str, str] | type:
    try:
        plan = hl7.parser.create_parse_plan(text)
    except Exception as exc:  # noqa: BLE001 - the exception's type is what is compared
        return type(exc)
    return plan.separators, plan.esc


def _delimiters_of(text: str) -> tuple[str, str] | type:
    from adapters.hl7v2.mapping import _delimiters

    try:
        return _delimiters(text)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


_HEADS = st.one_of(st.sampled_from(["MSH", "FHS", "BHS", "MS", "", "PID", "msh"]), st.text(max_size=4))


@settings(max_examples=400)
@given(_HEADS, st.text(alphabet="|^~\\&#$*!", max_size=7), st.text(alphabet="|^~\\&ABC\r", max_size=20))
def test_the_remembered_delimiters_are_python_hl7s(head: str, delimiters: str, rest: str) -> None:
    text = head + delimiters + rest
    for _ in range(2):  # worked out, then remembered
        assert _delimiters_of(text) == _plan_of(text)
