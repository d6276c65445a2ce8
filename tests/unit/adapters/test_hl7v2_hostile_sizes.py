"""Hostile sizes in an HL7 v2 message under the MLLP frame limit: a field with
tens of thousands of repetitions (PID-3, PID-11) must be read in work linear
in the message, never once per repetition over the whole field. The mapping
runs on the MLLP listener's event loop (hub/mllp.py): a reading quadratic in
the repetitions held the whole front, HTTP included, for minutes on one
message (50,000 repetitions of PID-3, 450 KB: about 7 minutes; 1 MB, about
35).

The work is counted, not timed: each field's text is wrapped so that every
`split` / `partition` of a whole field adds that field's length to a counter."""

from __future__ import annotations

from pathlib import Path

import pytest

import adapters.hl7v2.mapping as mapping
from adapters.hl7v2 import Disposition, map_adt

A01 = (Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2" / "ADT_A01_s3_detained.hl7").read_bytes() \
    .decode().replace("\n", "\r")


class _Scanned(str):
    """A field's text that counts the characters its own splits scan."""

    total = 0

    def split(self, *args, **kwargs):  # type: ignore[override]
        _Scanned.total += len(self)
        return str.split(self, *args, **kwargs)

    def partition(self, *args, **kwargs):  # type: ignore[override]
        _Scanned.total += len(self)
        return str.partition(self, *args, **kwargs)


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> type[_Scanned]:
    real = mapping._Msg.__init__

    def init(self: mapping._Msg, text: str) -> None:
        real(self, text)
        for name, fields in self._segments.items():
            self._segments[name] = [_Scanned(v) for v in fields]

    monkeypatch.setattr(mapping._Msg, "__init__", init)
    _Scanned.total = 0
    return _Scanned


@pytest.mark.parametrize("field, repetition", [
    ("PID-3", "1^^^X^PI"),  # identifiers that are not NHS numbers, after the NHS number
    ("PID-11", "1 LANE^^TOWN^^HP20 1AA^GBR^B"),  # addresses that are not the home one, before it
])
def test_a_field_repeated_many_times_is_read_in_linear_work(scanned: type[_Scanned], field: str,
                                                             repetition: str) -> None:
    count = 5_000
    if field == "PID-3":
        message = A01.replace("9990001006^^^NHS^NH~", "9990001006^^^NHS^NH~" + (repetition + "~") * count)
    else:
        message = A01.replace("|1 HIGH STREET^", "|" + (repetition + "~") * count + "1 HIGH STREET^")
    assert len(message) > 40_000
    result = map_adt(message)
    assert result.disposition is Disposition.CHANGE, result.problems
    assert result.change is not None and result.change["person"]["nhs_number"] == "9990001006"
    assert result.change["residence_la_gss"] == "E06000060"  # the home address (XAD-7 H) found past the others
    # Every field scanned a few times at most: the message's length times a small constant, where a read
    # per repetition over the whole field scans count x field length (over 100 million characters here).
    assert scanned.total < 20 * len(message), scanned.total


def test_the_reader_still_reads_each_repetition() -> None:
    message = A01.replace("9990001006^^^NHS^NH~", "9990001006^^^NHS^NH~" + "".join(
        f"{i}^^^X^PI~" for i in range(1, 1001)))
    msg = mapping._Msg(mapping._normalise_segments(message))
    assert msg.repetitions("PID", 3) == 1002
    assert msg.get("PID", 3, 1, 1) == "9990001006"
    assert [msg.get("PID", 3, 1, r) for r in (2, 500, 1001)] == ["1", "499", "1000"]
    assert msg.get("PID", 3, 4, 1002) == "RNU" and msg.get("PID", 3, 1, 1003) == ""
