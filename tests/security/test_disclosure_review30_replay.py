"""Disclosure review (session 30): a replay by event number is a disclosure, audited.

Reproduced on a real hub process: Buckinghamshire read its person's messages again with
`GET /v1/subscriptions/{id}/events` (the FHIR message, NHS number and all) and nothing was
recorded: `access_decisions` held a row for a refused replay (no agreement) but none for one
allowed, so "who was told what about this person" (audit person) never showed the re-read,
where a person query is recorded every time. Now each allowed replay records, for each person
its messages are about, one allowed read on channel `replay` with the field groups they carried.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import make_clients, sharing_file  # noqa: F401 - the fixture
from tests.support import HubProcess, detention

pytestmark = pytest.mark.e2e
COUNCIL = "E06000060"


async def test_an_allowed_replay_is_recorded_per_person_with_its_field_groups(tmp_path: Path, sharing_file):
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=15) as http:
            key = {"X-API-Key": keys[COUNCIL]}
            sid = (await http.post("/v1/subscriptions", headers=key, json={"channel": "feed"})).json()[
                "subscription_id"]
            for change in detention("9991100016", "r30replay"):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text
            person_id = r.json()["person_id"]
            deadline = time.monotonic() + 30
            while (await http.get(f"/v1/subscriptions/{sid}/status", headers=key)).json()[
                    "events_since_subscription_start"] < 3:
                assert time.monotonic() < deadline, "the council's messages were never queued"
                await asyncio.sleep(0.05)

            r = await http.get(f"/v1/subscriptions/{sid}/events", headers=key)
            assert r.status_code == 200 and len(r.json()["items"]) == 3
            assert all("message" in it for it in r.json()["items"])  # disclosed again, in full
            r = await http.get(f"/v1/subscriptions/{sid}/events?from=9", headers=key)
            assert r.status_code == 200 and r.json()["items"] == []  # nothing handed out: nothing recorded
    finally:
        hub.stop()
    db = sqlite3.connect(hub.db_url.split("///", 1)[1])
    rows = db.execute("SELECT org_code, person_id, decision, rule, field_groups, agreement_id FROM access_decisions "
                      "WHERE channel = 'replay'").fetchall()
    db.close()
    assert len(rows) == 1, rows  # one replay, one person: one row
    org, pid, decision, rule, groups, agreement = rows[0]
    assert (org, pid, decision, rule, agreement) == (COUNCIL, person_id, "allowed", "allowed", "DSA-TEST-BUCKS")
    # The groups its messages carried (tests/e2e/conftest.py SHARING: Buckinghamshire's agreement).
    assert set(json.loads(groups)) == {"identity", "demographics", "legal-status", "responsibility", "explanations"}
