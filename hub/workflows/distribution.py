"""While a transfer awaits acceptance, the outgoing body stays on the
distribution and the person's position shows the transfer (issue #11, item 1;
Worcs 17.2: responsibilities are handed over only once agreed)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.codec import from_jsonable
from hub.domain.workflows.model import Case, TransferState
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


async def transfers_for_person(conn: AsyncConnection, person_id: str) -> list[dict[str, Any]]:
    """The person's transfers for their s117 position: pending ones name both
    bodies and the deadline; accepted ones say by whom and on which day."""
    rows = (await conn.execute(select(workflow_cases.c.data).where(
        workflow_cases.c.person_id == person_id, workflow_cases.c.kind == "transfer")
        .order_by(workflow_cases.c.opened_on))).all()
    out = []
    for row in rows:
        case = from_jsonable(Case, row.data)
        item: dict[str, Any] = {"case_id": case.case_id, "role": case.role, "outgoing": case.outgoing,
                                "incoming": case.incoming, "state": case.state, "basis": case.basis}
        if case.state in PENDING and case.clock is not None:
            item["text"] = (f"transfer pending: {case.role} responsibility from {case.outgoing} to {case.incoming}, "
                            f"to be accepted by {case.incoming} by {case.clock.due_on.isoformat()}; {case.outgoing} "
                            "stays on the distribution until then")
        elif case.state == TransferState.ACCEPTED:
            accepted = (await conn.execute(select(workflow_transitions.c.on_date).where(
                workflow_transitions.c.case_id == case.case_id, workflow_transitions.c.to_state == "accepted")
                .order_by(workflow_transitions.c.seq.desc()))).first()
            on = accepted.on_date.isoformat() if accepted else case.opened_on.isoformat()
            item["text"] = f"transfer accepted by {case.incoming} on {on}"
        else:
            item["text"] = f"transfer contested by {case.incoming}; dispute {case.dispute_id or ''}".strip()
        out.append(item)
    return out
