"""A CTO recall over HL7 v2, over a real MLLP socket. England's legal status codes have no code for a recall
(MHA s17E): a trust's PAS reports it as an A01 under the CTO's section (03). Before, every such A01 was
recorded as a fresh application (`detained`), which ends the CTO (s6(4), s17C(c)): the register said the
community patient's CTO had ended when a recall leaves it in force, silently. Now the sender says which in
ZU5-8 (hub-local): `cto-recall` (the change `cto-recalled`) or `fresh-application` (`detained` as before);
without it, a qualifying detention of someone the register shows on a CTO in force is AE naming ZU5-8,
quarantined, nothing recorded; anyone else's is recorded as before.

The hub in process (app_hub: SQLite, the REST API for the register's side), `MllpServer.serve` on a loopback
port, an interface engine as a socket client."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.mllp import NO_RELATIONSHIP_ACK, MllpServer
from hub.store.schema import quarantine, register_changes
from tests.e2e.test_mllp import Engine  # a trust's interface engine: one connection, one ACK a message

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"
ON_CTO = "9990001006"  # the fixtures' number (999 test range)
NOT_ON_CTO = "9990000018"
ZU5_S3 = "ZU5|2025|3|3|1|202501061000|1"


def message(name: str, control_id: str, nhs: str = ON_CTO, day: str | None = None, zu5: str | None = None) -> str:
    text = (FIXTURES / name).read_text().replace("\n", "\r").replace(ON_CTO, nhs)
    text = re.sub(r"^(MSH(?:\|[^|\r]*){8}\|)[^|\r]*", lambda m: m.group(1) + control_id, text, count=1)
    if zu5 is not None:
        text = re.sub(r"ZU5\|[^\r]*", zu5, text)
    if day is not None:  # every date of the message (MSH-7, EVN, PV1-44, ZU1, ZU5-5) on that day
        text = text.replace("20250106", day).replace("20250113", day)
    return text


def recall_a01(control_id: str, zu5_8: str | None = None, nhs: str = ON_CTO) -> str:
    """An A01 on 1 May 2025 under s3 (ZU5-2 3), as a PAS sends a CTO recall; ZU5-8 as given."""
    zu5 = "ZU5|2025|3|3|1|202505011000|1" + (f"||{zu5_8}" if zu5_8 is not None else "")
    return message("ADT_A01_s3_detained.hl7", control_id, nhs, day="20250501", zu5=zu5)


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA|")).split("|")


def errs(ack: str) -> list[str]:
    return [s for s in ack.split("\r") if s.startswith("ERR|")]


@pytest.fixture
async def engine(app_hub):  # noqa: ANN001, ANN201
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(stop))
    try:
        async with Engine(server.port) as e:
            yield e
        for _ in range(200):  # the hub sees the engine hang up (a connection cancelled at stop is logged)
            if not server._connections:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task


async def status(app_hub, nhs: str = ON_CTO) -> dict[str, Any]:  # noqa: ANN001
    trust = {"X-API-Key": app_hub.keys["trust"]}
    r = await app_hub.http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": nhs})
    assert r.status_code == 200, r.text
    s = await app_hub.http.get(f"/v1/persons/{r.json()['person_id']}/s117", headers=trust)
    assert s.status_code == 200, s.text
    return s.json()


async def changes(app_hub) -> list[str]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return list((await conn.execute(select(register_changes.c.canonical["change_type"].as_string())
                                        .order_by(register_changes.c.received_at))).scalars())


async def held(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(quarantine))).scalar_one()


async def on_a_cto(app_hub, engine: Engine) -> None:  # noqa: ANN001
    """Detained under s3 (A01, 6 January 2025), discharged (A03, 3 March) onto a CTO (REST, the same day)."""
    assert msa(await engine.send(message("ADT_A01_s3_detained.hl7", "S3-1")))[1] == "AA"
    assert msa(await engine.send(message("ADT_A03_discharge.hl7", "DIS-1")))[1] == "AA"
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RIO", "source_message_id": "CTO-1", "change_type": "cto-started",
        "person": {"nhs_number": ON_CTO}, "effective_date": "2025-03-03", "hospital_ods": "RNU",
        "legal_status_code": "03"})
    assert r.status_code == 202, r.text
    s = await status(app_hub)
    assert s["on_cto"] is True and s["in_hospital"] is False, s


async def test_an_a01_under_s3_without_zu5_8_for_someone_on_a_cto_is_ae_naming_zu5_8_and_nothing_recorded(
        app_hub, engine) -> None:  # noqa: ANN001
    await on_a_cto(app_hub, engine)
    before, held_before = await changes(app_hub), await held(app_hub)

    ack = await engine.send(recall_a01("RCL-1"))
    assert msa(ack)[1:3] == ["AE", "RCL-1"] and "quarantine id" in msa(ack)[3], ack
    (err,) = errs(ack)
    assert err.startswith("ERR|ZU5^1^8^101&ZU5-8 (change_type) is required: the person is on a community "
                          "treatment order"), ack
    assert "ZU5-8 cto-recall" in err and "ZU5-8 fresh-application" in err and "s17E" in err, err
    assert ON_CTO not in ack and "TESTPATIENT" not in ack
    # Nothing recorded: the CTO stays in force, the person is not in hospital; the message is held.
    assert await changes(app_hub) == before
    s = await status(app_hub)
    assert s["on_cto"] is True and s["in_hospital"] is False, s
    assert await held(app_hub) == held_before + 1
    q = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    assert q.status_code == 200 and "RCL-1" in q.text, q.text
    (item,) = [i for i in q.json()["items"] if i["source_message_id"] == "RCL-1"]
    assert [e["field"] for e in item["errors"]] == ["ZU5-8"], item

    # The engine resends it unchanged (its AE): the first answer's quarantine id, held once.
    again = await engine.send(recall_a01("RCL-1"))
    assert msa(again)[1:4] == msa(ack)[1:4], again
    assert await held(app_hub) == held_before + 1

    # Someone the register does not show on a CTO: the same A01 is a detention, recorded as before.
    other = await engine.send(recall_a01("ADM-2", nhs=NOT_ON_CTO))
    assert msa(other)[1:3] == ["AA", "ADM-2"] and msa(other)[3].startswith("register change accepted"), other
    s = await status(app_hub, NOT_ON_CTO)
    assert s["detained"] is True and s["on_cto"] is False, s


async def test_zu5_8_cto_recall_records_the_recall_and_the_cto_stays_in_force(app_hub, engine) -> None:  # noqa: ANN001
    await on_a_cto(app_hub, engine)
    assert msa(await engine.send(recall_a01("RCL-2")))[1] == "AE"  # first sent without ZU5-8 ...

    ack = await engine.send(recall_a01("RCL-2", "CTO-RECALL"))  # ... corrected and sent again, any case
    assert msa(ack)[1:3] == ["AA", "RCL-2"] and msa(ack)[3].startswith("register change accepted"), ack
    assert (await changes(app_hub))[-1] == "cto-recalled"
    s = await status(app_hub)
    assert s["on_cto"] is True and s["in_hospital"] is True and s["detained"] is True, s
    assert s["entitled"] is True, s
    assert any("recalled to hospital under the CTO" in h["text"] for h in s["history"]), s["history"]
    assert not any("community treatment order ended" in h["text"] for h in s["history"]), s["history"]


async def test_zu5_8_fresh_application_records_the_detention_and_the_cto_ends(app_hub, engine) -> None:  # noqa: ANN001
    await on_a_cto(app_hub, engine)
    assert msa(await engine.send(recall_a01("ADM-3")))[1] == "AE"  # first sent without ZU5-8 ...
    ack = await engine.send(recall_a01("ADM-3", "fresh-application"))  # ... then saying it is no recall
    assert msa(ack)[1:3] == ["AA", "ADM-3"], ack
    assert (await changes(app_hub))[-1] == "detained"
    s = await status(app_hub)
    assert s["on_cto"] is False and s["detained"] is True and s["qualifying_section_code"] == "03", s
    assert any("community treatment order ended" in h["text"] for h in s["history"]), s["history"]


async def test_an_a08_to_s3_after_an_informal_admission_asks_too_and_takes_a_recall(
        app_hub, engine) -> None:  # noqa: ANN001
    """A community patient admitted informally (A01, ZU5-2 1: no register change), then recalled while in
    hospital (A08, ZU5-2 1 -> ZU5-3 3): the same question; with ZU5-8 `cto-recall`, the recall on EVN-6."""
    await on_a_cto(app_hub, engine)
    informal = message("ADT_A01_s3_detained.hl7", "INF-4", day="20250501", zu5="ZU5|2025|1|1|1|202505011000|1")
    assert msa(await engine.send(informal))[1:3] == ["AA", "INF-4"]
    before = await changes(app_hub)

    a08 = message("ADT_A08_s2_to_s3_update.hl7", "UPD-4", day="20250502", zu5="ZU5|2025|1|3|1|202505021000|1")
    ack = await engine.send(a08)
    assert msa(ack)[1:3] == ["AE", "UPD-4"], ack
    assert errs(ack)[0].startswith("ERR|ZU5^1^8^101&ZU5-8 (change_type) is required: the person is on a "), ack
    assert await changes(app_hub) == before

    ack = await engine.send(a08.replace("202505021000|1", "202505021000|1||cto-recall"))
    assert msa(ack)[1:3] == ["AA", "UPD-4"], ack
    s = await status(app_hub)
    assert s["on_cto"] is True and s["detained"] is True, s
    assert (await changes(app_hub))[-1] == "cto-recalled"


async def test_a_recall_from_a_trust_with_no_role_for_the_person_changes_nothing_and_keeps_nothing(
        app_hub, engine) -> None:  # noqa: ANN001
    """`cto-recalled` is the care provider's to report (hub/domain/access.py): another trust's recall, well
    formed or not (ZU5-2 informal: `about` a recall), gets the one "no register change" AA, nothing kept;
    read as a detention it needs no relationship and was recorded."""
    await on_a_cto(app_hub, engine)
    before, held_before = await changes(app_hub), await held(app_hub)
    for control_id, zu5_2 in (("RV3-1", "3"), ("RV3-2", "1")):
        text = recall_a01(control_id, "cto-recall")
        text = text.replace("|RIO|RNU|", "|RIO|RV3|").replace("^BED1^RNU|", "^BED1^RV3|")  # MSH-4, PV1-3.4
        text = text.replace("ZU5|2025|3|3|", f"ZU5|2025|{zu5_2}|{zu5_2}|")
        ack = await engine.send(text)
        assert msa(ack)[1:4] == ["AA", control_id, NO_RELATIONSHIP_ACK[:200]], ack
    assert await changes(app_hub) == before and await held(app_hub) == held_before
    s = await status(app_hub)
    assert s["on_cto"] is True and s["in_hospital"] is False, s


async def test_an_a11_carrying_zu5_8_cto_recall_retracts_the_recall_it_cancels(app_hub) -> None:  # noqa: ANN001
    """An A11 (cancel admit) carries the ZU5 of the admission it cancels: with ZU5-8 `cto-recall` it
    cancels the recall (`cto-recalled`, matched on the date the A01 dated it by: PV1-44 first), which is
    retracted as any change recorded in error; the CTO stays in force and the person is out of hospital
    again. Before, an A11 looked for a `detained` change only: AR, held for review."""
    hub = app_hub.hub
    server = MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0, retractions=hub.retractions)
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(stop))
    try:
        async with Engine(server.port) as engine:
            await on_a_cto(app_hub, engine)
            assert msa(await engine.send(recall_a01("RCL-9", "cto-recall")))[1] == "AA"
            assert (await changes(app_hub))[-1] == "cto-recalled"
            assert (await status(app_hub))["in_hospital"] is True
            held_before = await held(app_hub)
            a11 = message("ADT_A11_cancel_admit.hl7", "CAN-RCL-1", day="20250501")
            a11 += "\rZU5|2025|3|3|1|202505011000|1||cto-recall"
            ack = await engine.send(a11)
            assert msa(ack)[1] == "AA" and msa(ack)[3].startswith("register change retracted: "), ack
            s = await status(app_hub)
            assert s["on_cto"] is True and s["in_hospital"] is False, s
            assert await held(app_hub) == held_before
            # Without ZU5-8 the same A11 looks for a detention on its date: none, AR and held.
            ack = await engine.send(message("ADT_A11_cancel_admit.hl7", "CAN-RCL-2", day="20250501"))
            assert msa(ack)[1] == "AR" and "no detention recorded by this trust matches" in ack, ack
    finally:
        stop.set()
        await task
