"""A merge of two NHS numbers made in error, reversed, end to end over real HTTP: `s117hub serve` in its
own process, the councils' and ICBs' webhook receivers, the embedded SQLite store and log
(POST /v1/persons/merges/{merge_id}/reversal, hub/unmerges.py).

Before, a merge of two patients' numbers had no way back (`POST /v1/persons/merge` of the superseded
number into another was 409 for good and no route reversed one). Each of the merge's three cases is
reversed here, the bodies told are checked from what their webhooks received and from the events log,
and the refusals (another trust, a council, an unknown id: one identical 404; a bad reason: 422 naming
`reason`), the duplicate and a merge again after the reversal are asked over the socket."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from sqlalchemy import select

from hub.bus.port import UNMERGED
from hub.clients import add_client
from hub.delivery.dispatcher import UNMERGE_REASON, UNMERGED_TOLD_REASON
from hub.fhir.messages import read_position
from hub.store.db import create_engine
from hub.store.schema import bus_messages
from tests.e2e.conftest import SECRET
from tests.histories import BOB_ICB, BUCKS, GP, HW_ICB, WORCS
from tests.support import HubProcess, Receiver, assert_nothing_personal
from tests.unit.test_person_merges import nhs_number

pytestmark = pytest.mark.e2e

CORRECTED = "s117-notification-corrected"
BODIES = (BUCKS, WORCS, BOB_ICB, HW_ICB)
SHARING = {"version": 1, "agreements": [{"id": "DSA-TEST-UNMERGE", "valid_from": "2020-01-01", "recipients": [
    {"org_code": org, "events": ["*"], "field_groups": ["identity", "demographics", "legal-status", "responsibility",
                                                       "explanations"]} for org in BODIES]}]}
REASON = "Two patients: the PAS merged twins' records in error"
FLOOR_MS = 150


async def _clients(db_url: str) -> dict[str, str]:
    from hub.store.db import create_schema

    engine = create_engine(db_url)
    await create_schema(engine)
    keys = {
        "trust": (await add_client(engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"]))[1],
        "other-trust": (await add_client(engine, "Another trust", "RXT", "trust", ["register:write", "s117:read"]))[1],
        "council-writer": (await add_client(engine, "Bucks writer", BUCKS, "council", ["register:write"]))[1],
        "operator": (await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin", "register:write"]))[1],
    }
    for org in BODIES:
        kind = "council" if org[0] == "E" else "icb"
        keys[org] = (await add_client(engine, org, org, kind, ["subscriptions:write", "s117:read"]))[1]
    await engine.dispose()
    return keys


def _detained(nhs: str, run: str, on: str, council: str, **person: str) -> dict[str, Any]:
    return {"source_system": "RiO", "source_message_id": f"{run}-det",
            "person": {"nhs_number": nhs, "family_name": "Okafor", "birth_date": "1990-07-21", **person},
            "change_type": "detained", "effective_date": on, "legal_status_code": "03", "hospital_ods": "RNU",
            "gp_practice_ods": GP[council], "residence_la_gss": council}


def _left(nhs: str, run: str, on: str) -> dict[str, Any]:
    return {"source_system": "RiO", "source_message_id": f"{run}-left", "person": {"nhs_number": nhs},
            "change_type": "left-hospital", "effective_date": on, "hospital_ods": "RNU"}


class Told:
    """What the bodies' webhooks received, read as a receiver reads it (deduplicated by event id)."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def messages(self, org: str, start: int = 0) -> list[dict[str, Any]]:
        seen: set[str] = set()
        out = []
        for r in self.receiver.received[start:]:
            if r.org != org or r.headers["s117-event-id"] in seen:
                continue
            seen.add(r.headers["s117-event-id"])
            bundle = orjson.loads(r.body)
            header = bundle["entry"][0]["resource"]
            patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
            numbers = {i["value"] for i in patient.get("identifier", []) if i["system"].endswith("/nhs-number")}
            out.append({"event_type": header["eventCoding"]["code"], "position": read_position(bundle),
                        "numbers": numbers, "signed": r.signature_ok})
        return out

    def held(self, org: str, person_id: str) -> dict[str, Any] | None:
        """The position `org` holds for `person_id`: the highest version received."""
        best = None
        for m in self.messages(org):
            p = m["position"]
            if p.person_id == person_id and (best is None or p.version > best.version):
                best = p
        return best.view if best is not None else None


async def _truth(http: httpx.AsyncClient, key: str, person_id: str) -> dict[str, Any]:
    r = await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return r.json()


async def _lookup(http: httpx.AsyncClient, key: str, nhs: str) -> str | None:
    r = await http.post("/v1/persons/lookup", headers={"X-API-Key": key}, json={"nhs_number": nhs})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()["person_id"]


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _sharing(tmp_path: Path) -> Path:
    path = tmp_path / "sharing.yaml"
    path.write_text(yaml.safe_dump(SHARING))
    return path


async def _events(db_url: str) -> list[Any]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(select(bus_messages.c.key, bus_messages.c.event_id,
                                                   bus_messages.c.headers))).all())
    finally:
        await engine.dispose()


def _no_personal_data(logs: str, *values: str) -> None:
    assert logs, "the hub logged nothing"
    assert_nothing_personal(logs, *values)


async def test_two_patients_merged_in_error_are_reversed_and_every_body_told_of_either_hears_each_position(
        tmp_path: Path) -> None:
    """B detained from Worcestershire and left hospital (Worcs and H&W ICB told, entitled); A detained
    from Buckinghamshire (Bucks and BOB ICB told). The trust merges A into B (the same date of birth:
    its PAS took them for one patient). Reversed by the trust that merged them: each number finds its
    own person again, each history its own; every body's webhook ends holding each person's position as
    the person query gives it, Bucks and BOB ICB told B's without A (no role any more) and A's again under
    A's number, Worcs and H&W ICB never told A; the events log carries one `unmerged` event for each
    person. Another trust, a council and an unknown id get one identical 404, no sooner than the floor;
    a bad reason 422 naming it; the same reversal again its first answer; the pair merged again."""
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=_sharing(tmp_path), S117_WRITE_REFUSAL_FLOOR_MS=str(FLOOR_MS))
    keys = await _clients(hub.db_url)
    await hub.start()
    told = Told(receiver)
    a, b = nhs_number(88_001), nhs_number(88_017)
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=15) as http:
            for org in BODIES:
                r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[org]},
                                    json={"url": receiver.url(org), "secret": SECRET})
                assert r.status_code == 201, r.text
            trust = {"X-API-Key": keys["trust"]}
            for change in (_detained(b, "b", "2025-01-06", WORCS, given_name="Grace"),
                           _left(b, "b", "2025-04-07"),
                           _detained(a, "a", "2025-05-01", BUCKS, given_name="Hope", postcode="HP20 1AA")):
                r = await http.post("/v1/register-changes", headers=trust, json=change)
                assert r.status_code == 202, r.text
            kept, gone = await _lookup(http, keys["operator"], b), await _lookup(http, keys["operator"], a)
            assert kept and gone and kept != gone
            before_merge = {p: await _truth(http, keys["operator"], p) for p in (kept, gone)}
            await receiver.wait_for(lambda: all(told.held(org, gone) for org in (BUCKS, BOB_ICB))
                                    and told.held(WORCS, kept) is not None)

            r = await http.post("/v1/persons/merge", headers=trust,
                                json={"retained_nhs_number": b, "superseded_nhs_number": a})
            assert r.status_code == 200, r.text
            merge_id = r.json()["merge_id"]
            r = await http.get(f"/v1/persons/{gone}/s117", headers={"X-API-Key": keys["operator"]})
            assert r.status_code == 410 and r.json()["merged_into"] == kept
            await receiver.wait_for(lambda: any(m["event_type"] == CORRECTED for m in told.messages(BUCKS)))
            start = len(receiver.received)

            # Refused alike: another trust, a council (with a writing key), an unknown id.
            refusals = []
            for key, target in ((keys["other-trust"], merge_id), (keys["council-writer"], merge_id),
                                (keys["trust"], "00000000-0000-4000-8000-000000000000")):
                started = time.monotonic()
                r = await http.post(f"/v1/persons/merges/{target}/reversal", headers={"X-API-Key": key},
                                    json={"reason": REASON})
                assert time.monotonic() - started >= FLOOR_MS / 1000
                assert r.status_code == 404, r.text
                refusals.append({k: v for k, v in r.json().items() if k not in ("correlation_id", "instance")})
            assert refusals[0] == refusals[1] == refusals[2]
            # A reason missing, empty, blank or too long: 422 naming `reason`, nothing reversed.
            for bad in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 1001}):
                r = await http.post(f"/v1/persons/merges/{merge_id}/reversal", headers=trust, json=bad)
                assert r.status_code == 422, r.text
                assert any("reason" in str(e.get("field", "")) for e in r.json()["errors"]), r.text
            assert await _lookup(http, keys["operator"], a) == kept  # still merged

            r = await http.post(f"/v1/persons/merges/{merge_id}/reversal", headers=trust, json={"reason": REASON})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "reversed" and body["duplicate"] is False
            assert (body["retained_person_id"], body["superseded_person_id"]) == (kept, gone)
            assert body["moved_back_changes"] == 1 and body["unattributed_changes"] == []
            assert body["reversed_by"] == "RNU" and body["merged_by"] == "RNU" and body["event_id"]

            assert await _lookup(http, keys["operator"], a) == gone
            assert await _lookup(http, keys["operator"], b) == kept
            after = {p: await _truth(http, keys["operator"], p) for p in (kept, gone)}
            for p in (kept, gone):  # each person's position as before the merge
                for field in ("entitled", "in_hospital", "responsible_council", "responsible_commissioner"):
                    assert after[p].get(field) == before_merge[p].get(field), (p, field)

            # Every body told of either holds each person's position (the person query's roles).
            def settled() -> bool:
                new = {org: told.messages(org, start) for org in BODIES}
                return {m["position"].person_id for m in new[BUCKS]} == {kept, gone} \
                    and {m["position"].person_id for m in new[BOB_ICB]} == {kept, gone} \
                    and bool(new[WORCS]) and bool(new[HW_ICB])

            await receiver.wait_for(settled)
            await _sleep(0.5)  # anything wrongly routed has time to arrive
            for org in (BUCKS, BOB_ICB):
                new = told.messages(org, start)
                assert all(m["event_type"] == CORRECTED and m["signed"] for m in new), (org, new)
                about = {m["position"].person_id: m for m in new}
                assert about[gone]["numbers"] == {a} and about[kept]["numbers"] == {b}
                assert about[gone]["position"].reason == UNMERGED_TOLD_REASON
                # Bucks' position for B moved (it had A's council role): the difference; BOB ICB's did not (H&W
                # ICB kept commissioning the joined history, Worcs 4.4.2): told of the reversal, position as it was.
                assert about[kept]["position"].reason.endswith(UNMERGE_REASON) if org == BUCKS else \
                    about[kept]["position"].reason == UNMERGED_TOLD_REASON
                assert told.held(org, kept)["roles"] == []  # no role for B any more: told so
                assert told.held(org, gone)["roles"]
            for org in (WORCS, HW_ICB):
                new = told.messages(org, start)
                assert {m["position"].person_id for m in new} == {kept} and all(a not in m["numbers"] for m in new)
                assert told.held(org, kept)["roles"]
            assert told.held(BUCKS, gone)["roles"] == ["responsible-council"]
            assert told.held(WORCS, kept)["roles"] == ["responsible-council"]
            # The events log: one `unmerged` correction on each person's key, naming the other.
            unmerged = [(e.key, e.headers[UNMERGED]) for e in await _events(hub.db_url) if UNMERGED in e.headers]
            assert sorted(unmerged) == sorted([(kept, gone), (gone, kept)])

            # The same reversal again: its first answer; nothing more told.
            seen = len(receiver.received)
            again = await http.post(f"/v1/persons/merges/{merge_id}/reversal", headers=trust,
                                    json={"reason": "asked again"})
            assert again.status_code == 200 and again.json() == {**body, "duplicate": True}
            await _sleep(0.5)
            assert len(receiver.received) == seen
            # The pair merged again (the operator, later): a new merge, not the 409 of a number merged already.
            r = await http.post("/v1/persons/merge", headers={"X-API-Key": keys["operator"]},
                                json={"retained_nhs_number": b, "superseded_nhs_number": a})
            assert r.status_code == 200, r.text
            assert r.json()["merge_id"] != merge_id and r.json()["duplicate"] is False
            assert await _lookup(http, keys["operator"], a) == kept
    finally:
        hub.stop()
        await receiver.stop()
    _no_personal_data(hub.logs(), a, b, "Okafor", "Grace", "Hope", "1990-07-21", "HP20 1AA", REASON)


async def test_a_number_given_the_retained_one_gets_its_own_back_and_a_bare_link_names_what_came_since(
        tmp_path: Path) -> None:
    """Only the superseded number A had a person: the merge gave that person the retained number B, and
    Bucks was told them under B. Reversed by the hub operator: the person is A's again (B finds no one),
    Bucks told under A. Then the operator links two numbers no one holds (C into D); a detention is sent
    under C (made under D); the reversal leaves it with D's person and names it (the hub keeps no record of
    which number a change was sent under): C finds no one, D its person, no event told."""
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=_sharing(tmp_path))
    keys = await _clients(hub.db_url)
    await hub.start()
    told = Told(receiver)
    a, b, c, d = (nhs_number(89_003 + 31 * i) for i in range(4))
    operator = {"X-API-Key": keys["operator"]}
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=15) as http:
            r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[BUCKS]},
                                json={"url": receiver.url(BUCKS), "secret": SECRET})
            assert r.status_code == 201, r.text
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]},
                                json=_detained(a, "ra", "2025-03-03", BUCKS, given_name="Iris"))
            assert r.status_code == 202, r.text
            person = r.json()["person_id"]
            r = await http.post("/v1/persons/merge", headers={"X-API-Key": keys["trust"]},
                                json={"retained_nhs_number": b, "superseded_nhs_number": a})
            assert r.status_code == 200, r.text
            assert r.json()["retained_person_id"] == person == r.json()["superseded_person_id"]
            await receiver.wait_for(lambda: any(m["numbers"] == {b} for m in told.messages(BUCKS)))
            start = len(receiver.received)

            r = await http.post(f"/v1/persons/merges/{r.json()['merge_id']}/reversal", headers=operator,
                                json={"reason": REASON})
            assert r.status_code == 200, r.text
            assert r.json()["superseded_person_id"] == person and len(r.json()["event_ids"]) == 1
            assert await _lookup(http, keys["operator"], a) == person
            assert await _lookup(http, keys["operator"], b) is None
            await receiver.wait_for(lambda: told.messages(BUCKS, start))
            [m] = told.messages(BUCKS, start)
            assert m["event_type"] == CORRECTED and m["numbers"] == {a} and m["position"].person_id == person
            assert m["position"].reason == UNMERGED_TOLD_REASON and m["position"].view["roles"]

            r = await http.post("/v1/persons/merge", headers=operator,
                                json={"retained_nhs_number": d, "superseded_nhs_number": c})
            assert r.status_code == 200 and r.json()["retained_person_id"] is None, r.text
            linked = r.json()["merge_id"]
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]},
                                json=_detained(c, "rc", "2025-03-10", BUCKS, given_name="Joy"))
            assert r.status_code == 202, r.text
            since, change_id = r.json()["person_id"], r.json()["change_id"]
            assert await _lookup(http, keys["operator"], d) == since
            r = await http.post(f"/v1/persons/merges/{linked}/reversal", headers=operator, json={"reason": REASON})
            assert r.status_code == 200, r.text
            assert r.json()["unattributed_changes"] == [change_id] and r.json()["event_id"] is None
            assert r.json()["superseded_person_id"] is None and r.json()["moved_back_changes"] == 0
            assert await _lookup(http, keys["operator"], c) is None
            assert await _lookup(http, keys["operator"], d) == since
    finally:
        hub.stop()
        await receiver.stop()
    _no_personal_data(hub.logs(), a, b, c, d, "Okafor", "Iris", "Joy", "1990-07-21", REASON)
