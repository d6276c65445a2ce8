"""The data-sharing agreements file, watched while the hub runs.

An information governance lead withdraws or narrows an organisation's
agreement by editing the agreements file (`S117_SHARING_AGREEMENTS_PATH`):
removing the organisation, setting a `valid_to` in the past, dropping an
event type or a field group. Every hub process (the front, the back workers,
the deliverers: `s117hub serve` may run three) holds one `SharingAgreements`
object that everything deciding disclosure asks (hub/bootstrap.py). Each
process looks at the file every `S117_AGREEMENTS_RELOAD_SECONDS` (5; 0: never,
the file is then read at start only): when its modification time, size or
inode has changed, it is loaded with the checks made at start
(`SharingAgreements.parse`, the same known field groups) and, if it passes,
its grants are swapped into that one object in place
(`SharingAgreements.replace_grants`): the next message the dispatcher routes,
the next batch a deliverer leases, the next feed page, person query, lookup,
FHIR read, council file, drift alert and statement is decided by them.

A file that does not load (malformed YAML, an unknown field group or event
type, a missing file: anything the start refuses) changes nothing: the last
good agreements stay in force, an ERROR line names the file and the problem,
and `s117_agreements_reload_failed` is 1 (alert `S117AgreementsReloadFailed`)
until a good edit loads. Falling back to no agreements instead would stop
every disclosure to every body (responsible councils and ICBs included) and
hold every queued message for an operator's release, on a typing slip; a
withdrawal is made by a valid edit, which takes effect. The alert also
warns that a restart would fail: the hub refuses to start on such a file.

A file being written in place is not read half-written: a change younger than
`SETTLE_SECONDS` is waited for, and a file that changes while it is read is
read again at the next look. Writing the new file beside the old one and
renaming it over (what most configuration tools do) is atomic anyway.

The area agreements file (`S117_AREA_AGREEMENTS_PATH`: each council and
commissioner pair's funding split and its changes, each area's review
intervals, transfer clock and dispute stages) is watched by the same looks:
loaded with the checks made at start (`hub/agreements_loader.py`
`parse_agreements`) and, if it passes, taken into the process's one
`AgreementBook` in place (`AgreementBook.replace_with`), which the ingest, the
rules' evaluations, the money (splits, statements, the oversight report's
spend), the workflows' clocks, reconciliation, council files and the review
scanner all hold; statuses kept from evaluations under the old agreements
(hub/ingest/status_cache.py, a council file's `BulkCache`) are not used past
the reload (`AgreementBook.generation`). A file that does not load is refused
as the sharing file is (one ERROR line, `area agreements file not loaded`,
naming the entry and field or the YAML's line and column, never the file's
text), the last good agreements kept, `s117_agreements_reload_failed` 1 (it is
1 while either file is refused). Without a file at start (the England
defaults) nothing is watched. `s117hub export` reads the file when it runs.

A reload that changes the grants (for the area file: any agreement added,
removed or changed) is an audit record: an `operator_actions` row
(actor `hub:agreements`, action `agreements-reloaded`, target the file's name,
detail its sha256 and the agreement ids added, removed and changed: for the
area file `areas.<GSS>`, `funding.<GSS>/<ODS>`, `default.area`, `default.funding`), chained
into `audit_chain` like every operator action. One process writes it (the one
running the back workers; hub/bootstrap.py `watch_agreements`), and not again
for a file whose sha256 the last such record of that file already names.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.periodic import every
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.agreements_loader import AgreementsError, parse_agreements
from hub.domain.agreements import AgreementBook
from hub.sharing import AgreementFileError, Grant, SharingAgreements

log = get_logger("hub.agreements_watch")

ACTOR = "hub:agreements"  # operator_actions.client_id of a reload's record
ACTION = "agreements-reloaded"
SETTLE_SECONDS = 0.5  # a change younger than this is waited for (a file being written in place)

FileState = tuple[int, int, int]  # (st_mtime_ns, st_size, st_ino)


def file_state(path: Path) -> FileState | None:
    """What tells the file changed; None when it cannot be found or read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True, slots=True)
class GrantChange:
    """The agreement ids a reload added, removed and changed (a change of any recipient's grant)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def compare(before: dict[str, frozenset[Grant]], after: dict[str, frozenset[Grant]]) -> GrantChange:
    return GrantChange(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(sorted(k for k in before.keys() & after.keys() if before[k] != after[k])),
    )


@dataclass
class WatchedFile:
    """One agreements file under the watch: how it is loaded (`parse`: its bytes and name, raising a
    ValueError naming the entry and field, never the file's text) and taken in place of what the
    process holds (`swap`: returns what changed, and the counts for the log and the audit record)."""

    path: Path
    what: str  # in the log: "data-sharing agreements", "area agreements"
    parse: Callable[[bytes, str], Any]
    swap: Callable[[Any], tuple[GrantChange, dict[str, int]]]
    loaded_state: FileState | None  # as it was when what the process holds was loaded from it
    failed: bool = False  # the last look found a changed file that did not load

    def __post_init__(self) -> None:
        self._seen = self.loaded_state  # the state last acted on (loaded or refused)


def sharing_file(sharing: SharingAgreements, path: Path, known_field_groups: frozenset[str] | None,
                 loaded_state: FileState | None) -> WatchedFile:
    """The data-sharing agreements file, its grants swapped into `sharing` (`replace_grants`)."""

    def swap(new: SharingAgreements) -> tuple[GrantChange, dict[str, int]]:
        before, after = sharing.by_agreement(), new.by_agreement()
        sharing.replace_grants(new)
        return compare(before, after), {"agreements": len(after), "grants": sum(len(g) for g in after.values())}

    return WatchedFile(path, "data-sharing agreements",
                       lambda data, name: SharingAgreements.parse(data, name, known_field_groups), swap, loaded_state)


def area_entries(book: AgreementBook) -> dict[str, Any]:
    """Each agreement of an area agreements file by a name (what a reload compares): `default.area`,
    `default.funding`, `areas.<GSS>`, `funding.<GSS>/<ODS>` (with its later arrangements)."""
    out: dict[str, Any] = {"default.area": book.default_area, "default.funding": book.default_funding}
    out |= {f"areas.{gss}": area for gss, area in book.areas.items()}
    out |= {f"funding.{council}/{icb}": (agreement, book.funding_changes.get((council, icb), ()))
            for (council, icb), agreement in book.funding.items()}
    return out


def area_file(book: AgreementBook, path: Path, loaded_state: FileState | None) -> WatchedFile:
    """The area agreements file (`S117_AREA_AGREEMENTS_PATH`), taken into `book` (`replace_with`)."""
    def swap(new: AgreementBook) -> tuple[GrantChange, dict[str, int]]:
        before, after = area_entries(book), area_entries(new)
        change = GrantChange(
            added=tuple(sorted(after.keys() - before.keys())),
            removed=tuple(sorted(before.keys() - after.keys())),
            changed=tuple(sorted(k for k in before.keys() & after.keys() if before[k] != after[k])))
        book.replace_with(new)
        return change, {"areas": len(new.areas), "funding": len(new.funding)}

    return WatchedFile(path, "area agreements", parse_agreements, swap, loaded_state)


@dataclass
class AgreementsWatcher:
    """One process's watch on the agreements files: the data-sharing agreements file, swapping what
    it loads into `sharing`, and (`area`) the area agreements file, into that `AgreementBook`."""

    sharing: SharingAgreements
    path: Path
    known_field_groups: frozenset[str] | None
    # The file as it was when `sharing` was loaded from it (taken before the read: a change
    # made during it is seen at the first look).
    loaded_state: FileState | None
    # Set: this process writes the audit record of a reload that changes grants (one process does).
    engine: AsyncEngine | None = None
    clock: Callable[[], float] = time.time
    # The area agreements the process holds, their file and its state when they were loaded from it
    # (None: not watched; the England defaults, with no file, are not watched for one appearing).
    area: AgreementBook | None = None
    area_path: Path | None = None
    area_state: FileState | None = None
    _pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (file name, audit detail) not yet written

    def __post_init__(self) -> None:
        self.files = [sharing_file(self.sharing, self.path, self.known_field_groups, self.loaded_state)]
        if self.area is not None and self.area_path is not None:
            self.files.append(area_file(self.area, self.area_path, self.area_state))
        metrics.AGREEMENTS_LOADED_AT.set(self.clock())
        metrics.AGREEMENTS_RELOAD_FAILED.set(0)

    @property
    def failed(self) -> bool:
        """A watched file changed and did not load (its last good agreements kept)."""
        return any(f.failed for f in self.files)

    async def check(self) -> str | None:
        """One look at each file. None: none changed since the last look (or still being written);
        else `failed` if one was refused (its last good agreements kept), `loaded` if one was swapped in."""
        await self._write_pending()
        outcomes = [await self._check(f) for f in self.files]
        return "failed" if "failed" in outcomes else "loaded" if "loaded" in outcomes else None

    async def _check(self, watched: WatchedFile) -> str | None:
        for _ in range(3):
            state = file_state(watched.path)
            if state == watched._seen:
                return None
            if state is None:
                watched._seen = None
                return self._refused(watched, "the file cannot be found or read")
            age = self.clock() - state[0] / 1e9
            if 0 <= age < SETTLE_SECONDS:  # written moments ago: perhaps not finished
                await asyncio.sleep(SETTLE_SECONDS - age)
                continue
            try:
                data = await asyncio.to_thread(watched.path.read_bytes)
            except OSError as exc:
                watched._seen = None
                return self._refused(watched, f"the file cannot be read ({type(exc).__name__})")
            if file_state(watched.path) != state:
                continue  # changed while read: read again
            watched._seen = state
            return await self._load(watched, data)
        return None  # still changing: the next look

    async def _load(self, watched: WatchedFile, data: bytes) -> str:
        name = watched.path.name
        try:
            new = watched.parse(data, name)
        except (AgreementFileError, AgreementsError) as exc:
            return self._refused(watched, str(exc))
        except Exception as exc:  # noqa: BLE001 - whatever the checks did not foresee refuses the file too
            return self._refused(watched, f"{name}: cannot be loaded ({type(exc).__name__})")
        change, counts = watched.swap(new)
        watched.failed = False
        metrics.AGREEMENTS_LOADED_AT.set(self.clock())
        metrics.AGREEMENTS_RELOAD_FAILED.set(1 if self.failed else 0)
        metrics.AGREEMENTS_RELOADS.labels(outcome="loaded").inc()
        first, *rest = counts.values()
        log.info(f"{watched.what} reloaded", path=str(watched.path), count=first,
                 **({"grants": rest[0]} if watched is self.files[0] else {}),
                 agreements_added=list(change.added), agreements_removed=list(change.removed),
                 agreements_changed=list(change.changed))
        if change and self.engine is not None:
            self._pending.append((name, {
                "sha256": hashlib.sha256(data).hexdigest(), "added": list(change.added),
                "removed": list(change.removed), "changed": list(change.changed), **counts}))
            await self._write_pending()
        return "loaded"

    def _refused(self, watched: WatchedFile, problem: str) -> str:
        watched.failed = True
        metrics.AGREEMENTS_RELOAD_FAILED.set(1)
        metrics.AGREEMENTS_RELOADS.labels(outcome="failed").inc()
        log.error(f"{watched.what} file not loaded: the last good agreements stay in force",
                  path=str(watched.path), problem=problem)
        return "failed"

    async def _write_pending(self) -> None:
        """The reloads' audit records, oldest first; one that cannot be written now is tried at the next look."""
        from hub.audit import record_operator_action
        from hub.store.schema import operator_actions

        while self._pending and self.engine is not None:
            target, detail = self._pending[0]
            try:
                async with self.engine.begin() as conn:
                    last = (await conn.execute(
                        select(operator_actions.c.detail)
                        .where(operator_actions.c.action == ACTION, operator_actions.c.target == target)
                        .order_by(operator_actions.c.action_id.desc()).limit(1))).scalar_one_or_none()
                    if not (isinstance(last, dict) and last.get("sha256") == detail["sha256"]):
                        await record_operator_action(conn, ACTOR, ACTION, target, detail)
            except Exception as exc:  # noqa: BLE001 - kept, and tried again at the next look
                log.error("agreements reload not yet audited", exc_type=type(exc).__name__)
                return
            self._pending.pop(0)

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Look every `interval` seconds until `stop` is set."""
        await every(interval, stop, self.check, log=log, failed="agreements file check failed", wait_first=True)
