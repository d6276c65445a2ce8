"""Reversing a merge of two NHS numbers made in error: two patients, not one.

A trust's PAS or the hub operator that merged two numbers (hub/merges.py)
which PDS in fact holds for two patients has one person's detentions,
entitlement, care package lines and cases in another's record, and every body
told the joined position: a wrong-person hazard (H-01). `POST
/v1/persons/merges/{merge_id}/reversal` undoes it through
`MergeReversalService.reverse`, in one write transaction taking the locks a
merge takes (hub/corrections.py: the events topic's publish lock, then the retained person's and
the superseded person's row locks):

1. the merge (`person_merges`, by its id) or its reversal before
   (`person_merge_reversals`), and the one access policy
   (`hub.domain.access.decide_unmerge`, action `unmerge` in
   `access_decisions`): the hub operator, or the organisation whose client
   recorded the merge. Anyone else and an unknown id: None (the caller
   answers `404` as for an unknown id, after the write refusal floor);
2. reversed before: its first answer (`duplicate: true`);
3. refused (`ReversalRefused`, `409` naming `merge_id`) when the retained
   number was itself merged into another since (reverse that one first), or
   the merge was recorded before the hub kept what a reversal takes back
   (migration 0039: the lines and decisions moved, the fields added, the
   superseded number): that one is undone by hand;
4. each of the merge's three cases reversed:
   - both numbers had persons (the superseded person's history joined the
     retained person's): the superseded person is given its number back (its
     hash for the tombstone), and every register change, retraction, care
     package line, split decision and case the merge lists goes back to it
     (a change with its id, source and content, its `person_id` only; a case
     with an `unmerge` step: hub/workflows/person_merge.py `return_cases`);
     a later version of a care package line moved (the same source and
     package id) goes with it (the source's package is the superseded
     patient's); the fields the retained person's details gained from the
     other record are taken off (unless they were sent since: a value other
     than the superseded person's);
   - only the superseded number had a person (given the retained number):
     that person is given the superseded number back (hash and details); the
     retained number holds no one again;
   - otherwise: nothing of a person changes; only the link goes.
   Changes recorded after the merge under either number resolved to the
   retained person: a change records the person, not which of the two numbers
   was sent, so the hub cannot tell whose they are. They stay where they were
   recorded, and the answer names them (`unattributed_changes`, with the care
   package lines and split decisions recorded since), for the operator and
   the sources to check and retract or resend under the right number;
5. the `person_merges` row taken off and kept in `person_merge_reversals`
   (the reason encrypted), so the superseded number resolves to its own
   person again, the superseded person's id is no longer `410 merged_into`,
   and the two numbers can be merged again; the register counts' rows of
   both persons as their histories now stand; the access decision; an
   operator action `person-unmerge` when the hub operator reverses it; and
   one event for each person whose history the reversal changed: an
   `s117-notification-corrected` with the headers `unmerged` (the other
   person's id), `late` and `history_changes`, which the dispatcher tells as
   a retraction is told (each body whose position it moves hears the
   difference; a body with no role any more hears it ends) and, besides,
   every body holding a position about that person hears the reversal under
   that person's own id and number, superseding the last message it had
   about them (hub/delivery/dispatcher.py).

HL7 v2 has no event for this: A37 (unlink patient information) undoes an
A24 link, not an A40 merge, and is not taken; PDS does not unmerge a merge of
two patients either (it supersedes numbers; a wrong merge is corrected by a
new record). The reversal is the hub's own correction of its register.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, select, update

from hub.access import caller_of
from hub.audit import record_operator_action
from hub.bus.port import UNMERGED
from hub.codec import from_jsonable
from hub.corrections import Correction, CorrectionService, corrected, correction
from hub.domain.access import decide_unmerge
from hub.domain.model import DomainEvent, RegisterChange
from hub.domain.retraction import carried_change
from hub.domain.rules import evaluate
from hub.domain.rules.precedence import change_order
from hub.ingest.service import Client, event_id_for, load_person_details
from hub.observability.logging import get_logger
from hub.store import merged
from hub.store.schema import (care_packages, change_retraction_reversals, change_retractions, including_retracted,
                              not_retracted, person_merge_reversals, person_merges, persons, register_changes, split_decisions)
from hub.workflows.person_merge import return_cases

log = get_logger("hub.unmerges")
ACTION = "unmerge"
# The reversal's event ids are UUIDv5 of (the merge's id, 1 or 2, this): the retained person's, the other's.
UNMERGE_KIND = "s117-nhs-numbers-unmerged"
# What a reversal needs of a merge row with both persons, kept since migration 0039.
_LISTS = ("care_package_lines", "split_decisions", "details_added")


class ReversalRefused(Exception):
    """A reversal the hub cannot make as asked (`409` naming `merge_id`): never quotes a number."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.field, self.reason = "merge_id", reason


@dataclass(frozen=True, slots=True)
class Reversal:
    """The answer: the first reversal's, with `duplicate` set on the same reversal again."""

    body: dict[str, Any]
    duplicate: bool


def _iso(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


def _answer(row: Any) -> dict[str, Any]:
    back, left, merge = row.moved_back, row.unattributed, row.merge_record
    return {"merge_id": row.merge_id, "status": "reversed", "retained_person_id": row.retained_person_id,
            "superseded_person_id": row.superseded_person_id,
            "moved_back_changes": len(back.get("changes", [])), "moved_back_cases": len(back.get("cases", [])),
            "moved_back_care_package_lines": len(back.get("care_package_lines", [])),
            "moved_back_split_decisions": len(back.get("split_decisions", [])),
            "unattributed_changes": list(left.get("changes", [])),
            "unattributed_care_package_lines": list(left.get("care_package_lines", [])),
            "unattributed_split_decisions": list(left.get("split_decisions", [])),
            "merged_at": merge.get("merged_at"), "merged_by": merge.get("merged_by"),
            "reversed_at": _iso(row.at), "reversed_by": row.org_code, "correlation_id": row.correlation_id,
            "event_id": (row.event_ids or [None])[0], "event_ids": list(row.event_ids or [])}


def unmerge_event(person_id: str, carried: RegisterChange) -> DomainEvent:
    """The event a reversal publishes for one person: a correction (routed to no one as it is: each body
    whose position the reversal moves, and each body told of the person, is told)."""
    return corrected(person_id, carried, "A merge of two NHS numbers made in error was reversed: two patients, two "
                                         "register histories.", unmerged=True)


class MergeReversalService(CorrectionService):
    async def reverse(self, client: Client, merge_id: str, reason: str, correlation_id: str,
                      channel: str = "rest") -> Reversal | None:
        """Reverse merge `merge_id` for `client` with `reason` (checked by the caller: 1-1000 characters).
        None: no such merge, or not one `client` may reverse (one answer for both). Raises
        `ReversalRefused` (see the module)."""
        async with correction(self._engine, client, action=ACTION, channel=channel,
                              correlation_id=correlation_id) as c:
            conn = c.conn
            before = (await conn.execute(select(person_merge_reversals)
                                         .where(person_merge_reversals.c.merge_id == merge_id))).first()
            row = None if before is not None else (await conn.execute(
                select(person_merges).where(person_merges.c.merge_id == merge_id))).first()
            by = row.org_code if row is not None else before.merge_record.get("merged_by") if before is not None else None
            decision = decide_unmerge(caller_of(client), by)
            if not decision.allowed:
                # Recorded as any refusal of a write, naming no one: "unknown" and "not yours" alike.
                await c.decided(decision)
                return None
            if before is not None:
                await c.decided(decision, person_id=before.retained_person_id)
                return Reversal(_answer(before), duplicate=True)
            assert row is not None
            done = await self._reverse_locked(c, reason, row)
            await c.decided(decision, person_id=done.body["retained_person_id"])
            c.then(lambda: log.info("nhs number merge reversed", person_id=done.body["retained_person_id"],
                                    source=client.client_id, channel=channel, count=done.body["moved_back_changes"],
                                    event_id=done.body["event_id"], correlation_id=correlation_id))
            return done

    async def _reverse_locked(self, c: Correction, reason: str, row: Any) -> Reversal:
        conn, client, channel, correlation_id = c.conn, c.client, c.channel, c.correlation_id
        if (await conn.execute(select(person_merges.c.merge_id)
                               .where(person_merges.c.superseded_index == row.retained_index))).first() is not None:
            raise ReversalRefused("the retained number was itself merged into another number since: reverse "
                                  "that merge first")
        moved = dict(row.moved or {})
        kept_pid, gone_pid = row.retained_person_id, row.superseded_person_id
        joined = gone_pid is not None and kept_pid is not None and gone_pid != kept_pid
        renumbered = gone_pid is not None and gone_pid == kept_pid
        if (joined and any(k not in moved for k in _LISTS)) or (renumbered and row.superseded_number is None):
            raise ReversalRefused("this merge was recorded before the hub kept what a reversal takes back "
                                  "(migration 0039): undo it by hand")
        # The locks a merge takes, in its order: the retained person's row, then the superseded person's.
        holder = await c.lock_person(persons.c.nhs_number_index == row.retained_index, persons.c.details)
        gone = None
        if joined:
            gone = await c.lock_person(persons.c.person_id == gone_pid, persons.c.details,
                                       persons.c.nhs_number_index)
            if gone is None or gone.nhs_number_index != merged.tombstone(gone_pid) or holder is None \
                    or holder.person_id != kept_pid:
                raise ReversalRefused("the persons this merge joined were changed since: undo it by hand")
        elif renumbered and (holder is None or holder.person_id != gone_pid):
            raise ReversalRefused("the person this merge gave the retained number was changed since: undo it by hand")
        if (await conn.execute(select(persons.c.person_id)
                               .where(persons.c.nhs_number_index == row.superseded_index))).first() is not None:
            raise ReversalRefused("the superseded number holds a person again: undo it by hand")
        now = datetime.now(UTC)
        today = self._today()
        back: dict[str, list[Any]] = {"changes": [], "cases": [], "care_package_lines": [], "split_decisions": [],
                                      "details_removed": []}
        rc, cp = register_changes.c, care_packages.c
        if joined:
            assert gone is not None and holder is not None
            wanted = set(moved.get("changes", []))
            rows = (await conn.execute(including_retracted(  # retracted ones too, as the merge moved them
                select(rc.change_id, rc.canonical).where(rc.person_id == kept_pid).order_by(rc.change_id)))).all()
            for r in rows:
                if r.change_id in wanted:
                    await conn.execute(update(register_changes).where(rc.change_id == r.change_id).values(
                        person_id=gone_pid, canonical=dict(r.canonical) | {"person_id": gone_pid}))
                    back["changes"].append(r.change_id)
            if back["changes"]:
                for table in (change_retractions, change_retraction_reversals):
                    await conn.execute(update(table).where(table.c.change_id.in_(back["changes"]))
                                       .values(person_id=gone_pid))
            # Care package lines: those moved, and later versions of their packages (the source's package id).
            lines = set(moved.get("care_package_lines", []))
            theirs = (await conn.execute(select(cp.line_id, cp.source, cp.package_id)
                                         .where(cp.person_id == kept_pid).order_by(cp.line_id))).all()
            packages = {(r.source, r.package_id) for r in theirs if r.line_id in lines}
            back["care_package_lines"] = [r.line_id for r in theirs
                                          if r.line_id in lines or (r.source, r.package_id) in packages]
            if back["care_package_lines"]:
                await conn.execute(update(care_packages).where(cp.line_id.in_(back["care_package_lines"]))
                                   .values(person_id=gone_pid))
            splits = list(moved.get("split_decisions", []))
            if splits:
                back["split_decisions"] = list((await conn.execute(
                    select(split_decisions.c.decision_id).where(split_decisions.c.decision_id.in_(splits),
                                                                split_decisions.c.person_id == kept_pid)
                    .order_by(split_decisions.c.decision_id))).scalars())
                if back["split_decisions"]:
                    await conn.execute(update(split_decisions)
                                       .where(split_decisions.c.decision_id.in_(back["split_decisions"]))
                                       .values(person_id=gone_pid))
            back["cases"] = await return_cases(conn, list(moved.get("cases", [])), kept_pid, gone_pid,
                                               row.merge_id, today)
            # The superseded person's number back; the fields the merge copied off them taken off the other.
            await conn.execute(update(persons).where(persons.c.person_id == gone_pid)
                               .values(nhs_number_index=row.superseded_index, updated_at=now))
            kept_details = load_person_details(self._protector, holder.details)
            gone_details = load_person_details(self._protector, gone.details)
            for field in moved.get("details_added", []):
                if field in kept_details and kept_details[field] == gone_details.get(field):
                    del kept_details[field]
                    back["details_removed"].append(field)
            if back["details_removed"]:
                await conn.execute(update(persons).where(persons.c.person_id == kept_pid).values(
                    details=self._protector.encrypt(orjson.dumps(kept_details)), updated_at=now))
        elif renumbered:
            assert holder is not None
            details = load_person_details(self._protector, holder.details)
            details["nhs_number"] = self._protector.decrypt(row.superseded_number).decode()
            await conn.execute(update(persons).where(persons.c.person_id == gone_pid).values(
                nhs_number_index=row.superseded_index, updated_at=now,
                details=self._protector.encrypt(orjson.dumps(details))))
        # What was recorded since the merge under either number, now the retained number's holder's (or the
        # renumbered person's): not attributable to one number, left where it is and named.
        left: dict[str, list[Any]] = {"changes": [], "care_package_lines": [], "split_decisions": []}
        since = holder.person_id if holder is not None else None
        if since is not None:
            left["changes"] = list((await conn.execute(including_retracted(
                select(rc.change_id).where(rc.person_id == since, rc.received_at > row.at)
                .order_by(rc.received_at, rc.change_id)))).scalars())
            left["care_package_lines"] = list((await conn.execute(
                select(cp.line_id).where(cp.person_id == since, cp.recorded_at > row.at)
                .order_by(cp.line_id))).scalars())
            left["split_decisions"] = list((await conn.execute(
                select(split_decisions.c.decision_id).where(split_decisions.c.person_id == since,
                                                            split_decisions.c.proposed_at > row.at)
                .order_by(split_decisions.c.decision_id))).scalars())
        # Each person the reversal changed re-evaluated, counted and told.
        told: list[tuple[str, str]] = []  # (person, the other person's id)
        if joined:
            told = [(kept_pid, gone_pid), (gone_pid, kept_pid)]
        elif renumbered:
            told = [(gone_pid, gone_pid)]
        event_ids: list[str] = []
        for n, (person_id, other) in enumerate(told, start=1):
            event_id = await self._tell(c, row.merge_id, n, person_id, other)
            if event_id is not None:
                event_ids.append(event_id)
        merge = {"merged_at": _iso(row.at), "merged_by": row.org_code, "client_id": row.client_id,
                 "channel": row.channel, "correlation_id": row.correlation_id, "event_id": row.event_id,
                 "forced": bool(row.forced), "moved": moved}
        await conn.execute(person_merge_reversals.insert().values(
            merge_id=row.merge_id, superseded_index=row.superseded_index, retained_index=row.retained_index,
            superseded_person_id=gone_pid, retained_person_id=kept_pid, merge_record=merge, moved_back=back,
            unattributed=left, client_id=client.client_id[:64], org_code=client.org_code[:16],
            reason=self._protector.encrypt(reason.encode()), correlation_id=correlation_id[:64],
            event_ids=event_ids, at=now))
        await conn.execute(delete(person_merges).where(person_merges.c.superseded_index == row.superseded_index))
        if caller_of(client).admin:
            # The reversal, an audited operator action naming both hub persons (never a number, nor the reason).
            await record_operator_action(conn, client.client_id, "person-unmerge", kept_pid or row.merge_id, {
                "merge_id": row.merge_id, "retained_person_id": kept_pid, "superseded_person_id": gone_pid,
                "moved_back_changes": len(back["changes"]), "moved_back_cases": back["cases"],
                "unattributed_changes": left["changes"], "merged_by": row.org_code, "channel": channel,
                "correlation_id": correlation_id, "event_ids": event_ids})
        done = (await conn.execute(select(person_merge_reversals)
                                   .where(person_merge_reversals.c.merge_id == row.merge_id))).one()
        return Reversal(_answer(done), duplicate=False)

    async def _tell(self, c: Correction, merge_id: str, n: int, person_id: str, other: str) -> str | None:
        """`person_id`'s status as their history now stands, counted, and one event telling it (the `n`th of
        the reversal); None if the person has no register change at all."""
        conn = c.conn
        rc = register_changes.c
        rows = (await conn.execute(select(rc.change_id, rc.canonical)
                                   .where(rc.person_id == person_id, not_retracted()))).all()
        history = [from_jsonable(RegisterChange, r.canonical) for r in rows]
        today = self._today()
        after = evaluate(person_id, history, self._ref, self._agreements, today)
        await c.counted(person_id, history, after)
        if history:
            carried = max(history, key=change_order)
        else:
            last = (await conn.execute(including_retracted(  # everything retracted: one bare of what it said
                select(rc.canonical).where(rc.person_id == person_id)
                .order_by(rc.effective_date.desc(), rc.change_id.desc()).limit(1)))).scalar_one_or_none()
            if last is None:
                return None
            carried = carried_change([], from_jsonable(RegisterChange, last))
        event_id = event_id_for(merge_id, n, UNMERGE_KIND)
        await c.publish(unmerge_event(person_id, carried), event_id, carried, after, [r.change_id for r in rows],
                        (UNMERGED, other))
        return event_id
