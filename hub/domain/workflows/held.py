"""Current arrangements stay while a dispute is open (Worcs 8.5).

While the person has an open dispute, a register change that would end their
entitlement or move a responsibility (and so end or move funding) is held,
not applied. Death, dispute changes themselves and changes that move nothing
pass. Pure: the ingest path calls `hold_reason` with the statuses it already
computed before and after the change.

A new qualifying detention is never held. Worcs 8.5 stops a body withdrawing
from a funding arrangement on its own; it does not stop a legal event being
recorded. A `detained` or `section-changed` change that begins a qualifying
period of detention re-determines the responsible council by law (the
council of ordinary residence when that detention begins: Worcs 4.3.3, 17.1;
the NHS commissioner only where the rules say so, Worcs 4.4.2), the person
goes on the register at admission (Worcs 19.2) within 5 working days
(Worcs 19.6), and nothing may be delayed by a dispute (Worcs 15.1). It is
recorded like any change. The open dispute is not closed by it: it stays open,
at its stage and with its interim terms, because it is about who was
responsible before the new detention (and who repays whom for that time,
Worcs 4.4.8, 15.6), which the re-detention does not answer. Its parties are
told through the normal routing: they are involved in the person as dispute
parties (hub/domain/views.py), so each is sent the new position, and the
responsibility the re-detention moves opens a transfer case as any other does
(hub/workflows). Only the parties, by agreement, or the final stage's
determination, or a source recording the outcome, resolve it.
"""

from __future__ import annotations

from hub.domain import citations
from hub.domain.model import ChangeType, RegisterChange, S117Status

_NEVER_HELD = frozenset({ChangeType.DISPUTE_RAISED, ChangeType.DISPUTE_RESOLVED, ChangeType.DIED})
# The changes that may begin a qualifying period of detention (hub/domain/rules/engine.py).
_DETENTIONS = frozenset({ChangeType.DETAINED, ChangeType.SECTION_CHANGED})
HOLD_RULE = "held-open-dispute"


def starts_qualifying_detention(after: S117Status, change: RegisterChange) -> bool:
    """Whether `change` began a qualifying period of detention in the history
    `after` was evaluated from (the rules engine's own answer: one
    determination per period of detention, Worcs 4.3.1)."""
    return change.change_type in _DETENTIONS and change.change_id in after.qualifying_detention_changes


def hold_reason(before: S117Status | None, after: S117Status, change: RegisterChange) -> str | None:
    """Why `change` is held, or None if it may be applied."""
    if before is None or not before.open_disputes or change.change_type in _NEVER_HELD:
        return None
    if starts_qualifying_detention(after, change):
        return None  # a legal event, recorded: the responsible bodies are re-determined by law
    ids = ", ".join(sorted(d.dispute_id for d in before.open_disputes))
    moves = []
    if before.entitled and not after.entitled:
        moves.append("end the s117 entitlement")
    if before.council_basis_code and after.council_basis_code != before.council_basis_code:
        moves.append("move the responsible council")
    if before.commissioner_basis_code and after.commissioner_basis_code != before.commissioner_basis_code:
        moves.append("move the responsible NHS commissioner")
    if not moves:
        return None
    return (f"this change would {' and '.join(moves)} while dispute {ids} is open; current funding arrangements "
            f"stay in place until the dispute is resolved ({citations.DISPUTE_HOLD})")
