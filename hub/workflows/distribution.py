"""While a transfer awaits acceptance, the outgoing body stays on the
distribution and the person's position shows the transfer (issue #11, item 1;
Worcs 17.2: responsibilities are handed over only once agreed) to the two
bodies of the transfer, as it stood on the date asked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.codec import from_jsonable
from hub.domain.workflows.model import SUPERSEDED_REASON, WITHDRAWN_REASON, Case, TransferState
from hub.routing import Recipient
from hub.store.db import InList
from hub.store.schema import workflow_cases, workflow_transitions

PENDING = (TransferState.AWAITING.value, TransferState.OVERDUE.value)


# The transfer cases awaiting acceptance of some people (the dispatcher reads a batch's at once).
PENDING_TRANSFERS = InList("person_ids", lambda ids: select(workflow_cases.c.person_id, workflow_cases.c.data).where(
    workflow_cases.c.person_id.in_(ids), workflow_cases.c.kind == "transfer",
    or_(workflow_cases.c.state == bindparam("awaiting"), workflow_cases.c.state == bindparam("overdue"))))


async def pending_transfers(conn: AsyncConnection, person_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each person's transfer cases not yet accepted (their `data`), in one statement."""
    out: dict[str, list[dict[str, Any]]] = {p: [] for p in person_ids}
    if person_ids:
        for row in await PENDING_TRANSFERS.execute(conn, person_ids, {"awaiting": PENDING[0], "overdue": PENDING[1]}):
            out[row.person_id].append(row.data)
    return out


def outgoing_of(pending: list[dict[str, Any]], already: list[Recipient]) -> list[Recipient]:
    """The outgoing bodies of `pending` transfer cases not already routed to."""
    seen = {r.org_code for r in already}
    out = []
    for data in pending:
        code = data.get("outgoing")
        if code and code not in seen:
            seen.add(code)
            out.append(Recipient(code, "outgoing-until-accepted"))
    return out


async def transfers_for_person(
    conn: AsyncConnection, person_id: str, *, as_of: date | None = None, party: str | None = None,
    acknowledge_by: Callable[[Case], date | None] | None = None,
) -> list[dict[str, Any]]:
    """The person's transfers for their s117 position: pending ones name both
    bodies and the deadline; accepted ones say by whom and on which day;
    withdrawn ones (later history shows no hand-over, or shows it on another
    date: superseded) say so.

    `party`: only the cases it is a party to (None: every case, for the hub
    operator). `as_of`: only the cases opened by then, each in the state its
    dated steps (`workflow_transitions`) had reached by then, nothing later.
    `acknowledge_by`: the acknowledgement deadline of a case whose clock has
    since stopped (accepted or contested after the date asked)."""
    q = select(workflow_cases.c.data).where(workflow_cases.c.person_id == person_id,
                                            workflow_cases.c.kind == "transfer")
    if as_of is not None:
        q = q.where(workflow_cases.c.opened_on <= as_of)
    rows = (await conn.execute(q.order_by(workflow_cases.c.opened_on, workflow_cases.c.case_id))).all()
    cases = [from_jsonable(Case, row.data) for row in rows]
    if party is not None:
        cases = [c for c in cases if party in c.parties]
    if not cases:
        return []
    steps: dict[str, list[Any]] = {c.case_id: [] for c in cases}
    t = workflow_transitions.c
    for step in (await conn.execute(select(t.case_id, t.to_state, t.on_date).where(
            t.case_id.in_(list(steps))).order_by(t.seq))).all():
        if as_of is None or step.on_date <= as_of:
            steps[step.case_id].append(step)
    out = []
    for case in cases:
        taken = steps[case.case_id]
        state = taken[-1].to_state if as_of is not None and taken else case.state
        item: dict[str, Any] = {"case_id": case.case_id, "role": case.role, "outgoing": case.outgoing,
                                "incoming": case.incoming, "state": state, "basis": case.basis}
        if state in PENDING:
            due = case.clock.due_on if case.clock is not None else acknowledge_by(case) if acknowledge_by else None
            by = f" by {due.isoformat()}" if due is not None else ""
            item["text"] = (f"transfer pending: {case.role} responsibility from {case.outgoing} to {case.incoming}, "
                            f"to be accepted by {case.incoming}{by}; {case.outgoing} "
                            "stays on the distribution until then")
        elif state == TransferState.ACCEPTED:
            accepted = [s for s in taken if s.to_state == TransferState.ACCEPTED.value]
            on = accepted[-1].on_date.isoformat() if accepted else case.opened_on.isoformat()
            item["text"] = f"transfer accepted by {case.incoming} on {on}"
        elif state == TransferState.WITHDRAWN:
            withdrawn = [s for s in taken if s.to_state == TransferState.WITHDRAWN.value]
            on = f" on {withdrawn[-1].on_date.isoformat()}" if withdrawn else ""
            if case.superseded_by_handover_on is not None:
                item["text"] = (f"transfer superseded by the hub{on}: {SUPERSEDED_REASON}; {case.role} "
                                f"responsibility moves from {case.outgoing} to {case.incoming} on "
                                f"{case.superseded_by_handover_on.isoformat()}")
            else:
                item["text"] = (f"transfer withdrawn by the hub{on}: {WITHDRAWN_REASON}; {case.role} responsibility "
                                f"did not move from {case.outgoing} to {case.incoming}")
        else:
            item["text"] = f"transfer contested by {case.incoming}; dispute {case.dispute_id or ''}".strip()
        out.append(item)
    return out
