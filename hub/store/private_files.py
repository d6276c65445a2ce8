"""Files holding the hub's data are the hub's alone: data files 0600, their
directories 0700, whatever the process umask (embedded mode is often run
from a shell with umask 022; the systemd unit sets UMask=0077 as well).

The SQLite database is created empty here, 0600, before SQLite opens it:
SQLite gives its -wal and -shm files the database file's permissions. A
database, -wal or -shm left wider by an older hub is narrowed at start-up."""

from __future__ import annotations

import os
from pathlib import Path

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Make `path` (and missing parents) with mode 0700; narrow it if it exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if missing; narrow it to 0600 if wider."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def private_sqlite(database: Path) -> None:
    private_dir(database.parent)
    private_file(database)
    for suffix in SQLITE_SIDE_FILES:
        side = database.with_name(database.name + suffix)
        if side.exists() and side.stat().st_mode & 0o077:
            os.chmod(side, 0o600)
