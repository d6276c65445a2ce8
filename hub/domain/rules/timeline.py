"""Where, in a person's history, responsibility passed from one body to another.

A transfer is a step of the history in date order (`change_order`) at which
the basis of the responsible council or NHS commissioner moved from one body
to another (`engine.handover_bases`: while a re-detention with no place of
residence has left no council responsible, the council whose duty it ended,
which the council of the area discharged to takes over from): it belongs to
the history, not to the order its changes reached the hub. A change that
arrives in its turn can only add a step at its own place, which comparing the
status before and after it finds (`events._transfer_events`). A late change,
sorting before changes already recorded, can add a step anywhere after it (the
older history shows the re-detention of September moved the council from
Worcestershire), and can remove one told before: the status before and after
it then name a "transfer" from a body that, the older history shows, never
held the duty, and miss the one that happened. So for a late change the steps
of the whole history are compared with and without it (`revealed_steps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from hub.domain.agreements import AgreementBook
from hub.domain.model import RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.rules.engine import Bases, basis_timeline, basis_timelines_around, evaluate, handover_bases
from hub.domain.rules.precedence import change_order


@dataclass(frozen=True, slots=True)
class TransferStep:
    """The statuses either side of the change at which a basis moved."""

    before: S117Status
    after: S117Status
    change: RegisterChange

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str, str], ...]]:
        """The step's change and each role's (from, to) bases: the same in any arrival order."""
        return self.change.change_id, _moves(self.before, self.after)


def _moves(before: S117Status, after: S117Status) -> tuple[tuple[str, str, str], ...]:
    out = []
    was, now = handover_bases(before), handover_bases(after)
    for role, old, new in (("council", was[0], now[0]), ("commissioner", was[1], now[1])):
        if old is not None and new is not None and old != new:
            out.append((role, old, new))
    return tuple(out)


def transfer_steps(person_id: str, changes: Sequence[RegisterChange], ref: ReferenceData,
                   agreements: AgreementBook, as_of: date) -> list[TransferStep]:
    """Every step of the history effective by `as_of`, in date order, at which
    a responsibility's basis moved from one body to another (each status
    evaluated on `as_of`, as `evaluate` does: the same bodies, successors
    resolved alike). One fold of the history finds the steps; the statuses
    either side are evaluated only at those (a history holds few)."""
    timeline = basis_timeline(person_id, changes, ref, agreements, as_of)
    steps: list[TransferStep] = []
    for k in range(1, len(timeline)):
        change, council, commissioner = timeline[k]
        _, was_council, was_commissioner = timeline[k - 1]
        if not (_moved(was_council, council) or _moved(was_commissioner, commissioner)):
            continue
        folded = [c for c, _, _ in timeline[:k + 1]]  # in the fold's order: the same stable sort again
        steps.append(TransferStep(evaluate(person_id, folded[:-1], ref, agreements, as_of),
                                  evaluate(person_id, folded, ref, agreements, as_of), change))
    return steps


def _moved(old: str | None, new: str | None) -> bool:
    return old is not None and new is not None and old != new


def revealed_steps(person_id: str, history: Sequence[RegisterChange], change: RegisterChange,
                   ref: ReferenceData, agreements: AgreementBook, as_of: date) -> list[TransferStep]:
    """The transfers the history holds with `change` and did not hold without
    it, in date order: what a late `change` tells the bodies involved. What
    sorts before `change` is the same either way: folded once, and its steps
    are in both; only the rest is folded twice (a late change is most often
    a little late: a few changes from the end)."""
    before, start, without, with_change = basis_timelines_around(person_id, history, change, ref, agreements,
                                                                  as_of)
    held = {key for key, _ in _steps(start, without)}
    found = []
    for key, k in _steps(start, with_change):
        if key in held:
            continue
        folded = [*before, *(c for c, _ in with_change[:k + 1])]  # in the fold's order
        found.append(TransferStep(evaluate(person_id, folded[:-1], ref, agreements, as_of),
                                  evaluate(person_id, folded, ref, agreements, as_of), folded[-1]))
    return found


def _steps(start: Bases, timeline: list[tuple[RegisterChange, Bases]]) -> list[tuple[tuple, int]]:
    """Each step's key (as `TransferStep.key`) and its index in `timeline`."""
    out = []
    previous = start
    for k, (change, now) in enumerate(timeline):
        moves = tuple((role, old, new) for role, old, new in (("council", previous[0], now[0]),
                                                              ("commissioner", previous[1], now[1]))
                      if _moved(old, new))
        if moves:
            out.append(((change.change_id, moves), k))
        previous = now
    return out
