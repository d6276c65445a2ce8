"""Transfer and dispute cases follow an NHS number merge (hub/merges.py).

When PDS merges two NHS numbers and both were hub persons, the superseded
person's register history joins the retained person's. Their workflow cases
go with it: `move_cases` runs in the merge's write transaction (which holds
the events topic's publish lock and both persons' row locks) and

- gives every case of the superseded person (`workflow_cases.person_id` and
  the case's own `person_id`) to the retained person, whatever its state, and
  records `merged_from` (the superseded person's id) on it, so the case views,
  the FHIR Task (`for`, `focus`), the dispute's reimbursement statement and the
  recharge statements' interim shares (hub/money/responsibility.py
  `load_interims`, by `workflow_cases.person_id`) find it under the retained
  person; its stages stay the case's, its id, Task id and dispute id are
  unchanged;
- writes one `merge` transition to each case's history (the hub, state
  unchanged, naming both hub person ids, never a number): the case's own
  audit trail says when and why its person changed. The parties are not sent
  a workflow event for it: the merge's own `s117-notification-corrected`
  tells every body told of the superseded person the retained person's id,
  and the case's next transition is told under it;
- flags two open cases of the same kind for the same bodies (a transfer's
  role, outgoing and incoming body; a dispute's kind and parties) that are now
  one person's: each names the other in `merge_duplicates`. Both are kept:
  each was told to its parties and either may have been acted on (an interim
  agreed, an acceptance), so the hub cannot tell which one stands; the
  parties close the one that does not (a transfer is accepted or contested, a
  dispute resolved), and the re-evaluation below withdraws a transfer whose
  hand-over the joined history no longer holds.

The re-evaluation follows a retraction's: the merge's event (header
`merged`, with `history_changes`: the joined history) is read by the
workflows' consumer, which withdraws each of the retained person's transfer
cases late history may withdraw whose hand-over the joined history no longer
holds (superseded when it holds it on another date:
`WorkflowService.on_merged`), both bodies told as of any transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select

from hub.domain.workflows.model import REGISTER_ACTOR, Action, CaseKind, DisputeState, TransferState
from hub.store.schema import workflow_cases, workflow_transitions

OPEN_STATES = {CaseKind.TRANSFER.value: (TransferState.AWAITING.value, TransferState.OVERDUE.value),
               CaseKind.DISPUTE.value: (DisputeState.OPEN.value, DisputeState.ESCALATED.value)}
CITATION = "PDS merge of NHS numbers: one person, one register history (UK GDPR Art. 5(1)(d), 16)"


@dataclass(frozen=True, slots=True)
class MovedCases:
    moved: list[str] = field(default_factory=list)  # case ids, oldest first
    duplicates: list[list[str]] = field(default_factory=list)  # [moved case id, the retained person's case id]


def _pair(data: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two open cases the same question: a transfer's role and bodies, a dispute's kind and parties."""
    if data.get("kind") == CaseKind.TRANSFER.value:
        return ("transfer", data.get("role"), data.get("outgoing"), data.get("incoming"))
    return ("dispute", data.get("dispute_kind") or data.get("role"), tuple(sorted(data.get("parties") or ())))


async def move_cases(conn: Any, superseded_person_id: str, retained_person_id: str, merge_id: str,
                     on: date) -> MovedCases:
    """Give the superseded person's cases to the retained person in `conn` (the merge's transaction), each
    with a `merge` transition, and flag open duplicates (see the module). Idempotent: a second call finds
    no case of the superseded person."""
    t = workflow_cases.c
    moving = (await conn.execute(select(t.case_id, t.state, t.data).where(t.person_id == superseded_person_id)
                                 .order_by(t.opened_on, t.case_id).with_for_update())).all()
    if not moving:
        return MovedCases()
    kept = (await conn.execute(select(t.case_id, t.state, t.data).where(t.person_id == retained_person_id)
                               .order_by(t.opened_on, t.case_id).with_for_update())).all()
    now = datetime.now(UTC)
    open_kept: dict[tuple[Any, ...], list[str]] = {}
    for row in kept:
        if row.state in OPEN_STATES.get(row.data.get("kind"), ()):
            open_kept.setdefault(_pair(row.data), []).append(row.case_id)
    flags: dict[str, list[str]] = {}
    out = MovedCases()
    for row in moving:
        out.moved.append(row.case_id)
        if row.state in OPEN_STATES.get(row.data.get("kind"), ()):
            for other in open_kept.get(_pair(row.data), []):
                flags.setdefault(row.case_id, []).append(other)
                flags.setdefault(other, []).append(row.case_id)
                out.duplicates.append([row.case_id, other])
    data_of = {row.case_id: dict(row.data) for row in (*moving, *kept)}
    for case_id in out.moved:
        data_of[case_id] |= {"person_id": retained_person_id, "merged_from": superseded_person_id}
    for case_id, others in flags.items():
        data_of[case_id]["merge_duplicates"] = sorted({*data_of[case_id].get("merge_duplicates", ()), *others})
    for case_id in dict.fromkeys([*out.moved, *flags]):
        await conn.execute(workflow_cases.update().where(t.case_id == case_id).values(
            person_id=data_of[case_id]["person_id"], data=data_of[case_id], version=t.version + 1, updated_at=now))
    states = {row.case_id: row.state for row in (*moving, *kept)}
    for case_id in dict.fromkeys([*out.moved, *flags]):
        what = (f"two NHS numbers of this person were merged (PDS, merge {merge_id}): the case, opened for hub "
                f"person {superseded_person_id}, is hub person {retained_person_id}'s")
        if case_id not in out.moved:
            what = f"two NHS numbers of this person were merged (PDS, merge {merge_id})"
        if flags.get(case_id):
            what += (f"; also open for the same bodies: case {', '.join(sorted(flags[case_id]))} (both kept: the "
                     "parties close the one that does not stand)")
        await conn.execute(workflow_transitions.insert().values(
            case_id=case_id, action=Action.MERGE.value, from_state=states[case_id], to_state=states[case_id],
            actor=REGISTER_ACTOR, on_date=on, citation=CITATION[:300], explanation=what[:500], event_id=None,
            at=now))
    return out


UNMERGE_CITATION = "PDS merge made in error reversed: two patients, two register histories (UK GDPR Art. 5(1)(d), 16)"


async def return_cases(conn: Any, case_ids: list[str], retained_person_id: str, superseded_person_id: str,
                       merge_id: str, on: date) -> list[str]:
    """A merge made in error reversed (hub/unmerges.py), in its transaction: each case `case_ids` names (the
    cases the merge gave the retained person) still the retained person's is the superseded person's again
    (`merged_from` taken off), with an `unmerge` transition; `merge_duplicates` flags between a case given
    back and one that stays are taken off both. Returns the case ids given back, oldest first."""
    if not case_ids:
        return []
    t = workflow_cases.c
    rows = (await conn.execute(select(t.case_id, t.state, t.data).where(t.person_id == retained_person_id)
                               .order_by(t.opened_on, t.case_id).with_for_update())).all()
    wanted = set(case_ids)
    back = [r.case_id for r in rows if r.case_id in wanted]
    if not back:
        return []
    going = set(back)
    now = datetime.now(UTC)
    for row in rows:
        data = dict(row.data)
        flagged = data.get("merge_duplicates") or []
        if row.case_id in going:
            data["person_id"] = superseded_person_id
            data.pop("merged_from", None)
            left = [d for d in flagged if d in going]
        else:
            left = [d for d in flagged if d not in going]
        if left:
            data["merge_duplicates"] = left
        else:
            data.pop("merge_duplicates", None)
        if data == row.data:
            continue
        await conn.execute(workflow_cases.update().where(t.case_id == row.case_id).values(
            person_id=data["person_id"], data=data, version=t.version + 1, updated_at=now))
        what = (f"the merge of two NHS numbers (merge {merge_id}) was made in error and reversed: the case is hub "
                f"person {superseded_person_id}'s again, not hub person {retained_person_id}'s")
        if row.case_id not in going:
            what = (f"the merge of two NHS numbers (merge {merge_id}) was made in error and reversed: the case "
                    f"flagged as also open for the same bodies is hub person {superseded_person_id}'s again")
        await conn.execute(workflow_transitions.insert().values(
            case_id=row.case_id, action=Action.UNMERGE.value, from_state=row.state, to_state=row.state,
            actor=REGISTER_ACTOR, on_date=on, citation=UNMERGE_CITATION[:300], explanation=what[:500],
            event_id=None, at=now))
    return back
