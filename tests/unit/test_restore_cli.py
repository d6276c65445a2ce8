"""`s117hub restore` (hub/restore_cli.py) on real SQLite files, in process:
a displaced store that cannot be read still restores, every sequence advanced
by the margin and the JSON saying numbers may repeat; a second restore
changes the epoch again, keeps the first one's record and floors; council
file `EVENT_NO`s go on past the displaced store's; a backup that is not a
store, a missing backup and a PostgreSQL store are refused in one line."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from adapters.council_files.outbound import OUT_LAYOUTS, read_export
from hub.api.app import create_app
from hub.backup_cli import copy_store
from hub.cli import main
from hub.clients import add_client
from hub.delivery.queue import create_counter, next_event_number
from hub.exports import ExportService
from hub.store.db import create_engine
from hub.store.restores import restore_state
from hub.store.schema import council_file_subscriptions, store_restores
from tests.conftest import test_settings as settings_for
from tests.support import detention
from tests.unit.test_backup_cli import _store

SUB = "sub-1"


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return exited.value.code or 0, out, err


def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db: Path) -> None:
    for name in [k for k in os.environ if k.startswith("S117_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env of the project's
    monkeypatch.setenv("S117_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.setenv("S117_DATA_KEY_FILE", str(tmp_path / "data.key"))


def _engine_run(db: Path, work) -> object:  # noqa: ANN001
    async def go() -> object:
        engine = create_engine(f"sqlite+aiosqlite:///{db}")
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _subscribed(db: Path, numbers: int, version: int) -> None:
    """A webhook subscription that was given `numbers` event numbers, and one view told at `version`."""

    async def work(engine) -> None:  # noqa: ANN001
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO subscriptions (subscription_id, org_code, client_id, channel, url, active, created_at, "
                "pipeline) VALUES (?, 'E06000060', 'c', 'webhook', 'https://x.test/h', 1, ?, 1)",
                (SUB, datetime.now(UTC).isoformat()))
            await create_counter(conn, SUB)
            for _ in range(numbers):
                await next_event_number(conn, SUB)

    _engine_run(db, work)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO recipient_views VALUES ('p-1', 'E06000060', ?, '{}', 'e', ?)",
                     (version, datetime.now(UTC).isoformat()))
    conn.close()


def _next_number(db: Path) -> int:
    async def work(engine) -> int:  # noqa: ANN001
        async with engine.begin() as conn:
            return await next_event_number(conn, SUB)

    return _engine_run(db, work)


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = Fernet.generate_key()
    (tmp_path / "data.key").write_bytes(key)
    db = tmp_path / "hub.db"
    _store(db, key)
    _subscribed(db, numbers=5, version=3)
    gc.collect()  # the set-up's connections closed, the WAL checkpointed: the file as it stays
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    _env(monkeypatch, tmp_path, db)
    return db


def test_an_unreadable_displaced_store_is_kept_and_every_sequence_advanced_by_the_margin(
        live: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    backup = tmp_path / "backup.db"
    copy_store(live, backup)
    for side in ("-wal", "-shm"):
        Path(f"{live}{side}").unlink(missing_ok=True)
    live.write_bytes(b"this was the store; the disk went bad" * 100)  # what is displaced cannot be read
    code, out, err = _run(["restore", "--margin", "1000", str(backup)], capsys)
    assert code == 0, err
    said = json.loads(out)
    assert said["numbers_may_repeat"] is True and said["displaced"]["read"] is False
    assert said["advanced"]["margin"] == 1000 and said["lost"] is None
    assert "given some again" in said["warning"] and "1000" in said["warning"] and "restore:" in err
    (moved,) = said["displaced"]["moved_to"]
    assert Path(moved).read_bytes().startswith(b"this was the store")  # kept, never deleted
    # Numbers and versions go on past the backup's by the margin; the epoch is the restore's.
    assert _next_number(live) == 5 + 1000 + 1
    state = _engine_run(live, restore_state)
    assert state.version_floor == 3 + 1000 and state.epoch == said["restore_epoch"] != "0"


def test_a_missing_store_is_restored_and_says_numbers_may_repeat(
        live: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    backup = tmp_path / "backup.db"
    copy_store(live, backup)
    live.unlink()
    Path(f"{live}-shm").unlink(missing_ok=True)
    Path(f"{live}-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(60))  # an orphan WAL beside no store
    code, out, err = _run(["restore", str(backup)], capsys)
    assert code == 0, err
    said = json.loads(out)
    assert said["numbers_may_repeat"] is True and "no store" in said["warning"]
    # Moved aside too, never left beside the restored file for SQLite to apply to it.
    (moved,) = said["displaced"]["moved_to"]
    assert moved.endswith("-wal") and Path(moved).exists() and not Path(f"{live}-wal").exists()
    assert said["advanced"]["margin"] == 1_000_000
    assert _next_number(live) == 5 + 1_000_000 + 1


def test_a_second_restore_changes_the_epoch_again_and_keeps_the_first_ones_record(
        live: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    backup = tmp_path / "backup.db"
    copy_store(live, backup)
    _engine_run(live, lambda e: _take(e, 4))  # given 6-9 after the backup
    code, out, err = _run(["restore", str(backup)], capsys)
    assert code == 0, err
    first = json.loads(out)
    assert first["numbers_may_repeat"] is False and first["advanced"]["event_numbers_skipped"] == 4
    assert _next_number(live) == 10  # not 6: 6-9 were given by the displaced store
    code, out, err = _run(["restore", str(backup)], capsys)  # the same backup again (the 10 is lost again)
    assert code == 0, err
    second = json.loads(out)
    assert second["restore_epoch"] not in ("0", first["restore_epoch"])
    assert second["previous_restore_epoch"] == first["restore_epoch"]
    assert _next_number(live) == 11

    async def restores(engine):  # noqa: ANN001, ANN202
        async with engine.connect() as conn:
            return (await conn.execute(select(store_restores.c.restore_id))).scalars().all()

    assert set(_engine_run(live, restores)) == {first["restore_epoch"], second["restore_epoch"]}
    assert _engine_run(live, restore_state).epoch == second["restore_epoch"]
    assert len(list(tmp_path.glob("hub.db.displaced-*.lost.json"))) == 2


async def _take(engine, n: int) -> None:  # noqa: ANN001
    async with engine.begin() as conn:
        for _ in range(n):
            await next_event_number(conn, SUB)


def test_refusals_name_why_in_one_line(live: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    before = live.read_bytes()
    code, _out, err = _run(["restore", str(tmp_path / "none.db")], capsys)
    assert code == 2 and "no backup file" in err and err.count("\n") == 1
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 500)
    code, _out, err = _run(["restore", str(junk)], capsys)
    assert code == 2 and "not a readable SQLite database" in err and err.count("\n") == 1
    code, _out, err = _run(["restore", str(live)], capsys)
    assert code == 2 and "the store itself" in err
    monkeypatch.setenv("S117_DATABASE_URL", "postgresql+asyncpg://hub@db/hub")
    code, _out, err = _run(["restore", str(junk)], capsys)
    assert code == 2 and "PostgreSQL" in err
    assert live.read_bytes() == before and not list(tmp_path.glob("hub.db.displaced-*"))


async def _export_day(tmp: Path, at: datetime, nhs: str, run: str, first: bool) -> tuple[str, list[int], dict]:
    """The hub in process on `tmp`/hub.db: `nhs`'s changes, then the council's daily file built at `at`;
    the file subscription, its EVENT_NOs, and the floors the hub started with."""
    import httpx

    app = create_app(settings_for(tmp))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            if first:
                trust = (await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write"]))[1]
                council = (await add_client(hub.engine, "Bucks", "E06000060", "council",
                                            ["subscriptions:write"]))[1]
                (tmp / "keys.json").write_text(json.dumps([trust, council]))
                r = await http.post("/v1/subscriptions", headers={"X-API-Key": council}, json={
                    "channel": "council-file", "layout": "swift_csv", "schedule": "daily 02:00"})
                assert r.status_code == 201, r.text
                async with hub.engine.begin() as conn:
                    await conn.execute(council_file_subscriptions.update().values(
                        created_at=datetime(2026, 11, 30, 12, tzinfo=UTC)))
            trust, council = json.loads((tmp / "keys.json").read_text())
            for change in detention(nhs, run):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": trust}, json=change)
                assert r.status_code == 202, r.text
            while await hub.dispatcher.run_once():
                pass
            exporter = ExportService(hub.engine, hub.ref, hub.agreements, hub.sharing, hub.protector,
                                     tmp / "exports", 36.0, now=lambda: at, ticks=lambda: at.timestamp())
            exporter.event_no_floors = hub.exports.event_no_floors  # as the hub's own (hub/bootstrap.py)
            await exporter.run_once()
            r = await http.get("/v1/exports?state=ready", headers={"X-API-Key": council})
            (made,) = [e for e in r.json()["items"] if e["created_at"].startswith(at.date().isoformat())]
            rows = read_export((tmp / "exports" / "E06000060" / "outbound" / made["file_name"]).read_bytes(),
                               OUT_LAYOUTS["swift_csv"])
            sid = (await http.get("/v1/subscriptions", headers={"X-API-Key": council})).json()["items"][0][
                "subscription_id"]
            return sid, [int(r["EVENT_NO"]) for r in rows], dict(hub.exports.event_no_floors)


def test_council_file_numbers_go_on_past_the_displaced_stores(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = tmp_path / "hub"
    tmp.mkdir()
    _env(monkeypatch, tmp_path, tmp / "hub.db")
    monkeypatch.setenv("S117_DATA_KEY_FILE", str(tmp / "data.key"))
    _sid, day1, _ = asyncio.run(_export_day(tmp, datetime(2026, 12, 1, 2, 5, tzinfo=UTC), "9991100016", "a", True))
    backup = tmp_path / "backup.db"
    copy_store(tmp / "hub.db", backup)
    sid, day2, _ = asyncio.run(_export_day(tmp, datetime(2026, 12, 2, 2, 5, tzinfo=UTC), "9991100032", "b", False))
    assert day2[0] == day1[-1] + 1  # numbered on, as before
    code, out, err = _run(["restore", str(backup)], capsys)
    assert code == 0, err
    assert json.loads(out)["advanced"]["council_file_subscriptions"] == 1
    _sid, day3, floors = asyncio.run(_export_day(tmp, datetime(2026, 12, 3, 2, 5, tzinfo=UTC), "9991100059", "c",
                                                 False))
    assert floors == {sid: day2[-1]}
    assert day3 and day3[0] == day2[-1] + 1, (day1, day2, day3)  # not day1[-1] + 1: those went out on day 2


async def _corrections_made(tmp: Path, steps: list[tuple[str, str]]) -> dict[str, dict]:
    """The hub in process on `tmp`/hub.db (made on the first call: two people's changes, the trust's key
    kept in `tmp`/keys.json); then each step (`retraction` or `retraction/reversal`, a change's source
    message id) as the trust asks it. The changes' ids by source message id, and each step's answer."""
    import httpx

    app = create_app(settings_for(tmp))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            if not (tmp / "keys.json").exists():
                client_id, trust = await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write"])
                ids = {}
                for nhs, run in (("9991100016", "rv-a"), ("9991100032", "rv-b")):
                    for change in detention(nhs, run):
                        r = await http.post("/v1/register-changes", headers={"X-API-Key": trust}, json=change)
                        assert r.status_code == 202, r.text
                        ids[change["source_message_id"]] = r.json()["change_id"]
                (tmp / "keys.json").write_text(json.dumps({"trust": trust, "client_id": client_id, "ids": ids}))
            kept = json.loads((tmp / "keys.json").read_text())
            answers = {}
            for n, (path, message_id) in enumerate(steps):
                r = await http.post(f"/v1/register-changes/{kept['ids'][message_id]}/{path}",
                                    headers={"X-API-Key": kept["trust"]}, json={"reason": f"{PRIVATE} {n}"})
                assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
                answers[f"{n}"] = r.json()
            while await hub.dispatcher.run_once():
                pass
            return {"ids": kept["ids"], "client_id": kept["client_id"], **answers}


def _second(at: str) -> str:
    """A time to the second, however written (the answer's ISO 8601 with an offset, the store's UTC text)."""
    t = datetime.fromisoformat(at)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


PRIVATE = "Joan Smith's record, not Jane's"  # a reason naming someone: never in the report


def test_retractions_and_their_reversals_since_the_backup_are_listed_to_send_again(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each retraction and each reversal of one the displaced store holds and the backup lacks, by the
    client that made it (ids and times: neither reason): A's discharge, retracted before the backup, then
    reinstated (that reversal lost: restored, A's discharge is retracted again) and retracted again (lost
    too: the same change, another retraction); B's discharge retracted and the retraction reversed, both
    since the backup. Failed before: no reversal was listed, nor A's second retraction or B's (one
    reversed since), so the trust would send again only what leaves A's discharge on the register."""
    tmp = tmp_path / "hub"
    tmp.mkdir()
    _env(monkeypatch, tmp_path, tmp / "hub.db")
    monkeypatch.setenv("S117_DATA_KEY_FILE", str(tmp / "data.key"))
    before = asyncio.run(_corrections_made(tmp, [("retraction", "rv-a-2")]))
    backup = tmp_path / "backup.db"
    copy_store(tmp / "hub.db", backup)
    since = asyncio.run(_corrections_made(tmp, [("retraction/reversal", "rv-a-2"), ("retraction", "rv-a-2"),
                                               ("retraction", "rv-b-2"), ("retraction/reversal", "rv-b-2")]))
    code, out, err = _run(["restore", str(backup)], capsys)
    assert code == 0, err
    said = json.loads(out)
    assert PRIVATE not in out + err
    (source,) = said["lost"]["by_source"]
    assert (source["register_changes"], source["retractions"], source["retraction_reversals"]) == (0, 2, 2), source
    lost_text = Path(said["lost"]["ids_file"]).read_text()
    assert PRIVATE not in lost_text
    (listed,) = json.loads(lost_text)["sources"]
    assert listed["source"] == since["client_id"]
    assert [(r["of_source_message_id"], _second(r["retracted_at"])) for r in listed["retractions"]] == \
        [("rv-a-2", _second(since["1"]["retracted_at"])), ("rv-b-2", _second(since["2"]["retracted_at"]))]
    assert [(r["of_source_message_id"], _second(r["retracted_at"]), _second(r["reinstated_at"]))
            for r in listed["retraction_reversals"]] == \
        [("rv-a-2", _second(before["0"]["retracted_at"]), _second(since["0"]["reinstated_at"])),
         ("rv-b-2", _second(since["2"]["retracted_at"]), _second(since["3"]["reinstated_at"]))]
    assert all(set(r) == {"of_source", "of_source_message_id", "retracted_at", "reinstated_at"}
               for r in listed["retraction_reversals"])


def test_a_retraction_reversed_since_the_backup_is_listed_as_lost_work(tmp_path: Path) -> None:
    """A change retracted when the backup was taken, its retraction reversed since (hub/unretractions.py):
    restored, the change is retracted again, so the reversal is work the restore lost and the report says so,
    under the client that reversed it, naming the change by its source's message id (never the reason).
    Failed before: the report listed retractions only, and a reversal lost left the change retracted unsaid."""
    from hub.restore_cli import _counts, lost_work
    from tests.unit.test_backup_cli import _change

    key = Fernet.generate_key()
    backup, displaced = tmp_path / "backup.db", tmp_path / "hub.db"
    _store(backup, key)
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(backup) as conn:
        _change(conn, 1)
        conn.execute("INSERT INTO change_retractions (change_id, person_id, client_id, org_code, reason, "
                     "correlation_id, event_id, at) VALUES ('change-1', 'p-1', 'trust', 'RNU', x'00', 'c-r', "
                     "'e-r', ?)", (now,))
    conn.close()
    copy = sqlite3.connect(displaced)
    with copy:
        sqlite3.connect(backup).backup(copy)
    with copy:  # since the backup: the retraction reversed
        copy.execute("DELETE FROM change_retractions WHERE change_id = 'change-1'")
        copy.execute("INSERT INTO change_retraction_reversals (retraction_event_id, change_id, person_id, retraction, "
                     "retraction_reason, client_id, org_code, reason, correlation_id, event_id, at) VALUES "
                     "('e-r', 'change-1', 'p-1', '{}', x'00', 'trust-2', 'RNU', x'01', 'c-u', 'e-u', ?)", (now,))
    copy.execute("ATTACH DATABASE ? AS b", (str(backup),))
    lost = lost_work(copy)
    copy.close()
    [source] = lost["sources"]
    assert source["source"] == "trust-2"
    assert [(r["of_source"], r["of_source_message_id"]) for r in source["retraction_reversals"]] == \
        [("trust", "msg-1")]
    assert _counts(lost)["by_source"][0]["retraction_reversals"] == 1
