"""Every value of the sender's header that an ACK echoes is escaped for the ACK's own delimiters: a sender
with other delimiters (MSH-1 `#`) may send `|` inside a field. MSH-12 (the version) was echoed as sent, so
`2.4|EVIL` gave the ACK's MSH a thirteenth field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from adapters.hl7v2 import build_ack, map_adt

A01 = (Path(__file__).resolve().parents[2] / "fixtures" / "hl7v2" / "ADT_A01_s3_detained.hl7").read_bytes() \
    .decode().replace("\n", "\r")


def test_a_version_holding_the_acks_delimiters_is_escaped_in_the_ack() -> None:
    other = A01.replace("|", "#").replace("#2.4#", "#2.4|EVIL|X#", 1).replace("RNU-A01-0001", "V1")
    header = map_adt(other).header
    assert header.version == "2.4|EVIL|X" and header.control_id == "V1"
    ack = build_ack(header, "AA", "ACK1", datetime(2026, 12, 3, tzinfo=UTC), "ok")
    msh = ack.split("\r")[0].split("|")
    assert len(msh) == 12, msh  # MSH-1 is the separator itself: 12 pieces are MSH-2 .. MSH-12
    assert msh[11] == "2.4\\F\\EVIL\\F\\X"
    assert ack.split("\r")[1] == "MSA|AA|V1|ok"


def test_an_ordinary_version_is_echoed_as_sent() -> None:
    ack = build_ack(map_adt(A01).header, "AA", "ACK1", datetime(2026, 12, 3, tzinfo=UTC), "ok")
    assert ack.split("\r")[0].endswith("|ACK1|P|2.4")
