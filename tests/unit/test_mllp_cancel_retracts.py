"""An HL7 v2 A11 (cancel admit) retracts the detention it cancels, and an A13 (cancel discharge) the
left-hospital change it cancels, through the one retraction (hub/retraction.py, as
`POST /v1/register-changes/{id}/retraction`), when exactly one change matches: the person (PID-3), the
change type, recorded by the sending trust's organisation, not retracted, on the date the message gives
(A11: ZU5-5, PV1-44 or EVN-6, as an A01's; A13: PV1-45 or EVN-6, as an A03's) at its hospital (PV1-3.4).
Before, every A11 / A13 was answered AR and held in quarantine, and the detention stood until someone
retracted it by hand. A cancellation that matches nothing, or more than one change, is still AR and held,
now naming why; one about someone the trust has no role for gets today's answer, nothing kept.

In process (`MllpServer.handle`, as tests/unit/test_mllp_quarantine_fields.py), on SQLite, with the real
dispatcher and a council's feed."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import func, select

from hub.fhir.messages import read_position
from hub.mllp import NO_RELATIONSHIP_ACK, MllpServer
from hub.store.schema import access_decisions, change_retractions, ingest_results, quarantine, register_changes

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"
NHS = "9990001006"  # the fixtures' (999 test range)
BUCKS = "E06000060"
CORRECTED = "s117-notification-corrected"


def _message(name: str, control_id: str, **replace: str) -> bytes:
    text = (FIXTURES / name).read_text().replace("\n", "\r")
    text = re.sub(r"^(MSH(?:\|[^|\r]*){8}\|)[^|\r]*", lambda m: m.group(1) + control_id, text, count=1)
    for old, new in replace.items():
        text = text.replace(old, new)
    return text.encode()


def a01(control_id: str, **replace: str) -> bytes:
    return _message("ADT_A01_s3_detained.hl7", control_id, **replace)


def a03(control_id: str) -> bytes:
    return _message("ADT_A03_discharge.hl7", control_id)


def a11(control_id: str, **replace: str) -> bytes:
    return _message("ADT_A11_cancel_admit.hl7", control_id, **replace)


def a13(control_id: str) -> bytes:
    return _message("ADT_A13_cancel_discharge.hl7", control_id)


def msa(ack: str) -> list[str]:
    (line,) = [s for s in ack.split("\r") if s.startswith("MSA|")]
    return line.split("|")


def errs(ack: str) -> list[str]:
    return [s for s in ack.split("\r") if s.startswith("ERR|")]


def held_id(ack: str) -> str:
    return re.search(r"quarantine id ([0-9a-f-]{36})", msa(ack)[3]).group(1)


def _server(app_hub) -> MllpServer:  # noqa: ANN001
    hub = app_hub.hub
    return MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0, retractions=hub.retractions)


async def _change(app_hub, control_id: str):  # noqa: ANN001, ANN202
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(register_changes.c.change_id, register_changes.c.person_id)
                                   .where(register_changes.c.source_message_id == control_id))).one()


async def _retracted(app_hub) -> set[str]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return set((await conn.execute(select(change_retractions.c.change_id))).scalars())


async def _held(app_hub) -> dict[str, dict]:  # noqa: ANN001
    r = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 200, r.text
    return {q["source_message_id"]: q for q in r.json()["items"]}


async def _council_feed(app_hub) -> tuple[str, dict[str, str]]:  # noqa: ANN001
    key = {"X-API-Key": app_hub.keys[BUCKS]}
    r = await app_hub.http.post("/v1/subscriptions", headers=key, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    return r.json()["subscription_id"], key


async def _told(app_hub, feed: tuple[str, dict[str, str]]) -> list[dict]:  # noqa: ANN001
    while await app_hub.hub.dispatcher.run_once():
        pass
    r = await app_hub.http.get(f"/v1/feeds/{feed[0]}", params={"after": 0, "limit": 500}, headers=feed[1])
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def _status(app_hub, person_id: str):  # noqa: ANN001, ANN202
    return await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": app_hub.keys["trust"]})


async def test_an_a11_retracts_the_detention_it_cancels_and_the_council_is_corrected(  # noqa: ANN001
        app_hub, capsys) -> None:
    server = _server(app_hub)
    feed = await _council_feed(app_hub)
    try:
        assert msa(await server.handle(a01("ADM-1")))[1] == "AA"
        change_id, person_id = await _change(app_hub, "ADM-1")
        assert (await _status(app_hub, person_id)).json()["detained"] is True
        told = await _told(app_hub, feed)
        assert told and all(read_position(m["message"]).person_id == person_id for m in told)
        assert read_position(told[-1]["message"]).view["roles"], told[-1]

        ack = await server.handle(a11("CAN-1"))
        assert msa(ack)[1:4] == ["AA", "CAN-1", f"register change retracted: {change_id}"], ack
        assert await _retracted(app_hub) == {change_id}

        # No longer on the register: the person query answers as for no one; the council that was told
        # of the detention is told the correction, superseding it (not involved).
        r = await _status(app_hub, person_id)
        assert r.status_code == 404, r.text
        new = (await _told(app_hub, feed))[len(told):]
        assert [m["event_type"] for m in new] == [CORRECTED], new
        position = read_position(new[0]["message"])
        assert position.view == {"roles": []} and position.supersedes == told[-1]["event_id"]
        assert "retracted" in position.reason

        # The retraction is the hub's one retraction: its reason (kept encrypted) names the A11 by MSH-10,
        # its access decision the MLLP channel.
        async with app_hub.hub.engine.connect() as conn:
            row = (await conn.execute(select(change_retractions))).one()
            decision = (await conn.execute(select(access_decisions).where(
                access_decisions.c.action == "retract"))).one()
        assert app_hub.hub.protector.decrypt(row.reason) == b"HL7 A11 cancel admit CAN-1"
        assert row.org_code == "RNU"
        assert decision.decision == "allowed" and decision.channel == "mllp" and decision.change_type == "detained"

        # The same A11 again (an engine resending): the same answer. Another A11 for the same admission:
        # already retracted. Nothing told again.
        again = await server.handle(a11("CAN-1"))
        assert msa(again)[1:4] == msa(ack)[1:4]
        other = await server.handle(a11("CAN-2"))
        assert msa(other)[1:4] == ["AA", "CAN-2", f"register change already retracted: {change_id}"], other
        assert await _retracted(app_hub) == {change_id}
        assert len(await _told(app_hub, feed)) == len(told) + 1
        assert not {"CAN-1", "CAN-2"} & set(await _held(app_hub))

        # The A11's MSH-10 is its idempotency key: an A01 sent under it is a reused key, nothing recorded.
        reused = await server.handle(a01("CAN-1", **{"202501061000|1\r": "202501071000|1\r"}))
        assert msa(reused)[1] == "AE" and any(e.startswith("ERR|MSH^1^10^") for e in errs(reused)), reused
        for answer in (ack, again, other, reused):
            assert NHS not in answer
    finally:
        server._sock.close()
    out = capsys.readouterr()
    assert NHS not in out.err and NHS not in out.out
    assert "register change retracted" in out.err + out.out


async def test_an_a13_retracts_the_discharge_and_the_person_is_detained_again(app_hub) -> None:  # noqa: ANN001
    server = _server(app_hub)
    try:
        assert msa(await server.handle(a01("ADM-2")))[1] == "AA"
        assert msa(await server.handle(a03("DIS-2")))[1] == "AA"
        detention, person_id = await _change(app_hub, "ADM-2")
        discharge, _ = await _change(app_hub, "DIS-2")
        status = (await _status(app_hub, person_id)).json()
        assert status["detained"] is False and status["in_hospital"] is False

        ack = await server.handle(a13("CDIS-2"))
        assert msa(ack)[1:4] == ["AA", "CDIS-2", f"register change retracted: {discharge}"], ack
        assert await _retracted(app_hub) == {discharge}
        status = (await _status(app_hub, person_id)).json()
        assert status["detained"] is True and status["in_hospital"] is True, status
        async with app_hub.hub.engine.connect() as conn:
            row = (await conn.execute(select(change_retractions))).one()
        assert app_hub.hub.protector.decrypt(row.reason) == b"HL7 A13 cancel discharge CDIS-2"
        assert detention not in await _retracted(app_hub)
    finally:
        server._sock.close()


async def test_an_a11_matching_nothing_or_two_detentions_is_held_naming_why(app_hub) -> None:  # noqa: ANN001
    server = _server(app_hub)
    try:
        # Nothing recorded yet (an A11 before its A01, or for an admission that was never a detention).
        none = await server.handle(a11("CAN-NONE"))
        assert msa(none)[1:3] == ["AR", "CAN-NONE"], none
        assert msa(none)[3].startswith("A11 (cancel admit): no detention recorded by this trust matches; no "
                                       "cancellation applied, held in quarantine for review; quarantine id "), none
        assert errs(none)[0].startswith("ERR|MSH^1^9^207&MSH-9 no detention recorded by this trust matches the "
                                        "person (PID-3), the hospital (PV1-3.4) and the date (EVN-6)"), none
        # An A11 giving no date (neither ZU5-5, PV1-44 nor EVN-6): held, named.
        undated = a11("CAN-UNDATED", **{"|202501061150\r": "|\r"})
        ack = await server.handle(undated)
        assert msa(ack)[1] == "AR" and "no valid date (ZU5-5)" in msa(ack)[3], ack

        # A detention on another date, and one at another of the trust's hospitals: neither is this admission.
        assert msa(await server.handle(a01("ADM-OTHER-DAY", **{"|202501061000|1\r": "|202501021000|1\r"})))[1] == "AA"
        assert msa(await server.handle(a01("ADM-OTHER-SITE", **{"BED1^RNU|": "BED1^RNU01|"})))[1] == "AA"
        other = await server.handle(a11("CAN-OTHER"))
        assert msa(other)[1] == "AR" and "no detention recorded by this trust matches" in msa(other)[3], other

        # The same admission recorded twice (two A01s under two control ids): which one it cancels cannot be
        # told; neither is retracted.
        for control_id in ("ADM-TWICE-1", "ADM-TWICE-2"):
            assert msa(await server.handle(a01(control_id)))[1] == "AA"
        # An A13 for the trust's patient never discharged: no discharge matches.
        ack = await server.handle(a13("CDIS-NONE"))
        assert msa(ack)[1] == "AR" and msa(ack)[3].startswith(
            "A13 (cancel discharge): no discharge recorded by this trust matches; no cancellation applied"), ack
        assert msa(ack)[3].endswith(held_id(ack)) and "the date (EVN-6)" in errs(ack)[0]
        two = await server.handle(a11("CAN-TWO"))
        assert msa(two)[1] == "AR" and "more than one detention recorded by this trust matches" in msa(two)[3], two
        assert await _retracted(app_hub) == set()

        held = await _held(app_hub)
        assert {"CAN-NONE", "CAN-OTHER", "CAN-TWO"} <= set(held)
        assert "more than one" in held["CAN-TWO"]["errors"][0]["reason"]
        # Sent again while held: the first quarantine id, one entry.
        assert msa(await server.handle(a11("CAN-TWO")))[3] == msa(two)[3]
        async with app_hub.hub.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(quarantine).where(
                quarantine.c.source_message_id == "CAN-TWO"))).scalar_one() == 1
            assert (await conn.execute(select(func.count()).select_from(ingest_results).where(
                ingest_results.c.source_message_id.like("CAN-%")))).scalar_one() == 0
        for answer in (none, other, two):
            assert NHS not in answer
    finally:
        server._sock.close()


async def test_another_trusts_cancellation_gets_todays_answer_and_retracts_nothing(app_hub) -> None:  # noqa: ANN001
    hub = app_hub.hub
    server = _server(app_hub)
    try:
        assert msa(await server.handle(a01("ADM-3")))[1] == "AA"
        assert msa(await server.handle(a03("DIS-3")))[1] == "AA"
        async with hub.engine.connect() as conn:
            held_before = (await conn.execute(select(func.count()).select_from(quarantine))).scalar_one()
        # RV3 (another trust, registered with the hub) cancels RNU's admission at RNU's hospital: refused by
        # the access policy, naming the rule, nothing kept; a discharge at its own hospital of someone in RNU's
        # care: the no-register-change AA, nothing kept.
        ack = await server.handle(a11("RV3-CAN-1", **{"|RIO|RNU|": "|RIO|RV3|"}))
        assert msa(ack)[1] == "AR" and "hospital-not-run-by-source" in msa(ack)[3] and "quarantine" not in ack, ack
        ack = await server.handle(_message("ADT_A13_cancel_discharge.hl7", "RV3-CAN-2",
                                           **{"|RIO|RNU|": "|RIO|RV3|", "BED1^RNU|": "BED1^RV3|"}))
        assert msa(ack)[1] == "AA" and msa(ack)[3] == NO_RELATIONSHIP_ACK[:len(msa(ack)[3])], ack
        # Its cancel of an admission at its own hospital: no detention it recorded matches (RNU's is not
        # its to retract): held, as any cancellation of its own that matches nothing.
        ack = await server.handle(a11("RV3-CAN-3", **{"|RIO|RNU|": "|RIO|RV3|", "BED1^RNU|": "BED1^RV3|"}))
        assert msa(ack)[1] == "AR" and "no detention recorded by this trust matches" in msa(ack)[3], ack
        assert await _retracted(app_hub) == set()
        async with hub.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(quarantine))).scalar_one() == held_before + 1
    finally:
        server._sock.close()


async def test_a_listener_built_without_the_retraction_service_holds_every_cancellation(  # noqa: ANN001
        app_hub) -> None:
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    try:
        assert msa(await server.handle(a01("ADM-4")))[1] == "AA"
        ack = await server.handle(a11("CAN-4"))
        assert msa(ack)[1] == "AR" and "quarantine id" in msa(ack)[3]
        assert await _retracted(app_hub) == set()
    finally:
        server._sock.close()


async def test_the_hub_gives_its_listener_the_retraction_service(app_hub, monkeypatch) -> None:  # noqa: ANN001
    """As it gives it the ingest (hub/bootstrap.py `_start_front`)."""
    import asyncio

    import hub.bootstrap as bootstrap
    from hub.retraction import RetractionService

    built: dict = {}

    class Listener:
        def __init__(self, engine, ingest, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
            built.update(ingest=ingest, **kwargs)

        async def serve(self, stop: asyncio.Event) -> None:
            return None

    hub = app_hub.hub
    monkeypatch.setattr(bootstrap, "MllpServer", Listener)
    monkeypatch.setattr(hub, "settings", hub.settings.model_copy(update={"mllp_port": 0}))
    hub._start_front()
    await asyncio.gather(*hub._tasks, *hub._startup)
    hub._tasks.clear()
    hub._startup.clear()
    assert built["ingest"] is hub.ingest
    assert isinstance(hub.retractions, RetractionService) and built["retractions"] is hub.retractions
