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

A reload that changes the grants is an audit record: an `operator_actions` row
(actor `hub:agreements`, action `agreements-reloaded`, target the file's name,
detail its sha256 and the agreement ids added, removed and changed), chained
into `audit_chain` like every operator action. One process writes it (the one
running the back workers; hub/bootstrap.py `watch_agreements`), and not again
for a file whose sha256 the last such record already names.
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

from hub.observability import metrics
from hub.observability.logging import get_logger
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
class AgreementsWatcher:
    """One process's watch on the agreements file, swapping what it loads into `sharing`."""

    sharing: SharingAgreements
    path: Path
    known_field_groups: frozenset[str] | None
    # The file as it was when `sharing` was loaded from it (taken before the read: a change
    # made during it is seen at the first look).
    loaded_state: FileState | None
    # Set: this process writes the audit record of a reload that changes grants (one process does).
    engine: AsyncEngine | None = None
    clock: Callable[[], float] = time.time
    failed: bool = False  # the last look found a changed file that did not load
    _pending: list[dict[str, Any]] = field(default_factory=list)  # audit records not yet written

    def __post_init__(self) -> None:
        self._seen = self.loaded_state  # the state last acted on (loaded or refused)
        metrics.AGREEMENTS_LOADED_AT.set(self.clock())
        metrics.AGREEMENTS_RELOAD_FAILED.set(0)

    async def check(self) -> str | None:
        """One look at the file. None: unchanged since the last look (or still being written);
        else `loaded` (swapped in) or `failed` (refused: the last good agreements kept)."""
        await self._write_pending()
        for _ in range(3):
            state = file_state(self.path)
            if state == self._seen:
                return None
            if state is None:
                self._seen = None
                return self._refused("the file cannot be found or read")
            age = self.clock() - state[0] / 1e9
            if 0 <= age < SETTLE_SECONDS:  # written moments ago: perhaps not finished
                await asyncio.sleep(SETTLE_SECONDS - age)
                continue
            try:
                data = await asyncio.to_thread(self.path.read_bytes)
            except OSError as exc:
                self._seen = None
                return self._refused(f"the file cannot be read ({type(exc).__name__})")
            if file_state(self.path) != state:
                continue  # changed while read: read again
            self._seen = state
            return await self._load(data)
        return None  # still changing: the next look

    async def _load(self, data: bytes) -> str:
        try:
            new = SharingAgreements.parse(data, self.path.name, self.known_field_groups)
        except AgreementFileError as exc:
            return self._refused(str(exc))
        except Exception as exc:  # noqa: BLE001 - whatever the checks did not foresee refuses the file too
            return self._refused(f"{self.path.name}: cannot be loaded ({type(exc).__name__})")
        before = self.sharing.by_agreement()
        after = new.by_agreement()
        change = compare(before, after)
        self.sharing.replace_grants(new)
        self.failed = False
        metrics.AGREEMENTS_LOADED_AT.set(self.clock())
        metrics.AGREEMENTS_RELOAD_FAILED.set(0)
        metrics.AGREEMENTS_RELOADS.labels(outcome="loaded").inc()
        grants = sum(len(g) for g in after.values())
        log.info("data-sharing agreements reloaded", path=str(self.path), count=len(after), grants=grants,
                 agreements_added=list(change.added), agreements_removed=list(change.removed),
                 agreements_changed=list(change.changed))
        if change and self.engine is not None:
            self._pending.append({
                "sha256": hashlib.sha256(data).hexdigest(), "added": list(change.added),
                "removed": list(change.removed), "changed": list(change.changed),
                "agreements": len(after), "grants": grants})
            await self._write_pending()
        return "loaded"

    def _refused(self, problem: str) -> str:
        self.failed = True
        metrics.AGREEMENTS_RELOAD_FAILED.set(1)
        metrics.AGREEMENTS_RELOADS.labels(outcome="failed").inc()
        log.error("data-sharing agreements file not loaded: the last good agreements stay in force",
                  path=str(self.path), problem=problem)
        return "failed"

    async def _write_pending(self) -> None:
        """The reloads' audit records, oldest first; one that cannot be written now is tried at the next look."""
        from hub.audit import record_operator_action
        from hub.store.schema import operator_actions

        while self._pending and self.engine is not None:
            detail = self._pending[0]
            try:
                async with self.engine.begin() as conn:
                    last = (await conn.execute(
                        select(operator_actions.c.detail).where(operator_actions.c.action == ACTION)
                        .order_by(operator_actions.c.action_id.desc()).limit(1))).scalar_one_or_none()
                    if not (isinstance(last, dict) and last.get("sha256") == detail["sha256"]):
                        await record_operator_action(conn, ACTOR, ACTION, self.path.name, detail)
            except Exception as exc:  # noqa: BLE001 - kept, and tried again at the next look
                log.error("data-sharing agreements reload not yet audited", exc_type=type(exc).__name__)
                return
            self._pending.pop(0)

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Look every `interval` seconds until `stop` is set."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            try:
                await self.check()
            except Exception as exc:  # noqa: BLE001 - the next look tries again; the failure is logged
                log.error("data-sharing agreements file check failed", exc_type=type(exc).__name__)
