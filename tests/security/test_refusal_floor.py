"""The person query's refusals take no less than S117_READ_REFUSAL_FLOOR_MS
(50), whatever they had to read: a refusal about someone on the register but
not the caller's reads and evaluates their history, one about a number not on
the register reads nothing, and without the floor the difference in time told
a body with an agreement who is on the s117 register. Allowed reads are not
held back. (A lower bound only: how long anything takes beyond it is the
machine's, not asserted.)"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import date

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario

FLOOR = 0.05


async def test_refusals_wait_for_the_floor_and_allowed_reads_do_not(app_hub):  # noqa: ANN001
    assert app_hub.hub.settings.read_refusal_floor_ms == FLOOR * 1000  # the default
    changes = detention_to_move_scenario(random.Random(3), "floor", date(2025, 1, 6))
    for c in changes[:3]:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    pid = r.json()["person_id"]
    nhs = changes[0]["person"]["nhs_number"]
    # Birmingham holds an agreement (the sample one) but no relationship with the person.
    brum = (await add_client(app_hub.hub.engine, "Brum", "E08000025", "council", ["s117:read"]))[1]
    bucks = {"X-API-Key": app_hub.keys["E06000060"]}

    async def timed(method: str, url: str, headers: dict, **kw) -> tuple[int, float]:  # noqa: ANN003
        t = time.monotonic()
        r = await app_hub.http.request(method, url, headers=headers, **kw)
        return r.status_code, time.monotonic() - t

    for url in (f"/v1/persons/{pid}/s117", "/v1/persons/no-such-person/s117",
                f"/v1/persons/{pid}/s117?as_of=2025-02-01"):
        status, took = await timed("GET", url, {"X-API-Key": brum})
        assert status == 404 and took >= FLOOR, (url, took)
    for number in (nhs, "9434765919"):
        status, took = await timed("POST", "/v1/persons/lookup", {"X-API-Key": brum}, json={"nhs_number": number})
        assert status == 404 and took >= FLOOR, took
    app_hub.hub.settings.read_refusal_floor_ms = 2000.0  # an allowed read is never held to it
    status, took = await timed("GET", f"/v1/persons/{pid}/s117", bucks)
    assert status == 200 and took < 2.0


async def test_a_write_refused_for_no_relationship_waits_for_the_floor_too(app_hub):  # noqa: ANN001
    """A council's change about someone on the register but not its own (the precheck reads and
    evaluates their history) and one about a number not on the register: the same 403, neither
    answered before S117_WRITE_REFUSAL_FLOOR_MS (50), over REST; a change the source may write is
    not held back."""
    assert app_hub.hub.settings.write_refusal_floor_ms == FLOOR * 1000
    changes = detention_to_move_scenario(random.Random(4), "wfloor", date(2025, 1, 6))
    for c in changes[:3]:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    brum = (await add_client(app_hub.hub.engine, "Brum", "E08000025", "council", ["register:write"]))[1]
    moved = {**changes[3], "source_message_id": "wfloor-brum"}
    for person in (changes[0]["person"], {**changes[0]["person"], "nhs_number": "9434765919"}):
        t = time.monotonic()
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": brum}, json={**moved, "person": person})
        took = time.monotonic() - t
        assert r.status_code == 403 and r.json()["rule"] == "no-relationship" and took >= FLOOR, took
    app_hub.hub.settings.write_refusal_floor_ms = 2000.0
    t = time.monotonic()
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=changes[3])
    assert r.status_code == 202 and time.monotonic() - t < 2.0


async def test_every_access_policy_refusal_of_a_write_waits_for_the_floor(app_hub):  # noqa: ANN001
    """Not only no-relationship: a trust's change naming a hospital another trust runs is refused with
    `hospital-not-run-by-source` whoever the person is, and over REST it was answered as soon as decided
    (MLLP's ACK of it already waited: hub/mllp.py). Every access-policy 403 of a write now waits."""
    app_hub.hub.settings.write_refusal_floor_ms = 400.0
    changes = detention_to_move_scenario(random.Random(5), "hfloor", date(2025, 1, 6))
    other_trust = (await add_client(app_hub.hub.engine, "CNWL", "RV3", "trust", ["register:write"]))[1]
    t = time.monotonic()
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": other_trust}, json=changes[0])
    took = time.monotonic() - t
    assert r.status_code == 403 and r.json()["rule"] == "hospital-not-run-by-source", r.text
    assert took >= 0.4, took


def _msa(ack: str) -> str:
    return next(seg for seg in ack.replace("\n", "\r").split("\r") if seg.startswith("MSA"))


async def test_an_mllp_refusal_waits_for_the_floor_and_holds_up_no_other_message(app_hub):  # noqa: ANN001
    """Over MLLP a refusal for no relationship was answered as soon as it was decided: the AA "no register
    change" about another trust's patient (the precheck read and evaluated their history) came later than
    the same AA about a number not on the register. Now both wait for the floor (S117_WRITE_REFUSAL_FLOOR_MS,
    50, by default); a message that is accepted is not held back, and a refusal's wait (asyncio's, not the
    thread's) holds up no other message being handled meanwhile."""
    from pathlib import Path

    from hub.mllp import MllpLimits, MllpServer

    hl7 = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2"
    a01 = (hl7 / "ADT_A01_s3_detained.hl7").read_text()
    a03 = (hl7 / "ADT_A03_discharge.hl7").read_text()
    hub = app_hub.hub
    assert MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0).limits.refusal_floor == \
        hub.settings.write_refusal_floor_ms / 1000 == FLOOR  # the setting's default
    slow = 1.5  # far beyond what answering takes here, so that the old code fails this test on any machine
    server = MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0, limits=MllpLimits(refusal_floor=slow))

    async def timed(message: str) -> tuple[str, float]:
        t = time.monotonic()
        ack = await server.handle(message.encode())
        return _msa(ack), time.monotonic() - t

    msa, took = await timed(a01)  # RNU's own detention: accepted, not held to the floor
    assert msa.startswith("MSA|AA|") and "register change accepted" in msa and took < slow, (msa, took)
    # CNWL (RV3) reports a discharge of RNU's patient, and of a number not on the register.
    theirs = a03.replace("RNU", "RV3")
    answers = []
    for n, number in enumerate(("9990001006", "9434765919")):
        msa, took = await timed(theirs.replace("9990001006", number).replace("RV3-A03-0001", f"RV3-A03-floor-{n}"))
        answers.append(msa.split("|")[3])
        assert msa.startswith("MSA|AA|") and "no register change" in msa and took >= slow, (msa, took)
    assert answers[0] == answers[1]

    # A refusal waiting for its floor and an accepted message meanwhile (another connection's): the
    # accepted one is answered at once, long before the refusal's floor.
    finished: list[str] = []

    async def handled(name: str, message: str) -> str:
        msa, _ = await timed(message)
        finished.append(name)
        return msa

    t = time.monotonic()
    refusal = asyncio.create_task(handled("refused", theirs.replace("RV3-A03-0001", "RV3-A03-floor-2")))
    await asyncio.sleep(0.25)  # the refusal decided (a few ms here) and waiting for its floor
    msa = await handled("accepted", a03.replace("RNU-A03-0001", "RNU-A03-floor"))  # RNU's own discharge
    assert "register change accepted" in msa, msa
    assert finished == ["accepted"] and time.monotonic() - t < slow, finished
    await refusal
    assert finished == ["accepted", "refused"] and time.monotonic() - t >= slow
