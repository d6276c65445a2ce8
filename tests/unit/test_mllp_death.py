"""A patient's death over HL7 v2, over a real MLLP socket. Before, PID-29/30 were not read: the A03 of a patient
who died in hospital was recorded as `left-hospital`, which started s117 entitlement and a review clock for a
dead person (the councils and ICB told the entitlement started, letters and reviews owed), and an A08 saying the
patient died changed nothing. Now the register records `died`: no entitlement started (or the one in force
ended, the responsible bodies told "ended ... (death)"), no review owed. The refusals are AE naming PID-29 /
PID-30, quarantined, nothing recorded; a death of someone the trust has no role for is the one AA "no register
change", nothing kept (the access policy as for a REST `died`).

The hub in process (app_hub: SQLite, the REST API for the register's side), `MllpServer.serve` on a loopback
port, an interface engine as a socket client (tests/unit/test_mllp_cto_recall.py's)."""

from __future__ import annotations

from sqlalchemy import select

from hub.mllp import NO_RELATIONSHIP_ACK
from hub.store.schema import bus_messages
from tests.e2e.test_mllp import Engine
from tests.unit.adapters.test_hl7v2_death import death, set_field
from tests.unit.test_mllp_cto_recall import (  # noqa: F401 (engine: the fixture)
    NOT_ON_CTO as NOT_ON_REGISTER, ON_CTO as PATIENT, changes, engine, errs, held, message, msa, status,
)


async def event_types(app_hub) -> list[str]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.headers).order_by(bus_messages.c.offset))).all()
    return [row.headers["event_type"] for row in rows]


async def summaries(app_hub, event_type: str) -> list[str]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.headers, bus_messages.c.payload))).all()
    return [str(row.payload) for row in rows if row.headers["event_type"] == event_type]


def discharge(control_id: str, died_at: str = "", indicator: str = "", nhs: str = PATIENT) -> str:
    """The fixture's A03 (PV1-45 3 March 2025 11:00), PID-29 / PID-30 as given."""
    return death(message("ADT_A03_discharge.hl7", control_id, nhs), died_at=died_at, indicator=indicator)


def update(control_id: str, died_at: str = "", indicator: str = "", nhs: str = PATIENT) -> str:
    """An A08 on 1 April 2025 (MSH-7, EVN-2, EVN-6), no ZU5 (no change of legal status), PID-29/30 as given."""
    text = message("ADT_A08_s2_to_s3_update.hl7", control_id, nhs)
    text = "\r".join(line for line in text.split("\r") if not line.startswith("ZU5|")).replace("20250113", "20250401")
    return death(text, died_at=died_at, indicator=indicator)


async def test_an_a03_for_a_patient_who_died_in_hospital_records_died_not_left_hospital(
        app_hub, engine: Engine) -> None:  # noqa: ANN001
    assert msa(await engine.send(message("ADT_A01_s3_detained.hl7", "S3-1")))[1] == "AA"  # s3, 6 January 2025
    before, held_before = await changes(app_hub), await held(app_hub)

    # Refused, nothing recorded, each held in quarantine: the AE names the HL7 field.
    no_date = set_field(discharge("D-NODATE", indicator="Y"), "PV1", 45, "")
    for control_id, text, err_start in (
            ("D-NODATE", no_date, "ERR|PID^1^29^101&"),
            ("D-CONTRA", discharge("D-CONTRA", died_at="20250303", indicator="N"), "ERR|PID^1^30^207&"),
            ("D-VALUE", discharge("D-VALUE", died_at="20250303", indicator="U"), "ERR|PID^1^30^103&"),
            ("D-ALONE", discharge("D-ALONE", died_at="20250303"), "ERR|PID^1^30^101&")):
        ack = await engine.send(text)
        assert msa(ack)[1:3] == ["AE", control_id] and "quarantine id" in msa(ack)[3], ack
        (err,) = errs(ack)
        assert err.startswith(err_start), ack
        assert PATIENT not in ack and "TESTPATIENT" not in ack
    assert await changes(app_hub) == before and await held(app_hub) == held_before + 4
    q = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    fields = {i["source_message_id"]: [e["field"] for e in i["errors"]] for i in q.json()["items"]}
    assert fields["D-NODATE"] == ["PID-29"] and fields["D-CONTRA"] == fields["D-VALUE"] == ["PID-30"], fields

    # The A03 of the patient who died on 2 March (PID-30 Y, PID-29): `died`, not `left-hospital`.
    ack = await engine.send(discharge("D-1", died_at="202503022310", indicator="Y"))
    assert msa(ack)[1:3] == ["AA", "D-1"] and msa(ack)[3].startswith("register change accepted"), ack
    assert await changes(app_hub) == [*before, "died"]
    s = await status(app_hub)
    assert s["died"] is True and s["entitled"] is False and s["entitlement_start"] is None, s
    assert s["in_hospital"] is False and s["detained"] is False, s
    assert s["next_review"] is None and s["pending_reviews"] == [], s
    assert "died on 2025-03-02" in s["entitlement"]["explanation"], s["entitlement"]
    assert "s117-entitlement-started" not in await event_types(app_hub)

    # The same message again: the first answer, recorded once.
    again = await engine.send(discharge("D-1", died_at="202503022310", indicator="Y"))
    assert msa(again)[1:3] == ["AA", "D-1"], again
    assert await changes(app_hub) == [*before, "died"]


async def test_an_a08_saying_the_patient_died_ends_the_entitlement_and_the_reviews(
        app_hub, engine: Engine) -> None:  # noqa: ANN001
    assert msa(await engine.send(message("ADT_A01_s3_detained.hl7", "S3-1")))[1] == "AA"
    assert msa(await engine.send(discharge("DIS-1")))[1] == "AA"  # left hospital alive on 3 March
    s = await status(app_hub)
    assert s["entitled"] is True and s["died"] is False and s["pending_reviews"], s
    assert "s117-entitlement-started" in await event_types(app_hub)

    # No date of death: AE naming PID-29 (EVN-6 is when the PAS recorded the update), nothing recorded.
    before = await changes(app_hub)
    ack = await engine.send(update("U-NODATE", indicator="Y"))
    assert msa(ack)[1] == "AE" and errs(ack)[0].startswith("ERR|PID^1^29^101&"), ack
    assert await changes(app_hub) == before

    ack = await engine.send(update("U-1", died_at="20250330", indicator="Y"))
    assert msa(ack)[1:3] == ["AA", "U-1"] and msa(ack)[3].startswith("register change accepted"), ack
    assert await changes(app_hub) == [*before, "died"]
    s = await status(app_hub)
    assert s["died"] is True and s["entitled"] is False and s["entitlement_end"] == "2025-03-30", s
    assert s["next_review"] is None and s["pending_reviews"] == [], s
    (ended,) = await summaries(app_hub, "s117-entitlement-ended")
    assert "ended on 2025-03-30 (death)" in ended, ended


async def test_a_death_of_someone_the_trust_has_no_role_for_is_no_register_change(
        app_hub, engine: Engine) -> None:  # noqa: ANN001
    """Data minimisation, as for any discharge or update: a death (or a malformed one) about someone not on the
    register gets the one AA "no register change", and nothing of it is kept."""
    before, held_before = await changes(app_hub), await held(app_hub)
    for text in (update("N-1", died_at="20250330", indicator="Y", nhs=NOT_ON_REGISTER),
                 update("N-2", indicator="Y", nhs=NOT_ON_REGISTER),
                 discharge("N-3", died_at="20250302", indicator="Y", nhs=NOT_ON_REGISTER),
                 discharge("N-4", died_at="20250302", indicator="X", nhs=NOT_ON_REGISTER)):
        ack = await engine.send(text)
        assert msa(ack)[1] == "AA" and msa(ack)[3] == NO_RELATIONSHIP_ACK[:200], ack
    assert await changes(app_hub) == before and await held(app_hub) == held_before
