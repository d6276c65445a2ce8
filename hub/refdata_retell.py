"""Telling the bodies a change of reference data moves (clinical safety hazard H-03).

The hub keeps no determination: every evaluation asks the reference data in
use. When the operator loads NHS England's newer GP practice files
(`S117_ODS_EPRACCUR_FILE`, `S117_GP_PRACTICE_MAP_FILE`: hub/refdata/ods_files.py)
a person's responsible ICB (a practice moved sub-ICB location, ICBs merged)
can change with no register change at all; when the operator loads
mySociety's newer register of local authorities (`S117_LOCAL_AUTHORITIES_FILE`:
hub/refdata/council_files.py), so can their responsible council (the council
of their residence abolished by a reorganisation, its successor named). Left
to the next event about each person, the body that lost them would go on
believing it is responsible, and the one that gained them would not know: a
person owed aftercare falling between bodies.

So at every start the back workers compare the reference data in use (a
fingerprint of each dataset: its name, date and, for an operator's file, its
bytes' sha256) with the one last recorded (`operator_actions`, action
`reference-data-in-use`). When it differs (or none is recorded: the first start
of this version on a store with people on its register; an empty register has
nothing to tell and records nothing), each person on the register is evaluated
again; one whose responsible council or ICB differs from what the register
holds (`register_status`, as their last event left it) gets, in one write
transaction under the topic's publish lock and their row lock:

- the register's row for them as they now stand (the summary's counts), and
- one event on the log, `s117-notification-corrected` with the header
  `reference_data` (the fingerprint), routed to no one itself: the dispatcher
  tells it as a retraction is told (hub/delivery/dispatcher.py), each body
  whose position it moves hearing the difference, a correction superseding the
  last message it had where it was told before, with the reason in words.

Then the new fingerprint is recorded, with how many people were looked at and
how many moved.

A county split between several successors moves its people to no council
(hazard H-03: undetermined until a register change names the successor
covering the address; hub/domain/rules/engine.py `_hold_council`): the
register's row holds no council, the county (if it still has an agreement) is
corrected and the hospital's council, now coordinating, told. The rules'
reading of the data is part of the fingerprint (`RULES`), so the first start
of the version that made splits undetermined tells the people split before it.

A register of local authorities can name a reorganisation still to come (a
council ending on 31 March, its successor from 1 April): loaded before that
day it moves nobody yet. So the fingerprint also holds the latest day, up to
today, on which a council's successor took over (`succession_days`), and the
back workers, after the start's pass, wait for the next such day in the data
and run the pass again at England's midnight: the councils the vesting day
moves are told that day, without a restart (and a restart after it tells them
too). A pass cut short (the hub stopped, the store unavailable) is
run again at the next start (the people told already hold their new row, so
they are not told twice); one that fails is tried again every 30 s. The event id
is the person's and the fingerprint's: two back processes on one store publish
it once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid4, uuid5

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub import periodic
from hub.audit import record_operator_action
from hub.bus.payload import event_payload, status_on_the_bus
from hub.bus.port import EVENTS_TOPIC, HISTORY_CHANGES, LATE, REFERENCE_DATA, BusMessage, history_changes
from hub.bus.sql import lock_topic, publish
from hub.codec import from_jsonable, to_jsonable
from hub.delivery.dispatcher import REFERENCE_DATA_REASON
from hub.domain.agreements import AgreementBook
from hub.domain.dates import ENGLAND, england_day
from hub.domain.model import DomainEvent, EventType, RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.rules import evaluate
from hub.domain.rules.precedence import change_order
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.periodic import pause
from hub.refdata.ods_files import Dataset
from hub.register_counts import record_status
from hub.store.schema import not_retracted, operator_actions, persons, register_changes, register_status

log = get_logger("hub.refdata_retell")

ACTOR = "hub:reference-data"  # operator_actions.client_id of the record
ACTION = "reference-data-in-use"
SOURCE = "reference-data"  # the event's `source` header
RETRY_SECONDS = 30.0
# Waiting for a succession day, the workers look again at least this often (a wall clock set while waiting).
LOOK_AGAIN_SECONDS = 6 * 3600.0


def dataset_parts(datasets: Iterable[Dataset]) -> list[dict[str, Any]]:
    """What the reference data in use is made of: each dataset's name, date and, for an operator's file, its
    bytes' sha256 (no file's content, no path)."""
    parts = []
    for d in datasets:
        content = hashlib.sha256(Path(d.file).read_bytes()).hexdigest() if d.file else "shipped"
        parts.append({"dataset": d.name, "as_of": d.as_of.isoformat(), "operator_file": bool(d.file),
                      "sha256": content})
    return parts


# How the rules read the reference data, where a version of the hub changes it for people already on the
# register: part of the fingerprint, so the first start of such a version tells the bodies it moves, as newer
# data would. "council-split-undetermined": a council split between several successors is no responsible
# council after its vesting day (hazard H-03; hub/domain/rules/engine.py `_hold_council`): before it, the
# split county's code was kept, so people whose county was split (Northamptonshire 2021, Cumbria 2023) are
# told at that start: the county corrected, the hospital's council told it coordinates.
# "council-successor-without-gss-undetermined": so is a council succeeded by one the register lists without a
# GSS code yet (before, the abolished code was kept, "unknown council <code>"), and a split where a successor
# lacks one (before, the successor with a code was taken for the whole area).
# "hospital-council-abolished-uncoordinated": a hospital whose council (hospital_sites.csv) is split or
# succeeded by one without a GSS code coordinates through no council (before, the abolished council was named
# coordinating): people with no council at such a hospital are told at that start, the abolished council
# no longer involved. None with the shipped sites and register (tests/unit/test_hospital_site_councils.py).
# "successor-named-earlier-in-the-stay-taken": a successor a register change named earlier in the same stay in
# hospital (under s2, when no split awaited one) is taken when a qualifying section begins in the stay and the
# council it determines is split (hub/domain/rules/engine.py `_take_successor_named_in_stay`; before, the
# council stayed undetermined until the naming was sent again): those people are told at that start, the
# successor named responsible and the hospital's council told it no longer coordinates.
RULES = ("council-split-undetermined; council-successor-without-gss-undetermined; "
         "hospital-council-abolished-uncoordinated; successor-named-earlier-in-the-stay-taken; "
         "successor-named-on-the-admission-day-taken; successor-named-in-an-earlier-stay-not-taken-out-of-a-stay")


def fingerprint(parts: list[dict[str, Any]], successions_from: date | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The reference data in use, as one hash, and what it is made of: each dataset (`dataset_parts`), the
    latest council succession in effect (`successions_from`) and how the rules read them (`RULES`)."""
    in_effect = successions_from.isoformat() if successions_from else None
    digest = hashlib.sha256(orjson.dumps({"datasets": parts, "successions_from": in_effect, "rules": RULES},
                                         option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest, parts


def seconds_until(day: date, now: datetime | None = None) -> float:
    """Seconds from `now` to the start of `day` in England (at least one minute)."""
    start = datetime.combine(day, time.min, tzinfo=ENGLAND)
    return max(60.0, (start - (now or datetime.now(UTC))).total_seconds())


def _bodies(status: S117Status) -> tuple[str | None, str | None]:
    council = status.responsible_council.org.code if status.responsible_council else None
    icb = status.responsible_commissioner.org.code if status.responsible_commissioner else None
    return council, icb


class ReferenceDataRetell:
    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook,
                 today: Callable[[], date] = england_day) -> None:
        self._engine, self._ref, self._agreements, self._today = engine, ref, agreements, today
        # The operator's files hashed once, at the first pass after the start that loaded them: a file
        # replaced on disk while the hub runs is not the data in use (it is loaded, and told, at the next start).
        self._parts: list[dict[str, Any]] | None = None

    def _datasets(self) -> tuple[Dataset, ...]:
        datasets = getattr(self._ref, "datasets", None)
        return datasets() if datasets is not None else ()

    def _succession_days(self) -> tuple[date, ...]:
        days = getattr(self._ref, "succession_days", None)
        return days() if days is not None else ()

    def today(self) -> date:
        return self._today()

    def next_succession(self, today: date) -> date | None:
        """The next day after `today` on which a council's successor takes over, in the data in use."""
        return min((d for d in self._succession_days() if d > today), default=None)

    async def run_once(self) -> int:
        """One pass if the reference data changed since the last recorded: how many people were told."""
        today = self._today()
        in_effect = max((d for d in self._succession_days() if d <= today), default=None)
        if self._parts is None:
            self._parts = dataset_parts(self._datasets())
        digest, parts = fingerprint(self._parts, in_effect)
        async with self._engine.connect() as conn:
            last = (await conn.execute(
                select(operator_actions.c.detail).where(operator_actions.c.action == ACTION)
                .order_by(operator_actions.c.action_id.desc()).limit(1))).scalar_one_or_none()
            people = (await conn.execute(select(register_status.c.person_id, register_status.c.council_code,
                                                register_status.c.icb_code))).all()
            await conn.rollback()
        if isinstance(last, dict) and last.get("fingerprint") == digest:
            return 0
        if not people:
            return 0  # nothing determined under any data yet: recorded once someone is on the register
        moved = 0
        for row in people:
            moved += await self._person(row.person_id, (row.council_code, row.icb_code), digest, today)
        async with self._engine.begin() as conn:
            await record_operator_action(conn, ACTOR, ACTION, digest[:100], {
                "fingerprint": digest, "datasets": parts, "people": len(people), "told": moved,
                "successions_from": in_effect.isoformat() if in_effect else None, "rules": RULES,
                "previous": last.get("fingerprint") if isinstance(last, dict) else None})
        log.info("reference data in use recorded", count=len(people), told=moved,
                 fingerprint=digest[:16])
        await self.count_awaiting(today)
        return moved

    async def count_awaiting(self, today: date) -> dict[str, int]:
        """`awaiting_successor` with this pass's data and day, set as the gauge."""
        return await awaiting_successor(self._engine, self._ref, self._agreements, today, publish=True)

    async def _person(self, person_id: str, held: tuple[str | None, str | None], digest: str, today: date) -> int:
        history = await self._history(person_id, self._engine)
        if not history or _bodies(evaluate(person_id, [c for _, c in history], self._ref, self._agreements,
                                           today)) == held:
            return 0
        try:
            async with self._engine.begin() as conn:
                # The topic's publish lock, then the person's row: no change of theirs commits between the
                # read and the event, so the history it is told against is exactly the one published before.
                await lock_topic(conn, EVENTS_TOPIC)
                await conn.execute(select(persons.c.person_id).where(persons.c.person_id == person_id)
                                   .with_for_update())
                history = await self._history(person_id, conn)
                held_row = (await conn.execute(select(register_status.c.council_code, register_status.c.icb_code)
                                               .where(register_status.c.person_id == person_id))).first()
                if not history or held_row is None:
                    return 0
                changes = [c for _, c in history]
                status = evaluate(person_id, changes, self._ref, self._agreements, today)
                if _bodies(status) == (held_row.council_code, held_row.icb_code):
                    return 0  # told meanwhile (a change of theirs, or another process's pass)
                latest = max(changes, key=change_order)
                event = DomainEvent(
                    event_type=EventType.NOTIFICATION_CORRECTED, person_id=person_id, change_id=latest.change_id,
                    occurred_on=today, summary=f"A position you were told was corrected: {REFERENCE_DATA_REASON}.",
                    details={"reason": REFERENCE_DATA_REASON})
                await record_status(conn, person_id, status, late=False)
                await publish(conn, BusMessage(
                    topic=EVENTS_TOPIC, key=person_id, event_id=str(uuid5(NAMESPACE_URL, f"refdata:{digest}:{person_id}")),
                    payload=event_payload(event, to_jsonable(latest), status_on_the_bus(status)),
                    headers={"correlation_id": str(uuid4()), "source": SOURCE,
                             "event_type": event.event_type.value, LATE: "1", REFERENCE_DATA: digest[:16],
                             HISTORY_CHANGES: history_changes([change_id for change_id, _ in history])}))
        except IntegrityError:
            return 0  # another back process published it first
        return 1

    @staticmethod
    async def _history(person_id: str, conn: Any) -> list[tuple[str, RegisterChange]]:
        stmt = select(register_changes.c.change_id, register_changes.c.canonical) \
            .where(register_changes.c.person_id == person_id, not_retracted())
        if isinstance(conn, AsyncEngine):
            async with conn.connect() as c:
                rows = (await c.execute(stmt)).all()
                await c.rollback()
        else:
            rows = (await conn.execute(stmt)).all()
        return [(r.change_id, from_jsonable(RegisterChange, r.canonical)) for r in rows]


# People evaluated per read of their histories (one query for a batch), the event loop given back between
# batches: a count over thousands of people without a council never holds the back workers' loop for long.
AWAITING_BATCH = 200
# The split councils this process has set the gauge for: one no longer awaited reads 0 (in prometheus_client's
# multiprocess mode a label cannot be removed, so it would otherwise keep its last count: an alert that never
# resolves).
_published: set[tuple[str, str]] = set()
# What people of a council with no addressable successor await, and what resolves it, by the rule that says so
# (`S117Status.council_split.rule`): the gauge's `awaiting` label and GET /v1/ops/council-splits' entries.
AWAITING = {
    "council-split": ("the-successor-named", "a 'moved' register change naming the successor covering the address: "
                      "residence_before_detention_la_gss (REST), Extension-S117-ResidenceBeforeDetentionCouncil "
                      "(FHIR), PRE_DETENTION_LA_GSS (council files)"),
    "council-successor-without-gss": ("the-successors-gss-code", "the hub operator's newer register of local "
                                      "authorities giving the successor its GSS code (S117_LOCAL_AUTHORITIES_FILE, "
                                      "S117_LOCAL_AUTHORITIES_AS_OF); where the area is split and a successor has a "
                                      "code, also a 'moved' register change naming it"),
}


async def awaiting_successor(engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook,
                             today: date, *, publish: bool = False,
                             rules: dict[str, str] | None = None) -> dict[str, int]:
    """How many people await a register change naming the successor of a council split between several
    successors (hazard H-03), by the split council's GSS code. Only people the register holds with no responsible
    council are evaluated (a split leaves none), their histories read `AWAITING_BATCH` at a time: the cost is
    that of the people without a council, not of the register. `publish`: set as the gauge
    `s117_council_split_awaiting_successor{council,awaiting}` (the back workers': `run_council_split_count` and
    each re-tell pass). `rules`, given: filled with each council's rule (`council-split`: a register change naming
    the successor resolves it; `council-successor-without-gss`: the operator's newer register). Codes and
    counts: nothing personal."""
    async with engine.connect() as conn:
        people = (await conn.execute(select(register_status.c.person_id).where(
            register_status.c.council_code.is_(None),
            register_status.c.entitled | register_status.c.in_hospital))).scalars().all()
        await conn.rollback()
    counts: dict[str, int] = {}
    rules = rules if rules is not None else {}
    for start in range(0, len(people), AWAITING_BATCH):
        batch = people[start:start + AWAITING_BATCH]
        histories: dict[str, list[RegisterChange]] = {}
        async with engine.connect() as conn:
            rows = (await conn.execute(select(register_changes.c.person_id, register_changes.c.canonical)
                                       .where(register_changes.c.person_id.in_(batch), not_retracted()))).all()
            await conn.rollback()
        for row in rows:
            histories.setdefault(row.person_id, []).append(from_jsonable(RegisterChange, row.canonical))
        for person_id, history in histories.items():
            status = evaluate(person_id, history, ref, agreements, today)
            if status.council_split is not None and status.council_basis_code:
                counts[status.council_basis_code] = counts.get(status.council_basis_code, 0) + 1
                rules[status.council_basis_code] = status.council_split.rule
        await asyncio.sleep(0)
    if publish:
        publish_awaiting(counts, rules)
    return dict(sorted(counts.items()))


def publish_awaiting(counts: dict[str, int], rules: dict[str, str]) -> None:
    """The gauge as `counts` say, each split council with what its people await (`rules`: by its rule), and 0
    for a council and cause this process counted before and counts no more."""
    now = {(council, AWAITING[rules[council]][0]): n for council, n in counts.items()}
    for council, awaiting in _published - now.keys():
        metrics.COUNCIL_SPLIT_AWAITING.labels(council=council, awaiting=awaiting).set(0)
    for (council, awaiting), count in now.items():
        metrics.COUNCIL_SPLIT_AWAITING.labels(council=council, awaiting=awaiting).set(count)
    _published.update(now)


async def run_council_split_count(engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook,
                                  every: float, stop: asyncio.Event,
                                  today: Callable[[], date] = england_day) -> None:
    """The back workers' count of people awaiting a split council's successor, at start and every `every`
    seconds (`S117_COUNCIL_SPLIT_COUNT_SECONDS`), set as the gauge: the alert S117CouncilSplitAwaitingSuccessor
    relies on it being current without anyone asking GET /v1/ops/council-splits."""
    async def count() -> None:
        await awaiting_successor(engine, ref, agreements, today(), publish=True)

    await periodic.every(every, stop, count, log=log, failed="council split count failed")


async def run_reference_data_retell(retell: ReferenceDataRetell, stop: asyncio.Event) -> None:
    """At start, and again at the start of each later day in the data on which a council's successor takes
    over; a pass that fails (the store unavailable) is tried again until it is done."""
    while not stop.is_set():
        try:
            await retell.run_once()
            upcoming = retell.next_succession(retell.today())
            if upcoming is None:
                return
            wait = min(seconds_until(upcoming), LOOK_AGAIN_SECONDS)
        except Exception as exc:  # noqa: BLE001 - logged by kind; tried again
            log.error("reference data change not yet told", exc_type=type(exc).__name__)
            wait = RETRY_SECONDS
        if await pause(stop, wait):
            return
