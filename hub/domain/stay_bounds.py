"""Where a stay in hospital begins and ends, and the successors a register change named in it: one definition
for the rules (hub/domain/rules/engine.py: a successor named earlier in the stay of a qualifying detention) and
the children's notices (hub/domain/children.py `stays`, `Stay.successors_named`), so the two cannot disagree on
which stay a naming belongs to (hazard H-03).

A stay in hospital starts with a detention (`detained`, or a CTO revoked: re-detained in hospital) when the
person is not already in one, and ends when they leave hospital, go onto a CTO or die. Section 17 leave, a
section changed (s2 then s3) and staying on informally after the section ends do not end it, nor begin another.

A successor named (a `moved` change's `residence_before_detention_la_gss`: which successor of a council split
since covers the residence before the detention) belongs to the stay the person is in, else to the last one
(named after the discharge); named before any stay began (a move backdated before the admission), to none. A
naming dated the day a stay begins is that stay's (a `moved` change sorts before the detention of its day, as
the residence immediately before it: hub/domain/rules/precedence.py), whether or not a stay came before. A
new stay starts with no other: a new detention re-determines the council (Worcs 4.3.3), and an earlier stay's
naming is not this stay's (the person may have moved within the split area since).

Pure, in the history's order (hub/domain/rules/precedence.py `change_order`): fold `StayBounds.after` over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from hub.domain.model import ChangeType, RegisterChange

STARTS = frozenset({ChangeType.DETAINED, ChangeType.CTO_REVOKED})
ENDS = frozenset({ChangeType.LEFT_HOSPITAL, ChangeType.CTO_STARTED, ChangeType.DIED})


def successor_named(change: RegisterChange) -> str | None:
    """The successor a `moved` change names as covering the residence before the detention, or None."""
    return change.residence_before_detention_la_gss if change.change_type is ChangeType.MOVED else None


@dataclass(frozen=True, slots=True)
class Naming:
    """A successor named (`code`) by the change `change_id` effective `on`."""

    code: str
    change_id: str
    on: date


@dataclass(frozen=True, slots=True)
class StayBounds:
    """Where a history stands after the changes folded so far (`after`): in a stay or not, whether one has
    begun, and the successors named in the current stay (or, out of hospital, the last one; before any stay
    began, those named so far, none of them a stay's until one begins on their day), in the history's order."""

    in_stay: bool = False
    begun: bool = False
    namings: tuple[Naming, ...] = ()

    @property
    def named(self) -> tuple[str, ...]:
        """The successors' codes, as named."""
        return tuple(n.code for n in self.namings)

    def begins(self, change: RegisterChange) -> bool:
        """Whether `change` begins a stay."""
        return not self.in_stay and change.change_type in STARTS

    def ends(self, change: RegisterChange) -> bool:
        """Whether `change` ends the stay the person is in."""
        return self.in_stay and change.change_type in ENDS

    def after(self, change: RegisterChange) -> StayBounds:
        """Where the history stands once `change` (the next in the history's order) is folded."""
        if self.begins(change):
            # The namings of the admission day (folded just before it, out of a stay) are the new stay's.
            return StayBounds(True, True, tuple(n for n in self.namings if n.on == change.effective_date))
        if self.ends(change):
            return StayBounds(False, True, self.namings)
        named = successor_named(change)
        if named:
            # Out of a stay before any began: kept only for a stay beginning the same day (`begins`), in no
            # stay meanwhile (`in_stay`, `begun` false: the rules and the children's notices read none).
            return StayBounds(self.in_stay, self.begun,
                              (*self.namings, Naming(named, change.change_id, change.effective_date)))
        return self
