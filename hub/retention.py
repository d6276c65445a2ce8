"""Retention: how long the hub keeps what it no longer needs, and the purge
job that enforces it (settings `S117_RETAIN_*_DAYS`; 0 keeps for ever).

- delivered payloads: the FHIR message of a delivered delivery is emptied
  (the delivery row, its ids, status and timing stay for the trace);
- the outbox/log: a message every consumer group has committed past (SQL log)
  or that the relay has sent to Kafka, is deleted once old enough, unless a
  dead letter still needs it for a replay or a council file not yet written
  (a council-file delivery pending or held) still needs it for its row;
- the same messages on disk (`S117_EXPORT_DIR`), on the same cutoff: a `file` channel's day
  files (`<org>/<YYYY-MM-DD>.ndjson`, by the day in the name) and council files the council
  acknowledged (`<org>/outbound/<name>` and its `.sha256`, and their copies in `outbound/ack/`,
  by the day it acknowledged them); a file not yet acknowledged stays (the overdue alert names
  it). Nothing that is a symbolic link, or not a regular file, is followed or removed;
- quarantine raw input: emptied (the reasons and ids stay);
- audit entries: whole days dropped from the start of the chain (hub/audit.py
  keeps the last dropped hash as the anchor, so what remains still verifies);
- the audit records behind them (each table in `hub.audit.SOURCES`:
  `disclosures`, `access_decisions`, `operator_actions`), on the same cutoff
  (dated before its day), once chained (at or below the chain's cursor for
  the table, and below the table's open gaps in `audit_gaps`: ids the chain
  read past while their transaction was still open) and their entry purged
  (no entry left in `audit_chain` for it): `audit verify` checks only the
  entries left, each against its record, so it never finds a record missing.
  A record written late (not yet chained, or committed after the chain read
  past its id), or chained after its day was signed (its entry kept after the
  anchor), stays until its entry goes. Counted as `audit_<table>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.periodic import every
from hub.domain.dates import england_day
from hub.audit import SOURCES, AuditChain, Source
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.schema import (
    audit_chain,
    audit_cursors,
    audit_gaps,
    bus_messages,
    consumer_offsets,
    council_exports,
    council_file_subscriptions,
    dead_letters,
    deliveries,
    deliveries_with_messages,
    delivery_messages,
    quarantine,
)

log = get_logger("hub.retention")
BATCH = 5000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    delivered_payload_days: int = 30
    outbox_days: int = 30
    quarantine_raw_days: int = 90
    audit_days: int = 2922  # 8 years


_DAY_FILE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})\.ndjson$")  # a `file` channel's (hub/delivery/file_export.py)
_ORG_DIR = re.compile(r"^[A-Za-z0-9]{1,16}$")  # as hub/exports.py names them
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _unlink_regular(dir_fd: int, name: str) -> int:
    """Remove `name` from `dir_fd` if it is a regular file (never a link); 1 if removed."""
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return 0
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return 0
    return 1


def _open_sub(dir_fd: int, name: str) -> int | None:
    try:
        return os.open(name, _DIR, dir_fd=dir_fd)
    except OSError:  # missing, a link, not a directory
        return None


class Purger:
    def __init__(self, engine: AsyncEngine, audit: AuditChain, policy: RetentionPolicy,
                 export_dir: Path | None = None) -> None:
        self._engine = engine
        self._audit = audit
        self._policy = policy
        self._export_dir = export_dir

    async def run_once(self, now: datetime | None = None) -> dict[str, int]:
        now = now or datetime.now(UTC)
        p = self._policy
        done = {"delivered_payloads": 0, "outbox": 0, "quarantine_raw": 0, "audit": 0}
        if p.delivered_payload_days:
            done["delivered_payloads"] = await self._batched(lambda: delivery_messages.update().where(
                delivery_messages.c.delivery_seq.in_(
                    select(deliveries.c.delivery_seq).select_from(deliveries_with_messages).where(
                        deliveries.c.status == "delivered",
                        deliveries.c.delivered_at < now - timedelta(days=p.delivered_payload_days),
                        func.length(delivery_messages.c.payload) > 0).limit(BATCH))).values(payload=b""))
            if self._export_dir is not None:
                cutoff = now - timedelta(days=p.delivered_payload_days)
                # A day file holds the lines written on its day in England (hub/delivery/file_export.py):
                # those of a day before the cut-off's were all written before it.
                done["file_channel_files"] = await asyncio.to_thread(self._purge_day_files, england_day(cutoff))
                done["council_export_files"] = await self._purge_council_files(cutoff)
        if p.outbox_days:
            done["outbox"] = await self._purge_outbox(now - timedelta(days=p.outbox_days))
        if p.quarantine_raw_days:
            done["quarantine_raw"] = await self._batched(lambda: quarantine.update().where(
                quarantine.c.quarantine_id.in_(select(quarantine.c.quarantine_id).where(
                    quarantine.c.received_at < now - timedelta(days=p.quarantine_raw_days),
                    func.length(quarantine.c.raw) > 0).limit(BATCH))).values(raw=b""))
        if p.audit_days:
            cutoff = (now - timedelta(days=p.audit_days)).date()
            done["audit"] = await self._audit.purge_before(cutoff)
            since = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
            for source in list(SOURCES):
                done[f"audit_{source.name}"] = await self._purge_audit_source(source, since)
        for kind, n in done.items():
            if n:
                metrics.PURGED.labels(kind=kind).inc(n)
        if any(done.values()):
            log.info("retention purge", count=sum(done.values()))
        return done

    @contextlib.contextmanager
    def _export_top(self) -> Iterator[int | None]:
        """The export directory opened (its descriptor, closed after), or None if it cannot be: the walks
        below go down from it by descriptor, never following a link."""
        assert self._export_dir is not None
        try:
            top = os.open(self._export_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            yield None
            return
        try:
            yield top
        finally:
            os.close(top)

    def _purge_day_files(self, before: date) -> int:
        """A `file` channel's day files dated before `before`, in every organisation's directory."""
        n = 0
        with self._export_top() as top:
            if top is None:
                return 0
            for org in os.listdir(top):
                if not _ORG_DIR.match(org) or (fd := _open_sub(top, org)) is None:
                    continue
                try:
                    for name in os.listdir(fd):
                        m = _DAY_FILE.match(name)
                        if m is None:
                            continue
                        try:
                            day = date(int(m[1]), int(m[2]), int(m[3]))
                        except ValueError:
                            continue
                        if day < before:
                            n += _unlink_regular(fd, name)
                finally:
                    os.close(fd)
        return n

    async def _purge_council_files(self, before: datetime) -> int:
        """Council files acknowledged before `before`: the file and its manifest in `outbound/` and `ack/`."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(council_exports.c.org_code, council_exports.c.file_name).where(
                council_exports.c.state == "acknowledged", council_exports.c.acknowledged_at < before,
                council_exports.c.file_name.is_not(None)))).all()
            await conn.rollback()
        return await asyncio.to_thread(self._unlink_council_files, [(r.org_code, r.file_name) for r in rows]) \
            if rows else 0

    def _unlink_council_files(self, files: list[tuple[str, str]]) -> int:
        n = 0
        with self._export_top() as top:
            if top is None:
                return 0
            for org, name in files:
                if not _ORG_DIR.match(org) or "/" in name or name.startswith("."):
                    continue
                fds = []
                try:
                    if (org_fd := _open_sub(top, org)) is not None:
                        fds.append(org_fd)
                        if (out := _open_sub(org_fd, "outbound")) is not None:
                            fds.append(out)
                            if (ack := _open_sub(out, "ack")) is not None:
                                fds.append(ack)
                    for fd in fds[1:]:
                        n += _unlink_regular(fd, name)
                        _unlink_regular(fd, name + ".sha256")
                finally:
                    for fd in fds:
                        os.close(fd)
        return n

    async def _batched(self, statement) -> int:  # noqa: ANN001
        total = 0
        while True:
            async with self._engine.begin() as conn:
                n = (await conn.execute(statement())).rowcount or 0
            total += n
            if n < BATCH:
                return total

    async def _purge_audit_source(self, source: Source, cutoff: datetime) -> int:
        """Delete the source's records dated before `cutoff` that the chain has read (id at or below
        its cursor, below its first open gap) and whose entry is no longer in the chain (purged):
        never a record not yet chained, nor one an entry left in the chain still checks."""
        table = source.table
        if "at" not in table.c:
            return 0
        idcol, at = table.c[source.id_column], table.c.at
        async with self._engine.connect() as conn:
            cursor = (await conn.execute(select(audit_cursors.c.last_id)
                                         .where(audit_cursors.c.source == source.name))).scalar()
            # Ids the chain read past while a transaction that may commit them was open: not chained yet.
            gap = (await conn.execute(select(func.min(audit_gaps.c.first_id))
                                      .where(audit_gaps.c.source == source.name))).scalar()
            # The first record dated on or after the cutoff (the table read in id order from its
            # oldest, which the purge keeps few: no index on `at` is needed). Every record below it
            # is older than the cutoff; one dated earlier but written later waits for a later round.
            young = (await conn.execute(select(idcol).where(at >= cutoff).order_by(idcol).limit(1))).scalar()
            await conn.rollback()
        if not cursor:
            return 0
        bound = min(b for b in (cursor + 1, young, gap) if b is not None)
        live = exists().where(audit_chain.c.source == source.name, audit_chain.c.source_id == idcol)
        return await self._batched(lambda: delete(table).where(idcol.in_(
            select(idcol).where(idcol < bound, at < cutoff, ~live).order_by(idcol).limit(BATCH))))

    async def _purge_outbox(self, cutoff: datetime) -> int:
        async with self._engine.connect() as conn:
            floor = (await conn.execute(select(consumer_offsets.c.topic, func.min(consumer_offsets.c.next_offset))
                                        .group_by(consumer_offsets.c.topic))).all()
            await conn.rollback()
        committed = {topic: n for topic, n in floor}
        needed = select(dead_letters.c.offset).where(dead_letters.c.replayed_at.is_(None),
                                                     dead_letters.c.topic == bus_messages.c.topic)
        # A council file not yet written reads its rows' events from the log (hub/exports.py): a
        # council-file delivery still pending or held keeps its message.
        unwritten = select(deliveries.c.event_id).where(
            deliveries.c.subscription_id.in_(select(council_file_subscriptions.c.subscription_id)),
            deliveries.c.status.in_(("pending", "held")))
        total = 0
        for topic, below in committed.items():
            total += await self._batched(lambda topic=topic, below=below: delete(bus_messages).where(
                bus_messages.c.offset.in_(select(bus_messages.c.offset).where(
                    bus_messages.c.topic == topic, bus_messages.c.offset < below,
                    bus_messages.c.created_at < cutoff, bus_messages.c.offset.not_in(needed),
                    bus_messages.c.event_id.not_in(unwritten)).limit(BATCH))))
        # Kafka mode: the relay's mark is enough (Kafka keeps the log; the outbox row was only the hand-over).
        total += await self._batched(lambda: delete(bus_messages).where(bus_messages.c.offset.in_(
            select(bus_messages.c.offset).where(and_(bus_messages.c.relayed_at.is_not(None),
                                                     bus_messages.c.relayed_at < cutoff,
                                                     bus_messages.c.event_id.not_in(unwritten))).limit(BATCH))))
        return total


async def run_housekeeping(audit: AuditChain, purger: Purger, chain_seconds: float, purge_seconds: float,
                           stop: asyncio.Event) -> None:
    """Chain new audit records every few seconds; checkpoint finished days; purge hourly."""
    last_purge = 0.0
    loop = asyncio.get_running_loop()

    async def round_() -> None:
        nonlocal last_purge
        while await audit.extend():
            pass
        await audit.checkpoint(datetime.now(UTC).date())
        if purge_seconds and loop.time() - last_purge >= purge_seconds:
            await purger.run_once()
            last_purge = loop.time()

    await every(chain_seconds, stop, round_, log=log, failed="housekeeping failed", level="warning")
