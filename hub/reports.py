"""Anonymised register summary for oversight groups (Worcs Annex 3, "Reports
for the Meeting"): counts per responsible council and ICB, and monthly
trends, never a person.

Small numbers can identify people, so every published count goes through
`suppress`: 0 stays 0, 1-7 becomes "*", anything larger is rounded to the
nearest 5 (the approach NHS England uses for published activity statistics).
Totals are computed from the exact counts and then suppressed themselves, so
a suppressed cell cannot be recovered by subtraction from an exact total.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from hub.domain.dates import add_months
from hub.domain.model import S117Status

SUPPRESSED = "*"


def suppress(n: int) -> int | str:
    if n == 0:
        return 0
    if n <= 7:
        return SUPPRESSED
    return int(5 * round(n / 5))


@dataclass(frozen=True, slots=True)
class PairKey:
    council: str
    commissioner: str


def register_summary(statuses: Iterable[S117Status], today: date, late_changes: Counter[str] | None = None) -> dict:
    """Aggregate evaluated statuses (as of `today`) into a suppressed summary.

    `late_changes` counts register changes recorded after the 5-working-day
    service level, per council code (the body that keeps the register)."""
    rows: dict[PairKey, Counter[str]] = defaultdict(Counter)
    names: dict[str, str] = {}
    started_by_month: Counter[date] = Counter()
    ended_by_month: Counter[date] = Counter()
    year_ago = add_months(today, -12)
    for st in statuses:
        if st.entitlement_start:
            started_by_month[date(st.entitlement_start.year, st.entitlement_start.month, 1)] += 1
        if st.entitlement_end:
            ended_by_month[date(st.entitlement_end.year, st.entitlement_end.month, 1)] += 1
        council = st.responsible_council.org if st.responsible_council else None
        icb = st.responsible_commissioner.org if st.responsible_commissioner else None
        if council is None and icb is None:
            continue
        key = PairKey(council.code if council else "unknown", icb.code if icb else "unknown")
        for org in (council, icb):
            if org is not None:
                names[org.code] = org.name
        c = rows[key]
        if st.entitled:
            c["entitled"] += 1
            if st.on_cto:
                c["on_cto"] += 1
            if st.in_hospital:
                c["in_hospital"] += 1
            if st.next_review and st.next_review.due_on < today:
                c["reviews_overdue"] += 1
            if st.entitlement_start and st.entitlement_start >= year_ago:
                c["started_last_12_months"] += 1
        elif st.entitlement_end and st.entitlement_end >= year_ago:
            c["ended_last_12_months"] += 1
        if st.open_disputes:
            c["open_disputes"] += 1
    return publish_summary(rows, names, started_by_month, ended_by_month, late_changes or Counter(), today)


FIELDS = ("entitled", "started_last_12_months", "ended_last_12_months", "on_cto", "in_hospital",
          "reviews_overdue", "open_disputes")


def publish_summary(
    rows: dict[PairKey, Counter[str]], names: dict[str, str], started_by_month: Counter[date],
    ended_by_month: Counter[date], late_changes: Counter[str], today: date,
) -> dict:
    """Exact counts per (council, ICB) pair, monthly starts and ends (keyed by
    the first of the month) and late changes per council -> the suppressed
    summary. Used on statuses evaluated now and on the maintained counts
    (hub/register_counts.py) alike."""
    months = [add_months(date(today.year, today.month, 1), -i) for i in range(11, -1, -1)]
    fields = FIELDS
    total: Counter[str] = Counter()
    out_rows = []
    for key in sorted(rows, key=lambda k: (k.council, k.commissioner)):
        c = rows[key]
        total.update(c)
        out_rows.append({
            "council": {"code": key.council, "name": names.get(key.council, key.council)},
            "commissioner": {"code": key.commissioner, "name": names.get(key.commissioner, key.commissioner)},
            **{f: suppress(c[f]) for f in fields},
            "changes_recorded_late": suppress(late_changes[key.council]),
        })
    return {
        "as_of": today.isoformat(),
        "suppression": "0 shown as 0; 1-7 shown as '*'; other counts rounded to the nearest 5",
        "rows": out_rows,
        "total": {f: suppress(total[f]) for f in fields},
        "trend": [{"month": m.isoformat()[:7], "entitlements_started": suppress(started_by_month[m]),
                   "entitlements_ended": suppress(ended_by_month[m])} for m in months],
    }


def list_agreement_rows(rows: Iterable[dict]) -> list[dict]:
    """Agreement between each body's own list and the register (from its last
    reconciliation), suppressed like every other count. The rate is worked out
    from the two counts as published, never the exact ones: beside a rounded or
    suppressed count an exact rate narrows it (8 people, 3 agreeing: "10", "*"
    and 38% leave only 3 of 8), so it says no more than the counts do, and is
    "*" when either count is."""
    out = []
    for r in rows:
        people, agreeing = suppress(r["people"]), suppress(r["agreeing"])
        rate: int | str | None = None
        if people == SUPPRESSED or agreeing == SUPPRESSED:
            rate = SUPPRESSED
        elif people:
            rate = round(100 * int(agreeing) / int(people))
        out.append({"body": r["body"], "as_of": r["as_of"], "people_on_either_list": people,
                    "agreeing": agreeing, "agreement_rate_percent": rate})
    return out


# --------------------------------------------------------------- expenditure
# Committed and projected s117 spend (Worcs 18.2; Annex 3), kept apart from
# the register counts above. Money about a few people identifies them as
# surely as a count does: a row (or month) whose people number 1-7 shows "*"
# for its people and every amount; amounts are published in pounds rounded to
# the nearest 100, totals from the exact figures.

SPEND_ROUNDING = "pounds, rounded to the nearest 100; rows and months with 1-7 people shown as '*'"


def _pounds(pence: int) -> int:
    return int(100 * round(pence / 10_000))


def _spend_cells(spend, people: int) -> dict:  # noqa: ANN001 - a domain Spend
    hidden = 0 < people <= 7

    def money(values: list[int]) -> dict:
        keys = ("eligible", "council", "icb")
        return {k: SUPPRESSED if hidden else _pounds(v) for k, v in zip(keys, values)}

    return {"people": suppress(people), "committed_weekly": money(spend.committed_weekly),
            "spent_year_to_date": money(spend.spent_to_date), "projected_year": money(spend.projected_year)}


def expenditure_summary(exp, names: dict[str, str]) -> dict:  # noqa: ANN001 - a domain Expenditure
    """The report's `expenditure` section from hub.domain.money.expenditure."""
    rows = []
    for (council, icb) in sorted(exp.by_pair):
        spend = exp.by_pair[(council, icb)]
        rows.append({"council": {"code": council, "name": names.get(council, council)},
                     "commissioner": {"code": icb, "name": names.get(icb, icb)},
                     **_spend_cells(spend, len(spend.people))})
    return {
        "as_of": exp.as_of.isoformat(),
        "financial_year": f"{exp.year_start.isoformat()}/{exp.year_end.isoformat()}",
        "amounts": SPEND_ROUNDING,
        "citation": "Worcs 18.2; Worcs Annex 3",
        "rows": rows,
        "cohorts": [{"cohort": c, **_spend_cells(exp.by_cohort[c], len(exp.by_cohort[c].people))}
                    for c in sorted(exp.by_cohort)],
        "total": _spend_cells(exp.total, len(exp.total.people)),
        "trend": [{"month": m, "people": suppress(exp.trend[m][3]),
                   "spend": {k: SUPPRESSED if 0 < exp.trend[m][3] <= 7 else _pounds(v)
                             for k, v in zip(("eligible", "council", "icb"), exp.trend[m][:3])}}
                  for m in exp.months],
    }
