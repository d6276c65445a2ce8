"""Monthly recharge statements between a council and an ICB.

For a month and a pair of bodies: every package line the pair funds, cut at
each day the split changes (a new arrangement for the pair, a decision the
pair agreed for the person starting or ending) and at the month's edges, each piece costed by the day and split
under the rule in force on it. The body that pays the provider recharges the
other its share: a council-paid line makes the ICB owe the council the NHS
share, an ICB-paid line makes the council owe the ICB the council share.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from hub.domain import citations
from hub.domain.funding import LineSplit
from hub.domain.money.packages import PackageLine
from hub.domain.money.responsibility import (
    InterimSpan,
    PairSpan,
    apportion,
    boundaries,
    interim_on,
    pair_on,
)
from hub.domain.money.splits import History, PersonDecision, decision_cuts, rule_for, split_amount

ROUNDING_RULES = (
    "Amounts are whole pence. A line's weekly cost is exact (a unit cost times units a week is not rounded). "
    "Each line is cut into periods of consecutive days with one split; what a line has cost by a day is weekly "
    "cost x its days since the line's version started / 7, rounded half up to a penny, and a period costs what the "
    "line had cost by its last day less what it had cost by the day before its first, so however the days are cut "
    "(months, a transfer mid-month, a change of split) the periods add up to the whole span rounded once. The council's share of a period is its cost x the council's percentage, "
    "rounded half up to a penny; the NHS share is the rest, so the two shares always add up to the eligible "
    "cost. Every total is a sum of the periods' pence: nothing is rounded above a period, so totals reconcile "
    "to the line items exactly. While a dispute's agreed interim shares apply, the side in dispute (the council's "
    "or the NHS share of a period) is divided between the disputing bodies: each body's part is rounded half up "
    "to a penny, except the largest share's, which takes the rest, so the parts add up to that side exactly."
)
PENNY = Decimal(1)


def month_bounds(month: str) -> tuple[date, date]:
    """'2026-10' -> (2026-10-01, 2026-10-31). Raises ValueError for anything else."""
    if len(month) != 7 or month[4] != "-":
        raise ValueError("must be a month as YYYY-MM")
    year, mon = int(month[:4]), int(month[5:])
    first = date(year, mon, 1)
    return first, date(year, mon, calendar.monthrange(year, mon)[1])


def month_slices(first: date, last: date) -> list[tuple[date, date]]:
    """`first`..`last` cut at the months' edges, as the statements cut a line's days: a sum over these
    (the oversight's spend, a dispute's reimbursement) is what the statements charged, to the penny (each
    period's shares are rounded on their own)."""
    out = []
    while first <= last:
        end = min(last, month_bounds(first.isoformat()[:7])[1])
        out.append((first, end))
        first = end + timedelta(days=1)
    return out


def period_cost(weekly: Decimal, days: int) -> int:
    """What `days` consecutive days cost at `weekly` pence a week, rounded half up to a penny once."""
    return int((weekly * days / 7).quantize(PENNY, rounding=ROUND_HALF_UP))


def days_cost(weekly: Decimal, since: date, first: date, last: date) -> int:
    """The cost of the days `first`..`last` of a rate in force from `since`:
    what the rate has cost by `last` less what it had cost by the day before
    `first`, each rounded once (`period_cost`). However a line's days are cut
    (a month's edges, a transfer mid-month, a change of split, interim
    shares), the pieces add up to the cost of all its days rounded once: a
    cut never creates or loses a penny."""
    return period_cost(weekly, (last - since).days + 1) - period_cost(weekly, (first - since).days)


@dataclass(frozen=True, slots=True)
class Period:
    first: date
    last: date
    split: LineSplit
    basis: str
    arrangement: str

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def periods(line: PackageLine, first: date, last: date, history: History,
            decisions: Sequence[PersonDecision] = (), pair: tuple[str, str] | None = None) -> list[Period]:
    """The line's cost between `first` and `last` (inclusive) charged to
    `pair` (None: the pair the line is recorded against), whose arrangements
    are `history`, cut where the split changes: where the pair's arrangement
    changes, and where one of the pair's own decisions starts or stops
    applying (another pair's decisions never apply to these days: splits.py)."""
    start = max(first, line.start)
    end = last if line.end is None else min(last, line.end)
    if end < start:
        return []
    pair = pair if pair is not None else (line.council, line.icb)
    cuts = {start}
    cuts.update(d for d, _a in history[1:] if d is not None and start < d <= end)
    cuts.update(d for d in decision_cuts(decisions, pair) if start < d <= end)
    ordered = sorted(cuts)
    out = []
    weekly = line.weekly_cost
    for i, cut in enumerate(ordered):
        stop = ordered[i + 1] - timedelta(days=1) if i + 1 < len(ordered) else end
        rule = rule_for(line, cut, history, decisions, pair)
        out.append(Period(cut, stop, split_amount(line, days_cost(weekly, line.start, cut, stop), rule), rule.basis,
                          rule.agreement.name))
    return out


@dataclass(frozen=True, slots=True)
class LineItem:
    person_id: str
    package_id: str
    version: int
    service_type: str
    provider: str  # "ods:RNU" / "council:BCC-PRV-1"
    paid_by: str
    cohort: str
    first: date
    last: date
    days: int
    weekly_cost_pence: Decimal
    cost_pence: int  # the period's cost charged to this pair (all of it, or its interim part)
    eligible_pence: int  # of which s117 (council + NHS + awaiting a panel)
    council_pence: int
    icb_pence: int
    excluded_pence: int
    awaiting_panel_pence: int
    icb_owes_council_pence: int
    council_owes_icb_pence: int
    basis: str
    arrangement: str
    explanation: str
    citation: str
    council: str = ""  # the pair charged for these days
    icb: str = ""
    note: str = ""  # why this pair on these days: a move of responsibility, interim shares
    dispute_id: str | None = None  # interim shares of this dispute applied
    interim_share_bp: int | None = None  # this pair's body's agreed share of the side in dispute


@dataclass(frozen=True, slots=True)
class Totals:
    cost_pence: int = 0
    eligible_pence: int = 0
    council_pence: int = 0
    icb_pence: int = 0
    excluded_pence: int = 0
    awaiting_panel_pence: int = 0
    icb_owes_council_pence: int = 0
    council_owes_icb_pence: int = 0

    @property
    def net_icb_to_council_pence(self) -> int:
        """Positive: the ICB pays the council this much; negative: the council pays the ICB."""
        return self.icb_owes_council_pence - self.council_owes_icb_pence

    @classmethod
    def of(cls, items: Iterable[LineItem | Totals]) -> Totals:
        names = cls.__dataclass_fields__
        sums = dict.fromkeys(names, 0)
        for item in items:
            for n in names:
                sums[n] += getattr(item, n)
        return cls(**sums)


@dataclass(frozen=True, slots=True)
class PersonStatement:
    person_id: str
    lines: tuple[LineItem, ...]
    totals: Totals


@dataclass(frozen=True, slots=True)
class Statement:
    month: str
    first: date
    last: date
    council: str
    icb: str
    persons: tuple[PersonStatement, ...]
    totals: Totals
    rounding: str = ROUNDING_RULES


History_For = Callable[[str, str], History]


def _history_for(history: History | History_For) -> History_For:
    return history if callable(history) else (lambda _c, _i: history)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class InterimPart:
    """One disputing body's part of a period's cost under agreed interim
    shares, and the pair whose statement charges it."""

    org: str
    council: str
    icb: str
    share_bp: int  # its agreed share of the side in dispute
    lead: bool
    council_pence: int
    icb_pence: int
    excluded_pence: int
    awaiting_panel_pence: int
    note: str

    @property
    def cost_pence(self) -> int:
        return self.council_pence + self.icb_pence + self.excluded_pence + self.awaiting_panel_pence


def interim_parts(s: LineSplit, interim: InterimSpan, council: str, icb: str) -> list[InterimPart]:
    """A period's split (`s`, for the register's `council` and `icb`) under
    agreed interim shares: the side in dispute (the council's share in a
    `council` dispute, the NHS share in a `commissioner` one) divided between
    the disputing bodies (`apportion`); the lead body also carries the other
    side, excluded cost and any amount awaiting a panel. The one arithmetic
    for the statements, the reimbursement and the person query."""
    awaiting = s.line.amount_pence - s.excluded_pence - s.council_pence - s.commissioner_pence
    side = s.council_pence if interim.kind == "council" else s.commissioner_pence
    parts = apportion(side, interim.shares, interim.lead_body)
    share = dict(interim.shares)
    side_name = "council" if interim.kind == "council" else "NHS"
    out = []
    for org in dict.fromkeys((interim.lead_body, *parts)):
        part = parts.get(org, 0)
        lead = org == interim.lead_body
        if not lead and part == 0:
            continue
        pc, pi = (org, icb) if interim.kind == "council" else (council, org)
        pct = f"{Decimal(share.get(org, 0)) / 100:.2f}"
        note = (f"interim shares agreed in dispute {interim.dispute_id}: {org} carries {pct}% of the "
                f"{side_name} share" + (f"; {interim.lead_body} leads" if lead else f" ({interim.lead_body} leads)")
                + f" until resolution, then reimbursement ({interim.citation}; {citations.DISPUTE_RESOLVED_REIMBURSE})")
        if interim.kind == "council":
            cp, ip = part, (s.commissioner_pence if lead else 0)
        else:
            cp, ip = (s.council_pence if lead else 0), part
        excluded, waiting = (s.excluded_pence, awaiting) if lead else (0, 0)
        out.append(InterimPart(org, pc, pi, share.get(org, 0), lead, cp, ip, excluded, waiting, note))
    return out


def line_items(line: PackageLine, first: date, last: date, history: History | History_For,
               decisions: Sequence[PersonDecision] = (), pairs: Sequence[PairSpan] = (),
               interims: Sequence[InterimSpan] = ()) -> list[LineItem]:
    """The line's items between `first` and `last` for every pair charged:
    cut where the pair responsible on the register changes (`pairs`), where
    agreed interim shares start or end (`interims`), and where the split
    changes; `history` is the split history of a pair (one for all pairs, or
    a function of the pair)."""
    history_for = _history_for(history)
    start = max(first, line.start)
    end = last if line.end is None else min(last, line.end)
    if end < start:
        return []
    cuts = sorted({start} | {d for d in boundaries(pairs, interims) if start < d <= end})
    items: list[LineItem] = []
    provider = f"{line.provider.kind}:{line.provider.code}"
    recorded = (line.council, line.icb)
    for n, seg_first in enumerate(cuts):
        seg_last = cuts[n + 1] - timedelta(days=1) if n + 1 < len(cuts) else end
        (council, icb), span = pair_on(pairs, seg_first, recorded)
        interim = interim_on(interims, seg_first)
        moved = ""
        if span is not None and (council, icb) != recorded:
            moved = (f"charged to {council} and {icb}, responsible on the register from {span.start.isoformat()}"
                     + (f": {span.why}" if span.why else ""))
        for p in periods(line, seg_first, seg_last, history_for(council, icb), decisions, (council, icb)):
            s = p.split
            eligible = s.line.amount_pence - s.excluded_pence
            awaiting = eligible - s.council_pence - s.commissioner_pence
            base = dict(person_id=line.person_id, package_id=line.package_id, version=line.version,
                        service_type=line.service_type, provider=provider, paid_by=line.paid_by, cohort=line.cohort,
                        first=p.first, last=p.last, days=p.days, weekly_cost_pence=line.weekly_cost,
                        basis=p.basis, arrangement=p.arrangement, explanation=s.explanation, citation=s.citation)
            if interim is None:
                items.append(_item(base, council, icb, s.line.amount_pence, s.council_pence, s.commissioner_pence,
                                   s.excluded_pence, awaiting, moved))
                continue
            for part in interim_parts(s, interim, council, icb):
                items.append(replace(_item(base, part.council, part.icb, part.cost_pence, part.council_pence,
                                           part.icb_pence, part.excluded_pence, part.awaiting_panel_pence, part.note),
                                     dispute_id=interim.dispute_id, interim_share_bp=part.share_bp))
    return items


def _item(base: dict, council: str, icb: str, cost: int, council_pence: int, icb_pence: int, excluded: int,
          awaiting: int, note: str) -> LineItem:
    paid_by = base["paid_by"]
    return LineItem(
        **base, cost_pence=cost, eligible_pence=cost - excluded, council_pence=council_pence, icb_pence=icb_pence,
        excluded_pence=excluded, awaiting_panel_pence=awaiting,
        icb_owes_council_pence=icb_pence if paid_by == "council" else 0,
        council_owes_icb_pence=council_pence if paid_by == "icb" else 0, council=council, icb=icb, note=note)


def statement_for(
    month: str, council: str, icb: str, lines: Iterable[PackageLine], history: History | History_For,
    decisions: Callable[[str], Sequence[PersonDecision]] = lambda _pid: (),
    pairs: Callable[[str], Sequence[PairSpan]] = lambda _pid: (),
    interims: Callable[[str], Sequence[InterimSpan]] = lambda _pid: (),
) -> Statement:
    """The pair's statement for `month`: every line's days on which this pair
    is charged (the recorded pair, unless the register moved responsibility
    or agreed interim shares apply)."""
    first, last = month_bounds(month)
    by_person: dict[str, list[LineItem]] = {}
    for line in lines:
        if not line.overlaps(first, last):
            continue
        spans, shares = pairs(line.person_id), interims(line.person_id)
        if not spans and not shares and (line.council != council or line.icb != icb):
            continue
        found = [i for i in line_items(line, first, last, history, decisions(line.person_id), spans, shares)
                 if i.council == council and i.icb == icb]
        if found:
            by_person.setdefault(line.person_id, []).extend(found)
    persons = []
    for pid in sorted(by_person):
        items = tuple(sorted(by_person[pid], key=lambda i: (i.package_id, i.first, i.version)))
        persons.append(PersonStatement(pid, items, Totals.of(items)))
    return Statement(month, first, last, council, icb, tuple(persons), Totals.of(p.totals for p in persons))
