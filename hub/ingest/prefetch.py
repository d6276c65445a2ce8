"""What an ingest batch's changes read, read for the whole batch (PostgreSQL and SQLite).

Each change's unit of work (hub/ingest/service.py `_record_once`) locks its
person, looks for an earlier answer to its source message id and reads the
person's history: three statements, each a round trip to PostgreSQL, one
after another inside the batch's transaction. For a batch of 32 changes
that was about a hundred round trips in a row while the batch held the
event topic's lock. Here they are three statements for the batch, run once
the batch holds the topic lock (`GroupCommit`'s `before_batch`):

- every person of the batch already on the register, locked (`FOR UPDATE`,
  in key order) with their stored details;
- the earlier answers to the batch's (source, source message id) pairs;
- those people's histories (with each person's latest `received_at`: the
  batch's change for them is stamped after it, hub/ingest/service.py
  `received_after`).

What a unit then finds here is exactly what its own statements would have
read: the people are locked before their histories are read (anyone else
writing a change for them must take the same lock first), batches of two
instances are serialised by the topic lock, and within a batch no two units
share a person or a message id (the group commit's keys). A person not found
is new to the register, and with the topic lock held (every transaction that
makes a person takes it first) nobody else can make them before the batch
commits: the unit's insert of them goes out with the batch's other inserts
(`IngestService._lock_or_create_person`), not as a round trip of its own.
A unit run alone, after its batch failed, reads for itself as before (and
inserts a new person `ON CONFLICT DO NOTHING`, then locks whoever won a race).

SQLite: the same reads, each list one JSON parameter (`json_each`), run once
the batch's `BEGIN IMMEDIATE` holds the write lock (nobody else can write
until it commits). The statements are inline and cost microseconds, but a
batch of eight changes for people new to the register (an interface engine's
admissions) made sixteen of them one at a time, a lock read and an answer
read per change: about 4% of the hub's CPU an MLLP message. And with the
write lock held, a person not found cannot be inserted by anyone else before
the batch commits: the unit's insert of them goes out with the batch's other
inserts (`IngestService._lock_or_create_person`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sqlalchemy import String, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY

from hub.codec import from_jsonable
from hub.domain.model import RegisterChange
from hub.store.db import InList, Prepared, execute_prepared
from hub.store.schema import ingest_results, not_retracted, persons, register_changes


@dataclass(frozen=True, slots=True)
class Hint:
    """What a change's unit will read: its person (by NHS-number index) and its message."""

    index: str
    source: str
    source_message_id: str


@dataclass(slots=True)
class BatchReads:
    people: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # index -> (person id, stored details)
    answers: dict[tuple[str, str], Any] = field(default_factory=dict)  # (source, smid) -> ingest_results row
    histories: dict[str, list[RegisterChange]] = field(default_factory=dict)  # person id -> changes
    # person id -> the latest `received_at` of their changes (a person with none: absent); a change
    # is stamped after it (hub/ingest/service.py `received_after`)
    latest: dict[str, Any] = field(default_factory=dict)


_TEXTS = ARRAY(String)
# A batch's people locked (in key order) with their stored details, and their
# histories: the council-file chunk's reads too (`IngestService.accept_bulk`).
LOCK_PEOPLE = InList("indexes", lambda values: select(
    persons.c.nhs_number_index, persons.c.person_id, persons.c.details)
    .where(persons.c.nhs_number_index.in_(values)).order_by(persons.c.nhs_number_index).with_for_update())
HISTORIES = InList("person_ids", lambda values: select(register_changes.c.person_id, register_changes.c.canonical,
                                                        register_changes.c.received_at)
                   .where(register_changes.c.person_id.in_(values), not_retracted()))
_ANSWERS = Prepared(
    select(ingest_results.c.source, ingest_results.c.source_message_id, ingest_results.c.status_code,
           ingest_results.c.body, ingest_results.c.payload_sha256)
    .where(ingest_results.c.source == any_(bindparam("sources", type_=_TEXTS)),
           ingest_results.c.source_message_id == any_(bindparam("smids", type_=_TEXTS))))


def _json_list(name: str) -> Any:
    return select(func.json_each(bindparam(name)).table_valued("value").c.value)


# SQLite: the pairs' sources and message ids each one JSON list (the primary key's two columns, looked up
# for each source and message id in the lists).
_ANSWERS_SQLITE = Prepared(
    select(ingest_results.c.source, ingest_results.c.source_message_id, ingest_results.c.status_code,
           ingest_results.c.body, ingest_results.c.payload_sha256)
    .where(ingest_results.c.source.in_(_json_list("sources")),
           ingest_results.c.source_message_id.in_(_json_list("smids"))))


async def read_batch(conn: Any, hints: list[Hint | None]) -> BatchReads | None:
    """The batch's people (locked), earlier answers and histories (None on another database)."""
    dialect = conn.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return None
    given = [h for h in hints if h is not None]
    reads = BatchReads()
    if not given:
        return reads
    for r in await LOCK_PEOPLE.execute(conn, sorted({h.index for h in given})):
        reads.people[r.nhs_number_index] = (r.person_id, r.details)
    pairs = {(h.source, h.source_message_id) for h in given}
    sources, smids = sorted({s for s, _ in pairs}), sorted({m for _, m in pairs})
    if dialect == "sqlite":
        answers = await execute_prepared(conn, _ANSWERS_SQLITE, {"sources": orjson.dumps(sources).decode(),
                                                                 "smids": orjson.dumps(smids).decode()})
    else:
        answers = await execute_prepared(conn, _ANSWERS, {"sources": sources, "smids": smids})
    for r in answers:
        if (r.source, r.source_message_id) in pairs:
            reads.answers[(r.source, r.source_message_id)] = r
    if reads.people:
        reads.histories = {pid: [] for pid, _ in reads.people.values()}
        latest = reads.latest
        for r in await HISTORIES.execute(conn, list(reads.histories)):
            reads.histories[r.person_id].append(from_jsonable(RegisterChange, r.canonical))
            held = latest.get(r.person_id)
            if held is None or r.received_at > held:
                latest[r.person_id] = r.received_at
    return reads
