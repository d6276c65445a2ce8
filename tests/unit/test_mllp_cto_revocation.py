"""A CTO revocation over HL7 v2, over a real MLLP socket. The responsible clinician revokes the CTO of a patient
recalled to hospital (MHA s17F(4)); the patient is detained again under the section the CTO was made on (s17G).
A trust's PAS reports it as a change of legal status: an A08 whose ZU5-3 is that section, and the hub-local
ZU5-8 `cto-revocation` says it is a revocation (after a recall reported under the CTO's section, ZU5-3 = ZU5-2:
before, "no register change", and the register kept the person on a CTO). The register records `cto-revoked`.

The hub in process (app_hub: SQLite, the REST API for the register's side), `MllpServer.serve` on a loopback
port, an interface engine as a socket client (tests/unit/test_mllp_cto_recall.py's)."""

from __future__ import annotations

from hub.mllp import NO_RELATIONSHIP_ACK
from tests.e2e.test_mllp import Engine
from tests.unit.test_mllp_cto_recall import (  # noqa: F401 (engine: the fixture)
    NOT_ON_CTO, ON_CTO, changes, engine, errs, held, message, msa, on_a_cto, recall_a01, status,
)


def revocation_a08(control_id: str, zu5_3: str = "3", nhs: str = ON_CTO, zu5_8: str = "cto-revocation") -> str:
    """An A08 on 3 May 2025 (EVN-6): legal status on admission 3 (the recall's), now `zu5_3`; ZU5-8 as given."""
    return message("ADT_A08_s2_to_s3_update.hl7", control_id, nhs, day="20250503",
                   zu5=f"ZU5|2025|3|{zu5_3}|1|202505011000|1||{zu5_8}")


async def test_a_revocation_after_a_recall_is_recorded_as_cto_revoked_and_a_malformed_one_is_ae_naming_zu5_8(
        app_hub, engine: Engine) -> None:  # noqa: ANN001
    await on_a_cto(app_hub, engine)
    assert msa(await engine.send(recall_a01("RCL-1", "cto-recall")))[1] == "AA"
    s = await status(app_hub)
    assert s["on_cto"] is True and s["detained"] is True, s
    before, held_before = await changes(app_hub), await held(app_hub)

    # Malformed: a revocation under a legal status that is not a qualifying detention (s2).
    ack = await engine.send(revocation_a08("REV-BAD", zu5_3="2"))
    assert msa(ack)[1:3] == ["AE", "REV-BAD"] and "quarantine id" in msa(ack)[3], ack
    (err,) = errs(ack)
    assert err.startswith("ERR|ZU5^1^8^"), ack
    assert "is cto-revocation, but the legal status (ZU5-3) is not a qualifying detention" in err, err
    assert ON_CTO not in ack and "TESTPATIENT" not in ack
    assert await changes(app_hub) == before and await held(app_hub) == held_before + 1
    q = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    (item,) = [i for i in q.json()["items"] if i["source_message_id"] == "REV-BAD"]
    assert [e["field"] for e in item["errors"]] == ["ZU5-8"], item
    s = await status(app_hub)
    assert s["on_cto"] is True, s

    # No legal status at all: AE naming ZU5-3.
    ack = await engine.send(revocation_a08("REV-NONE", zu5_3=""))
    assert msa(ack)[1] == "AE" and errs(ack)[0].startswith("ERR|ZU5^1^3^101&"), ack
    assert await changes(app_hub) == before

    # The revocation (ZU5-3 = ZU5-2 = 3): recorded; the CTO ends, the person detained again under s3.
    ack = await engine.send(revocation_a08("REV-1"))
    assert msa(ack)[1:3] == ["AA", "REV-1"] and msa(ack)[3].startswith("register change accepted"), ack
    assert await changes(app_hub) == [*before, "cto-revoked"]
    s = await status(app_hub)
    assert s["on_cto"] is False and s["detained"] is True and s["in_hospital"] is True, s
    assert s["qualifying_section_code"] == "03" and s["entitled"] is True, s
    revoked = [h for h in s["history"] if "CTO revoked" in h["text"]]
    assert [h["on"] for h in revoked] == ["2025-05-03"], s["history"]

    # The same message again: the first answer, recorded once.
    again = await engine.send(revocation_a08("REV-1"))
    assert msa(again)[1:3] == ["AA", "REV-1"], again
    assert await changes(app_hub) == [*before, "cto-revoked"]


async def test_a_revocation_is_taken_as_the_rest_path_takes_cto_revoked(app_hub, engine: Engine) -> None:  # noqa: ANN001
    """No second policy for MLLP: a revocation about someone the register does not show on a CTO is recorded as
    a REST `cto-revoked` is (the trust is the care provider: it detained them); another trust's, with no role
    for the person, gets the one "no register change" AA and nothing is kept, where REST refuses it."""
    trust = {"X-API-Key": app_hub.keys["trust"]}
    for control_id, nhs in (("S3-A", ON_CTO), ("S3-B", NOT_ON_CTO)):  # both detained under s3, no CTO
        a01 = message("ADT_A01_s3_detained.hl7", control_id, nhs)
        assert msa(await engine.send(a01))[1] == "AA"

    ack = await engine.send(revocation_a08("REV-2", nhs=ON_CTO))
    assert msa(ack)[1:3] == ["AA", "REV-2"] and msa(ack)[3].startswith("register change accepted"), ack
    r = await app_hub.http.post("/v1/register-changes", headers=trust, json={
        "source_system": "RIO", "source_message_id": "REV-REST", "change_type": "cto-revoked",
        "person": {"nhs_number": NOT_ON_CTO}, "effective_date": "2025-05-03", "hospital_ods": "RNU",
        "legal_status_code": "03"})
    assert r.status_code == 202, r.text
    assert (await changes(app_hub))[-2:] == ["cto-revoked", "cto-revoked"]
    over_mllp, over_rest = await status(app_hub, ON_CTO), await status(app_hub, NOT_ON_CTO)
    for key in ("on_cto", "detained", "in_hospital", "entitled", "qualifying_section_code"):
        assert over_mllp[key] == over_rest[key], key

    before, held_before = await changes(app_hub), await held(app_hub)
    other = revocation_a08("RV3-1").replace("|RIO|RNU|", "|RIO|RV3|").replace("^BED1^RNU|", "^BED1^RV3|")
    ack = await engine.send(other)
    assert msa(ack)[1:4] == ["AA", "RV3-1", NO_RELATIONSHIP_ACK[:200]], ack
    assert await changes(app_hub) == before and await held(app_hub) == held_before
