"""Who holds a named body's duties on a day.

A dispute names its parties by the codes they had when it was raised: a CCG
(abolished on 1 July 2022, its liabilities passed to an ICB), a council since
merged or renamed. The body holding the party's duties speaks for it (the
rules engine, `_speaks_for_party`) and may record for it (the access policy,
`status_parties`), so both ask here."""

from __future__ import annotations

from datetime import date

from hub.domain.model import DisputeKind
from hub.domain.ports import ReferenceData


def duty_holder(ref: ReferenceData, party: str, kind: DisputeKind, on: date) -> str | None:
    """The code (upper case) of the body holding `party`'s duties on `on`: a
    commissioner's successor (a CCG's ICB from 1 July 2022, the CCG it merged
    into before; an ICB or a sub-ICB location gives the ICB), or the one
    council that took over a council's area (a split's several successors,
    or a successor the register lists without a GSS code yet: none of them
    alone: the reference data's `council_in_place`). None if unknown or
    ambiguous. A few dictionary reads (the reference data keeps its
    successions)."""
    if kind is DisputeKind.COMMISSIONER:
        holder = ref.commissioner_successor(party, on)
    else:
        holder = ref.council_in_place(party, on).council
    return holder.code.upper() if holder is not None else None
