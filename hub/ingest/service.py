"""Ingest: authenticate -> idempotency -> validate or quarantine -> one transaction.

One transaction holds the person, the register change, the service-level
fact, the answer given to the source, and the outbox (bus) rows for every
domain event the rules derive. Either all of it is durable or none is.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.ids import uuid4, uuid5, uuid7
from hub.access import AccessPolicy, caller_of, record_decision
from hub.bus.port import EVENTS_TOPIC, LATE, LATER_EVENTS, BusMessage
from hub.bus.sql import lock_topic, publish
from hub.bus.payload import event_payload_fragment, json_fragment, status_fragment
from hub.codec import from_jsonable
from hub.crypto import DataProtector
from hub.domain.agreements import AgreementBook
from hub.domain.access import TEXTS, Decision, PersonFacts, Rule, decide_write
from hub.domain.model import ChangeType, DischargeDecision, Dispute, DomainEvent, RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.children import addresses_a_stays_council
from hub.domain.rules import Evaluation, derive_events, evaluate, evaluation
from hub.domain.rules.engine import successor_unchanged
from hub.domain.rules.precedence import is_late
from hub.domain.rules.timeline import TransferStep, revealed_steps
from hub.fhir.namespaces import HUB_BASE
from hub.domain.service_level import register_service_level
from hub.ingest.status_cache import StatusCache
from hub.ingest.cto_recall import ENDS_CTO_TYPES, ends_cto_in_force
from hub.ingest.group_commit import GroupCommit, WriteBehind
from hub.ingest.prefetch import HISTORIES, LOCK_PEOPLE, BatchReads, Hint, read_batch
from hub.ingest.contract import IDENTIFIER, RegisterChangeIn, change_digest
from hub.ingest.identity import CONFIRM_IDENTITY, identity_problem
from hub.ingest.nhs_number import nhs_number_problem, normalise
from hub.ingest.validation import UNCHECKED, FieldProblem, problems_from_pydantic, semantic_problems
from hub.observability import metrics
from hub.observability.logging import (
    bound_correlation_id,
    carry_on_request_line,
    get_logger,
    new_correlation_id,
    writes_at,
)
from hub.register_counts import _upsert as status_upsert, record_status, status_row
from hub.store import merged as merges_store
from hub.store.db import InList, Prepared, after_commit_hook, execute_prepared, insert_or_merge, snapshot, store_fault
from hub.store.merged import person_id_by_index
from hub.store.schema import (change_retractions, ingest_results, not_retracted, persons, quarantine, register_changes,
                              service_levels)
from hub.domain.workflows.held import hold_reason
from hub.workflows.held import hold_change
from hub.domain.dates import england_day

log = get_logger("hub.ingest")
EVENT_NAMESPACE = uuid.UUID("5b0f2c1e-7d1a-4c43-9a8e-117117117117")
PROBLEM_BASE = f"{HUB_BASE}/problems/"
RECORD_ATTEMPTS = 3


# The hot path's statements, built once (SQLAlchemy compiles each once and
# caches it; building a statement per change costs more than running it).
# The per-change path's statements, built once as prepared statements
# (hub.store.db.Prepared: on SQLite's inline writer and snapshots compiled once
# and run on the driver; elsewhere executed by SQLAlchemy).
_PREVIOUS_ANSWER = Prepared(select(ingest_results.c.status_code, ingest_results.c.body,
                                   ingest_results.c.payload_sha256).where(
    ingest_results.c.source == bindparam("source"), ingest_results.c.source_message_id == bindparam("smid")))
# FOR UPDATE serialises changes to one person on PostgreSQL (SQLite drops the
# clause: its writers are already serial).
_LOCK_PERSON = Prepared(select(persons.c.person_id, persons.c.details)
                        .where(persons.c.nhs_number_index == bindparam("index")).with_for_update())
_PERSON_DETAILS = Prepared(select(persons.c.details).where(persons.c.person_id == bindparam("person_id")))
_UPDATE_DETAILS = Prepared(persons.update().where(persons.c.person_id == bindparam("pid")).values(
    details=bindparam("new_details"), updated_at=bindparam("at")))
_PERSON_CHANGES = Prepared(select(register_changes.c.canonical)
                           .where(register_changes.c.person_id == bindparam("person_id"), not_retracted()))
# A person's history for their change's unit, with each change's `received_at` (`received_after`).
_PERSON_HISTORY = Prepared(select(register_changes.c.canonical, register_changes.c.received_at)
                           .where(register_changes.c.person_id == bindparam("person_id"), not_retracted()))
# How many changes the person has (the same count: the history held, hub/ingest/status_cache.py), the
# latest `received_at` of them, and how many of them were retracted (a person with any is read again:
# a retraction takes a change out of the history, so the count alone no longer names it).
_PERSON_CHANGE_COUNT = Prepared(select(
    func.count(), func.max(register_changes.c.received_at),
    select(func.count()).select_from(change_retractions)
    .where(change_retractions.c.person_id == bindparam("person_id")).scalar_subquery())
    .select_from(register_changes)
    .where(register_changes.c.person_id == bindparam("person_id")))
_TICK = timedelta(microseconds=1)  # the store's resolution of a time (PostgreSQL, SQLAlchemy's SQLite text)


class ResolvedByMerge(Exception):
    """A unit of a batch found its person through a merged NHS number (hub/store/merged.py): the batch
    is run again a unit at a time (group commit's fallback), where the unit resolves it alone."""


def received_after(now: datetime, latest: datetime | None) -> datetime:
    """A register change's `received_at`: the clock's reading `now`, or 1 us
    after the person's latest change (`latest`, read under the person's lock
    once the batch holds the write lock: None if they have none) if that is
    not earlier.

    The dispatcher tells a change's events against the person's changes
    received up to its own `received_at` (hub/delivery/dispatcher.py
    `handle`), so that order must be the order the changes commit in, which
    is their events' order on the log. The clock alone does not give it: two
    instances' clocks a few ms (or, stepped, seconds) apart stamp a change
    committed later earlier than the one before it, and a council file's
    chunk stamps its rows at one reading. Stamped here, the person's changes
    are strictly increasing in commit order whatever the clocks: every change
    is stamped holding the person's lock and the write lock (PostgreSQL: the
    event topic's publish lock, taken before the batch reads anything;
    SQLite: BEGIN IMMEDIATE), after every change that committed before it,
    and nobody else can commit one for them until it commits. A commit-ordered
    sequence would give the same order but costs a column, a migration and a
    round trip; this reads only what the unit reads already (the history, or
    its count). An instance's clock far ahead moves the person's later
    stamps that far ahead too (by at most that skew): `received_at` stays
    the hub's time of receipt to within the instances' clock skew. A naive
    `latest` (SQLite gives times back naive) is UTC."""
    if latest is None:
        return now
    if latest.tzinfo is None:
        latest = latest.replace(tzinfo=UTC)
    after = latest + _TICK
    return after if after > now else now

_INSERT_PERSON: dict[str, Any] = {}  # dialect name -> INSERT ... ON CONFLICT DO NOTHING, built once
_INSERT_NEW_PERSON = persons.insert()


def _insert_person(dialect: Any) -> Any:
    """A new person's row; two first sights at once do not fail on the unique
    index. RETURNING says whether this insert made the row (no second read)."""
    stmt = _INSERT_PERSON.get(dialect.name)
    if stmt is None:
        stmt = _INSERT_PERSON[dialect.name] = (
            insert_or_merge(dialect, persons)
            .values(person_id=bindparam("pid"), nhs_number_index=bindparam("index"), details=bindparam("details"),
                    created_at=bindparam("at"), updated_at=bindparam("at"))
            .on_conflict_do_nothing(index_elements=[persons.c.nhs_number_index])
            .returning(persons.c.person_id))
        stmt = _INSERT_PERSON[dialect.name] = Prepared(stmt)
    return stmt


_COUNTERS: dict[tuple[Any, tuple[str, ...]], Any] = {}  # (metric, label values) -> its child


def _counter(metric: Any, *values: str) -> Any:
    """The metric's child for these label values, in the metric's label order (`labels` costs more than `inc`)."""
    got = _COUNTERS.get((metric, values))
    if got is None:
        got = _COUNTERS[(metric, values)] = metric.labels(*values)
    return got


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    org_code: str
    org_kind: str
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int
    body: dict[str, Any]

    @property
    def is_problem(self) -> bool:
        return self.status_code >= 400


def event_id_for(change_id: str, index: int, event_type: str) -> str:
    """`str(uuid.uuid5(EVENT_NAMESPACE, f"{change_id}/{index}/{event_type}"))`
    (hub/ids.py: without building the UUID object)."""
    return uuid5(EVENT_NAMESPACE, f"{change_id}/{index}/{event_type}")


def payload_sha256(data: dict[str, Any]) -> str:
    """The hash of a mapped register change, independent of key order and spacing."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


_IDENTIFIER = re.compile(IDENTIFIER)


# A source's inputs held in quarantine under one source message id on one channel, oldest first.
_HELD = Prepared(
    select(quarantine.c.quarantine_id, quarantine.c.raw)
    .where(quarantine.c.source == bindparam("source"), quarantine.c.channel == bindparam("channel"),
           quarantine.c.source_message_id == bindparam("smid"), quarantine.c.status == "held")
    .order_by(quarantine.c.received_at, quarantine.c.quarantine_id))


def _in_source(error: dict[str, str], where: str) -> dict[str, str]:
    """A stored error named by where the source put the field, the canonical name kept in its reason."""
    if where == error["field"]:
        return error
    return {"field": where, "reason": f"({error['field']}) {error['reason']}"}


def _usable_smid(value: Any) -> str | None:
    """A source message id that may be looked up and kept with a quarantined
    input: none that the contract refuses (a NUL, a control or bidi character,
    blank or padded: PostgreSQL refuses a NUL in text, a bare 500)."""
    return value if isinstance(value, str) and _IDENTIFIER.fullmatch(value) else None


class Digest(str):
    """The idempotency digest of a change that validated: `contract.change_digest`,
    what it means (the NHS number spaced or not, an explicit default or none:
    one digest), stored with its first answer. `raw` is the payload's own
    digest, what answers recorded before held: a repeat matches either. It is
    worked out only when asked (a repeat whose stored digest is not this one),
    not for every change."""

    _data: dict[str, Any] | None = None
    _raw: str | None = None

    @property
    def raw(self) -> str | None:
        if self._raw is None and self._data is not None:
            self._raw = payload_sha256(self._data)
        return self._raw


def validated_digest(change_in: RegisterChangeIn, data: dict[str, Any]) -> Digest:
    digest = Digest(change_digest(change_in))
    digest._data = data
    return digest


def same_change(stored: str | None, digest: str | None) -> bool:
    """Whether a stored digest is this change's (either of a Digest's)."""
    return digest is None or stored is None or stored == digest or stored == getattr(digest, "raw", None)


def key_reused(smid: str, correlation_id: str) -> Outcome:
    """The idempotency key (source, source_message_id) came with another payload."""
    return problem(
        409, "idempotency-key-reused", "Source message id already used",
        "this source_message_id was already used for a different register change; nothing was recorded. "
        "Send a new change with a new source_message_id, or the same change again for the first answer",
        errors=[{"field": "source_message_id",
                 "reason": "was already used by this source for a different register change"}],
        correlation_id=correlation_id,
    )


def problem(status: int, kind: str, title: str, detail: str, **extra: Any) -> Outcome:
    body = {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail, **extra}
    return Outcome(status, body)


# The field each refusal is about, so every channel can name it in its own terms.
_REFUSAL_FIELD = {Rule.NO_RELATIONSHIP: "person.nhs_number", Rule.HOSPITAL_NOT_RUN_BY_SOURCE: "hospital_ods",
                  Rule.TRUST_ONLY_CHANGE_TYPE: "change_type", Rule.KIND_MAY_NOT_WRITE: "change_type"}


def refusal(decision: Decision) -> Outcome:
    """The access policy's refusal as problem details naming the rule. The body
    depends only on the rule (no ids, no correlation id), so "not on the
    register" and "not yours" are one identical answer."""
    text = TEXTS[decision.rule]
    return problem(403, "forbidden", "Not permitted", text, rule=decision.rule.value,
                   errors=[{"field": _REFUSAL_FIELD.get(decision.rule, "(body)"), "reason": text}])


# Refusals that need nothing but the source, the channel and the change type (no person, no hospital):
# asked of every input whose change type can be read, whatever else is wrong with it.
_RULE_ONLY = frozenset({Rule.KIND_MAY_NOT_WRITE, Rule.CHANNEL_NOT_FOR_KIND, Rule.TRUST_ONLY_CHANGE_TYPE})
# The change type decided for input whose own cannot be read (a council file's unknown EVENT, a package
# record), from a body that may send only council change types: `decide_write` treats every council
# change type alike (the caller's roles; no hospital), so one stands for them all.
_ANY_COUNCIL_CHANGE = ChangeType.REVIEW_REQUESTED
# Bodies that may record nothing without a role in the person's care (a trust may report anyone's detention).
_RELATIONSHIP_KINDS = frozenset({"council", "icb"})


def _change_type_of(value: Any) -> ChangeType | None:
    """`ChangeType(value)`, or None."""
    if type(value) is str:
        return _CHANGE_TYPES.get(value)
    try:
        return ChangeType(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Refused:
    decision: Decision
    person_id: str | None


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A change recorded: its 202 (logged by `_record` once committed)."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class _Asked:
    """Not recorded: a detention from a source that did not say whether it is a CTO recall would end the CTO
    the register shows in force (`accept_mapped`'s `cto_question`); the source is asked, the input quarantined."""

    problem: FieldProblem


@dataclass(frozen=True, slots=True)
class _Replay:
    """The first answer to a source message id seen before."""

    outcome: Outcome


# ----------------------------------------------------------------- bulk (council files)
#
# A council file's rows, hundreds per transaction: the people of a chunk,
# their histories and the earlier answers to its source message ids are read
# in one statement each, every row is then judged in file order against that
# state kept up to date in memory (the previous row's status is the next
# row's "before"), and the writes go out as one executemany per table (the
# group commit's write-behind). Each row gets exactly the answer the per-change
# path (`write_precheck`, then `accept_mapped`) would give it.

BULK_YIELD_EVERY = 50  # rows between yields to the event loop
# The chunk's reads, each with one list of values (hub.store.db.InList: one statement whatever the
# list's length); its people and histories as a PostgreSQL ingest batch reads them (hub/ingest/prefetch.py).
_BULK_PERSONS = LOCK_PEOPLE
_BULK_CHANGES = HISTORIES
_BULK_ANSWERS = InList("smids", lambda values: select(
    ingest_results.c.source_message_id, ingest_results.c.status_code, ingest_results.c.body,
    ingest_results.c.payload_sha256).where(
    ingest_results.c.source == bindparam("source"), ingest_results.c.source_message_id.in_(values)))


@dataclass(slots=True)
class BulkRow:
    """One input for `IngestService.accept_bulk`: a mapped register change
    (`data`), or input an adapter could not map (`data` None, `problems` set)."""

    data: dict[str, Any] | None
    original: bytes
    problems: tuple[FieldProblem, ...] = ()
    source_message_id: str | None = None  # for unmapped input (quarantine keeps it)
    about: dict[str, Any] | None = None  # unmapped input: what it is about (`write_precheck`'s data)


@dataclass(slots=True)
class _Prepared:
    row: BulkRow
    smid: str | None = None
    digest: str | None = None
    change_type: ChangeType | None = None
    precheck_index: str | None = None  # set when write_precheck would ask the access policy
    hospital: str | None = None
    # set instead when it would ask only whether the source has a relationship (write_precheck's
    # `relationship_only`: a change type that cannot be read, a hospital the hub does not know)
    relationship_index: str | None = None
    change_in: RegisterChangeIn | None = None
    problems: list[FieldProblem] | None = None
    index: str | None = None  # the person's index once the change validates
    key: str | None = None  # bulk_person_key(row.data): the person, for per-person order


def bulk_person_key(data: dict[str, Any] | None) -> str | None:
    """The person a mapped row is about (its NHS number as sent), for per-person order."""
    person = (data or {}).get("person")
    nhs = person.get("nhs_number") if isinstance(person, dict) else None
    return normalise(nhs) if isinstance(nhs, str) else None


# Plain INSERTs built once (building a statement costs more than queuing its
# parameters for the batch's executemany: hub/ingest/group_commit.py).
_NHS_NUMBER_ONLY = frozenset({"nhs_number"})
_CHANGE_TYPES: dict[str, ChangeType] = {t.value: t for t in ChangeType}  # ChangeType(value) for a string
_INSERT_CHANGE = register_changes.insert()
_INSERT_SERVICE_LEVEL = service_levels.insert()
_INSERT_RESULT = ingest_results.insert()
_INSERT_QUARANTINE = quarantine.insert()

# With how many of them were retracted: a person with any is read again (`_PERSON_CHANGE_COUNT`).
_BULK_COUNTS = InList("person_ids", lambda values: select(
    register_changes.c.person_id, func.count().label("n"), func.max(register_changes.c.received_at).label("latest"),
    select(func.count()).select_from(change_retractions)
    .where(change_retractions.c.person_id == register_changes.c.person_id)
    .correlate(register_changes).scalar_subquery().label("retracted"))
    .where(register_changes.c.person_id.in_(values)).group_by(register_changes.c.person_id))


class BulkCache:
    """People's decoded histories and statuses carried from one bulk chunk to
    the next (a file whose rows for one person are spread over its chunks).
    An entry is used only if the person still has exactly as many changes in
    the store (register changes are only ever inserted, so the same count is
    the same history) and it is the same day; otherwise the history is read
    again. Also held per person: the evaluation of that history (the next
    row's change is folded onto it) and the access facts. Bounded: at most
    `max_weight` (a change with its history entry weighs 2, a status and its
    fold 8: about 0.4 KB each), 150,000 by default (about 60 MB); once full, people
    not yet held are not added (a file that cycles through more people than
    fit keeps hitting the ones held, where evicting the oldest would miss every time)."""

    STATUS_WEIGHT = 8

    CHANGE_WEIGHT = 2

    def __init__(self, max_weight: int = 150_000) -> None:
        self.max_weight = max_weight
        self._entries: dict[str, tuple[list[RegisterChange], Any]] = {}
        self._held = 0
        self._day: date | None = None
        self.hits = 0
        # Each person's access facts with the evaluation they come from (people's rows are spread over chunks).
        self.facts: dict[str, tuple[Any, Any]] = {}
        # The write decisions taken for those facts (decide_write is a pure function of the caller, channel,
        # change type, trust, whether a hospital is named and the facts): (person id, change type, trust,
        # hospital named) -> (the facts, the decision), for one caller and channel (`decisions`).
        self._decided: dict[tuple[Any, ...], tuple[Any, Any]] = {}
        self._decided_for: tuple[Any, str] | None = None
        self._generation = 0  # the area agreements' (`AgreementBook.generation`) the entries were made under

    def valid_for(self, generation: int) -> None:
        """Forget every entry made under other agreements (the area agreements file reloaded since:
        hub/agreements_watch.py): its evaluations and access facts were worked out from them."""
        if generation != self._generation:
            self._entries.clear()
            self.facts.clear()
            self._decided.clear()
            self._held, self._generation = 0, generation

    def decisions(self, caller: Any, channel: str) -> dict[tuple[Any, ...], tuple[Any, Any]]:
        """The decisions kept for `caller` on `channel` (emptied for another)."""
        if self._decided_for != (caller, channel):
            self._decided.clear()
            self._decided_for = (caller, channel)
        return self._decided

    def get(self, person_id: str) -> tuple[list[RegisterChange], Any] | None:
        return self._entries.get(person_id)

    def keep(self, today: date, histories: dict[str, list[RegisterChange]], statuses: dict[str, Any]) -> None:
        if self._day != today:
            self._entries.clear()
            self._held, self._day = 0, today
        for pid, history in histories.items():
            old = self._entries.pop(pid, None)
            if old is not None:
                self._held -= len(old[0]) * self.CHANGE_WEIGHT + self.STATUS_WEIGHT
            weight = len(history) * self.CHANGE_WEIGHT + self.STATUS_WEIGHT
            if self._held + weight > self.max_weight:
                continue
            self._entries[pid] = (history, statuses.get(pid))
            self._held += weight
        for pid in [p for p in self.facts if p not in self._entries]:
            del self.facts[pid]
        for key in [k for k in self._decided if k[0] is not None and k[0] not in self._entries]:
            del self._decided[key]


class _BulkOutcomes:
    def __init__(self, n: int) -> None:
        self.outcomes: list[Outcome | None] = [None] * n
        self.after: list[Callable[[], None]] = []  # metrics and logs, once committed
        self.histories: dict[str, list[RegisterChange]] = {}  # as committed (for BulkCache)
        self.statuses: dict[str, Evaluation] = {}  # each person's evaluation of that history


_STATUS_UPSERTS: dict[str, Prepared] = {}


def _status_upsert(dialect: Any) -> Prepared:
    got = _STATUS_UPSERTS.get(dialect.name)
    if got is None:
        got = _STATUS_UPSERTS[dialect.name] = Prepared(status_upsert(dialect))
    return got


async def write_recorded(
    conn: Any, client: Client, change_in: RegisterChangeIn, change: RegisterChange, after: S117Status,
    events: list[DomainEvent], person_id: str, correlation_id: str, channel: str, now: datetime,
    holidays: Any, late: bool = False, warnings: list[dict[str, str]] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """A recorded change's rows, the same for one change and for a council
    file's chunk: the register change, its service level (5 working days)
    and its events on the outbox, with the status (without its history:
    hub/bus/payload.py). Returns the service level and the 202 body. `now`:
    its `received_at` (`received_after`: after the person's latest). `late`:
    the change sorts before one recorded before it; its first event
    (`s117-register-change-recorded`) says so in the header `late` ("1" or
    "0"), so a consumer that acts only on late history (the workflows'
    withdrawal of a transfer case) passes over the rest unread.
    `warnings`: what the 202 body tells the sender of a change recorded that
    changed nothing it was sent to change (`successor_warnings`); none: the
    body has no `warnings`."""
    # The canonical column and each event's payload as JSON made once (hub/bus/payload.py: the same bytes
    # as to_jsonable's dicts through the store's serializer; a change's events share its change and status).
    change_json = json_fragment(change)
    await conn.execute(_INSERT_CHANGE, dict(
        change_id=change.change_id, person_id=person_id, source=client.client_id,
        source_message_id=change_in.source_message_id, change_type=change.change_type._value_,
        effective_date=change.effective_date, notified_on=change.notified_on,
        recorded_on=change.recorded_on, canonical=change_json,
        correlation_id=correlation_id, received_at=now, channel=channel))
    sl = register_service_level(change.notified_on, change.recorded_on, holidays)
    await conn.execute(_INSERT_SERVICE_LEVEL, dict(
        change_id=change.change_id, notified_on=change.notified_on, recorded_on=change.recorded_on,
        deadline=sl.deadline, working_days_taken=sl.working_days_taken, state=sl.state))
    status_json = status_fragment(after)
    event_ids = []
    # Each event names the events of its change after it, with the bodies each
    # tells besides the responsible ones (`later_events`): the dispatcher sends a
    # body's new position with the event that names it, not also before it.
    # An enum member's value as `_value_` (what `.value` reads through a descriptor: two calls each time).
    named = [f"{ev.event_type._value_}={','.join(ev.also_notify)}" for ev in events] if len(events) > 1 else None
    for n, ev in enumerate(events):
        event_type = ev.event_type._value_
        eid = event_id_for(change.change_id, n, event_type)
        event_ids.append({"event_id": eid, "event_type": event_type})
        headers = {"correlation_id": correlation_id, "source": client.client_id, "event_type": event_type}
        if n == 0:
            headers[LATE] = "1" if late else "0"
        if named is not None and n + 1 < len(named):
            headers[LATER_EVENTS] = ";".join(named[n + 1:])
        await publish(conn, BusMessage(
            topic=EVENTS_TOPIC, key=person_id, event_id=eid,
            payload=event_payload_fragment(ev, change_json, status_json), headers=headers))
    body = {
        "change_id": change.change_id, "person_id": person_id, "status": "accepted",
        "correlation_id": correlation_id, "events": event_ids, "entitled": after.entitled,
        "service_level": {"deadline": sl.deadline.isoformat(), "state": sl.state,
                          "working_days_taken": sl.working_days_taken, "explanation": sl.explanation},
    }
    if warnings:
        body["warnings"] = warnings
    return sl, body


def successor_warnings(change: RegisterChange, after: S117Status, history: Sequence[RegisterChange],
                       ref: ReferenceData, today: date) -> list[dict[str, str]] | None:
    """The warning for a `moved` change naming a successor of a split council
    (`residence_before_detention_la_gss`, hazard H-03) that changed nothing: the
    rules' last note on it in `after` (the status just evaluated with it, under
    the person's lock: hub/domain/rules/engine.py `successor_unchanged`; a
    naming made under s2 that a later s3 of the same stay took is none), unless it
    may address a notice of a child's stay in hospital (hub/domain/children.py
    `addresses_a_stays_council`). Recorded all the same (a later change may yet
    make it the naming a split needs), and the sender told: the field and why,
    no value (REST's 202 `warnings`; FHIR's and council files' in their own
    terms). `history`: the person's changes, `change` among them. A change
    naming none (nearly all): None."""
    named = change.residence_before_detention_la_gss
    if named is None:
        return None
    reason = successor_unchanged(after, change)
    if reason is None or addresses_a_stays_council(history, named, ref, today):
        return None
    return [{"field": "residence_before_detention_la_gss", "reason": reason}]


class IngestService:
    def __init__(
        self,
        engine: AsyncEngine,
        ref: ReferenceData,
        agreements: AgreementBook,
        protector: DataProtector,
        today: Callable[[], date] = england_day,
        batch_max: int = 64,
        batch_wait: float = 0.002,
    ) -> None:
        self._engine = engine
        self._ref = ref
        self._agreements = agreements
        self._protector = protector
        self._today = today
        # Changes from every channel are written in shared transactions (one
        # fsync per short batch); on PostgreSQL each batch takes the event
        # topic's lock first, so batches of two instances queue, not deadlock.
        # A batch's people, earlier answers and histories are read in three
        # statements for the batch (hub/ingest/prefetch.py), on SQLite too.
        self._prefetching = engine.dialect.name in ("postgresql", "sqlite")
        self._commit = GroupCommit(engine, max_batch=batch_max, max_wait=batch_wait,
                                   before_batch=lambda conn: lock_topic(conn, EVENTS_TOPIC),
                                   prefetch=read_batch if self._prefetching else None)
        self.access = AccessPolicy(ref)
        # The write decision knowing nothing of the person, per (client's id, change type, hospital, channel)
        # with the client it was decided for: a pure function of those (`_decide_blind`).
        self._blind: dict[tuple[Any, ...], tuple[Client, Decision]] = {}
        # The status last evaluated per person, and the history it was evaluated from (hub/ingest/status_cache.py).
        self.statuses = StatusCache(histories=True)
        self.bulk_rows = 0  # rows answered by `accept_bulk` (the rest went the per-change way)
        self.bulk_failures = 0  # bulk transactions that failed (their rows went the per-change way)

    def close(self) -> None:
        """Nothing of its own to release: the engine's inline reader and writer
        go with the engine (hub.store.db.close_inline)."""
        self._commit.close()

    async def accept(self, client: Client, raw: bytes, channel: str = "rest", data: dict[str, Any] | None = None,
                     *, identity_confirmed: bool = False) -> Outcome:
        """Take one register change sent as canonical JSON. Never raises for bad input.
        `data`: `raw` as `orjson.loads` reads it, if the caller has read it (and found an object).
        `identity_confirmed`: the sender confirms the person is the one the register holds for the NHS
        number, its details the right ones (a held input resubmitted so: `accept_mapped`)."""
        if data is None:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return await self._quarantine(client, channel, raw, None, [FieldProblem("(body)", "is not valid JSON")],
                                              self._correlation_id())
            if not isinstance(data, dict):
                return await self._quarantine(client, channel, raw, None,
                                              [FieldProblem("(body)", "must be a JSON object")], self._correlation_id())
        return await self.accept_mapped(client, data, raw, channel, identity_confirmed=identity_confirmed)

    async def accept_mapped(self, client: Client, data: dict[str, Any], original: bytes, channel: str, *,
                            prechecked: bool = False, source_field: Callable[[str], str] | None = None,
                            cto_question: FieldProblem | None = None, identity_confirmed: bool = False) -> Outcome:
        """Take one register change an adapter has mapped to the canonical
        contract. `original` is the input as the source sent it (an HL7 v2
        message, a file row): that is what quarantine keeps, so the source
        can see and correct exactly what it sent. A change that does not
        validate is first put to the access policy (`write_precheck`): one
        about someone the source has no role for gets the refusal a valid
        one would get, and nothing of it is kept. `prechecked`: the caller
        asked `write_precheck` already (MLLP, council files). `source_field`:
        where in `original` a canonical field came from (MLLP: "PID-3"), so the
        quarantine entry names what the source sent as its answer did; the
        answer's own errors stay canonical, for the adapter to render.
        `cto_question`: the source cannot say a CTO recall from a fresh application (HL7 v2 without ZU5-8): a
        `detained` or `section-changed` under a qualifying section that would end a CTO the register shows in
        force is not recorded but answered 422 with this problem, `original` quarantined (hub/ingest/cto_recall.py;
        decided under the person's lock, from the history the record path reads anyway).
        `identity_confirmed`: the sender has checked (against PDS) that the NHS number is the person's and
        its details right where they differ from those held (hub/ingest/identity.py): the wrong-person
        check is not made, the details sent replace those held, and the write's access decision is
        recorded as `confirm-identity` (only a held input resubmitted: hub/api/quarantine_triage.py)."""
        correlation_id = self._correlation_id()
        smid = _usable_smid(data.get("source_message_id"))
        # A source message id seen before gets its first answer (or a 409 if
        # the payload differs). A change that validates is looked up inside
        # its write transaction (`_record_once`, under the person's lock), so
        # the common path reads nothing here; one that does not validate is
        # looked up before it is quarantined.
        try:
            change_in = RegisterChangeIn.model_validate(data)
            today = self._today()
            problems = semantic_problems(change_in, self._ref, today)
        except ValidationError as exc:
            problems = problems_from_pydantic(exc)
        if problems:
            # Only here, off the path of a valid change (whose record path decides under the person's
            # lock): the same answer as if the policy had been asked before validation.
            if not prechecked:
                refused = await self.write_precheck(client, data, channel)
                if refused is not None:
                    return refused
            if smid:
                replay = await self._previous_answer(client.client_id, smid, digest=payload_sha256(data))
                if replay is not None:
                    self._count_replay(channel, replay)
                    return replay
            return await self._quarantine(client, channel, original, smid, problems, correlation_id,
                                          source_field=source_field)
        return await self._record(client, change_in, channel, today, correlation_id,
                                  validated_digest(change_in, data), cto_question=cto_question, original=original,
                                  source_field=source_field, identity_confirmed=identity_confirmed)

    @staticmethod
    def _count_replay(channel: str, replay: Outcome) -> None:
        metrics.INGEST.labels(channel=channel, outcome="conflict" if replay.is_problem else "duplicate").inc()

    async def reject_unmapped(
        self, client: Client, original: bytes, channel: str, problems: list[FieldProblem],
        source_message_id: str | None = None,
    ) -> Outcome:
        """Quarantine input an adapter could not map at all (the problems name
        the source's own fields, e.g. "PID-3" or "row 12, column NHS_NO")."""
        return await self._quarantine(client, channel, original, _usable_smid(source_message_id), problems,
                                      self._correlation_id())

    async def write_precheck(self, client: Client, data: dict[str, Any], channel: str, *,
                             partial: bool = False) -> Outcome | None:
        """The access policy asked before validation, for input about people
        the source may have no role for: nothing of it is validated into
        quarantine or kept. `data`: a mapped change, or what could be read of
        input that did not map (an adapter's `about`: the change type, the NHS
        number, the hospital). `partial`: `data` may leave out a hospital the
        input names (only the questions needing none are asked).

        First the questions needing nothing but the source, the channel and
        the change type (kind-may-not-write, channel-not-for-kind,
        trust-only-change-type), whatever else the input holds; then, when
        the NHS number is valid, the person's: refused when the change needs
        a relationship the source does not have, with the one answer for "not
        on the register" and "not yours". A change type that cannot be read is
        asked as any council change type, from a body that may send only
        those. A hospital the hub does not know, or one `partial` input may
        name, is left to validation (then only "no relationship" is refused),
        as is a detention naming none.
        None when the input may go on (validation then names what is wrong);
        else the refusal, audited. The record path decides again,
        authoritatively, under the person's lock."""
        change_type = _change_type_of(data.get("change_type"))
        if change_type is None and (client.org_kind not in _RELATIONSHIP_KINDS or "hub:admin" in client.scopes):
            return None  # e.g. a trust: it may report anyone's detention; without the change type, nothing to ask
        asked = change_type or _ANY_COUNCIL_CHANGE
        hospital = data.get("hospital_ods")
        site = hospital if isinstance(hospital, str) and not partial else None
        # What the policy allows knowing nothing of the person (a detention
        # by the trust running the hospital) it allows whatever they are: a
        # person's facts only add roles. Then there is nothing to read.
        blind = self._decide_blind(client, asked, site, channel)
        if blind.allowed:
            return None
        if blind.rule in _RULE_ONLY:  # the same whoever the person is, and whatever the rest holds
            return await self._refuse(client, channel, _Refused(blind, None),
                                      change_type.value if change_type else None, self._correlation_id())
        if site is None and blind.rule is Rule.HOSPITAL_NOT_RUN_BY_SOURCE:
            return None  # a detention naming no hospital (that can be read): validation's, not the person's
        nhs_number = (data.get("person") or {}).get("nhs_number") if isinstance(data.get("person"), dict) else None
        if not isinstance(nhs_number, str) or nhs_number_problem(nhs_number):
            return None  # no person to ask about: validation names the number
        relationship_only = change_type is None or partial or (
            hospital is not None and (site is None or self._ref.hospital(site) is None))
        if relationship_only:
            site = None
            if self._decide_blind(client, asked, None, channel).rule is not Rule.NO_RELATIONSHIP:
                return None  # not a question of the person (a detention's hospital): validation's
        index = self._protector.index(normalise(nhs_number))
        async with snapshot(self._engine) as conn:
            # (A number superseded by a merge: the retained person's, hub/store/merged.py.)
            found = await person_id_by_index(conn, index)
            history = await self._person_changes(conn, found) if found else []
        today = self._today()
        facts = None
        if history:
            facts = self.access.facts(self._evaluate(found, history, today), history)
        decision = self.access.decide_write(client, asked, site, facts, channel)
        if decision.allowed or (relationship_only and decision.rule is not Rule.NO_RELATIONSHIP):
            return None
        return await self._refuse(client, channel, _Refused(decision, found if history else None),
                                  change_type.value if change_type else None, self._correlation_id())

    def _decide_blind(self, client: Client, change_type: ChangeType, hospital: str | None, channel: str) -> Decision:
        """`self.access.decide_write(client, change_type, hospital, None, channel)`:
        with no person facts `decide_write` is a pure function of the caller, the
        change type, the hospital (through its trust: the reference data does
        not change while the hub runs) and the channel, so each combination is
        decided once. Kept under the client's identity (a `Client`'s hash is
        worked out from its five fields at each look-up); the entry holds the
        client, so its id is not reused while it is kept, and is a hit only for
        that very object."""
        key = (id(client), change_type, hospital, channel)
        held = self._blind.get(key)
        if held is not None and held[0] is client:
            return held[1]
        if len(self._blind) >= 4096:
            self._blind.clear()
        trust = self.access.trust_of(hospital) if hospital else None
        decision = decide_write(caller_of(client), change_type, trust, bool(hospital), None, channel)
        self._blind[key] = (client, decision)
        return decision

    async def _refuse(self, client: Client, channel: str, refused: _Refused, change_type: str | None,
                      correlation_id: str) -> Outcome:
        async with self._engine.begin() as conn:
            await record_decision(conn, client, channel=channel, action="write", decision=refused.decision,
                                  person_id=refused.person_id, change_type=change_type,
                                  correlation_id=correlation_id)
        metrics.INGEST.labels(channel=channel, outcome="refused").inc()
        log.info("register change refused by the access policy", source=client.client_id, channel=channel,
                 reason_codes=[refused.decision.rule.value], correlation_id=correlation_id)
        return refusal(refused.decision)

    @staticmethod
    def _correlation_id() -> str:
        return bound_correlation_id() or new_correlation_id()

    async def _previous_answer(
        self, source: str, smid: str, conn: AsyncConnection | None = None, *, digest: str | None = None,
    ) -> Outcome | None:
        """The first answer to (source, smid); a 409 if it was for another payload."""
        params = {"source": source, "smid": smid}
        if conn is not None:
            row = (await execute_prepared(conn, _PREVIOUS_ANSWER, params)).first()
        else:
            async with snapshot(self._engine) as c:
                row = (await execute_prepared(c, _PREVIOUS_ANSWER, params)).first()
        return self._answer_from(row, source, smid, digest)

    def _answer_from(self, row: Any, source: str, smid: str, digest: str | None) -> Outcome | None:
        """An ingest_results row as the answer to a repeat (a 409 if its payload differs)."""
        if row is None:
            return None
        if not same_change(row.payload_sha256, digest):
            log.info("idempotency key reused with another payload", source=source, status=409)
            return key_reused(smid, self._correlation_id())
        return Outcome(row.status_code, {**row.body, "duplicate": True})

    async def _quarantine(
        self, client: Client, channel: str, raw: bytes, smid: str | None,
        problems: list[FieldProblem], correlation_id: str, *, source_field: Callable[[str], str] | None = None,
    ) -> Outcome:
        errors = [p.as_dict() for p in problems]
        stored = [p.stored_dict() for p in problems]  # unknown keys: named to the sender, never stored
        if source_field is not None:  # named as the source's answer named them: "PID-3", "(person.nhs_number) ..."
            stored = [_in_source(e, source_field(e["field"])) for e in stored]
        held = await self._held_copy(client, channel, smid, raw) if smid else None
        if held is not None:
            # The same input again (a REST client's retry, an engine resending after its AE): the
            # first one's answer and quarantine id, and one entry for the engineer, not one a retry.
            qid = held
            log.info("register change already held in quarantine", source=client.client_id, channel=channel,
                     quarantine_id=qid, fields=[e["field"] for e in stored], correlation_id=correlation_id)
        else:
            qid = uuid4()
            async with self._engine.begin() as conn:
                await conn.execute(
                    quarantine.insert().values(
                        quarantine_id=qid, source=client.client_id, channel=channel,
                        source_message_id=smid[:200] if smid else None, errors=stored,
                        raw=self._protector.encrypt(raw), received_at=datetime.now(UTC), status="held",
                        correlation_id=correlation_id,
                    )
                )
            log.info("register change quarantined", source=client.client_id, channel=channel,
                     quarantine_id=qid, fields=[e["field"] for e in stored], correlation_id=correlation_id)
        metrics.INGEST.labels(channel=channel, outcome="quarantined").inc()
        return problem(
            422, "invalid-register-change", "Register change rejected",
            f"{len(problems)} field(s) failed validation; the input is held in quarantine",
            errors=errors, quarantine_id=qid, correlation_id=correlation_id,
        )

    async def _held_copy(self, client: Client, channel: str, smid: str, raw: bytes) -> str | None:
        """The quarantine id of this very input (the same bytes under the same source message id
        from the same source on the same channel), held and not yet resolved, if it is. Read only
        on the quarantine path, never for a change that validates."""
        async with snapshot(self._engine) as conn:
            rows = (await execute_prepared(conn, _HELD, {"source": client.client_id, "channel": channel,
                                                         "smid": smid[:200]})).all()
        for row in rows:
            try:
                if self._protector.decrypt(row.raw) == raw:
                    return row.quarantine_id
            except ValueError:  # kept under another data key: not comparable, so not this input
                continue
        return None

    async def _record(
        self, client: Client, change_in: RegisterChangeIn, channel: str, today: date, correlation_id: str,
        digest: str | None = None, *, cto_question: FieldProblem | None = None, original: bytes = b"",
        source_field: Callable[[str], str] | None = None, identity_confirmed: bool = False,
    ) -> Outcome:
        nhs_number = normalise(change_in.person.nhs_number)
        hint = Hint(self._protector.index(nhs_number), client.client_id, change_in.source_message_id) \
            if self._prefetching else None
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                result = await self._commit.run(
                    lambda conn: self._record_once(conn, client, change_in, channel, today, correlation_id, digest,
                                                   hint.index if hint is not None else None, nhs_number,
                                                   cto_question, identity_confirmed),
                    keys=(("person", nhs_number), ("message", client.client_id, change_in.source_message_id)),
                    hint=hint)
                if isinstance(result, _Accepted):  # the usual answer first
                    self._log_accepted(client, channel, change_in, result.outcome.body, correlation_id)
                    return result.outcome
                if isinstance(result, _Refused):
                    return await self._refuse(client, channel, result, change_in.change_type.value, correlation_id)
                if isinstance(result, _Replay):
                    self._count_replay(channel, result.outcome)
                    return result.outcome
                if isinstance(result, _Asked):
                    return await self._quarantine(client, channel, original, change_in.source_message_id,
                                                  [result.problem], correlation_id, source_field=source_field)
                return result
            except IntegrityError:
                # A concurrent transaction took a unique key this one needed (the
                # same source message id for another person, say): the whole
                # transaction rolled back; the next attempt sees what committed
                # and answers as for a duplicate.
                if attempt == RECORD_ATTEMPTS:
                    raise
                log.info("register change raced a concurrent write, retrying", source=client.client_id,
                         channel=channel, attempt=attempt, correlation_id=correlation_id)
        raise AssertionError("unreachable")

    @staticmethod
    def _log_accepted(client: Client, channel: str, change_in: RegisterChangeIn, body: dict[str, Any],
                      correlation_id: str) -> None:
        """The `register change accepted` line, once the change is durable
        (written from the unit, it came before the COMMIT, and twice for a
        batch that failed and ran its units again); on the request's own line
        when it is a request's one change (hub.observability.logging.RequestLine)."""
        if not writes_at(logging.INFO):
            return
        fields = {"source": client.client_id, "channel": channel, "change_id": body["change_id"],
                  "person_id": body["person_id"], "change_type": change_in.change_type._value_,
                  "count": len(body["events"]), "correlation_id": correlation_id,
                  "status": body["service_level"]["state"]}
        if not carry_on_request_line("register change accepted", fields):
            log.info("register change accepted", **fields)

    async def _record_once(
        self, conn: WriteBehind, client: Client, change_in: RegisterChangeIn, channel: str, today: date,
        correlation_id: str, digest: str | None = None, index: str | None = None, nhs_number: str | None = None,
        cto_question: FieldProblem | None = None, identity_confirmed: bool = False,
    ) -> Outcome | _Refused | _Replay | _Accepted | _Asked:
        """One change's unit of work, run by the group commit inside a batch's
        transaction (`conn.begin()` is the unit's share of it; see group_commit).
        `index`, `nhs_number`: the NHS number's index and its normal form, if worked out already."""
        now = datetime.now(UTC)
        if nhs_number is None:
            nhs_number = normalise(change_in.person.nhs_number)

        def encrypted() -> bytes:  # a new person's details, made only for one
            return self._protector.encrypt(orjson.dumps(
                change_in.person.model_dump(mode="json", exclude_none=True) | {"nhs_number": nhs_number}))

        async with conn.begin() as tx:
            # Lock the person first: from here on no other change for them can
            # commit, so the look for a duplicate and the history read below
            # see every change committed before this one (SQLite: BEGIN IMMEDIATE).
            # What the batch read for all its changes at once, else None.
            pre: BatchReads | None = getattr(conn, "prefetched", None)
            person_id, created, stored = await self._lock_or_create_person(conn, nhs_number, encrypted, now, pre,
                                                                           index)
            # The first answer to this source message id, if any (see accept_mapped).
            if pre is not None:
                replay = self._answer_from(pre.answers.get((client.client_id, change_in.source_message_id)),
                                           client.client_id, change_in.source_message_id, digest)
            else:
                replay = await self._previous_answer(client.client_id, change_in.source_message_id, conn,
                                                     digest=digest)
            if replay is not None:
                if created:  # nothing else was written: only a new person's row to undo
                    await tx.rollback()
                return _Replay(replay)
            latest: datetime | None = None  # the latest received_at of the person's changes
            if created:
                history: list[RegisterChange] = []  # a row made now: no change can name it yet
            elif pre is not None and person_id in pre.histories:
                history = list(pre.histories[person_id])
                latest = pre.latest.get(person_id)
            else:
                history, latest = await self._history(conn, person_id)
            before = self._evaluate(person_id, history, today) if history else None
            # The one access policy, against the person's status now, under their lock.
            decision = self.access.decide_write(
                client, change_in.change_type, change_in.hospital_ods, self.access.facts(before, history), channel) \
                if history else self._decide_blind(client, change_in.change_type, change_in.hospital_ods, channel)
            if not decision.allowed:
                await tx.rollback()  # nothing of it is kept, not even a new person's row
                return _Refused(decision, person_id if history else None)
            change = self._canonical(change_in, client, person_id, today)
            if cto_question is not None and history and change_in.change_type in ENDS_CTO_TYPES and \
                    ends_cto_in_force(person_id, history, change, self._ref, self._agreements):
                await tx.rollback()  # a recall or a fresh application: the source must say (`accept_mapped`)
                return _Asked(cto_question)
            held: dict[str, Any] | None = None
            action = "write"
            if not created:
                # The wrong-person check (hub/ingest/identity.py): a change whose date of birth or family
                # name says it is about someone else is not recorded against the person held, but held in
                # quarantine for the source to check (the answer a question to the source gets).
                if stored is None:
                    stored = (await execute_prepared(conn, _PERSON_DETAILS, {"person_id": person_id})).one().details
                held = load_person_details(self._protector, stored)
                sent = _sent_details(change_in)
                mismatch = identity_problem(held, sent)
                if mismatch is not None and not identity_confirmed:
                    await tx.rollback()
                    return _Asked(mismatch)
                if mismatch is not None:  # the sender confirmed: its details replace those held (below)
                    action = CONFIRM_IDENTITY
            await record_decision(conn, client, channel=channel, action=action, decision=decision,
                                  person_id=person_id, change_type=change_in.change_type._value_,
                                  correlation_id=correlation_id)
            if held is not None:
                # A field the source sent replaces what is held; a field it left out is kept (a council row
                # or an HL7 message that carries only the NHS number must not erase the name, date of birth
                # or postcode).
                joined = held | sent
                if joined != held:
                    await execute_prepared(conn, _UPDATE_DETAILS, {
                        "pid": person_id, "at": now, "new_details": self._protector.encrypt(orjson.dumps(joined))})
            after = evaluate(person_id, [*history, change], self._ref, self._agreements, today)
            self._remember(conn, person_id, [*history, change], today, after)
            late = bool(history) and is_late(change, history)
            events = derive_events(before, after, change, holidays=self._ref.bank_holidays(),
                                   revealed=self._revealed(person_id, history, change, today) if late else None)
            # Worcs 8.5: while a dispute is open, a change that would end or move funding is held.
            hold = hold_reason(before, after, change)
            if hold is not None:
                await tx.rollback()
                return await hold_change(self._engine, self._protector, client, channel, change_in, change, hold,
                                         correlation_id)

            # The sender told of a successor named to no effect (a rare change: one attribute read for the rest).
            warnings = successor_warnings(change, after, [*history, change], self._ref, today) \
                if change.residence_before_detention_la_gss is not None else None
            sl, body = await write_recorded(conn, client, change_in, change, after, events, person_id,
                                            correlation_id, channel, received_after(now, latest),
                                            self._ref.bank_holidays(), late, warnings)
            await record_status(conn, person_id, after, late=sl.state == "breach", new=created)  # the report's counts
            await conn.execute(
                _INSERT_RESULT, dict(
                    source=client.client_id, source_message_id=change_in.source_message_id,
                    status_code=202, body=body, payload_sha256=str(digest) if digest is not None else None,
                    created_at=now,
                )
            )
        # Counted once the batch commits (not for a batch that fails and is run again change by change).
        conn.count(_counter(metrics.INGEST, channel, "accepted"))
        if sl.state != "met":
            conn.count(_counter(metrics.SERVICE_LEVEL, sl.state))
        return _Accepted(Outcome(202, body))

    async def _lock_or_create_person(
        self, conn: AsyncConnection, nhs_number: str, details: bytes | Callable[[], bytes], now: datetime,
        pre: BatchReads | None = None, index: str | None = None,
    ) -> tuple[str, bool, bytes | None]:
        """The person's id, their row locked until commit; True if made now;
        their stored (encrypted) details, read with the lock (None if made now).
        `details`: a new person's (encrypted) details, or what makes them, called only for one.
        `pre`: the batch's people, locked already (not among them: new to the register).
        `index`: the NHS number's index, if already worked out."""
        if index is None:
            index = self._protector.index(nhs_number)
        if pre is not None:
            found = pre.people.get(index)
            if found is not None:
                return found[0], False, found[1]
            row = None
        else:
            # FOR UPDATE serialises changes to one person on PostgreSQL (SQLite
            # drops the clause: its writers are already serial).
            row = (await execute_prepared(conn, _LOCK_PERSON, {"index": index})).first()
        if row:
            return row.person_id, False, row.details
        # A number superseded by a merge (hub/merges.py: its person's hash was taken off them) is the
        # retained number's person, made under the retained number if there is none yet. Only ever
        # resolved in a transaction of its own: two units of a batch, one under each number, would be
        # one person's (the batch's keys are the numbers), so the batch is run again a unit at a time.
        alias = await merges_store.retained(conn, index)
        if alias is not None:
            if not getattr(conn, "alone", True):
                raise ResolvedByMerge()
            row = (await execute_prepared(conn, _LOCK_PERSON, {"index": alias[0]})).first()
            if row:
                return row.person_id, False, row.details
            index, sent = alias[0], details
            retained_number = self._protector.decrypt(alias[1]).decode()

            def under_retained() -> bytes:  # the details sent, under the retained number
                held = load_person_details(self._protector, sent() if callable(sent) else sent)
                return self._protector.encrypt(orjson.dumps(held | {"nhs_number": retained_number}))
            details = under_retained
        # First sight of this person. Two first sights at once must not fail on
        # the unique index: DO NOTHING waits for the other insert, then the
        # select finds and locks whichever row won.
        person_id = uuid4()
        if callable(details):
            details = details()
        if pre is not None:
            # The batch read its people holding SQLite's write lock, or on
            # PostgreSQL the event topic's lock, which every transaction that
            # makes a person takes first (`before_batch`: only this method
            # inserts people, always in the group commit): nobody can insert
            # this one before the batch commits (and no other unit of the batch
            # is about them): a plain insert, with the batch's other inserts,
            # not a round trip of its own while the batch holds the lock.
            # Should it meet the unique index all the same, the batch fails
            # and each unit runs alone, the way below (no `pre`).
            # Ahead of the batch's other inserts: its changes name the person.
            await conn.insert_first(_INSERT_NEW_PERSON, {"person_id": person_id, "nhs_number_index": index,
                                                         "details": details, "created_at": now, "updated_at": now})
            return person_id, True, None
        inserted = (await execute_prepared(conn, _insert_person(conn.dialect),
                                           {"pid": person_id, "index": index, "details": details, "at": now})).first()
        if inserted is not None:  # ours (and, being new, locked by this transaction until commit)
            return person_id, True, None
        winner = (await execute_prepared(conn, _LOCK_PERSON, {"index": index})).one()
        return winner.person_id, False, winner.details

    def _revealed(self, person_id: str, history: Sequence[RegisterChange], change: RegisterChange,
                  today: date) -> list[TransferStep] | None:
        """For a late change (sorting before one recorded: the caller asks), the
        transfers its arrival adds to the person's history
        (hub/domain/rules/timeline.py); a change in its turn needs none, its
        status before and after say it."""
        return revealed_steps(person_id, history, change, self._ref, self._agreements, today)

    def _evaluate(self, person_id: str, history: list[RegisterChange], today: date) -> S117Status:
        """`evaluate`, or the status this process evaluated from exactly this history today (`StatusCache`)."""
        held = self.statuses.get(person_id, history, today, self._ref, self._agreements)
        if held is not None:
            return held
        return evaluate(person_id, history, self._ref, self._agreements, today)

    def _remember(self, conn: Any, person_id: str, history: list[RegisterChange], today: date,
                  status: S117Status) -> None:
        """Hold `status` for the person's next change once this transaction commits
        (only on a connection that says when: hub.store.db.after_commit_hook)."""
        after_commit = after_commit_hook(conn)
        if after_commit is not None:
            ref, agreements, statuses = self._ref, self._agreements, self.statuses
            generation = agreements.generation  # as evaluated: a reload before the commit is not mistaken for it
            after_commit(lambda: statuses.put(person_id, history, today, ref, agreements, status, generation))

    async def _history(self, conn: Any, person_id: str) -> tuple[list[RegisterChange], datetime | None]:
        """The person's changes, under their lock: the history this process
        last committed for them if the store holds as many changes for them
        (changes are only ever inserted: the same count is the same history;
        hub/ingest/status_cache.py), else read. A change sent alone (a
        transaction of its own, no batch read) for someone seen before:
        one count on an index for the rows' pages and their decoding
        (bench_front.py: 26 fewer Python calls a request of 1,196;
        bench/JOURNAL.md, seventeenth session). With the latest `received_at`
        of them (None: no change), which the change is stamped after (`received_after`)."""
        held = self.statuses.history(person_id)
        if held is not None:
            count, latest, retracted = (await execute_prepared(conn, _PERSON_CHANGE_COUNT,
                                                               {"person_id": person_id})).one()
            if count == len(held) and not retracted:
                self.statuses.history_hits += 1
                return list(held), latest
        rows = (await execute_prepared(conn, _PERSON_HISTORY, {"person_id": person_id})).all()
        return [from_jsonable(RegisterChange, r.canonical) for r in rows], \
            max((r.received_at for r in rows), default=None)

    @staticmethod
    async def _person_changes(conn: AsyncConnection, person_id: str) -> list[RegisterChange]:
        rows = (await execute_prepared(conn, _PERSON_CHANGES, {"person_id": person_id})).all()
        return [from_jsonable(RegisterChange, r.canonical) for r in rows]

    @staticmethod
    def _canonical(c: RegisterChangeIn, client: Client, person_id: str, today: date,
                   change_id: str | None = None) -> RegisterChange:
        return RegisterChange(
            change_id=change_id or uuid4(),
            person_id=person_id,
            change_type=c.change_type,
            effective_date=c.effective_date,
            notified_on=c.notified_on or today,
            recorded_on=today,
            source=client.client_id,
            source_message_id=c.source_message_id,
            legal_status_code=c.legal_status_code.zfill(2) if c.legal_status_code else None,
            order_type=c.order_type,
            hospital_ods=c.hospital_ods,
            gp_practice_ods=c.gp_practice_ods,
            residence_la_gss=c.residence_la_gss,
            no_fixed_abode=c.no_fixed_abode,
            discharge_destination_la_gss=c.discharge_destination_la_gss,
            from_prison=c.from_prison,
            discharge=DischargeDecision(
                council_agrees=c.discharge.council_agrees, commissioner_agrees=c.discharge.commissioner_agrees,
                reasons=tuple(c.discharge.reasons), participants=tuple(c.discharge.participants),
                person_involved=c.discharge.person_involved,
            ) if c.discharge else None,
            dispute=Dispute(
                dispute_id=c.dispute.dispute_id, kind=c.dispute.kind, parties=tuple(c.dispute.parties),
                resolved_responsible=c.dispute.resolved_responsible,
            ) if c.dispute else None,
            review_reason=c.review_reason,
            already_receiving_s117_from=c.already_receiving_s117_from,
            expected_stay_weeks=c.expected_stay_weeks,
            ehc_plan_la_gss=c.ehc_plan_la_gss,
            residence_before_detention_la_gss=c.residence_before_detention_la_gss,
        )

    async def accept_bulk(self, client: Client, rows: list[BulkRow], channel: str,
                          cache: BulkCache | None = None) -> list[Outcome | None]:
        """Many rows in one transaction, in order. Returns one answer per row, or
        None for a row left to the per-change path (a person not on the register
        whom the policy would let this source create, a change a dispute holds):
        once a person has a None, all their later rows have one too, so running
        the None rows afterwards, per person in order, keeps each person's order.
        If the transaction fails, every row is None (nothing of it was kept)."""
        correlation_id = self._correlation_id()
        today = self._today()
        try:
            prepared = []
            # The chunk's NHS numbers as sent -> their check and keyed index (a person's rows share them);
            # dropped with the chunk.
            numbers: dict[str, tuple[str | None, str, str | None]] = {}
            for n, r in enumerate(rows, 1):
                prepared.append(self._bulk_prepare(r, today, numbers))
                if n % BULK_YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let requests in (SQLite statements run on the loop)
            indexes = {i for p in prepared for i in (p.precheck_index, p.relationship_index, p.index) if i}
            smids = {p.smid for p in prepared if p.smid}
            keys: list[Any] = []
            for p in prepared:
                nhs = p.key
                if nhs:
                    keys.append(("person", nhs))
                if p.smid:
                    keys.append(("message", client.client_id, p.smid))
            result = await self._commit.run(
                lambda conn: self._bulk_unit(conn, client, prepared, sorted(indexes), sorted(smids), channel, today,
                                             correlation_id, cache),
                keys=keys)
        except Exception as exc:  # noqa: BLE001 - nothing was kept: every row goes the per-change way
            self.bulk_failures += 1
            fault = store_fault(exc)
            if fault is not None or isinstance(exc, ResolvedByMerge):  # the store's, or a merged number's
                log.info("bulk ingest fell back to one change at a time", source=client.client_id, channel=channel,
                         count=len(rows), exc_type=type(exc).__name__, error_kind=fault, correlation_id=correlation_id)
            else:  # the hub's own fault: the rows are still taken (one at a time, far slower), but it is a bug
                log.error("bulk ingest failed: a fault of the hub's own; fell back to one change at a time",
                          source=client.client_id, channel=channel, count=len(rows), exc_type=type(exc).__name__,
                          correlation_id=correlation_id)
            return [None] * len(rows)
        for done in result.after:
            done()
        if cache is not None:
            cache.keep(today, result.histories, result.statuses)
        self.bulk_rows += sum(o is not None for o in result.outcomes)
        return result.outcomes

    def _number(self, nhs: str, numbers: dict[str, tuple[str | None, str, str | None]] | None,
                ) -> tuple[str | None, str, str | None]:
        """An NHS number as sent: its problem (`nhs_number_problem`), the number
        normalised, and that number's keyed index when it has no problem; once
        per chunk (`numbers`) for the rows of one person."""
        known = numbers.get(nhs) if numbers is not None else None
        if known is None:
            problem_ = nhs_number_problem(nhs)
            digits = normalise(nhs)
            known = (problem_, digits, None if problem_ else self._protector.index(digits))
            if numbers is not None:
                numbers[nhs] = known
        return known

    def _bulk_prepare(self, row: BulkRow, today: date,
                      numbers: dict[str, tuple[str | None, str, str | None]] | None = None) -> _Prepared:
        """What needs no database: the precheck's inputs and the validation.
        `numbers`: the chunk's NHS numbers already checked and indexed (`_number`)."""
        data = row.data
        if data is None:
            if row.about is None:
                return _Prepared(row)
            # Unmapped input: only the precheck's inputs (write_precheck(row.about)), and its person for order.
            p = _Prepared(row)
            person = row.about.get("person")
            nhs = person.get("nhs_number") if isinstance(person, dict) else None
            number = self._number(nhs, numbers) if isinstance(nhs, str) else None
            p.key = number[1] if number is not None else None
            p.change_type = _change_type_of(row.about.get("change_type"))
            if number is not None and not number[0]:
                hospital = row.about.get("hospital_ods")
                if p.change_type is not None and (
                        hospital is None or (isinstance(hospital, str) and self._ref.hospital(hospital) is not None)):
                    p.precheck_index, p.hospital = number[2], hospital
                else:
                    p.relationship_index = number[2]
            return p
        p = _Prepared(row, smid=_usable_smid(data.get("source_message_id")))
        person = data.get("person")
        nhs = person.get("nhs_number") if isinstance(person, dict) else None
        number = self._number(nhs, numbers) if isinstance(nhs, str) else None
        p.key = number[1] if number is not None else None  # bulk_person_key(data)
        change_type = data.get("change_type")
        if type(change_type) is str:
            p.change_type = _CHANGE_TYPES.get(change_type)  # ChangeType(change_type), or None
        else:
            try:
                p.change_type = ChangeType(change_type)
            except ValueError:
                p.change_type = None
        precheck_nhs = None
        nhs_problem = number[0] if number is not None else None  # the number's problem (sent as a string)
        if number is not None and not nhs_problem:
            hospital = data.get("hospital_ods")
            if p.change_type is not None and (
                    hospital is None or (isinstance(hospital, str) and self._ref.hospital(hospital) is not None)):
                precheck_nhs = number[1]
                p.precheck_index = number[2]
                p.hospital = hospital
            else:
                p.relationship_index = number[2]
        try:
            change_in = RegisterChangeIn.model_validate(data)
            # The validated number is the one checked above (the same string): its problem is known.
            known = nhs_problem if isinstance(nhs, str) and change_in.person.nhs_number == nhs else UNCHECKED
            problems = semantic_problems(change_in, self._ref, today, nhs_problem=known)
        except ValidationError as exc:
            change_in, problems = None, problems_from_pydantic(exc)
        if problems:
            p.problems = problems
            p.digest = payload_sha256(data)  # a change that did not validate: its payload's own
        else:
            p.change_in = change_in
            p.digest = validated_digest(change_in, data)
            nhs_in = normalise(change_in.person.nhs_number)
            p.index = p.precheck_index if p.precheck_index is not None and nhs_in == precheck_nhs \
                else self._protector.index(nhs_in)  # the same number: the same keyed hash
        return p

    async def _bulk_unit(self, conn: WriteBehind, client: Client, prepared: list[_Prepared],
                         indexes: list[str], smids: list[str], channel: str, today: date,
                         correlation_id: str, cache: BulkCache | None = None) -> _BulkOutcomes:
        """The chunk's unit of work, run by the group commit (re-runnable: a
        function of what is committed, like a single change's unit)."""
        out = _BulkOutcomes(len(prepared))
        now = datetime.now(UTC)
        # The module's logger bound once for the chunk (what its lazy proxy does on every call; the
        # processors, context variables included, still run at each call).
        blog = log.bind()
        accepted_count = metrics.INGEST.labels(channel=channel, outcome="accepted")
        caller = caller_of(client)
        accepted_states: dict[str, int] = {}  # service-level state -> rows accepted (the metrics, once committed)
        # Each accepted row's log line, when it is logged at all (the level is the process's, fixed).
        info_logged = writes_at(logging.INFO)
        person_of: dict[str, str] = {}
        details: dict[str, bytes] = {}
        if indexes:
            for r in (await _BULK_PERSONS.execute(conn, indexes)).all():
                person_of[r.nhs_number_index] = r.person_id
                details[r.person_id] = r.details
            # A number superseded by a merge is the retained number's person (hub/store/merged.py): its rows
            # are that person's, in file order with the rest of theirs (one person's rows are judged in turn).
            # Only in a transaction of its own (another unit of a batch may be about the retained number).
            for index, pid, stored in await merges_store.persons_of_superseded(
                    conn, [i for i in indexes if i not in person_of]):
                if not getattr(conn, "alone", True):
                    raise ResolvedByMerge()
                person_of[index] = pid
                details[pid] = stored
        histories: dict[str, list[RegisterChange]] = {pid: [] for pid in person_of.values()}
        # person id -> the evaluation of their history after the latest row (or as held): a row's
        # change is folded onto it (`extended`) rather than the whole history evaluated again.
        statuses: dict[str, Evaluation] = {}
        if cache is not None:
            cache.valid_for(self._agreements.generation)
        cached = {pid: hit for pid in histories if cache is not None and (hit := cache.get(pid)) is not None}
        # person id -> the latest received_at of their changes: each row is stamped after it (`received_after`)
        latest: dict[str, datetime] = {}
        if cached:  # still as many changes as when cached: the same history
            counts = {}
            for r in (await _BULK_COUNTS.execute(conn, list(cached))).all():
                counts[r.person_id] = r.n if not r.retracted else -1  # retracted from: read again
                latest[r.person_id] = r.latest
            for pid, (history, status) in list(cached.items()):
                if counts.get(pid, 0) == len(history):
                    histories[pid] = list(history)
                    # An evaluation as of today (the cache is emptied on another day only when it
                    # keeps the next chunk: one made before midnight is not used after it).
                    if isinstance(status, Evaluation) and status.as_of == today and len(status.changes) == len(history):
                        statuses[pid] = status
                    cache.hits += 1  # type: ignore[union-attr]
                else:
                    del cached[pid]
        unread = [pid for pid in histories if pid not in cached]
        if unread:
            for r in (await _BULK_CHANGES.execute(conn, unread)).all():
                histories[r.person_id].append(from_jsonable(RegisterChange, r.canonical))
                held_at = latest.get(r.person_id)
                if held_at is None or r.received_at > held_at:
                    latest[r.person_id] = r.received_at
        answers: dict[str, tuple[int, dict[str, Any], str | None]] = {}
        if smids:
            for r in (await _BULK_ANSWERS.execute(conn, smids, {"source": client.client_id})).all():
                answers[r.source_message_id] = (r.status_code, r.body, r.payload_sha256)
        late_of: dict[str, int] = {}  # person id -> their rows recorded late (the person's report row)
        stopped: set[str] = set()  # people whose remaining rows go the per-change way
        holidays = self._ref.bank_holidays()
        # person id -> (their evaluation, its access facts): the same evaluation is the same history
        facts_of: dict[str, tuple[Evaluation, Any]] = cache.facts if cache is not None else {}

        # (person id, change type, trust, hospital named) -> (the facts decided on, the decision): the
        # file's (BulkCache.decisions: its people's, for this caller and channel), else the chunk's
        decided = cache.decisions(caller, channel) if cache is not None else {}

        def evaluation_of(pid: str) -> Evaluation:
            if pid not in statuses:
                statuses[pid] = evaluation(pid, histories[pid], self._ref, self._agreements, today)
            return statuses[pid]

        def status_of(pid: str) -> S117Status:
            return evaluation_of(pid).status

        def decide(p: _Prepared, index: str, change_type: ChangeType, hospital: str | None) -> tuple[Decision, str | None]:
            pid = person_of.get(index)
            history = histories.get(pid, []) if pid else []
            facts = None
            if history:  # the same evaluation is the same history (they move together), the same facts
                ev = evaluation_of(pid)
                held = facts_of.get(pid)
                if held is None or held[0] is not ev:
                    held = facts_of[pid] = (ev, self.access.facts(ev.status, history))
                facts = held[1]
            # AccessPolicy.decide_write, the caller worked out once a chunk; a pure function of its
            # arguments, so decided once for the same facts (the same object, held with the answer: a
            # person's facts stay one object from row to row while their parties do not change).
            trust = self.access.trust_of(hospital) if hospital else None
            key = (pid, change_type, trust, bool(hospital))
            known = decided.get(key)
            if known is not None and known[0] is facts:
                return known[1], pid if history else None
            decision = decide_write(caller, change_type, trust, bool(hospital), facts, channel)
            decided[key] = (facts, decision)
            return decision, pid if history else None

        # write_precheck's questions of the source, the channel and the change type alone (a pure
        # function of those: once a chunk per change type), and the change type it asks for one that
        # cannot be read (None: nothing to ask, e.g. of a trust).
        any_change = _ANY_COUNCIL_CHANGE if caller.org_kind in _RELATIONSHIP_KINDS and not caller.admin else None
        rule_refusals: dict[ChangeType, Decision | None] = {}

        def rule_refusal(change_type: ChangeType) -> Decision | None:
            d = decide_write(caller, change_type, None, False, None, channel)
            refused = rule_refusals[change_type] = d if not d.allowed and d.rule in _RULE_ONLY else None
            return refused

        def replayed(smid: str, digest: str | None) -> Outcome | None:
            first = answers.get(smid)
            if first is None:
                return None
            status_code, body, sha = first
            if not same_change(sha, digest):
                out.after.append(lambda: blog.info("idempotency key reused with another payload", source=client.client_id,
                                                  status=409))
                return key_reused(smid, correlation_id)
            return Outcome(status_code, {**body, "duplicate": True})

        async def refuse(decision: Decision, person_id: str | None, change_type: str) -> Outcome:
            await record_decision(conn, client, channel=channel, action="write", decision=decision,
                                  person_id=person_id, change_type=change_type, correlation_id=correlation_id)
            out.after.append(lambda: (metrics.INGEST.labels(channel=channel, outcome="refused").inc(), blog.info(
                "register change refused by the access policy", source=client.client_id, channel=channel,
                reason_codes=[decision.rule.value], correlation_id=correlation_id)))
            return refusal(decision)

        async def hold_in_quarantine(raw: bytes, smid: str | None, problems: list[FieldProblem]) -> Outcome:
            qid = uuid4()
            stored = [x.stored_dict() for x in problems]
            await conn.execute(_INSERT_QUARANTINE, dict(
                quarantine_id=qid, source=client.client_id, channel=channel,
                source_message_id=smid[:200] if smid else None, errors=stored, raw=self._protector.encrypt(raw),
                received_at=now, status="held", correlation_id=correlation_id))
            out.after.append(lambda: (metrics.INGEST.labels(channel=channel, outcome="quarantined").inc(), blog.info(
                "register change quarantined", source=client.client_id, channel=channel, quarantine_id=qid,
                fields=[e["field"] for e in stored], correlation_id=correlation_id)))
            return problem(422, "invalid-register-change", "Register change rejected",
                           f"{len(problems)} field(s) failed validation; the input is held in quarantine",
                           errors=[x.as_dict() for x in problems], quarantine_id=qid, correlation_id=correlation_id)

        for i, p in enumerate(prepared):
            if i and i % BULK_YIELD_EVERY == 0:
                # A chunk is a few hundred ms of work: let requests be read and answered meanwhile (on
                # SQLite the writer holds the write lock, so other writers wait in the group commit anyway).
                await asyncio.sleep(0)
            row = p.row
            key = p.key
            if key is not None and key in stopped:
                continue
            # write_precheck: the access policy before validation, and before anything of the row is kept.
            decision = None
            asked = p.change_type if p.change_type is not None else any_change
            if asked is not None:
                ruled = rule_refusals[asked] if asked in rule_refusals else rule_refusal(asked)
                if ruled is not None:  # needs nothing of the person, nor the rest of the row
                    out.outcomes[i] = await refuse(ruled, None, p.change_type.value if p.change_type else None)
                    continue
                if p.precheck_index is not None:
                    decision, refused_pid = decide(p, p.precheck_index, asked, p.hospital)
                    if not decision.allowed:
                        if p.hospital is None and decision.rule is Rule.HOSPITAL_NOT_RUN_BY_SOURCE:
                            decision = None  # a detention naming no hospital: validation's (write_precheck)
                        else:
                            out.outcomes[i] = await refuse(decision, refused_pid, asked.value)
                            continue
                elif p.relationship_index is not None:
                    related, refused_pid = decide(p, p.relationship_index, asked, None)
                    if not related.allowed and related.rule is Rule.NO_RELATIONSHIP:
                        out.outcomes[i] = await refuse(related, refused_pid,
                                                       p.change_type.value if p.change_type else None)
                        continue
            if row.data is None:  # reject_unmapped
                out.outcomes[i] = await hold_in_quarantine(row.original, row.source_message_id, list(row.problems))
                continue
            # accept_mapped: a change that does not validate is replayed or quarantined.
            if p.change_in is None:
                replay = replayed(p.smid, p.digest) if p.smid else None
                if replay is not None:
                    out.after.append(lambda r=replay: self._count_replay(channel, r))
                    out.outcomes[i] = replay
                else:
                    out.outcomes[i] = await hold_in_quarantine(row.original, p.smid, p.problems or [])
                continue
            change_in = p.change_in
            pid = person_of.get(p.index)
            if pid is None:  # someone new: made by the per-change path
                stopped.add(key)
                continue
            replay = replayed(change_in.source_message_id, p.digest)
            if replay is not None:
                out.after.append(lambda r=replay: self._count_replay(channel, r))
                out.outcomes[i] = replay
                continue
            history = histories[pid]
            before = status_of(pid) if history else None
            if decision is None or p.index != p.precheck_index or change_in.hospital_ods != p.hospital:
                decision, refused_pid = decide(p, p.index, change_in.change_type, change_in.hospital_ods)
                if not decision.allowed:
                    out.outcomes[i] = await refuse(decision, refused_pid, change_in.change_type.value)
                    continue
            # The wrong-person check (hub/ingest/identity.py), before anything of the row is recorded;
            # what it sent is merged into the details held below (nothing to compare or merge when the
            # row set no field but the NHS number: then model_dump(exclude_unset=True) gives that alone).
            sent = {} if change_in.person.model_fields_set <= _NHS_NUMBER_ONLY else _sent_details(change_in)
            held_details = load_person_details(self._protector, details[pid]) if sent else None
            if held_details is not None and (mismatch := identity_problem(held_details, sent)) is not None:
                out.outcomes[i] = await hold_in_quarantine(row.original, change_in.source_message_id, [mismatch])
                continue
            # A time-ordered id (a UUID too): the chunk's 500 ids go to the right-hand edge of the change
            # and service-level keys' indexes, not to 500 random pages of each (bench/JOURNAL.md, "Fifteenth session").
            change = self._canonical(change_in, client, pid, today, uuid7())
            previous = evaluation_of(pid)
            extended = previous.extended(change)  # == evaluate(pid, [*history, change], ...)
            after = extended.status
            late = previous.is_late(change)
            events = derive_events(before, after, change, holidays=holidays,
                                   revealed=self._revealed(pid, previous.changes, change, today) if late else None)
            if hold_reason(before, after, change) is not None:  # held while a dispute is open: per-change path
                stopped.add(key)
                continue
            await record_decision(conn, client, channel=channel, action="write", decision=decision,
                                  person_id=pid, change_type=change_in.change_type.value,
                                  correlation_id=correlation_id)
            # The details sent merged into those held, as a single change's are (`_record_once`), with
            # the details the check above read
            if held_details is not None:
                held = held_details
                joined = held | sent
                if joined != held:
                    details[pid] = self._protector.encrypt(orjson.dumps(joined))
                    await execute_prepared(conn, _UPDATE_DETAILS, {"pid": pid, "new_details": details[pid], "at": now})
            # After the person's latest change, this chunk's earlier rows for them included.
            received_at = latest[pid] = received_after(now, latest.get(pid))
            warnings = successor_warnings(change, after, extended.changes, self._ref, today) \
                if change.residence_before_detention_la_gss is not None else None
            sl, body = await write_recorded(conn, client, change_in, change, after, events, pid,
                                            correlation_id, channel, received_at, holidays, late, warnings)
            late_of[pid] = late_of.get(pid, 0) + (1 if sl.state == "breach" else 0)
            await conn.execute(_INSERT_RESULT, dict(
                source=client.client_id, source_message_id=change_in.source_message_id, status_code=202, body=body,
                payload_sha256=str(p.digest), created_at=now))
            answers[change_in.source_message_id] = (202, body, str(p.digest))
            history.append(change)
            statuses[pid] = extended
            held = facts_of.get(pid)
            if held is not None and held[0] is previous:
                # The facts of the history with this change: the trusts are a union over the history's
                # changes (in any order), the roles the new status's.
                if not change.hospital_ods and _same_parties(previous.status, after):
                    facts_of[pid] = (extended, held[1])  # no trust added (none named), the same roles
                else:
                    added = self.access.facts(after, (change,))
                    facts_of[pid] = (extended, PersonFacts(held[1].care_trusts | added.care_trusts,
                                                           added.roles_by_org))
            out.outcomes[i] = Outcome(202, body)

            accepted_states[sl.state] = accepted_states.get(sl.state, 0) + 1
            if info_logged:
                def accepted(change: RegisterChange = change, pid: str = pid, n: int = len(events),
                             state: str = sl.state) -> None:
                    blog.info("register change accepted", source=client.client_id, channel=channel,
                              change_id=change.change_id, person_id=pid, change_type=change.change_type.value,
                              count=n, correlation_id=correlation_id, status=state)
                out.after.append(accepted)
        if accepted_states:
            def count_accepted(states: dict[str, int] = accepted_states) -> None:
                # What one increment per accepted row added, a chunk's worth at once.
                accepted_count.inc(sum(states.values()))
                for state, n in states.items():
                    if state != "met":
                        metrics.SERVICE_LEVEL.labels(state=state).inc(n)
            out.after.append(count_accepted)
        if late_of:
            # The report's counts: one upsert per person, of their status after their last row and
            # the late rows summed (what one upsert per row, in order, left), as one executemany.
            await execute_prepared(conn, _status_upsert(conn.dialect), [
                status_row(pid, statuses[pid].status, late) for pid, late in late_of.items()])
        out.histories, out.statuses = histories, statuses
        return out


def _same_parties(before: S117Status, after: S117Status) -> bool:
    """Whether `after` names the same bodies in the same roles as `before`
    (hub/domain/access.py `status_parties`: the responsible and coordinating
    bodies' determinations and the open disputes' parties), known without
    working them out: the same determinations (the rules engine re-uses one
    while its responsibility is unchanged) and equal open disputes."""
    return (after.responsible_council is before.responsible_council
            and after.responsible_commissioner is before.responsible_commissioner
            and after.coordinating_council is before.coordinating_council
            and after.open_disputes == before.open_disputes)


def _sent_details(change_in: RegisterChangeIn) -> dict[str, Any]:
    """The person fields a change sent, but the NHS number (the key the person was found by)."""
    sent = change_in.person.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    sent.pop("nhs_number", None)
    return sent


def load_person_details(protector: DataProtector, token: bytes) -> dict[str, Any]:
    return orjson.loads(protector.decrypt(token))
