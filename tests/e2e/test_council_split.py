"""A county split between several successors (hazard H-03), through the real HTTP ingest of a running hub:
a person who lived in Cumbria before a 2022 detention has, after Cumbria's split on 1 April 2023, no
responsible council: the person query says so (naming Cumberland and Westmorland and Furness), the
hospital's council is told it coordinates, and a `moved` change naming the successor
(`residence_before_detention_la_gss`) makes that successor responsible, and tells it. The same over the two
other channels that carry a move: a FHIR `$process-message` (Extension-S117-ResidenceBeforeDetentionCouncil on
the Patient) and the coordinating council's file (column PRE_DETENTION_LA_GSS)."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import SECRET, hub_telling_councils, subscribe_webhook
from tests.support import REPO, HubProcess, Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CUMBRIA, CUMBERLAND, WESTMORLAND = "E10000006", "E06000063", "E06000064"
OXFORDSHIRE = "E10000025"  # the council of the trust's hospital (RNU, Oxford Health): coordinates
NHS = "9990000026"
BASE = {"source_system": "RiO", "person": {"nhs_number": NHS, "given_name": "Grace", "family_name": "Hopper"}}


async def test_a_split_county_is_undetermined_until_a_change_names_the_successor(tmp_path: Path) -> None:
    hub, keys = await _split_hub(tmp_path)
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    trust = {"X-API-Key": keys["trust"]}
    try:
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in (OXFORDSHIRE, CUMBERLAND):
                await subscribe_webhook(http, keys, receiver, org=org)
            person_id = await _undetermined_person(http, trust)

            body = (await http.get(f"/v1/persons/{person_id}/s117", headers=trust)).json()
            assert body["entitled"] is True
            assert body["responsible_council"] is None  # never Cumbria, never a guess
            [item] = body["responsibility_undetermined"]
            assert (item["role"], item["absent_reason"]) == ("responsible-council", "unknown")
            assert f"Cumberland ({CUMBERLAND})" in item["reason"] and f"({WESTMORLAND})" in item["reason"]

            # The coordinating council is told, its position saying no council is responsible yet.
            # (from the detention, as with no place of residence: the coordinating role is the call to act).
            await receiver.wait_for(lambda: any(r.org == OXFORDSHIRE and r.headers["s117-event-type"] ==
                                                "s117-entitlement-started" for r in receiver.received))
            told = [r for r in receiver.received if r.org == OXFORDSHIRE]
            assert told[0].headers["s117-event-type"] == "s117-register-change-recorded"
            assert all(b"responsibilityUndetermined" in r.body and b"Westmorland" in r.body for r in told)
            assert not [r for r in receiver.received if r.org == CUMBERLAND]  # no role yet

            # A successor that is not a council in place today is refused, naming the field.
            r = await http.post("/v1/register-changes", headers=trust, json={
                **BASE, "source_message_id": "split-bad", "change_type": "moved", "effective_date": "2026-01-05",
                "residence_before_detention_la_gss": CUMBRIA})
            assert r.status_code == 422, r.text
            assert "residence_before_detention_la_gss" in r.text

            # The trust names the successor whose area covers the address: it becomes responsible.
            r = await http.post("/v1/register-changes", headers=trust, json={
                **BASE, "source_message_id": "split-2", "change_type": "moved", "effective_date": "2026-01-05",
                "residence_before_detention_la_gss": CUMBERLAND})
            assert r.status_code == 202, r.text
            body = (await http.get(f"/v1/persons/{person_id}/s117", headers=trust)).json()
            assert body["responsible_council"]["org"]["code"] == CUMBERLAND
            assert body["coordinating_council"] is None
            assert body["responsibility_undetermined"] == []
            await receiver.wait_for(lambda: any(r.org == CUMBERLAND for r in receiver.received))
            cumberland = [r for r in receiver.received if r.org == CUMBERLAND]
            assert len(cumberland) == 1 and b"responsible-council" in cumberland[0].body
            assert CUMBERLAND in cumberland[0].body.decode() and b"responsibilityUndetermined" not in cumberland[0].body
            # The hospital's council hears it no longer coordinates.
            await receiver.wait_for(lambda: len([r for r in receiver.received if r.org == OXFORDSHIRE]) > len(told))
            last = [r for r in receiver.received if r.org == OXFORDSHIRE][-1]
            assert b"coordinating-council" not in last.body and b"responsibilityUndetermined" not in last.body
            r = await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": keys[CUMBERLAND]})
            assert r.status_code == 200 and r.json()["responsible_council"]["org"]["code"] == CUMBERLAND
    finally:
        hub.stop()
        await receiver.stop()
    assert NHS not in hub.logs() and "Hopper" not in hub.logs()


FHIR_MOVED = REPO / "tests" / "fixtures" / "fhir_inbound" / "moved_successor.json"  # names Cumberland, NHS above
SUCCESSOR_EXT = "extension[0].valueIdentifier.value"  # of the Patient, Bundle.entry[1]


async def _split_hub(tmp_path: Path) -> tuple[HubProcess, dict[str, str]]:
    """A hub process whose agreements name Oxfordshire and Cumberland; a council client each, able to write."""
    return await hub_telling_councils(tmp_path, "DSA-TEST-SPLIT", {OXFORDSHIRE: "Oxfordshire", CUMBERLAND: "Cumberland"})


async def _undetermined_person(http: httpx.AsyncClient, trust: dict[str, str]) -> str:
    """The Cumbria resident detained in 2022, discharged before the split: no council responsible today."""
    for n, change in enumerate((
        {"change_type": "detained", "effective_date": "2022-01-05", "legal_status_code": "03",
         "hospital_ods": "RNU", "gp_practice_ods": "K82001", "residence_la_gss": CUMBRIA},
        {"change_type": "left-hospital", "effective_date": "2022-03-01", "hospital_ods": "RNU"},
    )):
        r = await http.post("/v1/register-changes", headers=trust,
                            json={**BASE, "source_message_id": f"split-{n}", **change})
        assert r.status_code == 202, r.text
    person_id = r.json()["person_id"]
    body = (await http.get(f"/v1/persons/{person_id}/s117", headers=trust)).json()
    assert body["responsible_council"] is None and body["coordinating_council"]["org"]["code"] == OXFORDSHIRE
    assert [i["role"] for i in body["responsibility_undetermined"]] == ["responsible-council"]
    return person_id


async def _resolved_to_cumberland(http: httpx.AsyncClient, keys: dict[str, str], person_id: str) -> None:
    body = (await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": keys["trust"]})).json()
    assert body["responsible_council"]["org"]["code"] == CUMBERLAND
    assert body["coordinating_council"] is None and body["responsibility_undetermined"] == []
    r = await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": keys[CUMBERLAND]})
    assert r.status_code == 200 and r.json()["responsible_council"]["org"]["code"] == CUMBERLAND


async def test_a_fhir_move_naming_the_successor_resolves_the_split(tmp_path: Path) -> None:
    hub, keys = await _split_hub(tmp_path)
    trust = {"X-API-Key": keys["trust"]}
    fhir = {**trust, "Content-Type": "application/fhir+json"}
    try:
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            person_id = await _undetermined_person(http, trust)

            # The abolished county is no council in place today: 422 at the extension's value, quarantined.
            bad = copy.deepcopy(json.loads(FHIR_MOVED.read_text()))
            bad["entry"][1]["resource"]["extension"][0]["valueIdentifier"]["value"] = CUMBRIA
            bad["identifier"]["value"] = "RIO-MSG-bad"
            r = await http.post("/v1/fhir/$process-message", headers=fhir, content=json.dumps(bad))
            assert r.status_code == 422, r.text
            errors = [i for i in r.json()["issue"] if i["severity"] == "error"]
            assert [i["expression"] for i in errors] == [[f"Bundle.entry[1].resource.{SUCCESSOR_EXT}"]], errors
            assert "a council in place today" in errors[0]["diagnostics"]
            body = (await http.get(f"/v1/persons/{person_id}/s117", headers=trust)).json()
            assert body["responsible_council"] is None

            # The trust's message naming Cumberland: it becomes responsible.
            r = await http.post("/v1/fhir/$process-message", headers=fhir, content=FHIR_MOVED.read_bytes())
            assert r.status_code == 200, r.text
            await _resolved_to_cumberland(http, keys, person_id)
    finally:
        hub.stop()
    assert NHS not in hub.logs() and "Hopper" not in hub.logs()


async def test_the_coordinating_councils_file_naming_the_successor_resolves_the_split(tmp_path: Path) -> None:
    hub, keys = await _split_hub(tmp_path)
    trust = {"X-API-Key": keys["trust"]}
    header = "RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO,PRE_DETENTION_LA_GSS\r\n"

    async def send(council: str, rows: str) -> dict:
        who = {"X-API-Key": keys[council]}
        r = await http.post("/v1/council-files?format=swift_csv", headers={**who, "Content-Type": "text/csv"},
                            content=(header + rows).encode())
        assert r.status_code == 202, r.text
        for _ in range(200):
            got = (await http.get(r.headers["location"], headers=who)).json()
            if got["status"] != "processing":
                return got
            await asyncio.sleep(0.05)
        raise AssertionError("the file was not processed")

    try:
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            person_id = await _undetermined_person(http, trust)

            # Cumberland itself has no role for the person yet: the access policy's one row error, nothing kept.
            report = await send(CUMBERLAND, f"CU-1,ADDR_CHANGE,05/01/2026,{NHS},{CUMBERLAND}\r\n")
            [row] = report["report"]
            assert (row["status"], row["rule"]) == ("rejected", "no-relationship"), row

            # Oxfordshire coordinates: its row naming the abolished county is rejected naming the column, the
            # one naming Cumberland accepted.
            report = await send(OXFORDSHIRE, f"OX-1,ADDR_CHANGE,05/01/2026,{NHS},{CUMBRIA}\r\n"
                                             f"OX-2,ADDR_CHANGE,05/01/2026,{NHS},{CUMBERLAND}\r\n")
            assert report["status"] == "processed", report
            bad, good = report["report"]
            assert [e["field"] for e in bad["errors"]] == ["row 1, column PRE_DETENTION_LA_GSS"], bad
            assert "a council in place today" in bad["errors"][0]["reason"] and "quarantine_id" in bad
            assert (good["record_id"], good["status"]) == ("OX-2", "accepted"), good
            await _resolved_to_cumberland(http, keys, person_id)
    finally:
        hub.stop()
    assert NHS not in hub.logs() and "Hopper" not in hub.logs()
