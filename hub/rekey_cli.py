"""`s117hub rotate-data-key`: re-encrypt the store under a new data key, the hub stopped.

The new key is read from a file (`--new-key-file`, 0600, as the hub's own key file) or from the
environment variable S117_NEW_DATA_KEY, never from the command line (the process list shows it); the
store's current key is the configured one (S117_DATA_KEY, else the file S117_DATA_KEY_FILE), as for the
hub. Neither key is ever printed: only their fingerprints (as `s117hub backup` prints them: a one-way hash).

Refused (exit 2, one line, nothing changed) while anything else has the store open: an embedded (SQLite)
store whose `-shm` dead-man-switch byte another connection holds (hub/restore_cli.py `in_use`: the hub,
idle or not, on this machine); a PostgreSQL database another session is connected to (`pg_stat_activity`:
the hub's pooled connections stay open while it runs). Refused too for a new key that is not a data key or
is the current one, and for a store holding a keyed hash whose NHS number it does not hold (hub/store/rekey.py):
a reconciliation row or difference kept before migration 0041 for someone not on the register is one, and
`--forget-unmatched-reconciliation` lets the rotation go on, each such hash replaced by a value that matches
no one (the rows and differences kept; counted in the audited operator action and the report).

The rotation itself is hub/store/rekey.py: chunk by chunk, each its own transaction; killed part way, the
hub refuses to start ("a data key rotation is in progress") until the same command, with the same new key
and the old one still configured, finishes it. Then configure the new key (S117_DATA_KEY in the secret
store, or replace the key file with the new one) and start the hub: the old key is refused as any other.
Backups taken before need the old key: keep it with them.

Exit 0: rotated (or the store was under the new key already); 2: refused; 1: stopped part way (run again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

NEW_KEY_ENV = "S117_NEW_DATA_KEY"
NEW_KEY_FILE = "--new-key-file"
FORGET_OPTION = "--forget-unmatched-reconciliation"  # as hub/store/rekey.py names it in its refusal


class Refused(Exception):
    """One line (exit 2): why nothing was done."""


def new_key(key_file: Path | None, environ: dict[str, str] | os._Environ[str]) -> tuple[bytes, str]:
    """The new key and where it came from (the option's or the variable's name, for messages)."""
    from hub.crypto import DataProtector

    from_env = environ.get(NEW_KEY_ENV)
    if key_file is not None and from_env:
        raise Refused(f"give the new key one way: {NEW_KEY_FILE} or {NEW_KEY_ENV}, not both")
    if key_file is not None:
        try:
            key, where = key_file.read_bytes().strip(), NEW_KEY_FILE
        except OSError as exc:
            raise Refused(f"{NEW_KEY_FILE}: cannot read the file ({type(exc).__name__})") from None
    elif from_env:
        key, where = from_env.strip().encode(), NEW_KEY_ENV
    else:
        raise Refused(f"give the new data key in a file ({NEW_KEY_FILE} <file>) or in the environment variable "
                      f"{NEW_KEY_ENV}: never on the command line, where the process list shows it")
    try:
        DataProtector(key)
    except (ValueError, TypeError):
        raise Refused(f"{where}: not a data key: 32 random bytes in URL-safe base64 (44 characters), as "
                      "cryptography's Fernet.generate_key() makes") from None
    return key, where


APPLICATION = "s117hub rotate-data-key"  # this command's own PostgreSQL sessions (application_name)


def _named(engine: Any) -> None:
    """PostgreSQL: each of this command's sessions named `APPLICATION`, so the look for others skips them."""
    from sqlalchemy import event

    @event.listens_for(engine.sync_engine, "connect")
    def name(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET application_name = '{APPLICATION}'")
        cursor.close()


async def _sessions_elsewhere(engine: Any) -> int:
    """PostgreSQL: the other client sessions connected to this database (a running hub holds its pool's)."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        n = (await conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND application_name IS DISTINCT FROM :me"), {"me": APPLICATION})).scalar_one()
        await conn.rollback()
    return int(n)


async def _run(args: argparse.Namespace, s: Any, begun: list[bool]) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    from hub.backup_cli import Refused as KeyRefused
    from hub.backup_cli import _configured_key
    from hub.cli import NO_STORE, schema_missing, sqlite_store_missing
    from hub.crypto import DataProtector
    from hub.restore_cli import in_use
    from hub.store.db import create_engine, create_schema
    from hub.store.rekey import RotationRefused, SameKey, rotate

    key, where = new_key(args.new_key_file, os.environ)
    try:
        old = _configured_key(s.data_key, s.data_key_file)
    except KeyRefused as exc:
        raise Refused(str(exc)) from None
    if old is None:
        raise Refused("no data key is configured (S117_DATA_KEY, or the file S117_DATA_KEY_FILE, which does not "
                      "exist): configure the key the store is under now; nothing was changed")
    try:
        DataProtector(old)
    except (ValueError, TypeError):
        raise Refused("the data key (S117_DATA_KEY, else the file S117_DATA_KEY_FILE) is not a valid key") from None
    url = make_url(s.database_url)
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite_store_missing(s.database_url) or (sqlite and url.database in (None, "", ":memory:")):
        raise Refused(NO_STORE)
    if sqlite and in_use(Path(url.database)):
        raise Refused(f"the store {url.database} is open in another process (the hub is running?): stop every "
                      "hub process (serve, workers) first; nothing was changed")
    engine = create_engine(s.database_url)
    if not sqlite:
        _named(engine)
    try:
        if await schema_missing(engine):
            raise Refused(NO_STORE)
        async def busy() -> str | None:
            """Why another process has the store open (the hub running?), or None."""
            if sqlite:
                opened = in_use(Path(url.database))  # this process's own connections are not seen (fcntl)
                what = f"the store {url.database} is open in another process" if opened else None
            else:
                others = await _sessions_elsewhere(engine)
                what = f"{others} other session(s) are connected to the database" if others else None
            return None if what is None else (f"{what} (the hub is running?): stop every hub process (serve, "
                                              "workers) and close any other session first; nothing was changed")

        if not sqlite and (why := await busy()) is not None:
            raise Refused(why)
        await create_schema(engine)
        try:
            result = await rotate(engine, old, key, audit_key_set=bool(s.audit_key), chunk=args.chunk,
                                  begun=lambda: begun.append(True), busy=busy,
                                  forget_unmatched=args.forget_unmatched_reconciliation)
        except SameKey as exc:
            raise Refused(f"{where}: {exc}") from None
        except RotationRefused as exc:
            raise Refused(str(exc)) from None
    finally:
        await engine.dispose()
    if result.already:
        return {"rotated": False, "already": True, "old_key_fingerprint": result.old_fingerprint,
                "new_key_fingerprint": result.new_fingerprint,
                "detail": "the store is under the new key already: nothing to do"}
    return {
        "rotated": True, "resumed": result.resumed, "old_key_fingerprint": result.old_fingerprint,
        "new_key_fingerprint": result.new_fingerprint, "rewritten": result.counts, "seconds": result.seconds,
        **({"forgotten_unmatched_reconciliation": result.forgotten} if result.forgotten is not None else {}),
        "audit_checkpoints": ("S117_AUDIT_KEY is set: signed under it, unchanged" if s.audit_key
                              else "signed again under a key derived from the new data key"),
        "next": ("configure the new key (S117_DATA_KEY in the secret store, or replace the file S117_DATA_KEY_FILE "
                 f"with the new key, 0600) and start the hub; the old key (fingerprint {result.old_fingerprint}) "
                 "is refused from now on"),
        "backups": (f"backups taken before now are under the old key (fingerprint {result.old_fingerprint}) "
                    "and need it to be restored: keep it with them (apart from them, in the secret store) until "
                    "the last expires; take a new backup now"),
    }


def rotate_data_key(args: argparse.Namespace) -> None:
    from hub.settings import get_settings
    from hub.store.key_check import DataKeyMismatch

    s = get_settings()  # a setting that does not validate: hub/cli.py says which (exit 2)
    begun: list[bool] = []
    code = 0
    try:
        report = asyncio.run(_run(args, s, begun))
        print(json.dumps(report, indent=2))
        if report.get("rotated"):
            print(f"rotate-data-key: {report['backups']}", file=sys.stderr)
    except (Refused, DataKeyMismatch) as exc:
        print(f"rotate-data-key: {exc}", file=sys.stderr)
        code = 2
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - one line, no traceback (it may quote data)
        if not begun:
            print(f"rotate-data-key: failed ({type(exc).__name__}); nothing was changed", file=sys.stderr)
            code = 2
        else:
            print(f"rotate-data-key: stopped part way ({type(exc).__name__}): the hub refuses to start until this "
                  "command is run again with the same new key (the old one still configured) to finish it",
                  file=sys.stderr)
            code = 1
    sys.exit(code)


def _chunk(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("a whole number of rows, 1 or more")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rotate-data-key", help="re-encrypt the store under a new data key, the hub stopped "
                                               f"(the new key from {NEW_KEY_FILE} or {NEW_KEY_ENV})")
    p.add_argument(NEW_KEY_FILE, type=Path, default=None,
                   help=f"a file holding the new key (else the environment variable {NEW_KEY_ENV}); never the key "
                        "itself on the command line")
    p.add_argument("--chunk", type=_chunk, default=None,
                   help="rows a transaction in every table (default: each table's own, 1 to 1,000)")
    p.add_argument(FORGET_OPTION, action="store_true",
                   help="reconciliation rows and differences kept before migration 0041 for someone not on the "
                        "register hold only a keyed hash, which no key can recompute: replace each by a value "
                        "that matches no one (the rows and differences kept, counted in the audited operator "
                        "action) instead of refusing the rotation")
    p.set_defaults(func=rotate_data_key)
