"""Statement issues: a closed month's statement is never silently rewritten.

Statements are computed from the packages, the register and the disputes as
they stand, so a late change (a transfer notified after the month was stated,
a package change back-dated by its sender) can alter a month already stated.
The first time a pair's closed month (its last day before today) is served,
its content's digest and totals are kept as issue 1; served again with the
same content it is the same issue; with different content it becomes the
next issue, and says it restates the previous one (when that was issued, its
totals, and the difference). A month not yet ended is provisional and not
kept. A transfer or dispute from a date changes nothing before that date, so
months before it keep their issue.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.domain.money.statements import Statement
from hub.money.render import MONEY_FIELDS, pounds, statement_json
from hub.store.schema import statement_issues

ATTEMPTS = 3


def digest(s: Statement) -> str:
    return hashlib.sha256(orjson.dumps(statement_json(s, {}), option=orjson.OPT_SORT_KEYS)).hexdigest()


def _totals(s: Statement) -> dict[str, int]:
    return {f: getattr(s.totals, f) for f in MONEY_FIELDS}


# What each person's package line came to in an issue (its days and amounts, summed over the line's
# versions and periods): kept beside the totals (the `lines` key of the issue's `totals` row, so no new
# column), so that a restatement names the lines whose days or amounts changed, not only the totals.
LINE_FIELDS = ("days", *MONEY_FIELDS)


def _lines(s: Statement) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for p in s.persons:
        for i in p.lines:
            sums = out.setdefault(f"{p.person_id} {i.package_id}", [0] * len(LINE_FIELDS))
            for n, f in enumerate(LINE_FIELDS):
                sums[n] += getattr(i, f)
    return out


def _changes(before: dict[str, list[int]], after: dict[str, list[int]]) -> list[dict[str, Any]]:
    out = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key):
            continue
        person_id, package_id = key.split(" ", 1)
        was, now = before.get(key), after.get(key)
        out.append({"person_id": person_id, "package_id": package_id,
                    "before": None if was is None else dict(zip(LINE_FIELDS, was, strict=True)),
                    "after": None if now is None else dict(zip(LINE_FIELDS, now, strict=True))})
    return out


SAID = 20  # lines said in words (the CSV's TOTAL row, the PDF); issue.changes has them all


def _said(changes: list[dict[str, Any]]) -> str:
    """The changed lines in words, for the CSV's TOTAL row and the PDF."""
    if not changes:
        return "no line's days or amounts changed: the wording (a rule, citation or note) did"
    parts = []
    for c in changes[:SAID]:
        was, now = c["before"], c["after"]
        what = (f"added ({now['days']} days, cost {pounds(now['cost_pence'])})" if was is None else
                f"removed (was {was['days']} days, cost {pounds(was['cost_pence'])})" if now is None else
                f"{was['days']} -> {now['days']} days, cost {pounds(was['cost_pence'])} -> "
                f"{pounds(now['cost_pence'])}, council share {pounds(was['council_pence'])} -> "
                f"{pounds(now['council_pence'])}, ICB share {pounds(was['icb_pence'])} -> "
                f"{pounds(now['icb_pence'])}")
        parts.append(f"person {c['person_id']} line {c['package_id']}: {what}")
    more = f"; and {len(changes) - SAID} more (the JSON's issue.changes lists every one)" if len(changes) > SAID else ""
    return f"{len(changes)} line(s) changed: " + "; ".join(parts) + more


async def issue_for(engine: AsyncEngine, s: Statement, today: date) -> dict[str, Any]:
    """The statement's issue: provisional while the month runs; otherwise its
    number, and what it restates if it is not the first."""
    if s.last >= today:
        return {"provisional": True, "number": None, "restated": False,
                "explanation": f"the month has not ended ({s.last.isoformat()}): amounts may still change"}
    d, totals, lines = digest(s), _totals(s), _lines(s)
    key = (statement_issues.c.council == s.council, statement_issues.c.icb == s.icb,
           statement_issues.c.month == s.month)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with engine.begin() as conn:
                rows = (await conn.execute(select(statement_issues).where(*key)
                                           .order_by(statement_issues.c.issue))).all()
                current = next((r for r in reversed(rows) if r.digest == d), None)
                if current is None or current.issue != rows[-1].issue:
                    number = (rows[-1].issue if rows else 0) + 1
                    issued_at = datetime.now(UTC)
                    await conn.execute(statement_issues.insert().values(
                        council=s.council, icb=s.icb, month=s.month, issue=number, digest=d,
                        totals={**totals, "lines": lines},
                        issued_at=issued_at))
                else:
                    number, issued_at = current.issue, current.issued_at
            break
        except IntegrityError:  # another request issued it at the same moment: read it again
            if attempt == ATTEMPTS:
                raise
    out: dict[str, Any] = {"provisional": False, "number": number, "issued_at": _iso(issued_at),
                           "restated": number > 1}
    if number > 1:
        prev = rows[number - 2]
        out["restates"] = {"number": prev.issue, "issued_at": _iso(prev.issued_at),
                           "totals": {f: prev.totals.get(f, 0) for f in MONEY_FIELDS}}
        out["difference"] = {f: totals[f] - prev.totals.get(f, 0) for f in MONEY_FIELDS}
        kept = prev.totals.get("lines")
        # Each person's line whose days or amounts differ from the issue restated (None: that issue was kept
        # before the hub recorded its lines, so only the totals can be compared).
        out["changes"] = None if kept is None else _changes(kept, lines)
        out["explanation"] = (f"issue {number} restates issue {prev.issue} of {_iso(prev.issued_at)[:10]}: the "
                              "packages, the register, a dispute, or how the hub works the statement out (a "
                              "corrected rule), changed after it was issued; "
                              + ("the lines it restates were not kept: compare the totals" if kept is None
                                 else _said(out["changes"])))
    else:
        out["explanation"] = "first issue of this month's statement"
    return out


def _iso(at: datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
