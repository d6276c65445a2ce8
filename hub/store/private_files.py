"""Files holding the hub's data are the hub's alone: data files 0600, their
directories 0700, whatever the process umask (embedded mode is often run
from a shell with umask 022; the systemd unit sets UMask=0077 as well).

The SQLite database is created empty here, 0600, before SQLite opens it:
SQLite gives its -wal and -shm files the database file's permissions. A
database, -wal or -shm left wider by an older hub is narrowed at start-up,
and so are the export directories (`narrow_export_dirs`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Make `path` and any missing parents with mode 0700 whatever the umask
    (`mkdir(parents=True)` gives the parents it makes the umask's mode, 0755
    under umask 022); narrow `path` to 0700 if it exists wider and is the
    hub's own. Directories above `path` that already exist are not the hub's
    to change, nor is `path` when it is shared (`shared_dir`: a sticky
    directory such as /tmp, or one another user owns): a database or key file
    put straight into /tmp must not close /tmp to every other user (the
    files themselves are 0600 all the same)."""
    missing = []
    at = path
    while not at.is_dir() and at.parent != at:
        missing.append(at)
        at = at.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made meanwhile (another hub process): made 0700 there
        os.chmod(d, 0o700)  # whatever the umask
    st = path.stat()
    if st.st_mode & 0o077 and not shared_dir(st):
        os.chmod(path, 0o700)


def shared_dir(st: os.stat_result) -> bool:
    """Whether a directory is shared rather than the hub's: sticky (/tmp,
    /var/tmp: anyone may make files there) or owned by another user."""
    return bool(st.st_mode & stat.S_ISVTX) or st.st_uid != os.geteuid()


def narrow_export_dirs(export_dir: Path) -> None:
    """At start: narrow to 0700 the directories the hub makes for exports,
    `export_dir`, each `<org>` in it and each `<org>/outbound`, where an older
    hub left them wider (it made `export_dir` and `<org>` 0755). Nothing is
    made; a symbolic link inside `export_dir` is not followed; files were always
    made 0600."""
    if not export_dir.is_dir():
        return
    st = export_dir.stat()
    if st.st_mode & 0o077 and not shared_dir(st):
        os.chmod(export_dir, 0o700)
    with os.scandir(export_dir) as entries:
        orgs = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    for org in orgs:
        for d in (org, org / "outbound"):
            try:
                st = d.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o077:
                os.chmod(d, 0o700)


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


def fsync_dir(path: Path) -> None:
    """Make a directory's entries durable (a file made or renamed in it: its name survives a power cut);
    given a file, its bytes (the same `fsync` of it, opened read-only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
