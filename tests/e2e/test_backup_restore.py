"""Back up a running hub and restore it (hub/backup_cli.py). A real `s117hub
serve` records register changes over HTTP without pause while `s117hub backup`
copies its SQLite store: the copy holds every change answered 202 before the
backup began and passes SQLite's integrity check; a hub started on the copy
with the same data key finds a person by NHS number and serves their s117
position; with another key `backup --verify` says it cannot be restored
(exit 2) and `serve` refuses to start (exit 2). Nothing the commands print
names a person."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from hub.sample_data import detention_to_move_scenario
from tests.e2e.conftest import make_clients
from tests.support import REPO, HubProcess

pytestmark = pytest.mark.e2e


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def _nothing_personal(people: list[dict], *texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text
        for p in people:
            for field in ("nhs_number", "given_name", "family_name", "birth_date", "postcode"):
                assert p[field] not in text, field


async def test_a_backup_taken_while_the_hub_records_changes_restores_with_its_key_only(
        tmp_path: Path, sharing_file: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    hub = HubProcess(live, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    trust = {"X-API-Key": keys["trust"]}
    accepted: list[dict] = []
    people: list[dict] = []
    stop = asyncio.Event()

    async def record_changes() -> None:  # a trust sending one change after another, without pause
        rng = random.Random(117)
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            i = 0
            while not stop.is_set():
                changes = detention_to_move_scenario(rng, f"bk-{i}", date(2025, 1, 6) + timedelta(days=i % 300))
                people.append(changes[0]["person"])
                for change in changes:
                    r = await http.post("/v1/register-changes", headers=trust, json=change)
                    assert r.status_code == 202, r.text
                    accepted.append(r.json())
                i += 1

    await hub.start()
    backups = tmp_path / "backups"
    backups.mkdir()
    dest = backups / "hub.db"
    writer = asyncio.create_task(record_changes())
    try:
        while len(accepted) < 40:
            assert not writer.done(), writer.exception()
            await asyncio.sleep(0.05)
        before = {a["change_id"] for a in accepted}  # answered 202 before the backup began
        at_start = len(accepted)
        # One page a step (a pause after each), so the copy spans many of the hub's commits.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hub.cli", "backup", "--step-pages", "1", str(dest), cwd=REPO, env=hub.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 120)
        during = len(accepted) - at_start
    finally:
        stop.set()
        try:
            await writer
        finally:
            hub.stop()
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, err
    assert during > 0, "the hub recorded changes while the backup ran"
    said = json.loads(out)
    key = (live / "data.key").read_bytes().strip()
    assert key.decode() not in out + err
    _nothing_personal(people, out, err)
    assert said["integrity"] == "ok" and said["data_key_opens"] is True and said["schema"] == "current"

    with sqlite3.connect(f"file:{dest}?mode=ro", uri=True) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        held = {r[0] for r in copy.execute("SELECT change_id FROM register_changes")}
    assert before <= held, f"{len(before - held)} changes answered 202 before the backup are missing from it"
    assert held <= {a["change_id"] for a in accepted}
    assert said["register_changes"] == len(held)

    # Verify with the store's key: restorable; with another: not, and said so.
    right = _cli("backup", "--verify", str(dest), env=hub.env)
    assert right.returncode == 0, right.stderr
    assert json.loads(right.stdout)["restorable"] is True
    other = Fernet.generate_key().decode()
    wrong_env = {**hub.env, "S117_DATA_KEY": other}
    wrong = _cli("backup", "--verify", str(dest), env=wrong_env)
    assert wrong.returncode == 2
    assert json.loads(wrong.stdout)["data_key_opens"] is False and "does not open" in wrong.stderr
    _nothing_personal(people, right.stdout, right.stderr, wrong.stdout, wrong.stderr)
    assert other not in wrong.stdout + wrong.stderr and key.decode() not in wrong.stdout + wrong.stderr

    # Restore: the copy put in place of a stopped hub's store, the same key beside it.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copyfile(dest, restored / "hub.db")
    again = HubProcess(restored, sharing_path=sharing_file, S117_DATA_KEY_FILE=str(live / "data.key"))
    await again.start()
    try:
        first = next(a for a in accepted if a["change_id"] in before)
        nhs = next(p["nhs_number"] for p in people)  # the first person: their changes came before the backup
        async with httpx.AsyncClient(base_url=again.base_url, timeout=10) as http:
            r = await http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": nhs})
            assert r.status_code == 200, r.text
            assert r.json()["person_id"] == first["person_id"]
            r = await http.get(f"/v1/persons/{first['person_id']}/s117", headers=trust)
            assert r.status_code == 200, r.text
            assert first["change_id"] in {c["change_id"] for c in r.json()["register_service_level"]}
    finally:
        again.stop()

    # The same copy with another key: the hub does not start on it.
    port = again.port
    refused = _cli("serve", env={**again.env, "S117_DATA_KEY": other})
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "does not open" in refused.stderr and "Traceback" not in refused.stdout + refused.stderr
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
