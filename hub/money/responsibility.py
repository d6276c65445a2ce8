"""Who is charged a person's packages on each day, from the store: the pair
the register names (evaluated on the first day and on each day a change takes
effect, as money sees changes: hub/domain/money/responsibility.py), and the
agreed interim shares of the person's dispute cases. Also the reimbursement
hook: what each disputing body carried, by the statements' own arithmetic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.codec import from_jsonable
from hub.domain.agreements import AgreementBook
from hub.domain.model import RegisterChange
from hub.domain.money import PackageLine, PersonDecision
from hub.domain.money.responsibility import (InterimSpan, PairSpan, interim_spans, money_changes, pair_on,
                                             pair_spans)
from hub.domain.money.statements import line_items, month_slices
from hub.domain.ports import ReferenceData
from hub.domain.rules import evaluate
from hub.domain.workflows.model import Case, CaseKind
from hub.store.schema import care_packages, not_retracted, register_changes, workflow_cases


def overlapping(first: date, last: date):  # noqa: ANN201
    return and_(care_packages.c.start_date <= last,
                or_(care_packages.c.end_date.is_(None), care_packages.c.end_date >= first))


def moved_since_start(last: date):  # noqa: ANN201
    """A line version whose person has a register change (up to `last`) that
    may have moved who is charged it: one taking effect, or notified, after
    the line began, or received after the line was recorded (late history
    from before its start). Measured from the line's first version: every
    version keeps the pair recorded on the line's first day, so a change of
    cost after a move is charged by the register as the days before it were."""
    rc, first = register_changes.c, care_packages.alias("first_version").c
    return exists().where(rc.person_id == care_packages.c.person_id, rc.effective_date <= last,
                          first.source == care_packages.c.source, first.package_id == care_packages.c.package_id,
                          first.version == 1,
                          or_(rc.effective_date > first.start_date, rc.notified_on > first.start_date,
                              rc.received_at > first.recorded_at))


def in_dispute():  # noqa: ANN201
    return exists().where(workflow_cases.c.person_id == care_packages.c.person_id,
                          workflow_cases.c.kind == CaseKind.DISPUTE.value)


def _last_day(line: PackageLine, until: date | None) -> date | None:
    """The line's last day up to `until` (None: open)."""
    return line.end if until is None or (line.end is not None and line.end < until) else until


def interim_covers(interim: InterimSpan, line: PackageLine, until: date | None = None) -> bool:
    """Whether the interim shares are in force on some day of `line` up to `until`."""
    last = _last_day(line, until)
    return (last is None or interim.first <= last) and (interim.last is None or line.start <= interim.last)


def charged_to(line: PackageLine, pairs: Sequence[PairSpan], interims: Sequence[InterimSpan],
               until: date | None = None) -> set[str]:
    """The bodies `line` is charged to on some day from its start to its end,
    or to `until` if that is earlier (None: its end): the pair it is recorded
    against, each pair the register names over those days (`pairs`, oldest
    first: a span runs to the day before the next), and the parties to agreed
    interim shares in force on them. Who may see the line in the person query."""
    last = _last_day(line, until)
    orgs = {line.council, line.icb}
    for i, span in enumerate(pairs):
        span_last = pairs[i + 1].start - timedelta(days=1) if i + 1 < len(pairs) else None
        if (last is None or span.start <= last) and (span_last is None or line.start <= span_last):
            orgs.update((span.council, span.icb))
    for interim in interims:
        if interim_covers(interim, line, until):
            orgs.update(org for org, _ in interim.shares)
            orgs.add(interim.lead_body)
    return orgs


def charged_on(line: PackageLine, pairs: Sequence[PairSpan], interims: Sequence[InterimSpan],
               day: date) -> set[str]:
    """The bodies `line` is charged to on `day`, as the statements charge it: the
    pair the register names that day (`pairs`, oldest first; before the first
    span, the pair the line is recorded against) and the parties to agreed
    interim shares in force that day (as `charged_to` counts them). Who may
    change the line from `day` or end it on `day` (hub/money/service.py)."""
    (council, icb), _ = pair_on(pairs, day, (line.council, line.icb))
    orgs = {council, icb}
    for interim in interims:
        if interim.covers(day):
            orgs.update(org for org, _ in interim.shares)
            orgs.add(interim.lead_body)
    return orgs


def case_from_data(data: dict) -> Case:
    # The reason is encrypted at rest and not needed for money: left as is, never shown.
    return from_jsonable(Case, data)


async def load_pairs(conn: AsyncConnection, person_ids: Iterable[str], first: date | Mapping[str, date], last: date,
                     ref: ReferenceData, agreements: AgreementBook) -> dict[str, tuple[PairSpan, ...]]:
    """The register's pairs of each person from `first` (one day for all, or
    each person's own) to `last`, as money sees the register."""
    ids = sorted(set(person_ids))
    if not ids:
        return {}
    changes: dict[str, list[RegisterChange]] = defaultdict(list)
    for k in range(0, len(ids), 500):
        rows = (await conn.execute(select(register_changes.c.person_id, register_changes.c.canonical)
                                   .where(register_changes.c.person_id.in_(ids[k:k + 500]), not_retracted()))).all()
        for r in rows:
            changes[r.person_id].append(from_jsonable(RegisterChange, r.canonical))
    out = {}
    for pid, found in changes.items():
        seen = money_changes(found)
        start = first[pid] if isinstance(first, Mapping) else first
        days = sorted({start} | {c.effective_date for c in seen if start < c.effective_date <= last})
        points = []
        for day in days:
            status = evaluate(pid, seen, ref, agreements, day)
            council, icb = status.responsible_council, status.responsible_commissioner
            points.append((day, council.org.code if council and council.org else None,
                           icb.org.code if icb and icb.org else None,
                           f"{council.citation if council else ''}; {icb.citation if icb else ''}"))
        out[pid] = pair_spans(points)
    return out


async def load_interims(conn: AsyncConnection, person_ids: Iterable[str]) -> dict[str, tuple[InterimSpan, ...]]:
    ids = sorted(set(person_ids))
    cases: dict[str, list[Case]] = defaultdict(list)
    for k in range(0, len(ids), 500):
        rows = (await conn.execute(select(workflow_cases.c.person_id, workflow_cases.c.data).where(
            workflow_cases.c.kind == CaseKind.DISPUTE.value, workflow_cases.c.person_id.in_(ids[k:k + 500])))).all()
        for r in rows:
            cases[r.person_id].append(case_from_data(r.data))
    return {pid: spans for pid, found in cases.items() if (spans := interim_spans(found))}


class CarriedCosts:
    """The settlement hook (hub/domain/workflows/settlement.py InterimCosts)
    over one person's lines, pairs and interim shares, loaded beforehand."""

    def __init__(self, lines: Sequence[PackageLine], agreements: AgreementBook, decisions: Sequence[PersonDecision],
                 pairs: Sequence[PairSpan], interims: Sequence[InterimSpan]) -> None:
        self._lines, self._agreements, self._decisions = lines, agreements, decisions
        self._pairs, self._interims = pairs, interims

    def carried(self, person_id: str, kind: str, start: date, end: date) -> dict[str, int] | None:
        if not self._lines:
            return None
        out: dict[str, int] = defaultdict(int)
        # Month by month, as the statements each body was charged: every period's shares are rounded on their
        # own, so one stretch over the months' edges could differ from what the statements charged by pennies.
        for line in self._lines:
            for i in (i for a, b in month_slices(start, end) for i in line_items(
                    line, a, b, self._agreements.funding_history, self._decisions, self._pairs, self._interims)):
                if kind == "council":
                    out[i.council] += i.council_pence
                else:
                    out[i.icb] += i.icb_pence
        return dict(out)
