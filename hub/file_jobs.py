"""Council files processed in the background.

`POST /v1/council-files` checks the file as a whole (header, trailer, sender),
stores it (encrypted, in its `file_receipts` row) and answers 202 with
its id; `FileJobs` then records its rows a chunk at a time (500 rows by
default), mapping them from the stored text as it goes: only the chunk in
hand is held as mapped rows, whatever the file's length.

A chunk goes through ingest's bulk path (`IngestService.accept_bulk`): one
unit of the group commit (hub/ingest/group_commit.py), so one transaction
for the chunk, its people, their histories and earlier answers read in a
statement each, and every row judged in file order against that state (a
person's second row sees their first). Rows the bulk path leaves aside (a
package record, a person the council may add, a change a dispute holds) and
the later rows of the same person then go through the per-change path, one
person's rows one after another, different people at once. After each chunk
the per-row report entries (`file_rows`) and the progress (`rows_done`,
counts) are committed together. When the last chunk is done the receipt is
marked `processed` and the stored file is dropped.

Restart-safe: a file still `processing` when the hub stops (or is killed) is
resumed at the next start from its first unreported row. Rows of the
interrupted chunk that had been recorded are answered by ingest's idempotency
(same RECORD_ID); one whose first answer was given to this very file (same
correlation id, the file id) is reported as accepted, as it would have been.
A row rejected in the interrupted chunk is quarantined again on resume.

A failure inside the hub while the hub runs (a store gone for a moment, a
bug) is retried the same way, from the first unreported row, RETRIES times
with a growing pause; after the last the file is given up: `failed`, a file
problem naming the row it stopped at, every row from there reported rejected
("send it again"), the stored file dropped. Never `processing` with nothing
at work on it.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.council_files import LAYOUTS, FileStream, Layout, MappedRow, column_for, open_file
from hub.periodic import pause
from hub.crypto import DataProtector
from hub.ingest.service import BulkCache, BulkRow, Client, IngestService, Outcome, bulk_person_key
from hub.ingest.validation import FieldProblem
from hub.observability.logging import correlation_bound, get_logger
from hub.store.db import inline_writer, read_only, store_fault, write_transaction
from hub.store.schema import api_clients, file_receipts, file_rows

log = get_logger("hub.files")
NOT_RESPONSIBLE = ("no one with this NHS number is on the register with this council responsible: a package "
                   "is recorded by the person's responsible council")
CHANNEL = "file"
CHUNK = 500
# A file whose processing fails inside the hub: tried again from its first unreported row after
# RETRY_SECONDS (doubling) this many times, then given up (`FileJobs._give_up`).
RETRIES = 4
RETRY_SECONDS = 5.0
# A store that cannot be written (its disk full, read-only, locked: hub/store/db.py `store_fault`) is not
# the file's fault and no reason to give it up: tried again, the pause doubling up to this, until it can
# be written (the file stays `processing`, `rows_done` where it stopped), however long that takes.
STORE_RETRY_CAP_SECONDS = 60.0
NOT_RECORDED = ("was not recorded: the hub stopped on an internal error before this row's answer was kept; "
                "send it again (if it was recorded, it is answered as a duplicate)")
PARALLEL = 64  # people in flight at once (their rows share group-commit batches)
# The cyclic collector's youngest-generation threshold while a file is processed (hub/server.py
# tune_gc sets 20,000 for the process): see `fewer_collections`.
FILE_GC_THRESHOLD = 100_000
_gc_saved: tuple[int, int, int] | None = None
_gc_holders = 0
# The shared SQLite writer's page cache (KiB) while a file is processed (SQLite's default, which
# the hub keeps otherwise: 2,000 KiB): see `roomier_writer`.
FILE_CACHE_KIB = 16_384
_writer_saved: dict[Any, int] = {}  # engine -> its writer's page cache before, while files are in hand
_writer_holders: dict[Any, int] = {}


@contextmanager
def fewer_collections() -> Iterator[None]:
    """The cyclic collector's youngest generation collected every
    FILE_GC_THRESHOLD allocations rather than tune_gc's 20,000 while a file
    is processed, as before once no file is. The bulk path keeps each
    person's history and evaluation alive from chunk to chunk (BulkCache)
    and a chunk's rows, statements and answers until it is done, so every
    collection in the middle of a file walks tens of thousands of live
    objects to find a few dozen cycles (measured with gc.callbacks: 20
    collections of 15-60 ms at 20,000 rows, 30 us a row, 8% of the CPU);
    with the higher threshold most of a chunk's objects are freed by
    reference counting before a collection sees them. Cyclic garbage is
    still collected (every FILE_GC_THRESHOLD net allocations: a bound on
    what it can hold). Files processed at once share one hold: the last one
    done puts the process's thresholds back."""
    global _gc_saved, _gc_holders
    if _gc_holders == 0:
        saved = gc.get_threshold()
        # 0: the collector is off (leave it so); above FILE_GC_THRESHOLD already: nothing to raise
        if 0 < saved[0] < FILE_GC_THRESHOLD:
            gc.set_threshold(FILE_GC_THRESHOLD, *saved[1:])
            _gc_saved = saved
    _gc_holders += 1
    try:
        yield
    finally:
        _gc_holders -= 1
        if _gc_holders == 0 and _gc_saved is not None:
            if gc.get_threshold() == (FILE_GC_THRESHOLD, *_gc_saved[1:]):  # unless set otherwise meanwhile
                gc.set_threshold(*_gc_saved)
            _gc_saved = None


async def _writer_cache(engine: AsyncEngine, cache: int) -> int:
    """The shared writer connection's page cache set to `cache` (SQLite's
    `cache_size`: negative in KiB); what it was."""
    async with write_transaction(engine) as conn:  # the writer's turn: nothing written, nothing to fsync
        dbapi = conn.sync_connection.connection.dbapi_connection
        was = dbapi.execute("PRAGMA cache_size").fetchone()[0]
        dbapi.execute(f"PRAGMA cache_size={int(cache)}")
    return int(was)


@asynccontextmanager
async def roomier_writer(engine: AsyncEngine) -> AsyncIterator[None]:
    """On a SQLite file, the shared writer connection (hub/store/db.py
    InlineWriter: the group commit's, so the bulk path's) keeps up to
    FILE_CACHE_KIB of pages rather than 2 MB while a file is processed; as
    before once no file is. A chunk of 500 rows about 500 different people
    (a file of many people) puts an entry into random places of the indexes
    keyed by person or change id (ix_changes_person and the change and event
    ids' unique indexes; ix_access_decisions_person too until migration 0023
    dropped it): about 5 of the chunk's 2,600
    WAL frames a row at 50,000 rows, and with a 2 MB cache most of those pages
    are read back from the file first (17 pread64 calls a row, measured with
    strace -c, against 3 at 5,000 rows). The bigger cache keeps them. (The
    WAL is checkpointed by a thread of its own every quarter of a second,
    hub/store/db.py `WalCheckpointer`: every few chunks, each index page is
    copied to the database once rather than once a chunk, off the event
    loop.) Memory: the cache is at most FILE_CACHE_KIB, given back when the
    file is done. Files processed at once share one hold per engine. PostgreSQL and
    `:memory:`: nothing to do."""
    if inline_writer(engine) is None:
        yield
        return
    if _writer_holders.get(engine, 0) == 0:
        try:
            _writer_saved[engine] = await _writer_cache(engine, -FILE_CACHE_KIB)
        except Exception as exc:  # noqa: BLE001 - the defaults are no worse than before: carry on with them
            log.warning("council file: writer settings not raised", exc_type=type(exc).__name__)
    _writer_holders[engine] = _writer_holders.get(engine, 0) + 1
    try:
        yield
    finally:
        _writer_holders[engine] -= 1
        if _writer_holders[engine] == 0:
            del _writer_holders[engine]
            saved = _writer_saved.pop(engine, None)
            if saved is not None:
                try:
                    await _writer_cache(engine, saved)
                except Exception as exc:  # noqa: BLE001 - a bigger cache until restart
                    log.warning("council file: writer settings not put back", exc_type=type(exc).__name__)


def entry(row: MappedRow, outcome: Outcome, layout: Layout, own_correlation: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"row": row.row, "record_id": row.record_id}
    if not outcome.is_problem:
        duplicate = bool(outcome.body.get("duplicate"))
        if duplicate and own_correlation and outcome.body.get("correlation_id") == own_correlation:
            duplicate = False  # recorded by this file before a restart
        e["status"] = "duplicate" if duplicate else "accepted"
        if "package_id" in outcome.body:  # a package record (hub/money), not a register change
            e["package_id"] = outcome.body["package_id"]
        else:
            e["change_id"] = outcome.body.get("change_id")
        if outcome.body.get("warnings"):  # recorded, but it changed nothing (hub/ingest/service.py successor_warnings)
            e["warnings"] = [_in_file_terms(x, row.row, layout) for x in outcome.body["warnings"]]
        return e
    e["status"] = "rejected"
    if outcome.status_code == 403 and outcome.body.get("rule"):  # refused by the access policy: nothing kept
        e["rule"] = outcome.body["rule"]
    e["errors"] = [_in_file_terms(x, row.row, layout) for x in outcome.body.get("errors", [])]
    if outcome.body.get("quarantine_id"):
        e["quarantine_id"] = outcome.body["quarantine_id"]
    return e


def _in_file_terms(error: dict[str, str], row: int, layout: Layout) -> dict[str, str]:
    """The hub's own validation names canonical fields; the council knows its columns."""
    name = error.get("field", "")
    if name.startswith("row "):
        return error
    column = column_for(layout, name)
    return {"field": f"row {row}, column {column}" if column else f"row {row}, field {name}",
            "reason": error.get("reason", "")}


async def ingest_row(ingest: IngestService, client: Client, row: MappedRow, packages: Any = None) -> Outcome:
    # The access policy before validation, on every row: a row about someone not on the register and
    # one about another council's person get one identical row error (no membership oracle), and
    # nothing of either is kept, whatever else is wrong with the row; a trust's change type is refused
    # whoever the row is about. A package record is asked as any council change: the package's own
    # rule (its responsible council) is the package service's.
    if row.data is None:
        if row.about is not None:
            refused = await ingest.write_precheck(client, row.about, CHANNEL)
            if refused is not None:
                return refused
        return await ingest.reject_unmapped(client, row.original, CHANNEL, list(row.problems), row.record_id)
    if row.data.get("record") == "package" and packages is not None:
        refused = await ingest.write_precheck(client, row.data, CHANNEL)
        if refused is not None:
            return refused
        data = {k: v for k, v in row.data.items() if k != "record"}
        outcome = await packages.record(client, data, row.original, CHANNEL)
        if outcome.status_code == 404:  # not on the register, or not this council's: held like any bad row
            problem = FieldProblem(f"row {row.row}, column NHS_NO", NOT_RESPONSIBLE)
            return await ingest.reject_unmapped(client, row.original, CHANNEL, [problem], row.record_id)
        return outcome
    refused = await ingest.write_precheck(client, row.data, CHANNEL)
    if refused is not None:
        return refused
    return await ingest.accept_mapped(client, row.data, row.original, CHANNEL, prechecked=True)


def counts(entries: Iterable[dict[str, Any]]) -> dict[str, int]:
    statuses = [e["status"] for e in entries]
    return {"rows": len(statuses), "accepted": statuses.count("accepted"),
            "duplicates": statuses.count("duplicate"), "rejected": statuses.count("rejected")}


async def report_of(engine: AsyncEngine, receipt: Any) -> list[dict[str, Any]]:
    """A receipt's per-row report: its own rows, its first receipt's for a
    replayed file (accepted rows shown as duplicates), or the report kept in
    the receipt by hubs before file_rows."""
    if receipt.report is not None:
        return list(receipt.report)
    file_id = receipt.replay_of if receipt.status == "replayed" else receipt.file_id
    async with read_only(engine) as conn:
        entries = (await conn.execute(select(file_rows.c.entry).where(file_rows.c.file_id == file_id)
                                      .order_by(file_rows.c.row))).scalars().all()
    if receipt.status == "replayed":
        return [{**e, "status": "duplicate"} if e["status"] == "accepted" else e for e in entries]
    return list(entries)


_INSERT_FILE_ROWS = file_rows.insert()


def _open_stored(protector: DataProtector, content: bytes, fmt: str) -> FileStream:
    return open_file(protector.decrypt(content), LAYOUTS[fmt])


def _take(rows: Iterator[MappedRow], n: int, keep: bool = True) -> list[MappedRow]:
    """The next `n` rows mapped (run in a worker thread: mapping is pure Python); `keep` False: passed over."""
    if keep:
        return list(itertools.islice(rows, n))
    for _ in itertools.islice(rows, n):
        pass
    return []


class FileJobs:
    def __init__(self, engine: AsyncEngine, ingest: IngestService, protector: DataProtector,
                 chunk: int = CHUNK, packages: Any = None, bulk: bool = True) -> None:
        self._engine = engine
        self._packages = packages  # hub/money PackageService: package records in council files
        self._ingest = ingest
        self._protector = protector
        self._chunk = chunk
        self._bulk = bulk  # False: every row through the per-change path (the way before bulk)
        self._tasks: dict[str, asyncio.Task] = {}
        self._stop = asyncio.Event()
        self.retries = RETRIES
        self.retry_seconds = RETRY_SECONDS

    def start(self, file_id: str, resumed: bool = False) -> None:
        """Process a stored file in the background (no-op if already running)."""
        running = self._tasks.get(file_id)
        if running is not None and not running.done():
            return
        self._tasks[file_id] = asyncio.create_task(self._run(file_id, resumed), name=f"council-file-{file_id}")

    async def resume(self) -> None:
        """At start-up: carry on with every file accepted but not finished."""
        async with read_only(self._engine) as conn:
            ids = (await conn.execute(select(file_receipts.c.file_id).where(file_receipts.c.status == "processing")
                                      .order_by(file_receipts.c.received_at))).scalars().all()
        for file_id in ids:
            log.info("council file resumed", file_id=file_id)
            self.start(file_id, resumed=True)

    async def wait(self, file_id: str) -> None:
        task = self._tasks.get(file_id)
        if task is not None:
            await asyncio.shield(task)

    async def close(self) -> None:
        """Stop after the chunk in hand (the rest is resumed at the next start)."""
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _run(self, file_id: str, resumed: bool) -> None:
        """Process the file; a failure inside the hub (a store that went away, a bug) is retried from the
        first unreported row after RETRY_SECONDS, doubling, RETRIES times; then the file is given up
        (`_give_up`): never left `processing` with nothing at work on it until the next restart. A store
        that cannot be written (`store_fault`) is waited out instead, however long: not counted as a
        retry, the pause capped at STORE_RETRY_CAP_SECONDS."""
        attempt = waits = 0
        while True:
            try:
                with correlation_bound(file_id), fewer_collections():
                    async with roomier_writer(self._engine):
                        await self._process(file_id, resumed)
                return
            except Exception as exc:  # noqa: BLE001 - retried, then given up; never a job that just stops
                fault = store_fault(exc)
                if fault is None:
                    attempt += 1
                waits += 1
                log.error("council file processing failed", file_id=file_id, exc_type=type(exc).__name__,
                          count=waits, **({"error_kind": fault} if fault else {}))
            if self._stop.is_set():
                return  # stopping: resumed at the next start
            if attempt > self.retries:
                try:
                    with correlation_bound(file_id):
                        await self._give_up(file_id)
                except Exception as exc:  # noqa: BLE001 - still processing: resumed at the next start
                    log.error("council file could not be given up", file_id=file_id, exc_type=type(exc).__name__)
                return
            # Rows of the interrupted chunk this file recorded are its own (accepted), as after a restart.
            resumed = True
            delay = min(self.retry_seconds * 2 ** min(waits - 1, 16), max(self.retry_seconds, STORE_RETRY_CAP_SECONDS)) \
                if fault else self.retry_seconds * 2 ** (attempt - 1)
            if await pause(self._stop, delay):
                return

    async def _give_up(self, file_id: str) -> None:
        """After the last retry: every row not yet reported gets a report entry (rejected, naming the row,
        send it again), so each row of the file is accepted, duplicate or rejected; the receipt is marked
        `failed` with a file problem saying from which row, and the stored file is dropped. Rows already
        reported stand; a row the hub did record before it stopped is answered as a duplicate when the
        file (or the row) is sent again."""
        async with read_only(self._engine) as conn:
            receipt = (await conn.execute(select(file_receipts).where(file_receipts.c.file_id == file_id))).one()
        if receipt.status != "processing":
            return
        done = receipt.rows_done or 0
        total = done
        rows: Iterator[MappedRow] = iter(())
        try:
            if receipt.content is not None:
                opened = await asyncio.to_thread(_open_stored, self._protector, receipt.content, receipt.format)
                rows = itertools.islice(opened.rows(), done, None)
        except Exception as exc:  # noqa: BLE001 - the rows cannot be listed: the file problem still says from where
            log.error("council file rows not listed", file_id=file_id, exc_type=type(exc).__name__)
        problem = [{"field": "(file)", "reason": f"the hub stopped recording this file at row {done + 1} after "
                    "an internal error (logged under the file id): rows from there are reported rejected, "
                    "not recorded; send the file again (rows already recorded are answered as duplicates)"}]
        del receipt
        while True:
            try:
                chunk = await asyncio.to_thread(_take, rows, self._chunk)
            except Exception as exc:  # noqa: BLE001 - as far as the rows could be listed
                log.error("council file rows not listed", file_id=file_id, exc_type=type(exc).__name__)
                chunk = []
            if not chunk:
                break
            total += len(chunk)
            entries = [{"row": r.row, "record_id": r.record_id, "status": "rejected",
                        "errors": [{"field": f"row {r.row}", "reason": NOT_RECORDED}]} for r in chunk]
            async with write_transaction(self._engine) as conn:
                await conn.execute(_INSERT_FILE_ROWS, [{"file_id": file_id, "row": e["row"], "entry": e}
                                                        for e in entries])
                await conn.execute(file_receipts.update().where(file_receipts.c.file_id == file_id).values(
                    rows_done=total, rejected=file_receipts.c.rejected + len(entries)))
        async with write_transaction(self._engine) as conn:
            await conn.execute(file_receipts.update().where(file_receipts.c.file_id == file_id)
                               .values(status="failed", content=None, problems=problem,
                                       claim=None))  # the file may be sent again: recorded under a new receipt
        log.error("council file given up", file_id=file_id, status="failed", count=total - done)

    async def _process(self, file_id: str, resumed: bool) -> None:
        async with read_only(self._engine) as conn:
            receipt = (await conn.execute(select(file_receipts).where(file_receipts.c.file_id == file_id))).one()
            c = (await conn.execute(select(api_clients).where(api_clients.c.client_id == receipt.source))).one()
        if receipt.status != "processing":
            return
        client = Client(c.client_id, c.name, c.org_code, c.org_kind, tuple(c.scopes))
        layout = LAYOUTS[receipt.format]
        # Off the event loop (a worker thread, in turns of the GIL): reading a 20 MB file and mapping its rows
        # are pure Python, seconds for a large file with quoted fields, and the API answers meanwhile.
        stream = await asyncio.to_thread(_open_stored, self._protector, receipt.content, receipt.format)
        done = receipt.rows_done or 0
        del receipt  # the encrypted copy
        rows = stream.rows()
        await asyncio.to_thread(_take, rows, done, False)  # reported before a restart (mapped for RECORD_ID repeats)
        own = file_id if resumed else None
        cache = BulkCache()  # people's histories from chunk to chunk, bounded
        while True:
            if self._stop.is_set():
                return
            chunk = await asyncio.to_thread(_take, rows, self._chunk)
            if not chunk:
                break
            if self._bulk:
                entries = await self._bulk_entries(client, layout, chunk, own, cache)
            else:
                entries = await self._chunk_entries(client, layout, chunk, own)
            own = None  # only the interrupted chunk can hold rows this file recorded before
            c = counts(entries)
            done += len(chunk)
            # The chunk's report rows and progress: on SQLite through the shared inline writer, in turn with
            # ingest's transactions (a second connection would poll for the write lock), rows as one executemany.
            async with write_transaction(self._engine) as conn:
                await conn.execute(_INSERT_FILE_ROWS, [{"file_id": file_id, "row": e["row"], "entry": e}
                                                        for e in entries])
                await conn.execute(file_receipts.update().where(file_receipts.c.file_id == file_id).values(
                    rows_done=done, accepted=file_receipts.c.accepted + c["accepted"],
                    duplicates=file_receipts.c.duplicates + c["duplicates"],
                    rejected=file_receipts.c.rejected + c["rejected"]))
            del chunk, entries
        async with write_transaction(self._engine) as conn:
            await conn.execute(file_receipts.update().where(file_receipts.c.file_id == file_id)
                               .values(status="processed", content=None))
        log.info("council file processed", source=client.client_id, channel=CHANNEL, status="processed",
                 count=done, file_id=file_id)

    async def _bulk_entries(self, client: Client, layout: Layout, chunk: list[MappedRow],
                            own: str | None, cache: BulkCache | None = None) -> list[dict[str, Any]]:
        """The chunk through ingest's bulk path; what it leaves aside (and each
        such person's later rows) through the per-change path afterwards."""
        aside: set[str] = set()  # people whose rows from here on go the per-change way
        bulk: list[MappedRow] = []
        for row in chunk:
            # The row's person is looked up only once someone's rows go aside (a package record's
            # person's do): until then every row goes the bulk way.
            if (row.data or {}).get("record") == "package" or aside:
                key = bulk_person_key(row.data if row.data is not None else row.about)
                if (row.data or {}).get("record") == "package" or (key is not None and key in aside):
                    if key is not None:
                        aside.add(key)
                    continue
            bulk.append(row)
        outcomes: dict[int, Outcome] = {}
        answers = await self._ingest.accept_bulk(
            client, [BulkRow(r.data, r.original, r.problems, r.record_id, r.about) for r in bulk], CHANNEL, cache)
        for row, outcome in zip(bulk, answers, strict=True):
            if outcome is not None:
                outcomes[row.row] = outcome
        rest = [r for r in chunk if r.row not in outcomes]
        if rest:
            outcomes |= await self._one_by_one(client, rest)
        return [entry(r, outcomes[r.row], layout, own) for r in chunk]

    async def _chunk_entries(self, client: Client, layout: Layout, chunk: list[MappedRow],
                             own: str | None) -> list[dict[str, Any]]:
        outcomes = await self._one_by_one(client, chunk)
        return [entry(r, outcomes[r.row], layout, own) for r in chunk]

    async def _one_by_one(self, client: Client, chunk: list[MappedRow]) -> dict[int, Outcome]:
        """Each row through the per-change path: one person's rows in file
        order, different people at once (group commit batches them)."""
        by_person: dict[Any, list[MappedRow]] = {}
        for row in chunk:
            key = bulk_person_key(row.data if row.data is not None else row.about) or ("row", row.row)
            by_person.setdefault(key, []).append(row)
        outcomes: dict[int, Outcome] = {}
        gate = asyncio.Semaphore(PARALLEL)

        async def person(rows: list[MappedRow]) -> None:
            async with gate:
                for r in rows:
                    outcomes[r.row] = await ingest_row(self._ingest, client, r, self._packages)

        await asyncio.gather(*(person(rs) for rs in by_person.values()))
        return outcomes

