"""A county split between several successors (hazard H-03), through the real HTTP ingest of a running hub:
a person who lived in Cumbria before a 2022 detention has, after Cumbria's split on 1 April 2023, no
responsible council: the person query says so (naming Cumberland and Westmorland and Furness), the
hospital's council is told it coordinates, and a `moved` change naming the successor
(`residence_before_detention_la_gss`) makes that successor responsible, and tells it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from hub.clients import add_client
from hub.store.db import create_engine
from tests.e2e.conftest import SECRET, SHARING, make_clients, subscribe_webhook
from tests.support import HubProcess, Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CUMBRIA, CUMBERLAND, WESTMORLAND = "E10000006", "E06000063", "E06000064"
OXFORDSHIRE = "E10000025"  # the council of the trust's hospital (RNU, Oxford Health): coordinates
NHS = "9990000026"
BASE = {"source_system": "RiO", "person": {"nhs_number": NHS, "given_name": "Grace", "family_name": "Hopper"}}


async def test_a_split_county_is_undetermined_until_a_change_names_the_successor(tmp_path: Path) -> None:
    sharing = dict(SHARING)
    sharing["agreements"] = [*SHARING["agreements"], {
        "id": "DSA-TEST-SPLIT", "valid_from": "2020-01-01", "recipients": [
            {"org_code": code, "events": ["*"], "field_groups": ["identity", "responsibility"]}
            for code in (OXFORDSHIRE, CUMBERLAND)]}]
    (tmp_path / "sharing.yaml").write_text(yaml.safe_dump(sharing))
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=tmp_path / "sharing.yaml")
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    for code, name in ((OXFORDSHIRE, "Oxfordshire"), (CUMBERLAND, "Cumberland")):
        keys[code] = (await add_client(engine, name, code, "council", ["subscriptions:write", "s117:read"]))[1]
    await engine.dispose()
    trust = {"X-API-Key": keys["trust"]}
    try:
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in (OXFORDSHIRE, CUMBERLAND):
                await subscribe_webhook(http, keys, receiver, org=org)
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
            assert body["entitled"] is True
            assert body["responsible_council"] is None  # never Cumbria, never a guess
            assert body["coordinating_council"]["org"]["code"] == OXFORDSHIRE
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
