"""`s117hub backup` (hub/backup_cli.py): an online copy of the embedded store
taken while writers commit holds every change committed before it began and
passes SQLite's integrity check; the copy is 0600, never over an existing file
without --force; a PostgreSQL store is refused in one line; `--verify` says
whether the configured data key opens the copy (exit 2 when not) and whether
this code knows its schema. Real SQLite files, real concurrent writers."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from hub.backup_cli import copy_store, key_fingerprint
from hub.cli import main
from hub.crypto import DataProtector
from hub.store.db import create_engine, create_schema
from hub.store.key_check import check_data_key
from hub.domain.dates import england_day

NHS, GIVEN, FAMILY, BORN = "9434765919", "Ellery", "Quennell", "1971-03-14"


def _store(path: Path, key: bytes) -> None:
    """A hub store (every migration, the key record) holding one person (details encrypted)."""
    async def go() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await create_schema(engine)
            await check_data_key(engine, DataProtector(key))
        finally:
            await engine.dispose()

    asyncio.run(go())
    details = DataProtector(key).encrypt(json.dumps(
        {"nhs_number": NHS, "given_name": GIVEN, "family_name": FAMILY, "birth_date": BORN}).encode())
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO persons VALUES ('p-1', ?, ?, ?, ?)",
                     (DataProtector(key).index(NHS), details, now, now))


def _change(conn: sqlite3.Connection, n: int) -> None:
    today = england_day().isoformat()
    conn.execute("INSERT INTO register_changes (change_id, person_id, source, source_message_id, change_type, "
                 "effective_date, notified_on, recorded_on, canonical, correlation_id, received_at) "
                 "VALUES (?, 'p-1', 'trust', ?, 'detained', ?, ?, ?, '{}', 'c', ?)",
                 (f"change-{n}", f"msg-{n}", today, today, today, datetime.now(UTC).isoformat()))


class Writer(threading.Thread):
    """Commits one register change at a time to the store, as the hub's writer
    does (WAL, synchronous=FULL, BEGIN IMMEDIATE), until stopped; `committed`
    holds the numbers whose COMMIT returned."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.committed, self.stop = path, [], threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        n = 0
        while not self.stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            _change(conn, n)
            conn.execute("COMMIT")
            self.committed.append(n)
            n += 1
        conn.close()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bytes]:
    key = Fernet.generate_key()
    (tmp_path / "data.key").write_bytes(key)
    db = tmp_path / "hub.db"
    _store(db, key)
    for name in [k for k in os.environ if k.startswith("S117_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env of the project's
    monkeypatch.setenv("S117_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.setenv("S117_DATA_KEY_FILE", str(tmp_path / "data.key"))
    return db, key


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    return exited.value.code or 0, out, err


def _nothing_personal(*texts: str) -> None:
    for text in texts:
        for value in (NHS, GIVEN, FAMILY, BORN):
            assert value not in text
        assert "Traceback" not in text


def test_a_copy_taken_while_changes_are_committed_holds_every_change_committed_before_it(
        store: tuple[Path, bytes], tmp_path: Path) -> None:
    db, _key = store
    writer = Writer(db)
    writer.start()
    try:
        while len(writer.committed) < 200:  # a WAL not yet checkpointed: a `cp` of hub.db alone misses these
            time.sleep(0.01)
        before = set(writer.committed)  # committed before the copy began
        at_start = len(writer.committed)
        # One page a step, a pause after each: hundreds of steps, the writer committing between them.
        # (Without the copy's one read snapshot, each commit restarted the copy from page 1: never done.)
        copying = threading.Thread(target=copy_store, args=(db, tmp_path / "copy.db"),
                                   kwargs={"step_pages": 1, "pause": 0.002}, daemon=True)
        copying.start()
        copying.join(60)
        finished_while_writing = not copying.is_alive()
        during = len(writer.committed) - at_start
    finally:
        writer.stop.set()
        writer.join(10)
    copying.join(60)
    assert finished_while_writing, "the copy did not finish within 60 s while the writer went on committing"
    assert during > 0, "the writer committed while the copy was taken"
    with sqlite3.connect(f"file:{tmp_path / 'copy.db'}?mode=ro", uri=True) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("PRAGMA foreign_key_check").fetchall() == []
        held = {int(r[0].removeprefix("change-")) for r in copy.execute("SELECT change_id FROM register_changes")}
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file, no -wal needed
    assert before <= held, "every change committed before the copy began is in it"
    assert held == set(range(len(held))), "a snapshot: the changes up to one commit, no later one without an earlier"
    assert held <= set(writer.committed)
    assert not (tmp_path / "copy.db-wal").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.db")] == []  # no temporary left


def test_backup_prints_what_the_copy_needs_and_never_overwrites_without_force(
        store: tuple[Path, bytes], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db, key = store
    umask = os.umask(0o022)  # a shell's: the copy is 0600 all the same
    try:
        _backup_and_force(db, key, tmp_path, capsys)
    finally:
        os.umask(umask)


def _backup_and_force(db: Path, key: bytes, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "backups" / "hub-1.db"
    dest.parent.mkdir()
    code, out, err = _run(["backup", str(dest)], capsys)
    assert code == 0, err
    said = json.loads(out)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert said["bytes"] == dest.stat().st_size and said["integrity"] == "ok"
    assert said["schema"] == "current" and said["schema_revision"] == said["schema_head"]
    assert (said["people"], said["register_changes"], said["deliveries"]) == (1, 0, 0)
    assert said["key_record"] == "present" and said["data_key_opens"] is True
    assert said["data_key_fingerprint"] == key_fingerprint(key)
    assert key.decode() not in out + err
    _nothing_personal(out, err)

    with sqlite3.connect(db) as conn:  # the store moves on
        _change(conn, 1)
    before = dest.read_bytes()
    code, out, err = _run(["backup", str(dest)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "exists" in err and "--force" in err
    assert dest.read_bytes() == before  # untouched
    code, out, err = _run(["backup", "--force", str(dest)], capsys)
    assert code == 0, err
    assert json.loads(out)["register_changes"] == 1
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["hub-1.db"]

    code, out, err = _run(["backup", str(db)], capsys)  # over the store itself: never, --force or not
    assert code == 2 and "the store itself" in err
    code, out, err = _run(["backup", "--force", str(db)], capsys)
    assert code == 2 and "the store itself" in err


def test_a_postgresql_store_is_refused_in_one_line(store: tuple[Path, bytes], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # No S117_CANONICAL_BASE either (the hub would refuse to start): the backup still says why it cannot.
    monkeypatch.setenv("S117_DATABASE_URL", "postgresql+asyncpg://hub:secret@db.internal/s117")
    code, out, err = _run(["backup", str(tmp_path / "pg.db")], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "PostgreSQL" in err and "pg_dump" in err and "Traceback" not in err
    assert "secret" not in err  # the URL's password is not echoed
    assert not (tmp_path / "pg.db").exists()


def test_verify_says_whether_the_configured_key_opens_the_copy(
        store: tuple[Path, bytes], tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    db, key = store
    dest = tmp_path / "hub-1.db"
    assert _run(["backup", str(dest)], capsys)[0] == 0
    code, out, err = _run(["backup", "--verify", str(dest)], capsys)
    assert code == 0, err
    said = json.loads(out)
    assert said["restorable"] is True and said["data_key_opens"] is True and said["integrity"] == "ok"
    _nothing_personal(out, err)

    other = Fernet.generate_key()
    monkeypatch.setenv("S117_DATA_KEY", other.decode())
    code, out, err = _run(["backup", "--verify", str(dest)], capsys)
    assert code == 2
    said = json.loads(out)
    assert said["restorable"] is False and said["data_key_opens"] is False
    assert said["data_key_fingerprint"] == key_fingerprint(other) != key_fingerprint(key)
    assert "does not open" in err and "another key" in err
    assert other.decode() not in out + err and key.decode() not in out + err
    _nothing_personal(out, err)

    # No key at all (the key file missing): cannot be read, and no key file is made to say so.
    monkeypatch.delenv("S117_DATA_KEY")
    monkeypatch.setenv("S117_DATA_KEY_FILE", str(tmp_path / "elsewhere" / "data.key"))
    code, out, err = _run(["backup", "--verify", str(dest)], capsys)
    assert code == 2 and "no data key" in err
    assert not (tmp_path / "elsewhere").exists()


def test_verify_knows_a_schema_older_or_newer_than_the_code(store: tuple[Path, bytes], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "hub-1.db"
    assert _run(["backup", str(dest)], capsys)[0] == 0
    with sqlite3.connect(dest) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0031'")
    code, out, err = _run(["backup", "--verify", str(dest)], capsys)
    assert code == 0 and json.loads(out)["schema"] == "older" and "migrates it" in err
    with sqlite3.connect(dest) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    code, out, err = _run(["backup", "--verify", str(dest)], capsys)
    assert code == 2 and json.loads(out)["schema"] == "unknown" and "newer than this code" in err

    (tmp_path / "torn.db").write_bytes(dest.read_bytes()[:5000] + b"\x00" * 3000)
    code, out, err = _run(["backup", "--verify", str(tmp_path / "torn.db")], capsys)
    assert code == 2 and "Traceback" not in err
