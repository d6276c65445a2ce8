"""`s117hub restore` (hub/restore_cli.py) against a real hub: a store that
handed out event numbers and position versions after its backup is restored
to the backup, and the restored hub never hands out a number or version the
displaced store had given (to a webhook subscriber and a feed subscriber);
both see the new restore epoch (`S117-Restore-Epoch`, and `restore_epoch` in
the subscription's status); the restore lists exactly the source message ids
the backup lacks, so the trust sends those again; it refuses while the hub
runs and with another data key, changing nothing; the displaced store's files
are kept. Real processes, real SQLite files, real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import random
import stat
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography.fernet import Fernet

from hub.fhir.messages import read_position
from hub.sample_data import detention_to_move_scenario
from tests.e2e.conftest import SECRET, make_clients
from tests.support import REPO, HubProcess, Receiver

pytestmark = pytest.mark.e2e
COUNCIL, ICB = "E06000060", "QU9"
EPOCH = "s117-restore-epoch"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


async def _settled(http: httpx.AsyncClient, subs: dict[str, tuple[str, dict]], above: dict[str, int],
                   receiver: Receiver) -> dict[str, int]:
    """Wait until each subscription has queued past `above` and nothing moved for a second (the
    dispatcher drained), the webhook's messages all received; each one's last event number."""
    deadline, last, still_since = time.monotonic() + 60, None, time.monotonic()
    while True:
        now = {}
        for name, (sid, headers) in subs.items():
            now[name] = (await http.get(f"/v1/subscriptions/{sid}/status", headers=headers)).json()[
                "events_since_subscription_start"]
        if now != last:
            last, still_since = now, time.monotonic()
        elif (all(now[n] > above.get(n, 0) for n in now) and time.monotonic() - still_since > 1.0
              and len({n for n in _numbers(receiver) if n > above.get("webhook", 0)})
              == now["webhook"] - above.get("webhook", 0)):
            return now
        assert time.monotonic() < deadline, f"not settled: {now}"
        await asyncio.sleep(0.1)


def _numbers(receiver: Receiver) -> list[int]:
    return [int(m.headers["s117-event-number"]) for m in receiver.received]


def _positions(bodies: list[dict]) -> dict[str, int]:
    """Each person's highest position version among these messages, as the subscriber reads them."""
    out: dict[str, int] = {}
    for bundle in bodies:
        p = read_position(bundle)
        if p is not None:
            out[p.person_id] = max(out.get(p.person_id, 0), p.version)
    return out


async def _feed_all(http: httpx.AsyncClient, sid: str, headers: dict, after: int) -> tuple[list[dict], str]:
    r = await http.get(f"/v1/feeds/{sid}", params={"after": after, "limit": 200}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"], r.headers[EPOCH]


async def test_a_restore_never_hands_out_a_number_or_version_again_and_lists_what_to_resend(
        tmp_path: Path, sharing_file: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    hub = HubProcess(live, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    trust = {"X-API-Key": keys["trust"]}
    council, icb = {"X-API-Key": keys[COUNCIL]}, {"X-API-Key": keys[ICB]}
    receiver = Receiver(SECRET)
    await receiver.start()
    rng = random.Random(36)
    a = detention_to_move_scenario(rng, "rst-a", date(2025, 2, 3))
    b = detention_to_move_scenario(rng, "rst-b", date(2025, 3, 3))
    people = [a[0]["person"], b[0]["person"]]
    dest = tmp_path / "backup.db"
    store = live / "hub.db"
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            feed = (await http.post("/v1/subscriptions", headers=council, json={"channel": "feed"})).json()
            hook = (await http.post("/v1/subscriptions", headers=icb, json={
                "channel": "webhook", "url": receiver.url(ICB), "secret": SECRET})).json()
            subs = {"feed": (feed["subscription_id"], council), "webhook": (hook["subscription_id"], icb)}
            for change in a[:2]:  # before the backup
                r = await http.post("/v1/register-changes", headers=trust, json=change)
                assert r.status_code == 202, r.text
            person_a = r.json()["person_id"]
            at_backup = await _settled(http, subs, {}, receiver)
            status = (await http.get(f"/v1/subscriptions/{feed['subscription_id']}/status", headers=council)).json()
            assert status["restore_epoch"] == "0"
            _items, epoch_before = await _feed_all(http, feed["subscription_id"], council, 0)
            assert epoch_before == "0" and receiver.received[0].headers[EPOCH] == "0"

            done = _cli("backup", str(dest), env=hub.env)
            assert done.returncode == 0, done.stderr

            for change in a[2:] + b:  # after the backup: what the restore loses
                r = await http.post("/v1/register-changes", headers=trust, json=change)
                assert r.status_code == 202, r.text
            marks = await _settled(http, subs, at_backup, receiver)
            displaced_items, _ = await _feed_all(http, feed["subscription_id"], council, 0)
            given_versions = _positions([i["message"] for i in displaced_items]
                                        + [orjson.loads(m.body) for m in receiver.received])
            assert given_versions[person_a] > 0

            # Refused while the hub runs: nothing moved.
            running = _cli("restore", str(dest), env=hub.env)
            assert running.returncode == 2 and "open in another process" in running.stderr, running.stderr
            assert running.stderr.count("\n") == 1 and "Traceback" not in running.stderr
    finally:
        hub.stop()
    assert not list(live.glob("hub.db.displaced*"))

    # Refused with another data key: nothing moved.
    wrong = _cli("restore", str(dest), env={**hub.env, "S117_DATA_KEY": Fernet.generate_key().decode()})
    assert wrong.returncode == 2 and "does not open" in wrong.stderr, wrong.stderr
    assert not list(live.glob("hub.db.displaced*"))

    before = store.read_bytes()
    done = _cli("restore", str(dest), env=hub.env)
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    text = done.stdout + done.stderr
    for p in people:
        for field in ("nhs_number", "given_name", "family_name", "birth_date", "postcode"):
            assert p[field] not in text, field
    epoch = said["restore_epoch"]
    assert epoch != "0" and said["previous_restore_epoch"] == "0" and said["numbers_may_repeat"] is False
    # The displaced store kept, under its new name, as it was.
    moved = [Path(p) for p in said["displaced"]["moved_to"]]
    assert moved and all(p.exists() for p in moved) and moved[0].read_bytes() == before
    assert said["advanced"]["subscriptions"] == 2
    # What to ask the trust for again: exactly the changes sent after the backup.
    (source,) = said["lost"]["by_source"]
    assert source["register_changes"] == len(a[2:] + b) and source["org_code"] == "RNU"
    ids_file = Path(said["lost"]["ids_file"])
    assert stat.S_IMODE(os.stat(ids_file).st_mode) == 0o600
    (listed,) = json.loads(ids_file.read_text())["sources"]
    assert [c["source_message_id"] for c in listed["register_changes"]] == [c["source_message_id"]
                                                                         for c in a[2:] + b]

    receiver.received.clear()
    again = HubProcess(live, sharing_path=sharing_file, S117_DATA_KEY_FILE=hub.env["S117_DATA_KEY_FILE"])
    await again.start()
    try:
        async with httpx.AsyncClient(base_url=again.base_url, timeout=30) as http:
            for name, (sid, headers) in subs.items():
                s = (await http.get(f"/v1/subscriptions/{sid}/status", headers=headers)).json()
                assert s["restore_epoch"] == epoch
                assert s["events_since_subscription_start"] == marks[name]
            sent_before = (await http.get(f"/v1/subscriptions/{feed['subscription_id']}/status",
                                          headers=council)).json()["last_event_number_sent"]
            # The trust sends again what the restore lost, with its own ids.
            for change in a[2:] + b:
                r = await http.post("/v1/register-changes", headers=trust, json=change)
                assert r.status_code == 202, r.text
            await _settled(http, subs, marks, receiver)
            items, feed_epoch = await _feed_all(http, feed["subscription_id"], council, sent_before)
    finally:
        again.stop()
        await receiver.stop()
    assert feed_epoch == epoch
    new_feed = [i for i in items if i["event_number"] > at_backup["feed"]]
    assert new_feed and all(i["event_number"] > marks["feed"] for i in new_feed), (
        [i["event_number"] for i in new_feed], marks)
    hooks = [m for m in receiver.received if int(m.headers["s117-event-number"]) > at_backup["webhook"]]
    assert hooks and all(int(m.headers["s117-event-number"]) > marks["webhook"] for m in hooks)
    assert all(m.headers[EPOCH] == epoch and m.signature_ok for m in receiver.received)
    after_versions = _positions([i["message"] for i in new_feed] + [orjson.loads(m.body) for m in hooks])
    assert after_versions[person_a] > given_versions[person_a], (after_versions, given_versions)
