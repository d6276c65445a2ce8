"""Current arrangements stay while a dispute is open (Worcs 8.5).

While the person has an open dispute, a register change that would end their
entitlement or move a responsibility (and so end or move funding) is held,
not applied. Death, dispute changes themselves and changes that move nothing
pass. Pure: the ingest path calls `hold_reason` with the statuses it already
computed before and after the change.
"""

from __future__ import annotations

from hub.domain import citations
from hub.domain.model import ChangeType, RegisterChange, S117Status

_NEVER_HELD = frozenset({ChangeType.DISPUTE_RAISED, ChangeType.DISPUTE_RESOLVED, ChangeType.DIED})
HOLD_RULE = "held-open-dispute"


def hold_reason(before: S117Status | None, after: S117Status, change: RegisterChange) -> str | None:
    """Why `change` is held, or None if it may be applied."""
    if before is None or not before.open_disputes or change.change_type in _NEVER_HELD:
        return None
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
