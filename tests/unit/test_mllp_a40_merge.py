"""HL7 v2 ADT^A40 (merge patient) over a real MLLP socket: PDS merged two NHS numbers, PID-3 the retained
one, MRG-1 the superseded one. Before, every A40 was AR (event not taken) and a patient whose PAS moved
them to the retained number became a second hub person. Now the A40 merges them as `POST
/v1/persons/merge` does (hub/merges.py): AA once merged (again: AA, duplicate); refused for what it asks:
AE naming the field (MRG-1, PID-3, PID-7), held in quarantine; from a trust with no role for the person:
the answer any such message gets, nothing kept.

The hub in process (app_hub: SQLite, the REST API for the register's side), `MllpServer.serve` on a loopback
port, an interface engine as a socket client."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.mllp import NO_RELATIONSHIP_ACK, MllpServer
from hub.store.schema import person_merges, persons, quarantine, register_changes
from tests.e2e.test_mllp import Engine  # a trust's interface engine: one connection, one ACK a message
from tests.unit.test_person_merges import _with_bad_check, nhs_number

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"
FIXTURE_NHS = "9990001006"  # the fixtures' number


def a01(control_id: str, nhs: str, birth: str = "19800214") -> str:
    text = (FIXTURES / "ADT_A01_s3_detained.hl7").read_text().replace("\n", "\r").replace(FIXTURE_NHS, nhs)
    text = text.replace("||19800214|", f"||{birth}|")
    return re.sub(r"^(MSH(?:\|[^|\r]*){8}\|)[^|\r]*", lambda m: m.group(1) + control_id, text, count=1)


def a03(control_id: str, nhs: str) -> str:
    text = (FIXTURES / "ADT_A03_discharge.hl7").read_text().replace("\n", "\r").replace(FIXTURE_NHS, nhs)
    return re.sub(r"^(MSH(?:\|[^|\r]*){8}\|)[^|\r]*", lambda m: m.group(1) + control_id, text, count=1)


def a40(control_id: str, retained: str | None, superseded: str | None, facility: str = "RNU",
        mrg: bool = True) -> str:
    """An ITK-style A40: PID-3 the retained NHS number (and a local id), MRG-1 the superseded one."""
    pid3 = (f"{retained}^^^NHS^NH~" if retained else "") + "RNU7654321^^^RNU^PI"
    segments = [
        f"MSH|^~\\&|RIO|{facility}|S117HUB|S117HUB|202505011015||ADT^A40^ADT_A39|{control_id}|P|2.4|1",
        "EVN|A40|202505011010",
        f"PID|1||{pid3}||TESTPATIENT^ALEX||19800214|1",
    ]
    if mrg:
        segments.append("MRG|" + (f"{superseded}^^^NHS^NH~" if superseded else "") + "RNU1111111^^^RNU^PI")
    return "\r".join(segments)


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA|")).split("|")


def err_fields(ack: str) -> list[str]:
    """The segment and field each ERR names (ERR-1: segment^sequence^field^...), as "MRG-1" ("MRG": the
    segment)."""
    out = []
    for s in ack.split("\r"):
        if s.startswith("ERR|"):
            location = s.split("|")[1].split("^")
            out.append(f"{location[0]}-{location[2]}" if location[2] not in ("", "0") else location[0])
    return out


@pytest.fixture
async def engine(app_hub):  # noqa: ANN001, ANN201
    hub = app_hub.hub
    server = MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0, retractions=hub.retractions, merges=hub.merges)
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(stop))
    try:
        async with Engine(server.port) as e:
            yield e
        for _ in range(200):
            if not server._connections:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


async def people_with_changes(app_hub) -> dict[str, int]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return {r.person_id: r.n for r in (await conn.execute(
            select(register_changes.c.person_id, func.count().label("n")).group_by(register_changes.c.person_id)))}


async def held(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(quarantine))).scalar_one()


async def merges(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(person_merges))).scalar_one()


async def test_an_a40_merges_the_superseded_number_into_the_retained_one_and_later_messages_are_one_person(
        app_hub, engine) -> None:  # noqa: ANN001
    a, b = nhs_number(501), nhs_number(503)
    assert msa(await engine.send(a01("DET-A", a)))[1] == "AA"
    assert msa(await engine.send(a01("DET-B", b)))[1] == "AA"
    before = await people_with_changes(app_hub)
    assert len(before) == 2

    ack = await engine.send(a40("MRG-1", b, a))
    assert msa(ack)[1] == "AA", ack
    assert "NHS numbers merged" in msa(ack)[3]
    assert a not in ack and b not in ack  # an ACK never names a number
    after = await people_with_changes(app_hub)
    assert len(after) == 1 and sum(after.values()) == 2
    (kept,) = after
    # The PAS now sends under the retained number; a late message under the superseded one: the same person.
    assert msa(await engine.send(a03("DIS-B", b)))[1] == "AA"
    assert msa(await engine.send(a03("DIS-A", a)))[1] == "AA"
    assert await people_with_changes(app_hub) == {kept: 4}

    # The engine sends the A40 again (its ACK lost): the same answer, nothing more.
    again = await engine.send(a40("MRG-1", b, a))
    assert msa(again)[1] == "AA" and "(duplicate)" in msa(again)[3], again
    again = await engine.send(a40("MRG-2", b, a))
    assert msa(again)[1] == "AA" and "(duplicate)" in msa(again)[3], again
    assert await merges(app_hub) == 1 and await held(app_hub) == 0


async def test_an_a40_refused_for_what_it_asks_is_ae_naming_the_field_and_held_in_quarantine(
        app_hub, engine) -> None:  # noqa: ANN001
    a, b, c = nhs_number(601), nhs_number(603), nhs_number(607)
    assert msa(await engine.send(a01("DET-A", a)))[1] == "AA"
    assert msa(await engine.send(a01("DET-B", b)))[1] == "AA"
    assert msa(await engine.send(a01("DET-C", c, birth="19751003")))[1] == "AA"
    cases = [
        (a40("BAD-1", b, _with_bad_check(a)), "MRG-1"),  # fails the modulus 11 check
        (a40("BAD-2", b, None), "MRG-1"),  # no NHS number in MRG-1
        (a40("BAD-3", b, a, mrg=False), "MRG"),  # no MRG segment
        (a40("BAD-4", None, a), "PID-3"),
        (a40("BAD-5", b, b), "MRG-1"),  # the same number
        (a40("BAD-6", c, a), "PID-7"),  # dates of birth differ: the operator's decision (REST, force)
    ]
    for n, (message, field) in enumerate(cases, start=1):
        ack = await engine.send(message)
        assert msa(ack)[1] == "AE", (field, ack)
        assert err_fields(ack) == [field], (field, ack)
        assert "quarantine id" in msa(ack)[3], ack
        assert await held(app_hub) == n
    assert len(await people_with_changes(app_hub)) == 3 and await merges(app_hub) == 0


async def test_an_a40_from_a_trust_with_no_role_for_the_person_is_answered_as_any_such_message(
        app_hub, engine) -> None:  # noqa: ANN001
    a, b = nhs_number(701), nhs_number(703)
    assert msa(await engine.send(a01("DET-A", a)))[1] == "AA"
    assert msa(await engine.send(a01("DET-B", b)))[1] == "AA"
    ack = await engine.send(a40("OTHER-1", b, a, facility="RV3"))  # CNWL: registered, no role for them
    assert msa(ack)[1] == "AA" and NO_RELATIONSHIP_ACK.startswith(msa(ack)[3]), ack
    assert await merges(app_hub) == 0 and await held(app_hub) == 0
    assert len(await people_with_changes(app_hub)) == 2
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(persons))).scalar_one() == 2
