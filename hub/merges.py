"""Merging two NHS numbers of one patient (PDS merges): the store and the log.

When the Personal Demographics Service finds two records for one patient it
keeps one NHS number (retained) and supersedes the other; a trust's PAS then
sends HL7 v2 ADT^A40 (PID-3 the retained number, MRG-1 the superseded one),
or a FHIR `$process-message` whose event is `nhs-numbers-merged` (channel
`fhir`: adapters/fhir_inbound), and the hub operator or a trust may ask
`POST /v1/persons/merge`. All reach
`PersonMergeService.merge`, which in one write transaction (hub/corrections.py:
the events topic's publish lock, then both persons' row locks, as ingest and retraction
take them):

1. finds the hub person each number holds (a number already superseded
   resolves to its retained person: hub/store/merged.py), and asks the one
   access policy (`hub.domain.access.decide_merge`: the hub operator; a trust
   with a role for every person joined; the decision in `access_decisions`,
   action `merge`);
2. answers a merge made before with its first answer (`duplicate: true`):
   the same superseded number into another number is a conflict (409 naming
   `superseded_nhs_number`); a retained number itself superseded is refused
   (422 naming `retained_nhs_number`);
3. refuses to join two persons whose dates of birth differ (422 naming
   `birth_date`), unless the hub operator sends `force: true` (recorded);
4. writes the `person_merges` row (taken off only by a reversal of a merge
   made in error, which keeps it: the superseded number resolves to the
   retained person until then), and:
   - both numbers had persons: every register change of the superseded
     person (retracted ones too) joins the retained person's history (its
     `person_id`; the change, its id, source and content as they were; the
     row lists them), as do their retractions, care package lines and split
     decisions; the superseded person's row stays (what was told of them,
     their audit), its number's hash taken off it; the retained person's
     details gain what only the superseded person's held; the children's
     notices that went under the superseded person (their `disclosures`,
     left as they are) count as the retained person's (hub/children.py
     `merged_into` reads this row);
   - only the superseded number had a person: that person is given the
     retained number (hash and details);
   - otherwise nothing of a person changes;
5. records the register counts' row of the retained person as the joined
   history stands (the superseded person's row removed), the operator action
   (`person-merge`, naming both hub person ids), and, when a person was told
   of under the superseded number, one event on the log: an
   `s117-notification-corrected` with the headers `merged` (the superseded
   person's id), `late` and `history_changes` (the joined history). The
   dispatcher tells it as a retraction is told: each body whose position the
   joined history moves hears the difference, and every body told of the
   superseded number's person is told the merged position, superseding the
   last message it had about them (hub/delivery/dispatcher.py).

A merge made in error (two patients, not one) is reversed by
`POST /v1/persons/merges/{merge_id}/reversal` (hub/unmerges.py): each case
above undone, what was moved moved back, both persons told; the merge row
(with the care package lines, split decisions and detail fields it moved,
and the superseded number encrypted: migration 0039) lists what it takes
back. HL7 v2 has no event for it (A37 unlinks an A24 link) and none is taken.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import uuid4

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.access import AccessPolicy, caller_of
from hub.audit import record_operator_action
from hub.bus.port import MERGED
from hub.codec import from_jsonable
from hub.corrections import Correction, CorrectionService, corrected, correction
from hub.crypto import DataProtector
from hub.domain.access import TEXTS, Decision, decide_merge
from hub.domain.agreements import AgreementBook
from hub.domain.dates import england_day
from hub.domain.model import DomainEvent, RegisterChange
from hub.domain.ports import ReferenceData
from hub.domain.rules import evaluate
from hub.domain.rules.precedence import change_order
from hub.ingest.nhs_number import nhs_number_problem, normalise
from hub.ingest.service import Client, event_id_for, load_person_details
from hub.observability.logging import get_logger
from hub.store import merged
from hub.unmerges import MergeReversalService
from hub.workflows.person_merge import MovedCases, move_cases
from hub.store.schema import (care_packages, change_retraction_reversals, change_retractions, including_retracted,
                              not_retracted, person_merges, persons, register_changes, register_status,
                              split_decisions)

log = get_logger("hub.merges")
ACTION = "merge"
# The merge's event id is UUIDv5 of (the merge's id, 0, this).
MERGE_KIND = "s117-nhs-numbers-merged"

# The fields a refusal names, by channel: REST's body fields, HL7 A40's positions.
FIELDS = {
    "rest": {"retained": "retained_nhs_number", "superseded": "superseded_nhs_number", "birth_date": "birth_date",
             "force": "force"},
    "mllp": {"retained": "PID-3", "superseded": "MRG-1", "birth_date": "PID-7", "force": "force"},
    # FHIR $process-message: the mapping's keys, which the API turns into the element's location
    # (adapters/fhir_inbound/mapping.py `MappingResult.origins`).
    "fhir": {"retained": "retained", "superseded": "superseded", "birth_date": "birth_date", "force": "force"},
}


class MergeRefused(Exception):
    """A merge refused for what it asks (not by the access policy): `status` 409 or 422, the field
    (as the channel names it) and why. Never quotes a number or a date."""

    def __init__(self, status: int, kind: str, field: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.kind, self.field, self.reason = status, kind, field, reason


class MergeDenied(Exception):
    """Refused by the access policy: `decision` names the rule (no-relationship: the one answer for a
    number pair not on the register and for a person the caller has no role for)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.rule.value)
        self.decision = decision

    @property
    def text(self) -> str:
        return TEXTS[self.decision.rule]


@dataclass(frozen=True, slots=True)
class Merge:
    """The answer: the first merge's, with `duplicate` set on the same merge again."""

    body: dict[str, Any]
    duplicate: bool


def _answer(row: Any) -> dict[str, Any]:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return {"merge_id": row.merge_id, "status": "merged", "retained_person_id": row.retained_person_id,
            "superseded_person_id": row.superseded_person_id, "moved_changes": len(row.moved.get("changes", [])),
            "moved_cases": len(row.moved.get("cases", [])), "forced": bool(row.forced),
            "merged_at": at.isoformat(), "merged_by": row.org_code,
            "correlation_id": row.correlation_id, "event_id": row.event_id}


def merge_event(person_id: str, carried: RegisterChange) -> DomainEvent:
    """The event a merge publishes: a correction (routed to no one as it is: each body whose position the
    joined history moves, and each body told of the superseded number's person, is told)."""
    return corrected(person_id, carried, "Two NHS numbers of this person were merged (PDS): one register history, "
                                         "under the retained number.", merged=True)


def _said(c: Correction, person_id: str | None, changes: int, cases: int, event_id: str | None) -> None:
    """A merge's log lines, once committed: the retained person's id, never a number."""
    log.info("nhs numbers merged", person_id=person_id, source=c.client.client_id, channel=c.channel, count=changes,
             event_id=event_id, correlation_id=c.correlation_id)
    if cases:
        log.info("workflow cases moved by a merge", person_id=person_id, count=cases, correlation_id=c.correlation_id)


class PersonMergeService(CorrectionService):
    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook,
                 protector: DataProtector, today: Callable[[], date] = england_day) -> None:
        super().__init__(engine, ref, agreements, protector, today)
        self._access = AccessPolicy(ref)
        # A merge made in error reversed (hub/unmerges.py): the same store, reference data and key.
        self.reversals = MergeReversalService(engine, ref, agreements, protector, today)

    async def merge(self, client: Client, retained_nhs: str, superseded_nhs: str, correlation_id: str,
                    channel: str = "rest", force: bool = False) -> Merge:
        """Merge `superseded_nhs` into `retained_nhs` for `client` (see the module). Raises `MergeRefused`
        (the field named as `channel` names it) or `MergeDenied` (the access policy)."""
        names = FIELDS.get(channel, FIELDS["rest"])
        for which, number in (("retained", retained_nhs), ("superseded", superseded_nhs)):
            problem = nhs_number_problem(number)
            if problem:
                raise MergeRefused(422, "invalid-request", names[which], problem)
        retained_nhs, superseded_nhs = normalise(retained_nhs), normalise(superseded_nhs)
        if retained_nhs == superseded_nhs:
            raise MergeRefused(422, "invalid-request", names["superseded"],
                               "is the retained number: a merge joins two different NHS numbers")
        caller = caller_of(client)
        if force and not caller.admin:
            raise MergeRefused(422, "invalid-request", names["force"],
                               "only the hub operator may force a merge of persons whose dates of birth differ")
        kept_idx = self._protector.index(retained_nhs)
        gone_idx = self._protector.index(superseded_nhs)
        today = self._today()
        async with correction(self._engine, client, action=ACTION, channel=channel,
                              correlation_id=correlation_id) as c:
            done = await self._merge_in(c, today, names, force, retained_nhs, kept_idx, gone_idx, superseded_nhs)
        if isinstance(done, Decision):  # refused by the policy: the decision recorded (committed), then raised
            raise MergeDenied(done)
        return done

    async def _merge_in(self, c: Correction, today: date, names: dict[str, str], force: bool, retained_nhs: str,
                        kept_idx: str, gone_idx: str, superseded_nhs: str) -> Merge | Decision:
        """The merge in `c` (see `merge`): its answer, or the policy's refusal (recorded)."""
        conn = c.conn
        earlier = (await conn.execute(select(person_merges)
                                      .where(person_merges.c.superseded_index == gone_idx))).first()
        # Each number's person, locked (a superseded number: the person it resolves to now).
        kept = await self._person(c, kept_idx)
        gone = await self._person(c, gone_idx)
        if gone is not None and kept is not None and gone.person_id == kept.person_id:
            gone = None  # merged before (or a chain): one person
        histories = {p.person_id: await self._history(conn, p.person_id) for p in (kept, gone) if p is not None}
        facts = [self._access.facts(evaluate(pid, h, self._ref, self._agreements, today) if h else None, h)
                 for pid, h in histories.items() if h]
        decision = decide_merge(caller_of(c.client), facts, c.channel)
        if not decision.allowed:
            await c.decided(decision)
            return decision
        if earlier is not None:
            if earlier.retained_index == kept_idx:  # the same merge again: its first answer
                await c.decided(decision, person_id=earlier.retained_person_id)
                return Merge(_answer(earlier), duplicate=True)
            raise MergeRefused(409, "conflict", names["superseded"],
                               "was merged into another NHS number already (a merge made in error is reversed "
                               "first: POST /v1/persons/merges/{merge_id}/reversal)")
        if (await merged.retained(conn, kept_idx)) is not None:
            raise MergeRefused(422, "invalid-request", names["retained"],
                               "was itself superseded by an earlier merge: send the number it was merged into")
        kept_details = load_person_details(self._protector, kept.details) if kept is not None else None
        gone_details = load_person_details(self._protector, gone.details) if gone is not None else None
        forced = False
        if kept_details is not None and gone_details is not None:
            a, b = kept_details.get("birth_date"), gone_details.get("birth_date")
            if a and b and a != b:
                if not force:
                    raise MergeRefused(422, "invalid-request", names["birth_date"],
                                       "the two numbers' persons have different dates of birth: not merged "
                                       "(the hub operator may force it once the records are checked)")
                forced = True
        return await self._merge_locked(c, today, decision, retained_nhs, kept_idx, gone_idx, kept, gone,
                                        kept_details, gone_details, forced, superseded_nhs)

    async def _merge_locked(self, c: Correction, today: date, decision: Decision, retained_nhs: str, kept_idx: str,
                            gone_idx: str, kept: Any, gone: Any, kept_details: dict[str, Any] | None,
                            gone_details: dict[str, Any] | None, forced: bool, superseded_nhs: str) -> Merge:
        conn, client, channel, correlation_id = c.conn, c.client, c.channel, c.correlation_id
        now = datetime.now(UTC)
        merge_id = str(uuid4())
        rc = register_changes.c
        moved: list[str] = []
        # What else moved, for a reversal (hub/unmerges.py): line and decision ids, the detail fields added.
        lines: list[int] = []
        splits: list[str] = []
        added: list[str] = []
        cases = MovedCases()  # the superseded person's transfer and dispute cases, given to the retained person
        person_id: str | None = None  # the retained person, once merged
        told_of: str | None = None  # the superseded number's person, if any body may have been told of them
        if gone is not None and kept is not None:
            person_id, told_of = kept.person_id, gone.person_id
            rows = (await conn.execute(including_retracted(  # the whole history, retracted changes too
                select(rc.change_id, rc.canonical).where(rc.person_id == gone.person_id)
                .order_by(rc.change_id)))).all()
            for r in rows:
                canonical = dict(r.canonical) | {"person_id": person_id}
                await conn.execute(update(register_changes).where(rc.change_id == r.change_id)
                                   .values(person_id=person_id, canonical=canonical))
                moved.append(r.change_id)
            lines = list((await conn.execute(select(care_packages.c.line_id).where(
                care_packages.c.person_id == gone.person_id).order_by(care_packages.c.line_id))).scalars())
            splits = list((await conn.execute(select(split_decisions.c.decision_id).where(
                split_decisions.c.person_id == gone.person_id).order_by(split_decisions.c.decision_id))).scalars())
            for table in (change_retractions, change_retraction_reversals, care_packages, split_decisions):
                await conn.execute(update(table).where(table.c.person_id == gone.person_id)
                                   .values(person_id=person_id))
            # Their workflow cases follow (hub/workflows/person_merge.py): re-evaluated against the joined
            # history by the workflows' consumer when it reads this merge's event, as after a retraction.
            cases = await move_cases(conn, gone.person_id, person_id, merge_id, today)
            await conn.execute(delete(register_status).where(register_status.c.person_id == gone.person_id))
            await conn.execute(update(persons).where(persons.c.person_id == gone.person_id)
                               .values(nhs_number_index=merged.tombstone(gone.person_id), updated_at=now))
            assert kept_details is not None and gone_details is not None
            joined = gone_details | kept_details  # the retained record's fields, and what only the other held
            added = sorted(k for k in joined if k not in kept_details)
            if joined != kept_details:
                await conn.execute(update(persons).where(persons.c.person_id == person_id).values(
                    details=self._protector.encrypt(orjson.dumps(joined)), updated_at=now))
        elif gone is not None:  # only the superseded number on the register: its person takes the retained one
            person_id = told_of = gone.person_id
            assert gone_details is not None
            await conn.execute(update(persons).where(persons.c.person_id == person_id).values(
                nhs_number_index=kept_idx, updated_at=now,
                details=self._protector.encrypt(orjson.dumps(gone_details | {"nhs_number": retained_nhs}))))
        elif kept is not None:
            person_id = kept.person_id
        event_id: str | None = None
        history: list[RegisterChange] = []
        if person_id is not None:
            rows = (await conn.execute(select(rc.change_id, rc.canonical)
                                       .where(rc.person_id == person_id, not_retracted()))).all()
            history = [from_jsonable(RegisterChange, r.canonical) for r in rows]
            if history and told_of is not None:
                after = evaluate(person_id, history, self._ref, self._agreements, today)
                await c.counted(person_id, history, after)
                carried = max(history, key=change_order)
                event_id = event_id_for(merge_id, 0, MERGE_KIND)
                await c.publish(merge_event(person_id, carried), event_id, carried, after,
                                [r.change_id for r in rows], (MERGED, told_of))
        await conn.execute(person_merges.insert().values(
            superseded_index=gone_idx, retained_index=kept_idx,
            retained_number=self._protector.encrypt(retained_nhs.encode()), merge_id=merge_id,
            superseded_person_id=gone.person_id if gone is not None else None, retained_person_id=person_id,
            moved={"changes": moved, "cases": cases.moved, "care_package_lines": lines, "split_decisions": splits,
                   "details_added": added},
            superseded_number=self._protector.encrypt(superseded_nhs.encode()),
            forced=forced, client_id=client.client_id[:64],
            org_code=client.org_code[:16],
            channel=channel[:32], correlation_id=correlation_id[:64], event_id=event_id, at=now))
        await c.decided(decision, person_id=person_id)
        # The merge, an audited action naming both hub persons (never a number).
        await record_operator_action(conn, client.client_id, "person-merge", person_id or merge_id, {
            "merge_id": merge_id, "retained_person_id": person_id,
            "superseded_person_id": gone.person_id if gone is not None else None, "moved_changes": len(moved),
            "moved_cases": cases.moved, "duplicate_cases": cases.duplicates,
            "forced": forced, "channel": channel, "org_code": client.org_code, "correlation_id": correlation_id,
            "event_id": event_id})
        c.then(lambda: _said(c, person_id, len(moved), len(cases.moved), event_id))
        return Merge({"merge_id": merge_id, "status": "merged", "retained_person_id": person_id,
                      "superseded_person_id": gone.person_id if gone is not None else None,
                      "moved_changes": len(moved), "moved_cases": len(cases.moved), "forced": forced,
                      "merged_at": now.isoformat(),
                      "merged_by": client.org_code[:16], "correlation_id": correlation_id[:64],
                      "event_id": event_id}, duplicate=False)

    @staticmethod
    async def _person(c: Correction, index: str) -> Any:
        """The person a number's index resolves to (hub/store/merged.py), its row locked; None if none."""
        person_id = await merged.person_id_by_index(c.conn, index)
        if person_id is None:
            return None
        return await c.lock_person(persons.c.person_id == person_id, persons.c.details)

    @staticmethod
    async def _history(conn: AsyncConnection, person_id: str) -> list[RegisterChange]:
        rows = (await conn.execute(select(register_changes.c.canonical)
                                   .where(register_changes.c.person_id == person_id, not_retracted()))).all()
        return [from_jsonable(RegisterChange, r.canonical) for r in rows]
