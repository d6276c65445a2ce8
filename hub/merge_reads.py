"""Reading a merge of two NHS numbers: GET /v1/persons/merges/{merge_id}.

A merge (hub/merges.py) and its reversal if one was made (hub/unmerges.py),
as the one access policy lets the caller see it
(`hub.domain.access.decide_merge_read`: the hub operator and the
organisation whose client recorded the merge; anyone else and an unknown id:
None, which the API answers with one 404 after the read refusal floor):
when and by whom (organisation) it was made, on which channel, whether
forced; the retained and the superseded identities (each hub person's id,
and its NHS number only under the `identity` field group an agreement in
force grants the caller, as the person lookup needs it: the hub operator
reads every group); how many changes, cases, care package lines and split
decisions moved; and its reversal (when, by whom, why, what went back, what
was left unattributed, the events that told it).

A number is the merge row's own (encrypted) while the merge stands. A
reversal keeps no number (`person_merge_reversals`: the keyed hashes only),
so after one a number is the one the person or merge holding its hash now
holds, checked against the hash; none holds it (a reversed link of numbers no
person held): `null`.

Every read is an `access_decisions` row (action `read`, channel `merge`): an
allowed one once for each hub person it names (a subject access request
finds it), with the agreement and the groups it disclosed; a refusal naming
no one, as the reversal's. Nothing here is logged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.access import ReadGrant, caller_of, record_decision
from hub.crypto import DataProtector
from hub.domain.access import decide_merge_read
from hub.fhir.messages import IDENTITY
from hub.ingest.nhs_number import normalise
from hub.ingest.service import Client, load_person_details
from hub.store.db import read_only, write_transaction
from hub.store.schema import person_merge_reversals, person_merges, persons

CHANNEL = "merge"
# What moved and what went back, counted (null: the merge was recorded before the hub kept that list,
# migration 0039).
MOVED = ("changes", "cases", "care_package_lines", "split_decisions")


def _iso(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


def _counted(lists: dict[str, Any]) -> dict[str, int | None]:
    return {k: len(lists[k]) if isinstance(lists.get(k), list) else None for k in MOVED}


def _checked(protector: DataProtector, index: str, number: str | None) -> str | None:
    number = normalise(number or "")
    return number if number and protector.index(number) == index else None


async def _number(conn: AsyncConnection, protector: DataProtector, index: str, sealed: bytes | None) -> str | None:
    """The NHS number whose keyed hash is `index`: `sealed` (the merge row's, encrypted), else the number of
    the person holding that hash now, else of a merge naming it; each checked against `index` (never
    another's number); None if the hub keeps it nowhere."""
    if sealed and (number := _checked(protector, index, protector.decrypt(sealed).decode())):
        return number
    person = (await conn.execute(select(persons.c.details).where(persons.c.nhs_number_index == index))).first()
    if person is not None and (number := _checked(protector, index, load_person_details(
            protector, person.details).get("nhs_number"))):
        return number
    m = person_merges.c
    for held in (await conn.execute(select(m.superseded_index, m.superseded_number, m.retained_number)
                                    .where((m.superseded_index == index) | (m.retained_index == index)))).all():
        token = held.superseded_number if held.superseded_index == index else held.retained_number
        if token and (number := _checked(protector, index, protector.decrypt(token).decode())):
            return number
    return None


async def _view(conn: AsyncConnection, protector: DataProtector, merge_id: str, row: Any, reversal: Any,
                shown: bool) -> dict[str, Any]:
    """The answer for merge `row` standing, or reversed (`reversal`); NHS numbers only if `shown`."""
    if row is not None:
        held, sealed, moved = row, (row.retained_number, row.superseded_number), row.moved or {}
        made = {"merged_at": _iso(row.at), "merged_by": row.org_code, "channel": row.channel,
                "forced": bool(row.forced), "event_id": row.event_id}
    else:  # the reversal keeps the merge's columns (`merge_record`) but its numbers
        record = reversal.merge_record
        held, sealed, moved = reversal, (None, None), record.get("moved") or {}
        made = {"merged_at": record.get("merged_at"), "merged_by": record.get("merged_by"),
                "channel": record.get("channel"), "forced": bool(record.get("forced")),
                "event_id": record.get("event_id")}
    body: dict[str, Any] = {"merge_id": merge_id, "status": "merged" if row is not None else "reversed", **made}
    for side, person_id, index, token in (("retained", held.retained_person_id, held.retained_index, sealed[0]),
                                          ("superseded", held.superseded_person_id, held.superseded_index,
                                           sealed[1])):
        body[side] = {"person_id": person_id}
        if shown:
            body[side]["nhs_number"] = await _number(conn, protector, index, token)
    body["moved"] = _counted(moved)
    body["reversal"] = None if reversal is None else {
        "reversed_at": _iso(reversal.at), "reversed_by": reversal.org_code,
        "reason": protector.decrypt(reversal.reason).decode(), "moved_back": _counted(reversal.moved_back or {}),
        "unattributed_changes": list((reversal.unattributed or {}).get("changes", [])),
        "event_ids": list(reversal.event_ids or [])}
    return body


async def read_merge(engine: AsyncEngine, protector: DataProtector, client: Client, merge_id: str,
                     grant: ReadGrant, correlation_id: str | None) -> dict[str, Any] | None:
    """Merge `merge_id` as `client` may read it with `grant` (see the module); None: no such merge, or not
    one `client` may read (one answer for both). Audited either way."""
    shown = IDENTITY in grant.groups
    body: dict[str, Any] | None = None
    async with read_only(engine) as conn:
        # The merge first, then its reversal: a reversal deletes the one and writes the other in one commit.
        row = (await conn.execute(select(person_merges).where(person_merges.c.merge_id == merge_id))).first()
        reversal = None if row is not None else (await conn.execute(
            select(person_merge_reversals).where(person_merge_reversals.c.merge_id == merge_id))).first()
        merged_by = row.org_code if row is not None else \
            reversal.merge_record.get("merged_by") if reversal is not None else None
        decision = decide_merge_read(caller_of(client), merged_by)
        if decision.allowed:
            body = await _view(conn, protector, merge_id, row, reversal, shown)
    people = sorted({body[side]["person_id"] for side in ("retained", "superseded")} - {None}) if body else []
    async with write_transaction(engine) as conn:
        await record_decision(conn, client, channel=CHANNEL, action="read", decision=decision,
                              agreement_id=grant.agreement_id if body else None,
                              field_groups=({IDENTITY} if shown else set()) if body else (),
                              correlation_id=correlation_id, person_ids=people or None)
    return body
