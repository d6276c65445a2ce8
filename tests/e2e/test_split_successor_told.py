"""Who is told, and how often, when a split council's successor is named, the naming retracted as recorded in
error and the retraction reversed (hazard H-03; README "Reference data", "What a receiver must do" and
"Retracting a change recorded in error"), through a real hub process, real HTTP and a real webhook receiver
checking signatures. The subscribers: the hospital's council (Oxfordshire, coordinating while no successor is
named), both successors of Cumbria (split on 1 April 2023) and the ICB (the GP's). Each body is told the
difference in its own position, once per step; a body never involved (Westmorland and Furness) is told nothing;
a reversal sent again tells nobody anything. Every message is a valid hub message; nothing personal is logged."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.fhir.messages import read_position
from hub.fhir.validate import validate_message
from tests.e2e.conftest import SECRET, hub_telling_councils, subscribe_webhook
from tests.support import Receiver, assert_nothing_personal

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CUMBRIA, CUMBERLAND, WESTMORLAND = "E10000006", "E06000063", "E06000064"
OXFORDSHIRE = "E10000025"  # the council of the trust's hospital (RNU, Oxford Health): coordinates meanwhile
ICB = "QU9"  # BOB ICB: the GP practice K82001's
BODIES = (OXFORDSHIRE, CUMBERLAND, WESTMORLAND, ICB)
NHS = "9990000034"
PERSON = {"nhs_number": NHS, "given_name": "Ada", "family_name": "Splitcounty", "birth_date": "1971-03-14",
          "postcode": "CA1 1RE"}
BASE = {"source_system": "RiO", "person": PERSON}
RETRACTED = "a register change recorded in error was retracted"
REINSTATED = "a register change retracted in error was reinstated"
WHY_RETRACTED, WHY_REVERSED = "named the wrong successor council", "the successor was right after all"
SETTLE = 1.5  # seconds after the awaited messages for one more to arrive, were one sent


class Told:
    """Each body's messages from the receiver, read as a receiver reads them."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def of(self, org: str) -> list[Any]:
        return [r for r in self.receiver.received if r.org == org]

    def counts(self) -> dict[str, int]:
        return {org: len(self.of(org)) for org in BODIES}

    async def step(self, before: dict[str, int], expected: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        """Wait until each body has `expected` more messages than `before` (0 when not named), then SETTLE:
        exactly that many, each signed, valid, its header's event type its bundle's; each body's new ones as
        {"type", "event_id", "position"}."""
        want = {org: before[org] + expected.get(org, 0) for org in BODIES}
        await self.receiver.wait_for(lambda: all(len(self.of(org)) >= n for org, n in want.items()))
        await asyncio.sleep(SETTLE)
        got = self.counts()
        assert {org: got[org] - before[org] for org in BODIES} == {org: expected.get(org, 0) for org in BODIES}
        out: dict[str, list[dict[str, Any]]] = {}
        for org in BODIES:
            for r in self.of(org)[before[org]:]:
                assert r.signature_ok, (org, r.headers["s117-event-type"])
                bundle = json.loads(r.body)
                validate_message(bundle)
                header = bundle["entry"][0]["resource"]
                assert header["eventCoding"]["code"] == r.headers["s117-event-type"]
                out.setdefault(org, []).append({"type": r.headers["s117-event-type"],
                                                "event_id": r.headers["s117-event-id"],
                                                "position": read_position(bundle)})
        return out


async def test_a_successor_named_retracted_and_reinstated_tells_each_body_its_difference_once(tmp_path: Path) -> None:
    hub, keys = await hub_telling_councils(tmp_path, "DSA-TEST-SPLIT", {
        OXFORDSHIRE: "Oxfordshire", CUMBERLAND: "Cumberland", WESTMORLAND: "Westmorland and Furness"})
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    told = Told(receiver)
    trust = {"X-API-Key": keys["trust"]}
    try:
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in BODIES:
                await subscribe_webhook(http, keys, receiver, org=org)

            # 1. Detained under s3 from Cumbria after its split: no council responsible, the hospital's council
            # coordinates and is told, and the ICB; the successors, named only in the reason, have no role.
            before = told.counts()
            r = await http.post("/v1/register-changes", headers=trust, json={
                **BASE, "source_message_id": "st-1", "change_type": "detained", "effective_date": "2025-01-06",
                "legal_status_code": "03", "hospital_ods": "RNU", "gp_practice_ods": "K82001",
                "residence_la_gss": CUMBRIA})
            assert r.status_code == 202, r.text
            [detained_event] = [e["event_id"] for e in r.json()["events"]]
            new = await told.step(before, {OXFORDSHIRE: 1, ICB: 1})
            [oxon1], [icb1] = new[OXFORDSHIRE], new[ICB]
            assert oxon1["type"] == icb1["type"] == "s117-register-change-recorded"
            assert oxon1["event_id"] == icb1["event_id"] == detained_event
            assert oxon1["position"].view["roles"] == ["coordinating-council"]
            for message in (oxon1, icb1):
                view = message["position"].view
                assert "responsible_council" not in view and view["coordinating_council"] == OXFORDSHIRE
                [undetermined] = view["responsibility_undetermined"]
                assert (undetermined["role"], undetermined["absent_reason"]) == ("responsible-council", "unknown")
                assert f"({CUMBERLAND})" in undetermined["reason"] and f"({WESTMORLAND})" in undetermined["reason"]
                assert message["position"].supersedes is None

            # 2. The trust names Cumberland: it is told it is responsible, the hospital's council that it no
            # longer coordinates, the ICB who is responsible now; Westmorland and Furness nothing.
            before = told.counts()
            r = await http.post("/v1/register-changes", headers=trust, json={
                **BASE, "source_message_id": "st-2", "change_type": "moved", "effective_date": "2025-02-03",
                "residence_before_detention_la_gss": CUMBERLAND})
            assert r.status_code == 202 and "warnings" not in r.json(), r.text
            naming = r.json()["change_id"]
            [named_event] = [e["event_id"] for e in r.json()["events"]]
            new = await told.step(before, {CUMBERLAND: 1, OXFORDSHIRE: 1, ICB: 1})
            [cumb2], [oxon2], [icb2] = new[CUMBERLAND], new[OXFORDSHIRE], new[ICB]
            assert cumb2["type"] == icb2["type"] == "s117-register-change-recorded"
            assert cumb2["event_id"] == icb2["event_id"] == named_event
            assert cumb2["position"].view["roles"] == ["responsible-council"]
            for message in (cumb2, icb2):
                view = message["position"].view
                assert view["responsible_council"] == CUMBERLAND and "coordinating_council" not in view
                assert "responsibility_undetermined" not in view
            assert oxon2["type"] == "s117-responsibility-transferred"
            assert oxon2["position"].view == {"roles": []}
            assert oxon2["position"].reason == "no longer the coordinating council"

            # 3. The naming retracted as recorded in error: Cumberland's message corrected (no longer
            # responsible), the ICB's corrected, the hospital's council involved again (as any body newly
            # involved: it was told it no longer coordinates, so nothing of it stands to supersede).
            before = told.counts()
            r = await http.post(f"/v1/register-changes/{naming}/retraction", headers=trust,
                                json={"reason": WHY_RETRACTED})
            assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
            new = await told.step(before, {CUMBERLAND: 1, OXFORDSHIRE: 1, ICB: 1})
            [cumb3], [oxon3], [icb3] = new[CUMBERLAND], new[OXFORDSHIRE], new[ICB]
            assert cumb3["type"] == icb3["type"] == "s117-notification-corrected"
            assert cumb3["position"].view == {"roles": []}
            assert cumb3["position"].supersedes == cumb2["event_id"]
            assert cumb3["position"].reason == f"no longer the responsible council; {RETRACTED}"
            assert icb3["position"].supersedes == icb2["event_id"]
            assert icb3["position"].reason.endswith(RETRACTED)
            assert oxon3["type"] == "s117-register-change-recorded"
            assert oxon3["position"].supersedes is None
            assert oxon3["position"].reason.startswith("now the coordinating council")
            assert oxon3["position"].reason.endswith(RETRACTED)
            # Each body back where the detention left it.
            assert oxon3["position"].view == oxon1["position"].view
            assert icb3["position"].view == icb1["position"].view

            # 4. The retraction reversed: the ICB's and the hospital's council's retraction messages
            # superseded (the naming stands again; the hospital's council no longer coordinates); Cumberland,
            # which the retraction left not involved, told it is responsible as a body newly involved
            # (README: "superseding nothing").
            before = told.counts()
            r = await http.post(f"/v1/register-changes/{naming}/retraction/reversal", headers=trust,
                                json={"reason": WHY_REVERSED})
            assert r.status_code == 200, r.text
            first = r.json()
            assert first["status"] == "reinstated" and first["duplicate"] is False
            new = await told.step(before, {CUMBERLAND: 1, OXFORDSHIRE: 1, ICB: 1})
            [cumb4], [oxon4], [icb4] = new[CUMBERLAND], new[OXFORDSHIRE], new[ICB]
            assert cumb4["type"] == "s117-register-change-recorded"
            assert cumb4["position"].supersedes is None
            assert cumb4["position"].reason.startswith("now the responsible council")
            assert cumb4["position"].reason.endswith(REINSTATED)
            assert oxon4["type"] == icb4["type"] == "s117-notification-corrected"
            assert oxon4["position"].supersedes == oxon3["event_id"]
            assert oxon4["position"].reason == f"no longer the coordinating council; {REINSTATED}"
            assert icb4["position"].supersedes == icb3["event_id"]
            assert icb4["position"].reason.endswith(REINSTATED)
            # Each body back where the naming left it, at a higher version than any it held.
            for now, then in ((cumb4, cumb2), (oxon4, oxon2), (icb4, icb2)):
                assert now["position"].view == then["position"].view
            for org, messages in ((CUMBERLAND, (cumb2, cumb3, cumb4)), (OXFORDSHIRE, (oxon1, oxon2, oxon3, oxon4)),
                                  (ICB, (icb1, icb2, icb3, icb4))):
                versions = [m["position"].version for m in messages]
                assert versions == sorted(set(versions)), (org, versions)

            # 5. The same reversal again: its first answer, and nobody told anything more.
            before = told.counts()
            r = await http.post(f"/v1/register-changes/{naming}/retraction/reversal", headers=trust,
                                json={"reason": WHY_REVERSED})
            assert r.status_code == 200, r.text
            assert r.json() == {**first, "duplicate": True}
            await told.step(before, {})
            # ... proved in order: the trust's discharge, published after it, is what each involved body gets
            # next (a subscription's messages arrive in order); the hospital's council, no longer involved, and
            # Westmorland and Furness, never involved, nothing.
            r = await http.post("/v1/register-changes", headers=trust, json={
                **BASE, "source_message_id": "st-3", "change_type": "left-hospital", "effective_date": "2025-04-07",
                "hospital_ods": "RNU"})
            assert r.status_code == 202, r.text
            discharge = [e["event_id"] for e in r.json()["events"]]  # the change recorded, the entitlement
            new = await told.step(before, {CUMBERLAND: len(discharge), ICB: len(discharge)})
            assert [m["event_id"] for m in new[CUMBERLAND]] == [m["event_id"] for m in new[ICB]] == discharge
    finally:
        hub.stop()
        await receiver.stop()
    logs = hub.logs()
    assert "register change reinstated" in logs  # the logs are read
    assert_nothing_personal(logs, *PERSON.values(), WHY_RETRACTED, WHY_REVERSED)
