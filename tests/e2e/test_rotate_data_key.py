"""`s117hub rotate-data-key` end to end (hub/rekey_cli.py): a real `s117hub serve` filled over HTTP
(people, a merge, a retraction, quarantined input, a council's webhook subscription whose messages wait
queued while its endpoint fails, a reconciliation snapshot); the rotation refused while the hub runs,
done once it is stopped; then the old key is refused by `serve`, a hub started with the new key finds
everyone by NHS number, sends the queued messages signed with the subscription's secret, shows the hub
operator the quarantined input, and `s117hub audit verify` passes with the rotation audited. A council's
row and difference kept before migration 0041 for someone not on the register (the hash only) refuse it,
naming `--forget-unmatched-reconciliation` and how many; with it they are kept under a tombstone and still
reported. A new key
that is not one, or is the current one, is refused naming where it came from. Nothing the commands
print names a person or holds a key."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from hub.clients import add_client
from hub.crypto import DataProtector
from hub.store.db import create_engine
from tests.contract.test_rotate_data_key import PEOPLE, RETAINED, SECRET, SUPERSEDED, fill
from tests.e2e.conftest import make_clients
from tests.support import REPO, HubProcess, Receiver

pytestmark = pytest.mark.e2e


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def _nothing_personal_or_secret(keys: list[str], *texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text
        for key in keys:
            assert key not in text
        for p in PEOPLE:
            for value in p.values():
                assert value not in text


def _private_key_file(path: Path, key: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return path


STRANGER = "9991100113"  # on the council's list in a snapshot kept before migration 0041, never on the register


def _a_difference_kept_before_0041(db: Path, protector: DataProtector, snapshot_id: str) -> str:
    """A row of the snapshot and its difference for someone not on the register, as reconciliation kept
    them before migration 0041 (the keyed hash only, `person_number` null): the difference's id."""
    item_id = "00000000-0000-4000-8000-0000000000a1"
    key = protector.index(STRANGER)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        difference, at = conn.execute("SELECT difference, updated_at FROM reconciliation_items LIMIT 1").fetchone()
        difference = {**json.loads(difference), "kind": "missing-on-hub-register", "field": "entitled",
                      "person_id": None}
        conn.execute("INSERT INTO reconciliation_rows (snapshot_id, row_no, person_key, local_id, belief) "
                     "VALUES (?, 99, ?, ?, ?)", (snapshot_id, key, protector.encrypt(b"SW-LEGACY"),
                                                 json.dumps({"entitled": True})))
        conn.execute("INSERT INTO reconciliation_items (item_id, body_org, person_key, kind, field, state, "
                     "difference, person_id, first_seen, last_seen, updated_at) VALUES (?, 'E06000060', ?, "
                     "'missing-on-hub-register', 'entitled', 'open', ?, NULL, ?, ?, ?)",
                     (item_id, key, json.dumps(difference), snapshot_id, snapshot_id, at))
    return item_id


async def _operator(db_url: str) -> str:
    engine = create_engine(db_url)
    try:
        return (await add_client(engine, "Hub ops", "X26", "hub-operator", ["register:write", "hub:admin"]))[1]
    finally:
        await engine.dispose()


async def test_a_store_filled_over_http_is_rotated_and_reads_everything_under_the_new_key_only(
        tmp_path: Path, sharing_file: Path) -> None:
    receiver = Receiver(secret=SECRET, fail_with=503)  # the council's endpoint down: its messages wait queued
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    operator = await _operator(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            ids = await fill(http, keys, hook=receiver.url("E06000060"))
            await receiver.wait_for(lambda: len(receiver.received) >= 3)  # tried, refused: still queued
            r = await http.get(f"/v1/reconciliations/{ids['snapshot']}", headers={"X-API-Key": keys["E06000060"]})
            assert r.status_code == 200, r.text
        old = (tmp_path / "data.key").read_bytes().strip()
        new = Fernet.generate_key()
        new_file = _private_key_file(tmp_path / "new.key", new)
        # The hub running: refused, nothing changed.
        running = _cli("rotate-data-key", "--new-key-file", str(new_file), env=hub.env)
        assert running.returncode == 2, running.stdout + running.stderr
        assert "open in another process" in running.stderr and "stop every hub process" in running.stderr
        assert len(running.stderr.strip().splitlines()) == 1
    finally:
        hub.stop()
    receiver.fail_with = None
    with contextlib.closing(sqlite3.connect(tmp_path / "hub.db")) as db:
        pending = {r[0] for r in db.execute("SELECT event_id FROM deliveries WHERE status = 'pending'")}
    assert len(pending) >= 3, "messages queued for the council when the hub stopped"
    legacy = _a_difference_kept_before_0041(tmp_path / "hub.db", DataProtector(old), ids["snapshot"])

    # A row and difference kept before migration 0041 for someone not on the register: the hash only.
    unmatched = _cli("rotate-data-key", "--new-key-file", str(new_file), env=hub.env)
    assert unmatched.returncode == 2, unmatched.stdout + unmatched.stderr
    assert unmatched.stdout == "" and len(unmatched.stderr.strip().splitlines()) == 1, unmatched.stderr
    assert unmatched.stderr.startswith("rotate-data-key: not rotated, nothing was changed: reconciliation_items")
    assert "give --forget-unmatched-reconciliation to rotate all the same, the 2 reconciliation hashes" in (
        unmatched.stderr)
    _nothing_personal_or_secret([old.decode(), new.decode(), STRANGER], unmatched.stderr)

    rotated = _cli("rotate-data-key", "--new-key-file", str(new_file), "--forget-unmatched-reconciliation",
                   env=hub.env)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    said = json.loads(rotated.stdout)
    assert said["rotated"] is True and said["resumed"] is False
    forgotten = said["forgotten_unmatched_reconciliation"]
    assert (forgotten["reconciliation_rows"], forgotten["reconciliation_items"]) == (1, 1)
    assert said["old_key_fingerprint"] != said["new_key_fingerprint"]
    assert said["rewritten"]["persons.details"] == len(PEOPLE)
    assert said["rewritten"]["subscriptions.secret"] == 1
    assert "need it" in said["backups"] and said["old_key_fingerprint"] in said["backups"]
    assert "backups taken before now" in rotated.stderr  # said on standard error too
    _nothing_personal_or_secret([old.decode(), new.decode(), SECRET], rotated.stdout, rotated.stderr)
    assert (tmp_path / "data.key").read_bytes().strip() == old  # the key file is the operator's to replace

    # The old key: refused as any other; `serve` never listens.
    refused = _cli("serve", env=hub.env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "does not open" in refused.stderr
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", hub.port)) != 0

    # The new key: the audit chain verifies, with the rotation in it.
    new_env = {**hub.env, "S117_DATA_KEY_FILE": str(new_file)}
    verified = _cli("audit", "verify", env=new_env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True
    with contextlib.closing(sqlite3.connect(tmp_path / "hub.db")) as db:
        (detail,) = db.execute("SELECT detail FROM operator_actions WHERE action = 'data-key-rotated'").fetchone()
        assert db.execute("SELECT count(*) FROM audit_chain WHERE content LIKE '%data-key-rotated%'").fetchone()[0]
    detail = json.loads(detail)
    assert (detail["old_key_fingerprint"], detail["new_key_fingerprint"]) == (
        said["old_key_fingerprint"], said["new_key_fingerprint"])
    assert detail["forgotten_unmatched_reconciliation"]["reconciliation_items"] == 1

    again = HubProcess(tmp_path, sharing_path=sharing_file, S117_DATA_KEY_FILE=str(new_file))
    await again.start()
    try:
        # The messages queued before the rotation: sent, each signed with the subscription's secret.
        await receiver.wait_for(lambda: pending <= {r.headers["s117-event-id"] for r in receiver.received
                                                    if r.status == 204}, timeout=60)
        sent = [r for r in receiver.received if r.status == 204]
        assert sent and all(r.signature_ok for r in sent)
        assert all(json.loads(r.body)["resourceType"] == "Bundle" for r in sent)
        async with httpx.AsyncClient(base_url=again.base_url, timeout=30) as http:
            for person in PEOPLE:  # everyone found by NHS number; the superseded one: the retained person
                r = await http.post("/v1/persons/lookup", headers={"X-API-Key": keys["trust"]},
                                    json={"nhs_number": person["nhs_number"]})
                assert r.status_code == 200, r.text
                expected = ids[RETAINED] if person["nhs_number"] == SUPERSEDED else ids[person["nhs_number"]]
                assert r.json()["person_id"] == expected
            r = await http.get(f"/v1/quarantine/{ids['quarantine']}", headers={"X-API-Key": operator})
            assert r.status_code == 200, r.text
            assert "Heldinput" in r.json()["raw"]
            r = await http.get(f"/v1/reconciliations/{ids['snapshot']}", headers={"X-API-Key": keys["E06000060"]})
            assert r.status_code == 200, r.text
            assert "SW-CAL" in {i["local_id"] for i in r.json()["items"]}
            # The forgotten one: still reported, with the council's own id (its row and it share the tombstone).
            assert {i["item_id"]: i["local_id"] for i in r.json()["items"]}[legacy] == "SW-LEGACY"
    finally:
        again.stop()
        await receiver.stop()
    _nothing_personal_or_secret([old.decode(), new.decode()], again.logs())


def test_a_new_key_that_is_not_one_or_is_the_current_one_is_refused_naming_where_it_came_from(
        tmp_path: Path) -> None:
    import asyncio

    from hub.crypto import DataProtector
    from hub.store.db import create_schema
    from hub.store.key_check import check_data_key

    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    old = Fernet.generate_key()

    async def store() -> None:
        engine = create_engine(url)
        try:
            await create_schema(engine)
            await check_data_key(engine, DataProtector(old))
        finally:
            await engine.dispose()

    asyncio.run(store())
    env = {k: v for k, v in os.environ.items() if not k.startswith("S117_")} | {
        "S117_DATABASE_URL": url, "S117_DATA_KEY": old.decode()}
    short = _private_key_file(tmp_path / "short.key", b"c2hvcnQ=")
    same = _private_key_file(tmp_path / "same.key", old + b"\n")
    good = _private_key_file(tmp_path / "good.key", Fernet.generate_key())
    runs = {
        "too short, from the file": (["--new-key-file", str(short)], {}, "--new-key-file: not a data key"),
        "too short, from the environment": ([], {"S117_NEW_DATA_KEY": "c2hvcnQ="}, "S117_NEW_DATA_KEY: not a data key"),
        "the current key": (["--new-key-file", str(same)], {}, "--new-key-file: is the store's current data key"),
        "the current key, from the environment": ([], {"S117_NEW_DATA_KEY": old.decode()},
                                                  "S117_NEW_DATA_KEY: is the store's current data key"),
        "none given": ([], {}, "give the new data key in a file (--new-key-file <file>) or in the environment"),
        "both given": (["--new-key-file", str(good)], {"S117_NEW_DATA_KEY": Fernet.generate_key().decode()},
                       "give the new key one way"),
        "no such file": (["--new-key-file", str(tmp_path / "missing.key")], {},
                         "--new-key-file: cannot read the file"),
    }
    for name, (args, extra, expected) in runs.items():
        run = _cli("rotate-data-key", *args, env={**env, **extra})
        assert run.returncode == 2, (name, run.stdout, run.stderr)
        assert run.stdout == "", name
        assert run.stderr.startswith(f"rotate-data-key: {expected}"), (name, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1, (name, run.stderr)
        _nothing_personal_or_secret([old.decode(), *(v for v in extra.values())], run.stderr)
    with contextlib.closing(sqlite3.connect(tmp_path / "hub.db")) as db:  # nothing changed
        assert db.execute("SELECT count(*) FROM store_key_rotations").fetchone()[0] == 0
        token = db.execute("SELECT check_token FROM store_keys").fetchone()[0]
    assert DataProtector(old).decrypt(token)
