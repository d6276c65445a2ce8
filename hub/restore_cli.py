"""`s117hub restore <backup>`: put a backup (`s117hub backup`) in place of the
embedded (SQLite) store, with the hub stopped, so that no event number or
position version the store had handed out is handed out again.

What it does, in order; it stops (exit 2, one line naming why) before
anything is changed if any step up to the move fails:

1. Refuses if the hub (or anything else) has the store open: every SQLite
   connection to a WAL store holds a shared lock on the `-shm` file's
   dead-man-switch byte while it is open, idle or not (SQLite's unix VFS);
   `in_use` tries an exclusive lock on that byte and lets it go at once. The
   hub has no lock or pid file of its own; this is the check the store itself
   offers, and it sees a hub on any process of this machine (not one on
   another machine over a network file system, where the store must not be).
2. Refuses a backup that `s117hub backup --verify` would (the same checks,
   hub/backup_cli.py: integrity, a schema this code knows, the configured
   data key opens it).
3. Reads, read-only, the store it displaces, if there is one and it opens:
   each subscription's last event number (its counter and its highest
   queued number), the highest position `version` the store gave, each
   council file subscription's last `EVENT_NO`, and its earlier restores; and
   what it holds that the backup does not (the lost-work report below).
4. Copies the backup beside the store under a temporary name (0600), migrates
   it to this code's schema (as the hub's start would), and in one transaction
   advances every such sequence past the displaced store's marks (each
   counter to at least the displaced one; the version floor and the file
   numbers in the restore's row, which the hub reads when it starts:
   hub/store/restores.py) and records the restore (`store_restores`: when,
   the backup's revision and counts, where the displaced store went, what was
   advanced) under a new restore id, the restore epoch subscribers are shown;
   and, in the same transaction, an operator action (actor `hub:restore`,
   action `store-restore`, target the epoch) that the audit chain takes as its
   next entry after the backup's last: it names the epoch, the backup's point
   (its chain's last entry, seq and hash, and its newest change's time) and
   where the displaced store's chain had got to, so a reader of `audit
   verify` knows that entries after the backup's point were lost with the
   displaced store (kept aside), not deleted from the chain. Then one
   self-contained file, fsync'd.
5. Moves the store's file and its `-wal` and `-shm` aside, to
   `<store>.displaced-<UTC time>` (with `-wal` / `-shm` after it, so that
   SQLite opening the displaced file applies its own WAL: nothing is deleted),
   and renames the prepared copy into place (atomic, directory fsync'd).

A displaced store that is missing or does not open (the usual reason to
restore) does not stop it: every sequence is advanced by `--margin` (default
1,000,000) past where the backup left it instead, and the JSON says
`numbers_may_repeat: true` and why: the hub cannot know how many numbers were
handed out after the backup, only that a subscription given more than the
margin since then would see numbers again. The epoch changes either way.

The lost-work report: what the displaced store holds that the restored one
does not, per source client: register changes (REST, FHIR, MLLP and council
file rows alike, by `source_message_id`), retractions, retractions reversed
(hub/unretractions.py: restored, the change is retracted again), council files (by
file id and SHA-256), quarantined input; and the subscriptions and API
clients made after the backup. Printed as counts only; the ids are written to
`<displaced>.lost.json` (0600) beside the displaced store, whose path is
printed: a source's message id is its own, but nothing stops a source from
using something personal as one. Nothing the command prints names a person.

PostgreSQL is refused (exit 2): restore it with its own tools (README).
Exit 0: restored; 2: refused or failed, one line on standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.backup_cli import Refused, _problems, _settings, inspect, sqlite_path
from hub.store.private_files import fsync_dir

DEFAULT_MARGIN = 1_000_000
# The audit chain's genesis hash (hub/audit.py GENESIS), written out: importing hub.audit here would load the
# metrics library with every `s117hub` command (hub/cli.py builds this parser), before `serve` can share the
# worker processes' metrics (hub/observability/multiproc.py). tests/unit/test_cli_imports.py keeps them equal.
GENESIS = "0" * 64
ACTOR, ACTION = "hub:restore", "store-restore"  # the restore's operator action (audited: hub/audit.py)
DMS_BYTE = 128  # SQLite's unix VFS: the -shm byte every open WAL connection holds a shared lock on


def in_use(store: Path) -> bool:
    """Whether another process has the SQLite store open (module docstring, step 1)."""
    import fcntl

    shm = store.with_name(store.name + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:  # no connection has the WAL store open (the last one to close removes it)
        return False
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, DMS_BYTE)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, DMS_BYTE)
        return False
    finally:
        os.close(fd)


@dataclass
class Marks:
    """The displaced store's high-water marks: what must never be handed out again."""
    event_numbers: dict[str, int] = field(default_factory=dict)  # subscription id -> last number given
    version: int = 0  # the highest position version given (or floor left by an earlier restore)
    export_event_no: dict[str, int] = field(default_factory=dict)  # file subscription id -> last EVENT_NO
    restores: list[tuple] = field(default_factory=list)  # its store_restores rows
    audit_head: tuple[int, str] | None = None  # its audit chain's last entry (seq, hash)


def _uri(path: Path) -> str:
    """A read-only SQLite URI of `path` (its `?`, `#` and `%` escaped)."""
    from urllib.parse import quote

    return f"file:{quote(str(path.resolve()))}?mode=ro"


def _ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(_uri(path), uri=True, timeout=5)
    conn.execute("PRAGMA query_only=ON")
    return conn


def _rows(conn: sqlite3.Connection, sql: str) -> list[tuple] | None:
    """The query's rows, or None where the store has no such table or column (an older revision)."""
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return None


def read_marks(conn: sqlite3.Connection) -> Marks:
    """The marks of the store `conn` reads (step 3); sqlite3.DatabaseError if it is not a readable hub store."""
    checked = conn.execute("PRAGMA quick_check").fetchall()
    if checked != [("ok",)]:
        raise sqlite3.DatabaseError(f"it fails SQLite's quick check ({len(checked)} problems)")
    conn.execute("SELECT version_num FROM alembic_version").fetchall()  # a hub store at all
    marks = Marks()
    for sid, n in (conn.execute("SELECT subscription_id, last_event_number FROM subscription_counters").fetchall()
                   + conn.execute("SELECT subscription_id, max(event_number) FROM deliveries "
                                  "WHERE event_number IS NOT NULL GROUP BY subscription_id").fetchall()):
        marks.event_numbers[sid] = max(marks.event_numbers.get(sid, 0), int(n or 0))
    marks.version = int(conn.execute("SELECT max(version) FROM recipient_views").fetchone()[0] or 0)
    for sid, n in _rows(conn, "SELECT e.subscription_id, max(i.event_no) FROM export_items i JOIN council_exports e "
                              "ON e.export_id = i.export_id WHERE e.subscription_id IS NOT NULL "
                              "GROUP BY e.subscription_id") or []:
        marks.export_event_no[sid] = int(n or 0)
    marks.audit_head = audit_head(conn)
    restores = _rows(conn, "SELECT restore_id, restored_at, backup_revision, backup, displaced, version_floor, "
                           "advanced FROM store_restores")
    for row in restores or []:  # what earlier restores left stands: their floors are marks too
        marks.restores.append(row)
        marks.version = max(marks.version, int(row[5] or 0))
        for sid, n in (json.loads(row[6] or "{}").get("export_event_no") or {}).items():
            marks.export_event_no[sid] = max(marks.export_event_no.get(sid, 0), int(n))
    return marks


def audit_head(conn: sqlite3.Connection) -> tuple[int, str] | None:
    """The store's audit chain's last entry (seq, hash); where none is left, what it starts after (a
    purge's anchor, else the genesis); None for a store without the chain's tables."""
    last = _rows(conn, "SELECT seq, entry_hash FROM audit_chain ORDER BY seq DESC LIMIT 1")
    if last is None:
        return None
    if last:
        return int(last[0][0]), str(last[0][1])
    anchor = _rows(conn, "SELECT last_id, anchor_hash FROM audit_cursors WHERE source = '(anchor)'")
    return (int(anchor[0][0]), str(anchor[0][1])) if anchor else (0, GENESIS)


def lost_work(conn: sqlite3.Connection) -> dict[str, Any]:
    """What the displaced store (`conn`'s main) holds and the backup (attached as `b`) lacks: ids by source."""
    names = {cid: {"name": name, "org_code": org}
             for cid, name, org in _rows(conn, "SELECT client_id, name, org_code FROM main.api_clients") or []}
    by_source: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    changes = _rows(conn, "SELECT d.source, d.source_message_id, d.channel, d.received_at FROM main.register_changes d "
                          "WHERE NOT EXISTS (SELECT 1 FROM b.register_changes r WHERE r.source = d.source "
                          "AND r.source_message_id = d.source_message_id) ORDER BY d.received_at")
    if changes is None:  # a store from before `channel`
        changes = [(s, m, None, at) for s, m, at in conn.execute(
            "SELECT d.source, d.source_message_id, d.received_at FROM main.register_changes d WHERE NOT EXISTS "
            "(SELECT 1 FROM b.register_changes r WHERE r.source = d.source AND r.source_message_id = "
            "d.source_message_id) ORDER BY d.received_at").fetchall()]
    for source, message_id, channel, at in changes:
        by_source[source]["register_changes"].append(
            {"source_message_id": message_id, "channel": channel, "received_at": at})
    for client, source, message_id, at in _rows(
            conn, "SELECT x.client_id, c.source, c.source_message_id, x.at FROM main.change_retractions x "
                  "JOIN main.register_changes c ON c.change_id = x.change_id WHERE NOT EXISTS "
                  "(SELECT 1 FROM b.change_retractions y WHERE y.change_id = x.change_id) ORDER BY x.at") or []:
        by_source[client]["retractions"].append(
            {"of_source": source, "of_source_message_id": message_id, "retracted_at": at})
    # A retraction reversed since the backup (hub/unretractions.py): restored, the change is retracted again.
    for client, source, message_id, at in _rows(
            conn, "SELECT x.client_id, c.source, c.source_message_id, x.at FROM main.change_retraction_reversals x "
                  "JOIN main.register_changes c ON c.change_id = x.change_id WHERE NOT EXISTS "
                  "(SELECT 1 FROM b.change_retraction_reversals y WHERE y.retraction_event_id = x.retraction_event_id) "
                  "ORDER BY x.at") or []:
        by_source[client]["retraction_reversals"].append(
            {"of_source": source, "of_source_message_id": message_id, "reinstated_at": at})
    for source, file_id, sha, fmt, rows, status, at in _rows(
            conn, "SELECT f.source, f.file_id, f.sha256, f.format, f.row_count, f.status, f.received_at "
                  "FROM main.file_receipts f WHERE NOT EXISTS (SELECT 1 FROM b.file_receipts g "
                  "WHERE g.file_id = f.file_id) ORDER BY f.received_at") or []:
        by_source[source]["council_files"].append(
            {"file_id": file_id, "sha256": sha, "format": fmt, "rows": rows, "status": status, "received_at": at})
    for source, channel, message_id, at in _rows(
            conn, "SELECT q.source, q.channel, q.source_message_id, q.received_at FROM main.quarantine q "
                  "WHERE NOT EXISTS (SELECT 1 FROM b.quarantine p WHERE p.quarantine_id = q.quarantine_id) "
                  "ORDER BY q.received_at") or []:
        by_source[source]["quarantined"].append({"source_message_id": message_id, "channel": channel,
                                                 "received_at": at})
    subs = [{"subscription_id": s, "org_code": o, "channel": c} for s, o, c in _rows(
        conn, "SELECT s.subscription_id, s.org_code, s.channel FROM main.subscriptions s WHERE NOT EXISTS "
              "(SELECT 1 FROM b.subscriptions t WHERE t.subscription_id = s.subscription_id)") or []]
    clients = [{"client_id": c, "name": n, "org_code": o} for c, n, o in _rows(
        conn, "SELECT a.client_id, a.name, a.org_code FROM main.api_clients a WHERE NOT EXISTS "
              "(SELECT 1 FROM b.api_clients z WHERE z.client_id = a.client_id)") or []]
    sources = [{"source": source, **names.get(source, {"name": None, "org_code": None}), **kinds}
               for source, kinds in sorted(by_source.items())]
    return {"sources": sources, "subscriptions": subs, "api_clients": clients}


def _counts(lost: dict[str, Any]) -> dict[str, Any]:
    """The lost-work report as printed: counts only."""
    kinds = ("register_changes", "retractions", "retraction_reversals", "council_files", "quarantined")
    return {"by_source": [{"source": s["source"], "name": s["name"], "org_code": s["org_code"],
                           **{k: len(s.get(k, [])) for k in kinds}} for s in lost["sources"]],
            "subscriptions_made_since": len(lost["subscriptions"]),
            "api_clients_made_since": len(lost["api_clients"])}


def _private_json(path: Path, value: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _migrate(path: Path) -> None:
    from hub.store.db import create_engine, create_schema

    async def go() -> None:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await create_schema(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(go())
    except Exception as exc:  # noqa: BLE001 - one line naming what, no traceback
        raise Refused(f"the copy could not be migrated to this code's schema ({type(exc).__name__}); "
                      "the store was not touched") from None


def advance(conn: sqlite3.Connection, marks: Marks | None, margin: int) -> dict[str, Any]:
    """In the restored store (`conn`, in its transaction): every subscription's counter past the displaced
    store's mark (`marks`; None: unknown, the store's own last number plus `margin`); the version floor and
    the council file numbers for the restore's row. What was advanced, for the row and the report."""
    counters = dict(conn.execute("SELECT subscription_id, last_event_number FROM subscription_counters").fetchall())
    for sid, n in conn.execute("SELECT subscription_id, max(event_number) FROM deliveries "
                               "WHERE event_number IS NOT NULL GROUP BY subscription_id").fetchall():
        counters[sid] = max(int(counters.get(sid) or 0), int(n or 0))
    subscriptions = [r[0] for r in conn.execute("SELECT subscription_id FROM subscriptions").fetchall()]
    event_numbers: dict[str, list[int]] = {}
    for sid in subscriptions:
        held = int(counters.get(sid) or 0)
        target = held + margin if marks is None else max(held, marks.event_numbers.get(sid, 0))
        if target == held:
            continue
        event_numbers[sid] = [held, target]
        if conn.execute("UPDATE subscription_counters SET last_event_number = ? WHERE subscription_id = ?",
                        (target, sid)).rowcount == 0:
            conn.execute("INSERT INTO subscription_counters (subscription_id, last_event_number) VALUES (?, ?)",
                         (sid, target))
    held_version = int(conn.execute("SELECT max(version) FROM recipient_views").fetchone()[0] or 0)
    earlier = conn.execute("SELECT max(version_floor) FROM store_restores").fetchone()[0] or 0
    version_floor = max(held_version + margin if marks is None else marks.version, int(earlier))
    exports: dict[str, int] = {}
    file_subs = [r[0] for r in conn.execute("SELECT subscription_id FROM council_file_subscriptions").fetchall()]
    held_nos = dict(conn.execute(
        "SELECT e.subscription_id, max(i.event_no) FROM export_items i JOIN council_exports e "
        "ON e.export_id = i.export_id WHERE e.subscription_id IS NOT NULL GROUP BY e.subscription_id").fetchall())
    for sid in file_subs:
        held = int(held_nos.get(sid) or 0)
        target = held + margin if marks is None else marks.export_event_no.get(sid, 0)
        if target > held:
            exports[sid] = target
    return {"event_numbers": event_numbers, "version_floor": version_floor, "export_event_no": exports,
            "margin": margin if marks is None else None}


def _copy_private(source: Path, dest: Path) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def _asides(store: Path, displaced: Path) -> list[tuple[Path, Path]]:
    """Each of the store's files (its -wal, -shm, -journal too) and where it is moved aside to."""
    return list(zip([store, *_sidecars(store)], [displaced, *_sidecars(displaced)]))


def restore(args: argparse.Namespace) -> None:
    code = 0
    tmp: Path | None = None
    try:
        s = _settings()
        store = Path(os.path.abspath(sqlite_path(s.database_url, must_exist=False)))
        backup = Path(os.path.abspath(args.backup))
        margin = args.margin
        if not backup.is_file():
            raise Refused(f"no backup file at {backup}")
        if not store.parent.is_dir():
            raise Refused(f"no directory {store.parent} for the store (S117_DATABASE_URL)")
        if store.exists() and os.path.samefile(store, backup):
            raise Refused("the backup is the store itself (S117_DATABASE_URL)")
        if in_use(store):
            raise Refused(f"the store {store} is open in another process (the hub is running?): stop every hub "
                          "process (serve, workers) first")
        found = inspect(backup, s.data_key, s.data_key_file)
        problems = _problems(found, found.key_fingerprint is not None)
        if problems:
            raise Refused(f"the backup cannot be restored here: {'; '.join(problems)}")

        # 3. The displaced store: its marks and what it holds that the backup lacks.
        marks: Marks | None = None
        lost: dict[str, Any] | None = None
        why_unread: str | None = None
        if not store.exists():
            why_unread = "there is no store at the configured path"
        else:
            try:
                conn = _ro(store)
            except sqlite3.Error as exc:
                conn, why_unread = None, f"it does not open ({type(exc).__name__}: {exc})"
            if conn is not None:
                try:
                    marks = read_marks(conn)
                except sqlite3.Error as exc:
                    why_unread = f"it does not open as a hub store ({type(exc).__name__}: {exc})"
                try:
                    if marks is not None:  # what it holds and the backup lacks (None: could not be told)
                        conn.execute("ATTACH DATABASE ? AS b", (_uri(backup),))
                        lost = lost_work(conn)
                except sqlite3.Error:
                    lost = None
                finally:
                    conn.close()
        b = _ro(backup)
        try:
            row = _rows(b, "SELECT max(received_at) FROM register_changes")
        finally:
            b.close()
        backup_last = row[0][0] if row else None

        # 4. The copy, migrated, advanced and recorded, beside the store.
        from hub.ids import uuid7

        now = datetime.now(UTC)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        displaced = store.with_name(f"{store.name}.displaced-{stamp}")
        n = 1
        while any(aside.exists() or aside.with_name(aside.name + ".lost.json").exists()
                  for _current, aside in _asides(store, displaced)):
            n += 1  # restored twice within a second
            displaced = store.with_name(f"{store.name}.displaced-{stamp}-{n}")
        tmp = store.with_name(f".{store.name}.restore-{os.getpid()}")
        for leftover in (tmp, *_sidecars(tmp)):
            leftover.unlink(missing_ok=True)
        _copy_private(backup, tmp)
        _migrate(tmp)
        epoch = uuid7()
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            advanced = advance(conn, marks, margin)
            for earlier in (marks.restores if marks is not None else []):
                conn.execute("INSERT OR IGNORE INTO store_restores (restore_id, restored_at, backup_revision, backup, "
                             "displaced, version_floor, advanced) VALUES (?, ?, ?, ?, ?, ?, ?)", earlier)
            previous = conn.execute("SELECT restore_id FROM store_restores ORDER BY restored_at DESC, restore_id "
                                    "DESC LIMIT 1").fetchone()
            backup_record = {"file": str(backup), "bytes": backup.stat().st_size, "people": found.people,
                             "register_changes": found.register_changes, "deliveries": found.deliveries,
                             "last_change_received_at": backup_last}
            displaced_record = {"moved_to": [str(aside) for current, aside in _asides(store, displaced)
                                             if current.exists()],
                                "read": marks is not None, "why_not_read": why_unread}
            restored_at = now.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
            conn.execute("INSERT INTO store_restores (restore_id, restored_at, backup_revision, backup, displaced, "
                         "version_floor, advanced) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (epoch, restored_at, found.revision, json.dumps(backup_record),
                          json.dumps(displaced_record), advanced["version_floor"], json.dumps(advanced)))
            # The restore itself, audited: the chain's next entry after the backup's last (module docstring).
            at_backup = audit_head(conn) or (0, GENESIS)
            displaced_head = marks.audit_head if marks is not None else None
            conn.execute("INSERT INTO operator_actions (at, client_id, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                         (restored_at, ACTOR, ACTION, epoch, json.dumps({
                             "restore_epoch": epoch,
                             "previous_restore_epoch": previous[0] if previous else "0",
                             "backup": {"file": str(backup), "schema_revision": found.revision,
                                        "last_change_received_at": backup_last,
                                        "audit_last_seq": at_backup[0], "audit_last_hash": at_backup[1]},
                             "displaced": {"moved_to": displaced_record["moved_to"], "read": marks is not None,
                                           "audit_last_seq": displaced_head[0] if displaced_head else None,
                                           "audit_last_hash": displaced_head[1] if displaced_head else None},
                             "numbers_may_repeat": marks is None,
                             "meaning": "the store was put back to this backup: audit entries after the "
                                        "backup's audit_last_seq were lost with the displaced store (kept "
                                        "aside), not deleted from this chain"})))
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            checked = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
        if checked != [("ok",)]:
            raise Refused("the restored copy failed its check after migration; the store was not touched")
        fsync_dir(tmp)  # its bytes durable before it is renamed into place (os.fsync of the file itself)

        # 5. The displaced store aside (nothing deleted), the copy in its place.
        if in_use(store):
            raise Refused(f"the store {store} was opened by another process meanwhile: stop the hub and run "
                          "the restore again; the store was not touched")
        moved: list[tuple[Path, Path]] = []
        try:
            for current, aside in _asides(store, displaced):
                if current.exists():  # an orphan -wal too: SQLite would apply it to the restored file
                    os.rename(current, aside)
                    moved.append((current, aside))
            os.rename(tmp, store)
            tmp = None
        except OSError:
            for current, aside in reversed(moved):  # put back what was moved: the store as it was
                os.rename(aside, current)
            raise
        fsync_dir(store.parent)

        lost_file = None
        if lost is not None:
            lost_file = displaced.with_name(displaced.name + ".lost.json")
            _private_json(lost_file, {"restore_epoch": epoch, "backup": str(backup),
                                      "backup_last_change_received_at": backup_last, **lost})
        report: dict[str, Any] = {
            "restored": str(store), "backup": str(backup), "restore_epoch": epoch,
            "previous_restore_epoch": previous[0] if previous else "0",
            "backup_schema_revision": found.revision, "schema_head": found.head,
            "backup_counts": {"people": found.people, "register_changes": found.register_changes,
                              "deliveries": found.deliveries},
            "backup_last_change_received_at": backup_last,
            "displaced": {"moved_to": [str(aside) for _c, aside in moved], "read": marks is not None,
                          "why_not_read": why_unread},
            "advanced": {"subscriptions": len(advanced["event_numbers"]),
                         "event_numbers_skipped": sum(b - a for a, b in advanced["event_numbers"].values()),
                         "version_floor": advanced["version_floor"],
                         "council_file_subscriptions": len(advanced["export_event_no"]),
                         "margin": advanced["margin"]},
            "numbers_may_repeat": marks is None,
            # The audit chain goes on from the backup's last entry; the restore is its next (module docstring).
            "audit": {"backup_last_seq": at_backup[0],
                      "displaced_last_seq": displaced_head[0] if displaced_head else None},
            "lost": None if lost is None else {**_counts(lost), "ids_file": str(lost_file)},
        }
        if marks is not None and lost is None:
            report["lost_not_listed"] = "the displaced store's records could not be compared with the backup's"
        if marks is None:
            report["warning"] = (
                f"the displaced store could not be read ({why_unread}): the event numbers, position versions "
                f"and council file numbers it handed out after the backup are not known; each was advanced by "
                f"{margin} past the backup's, so a subscription given more than {margin} numbers since the "
                "backup would be given some again. Nothing lost can be listed: ask every source to send again "
                f"what it sent since {backup_last or 'the backup was taken'}")
        print(json.dumps(report, indent=2))
        if marks is None:
            print(f"restore: {report['warning']}", file=sys.stderr)
    except Refused as exc:
        print(f"restore: {exc}", file=sys.stderr)
        code = 2
    except (OSError, sqlite3.Error) as exc:
        print(f"restore: failed ({type(exc).__name__}: {getattr(exc, 'strerror', None) or exc})", file=sys.stderr)
        code = 2
    finally:
        if tmp is not None:
            for leftover in (tmp, *_sidecars(tmp)):
                leftover.unlink(missing_ok=True)
    sys.exit(code)


def _margin(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("a whole number, 1 or more")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="put a backup in place of the embedded (SQLite) store, the hub stopped: "
                                       "no event number or version is given twice; lists what was lost")
    p.add_argument("backup", help="the backup file (s117hub backup); checked as --verify checks it")
    p.add_argument("--margin", type=_margin, default=DEFAULT_MARGIN,
                   help="how far every sequence is advanced past the backup's when the displaced store cannot "
                        f"be read (default {DEFAULT_MARGIN:,})")
    p.set_defaults(func=restore)
