"""A retraction made in error, reversed, from the outside (POST
/v1/register-changes/{change_id}/retraction/reversal, hub/unretractions.py): the hub served as a real
process over a real socket, BOB ICB a webhook subscriber (a real HTTP receiver checking signatures).
Whatever the retraction told a subscriber, the reversal tells it the position the history with the
change gives, the one it held before the retraction; nothing personal in the hub's logs."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from hub.fhir.messages import read_position
from tests.e2e.conftest import SECRET, make_clients
from tests.support import HubProcess, Receiver, detention

pytestmark = pytest.mark.e2e

PERSON = {"nhs_number": "9991100024", "given_name": "Robin", "family_name": "Reinstatepatient",
          "birth_date": "1969-11-02", "postcode": "HP20 1AB"}
REASON = "the A13 matched the wrong discharge"


async def test_a_subscriber_is_told_the_position_the_reinstatement_restores(tmp_path, sharing_file):
    """Detained, then left hospital: BOB ICB is told it is responsible for aftercare. The discharge is
    retracted in error (the position moves: no aftercare yet) and the retraction reversed: the ICB is
    told the position it held before, superseding what the retraction told it, once. A wrong section
    retracted and reinstated moves no position: the ICB, told of the change, hears it stands, unchanged."""
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()

    def messages() -> list[dict]:
        return [json.loads(r.body) for r in receiver.received if r.org == "QU9"]

    async def next_message(before: int) -> dict:
        await receiver.wait_for(lambda: len(messages()) > before)
        await asyncio.sleep(1.0)  # time for a second message, were one sent
        new = messages()[before:]
        assert len(new) == 1, [m["entry"][0]["resource"]["eventCoding"]["code"] for m in new]
        return new[0]

    trust = {"X-API-Key": keys["trust"]}
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys["QU9"]},
                                json={"url": receiver.url("QU9"), "secret": SECRET})
            assert r.status_code == 201, r.text
            details = {k: v for k, v in PERSON.items() if k != "nhs_number"}
            ids = []
            for change in detention(PERSON["nhs_number"], "rr", **details):
                r = await http.post("/v1/register-changes", headers=trust, json=change)
                assert r.status_code == 202, r.text
                ids.append(r.json()["change_id"])
            discharge = ids[1]
            await receiver.wait_for(lambda: r.json()["events"][-1]["event_id"] in receiver.event_ids("QU9"))
            await asyncio.sleep(0.5)
            held = read_position(messages()[-1])
            assert "responsible-commissioner" in held.view["roles"], held.view

            n = len(messages())
            r = await http.post(f"/v1/register-changes/{discharge}/retraction", headers=trust,
                                json={"reason": "cancelled by an A13"})
            assert r.status_code == 200, r.text
            retracted = read_position(await next_message(n))
            assert retracted.view != held.view

            # Bad requests first: named, and nothing reinstated.
            r = await http.post(f"/v1/register-changes/{discharge}/retraction/reversal", headers=trust,
                                json={"reason": "  "})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason", r.text
            r = await http.post(f"/v1/register-changes/{discharge}/retraction/reversal",
                                headers={"X-API-Key": keys["QU9"]}, json={"reason": REASON})
            assert r.status_code == 403, r.text  # no register:write

            n = len(messages())
            r = await http.post(f"/v1/register-changes/{discharge}/retraction/reversal", headers=trust,
                                json={"reason": REASON})
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "reinstated" and r.json()["duplicate"] is False
            restored = read_position(await next_message(n))
            assert restored.view == held.view
            assert restored.supersedes == receiver.event_ids("QU9")[n - 1]  # the retraction's message
            assert "a register change retracted in error was reinstated" in restored.reason
            r = await http.get(f"/v1/persons/{r.json()['person_id']}/s117", headers={"X-API-Key": keys["QU9"]})
            assert r.status_code == 200 and r.json()["entitled"] is True, r.text

            # A wrong section: retracted (told, position unchanged), reinstated (told it stands, unchanged).
            wrong = {"source_system": "RiO", "person": {"nhs_number": PERSON["nhs_number"]},
                     "source_message_id": "rr-wrong", "change_type": "section-changed",
                     "effective_date": "2025-02-10", "legal_status_code": "37", "hospital_ods": "RNU"}
            r = await http.post("/v1/register-changes", headers=trust, json=wrong)
            assert r.status_code == 202, r.text
            section = r.json()["change_id"]
            wrong_event = r.json()["events"][0]["event_id"]
            await receiver.wait_for(lambda: wrong_event in receiver.event_ids("QU9"))
            await asyncio.sleep(0.5)
            before = read_position(messages()[-1])
            n = len(messages())
            r = await http.post(f"/v1/register-changes/{section}/retraction", headers=trust,
                                json={"reason": "wrong section"})
            assert r.status_code == 200, r.text
            await next_message(n)
            told = receiver.event_ids("QU9")[-1]
            n = len(messages())
            r = await http.post(f"/v1/register-changes/{section}/retraction/reversal", headers=trust,
                                json={"reason": REASON})
            assert r.status_code == 200, r.text
            stands = read_position(await next_message(n))
            assert stands.view == before.view
            assert stands.supersedes == told  # the retraction's message
            assert "reinstated" in stands.reason and "unchanged" in stands.reason
    finally:
        hub.stop()
        await receiver.stop()
    logs = hub.logs()
    assert "register change reinstated" in logs
    for value in (PERSON["nhs_number"], PERSON["given_name"], PERSON["family_name"], PERSON["birth_date"],
                  PERSON["postcode"], REASON):
        assert value not in logs, value
