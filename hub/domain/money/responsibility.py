"""Who is charged a package line on each day: the pair the register names,
and interim shares while a responsibility dispute is open. Standard library only.

**A package moves with responsibility.** A line is recorded against the
council and ICB responsible on its start date. When the register's
responsible council or ICB changes later (re-detention elsewhere, Worcs
4.3.3 / 17.1; a resolved dispute, Worcs 4.3.4 / 4.4.8), the line's costs from
that date are charged between the new pair and up to the day before between
the old: a `PairSpan` per pair, from the date the register says. Days before
the first span are the recorded pair's. A statement for a pair shows only its
days; a month is never re-cut by a move from a later date.

**A resolution takes effect for money from the day it is made.** The register
folds a `dispute-resolved` change from the date the responsible body is found
responsible from, which may be long before. The days between the dispute
arising and its resolution were charged under the interim (or, with none
agreed, under the current arrangements: Worcs 8.5 "current funding
arrangements should remain in place until the dispute has been resolved") and
are settled by the reimbursement statement ("the CCG which is no longer deemed
responsible will be reimbursed", Worcs 4.4.8, 15.6), not by re-charging them
in the monthly statements, which would make the responsible body pay twice.
So, for money, a `dispute-resolved` change counts from the later of its
effective date and the day the hub had notice of it (`money_changes`).

**Interim shares.** While a dispute is open and its parties have agreed a
lead body and shares (POST /v1/disputes/{id}/interim), those shares apply
instead of the recorded pair, on the side in dispute only. What the dispute
kind means:

- `council` (between councils: ordinary residence, Worcs 4.3.4, 15.4): the
  council's share of each day's cost under the split in force is divided
  between the disputing councils by their interim shares; the ICB's share is
  unchanged. (The default of the workflow, the council meeting the needs
  carrying it all, is the register's position already.)
- `commissioner` (between ICBs: Worcs 4.4.8, 15.6, "all costs are jointly
  funded pending resolution of the dispute"): the NHS share is divided
  between the disputing ICBs; the council's share is unchanged.
- A council and an ICB disagreeing about the split is not a responsibility
  dispute: the arrangement in force stays until both agree a change (Worcs
  8.5, A2.3); `splits.py` already never changes a split without both.

The split itself (which percentage is the council's) stays the one in force
for the pair responsible on the register (Worcs 8.5: current funding
arrangements remain in place); only who carries the side in dispute changes.
The lead body (Worcs 4.4.8 (a): arranges the aftercare) carries the side not
in dispute, any excluded cost and any amount awaiting a panel. Defaults the
hub proposes but the parties have not agreed (the 50:50 between ICBs) are not
applied: until agreement the current arrangements carry the costs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from hub.domain import citations
from hub.domain.model import ChangeType, RegisterChange
from hub.domain.money.splits import PersonDecision
from hub.domain.workflows.model import Case, CaseKind

WHOLE = 10_000
SIDES = ("council", "commissioner")


@dataclass(frozen=True, slots=True)
class PairSpan:
    """From `start` the register names this council and ICB responsible."""

    start: date
    council: str
    icb: str
    why: str = ""  # what moved it, with its citation


@dataclass(frozen=True, slots=True)
class InterimSpan:
    """Agreed interim shares of one dispute, in force from `first` to `last`
    (inclusive; None while the dispute is open)."""

    dispute_id: str
    kind: str  # "council" or "commissioner": the side in dispute
    first: date
    last: date | None
    lead_body: str
    shares: tuple[tuple[str, int], ...]  # (org code, basis points), totalling WHOLE
    citation: str

    def covers(self, day: date) -> bool:
        return self.first <= day and (self.last is None or day <= self.last)


def money_changes(changes: Iterable[RegisterChange]) -> list[RegisterChange]:
    """The register changes as money sees them: a resolution counts from the
    later of its effective date and its notice (see the module docstring)."""
    out = []
    for c in changes:
        if c.change_type is ChangeType.DISPUTE_RESOLVED and c.notified_on > c.effective_date:
            c = replace(c, effective_date=c.notified_on)
        out.append(c)
    return out


def pair_spans(points: Iterable[tuple[date, str | None, str | None, str]]) -> tuple[PairSpan, ...]:
    """Spans from the register's pair on given days (oldest first): a day
    without both bodies keeps the pair before it; equal neighbours merge."""
    spans: list[PairSpan] = []
    for day, council, icb, why in sorted(points, key=lambda p: p[0]):
        if council is None or icb is None:
            continue
        if spans and (spans[-1].council, spans[-1].icb) == (council, icb):
            continue
        spans.append(PairSpan(day, council, icb, why))
    return tuple(spans)


def interim_spans(cases: Iterable[Case]) -> tuple[InterimSpan, ...]:
    """Each agreed interim arrangement of each dispute case, with its days:
    to the day before the next arrangement, or before the resolution (or the
    withdrawal: the dispute-raised change that opened the case was retracted
    as recorded in error, and the arrangements it held end)."""
    out = []
    for case in cases:
        if case.kind is not CaseKind.DISPUTE or case.dispute_kind not in SIDES:
            continue
        closed_on = case.resolved_on or case.withdrawn_on
        end = closed_on - timedelta(days=1) if closed_on is not None else None
        for i, interim in enumerate(case.interims):
            if not interim.agreed:
                continue
            last = case.interims[i + 1].from_date - timedelta(days=1) if i + 1 < len(case.interims) else end
            if end is not None and (last is None or last > end):
                last = end
            if last is not None and last < interim.from_date:
                continue
            citation = citations.DISPUTE_COUNCIL_INTERIM if case.dispute_kind == "council" \
                else citations.DISPUTE_NHS_INTERIM
            out.append(InterimSpan(case.dispute_id or case.case_id, case.dispute_kind, interim.from_date, last,
                                   interim.lead_body, tuple((o, s) for o, s in interim.shares), citation))
    return tuple(sorted(out, key=lambda s: (s.first, s.dispute_id)))


def pair_on(spans: Sequence[PairSpan], day: date, recorded: tuple[str, str]) -> tuple[tuple[str, str], PairSpan | None]:
    found = None
    for s in spans:
        if s.start <= day:
            found = s
    return ((found.council, found.icb), found) if found else (recorded, None)


def sides_moved(spans: Sequence[PairSpan], pair: tuple[str | None, str | None]) -> tuple[str, ...]:
    """The sides of `pair` ("council", "icb") that some span names another body for.

    A person's split divides the costs between the council and the ICB jointly
    responsible on the days it covers (Worcs 8.5, A2.3): it is agreed by that
    pair, so a side the register moves over those days can no longer agree it."""
    council, icb = pair
    return tuple(side for side, moved in (("council", any(s.council != council for s in spans)),
                                          ("icb", any(s.icb != icb for s in spans))) if moved)


def pair_since(spans: Sequence[PairSpan], pair: tuple[str, str]) -> date | None:
    """The first day of the spans' last run naming `pair`, when an earlier span
    names another pair (None: every span names `pair`, or the last does not)."""
    if not spans or (spans[-1].council, spans[-1].icb) != pair or all((s.council, s.icb) == pair for s in spans):
        return None
    day = spans[-1].start
    for s in reversed(spans):
        if (s.council, s.icb) != pair:
            break
        day = s.start
    return day


def decision_last(decision: PersonDecision, spans: Sequence[PairSpan]) -> date | None:
    """The last day `decision` can apply, by the register's pairs (`spans`,
    oldest first, from on or before its `effective_from`): the day before the
    first day from its `effective_from` on which another pair is responsible
    (the day before `effective_from` when another pair already is then);
    None while its pair stays responsible. A later return to its pair does not
    revive it (splits.py)."""
    pair, current = decision.pair, None
    for s in spans:
        if s.start <= decision.effective_from:
            current = s
    if current is not None and (current.council, current.icb) != pair:
        return decision.effective_from - timedelta(days=1)
    for s in spans:
        if s.start > decision.effective_from and (s.council, s.icb) != pair:
            return s.start - timedelta(days=1)
    return None


def decisions_ended(decisions: Sequence[PersonDecision], spans: Sequence[PairSpan]) -> tuple[PersonDecision, ...]:
    """The person's decisions, each with its `last` day set from the
    register's pairs (`decision_last`; an earlier `last` is kept)."""
    out = []
    for d in decisions:
        last = decision_last(d, spans)
        if last is not None and (d.last is None or last < d.last):
            d = replace(d, last=last)
        out.append(d)
    return tuple(out)


def interim_on(spans: Sequence[InterimSpan], day: date) -> InterimSpan | None:
    """The interim in force on the day (if two disputes overlap, the one agreed last)."""
    found = None
    for s in spans:
        if s.covers(day):
            found = s
    return found


def boundaries(pairs: Sequence[PairSpan], interims: Sequence[InterimSpan]) -> set[date]:
    """Days on which who is charged may change."""
    days = {s.start for s in pairs}
    for s in interims:
        days.add(s.first)
        if s.last is not None:
            days.add(s.last + timedelta(days=1))
    return days


def apportion(amount: int, shares: Sequence[tuple[str, int]], lead: str) -> dict[str, int]:
    """`amount` pence divided by basis-point shares: each party's part is
    rounded half up to a penny, except the largest share's (the lead's on a
    tie), which takes the rest, so the parts always add up to `amount`. When
    the others' rounding up would leave the rest below nothing, those rounded
    up furthest give a penny back, so no part is ever negative."""
    live = [(org, bp) for org, bp in shares if bp > 0]
    if not live:
        return {lead: amount}
    keeper = max(live, key=lambda p: (p[1], p[0] == lead))[0]
    exact = {org: Decimal(amount) * bp / WHOLE for org, bp in live if org != keeper}
    parts = {org: int(x.quantize(Decimal(1), rounding=ROUND_HALF_UP)) for org, x in exact.items()}
    # Several parts rounded up can exceed the amount (four equal shares of 2p: 1p each for three): the
    # keeper's rest is never negative; the parts rounded up furthest give their penny back first.
    over = sum(parts.values()) - amount
    for org in sorted(parts, key=lambda o: parts[o] - exact[o], reverse=True)[:max(over, 0)]:
        parts[org] -= 1
    parts[keeper] = amount - sum(parts.values())
    return parts
