"""`s117hub backup <dest>`: an online, consistent copy of the embedded (SQLite)
store while the hub runs; `s117hub backup --verify <file>`: can this copy be
restored, with this code and this data key?

Copying `hub.db` with `cp` while the hub runs is not a backup: in WAL mode the
committed changes not yet checkpointed are in `hub.db-wal`, and a copy taken
mid-checkpoint is torn. This takes SQLite's online backup API (`sqlite3.Connection.backup`)
from one read snapshot: the source connection holds a read transaction for
the whole copy, so the copy is the database exactly as it stood when the
backup began (every change committed before it, none after), while the hub's
writers go on committing to the WAL meanwhile (a WAL reader blocks no writer;
the WAL is not checkpointed past the snapshot until the copy ends, so it grows
by what is written meanwhile). Without the held snapshot every write by the
hub restarted SQLite's paged backup from its first page, and under steady
writes it never finished. The pages are copied a step at a time with a short
pause between steps, so the copy does not take the disk from the hub.

The copy is written under a temporary name beside the destination (0600),
checked (`PRAGMA integrity_check`), switched out of WAL mode (one
self-contained file), fsync'd and only then given its name; an existing
destination is refused unless `--force`. What it prints names no person:
the size, the schema revision, counts, and the data key's fingerprint (a
one-way hash, never the key) with whether that key opens the store's key
record (hub/store/key_check.py). The copy is unreadable without the data key
it was written under: keep that key apart from the copies (a secret store),
and both to restore.

PostgreSQL is refused (exit 2): its backups are pg_dump, or pg_basebackup with
WAL archiving for point-in-time recovery.

Exit 0: done (verified); 2: refused or failed, one line on standard error naming why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.store.private_files import fsync_dir

# Pages copied a step, and the pause after each step: about 4 MB a step at 4 KB
# pages, so a 1 GB store is some 250 steps and 2.5 s of pauses.
STEP_PAGES = 1024
STEP_PAUSE_SECONDS = 0.01
KEY_FINGERPRINT_CONTEXT = b"s117hub data key fingerprint v1:"


class Refused(Exception):
    """The backup or check cannot go on: the one line printed (exit 2)."""


def key_fingerprint(key: bytes) -> str:
    """A short one-way fingerprint of a data key, to tell keys apart by (label the key's
    entry in the secret store with it). SHA-256 under its own context, not the look-up
    index key's (hub/crypto.py), truncated to 64 bits: it gives nothing of the key."""
    digest = hashlib.sha256(KEY_FINGERPRINT_CONTEXT + key.strip()).hexdigest()[:16]
    return ":".join(digest[i:i + 4] for i in range(0, 16, 4))


def sqlite_path(database_url: str, *, must_exist: bool = True) -> Path:
    """The store's file from `S117_DATABASE_URL`, or `Refused` naming why there is none to copy
    (`must_exist` False: the file need not be there, as for a restore)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except ArgumentError:
        raise Refused("S117_DATABASE_URL is not a database URL") from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        raise Refused("the store is PostgreSQL (S117_DATABASE_URL): back it up with pg_dump, or "
                      "pg_basebackup with WAL archiving for point-in-time recovery; this command "
                      "copies the embedded SQLite store only")
    if backend != "sqlite":
        raise Refused(f"S117_DATABASE_URL names a {backend} store; this command copies the embedded SQLite store only")
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise Refused("S117_DATABASE_URL names no SQLite file (in memory, or a file: URI): nothing to copy")
    path = Path(url.database)
    if must_exist and not path.is_file():
        raise Refused(f"no store at {path} (S117_DATABASE_URL)")
    return path


def copy_store(source: Path, dest: Path, *, force: bool = False, step_pages: int = STEP_PAGES,
               pause: float = STEP_PAUSE_SECONDS) -> None:
    """Copy the SQLite store `source` to `dest` online, as it stood when the copy began
    (see the module's doc); `Refused` if `dest` exists (unless `force`) or the copy fails."""
    dest = Path(os.path.abspath(dest))
    if dest.is_dir():
        raise Refused(f"{dest} is a directory: give the backup's file name")
    if not dest.parent.is_dir():
        raise Refused(f"no directory {dest.parent} for the backup")
    if dest.exists() and os.path.samefile(dest, source):
        raise Refused("the destination is the store itself")
    if dest.exists() and not force:
        raise Refused(f"{dest} exists: give another name, or --force to replace it")
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
        leftover.unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # 0600 whatever the umask
    try:
        src = sqlite3.connect(source, timeout=30, isolation_level=None)
        try:
            src.execute("PRAGMA busy_timeout=30000")
            # One read snapshot for the whole copy (WAL: no writer waits for it). Without it, the
            # hub's next commit would restart the paged copy from page 1, for ever under load.
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchall()
            out = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(out, pages=step_pages, progress=lambda *_: time.sleep(pause))
                src.execute("COMMIT")
                found = out.execute("PRAGMA integrity_check").fetchall()
                if found != [("ok",)]:
                    raise Refused(f"the copy failed its integrity check ({len(found)} problems); nothing was kept")
                out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            finally:
                out.close()
        finally:
            src.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)  # never over a file made meanwhile
            except FileExistsError:
                raise Refused(f"{dest} exists: give another name, or --force to replace it") from None
            tmp.unlink()
        fsync_dir(dest.parent)
    except sqlite3.Error as exc:
        raise Refused(f"the copy failed: {type(exc).__name__}: {exc}; nothing was kept") from None
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + "-journal").unlink(missing_ok=True)


def _configured_key(data_key: str | None, key_file: Path) -> bytes | None:
    """The data key the settings give, without making a key file (DataProtector.from_settings
    would make one where there is none); None if there is none."""
    if data_key:
        return data_key.encode()
    try:
        return key_file.read_bytes().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Refused(f"cannot read the data key file S117_DATA_KEY_FILE ({type(exc).__name__})") from None


@dataclass
class Found:
    integrity: str
    revision: str | None
    head: str
    revision_state: str  # current, older (migrated on start), unknown (a newer hub's), none
    people: int | None
    register_changes: int | None
    deliveries: int | None
    key_record: str  # present, none (a store from before the record: checked on what it holds)
    key_fingerprint: str | None  # the configured key's
    key_opens: bool | None  # None: nothing in the store to prove a key on

    def report(self) -> dict[str, Any]:
        return {"integrity": self.integrity, "schema_revision": self.revision, "schema_head": self.head,
                "schema": self.revision_state, "people": self.people,
                "register_changes": self.register_changes, "deliveries": self.deliveries,
                "key_record": self.key_record, "data_key_fingerprint": self.key_fingerprint,
                "data_key_opens": self.key_opens}


def _sql(query: Any) -> str:
    from sqlalchemy.dialects import sqlite

    return str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))


def _count(conn: sqlite3.Connection, table: str) -> int | None:
    try:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    except sqlite3.OperationalError:  # no such table (a store of an old revision)
        return None


def inspect(path: Path, data_key: str | None, key_file: Path, *, quick: bool = False) -> Found:
    """Open `path` read-only and say what it is: integrity, schema revision against the code's
    head, counts, and whether the configured data key opens what the store was written under
    (the store's key record, else, for a store from before it, what it holds encrypted:
    hub/store/key_check.py's own queries)."""
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    from hub.crypto import DataProtector
    from hub.store.db import MIGRATIONS
    from hub.store.key_check import _HELD, _TOKEN, _opens

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise Refused(f"cannot open {path} read-only ({type(exc).__name__})") from None
    try:
        try:
            checked = conn.execute(f"PRAGMA {'quick_check' if quick else 'integrity_check'}").fetchall()
        except sqlite3.DatabaseError as exc:
            raise Refused(f"{path} is not a readable SQLite database ({exc})") from None
        integrity = "ok" if checked == [("ok",)] else f"{len(checked)} problems"
        try:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            revision = None
        revision = revision[0] if revision else None
        if revision is None:
            state = "none"
        elif revision == head:
            state = "current"
        else:
            try:
                ScriptDirectory(str(MIGRATIONS)).get_revision(revision)
                state = "older"
            except CommandError:
                state = "unknown"
        token = held = None
        try:
            row = conn.execute(_sql(_TOKEN)).fetchone()
            token = bytes(row[0]) if row else None
        except sqlite3.OperationalError:
            pass
        if token is None:
            for _what, query in _HELD:
                try:
                    row = conn.execute(_sql(query)).fetchone()
                except sqlite3.OperationalError:
                    continue
                if row is not None:
                    held = bytes(row[0])
                    break
        key = _configured_key(data_key, key_file)
        fingerprint = opens = None
        if key is not None:
            fingerprint = key_fingerprint(key)
            try:
                protector = DataProtector(key)
            except (ValueError, TypeError):
                raise Refused("the data key (S117_DATA_KEY, else the file S117_DATA_KEY_FILE) is not a "
                              "valid key") from None
            if token is not None:
                opens = _opens(protector, token)
            elif held is not None:
                try:
                    protector.decrypt(held)
                    opens = True
                except ValueError:
                    opens = False
        return Found(integrity, revision, head, state, _count(conn, "persons"), _count(conn, "register_changes"),
                     _count(conn, "deliveries"), "present" if token is not None else "none", fingerprint,
                     opens if (token is not None or held is not None) else None)
    finally:
        conn.close()


def _problems(found: Found, key_given: bool) -> list[str]:
    """Why the copy cannot be restored with this code and this key (empty: it can)."""
    out = []
    if found.integrity != "ok":
        out.append(f"it fails SQLite's integrity check ({found.integrity})")
    if found.revision_state == "none":
        out.append("it holds no schema revision (not a store of this hub)")
    elif found.revision_state == "unknown":
        out.append(f"its schema revision {found.revision} is newer than this code's ({found.head}): "
                   "restore it with the hub version that wrote it")
    if not key_given:
        out.append("no data key is configured (S117_DATA_KEY, or the file S117_DATA_KEY_FILE, which does not "
                   "exist): it cannot be read without the key it was written under")
    elif found.key_opens is False:
        out.append(f"the configured data key (fingerprint {found.key_fingerprint}) does not open it: it was "
                   "written under another key; restore it with that key")
    return out


def _settings() -> Any:
    """Only the settings a copy needs (the store, the data key), from the same S117_* variables and
    .env as the hub's (hub/settings.py), their defaults the hub's: a setting the hub would refuse
    for another reason (a production store without S117_CANONICAL_BASE, MLLP) stops no backup."""
    from pydantic_settings import BaseSettings, SettingsConfigDict

    from hub.settings import Settings

    fields = Settings.model_fields

    class StoreSettings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="S117_", env_file=".env", extra="ignore")
        database_url: str = fields["database_url"].default
        data_key: str | None = fields["data_key"].default
        data_key_file: Path = fields["data_key_file"].default

    try:
        return StoreSettings()
    except Exception as exc:  # noqa: BLE001 - one line naming what, no traceback
        raise Refused(f"the settings are not valid ({type(exc).__name__})") from None


def backup(args: argparse.Namespace) -> None:
    code = 0
    try:
        s = _settings()
        if args.verify is not None and args.dest is not None:
            raise Refused("give either the backup's file name or --verify <file>, not both")
        if args.verify is not None:
            if not Path(args.verify).is_file():
                raise Refused(f"no backup file at {args.verify}")
            found = inspect(Path(args.verify), s.data_key, s.data_key_file, quick=args.quick)
            problems = _problems(found, found.key_fingerprint is not None)
            print(json.dumps({"backup": str(args.verify), "bytes": Path(args.verify).stat().st_size,
                              **found.report(), "restorable": not problems}, indent=2))
            for problem in problems:
                print(f"backup --verify: cannot be restored here: {problem}", file=sys.stderr)
            if found.revision_state == "older" and not problems:
                print(f"backup --verify: schema {found.revision} is older than this code's {found.head}: the hub "
                      "migrates it when it starts on it", file=sys.stderr)
            code = 2 if problems else 0
        else:
            if args.dest is None:
                raise Refused("give the backup's file name (s117hub backup <dest>), or --verify <file>")
            source = sqlite_path(s.database_url)
            started = time.monotonic()
            copy_store(source, Path(args.dest), force=args.force, step_pages=args.step_pages)
            dest = Path(os.path.abspath(args.dest))
            try:
                found = inspect(dest, s.data_key, s.data_key_file, quick=True)
            except Refused as exc:
                raise Refused(f"written to {dest}, but it could not be read back: {exc}") from None
            print(json.dumps({"backup": str(dest), "bytes": dest.stat().st_size,
                              "seconds": round(time.monotonic() - started, 2), **found.report()}, indent=2))
            if found.key_opens is False or found.key_fingerprint is None:
                print("backup: written, but the configured data key (none, or another) does not open it: it needs "
                      "the key the store was written under; `s117hub backup --verify <file>` with that key "
                      "configured confirms it", file=sys.stderr)
    except Refused as exc:
        print(f"backup: {exc}", file=sys.stderr)
        code = 2
    except OSError as exc:  # the destination's disk, permissions: one line, no traceback
        print(f"backup: failed ({type(exc).__name__}: {exc.strerror or exc}); nothing was kept", file=sys.stderr)
        code = 2
    sys.exit(code)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("a whole number of pages, 1 or more")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="copy the embedded (SQLite) store while the hub runs; "
                                      "--verify checks a copy can be restored with this key")
    p.add_argument("dest", nargs="?", help="the backup file to write (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing backup file")
    p.add_argument("--step-pages", type=_positive, default=STEP_PAGES,
                   help=f"pages copied a step, a {STEP_PAUSE_SECONDS * 1000:g} ms pause after each (default {STEP_PAGES})")
    p.add_argument("--verify", metavar="FILE", help="check a backup: integrity, schema revision, the data key")
    p.add_argument("--quick", action="store_true", help="with --verify: PRAGMA quick_check, not integrity_check")
    p.set_defaults(func=backup)
