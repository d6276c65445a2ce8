"""Council register extracts: files a council case system can import, in the
published outbound layouts (adapters/council_files/outbound.py).

- A **delta** file holds the events queued for a `council-file` subscription
  since its last file, one row each, numbered gap-free across files
  (`EVENT_NO`), with the person's current position for that council.
- A **full** extract holds every person the council is or was responsible
  for, coordinates, is host to, or was told of, with their current position.
- Columns a council's agreement does not grant are empty, never omitted.
- The agreements asked are those in force when the file is written: a
  delivery they no longer allow is `held` (a `denied` disclosure), as on
  every other channel, and a full extract for an organisation no agreement
  names any more is not written (state `withheld`).
- A file is a disclosure of every person it lists: the transaction that
  publishes it (makes it `ready`) records one allowed read for each in
  `access_decisions` (channel `export`, the groups their rows carried, the
  agreements in force, correlation id the export's id), a page at a time.
  The groups its columns were filled under are kept with it
  (`council_exports.field_groups`): a download the agreement in force no
  longer grants them all is refused (hub/api/exports.py).

Writing is atomic and restart-safe: the export row and the deliveries it
takes are recorded first (state `building`), the file is written under a
temporary name, fsync'd and renamed, with its `.sha256` manifest beside it,
and only then is the export `ready` and its deliveries delivered. A hub that
dies while building builds the same file again (same rows, same numbers, same
name) on restart, so no event is lost or repeated between files.

One builder at a time: a build first claims the export (`builder`), so the
hub's worker and an operator's `s117hub export` beside it (perhaps on another
machine) never build the same file at once, and a builder holding an
out-of-date view of the row (read before another built it) does not start
again on a file already ready or acknowledged.

The claim is a heartbeat, not a deadline compared across machines: no
builder ever compares its clock with a time another machine wrote, so a
machine whose clock is ahead (or behind) cannot take over a live claim.
While it builds, the holder renews its claim from a side task (an asyncio
task beside the build, every quarter of `BUILD_LEASE`, whether or not rows
are coming: a row source stalled on a slow query keeps its claim), and each
renewal writes a new value into `builder_until` (its own clock's time plus
the lease, made strictly greater than the value before, so it changes even
if that clock stood still or stepped back; it is shown to operators as the
holder's own estimate, and compared by nobody). Another builder that finds
the export claimed notes the (`builder`, `builder_until`) it saw and when,
on its *own* monotonic clock; it takes the export over only once it has seen
that same pair unchanged for `BUILD_LEASE` of its own time, and then only
if the row still holds that pair (a compare-and-set in one UPDATE, the row
lock on PostgreSQL, the write lock on SQLite), so a renewal that lands
first wins. A builder that died stops renewing and is taken over
`BUILD_LEASE` after another builder first sees its claim (so after a
restart, up to `BUILD_LEASE` after the new worker's first poll). The same
on SQLite and PostgreSQL: plain reads, equality and an UPDATE, no database
clock. A renewal that finds the claim gone (taken over: the holder was
stalled for longer than the lease, its event loop blocked or the database
out of reach) makes the build give way at its next row, and in any case
the file is published only in the transaction that makes the export ready
while the claim is still this builder's.

Files go to `<export_dir>/<org_code>/outbound/` (directories 0700, files
0600). The council collects them over SFTP and acknowledges a file by moving
it (or a copy) into `outbound/ack/`, or with POST /v1/exports/{id}/ack; an
unacknowledged file is listed in the console and raises an alert after
`export_ack_alert_hours`.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import tempfile
from time import monotonic
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.council_files.outbound import (
    COLUMNS,
    FULL_EXTRACT_CODE,
    OUT_LAYOUTS,
    ExportWriter,
    OutLayout,
    event_code,
    row_values,
)
from hub.ids import uuid4
from hub.access import record_decision
from hub.codec import from_jsonable
from hub.crypto import DataProtector
from hub.delivery.queue import hold_disallowed
from hub.domain.access import Rule
from hub.domain.agreements import AgreementBook
from hub.domain.model import RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.reconciliation import position_for
from hub.domain.rules import evaluate
from hub.domain.views import roles_of, undetermined_bodies
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.reconciliation import PAGE, _hub_people
from hub.sharing import DisclosureCheck, SharingAgreements
from hub.store.private_files import narrow_export_dirs, private_dir
from hub.store.db import snapshot
from hub.store.schema import (
    bus_messages,
    council_exports,
    council_file_subscriptions,
    deliveries,
    disclosures,
    export_items,
    persons,
    reconciliation_rows,
    reconciliation_snapshots,
    not_retracted,
    register_changes,
    subscriptions,
)
from hub.domain.dates import england_day

log = get_logger("hub.exports")
CHANNEL = "council-file"
# How long another builder must see a claim on an export unrenewed, on its own monotonic clock, before
# it takes the export over (the holder renews every quarter of this while it builds): a builder that
# died is taken over after this. Read at each use (tests shorten it).
BUILD_LEASE = timedelta(minutes=2)
MODES = ("delta", "full")
LONDON = ZoneInfo("Europe/London")
SCHEDULE = re.compile(r"^daily (?P<h>[01]\d|2[0-3]):(?P<m>[0-5]\d)$")
_ORG = re.compile(r"^[A-Za-z0-9]{1,16}$")
# A delta row's key for the field groups its message was rendered with (not a column).
GROUPS_KEY = "_field_groups"
# A row's key for the hub person it is about (not a column): the file's audit rows name them.
PERSON_KEY = "_person_id"
# Every field group a council file's columns can carry (the same for every layout): a file built
# before its groups were recorded (migration 0033) is taken as built with all of them.
LAYOUT_GROUPS = frozenset(c.group for c in COLUMNS if c.group)
# The client named in the audit rows of a file no key asked for (one written before 0033).
EXPORTER = "hub:council-file-export"


def schedule_problem(schedule: str) -> str | None:
    return None if SCHEDULE.match(schedule) else "must be 'daily HH:MM' (UK time, 24-hour clock)"


def last_due(schedule: str, now: datetime) -> datetime:
    """The latest scheduled run at or before `now` (UK local time, DST-aware)."""
    m = SCHEDULE.match(schedule)
    assert m, schedule
    local = now.astimezone(LONDON)
    at = datetime.combine(local.date(), time(int(m["h"]), int(m["m"])), tzinfo=LONDON)
    if at > local:
        at = datetime.combine(local.date() - timedelta(days=1), time(int(m["h"]), int(m["m"])), tzinfo=LONDON)
    return at.astimezone(UTC)


def outbound_dir(export_dir: Path, org_code: str) -> Path:
    if not _ORG.match(org_code):
        raise ValueError("org_code unfit for a directory name")
    return export_dir / org_code / "outbound"


# `<export_dir>/<org>/outbound/` (and its `ack/`) is where the council's SFTP
# account collects, moves and deletes files, acting as the hub's user: anything
# in it may have been put there by the council. Nothing there is followed if it
# is a symbolic link: not `outbound` or `ack`, not a file the hub writes (its
# `.part` included), reads back for a download, or looks for in `ack/`; the
# files must be regular files. A link planted there (to another council's file,
# the hub's database or data key) would otherwise have the hub truncate and
# overwrite its target with this council's extract, stream the target to this
# council's key as its download, or take it for an acknowledgement.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class NotFollowed(OSError):
    """A symbolic link (or something not a directory / regular file) where the hub expected its own."""


def _open_dir(parent_fd: int, name: str, create: bool) -> int:
    """`name` in `parent_fd` as a directory fd, never through a link; made 0700 when `create` and
    missing, narrowed to 0700 if wider (through the fd: nothing else's mode is touched)."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            pass  # made meanwhile (another hub process)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:  # ELOOP (a link) or ENOTDIR (a file)
        raise NotFollowed(f"{name} is not a directory of the hub's") from exc
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o700)
    return fd


def open_org_dir(export_dir: Path, org_code: str, *sub: str, create: bool = False) -> int:
    """An fd of `<export_dir>/<org>/outbound[/<sub>...]`, each step opened without following a link
    (`export_dir` itself is the operator's: taken as configured). FileNotFoundError if missing and
    not `create`; NotFollowed if any step is a link or not a directory."""
    outbound_dir(export_dir, org_code)  # the org code checked fit for a directory name
    private_dir(Path(export_dir))
    fd = os.open(export_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in (org_code, "outbound", *sub):
            child = _open_dir(fd, name, create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(dir_fd: int, name: str) -> int:
    """`name` in `dir_fd` opened for reading, only if it is a regular file and no link (NotFollowed)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except (FileNotFoundError, PermissionError):
        raise
    except OSError as exc:  # ELOOP: a link
        raise NotFollowed(f"{name} is not a regular file") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotFollowed(f"{name} is not a regular file")
    return fd


class AtomicFile:
    """Write to `.<name>.part`, fsync, rename to `<name>`, fsync the directory.
    The directory is the organisation's outbound one (`open_org_dir`, no link
    followed); a `.part` already there (a link planted to another file, or one
    left by a crash) is removed, never written through: the new one is
    created exclusively, without following a link."""

    def __init__(self, directory: Path, name: str) -> None:
        """`directory`: `outbound_dir(export_dir, org_code)`."""
        if directory.name != "outbound":
            raise ValueError("a council file is written to its organisation's outbound directory only")
        self.final = directory / name
        self.name, self.part = name, f".{name}.part"
        self._dir_fd = open_org_dir(directory.parent.parent, directory.parent.name, create=True)
        try:
            try:
                os.unlink(self.part, dir_fd=self._dir_fd)  # the entry itself, a link's target untouched
            except FileNotFoundError:
                pass
            fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=self._dir_fd)
        except BaseException:
            os.close(self._dir_fd)
            raise
        self._f = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._f.write(data)

    def _ours(self) -> bool:
        """Whether `.<name>.part` is still the file this object created (another builder of the same
        file, one that took it over, removes it and makes its own)."""
        try:
            there = os.stat(self.part, dir_fd=self._dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._f.fileno())
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)

    def commit(self) -> None:
        """Publish the file under its name. If that fails (a full disk at the flush or the fsync, another
        writer's part), nothing is published and this writer's part is removed (`abort`), the error raised."""
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            if not self._ours():  # never publish another writer's (half-written) part under the name
                self._f.close()
                raise FileExistsError(f"{self.part} is another writer's now: not published")
            self._f.close()
            # A link planted as `<name>` is replaced (the entry), its target untouched.
            os.replace(self.part, self.name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            os.fsync(self._dir_fd)
        except BaseException:
            self.abort()
            raise
        self._close_dir()

    def abort(self) -> None:
        """Give the file up: this writer's part removed, whatever its bytes (a close that cannot
        write the buffered ones, the disk full, does not keep the part behind to fill it); another
        writer's part (it took the file over) left to it. Idempotent."""
        if self._dir_fd < 0:
            return
        try:
            try:
                ours = not self._f.closed and self._ours()
            except OSError:
                ours = False
            try:
                self._f.close()
            except OSError:
                pass  # its buffered bytes could not be written: the part goes all the same
            if ours:
                try:
                    os.unlink(self.part, dir_fd=self._dir_fd)
                except FileNotFoundError:
                    pass
        finally:
            self._close_dir()

    def _close_dir(self) -> None:
        fd, self._dir_fd = self._dir_fd, -1
        if fd >= 0:
            os.close(fd)


def write_atomically(directory: Path, name: str, data: bytes) -> None:
    f = AtomicFile(directory, name)
    try:
        f.write(data)
    except BaseException:
        f.abort()
        raise
    f.commit()


@dataclass(frozen=True, slots=True)
class ExportRequest:
    org_code: str
    layout: str
    mode: str
    subscription_id: str | None = None
    requested_by: str | None = None  # the client that asked for an on-demand file (its audit rows name it)


@dataclass(frozen=True, slots=True)
class _Discloser:
    """Who an export's audit rows name (`record_decision`'s client): the organisation the file is for,
    and the client that asked for it (a subscription's file: its subscriber)."""
    client_id: str
    org_code: str
    scopes: tuple[str, ...] = ()


class _Listed:
    """The people a file lists, for its audit rows (one allowed read each, channel `export`), written in
    the transaction that publishes it. Bounded in memory however large the register: a full extract's
    people (one row each, all under the file's groups) go to an unnamed temporary file, read back
    `size` at a time; a delta file's (its items are held in memory already) are kept with the union of
    the groups their rows carried."""

    def __init__(self, spill: bool) -> None:
        self._spill = tempfile.TemporaryFile() if spill else None  # noqa: SIM115 - closed by close()
        self._groups: dict[str, frozenset[str]] = {}

    def add(self, person_id: str, groups: frozenset[str]) -> None:
        if self._spill is not None:
            self._spill.write(person_id.encode() + b"\n")  # a hub person id: a UUID, no line break
        else:
            self._groups[person_id] = self._groups.get(person_id, frozenset()) | groups

    def batches(self, groups: frozenset[str], size: int) -> Iterator[tuple[frozenset[str], list[str]]]:
        """(field groups, up to `size` people) in turn; a full extract's with `groups`, the file's."""
        if self._spill is not None:
            self._spill.flush()
            self._spill.seek(0)
            batch: list[str] = []
            for line in self._spill:
                batch.append(line.rstrip(b"\n").decode())
                if len(batch) >= size:
                    yield groups, batch
                    batch = []
            if batch:
                yield groups, batch
            return
        by_groups: dict[frozenset[str], list[str]] = {}
        for person_id, carried in sorted(self._groups.items()):
            by_groups.setdefault(carried, []).append(person_id)
        for carried, people in by_groups.items():
            for start in range(0, len(people), size):
                yield carried, people[start:start + size]

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()


@dataclass(slots=True, eq=False)
class _Claim:
    """A builder's claim on an export while it builds: `beat` is the `builder_until` it last wrote (the next
    renewal writes a greater one), `count` the rows written so far (recorded with each renewal), `lost`
    set once a renewal found the export another builder's (or no longer to be built)."""
    export_id: str
    builder: str
    beat: datetime | None = None
    count: int = 0
    lost: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _utc(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def has_part(org_code: str, person_key: str, status: S117Status) -> bool:
    """Whether `org_code` has a part in the person's aftercare on `status`'s date: a role the access
    policy names (responsible, coordinating, a dispute party, hub/domain/reconciliation.py
    `position_for`) or the host council a push message names (hub/domain/views.py `roles_of`)."""
    return bool(position_for(org_code, person_key, status).roles) or org_code in roles_of(status)


def identity_values(nhs_number: str | None, local_id: str | None) -> dict[str, Any]:
    """A row about a person the council has no part in (any more): who it is, no position. The flat-file
    form of a push message's `roles: []` ("not, or no longer, involved: close your record"): what the
    register says of the person after the council's part ended is not the council's to read."""
    return {"LOCAL_ID": local_id, "NHS_NO": nhs_number}


def position_values(status: S117Status, nhs_number: str | None, local_id: str | None) -> dict[str, Any]:
    council = status.responsible_council
    icb = status.responsible_commissioner
    review = status.next_review
    return {
        "LOCAL_ID": local_id, "NHS_NO": nhs_number, "S117_FLAG": status.entitled,
        "RESP_LA_GSS": council.org.code if council and council.org else None,
        "RESP_ICB_ODS": icb.org.code if icb and icb.org else None,
        "S117_START": status.entitlement_start, "S117_END": status.entitlement_end,
        "NEXT_REVIEW": review.due_on if review else None, "REVIEW_KIND": review.kind if review else None,
        "OPEN_DISPUTE": bool(status.open_disputes),
        "LEGAL_STATUS": status.qualifying_section_code or status.entitling_section_code,
        "CITATION": council.citation if council else None,
        # A body owed and not determined, said (hazard H-03): never only an empty RESP_LA_GSS / RESP_ICB_ODS,
        # which also means "not disclosed" (the person query's `responsibility_undetermined`).
        "RESP_UNDETERMINED": ";".join(f"{u['role']}={u['absent_reason']}" for u in undetermined_bodies(status)),
    }


class ExportService:
    def __init__(
        self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook, sharing: SharingAgreements,
        protector: DataProtector, export_dir: Path, ack_alert_hours: float = 36.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC), ticks: Callable[[], float] = monotonic,
    ) -> None:
        """`now`: the wall clock (file names, dates, states' times); `ticks`: this process's monotonic
        clock, in seconds, on which another builder's claim is timed (module docstring)."""
        self._engine = engine
        self._ref = ref
        self._agreements = agreements
        self._sharing = sharing
        self._protector = protector
        self._dir = export_dir
        narrow_export_dirs(Path(export_dir))  # at start: what an older hub left wider
        self._alert = timedelta(hours=ack_alert_hours)
        self._now = now
        self._ticks = ticks
        # export id -> (builder, builder_until, ticks) of another builder's claim as first seen unchanged
        self._seen: dict[str, tuple[str, Any, float]] = {}
        self.wake = asyncio.Event()
        # File subscription id -> the last EVENT_NO the store displaced by a restore had given
        # (hub/store/restores.py, set when the hub starts): numbering goes on above it.
        self.event_no_floors: dict[str, int] = {}

    # --- groups, people ------------------------------------------------------
    def groups_in_force(self, org_code: str, on: date) -> frozenset[str] | None:
        """The field groups the agreements in force grant the organisation; None when none names it."""
        if not self._sharing.names_in_force(org_code, on):
            return None
        return self._sharing.field_groups_for(org_code, on)

    def agreement_in_force(self, org_code: str, on: date) -> str | None:
        """The agreements in force naming the organisation (ids, comma-separated, as a read names them)."""
        return ",".join(sorted({g.agreement_id for g in self._sharing.grants_for(org_code) if g.in_force(on)})) or None

    @staticmethod
    def built_with(row: Any) -> frozenset[str]:
        """The field groups the export's file was built with; a file built before they were recorded
        (NULL, migration 0033): every group its layout can carry, the safe answer (a download is then
        refused unless the agreement in force grants all of them)."""
        return frozenset(row.field_groups) if row.field_groups is not None else LAYOUT_GROUPS

    def groups_withdrawn(self, row: Any, on: date) -> frozenset[str]:
        """The field groups the file was built with that the agreements in force on `on` no longer grant
        its organisation (all of them when none is in force): a download of it would disclose them."""
        return self.built_with(row) - (self.groups_in_force(row.org_code, on) or frozenset())

    async def _details(self, conn: AsyncConnection, person_ids: list[str]) -> dict[str, tuple[str, str]]:
        """person id -> (NHS number, keyed hash)."""
        out = {}
        for r in (await conn.execute(select(persons.c.person_id, persons.c.details, persons.c.nhs_number_index)
                                     .where(persons.c.person_id.in_(person_ids)))).all():
            out[r.person_id] = (orjson.loads(self._protector.decrypt(r.details))["nhs_number"], r.nhs_number_index)
        return out

    async def _local_ids(self, conn: AsyncConnection, org_code: str, keys: list[str]) -> dict[str, str]:
        """The council's own references, from its latest snapshot that lists each person."""
        latest = (await conn.execute(
            select(reconciliation_snapshots.c.snapshot_id).where(
                reconciliation_snapshots.c.body_org == org_code, reconciliation_snapshots.c.state == "done")
            .order_by(reconciliation_snapshots.c.finished_at.desc()).limit(5))).scalars().all()
        out: dict[str, str] = {}
        for sid in latest:  # newest first: the newest reference wins
            missing = [k for k in keys if k not in out]
            if not missing:
                break
            for r in (await conn.execute(select(reconciliation_rows.c.person_key, reconciliation_rows.c.local_id)
                                         .where(reconciliation_rows.c.snapshot_id == sid,
                                                reconciliation_rows.c.person_key.in_(missing)))).all():
                if r.local_id:
                    out[r.person_key] = self._protector.decrypt(r.local_id).decode()
        return out

    # --- building ------------------------------------------------------------
    async def request(self, req: ExportRequest, builder: str | None = None) -> dict[str, Any]:
        """Record an export to build; the worker builds it (GET shows progress), unless `builder`
        claims it (`s117hub export` building it itself)."""
        if req.layout not in OUT_LAYOUTS or req.mode not in MODES:
            raise ValueError("layout or mode unknown")
        export_id = uuid4()
        now = self._now()
        async with self._engine.begin() as conn:
            await conn.execute(council_exports.insert().values(
                export_id=export_id, org_code=req.org_code, subscription_id=req.subscription_id,
                layout=req.layout, mode=req.mode, state="queued", file_name=None, sha256=None, record_count=0,
                first_event_no=None, last_event_no=None, created_at=now,
                builder=builder, builder_until=now + BUILD_LEASE if builder else None,
                requested_by=(req.requested_by or "")[:64] or None))
        if builder is None:
            self.wake.set()
        return await self.export(export_id)

    async def export(self, export_id: str) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(council_exports).where(council_exports.c.export_id == export_id))).one()
            await conn.rollback()
        return export_json(row, self._now(), self._alert)

    async def export_row(self, export_id: str) -> Any:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(council_exports)
                                      .where(council_exports.c.export_id == export_id))).first()
            await conn.rollback()
        return row

    def file_path(self, row: Any) -> Path:
        return outbound_dir(self._dir, row.org_code) / row.file_name

    def open_file(self, row: Any) -> BinaryIO | None:
        """The export's file for reading (a download), or None if it is gone; a link or anything
        not a regular file in its place (the council's SFTP account may put one there) is not
        followed: as gone, and logged."""
        try:
            dir_fd = open_org_dir(self._dir, row.org_code)
            try:
                fd = open_regular(dir_fd, row.file_name)
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            return None
        except NotFollowed:
            log.warning("council file not followed: not a regular file in the outbound directory",
                        org_code=row.org_code, export_id=row.export_id)
            return None
        return os.fdopen(fd, "rb")

    async def build_waiting(self) -> int:
        """Build every export queued or left half-built (a restart) that no other builder holds;
        the number built."""
        async with snapshot(self._engine) as conn:  # every poll: inline on SQLite; PostgreSQL no BEGIN/ROLLBACK
            rows = (await conn.execute(select(council_exports)
                                       .where(council_exports.c.state.in_(["queued", "building"]))
                                       .order_by(council_exports.c.created_at))).all()
        waiting = {row.export_id for row in rows}
        for export_id in [e for e in self._seen if e not in waiting]:
            del self._seen[export_id]  # built, withheld or gone: no claim on it to time any more
        built = 0
        for row in rows:
            built += await self.build(row)
        return built

    def _beat(self, last: datetime | None) -> datetime:
        """The `builder_until` a claim is written with: this clock's time plus the lease, and always greater
        than the one before (`last`), so that another builder sees every renewal as one, whatever this
        machine's clock does (module docstring)."""
        beat = self._now() + BUILD_LEASE
        last = _utc(last)
        return beat if last is None or beat > last else last + timedelta(microseconds=1)

    async def _take(self, export_id: str, builder: str) -> _Claim | None:
        """Claim the export for `builder` while it is still to be built: unclaimed, claimed by `builder`
        already (taken up again), or claimed by another builder whose claim this process has seen unrenewed
        (the same `builder` and `builder_until`) for BUILD_LEASE of its own monotonic time. No builder's
        clock is compared with another's. None (nothing done) otherwise."""
        async with self._engine.begin() as conn:
            cur = (await conn.execute(select(council_exports.c.state, council_exports.c.builder,
                                             council_exports.c.builder_until)
                                      .where(council_exports.c.export_id == export_id))).first()
            if cur is None or cur.state not in ("queued", "building"):
                self._seen.pop(export_id, None)
                return None
            if cur.builder is not None and cur.builder != builder:
                ticks = self._ticks()
                seen = self._seen.get(export_id)
                if seen is None or (seen[0], seen[1]) != (cur.builder, cur.builder_until):
                    # Claimed, or renewed since last seen: timed afresh from now, on this process's clock.
                    self._seen[export_id] = (cur.builder, cur.builder_until, ticks)
                    return None
                if ticks - seen[2] < BUILD_LEASE.total_seconds():
                    return None
            beat = self._beat(cur.builder_until)
            # Compare-and-set: only the claim as read (a renewal that landed since wins; PostgreSQL's
            # UPDATE re-reads the row once it holds its lock, SQLite's BEGIN IMMEDIATE holds the write lock).
            taken = await conn.execute(council_exports.update().where(
                council_exports.c.export_id == export_id, council_exports.c.state.in_(["queued", "building"]),
                council_exports.c.builder.is_(None) if cur.builder is None
                else council_exports.c.builder == cur.builder,
                council_exports.c.builder_until.is_(None) if cur.builder_until is None
                else council_exports.c.builder_until == cur.builder_until)
                .values(builder=builder, builder_until=beat))
        if taken.rowcount != 1:
            return None
        self._seen.pop(export_id, None)
        return _Claim(export_id, builder, beat)

    async def build(self, row: Any, progress: Callable[[int, int | None], None] | None = None,
                    builder: str | None = None) -> bool:
        """Build the export's file; False (nothing done) if it is built already, withdrawn from building,
        or another builder holds it. `builder`: a claim taken when the export was asked for."""
        claim = await self._take(row.export_id, builder or uuid4())
        if claim is None:
            return False
        # Renewed beside the build, every quarter of the lease, rows or no rows: a row source stalled on a
        # slow query does not lose the claim. Stopped (and awaited) however the build ends.
        keeper = asyncio.create_task(self._keep_claim(claim))
        try:
            return await self._build(row, progress, claim, keeper)
        finally:
            await _stop(keeper)

    async def _build(self, row: Any, progress: Callable[[int, int | None], None] | None, claim: _Claim,
                     keeper: asyncio.Task[None]) -> bool:
        row = await self.export_row(row.export_id)  # as it is now, not as the caller read it
        layout = OUT_LAYOUTS[row.layout]
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        # A rebuild after a crash keeps the name it was given: the same file, not a second one.
        name = row.file_name or (
            f"S117_{row.org_code}_{created.astimezone(LONDON):%Y%m%d_%H%M%S}_{row.mode.upper()}_{row.export_id[:8]}"
            f".{'csv' if layout.kind == 'csv' else 'dat'}")
        # Disclosed under the agreements in force when the file is written (as every channel is,
        # README "A message is disclosed under the agreement in force when it is sent"), not
        # when it was asked for: the council's SFTP account collects the folder whatever the API says.
        today = england_day(self._now())
        in_force = self.groups_in_force(row.org_code, today)
        if in_force is None and row.mode == "full":
            await self._set(row.export_id, state="withheld", builder=None, builder_until=None)
            log.warning("council file withheld: no data-sharing agreement in force names the organisation",
                        org_code=row.org_code, mode=row.mode, export_id=row.export_id)
            return True
        groups = in_force or frozenset()
        if row.mode == "delta":
            await self._claim_deliveries(row, name, today)
            rows = self._delta_rows(row)
        else:
            await self._set(row.export_id, state="building", file_name=name)
            rows = self._full_rows(row.org_code, england_day(created), progress)
        # <export_dir>/<org>/outbound made 0700 if missing, else narrowed if wider; no link followed.
        writer = ExportWriter(layout, row.org_code, created, row.mode)
        directory = outbound_dir(self._dir, row.org_code)
        listed = _Listed(spill=row.mode == "full")  # the people it discloses: its audit rows
        out = AtomicFile(directory, name)
        carried: frozenset[str] = frozenset()  # the groups its rows' columns were filled under

        def give_way() -> bool:
            out.abort()  # its claim lapsed: the builder that took it over writes the file
            log.warning("council file build gave way: another builder holds it",
                        org_code=row.org_code, export_id=row.export_id)
            return False

        try:
            out.write(writer.header())
            async for values in rows:
                # A delta row: no wider than the groups its own message was rendered with.
                row_groups = groups & values.pop(GROUPS_KEY) if GROUPS_KEY in values else groups
                person_id = values.pop(PERSON_KEY, None)
                out.write(writer.row(row_values(values, row_groups, layout)))
                row_groups &= LAYOUT_GROUPS  # what its columns can carry
                carried |= row_groups
                if person_id is not None:  # none: an event purged from the log, a row naming no one
                    listed.add(person_id, row_groups)
                claim.count = writer.count
                # The keeper renews on time; every PAGE rows the progress is recorded too.
                if claim.lost or (writer.count % PAGE == 0 and not await self._renew(claim)):
                    return give_way()
            tail, digest = writer.trailer()
            out.write(tail)
            await _stop(keeper)  # no renewal beside the transaction below
            if claim.lost:
                return give_way()
            now = self._now()
            # The file is published only inside the transaction that makes it ready, and only while this
            # builder's claim holds: the UPDATE's row lock (PostgreSQL) or the write lock (SQLite) keeps
            # another builder from taking the export over until it commits, so a builder whose claim lapsed
            # (stalled for longer than BUILD_LEASE, unable to renew) never renames a file over the name,
            # nor over another builder's part.
            if row.mode == "full":
                carried = groups & LAYOUT_GROUPS  # every row under the file's groups
            async with self._engine.begin() as conn:
                done = await conn.execute(council_exports.update().where(
                    council_exports.c.export_id == row.export_id, council_exports.c.builder == claim.builder,
                    council_exports.c.state.in_(["queued", "building"])).values(
                    state="ready", sha256=digest, record_count=writer.count, ready_at=now,
                    builder=None, builder_until=None, field_groups=sorted(carried)))
                if done.rowcount != 1:  # its claim lapsed and another builder took the file over
                    return give_way()
                # Who it discloses, in the transaction that publishes it: a file is ready (and in the
                # council's folder) with its audit rows, or neither.
                await self._record_listed(conn, row, listed, carried, today)
                out.commit()
                write_atomically(directory, name + ".sha256", f"{digest}  {name}\n".encode())
                if row.mode == "delta":
                    taken = select(export_items.c.delivery_id).where(export_items.c.export_id == row.export_id)
                    await conn.execute(deliveries.update().where(deliveries.c.delivery_id.in_(taken))
                                       .values(status="delivered", delivered_at=now))
        except BaseException:
            if not out._f.closed:
                out.abort()
            raise
        finally:
            listed.close()
        metrics.DELIVERY.labels(channel=CHANNEL, outcome="delivered").inc(writer.count)
        log.info("council file written", org_code=row.org_code, mode=row.mode, count=writer.count,
                 export_id=row.export_id)
        return True

    async def _record_listed(self, conn: AsyncConnection, row: Any, listed: _Listed, groups: frozenset[str],
                             today: date) -> None:
        """A council file discloses every person it lists (written to the folder the council's SFTP account
        collects): one `access_decisions` row each (channel `export`, action `read`, allowed), with the
        groups their rows carried (a full extract: the file's) and the agreements in force, as a person
        query is recorded, so "who was told what about this person" (audit person) shows the file. The
        client named: the one that asked for it, a subscription's subscriber, else the hub's exporter;
        the correlation id is the export's id. Inserted `PAGE` people at a time (one executemany each)."""
        client_id = row.requested_by
        if client_id is None and row.subscription_id is not None:
            client_id = (await conn.execute(select(subscriptions.c.client_id).where(
                subscriptions.c.subscription_id == row.subscription_id))).scalar()
        who = _Discloser(client_id or EXPORTER, row.org_code)
        agreement = self.agreement_in_force(row.org_code, today)
        for carried, people in listed.batches(groups, PAGE):
            await record_decision(conn, who, channel="export", action="read", allowed=True, rule=Rule.ALLOWED,
                                  agreement_id=agreement, field_groups=carried, person_ids=people,
                                  correlation_id=row.export_id)

    async def _keep_claim(self, claim: _Claim) -> None:
        """Renew `claim` every quarter of BUILD_LEASE until cancelled (the build ended) or a renewal finds
        it lost (`claim.lost`: the build gives way at its next row and publishes nothing). A renewal that
        fails (the database out of reach for a moment) is tried again a quarter later."""
        while True:
            await asyncio.sleep(BUILD_LEASE.total_seconds() / 4)
            try:
                if not await self._renew(claim):
                    log.warning("council file claim lost: another builder holds it", export_id=claim.export_id)
                    return
            except Exception as exc:  # noqa: BLE001 - tried again next time; the build fails on its own if it must
                log.warning("council file claim not renewed", export_id=claim.export_id,
                            exc_type=type(exc).__name__)

    async def _renew(self, claim: _Claim) -> bool:
        """Renew `claim` (a new `builder_until`, and its progress recorded), only while its builder holds the
        export: False (and `claim.lost`) once another builder took it over, which neither this renewal nor
        this count touch."""
        async with claim.lock:  # the keeper's and the rows' renewals one at a time, each beat greater
            if claim.lost:
                return False
            beat = self._beat(claim.beat)
            async with self._engine.begin() as conn:
                done = await conn.execute(council_exports.update().where(
                    council_exports.c.export_id == claim.export_id, council_exports.c.builder == claim.builder,
                    council_exports.c.state.in_(["queued", "building"])).values(
                    record_count=claim.count, builder_until=beat))
            if done.rowcount != 1:
                claim.lost = True
                return False
            claim.beat = beat
            return True

    async def _set(self, export_id: str, **values: Any) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(council_exports.update().where(council_exports.c.export_id == export_id)
                               .values(**values))

    async def _claim_deliveries(self, row: Any, name: str, today: date | None = None) -> None:
        """Take the subscription's pending deliveries into this export, numbered
        on from the last file. Done once: a rebuild after a crash reuses them.
        A delivery the agreements in force on `today` no longer allow (ended,
        event type not covered, a field group it carries no longer granted) is
        `held` with a `denied` disclosure, as on every other channel, not taken;
        a rebuild asks again of those it had taken (the restart after the crash
        may have loaded other agreements)."""
        check = DisclosureCheck(self._sharing, today or england_day(self._now()))
        async with self._engine.begin() as conn:
            taken = (await conn.execute(select(func.count()).select_from(export_items)
                                        .where(export_items.c.export_id == row.export_id))).scalar_one()
            if row.state == "building" and taken:
                await self._recheck_taken(conn, row, check)
                return
            last_no = (await conn.execute(
                select(func.max(export_items.c.event_no)).join(
                    council_exports, council_exports.c.export_id == export_items.c.export_id)
                .where(council_exports.c.subscription_id == row.subscription_id))).scalar() or 0
            last_no = max(last_no, self.event_no_floors.get(row.subscription_id, 0))
            in_files = select(export_items.c.delivery_id)
            waiting = (await conn.execute(
                select(deliveries.c.delivery_id, deliveries.c.delivery_seq, deliveries.c.event_id,
                       deliveries.c.event_type, deliveries.c.field_groups).where(
                    deliveries.c.subscription_id == row.subscription_id, deliveries.c.status == "pending",
                    deliveries.c.delivery_id.not_in(in_files))
                .order_by(deliveries.c.delivery_seq))).all()
            withheld = await hold_disallowed(conn, check, waiting, row.org_code, CHANNEL, row.subscription_id)
            if withheld:
                metrics.DELIVERY.labels(channel=CHANNEL, outcome="held").inc(len(withheld))
            held = {d.delivery_id for d, _w in withheld}
            pending = [d.delivery_id for d in waiting if d.delivery_id not in held]
            if pending:
                await conn.execute(export_items.insert(), [
                    {"export_id": row.export_id, "delivery_id": d, "event_no": last_no + i}
                    for i, d in enumerate(pending, 1)])
            await conn.execute(council_exports.update().where(council_exports.c.export_id == row.export_id).values(
                state="building", file_name=name,
                first_event_no=last_no + 1 if pending else None, last_event_no=last_no + len(pending) if pending else None))

    async def _recheck_taken(self, conn: AsyncConnection, row: Any, check: DisclosureCheck) -> None:
        """A rebuild's deliveries, taken before the crash, asked of the agreements in force now: those
        no longer allowed are held (a `denied` disclosure each) and leave the file, and the rest are
        numbered on again from the file's first number (no file carried these numbers yet)."""
        items = (await conn.execute(
            select(export_items.c.delivery_id, export_items.c.event_no, deliveries.c.delivery_seq,
                   deliveries.c.event_id, deliveries.c.event_type, deliveries.c.field_groups)
            .join(deliveries, deliveries.c.delivery_id == export_items.c.delivery_id)
            .where(export_items.c.export_id == row.export_id, deliveries.c.status == "pending")
            .order_by(export_items.c.event_no))).all()
        withheld = await hold_disallowed(conn, check, items, row.org_code, CHANNEL, row.subscription_id)
        if not withheld:
            return
        metrics.DELIVERY.labels(channel=CHANNEL, outcome="held").inc(len(withheld))
        held = {d.delivery_id for d, _w in withheld}
        await conn.execute(export_items.delete().where(export_items.c.export_id == row.export_id,
                                                       export_items.c.delivery_id.in_(sorted(held))))
        kept = [i for i in items if i.delivery_id not in held]
        first = min((i.event_no for i in items), default=None)
        for n, i in enumerate(kept):
            if i.event_no != first + n:
                await conn.execute(export_items.update().where(
                    export_items.c.export_id == row.export_id, export_items.c.delivery_id == i.delivery_id)
                    .values(event_no=first + n))
        await conn.execute(council_exports.update().where(council_exports.c.export_id == row.export_id).values(
            first_event_no=first if kept else None, last_event_no=first + len(kept) - 1 if kept else None))

    async def _delta_rows(self, row: Any) -> AsyncIterator[dict[str, Any]]:
        async with self._engine.connect() as conn:
            items = (await conn.execute(
                select(export_items.c.event_no, deliveries.c.event_id, deliveries.c.event_type,
                       deliveries.c.field_groups)
                .join(deliveries, deliveries.c.delivery_id == export_items.c.delivery_id)
                .where(export_items.c.export_id == row.export_id).order_by(export_items.c.event_no))).all()
            await conn.rollback()
        today = england_day(self._now())
        for start in range(0, len(items), PAGE):
            page = items[start:start + PAGE]
            async with self._engine.connect() as conn:
                msgs = {m.event_id: m for m in (await conn.execute(
                    select(bus_messages.c.event_id, bus_messages.c.key, bus_messages.c.payload)
                    .where(bus_messages.c.event_id.in_([i.event_id for i in page])))).all()}
                person_ids = sorted({m.key for m in msgs.values()})
                changes: dict[str, list[RegisterChange]] = {}
                for r in (await conn.execute(select(register_changes.c.person_id, register_changes.c.canonical)
                                             .where(register_changes.c.person_id.in_(person_ids),
                                                    not_retracted()))).all():
                    changes.setdefault(r.person_id, []).append(from_jsonable(RegisterChange, r.canonical))
                details = await self._details(conn, person_ids)
                local = await self._local_ids(conn, row.org_code, [k for _n, k in details.values()])
                await conn.rollback()
            statuses = {pid: evaluate(pid, changes.get(pid, []), self._ref, self._agreements, today)
                        for pid in person_ids}
            for it in page:
                msg = msgs.get(it.event_id)
                if msg is None:  # the event was purged from the log: the row still says what it was
                    yield {"EVENT_ID": it.event_id, "EVENT_NO": it.event_no, "EVENT_CODE": event_code(it.event_type)}
                    continue
                event = (msg.payload or {}).get("event") or {}
                change = (msg.payload or {}).get("change") or {}
                nhs, key = details.get(msg.key, (None, ""))
                yield {"EVENT_ID": it.event_id, "EVENT_NO": it.event_no,
                       "EVENT_CODE": event_code(it.event_type, change.get("change_type")),
                       "EFFECTIVE_DATE": _date(event.get("occurred_on")) or today,
                       **self._told_position(row.org_code, key, statuses[msg.key], msg.payload, nhs,
                                             local.get(key)),
                       # The groups its message was rendered with (its `allowed` disclosure's): a
                       # column the decision for this event type did not grant stays empty, even
                       # where another agreement grants it for other event types.
                       **({GROUPS_KEY: frozenset(it.field_groups)} if it.field_groups is not None else {}),
                       # The person it is about (its audit row); a key naming no one on the register, none.
                       **({PERSON_KEY: msg.key} if msg.key in details else {})}

    def _told_position(self, org_code: str, person_key: str, now: S117Status, payload: dict | None,
                       nhs: str | None, local_id: str | None) -> dict[str, Any]:
        """A delta row's position: the person's current one while the council has a part in their
        aftercare; once it has none (moved on, responsibility transferred and accepted), the position
        the event itself was told with (the status the bus message carries: a transfer's row names
        the incoming body, as the push message does), never what the register says since; an event
        that carries none, who it is only."""
        if has_part(org_code, person_key, now):
            return position_values(now, nhs, local_id)
        told = (payload or {}).get("status")
        if isinstance(told, dict):
            try:
                return position_values(from_jsonable(S117Status, told), nhs, local_id)
            except (TypeError, ValueError, KeyError):
                pass
        return identity_values(nhs, local_id)

    async def people_for(self, org_code: str) -> set[str]:
        """Persons the council was told of (allowed disclosures): the 'was' part of a full extract.
        A `no-subscription` decision told it nothing (no subscription took the event): not counted,
        as the access policy's notified body counts only what was disclosed (hub/api/persons.py)."""
        async with self._engine.connect() as conn:
            ids = set((await conn.execute(select(disclosures.c.person_id).distinct().where(
                disclosures.c.recipient_org == org_code, disclosures.c.decision == "allowed")
            )).scalars().all())
            await conn.rollback()
        return ids

    async def _full_rows(self, org_code: str, on: date,
                         progress: Callable[[int, int | None], None] | None) -> AsyncIterator[dict[str, Any]]:
        told = await self.people_for(org_code)
        async with self._engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(persons))).scalar_one()
            await conn.rollback()
        batch: list[tuple[str, S117Status, bool]] = []
        seen = 0

        async def flush() -> AsyncIterator[dict[str, Any]]:
            async with self._engine.connect() as conn:
                details = await self._details(conn, [pid for pid, _s, _i in batch])
                local = await self._local_ids(conn, org_code, [k for _n, k in details.values()])
                await conn.rollback()
            for pid, status, involved in batch:
                nhs, key = details[pid]
                yield {"EVENT_NO": None, "EVENT_CODE": FULL_EXTRACT_CODE, "EFFECTIVE_DATE": on, PERSON_KEY: pid,
                       **(position_values(status, nhs, local.get(key)) if involved
                          else identity_values(nhs, local.get(key)))}

        async for key, person_id, changes in _hub_people(self._engine):
            seen += 1
            status = evaluate(person_id, changes, self._ref, self._agreements, on)
            # A person the council has a part in now: their position. One it was told of and has no part
            # in now (moved away, responsibility transferred, a host area left): who it is, no position
            # (`identity_values`), as its push messages end with `roles: []`.
            involved = has_part(org_code, key, status)
            if involved or person_id in told:
                batch.append((person_id, status, involved))
            if len(batch) >= PAGE:
                async for v in flush():
                    yield v
                batch = []
            if progress is not None and seen % PAGE == 0:
                progress(seen, total)
        if batch:
            async for v in flush():
                yield v
        if progress is not None:
            progress(seen, total)

    # --- acknowledgement, schedule, alerts -----------------------------------
    async def acknowledge(self, export_id: str, via: str) -> dict[str, Any]:
        async with self._engine.begin() as conn:
            await conn.execute(council_exports.update().where(
                council_exports.c.export_id == export_id, council_exports.c.state == "ready")
                .values(state="acknowledged", acknowledged_at=self._now(), ack_via=via))
        return await self.export(export_id)

    async def scan_ack_folders(self) -> int:
        """A file the council moved (or copied) into outbound/ack/ is acknowledged."""
        async with snapshot(self._engine) as conn:  # every poll
            ready = (await conn.execute(select(council_exports.c.export_id, council_exports.c.org_code,
                                               council_exports.c.file_name)
                                        .where(council_exports.c.state == "ready"))).all()
        n = 0
        for r in ready:
            if self._in_ack_folder(r.org_code, r.file_name):
                await self.acknowledge(r.export_id, "folder")
                n += 1
        return n

    def _in_ack_folder(self, org_code: str, file_name: str) -> bool:
        """A regular file of that name in `outbound/ack/` (no link followed, for the folder or the file)."""
        try:
            dir_fd = open_org_dir(self._dir, org_code, "ack")
        except (FileNotFoundError, NotFollowed):
            return False
        try:
            return stat.S_ISREG(os.stat(file_name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False
        finally:
            os.close(dir_fd)

    async def unacknowledged(self) -> list[dict[str, Any]]:
        async with snapshot(self._engine) as conn:  # every poll
            rows = (await conn.execute(select(council_exports).where(council_exports.c.state == "ready")
                                       .order_by(council_exports.c.ready_at))).all()
        now = self._now()
        out = [export_json(r, now, self._alert) for r in rows]
        metrics.EXPORTS_UNACKNOWLEDGED.set(sum(1 for e in out if e["overdue"]))
        return out

    async def run_schedules(self) -> int:
        """Queue the scheduled file of every council-file subscription whose time has come."""
        now = self._now()
        # Read first, outside a write transaction (every poll; PostgreSQL: autocommit);
        # only when a file is due is it read again and queued in one transaction.
        async with snapshot(self._engine) as conn:
            if not any(_schedule_due(s, now) for s in (await conn.execute(_SCHEDULED)).all()):
                return 0
        async with self._engine.begin() as conn:
            subs = (await conn.execute(_SCHEDULED)).all()
            queued = 0
            for s in subs:
                if not _schedule_due(s, now):
                    continue
                await conn.execute(council_exports.insert().values(
                    export_id=uuid4(), org_code=s.org_code, subscription_id=s.subscription_id,
                    layout=s.layout, mode=s.mode, state="queued", record_count=0, created_at=now))
                await conn.execute(council_file_subscriptions.update()
                                   .where(council_file_subscriptions.c.subscription_id == s.subscription_id)
                                   .values(last_run_at=now))
                queued += 1
        return queued

    async def run_now(self, subscription_id: str) -> dict[str, Any] | None:
        """The operator's "run it now" for a council-file subscription (the
        schedule carries on as before); None if there is no such subscription."""
        async with self._engine.connect() as conn:
            s = (await conn.execute(
                select(council_file_subscriptions, subscriptions.c.org_code)
                .join(subscriptions, subscriptions.c.subscription_id == council_file_subscriptions.c.subscription_id)
                .where(council_file_subscriptions.c.subscription_id == subscription_id))).first()
            await conn.rollback()
        if s is None:
            return None
        return await self.request(ExportRequest(s.org_code, s.layout, s.mode, subscription_id))

    async def run_once(self) -> int:
        busy = await self.run_schedules()
        busy += await self.build_waiting()
        await self.scan_ack_folders()
        await self.unacknowledged()
        return busy


_SCHEDULED = (select(council_file_subscriptions, subscriptions.c.org_code)
              .join(subscriptions, subscriptions.c.subscription_id == council_file_subscriptions.c.subscription_id)
              .where(subscriptions.c.active.is_(True)))


def _schedule_due(s: Any, now: datetime) -> bool:
    """A council-file subscription's scheduled file is due (not yet run since its last scheduled time)."""
    due = last_due(s.schedule, now)
    last = s.last_run_at if s.last_run_at is None or s.last_run_at.tzinfo else s.last_run_at.replace(tzinfo=UTC)
    if last is not None and last >= due:
        return False
    if last is None and due < (s.created_at if s.created_at.tzinfo else s.created_at.replace(tzinfo=UTC)):
        return False  # the first run is the first scheduled time after subscribing
    return True


def _date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


def export_json(row: Any, now: datetime, alert: timedelta) -> dict[str, Any]:
    ready = row.ready_at if row.ready_at is None or row.ready_at.tzinfo else row.ready_at.replace(tzinfo=UTC)
    return {
        "export_id": row.export_id, "org_code": row.org_code, "subscription_id": row.subscription_id,
        "layout": row.layout, "mode": row.mode, "state": row.state, "file_name": row.file_name,
        "sha256": row.sha256, "record_count": row.record_count, "first_event_no": row.first_event_no,
        "last_event_no": row.last_event_no, "created_at": row.created_at.isoformat(),
        "ready_at": ready.isoformat() if ready else None,
        "acknowledged_at": row.acknowledged_at.isoformat() if row.acknowledged_at else None,
        "ack_via": row.ack_via,
        "overdue": bool(row.state == "ready" and ready is not None and now - ready > alert),
    }


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it to end (a cancellation of the caller still propagates)."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: the keeper logs its own failures


async def run_exporter(service: ExportService, poll_seconds: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        busy = 0
        try:
            busy = await service.run_once()
        except Exception as exc:  # noqa: BLE001 - keep the worker alive; a half-built export is rebuilt next time
            log.warning("council export failed", exc_type=type(exc).__name__)
            await asyncio.sleep(min(5.0, poll_seconds * 10))
        if not busy:
            service.wake.clear()
            try:
                await asyncio.wait_for(service.wake.wait(), timeout=max(poll_seconds, 1.0))
            except TimeoutError:
                pass
