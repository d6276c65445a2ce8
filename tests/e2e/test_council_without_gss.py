"""A council succeeded by one the register of local authorities lists without a GSS code yet (hazard H-03),
through a running hub's real HTTP: the operator's register (S117_LOCAL_AUTHORITIES_FILE) lists Chiltern Vale
replacing Buckinghamshire from 1 April 2026 before ONS has given it a code. The person who lived in
Buckinghamshire before a 2025 detention has no responsible council: the person query says so, naming
Chiltern Vale and the register the operator must load; the hospital's council is told it coordinates; the
abolished council is told nothing. Restarted with the register giving Chiltern Vale its GSS code, the
reference-data re-tell (hub/refdata_retell.py) tells Chiltern Vale it is responsible and the hospital's council
that it no longer coordinates, with no register change about the person; once."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import SECRET, hub_telling_councils, subscribe_webhook
from tests.support import Receiver, put_on_register

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

DATA = Path(__file__).resolve().parents[2] / "hub" / "refdata" / "data"
BUCKS = "E06000060"
OXFORDSHIRE = "E10000025"  # the council of the trust's hospital (RNU, Oxford Health): coordinates
CHILTERN_VALE = ("CHV", "E06000099", "Chiltern Vale")  # a unitary made by a reorganisation (fictional; no such code)
PERSON = {"nhs_number": "9990000034", "given_name": "Mary", "family_name": "Somerville"}


def _register(path: Path, gss: str) -> Path:
    """mySociety's register as published after the reorganisation: Buckinghamshire Council ended on 1 April
    2026, replaced by Chiltern Vale from that day, with GSS code `gss` (empty: listed before ONS gave one)."""
    with (DATA / "mysociety_uk_local_authorities_current.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    at = {name: i for i, name in enumerate(rows[0])}
    bucks = next(r for r in rows[1:] if r[at["gss-code"]] == BUCKS)
    new = list(bucks)
    bucks[at["end-date"]], bucks[at["replaced-by"]], bucks[at["current-authority"]] = "2026-04-01", "CHV", "False"
    code, _, name = CHILTERN_VALE
    new[at["local-authority-code"]], new[at["gss-code"]], new[at["nice-name"]] = code, gss, name
    new[at["official-name"]], new[at["start-date"]], new[at["alt-names"]] = f"{name} Council", "2026-04-01", name
    new[at["former-gss-codes"]] = ""
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([*rows, new])
    return path


async def test_a_successor_without_a_gss_code_leaves_the_council_undetermined_until_the_register_gives_one(
        tmp_path: Path) -> None:
    new_gss = CHILTERN_VALE[1]
    hub, keys = await hub_telling_councils(tmp_path, "DSA-TEST-NOGSS",
                                           {OXFORDSHIRE: "Oxfordshire", new_gss: "Chiltern Vale"})
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    trust = {"X-API-Key": keys["trust"]}
    hub.env["S117_LOCAL_AUTHORITIES_FILE"] = str(_register(tmp_path / "without_gss.csv", ""))
    hub.env["S117_LOCAL_AUTHORITIES_AS_OF"] = "2026-11-01"
    try:
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in (BUCKS, OXFORDSHIRE, new_gss):
                await subscribe_webhook(http, keys, receiver, org=org)
            person_id = await put_on_register(http, keys["trust"], PERSON)
            body = (await http.get(f"/v1/persons/{person_id}/s117", headers=trust)).json()
            assert body["entitled"] is True
            assert body["responsible_council"] is None  # never "unknown council E06000060", never a guess
            assert body["coordinating_council"]["org"]["code"] == OXFORDSHIRE
            [item] = body["responsibility_undetermined"]
            assert (item["role"], item["absent_reason"]) == ("responsible-council", "unknown")
            assert "Buckinghamshire (E06000060), is now Chiltern Vale (register code CHV, no GSS code yet)" in (
                item["reason"])
            assert "S117_LOCAL_AUTHORITIES_FILE" in item["reason"]

            # The hospital's council is told it coordinates, its position saying no council is responsible.
            await receiver.wait_for(lambda: any(r.org == OXFORDSHIRE and r.headers["s117-event-type"] ==
                                                "s117-entitlement-started" for r in receiver.received))
            told = [r for r in receiver.received if r.org == OXFORDSHIRE]
            assert all(b"responsibilityUndetermined" in r.body and b"Chiltern Vale" in r.body for r in told)
            await asyncio.sleep(1)
            assert not [r for r in receiver.received if r.org in (BUCKS, new_gss)]  # the abolished council: nothing
        hub.stop()

        hub.env["S117_LOCAL_AUTHORITIES_FILE"] = str(_register(tmp_path / "with_gss.csv", new_gss))
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            await receiver.wait_for(lambda: any(r.org == new_gss for r in receiver.received))
            await asyncio.sleep(1)
            successor = [r for r in receiver.received if r.org == new_gss]
            assert len(successor) == 1  # told it is responsible, once (its first message: its position)
            text = successor[0].body.decode()
            assert new_gss in text and "responsible-council" in text and "responsibilityUndetermined" not in text
            body = (await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": keys[new_gss]})).json()
            assert body["responsible_council"]["org"]["code"] == new_gss
            assert body["coordinating_council"] is None and body["responsibility_undetermined"] == []
            # The hospital's council: a correction saying why, no longer coordinating.
            oxfordshire = [r for r in receiver.received if r.org == OXFORDSHIRE][len(told):]
            assert [r.headers["s117-event-type"] for r in oxfordshire] == ["s117-notification-corrected"]
            text = oxfordshire[0].body.decode()
            assert "mySociety's register of local authorities" in text
            assert "coordinating-council" not in text and "responsibilityUndetermined" not in text
            assert not [r for r in receiver.received if r.org == BUCKS]
        hub.stop()
        seen = len(receiver.received)
        await hub.start()  # the same data again: nobody told twice
        await asyncio.sleep(3)
        assert len(receiver.received) == seen
    finally:
        hub.stop()
        await receiver.stop()
    assert PERSON["nhs_number"] not in hub.logs() and PERSON["family_name"] not in hub.logs()
