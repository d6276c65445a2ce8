"""Disclosure review (session 30), council files out, on a real hub process over HTTP.

Reproduced: a person placed in Worcestershire (host council: told), who then moved on to
Birmingham (Worcestershire told `roles: []`, and nothing more by any push channel) and was
re-detained from there (responsibility transferred Buckinghamshire -> Birmingham). Then:

* Worcestershire's full extract (`POST /v1/exports`) still listed the person, "was told of",
  with the register's *current* position: `RESP_LA_GSS` Birmingham, the next review, the
  entitlement dates: the re-detention and transfer it was never told of, and whatever the
  register says of the person for ever after. Buckinghamshire's likewise (legal status of the
  new detention included).
* Worcestershire's delta council file wrote each of its two host-area events with today's
  position, not the one it was told: both rows named Birmingham responsible.
* A delta row showed every column any agreement in force grants the council, not the groups
  its own message was rendered with: a second agreement granting `explanations` for other
  event types filled `CITATION` on rows whose messages carried no explanations.

Now a person the council has no part in (any more) is listed by who it is (NHS number if
`identity` is granted, its own reference), with no position: the flat-file form of the push
channels' `roles: []`; a delta row about such a person carries the position its event was told
with; and a delta row is cut to its own message's field groups.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import yaml

from adapters.council_files.outbound import OUT_LAYOUTS, read_export
from hub.clients import add_client
from hub.store.db import create_engine, create_schema
from tests.support import HubProcess

pytestmark = pytest.mark.e2e

BUCKS, WORCS, BHAM, BOB = "E06000060", "E10000034", "E08000025", "QU9"
NHS = "9991100016"
SHARING = {"version": 1, "agreements": [
    {"id": "DSA-R30", "valid_from": "2020-01-01", "recipients": [
        {"org_code": BUCKS, "events": ["*"], "field_groups": ["identity", "legal-status", "responsibility"]},
        {"org_code": WORCS, "events": ["*"], "field_groups": ["identity", "responsibility"]},
        {"org_code": BHAM, "events": ["*"], "field_groups": ["identity", "legal-status", "responsibility"]},
        {"org_code": BOB, "events": ["*"], "field_groups": ["identity", "responsibility"]},
    ]},
    # Worcestershire's second agreement: explanations, but only with review reminders.
    {"id": "DSA-R30-REVIEWS", "valid_from": "2020-01-01", "recipients": [
        {"org_code": WORCS, "events": ["s117-review-due"],
         "field_groups": ["identity", "responsibility", "explanations"]},
    ]},
]}

STEPS = [
    dict(change_type="detained", effective_date="2025-01-06", legal_status_code="03", hospital_ods="RNU",
         gp_practice_ods="K82001", residence_la_gss=BUCKS),
    dict(change_type="left-hospital", effective_date="2025-04-07", hospital_ods="RNU"),
    dict(change_type="moved", effective_date="2025-06-01", residence_la_gss=WORCS),  # Worcs: host, told
    dict(change_type="moved", effective_date="2025-07-01", residence_la_gss=BHAM),  # Worcs: roles []
    # Re-detained from Birmingham: the council is re-determined (Worcs 4.3.3); Bucks is told, Worcs not.
    dict(change_type="detained", effective_date="2025-08-01", legal_status_code="03", hospital_ods="RNU",
         residence_la_gss=BHAM),
    dict(change_type="left-hospital", effective_date="2025-10-01", hospital_ods="RNU"),
]


async def _clients(db_url: str) -> dict[str, str]:
    engine = create_engine(db_url)
    await create_schema(engine)
    keys = {"trust": (await add_client(engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"]))[1],
            "admin": (await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"]))[1]}
    for org, kind in ((BUCKS, "council"), (WORCS, "council"), (BHAM, "council"), (BOB, "icb")):
        keys[org] = (await add_client(engine, org, org, kind, ["subscriptions:write", "s117:read"]))[1]
    await engine.dispose()
    return keys


async def _until(check, what: str, timeout: float = 30.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _file(http: httpx.AsyncClient, key: str, export_id: str) -> list[dict]:
    async def ready() -> bool:
        r = await http.get(f"/v1/exports/{export_id}/status", headers={"X-API-Key": key})
        return r.json()["state"] == "ready"
    await _until(ready, f"export {export_id}")
    r = await http.get(f"/v1/exports/{export_id}", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return list(read_export(r.content, OUT_LAYOUTS["swift_csv"]))


async def test_council_files_carry_no_position_after_the_councils_part_ended(tmp_path: Path):
    sharing = tmp_path / "sharing.yaml"
    sharing.write_text(yaml.safe_dump(SHARING))
    hub = HubProcess(tmp_path, sharing_path=sharing, S117_EXPORT_DIR=str(tmp_path / "exports"))
    keys = await _clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=15) as http:
            feeds = {}
            for org in (BUCKS, WORCS, BHAM):
                r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[org]}, json={"channel": "feed"})
                assert r.status_code == 201, r.text
                feeds[org] = r.json()["subscription_id"]
            r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[WORCS]},
                                json={"channel": "council-file", "layout": "swift_csv", "mode": "delta"})
            assert r.status_code == 201, r.text
            worcs_file = r.json()["subscription_id"]
            base = {"source_system": "RiO", "person": {"nhs_number": NHS, "given_name": "Ann", "family_name": "Test"}}
            for i, step in enumerate(STEPS):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]},
                                    json={**base, "source_message_id": f"r30-{i}", **step})
                assert r.status_code == 202, r.text

            async def told(org: str, n: int):  # noqa: ANN202
                r = await http.get(f"/v1/subscriptions/{feeds[org]}/status", headers={"X-API-Key": keys[org]})
                return r.json()["events_since_subscription_start"] >= n
            # Every change dispatched: Birmingham hears of the last one (left hospital again).
            await _until(lambda: told(BHAM, 4), "Birmingham told of the last change")
            await _until(lambda: told(WORCS, 2), "Worcestershire told of both moves")
            r = await http.get(f"/v1/subscriptions/{feeds[WORCS]}/events", headers={"X-API-Key": keys[WORCS]})
            assert [it["event_type"] for it in r.json()["items"]] == ["s117-moved-out-of-area"] * 2

            # --- full extracts -------------------------------------------------------------
            rows = {}
            for org in (WORCS, BUCKS, BHAM):
                r = await http.post("/v1/exports", headers={"X-API-Key": keys[org]}, json={"layout": "swift_csv"})
                assert r.status_code == 202, r.text
                rows[org] = await _file(http, keys[org], r.json()["export_id"])
            for org in (WORCS, BUCKS):  # told of the person once; no part in their aftercare now
                [row] = rows[org]
                assert row["NHS_NO"] == NHS, row  # who it is: to close the record
                position = {k: row[k] for k in ("S117_FLAG", "RESP_LA_GSS", "RESP_ICB_ODS", "S117_START",
                                                "NEXT_REVIEW", "REVIEW_KIND", "LEGAL_STATUS")}
                assert not any(position.values()), (org, position)  # was: Birmingham, the new detention...
            [row] = rows[BHAM]  # the responsible council: its position
            assert row["RESP_LA_GSS"] == BHAM and row["S117_FLAG"] == "Y" and row["LEGAL_STATUS"] == "03", row

            # --- Worcestershire's delta file -----------------------------------------------
            r = await http.post(f"/v1/ops/subscriptions/{worcs_file}/council-file/run",
                                headers={"X-API-Key": keys["admin"]})
            assert r.status_code == 202, r.text
            delta = await _file(http, keys[WORCS], r.json()["export_id"])
            assert [d["EVENT_CODE"] for d in delta] == ["ADDR_CHANGE", "ADDR_CHANGE"], delta
            # The host notice as it was told: Buckinghamshire responsible (the re-detention came later); the
            # "no longer involved" notice (an event the dispatcher made for Worcestershire alone) no position.
            assert [d["RESP_LA_GSS"] for d in delta] == [BUCKS, ""], delta
            # Its messages carried identity and responsibility only: no citation (explanations are
            # Worcestershire's only with review reminders).
            assert [d["CITATION"] for d in delta] == ["", ""], delta
            assert delta[0]["NEXT_REVIEW"] and delta[0]["S117_START"], delta  # the position it was told
    finally:
        hub.stop()
