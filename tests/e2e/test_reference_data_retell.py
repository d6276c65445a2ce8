"""A change of reference data told to the bodies it moves (hazard H-03; hub/refdata_retell.py): the hub as a
real process, restarted with NHS England's newer GP practice map in which the person's practice belongs to a
merged ICB. The ICB that was responsible is told it is not any more, the merged ICB that it is, with no
register change about the person; a restart with the same data tells nobody again."""

from __future__ import annotations

import asyncio
import csv
import sqlite3
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from hub.store.db import create_engine
from hub.clients import add_client
from tests.e2e.conftest import SECRET, SHARING, make_clients, subscribe_webhook
from tests.support import HubProcess, Receiver, put_on_register

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

DATA = Path(__file__).resolve().parents[2] / "hub" / "refdata" / "data"
PRACTICE = "K82001"  # Rectory Meadow Surgery: sub-ICB location 14Y of BOB ICB (QU9) in the shipped map
PERSON = {"nhs_number": "9990000018", "given_name": "Ada", "family_name": "Lovelace"}


def _merged_map(path: Path) -> Path:
    """The shipped map as NHS England would publish it in November 2026, the practice's ICB merged into QZZ."""
    with (DATA / "gp-reg-pat-prac-map_2025-10.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    at = {name: i for i, name in enumerate(rows[0])}
    for r in rows[1:]:
        r[at["EXTRACT_DATE"]] = "01Nov2026"
        if r[at["PRACTICE_CODE"]] == PRACTICE:
            r[at["SUB_ICB_LOCATION_CODE"]], r[at["SUB_ICB_LOCATION_NAME"]] = "99Z", "NHS Merged ICB - 99Z"
            r[at["ICB_CODE"]], r[at["ICB_NAME"]] = "QZZ", "NHS Merged Integrated Care Board"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\r\n").writerows(rows)
    return path



async def _set_up(tmp_path: Path, body: tuple[str, str, str]) -> tuple[HubProcess, Receiver, dict[str, str]]:
    """A hub process (not started) under SHARING and an agreement granting `body` (code, name, kind: the body
    the newer data names) identity and responsibility, a signing receiver, and the clients' keys, the body's
    with them."""
    code, name, kind = body
    sharing = dict(SHARING)
    sharing["agreements"] = [*SHARING["agreements"], {"id": f"DSA-TEST-{code}", "valid_from": "2020-01-01",
                                                       "recipients": [{"org_code": code, "events": ["*"],
                                                                       "field_groups": ["identity", "responsibility"]}]}]
    (tmp_path / "sharing.yaml").write_text(yaml.safe_dump(sharing))
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=tmp_path / "sharing.yaml")
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    keys[code] = (await add_client(engine, name, code, kind, ["subscriptions:write", "s117:read"]))[1]
    await engine.dispose()
    return hub, receiver, keys


async def _restarted_tells_no_one(hub: HubProcess, receiver: Receiver) -> None:
    """The hub stopped and started again on the same reference data: nobody is told anything again."""
    hub.stop()
    seen = len(receiver.received)
    await hub.start()
    await asyncio.sleep(3)
    assert len(receiver.received) == seen


def _recorded(tmp_path: Path) -> list[dict]:
    """The hub's records of the reference data in use (operator actions), oldest first."""
    with sqlite3.connect(tmp_path / "hub.db") as db:
        return [orjson.loads(d) for (d,) in db.execute(
            "SELECT detail FROM operator_actions WHERE action = 'reference-data-in-use' ORDER BY action_id")]


def _told_once_by_the_new_data(records: list[dict]) -> dict:
    """The record of the start that loaded the newer data: one person looked at, told (1, 1). The first start's
    pass records the shipped data only if it ran after the person was put on the register (the back process's
    start races the test's first POST): then it told nobody (1, 0, None), and is the newer record's
    `previous`. The newer data's record, returned."""
    *first, last = records
    assert [(r["people"], r["told"], r["previous"]) for r in first] in ([], [(1, 0, None)]), first
    assert (last["people"], last["told"], last["previous"]) == (1, 1, first[0]["fingerprint"] if first else None)
    return last


async def test_a_newer_practice_map_moving_the_icb_is_told_to_both_icbs(tmp_path: Path) -> None:
    hub, receiver, keys = await _set_up(tmp_path, ("QZZ", "Merged ICB", "icb"))
    try:
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in ("QU9", "QZZ"):
                await subscribe_webhook(http, keys, receiver, org=org)
            person_id = await put_on_register(http, keys["trust"], PERSON)
            await receiver.wait_for(lambda: any(r.headers["s117-event-type"] == "s117-entitlement-started"
                                                for r in receiver.received if r.org == "QU9"))
            told_qu9 = [r for r in receiver.received if r.org == "QU9"]
            assert not [r for r in receiver.received if r.org == "QZZ"]  # no role for the person yet
        hub.stop()

        hub.env["S117_GP_PRACTICE_MAP_FILE"] = str(_merged_map(tmp_path / "gp-reg-pat-prac-map.csv"))
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            await receiver.wait_for(lambda: any(r.org == "QZZ" for r in receiver.received)
                                    and len([r for r in receiver.received if r.org == "QU9"]) > len(told_qu9))
            await asyncio.sleep(1)
            qu9 = [r for r in receiver.received if r.org == "QU9"][len(told_qu9):]
            qzz = [r for r in receiver.received if r.org == "QZZ"]
            # BOB ICB: a correction superseding the last message it had, saying why, no longer responsible.
            assert [r.headers["s117-event-type"] for r in qu9] == ["s117-notification-corrected"]
            correction = orjson.loads(qu9[0].body)
            text = orjson.dumps(correction).decode()
            assert "reference data the hub determines responsible bodies by was updated" in text
            assert told_qu9[-1].headers["s117-event-id"] in text  # supersedes what it last had
            # The merged ICB: told it is responsible, once.
            assert len(qzz) == 1 and "QZZ" in qzz[0].body.decode()
            for org in ("QZZ", "QU9"):  # the person query names the merged ICB, to either
                r = await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": keys[org]})
                assert r.status_code == 200, r.text
                assert r.json()["responsible_commissioner"]["org"]["code"] == "QZZ"
        await _restarted_tells_no_one(hub, receiver)
    finally:
        hub.stop()
        await receiver.stop()
    # The second start told one of one (the first told nobody, whether or not it recorded the shipped data).
    newer = _told_once_by_the_new_data(_recorded(tmp_path))
    assert [d["operator_file"] for d in newer["datasets"] if d["dataset"] == "gp-practice-map"] == [True]
    assert PERSON["nhs_number"] not in hub.logs() and PERSON["family_name"] not in hub.logs()


SUCCESSOR = ("CHV", "E06000099", "Chiltern Vale")  # a unitary made by a reorganisation (fictional; no such code)


def _reorganised_councils(path: Path) -> Path:
    """mySociety's register as it would be published after a reorganisation: Buckinghamshire Council (BUC,
    E06000060: the person's council before detention) ended on 1 April 2026 and replaced by a new unitary
    from that day, with its own GSS code."""
    with (DATA / "mysociety_uk_local_authorities_current.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    at = {name: i for i, name in enumerate(rows[0])}
    bucks = next(r for r in rows[1:] if r[at["gss-code"]] == "E06000060")
    new = list(bucks)
    bucks[at["end-date"]], bucks[at["replaced-by"]], bucks[at["current-authority"]] = "2026-04-01", SUCCESSOR[0], "False"
    code, gss, name = SUCCESSOR
    new[at["local-authority-code"]], new[at["gss-code"]], new[at["nice-name"]] = code, gss, name
    new[at["official-name"]], new[at["start-date"]], new[at["alt-names"]] = f"{name} Council", "2026-04-01", name
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([*rows, new])
    return path


async def test_a_newer_council_register_naming_a_successor_is_told_to_both_councils(tmp_path: Path) -> None:
    """The council the person lived in before detention abolished by a reorganisation: restarted with
    mySociety's newer register (S117_LOCAL_AUTHORITIES_FILE), the hub names its successor; the old council is
    corrected, the new one told, once, with no register change about the person."""
    new_gss = SUCCESSOR[1]
    hub, receiver, keys = await _set_up(tmp_path, (new_gss, "Chiltern Vale", "council"))
    try:
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in ("E06000060", new_gss):
                await subscribe_webhook(http, keys, receiver, org=org)
            person_id = await put_on_register(http, keys["trust"], PERSON)
            await receiver.wait_for(lambda: any(r.headers["s117-event-type"] == "s117-entitlement-started"
                                                for r in receiver.received if r.org == "E06000060"))
            told_bucks = [r for r in receiver.received if r.org == "E06000060"]
            assert not [r for r in receiver.received if r.org == new_gss]  # no role for the person yet
            r = await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": keys["E06000060"]})
            assert r.json()["responsible_council"]["org"]["code"] == "E06000060"
        hub.stop()

        hub.env["S117_LOCAL_AUTHORITIES_FILE"] = str(_reorganised_councils(tmp_path / "uk_local_authorities.csv"))
        hub.env["S117_LOCAL_AUTHORITIES_AS_OF"] = "2026-11-01"
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            await receiver.wait_for(lambda: any(r.org == new_gss for r in receiver.received)
                                    and len([r for r in receiver.received if r.org == "E06000060"]) > len(told_bucks))
            await asyncio.sleep(1)
            bucks = [r for r in receiver.received if r.org == "E06000060"][len(told_bucks):]
            successor = [r for r in receiver.received if r.org == new_gss]
            # Buckinghamshire: a correction superseding the last message it had, saying why.
            assert [r.headers["s117-event-type"] for r in bucks] == ["s117-notification-corrected"]
            text = bucks[0].body.decode()
            assert "mySociety's register of local authorities" in text
            assert told_bucks[-1].headers["s117-event-id"] in text  # supersedes what it last had
            # The successor council: told it is responsible, once.
            assert len(successor) == 1 and new_gss in successor[0].body.decode()
            for org in (new_gss, "E06000060"):  # the person query names the successor, to either
                r = await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": keys[org]})
                assert r.status_code == 200, r.text
                assert r.json()["responsible_council"]["org"]["code"] == new_gss
        await _restarted_tells_no_one(hub, receiver)
    finally:
        hub.stop()
        await receiver.stop()
    newer = _told_once_by_the_new_data(_recorded(tmp_path))
    assert [(d["operator_file"], d["as_of"]) for d in newer["datasets"] if d["dataset"] == "local-authorities"] \
        == [(True, "2026-11-01")]
    assert PERSON["nhs_number"] not in hub.logs() and PERSON["family_name"] not in hub.logs()
