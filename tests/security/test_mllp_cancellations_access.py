"""A11 (cancel admit) and A13 (cancel discharge) cannot be applied and are held in quarantine for the
trust to review; the access policy is asked first, as for every other message (README, "Roles and access":
nothing of a person the source has no role for is kept). Before, both were quarantined whoever they were
about: an A13 about someone not on the register, or in another trust's care, kept the whole message (name,
address, date of birth) and answered it unlike the well-formed A03 about them; an A11 naming another
trust's hospital was kept too. Now:

- A13 is asked as the discharge it cancels (`left-hospital`, the care provider's to report): about someone
  the trust has no role for it gets the one `AA` "no register change", nothing kept; about its own patient
  it is quarantined (`AR`, quarantine id) as before;
- A11 is asked as the detention it cancels: a trust may report anyone's detention in a hospital it runs, so
  one of its own hospitals is quarantined as before (tests/e2e/test_mllp.py); another trust's hospital is
  `AR` naming the rule, nothing kept."""

from __future__ import annotations

from hub.mllp import NO_RELATIONSHIP_ACK, MllpServer
from tests.security.test_malformed_no_oracle import (A, FIXTURES, UNKNOWN, W, _a03, _answer, kept,  # noqa: F401
                                                     world)


def _fixture(name: str, number: str, control_id: str, original_id: str) -> bytes:
    text = (FIXTURES / "hl7v2" / name).read_text()
    return text.replace("9990001006", number).replace(original_id, control_id).encode()


def _a13(number: str, control_id: str) -> bytes:
    return _fixture("ADT_A13_cancel_discharge.hl7", number, control_id, "RNU-A13-0001")


def _a11(number: str, control_id: str, site: str = "RNU") -> bytes:
    text = _fixture("ADT_A11_cancel_admit.hl7", number, control_id, "RNU-A11-0001").decode()
    return text.replace("WHITELEAF^WARD1^BED1^RNU", f"WHITELEAF^WARD1^BED1^{site}").encode()


async def test_an_a13_about_someone_not_the_trusts_is_the_no_register_change_aa(app_hub, world) -> None:  # noqa: ANN001, F811
    hub = app_hub.hub
    server = MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0)
    before = await kept(hub)
    well_formed = _answer(await server.handle(_a03(UNKNOWN, "A03-OK")))
    assert well_formed[0] == "AA" and NO_RELATIONSHIP_ACK.startswith(well_formed[1])
    for n, number in enumerate((UNKNOWN, W)):
        ack = await server.handle(_a13(number, f"A13-{n}"))
        assert _answer(ack) == well_formed, ack
        assert number not in ack
    assert await kept(hub) == before


async def test_an_a13_about_the_trusts_own_patient_is_still_held(app_hub, world) -> None:  # noqa: ANN001, F811
    hub = app_hub.hub
    server = MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0)
    people, changes, held, lines = await kept(hub)
    code, text, errors = _answer(await server.handle(_a13(A, "A13-MINE")))
    assert code == "AR" and "quarantine id" in text and "MSH^1^9^201" in errors[0]
    assert await kept(hub) == (people, changes, held + 1, lines)


async def test_an_a11_is_held_for_a_hospital_the_trust_runs_and_refused_for_another(app_hub, world) -> None:  # noqa: ANN001, F811
    hub = app_hub.hub
    server = MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0)
    people, changes, held, lines = await kept(hub)
    code, text, _ = _answer(await server.handle(_a11(UNKNOWN, "A11-OWN")))
    assert code == "AR" and "quarantine id" in text
    assert await kept(hub) == (people, changes, held + 1, lines)
    code, text, errors = _answer(await server.handle(_a11(UNKNOWN, "A11-OTHER", site="R1A")))
    assert code == "AR" and "hospital-not-run-by-source" in text and "quarantine" not in text, text
    assert await kept(hub) == (people, changes, held + 1, lines)
