"""File export channel: each FHIR message of a `file` subscription is appended
as one NDJSON line to `<export_dir>/<org_code>/<YYYY-MM-DD>.ndjson` (the day in
England it is written on: hub.domain.dates.england_day), for the council to
collect over SFTP.

* The day is England's, not UTC's: a council's job that collects "yesterday's
  file" at 00:30 finds it complete all year. By UTC days, from late March to
  late October the lines written between midnight and 01:00 went into the day
  before's file after a 00:30 collection had taken it (and, were the file
  moved away, into a new file of the same name).

* Line: `{"event_number", "event_id", "message_id", "event_type", "restore_epoch", "message": <the FHIR
  message Bundle>}` (`event_number`: the subscription's gap-free sequence, hub.delivery.queue;
  `restore_epoch`: "0" until the store is restored from a backup, then that restore's id, as the
  webhook's `S117-Restore-Epoch`: hub/store/restores.py, README "Backup and restore").
* Order: per subscription, oldest first, one line after the other.
* Durability: the line is written, flushed and fsync'd (and the directory
  fsync'd when the file is new) before the delivery is marked delivered. A
  crash between the fsync and the mark writes the line again on restart, so a
  line may repeat: consumers de-duplicate by `event_id` (at least once). A
  line torn by a crash mid-write is cut off before the next append.
* Permissions: directories 0700 (any the hub makes, whatever the umask, and
  narrowed at start if wider), files 0600 (they carry personal data). The
  mode is the mask of any ACL, so a group or ACL entry set by the operator
  reads nothing: the SFTP account that collects them acts as the hub's user
  (e.g. a chrooted internal-sftp login) and should move or delete files once
  collected.
* Several hub instances: the lease (hub.delivery.leases) means each line is
  written by one instance, into that instance's export_dir; instances that
  share a store must share export_dir too.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.crypto import DataProtector
from hub.delivery.leases import RetryPolicy, SubscriptionDeliverer
from hub.domain.dates import england_day
from hub.observability.logging import get_logger
from hub.store.private_files import fsync_dir, narrow_export_dirs, private_dir
from hub.store.restores import NO_RESTORE

log = get_logger("hub.file_export")

CHANNEL = "file"
_ORG = re.compile(r"^[A-Za-z0-9]{1,16}$")  # an org code becomes a directory name: nothing else


def export_path(export_dir: Path, org_code: str, when: datetime) -> Path:
    if not _ORG.match(org_code):
        raise ValueError("org_code unfit for a directory name")
    return export_dir / org_code / f"{england_day(when).isoformat()}.ndjson"


def ndjson_line(event_id: str, message_id: str, event_type: str, message: bytes,
                event_number: int | None = None, restore_epoch: str = NO_RESTORE) -> bytes:
    # The message is stored as compact JSON already: splice it in unparsed, unless it spans lines.
    fragment: Any = orjson.Fragment(message) if b"\n" not in message and b"\r" not in message else orjson.loads(message)
    return orjson.dumps({"event_number": event_number, "event_id": event_id, "message_id": message_id, "event_type": event_type,
                         "restore_epoch": restore_epoch, "message": fragment}) + b"\n"


def _mkdirs(org_dir: Path) -> None:
    """export_dir and the organisation's directory: made 0700 if missing (and
    any missing parent), whatever the umask, and narrowed if wider when the
    organisation's is made (hub.store.private_files; at start, every one)."""
    if not org_dir.is_dir():
        private_dir(org_dir.parent)
        private_dir(org_dir)
        fsync_dir(org_dir.parent)


def _cut_torn_tail(fd: int) -> None:
    """If the file does not end with a newline, a crash tore its last line:
    cut the file back to its last complete line (that line was never marked
    delivered, so it is written again)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            os.ftruncate(fd, start + i + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def append_durably(path: Path, line: bytes) -> None:
    """Append `line` to `path` (created 0600, parents 0700) and fsync it.

    The organisation's directory is where its SFTP account collects (and
    moves, deletes) files, acting as the hub's user: neither the directory
    nor the day's file is followed if it is a symbolic link, and the file must
    be a regular file. A link planted there (to another organisation's file,
    or anywhere the hub may write) would otherwise have the hub append this
    organisation's messages to it. Refused: OSError, the delivery retried."""
    _mkdirs(path.parent)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            new = not stat.S_ISREG(os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            new = True
        # O_NOFOLLOW: a symbolic link as the file, dangling or not, is ELOOP (never created through).
        fd = os.open(path.name, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600,
                     dir_fd=dir_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{path.name} is not a regular file")
            if new:
                os.fchmod(fd, 0o600)
            _cut_torn_tail(fd)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class FileExportDeliverer(SubscriptionDeliverer):
    channel = CHANNEL
    handler = "file-export"
    _deadline = 1.0  # an fsync'd append: well inside the lease
    # The store's restore epoch, set when the hub starts (hub/bootstrap.py): each line's `restore_epoch`.
    restore_epoch = NO_RESTORE

    def __init__(
        self, engine: AsyncEngine, protector: DataProtector, export_dir: Path, *,
        backoff_base: float = 1.0, backoff_cap: float = 300.0, max_attempts: int = 0, lease_seconds: float = 60.0,
        per_subscription_batch: int = 100, max_in_flight: int = 100,
    ) -> None:
        self._engine = engine
        self._protector = protector
        self._dir = Path(export_dir)
        narrow_export_dirs(self._dir)  # at start: what an older hub left wider
        self._policy = RetryPolicy(backoff_base, backoff_cap, max_attempts, lease_seconds)
        self._batch = per_subscription_batch
        self._locks: dict[Path, asyncio.Lock] = {}
        self._max_in_flight = max_in_flight

    async def _send(self, row: Any) -> str | None:
        # Leased by hub.delivery.leases.claim_batch before this.
        try:
            path = export_path(self._dir, row.org_code, datetime.now(UTC))
            line = ndjson_line(row.event_id, row.message_id, row.event_type, self._protector.decrypt(row.payload),
                               row.event_number, self.restore_epoch)
            # One writer per file at a time within this process (two subscriptions
            # of one organisation would share a file); the write runs off the loop.
            async with self._locks.setdefault(path, asyncio.Lock()):
                await asyncio.to_thread(append_durably, path, line)
        except (OSError, ValueError) as exc:
            return type(exc).__name__
        return None

    def _outcome(self, row: Any, error: str | None, wait: float | None) -> None:
        attempts = row.attempts + 1
        if error is None:
            log.info("file export written", delivery_id=row.delivery_id, event_id=row.event_id,
                     recipient=row.org_code, attempt=attempts, correlation_id=row.correlation_id)
        elif wait is None:
            log.error("file export dead-lettered", delivery_id=row.delivery_id, recipient=row.org_code,
                      attempt=attempts, error_kind=error, correlation_id=row.correlation_id)
        else:
            log.warning("file export failed, will retry", delivery_id=row.delivery_id, recipient=row.org_code,
                        attempt=attempts, error_kind=error, next_attempt_in=round(wait, 2),
                        correlation_id=row.correlation_id)
