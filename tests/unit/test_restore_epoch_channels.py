"""After `s117hub restore` (hub/restore_cli.py), every outbound channel shows
the restore epoch as the webhook does (`S117-Restore-Epoch`: "0" until the
store is restored, then that restore's id): the Kafka topic channel as the
record header `restore_epoch`, the file channel as a field of each NDJSON
line, the pull feed as a field of the page and of each item. And the audit
chain goes on from the backup's last entry: `s117hub audit verify` passes,
and the restore itself is the chain's next entry, naming the epoch and the
backup's point, so entries after it are known to be lost, not tampered with.

Real SQLite stores and files; the hub in process; backup, restore and audit
verify through the CLI. Kafka is a fake producer (no broker in unit tests:
tests/contract/test_kafka_topic_channel.py checks the header against a real
one and /asyncapi.json)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from hub.api.app import create_app
from hub.clients import add_client
from hub.store.restores import EPOCH_HEADER
from tests.conftest import InProcessHub
from tests.conftest import test_settings as settings_for
from tests.support import push_scenario
from tests.unit.test_restore_cli import _env, _run

COUNCIL = "E06000060"
ACTOR, ACTION = "hub:restore", "store-restore"  # the restore's operator action (hub/restore_cli.py)


class _Producer:
    """Kafka as the channel sees it: every record sent, acknowledged at once."""

    def __init__(self) -> None:
        self.records: list[dict[str, str]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.records.append({k: v.decode() for k, v in headers})


async def _round(tmp: Path, seed: int, first: bool) -> dict[str, Any]:
    """The hub in process on `tmp`/hub.db: one person's changes (seed), dispatched, every file and
    kafka delivery made, the feed read on from its last event number sent, the audit chain extended.
    What each channel carried this round, and the epoch the hub started with."""
    settings = settings_for(tmp, kafka_outbound_bootstrap="127.0.0.1:9", export_dir=tmp / "exports")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            if first:
                trust = (await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write"]))[1]
                council = (await add_client(hub.engine, "Bucks", COUNCIL, "council", ["subscriptions:write"]))[1]
                subs = {}
                for channel in ("file", "kafka", "feed"):
                    r = await http.post("/v1/subscriptions", headers={"X-API-Key": council},
                                        json={"channel": channel})
                    assert r.status_code == 201, r.text
                    subs[channel] = r.json()["subscription_id"]
                (tmp / "keys.json").write_text(json.dumps({"trust": trust, COUNCIL: council, "subs": subs}))
            keys = json.loads((tmp / "keys.json").read_text())
            await push_scenario(InProcessHub(http, hub, keys), seed)

            files = hub.file_deliverer
            while await files.run_once():
                pass
            producer = _Producer()

            async def ensure_producer() -> _Producer:
                return producer

            async def ensure_topic(topic: str) -> None:
                return None

            kafka = hub.kafka_deliverer
            kafka._ensure_producer, kafka._ensure_topic = ensure_producer, ensure_topic
            while await kafka.run_once():
                pass

            council = {"X-API-Key": keys[COUNCIL]}
            feed = keys["subs"]["feed"]
            sent = (await http.get(f"/v1/subscriptions/{feed}/status", headers=council)).json()[
                "last_event_number_sent"]
            page = await http.get(f"/v1/feeds/{feed}", params={"after": sent, "limit": 200}, headers=council)
            assert page.status_code == 200, page.text

            while await hub.audit.extend():
                pass
            return {"epoch": hub.restore_epoch, "kafka": producer.records, "feed": page.json(),
                    "feed_header": page.headers[EPOCH_HEADER]}


def _lines(tmp: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((tmp / "exports" / COUNCIL).glob("*.ndjson"))
            for line in f.read_bytes().splitlines()]


def _chain(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT seq, source, content, prev_hash, entry_hash FROM audit_chain "
                            "ORDER BY seq").fetchall()
    finally:
        conn.close()


@pytest.fixture
def story(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> dict[str, Any]:
    """Before a backup, after it (what the restore loses), the restore, after the restore."""
    tmp = tmp_path / "hub"
    tmp.mkdir()
    (tmp / "data.key").write_bytes(Fernet.generate_key())
    _env(monkeypatch, tmp_path, tmp / "hub.db")
    monkeypatch.setenv("S117_DATA_KEY_FILE", str(tmp / "data.key"))
    before = asyncio.run(_round(tmp, 61, first=True))
    lines_before = _lines(tmp)
    chain_at_backup = _chain(tmp / "hub.db")
    backup = tmp_path / "backup.db"
    code, _out, err = _run(["backup", str(backup)], capsys)
    assert code == 0, err
    lost = asyncio.run(_round(tmp, 62, first=False))
    chain_displaced = _chain(tmp / "hub.db")
    code, out, err = _run(["restore", str(backup)], capsys)
    assert code == 0, err
    restored = json.loads(out)
    seen = len(_lines(tmp))
    after = asyncio.run(_round(tmp, 63, first=False))
    return {"tmp": tmp, "before": before, "lines_before": lines_before, "lost": lost, "restored": restored,
            "after": after, "lines_after": _lines(tmp)[seen:], "chain_at_backup": chain_at_backup,
            "chain_displaced": chain_displaced}


def test_kafka_records_file_lines_and_feed_pages_carry_the_restore_epoch(story: dict[str, Any]) -> None:
    before, after = story["before"], story["after"]
    epoch = story["restored"]["restore_epoch"]
    assert before["epoch"] == "0" and epoch != "0" and after["epoch"] == epoch
    # Before any restore: "0", as the webhook's header (sent from the start, not only after a restore).
    assert before["kafka"] and all(h["restore_epoch"] == "0" for h in before["kafka"])
    assert story["lines_before"] and all(line["restore_epoch"] == "0" for line in story["lines_before"])
    assert before["feed"]["items"] and before["feed"]["restore_epoch"] == "0" == before["feed_header"]
    assert all(i["restore_epoch"] == "0" for i in before["feed"]["items"])
    # After it: the restore's id, on every record, line, page and item the restored hub gives.
    assert after["kafka"] and all(h["restore_epoch"] == epoch for h in after["kafka"])
    assert story["lines_after"] and all(line["restore_epoch"] == epoch for line in story["lines_after"])
    assert after["feed"]["items"] and after["feed"]["restore_epoch"] == epoch == after["feed_header"]
    assert all(i["restore_epoch"] == epoch for i in after["feed"]["items"])
    # The numbers the restore lost are a gap the epoch explains: never given again on either channel.
    lost_kafka = {int(h["event_number"]) for h in story["lost"]["kafka"]}
    assert lost_kafka and min(int(h["event_number"]) for h in after["kafka"]) > max(lost_kafka)
    lost_lines = [line for line in _lines(story["tmp"]) if line["restore_epoch"] == "0"][len(story["lines_before"]):]
    assert lost_lines and min(line["event_number"] for line in story["lines_after"]) > max(
        line["event_number"] for line in lost_lines)


def test_the_audit_chain_goes_on_from_the_backup_and_records_the_restore(
        story: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    db = story["tmp"] / "hub.db"
    epoch = story["restored"]["restore_epoch"]
    at_backup, displaced, now = story["chain_at_backup"], story["chain_displaced"], _chain(db)
    assert at_backup and len(displaced) > len(at_backup)  # entries written after the backup, then lost
    backup_seq, backup_hash = at_backup[-1][0], at_backup[-1][4]
    # The restored chain is the backup's up to its last entry, then goes on from it.
    assert now[:len(at_backup)] == at_backup and len(now) > len(at_backup)
    assert now[len(at_backup)][0] == backup_seq + 1 and now[len(at_backup)][3] == backup_hash
    assert now[len(at_backup)][4] != displaced[len(at_backup)][4]  # the same seq the displaced chain gave
    # ... and its next entry is the restore, naming the epoch and the backup's point.
    restore_entry = json.loads(now[len(at_backup)][2])
    assert restore_entry["source"] == "operator_actions"
    assert (restore_entry["client_id"], restore_entry["action"], restore_entry["target"]) == (ACTOR, ACTION, epoch)
    detail = restore_entry["detail"]
    assert detail["restore_epoch"] == epoch and detail["previous_restore_epoch"] == "0"
    assert detail["backup"]["audit_last_seq"] == backup_seq and detail["backup"]["audit_last_hash"] == backup_hash
    assert detail["displaced"]["audit_last_seq"] == displaced[-1][0] and detail["displaced"]["read"] is True
    assert story["restored"]["audit"] == {"backup_last_seq": backup_seq, "displaced_last_seq": displaced[-1][0]}
    # The entries after the restore (the restored hub's own) follow it; the whole chain verifies.
    assert any(json.loads(c)["source"] != "operator_actions" for _s, _n, c, _p, _h in now[len(at_backup) + 1:])
    code, out, err = _run(["audit", "verify"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] is True and result["entries_checked"] == len(now)
    # The restore's record is held by the chain like any other: gone, and verify says so.
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM operator_actions WHERE action = ?", (ACTION,))
    conn.close()
    code, out, _err = _run(["audit", "verify"], capsys)
    assert code == 2 and "operator_actions record" in out and "deleted" in out
