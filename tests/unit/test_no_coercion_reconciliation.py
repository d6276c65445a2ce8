"""Reconciliation snapshots: a row's flags (`entitled`, `funding`) are true or false and its dates
(`entitlement_start`, `entitlement_end`, `next_review_due`) YYYY-MM-DD strings, in NDJSON and JSON
arrays alike, as the register-change contract takes them. The lax types read "yes", "on", 1 or "1" as
true ("no", 0 as false) and a Unix time (a number, or its text) as a date, and compared the list on
that reading. Such a row is rejected now, named by its row and field (never its value), and quarantined
as any bad row is; the CSV layout keeps its own Y/N flags and DD/MM/YYYY dates (adapters/snapshots)."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import func, select

from hub.store.schema import quarantine
from tests.unit.test_reconciliation_api import PEOPLE, ndjson, send

GOOD = {"nhs_number": PEOPLE["A"], "entitled": True, "entitlement_start": "2025-01-01"}
COERCED = [("entitled", "yes"), ("entitled", 1), ("entitled", "true"), ("funding", "no"), ("funding", 0),
           ("entitlement_start", 1735689600), ("entitlement_start", "1735689600"),
           ("entitlement_end", 1735689600.0), ("next_review_due", "2025-01-01T00:00:00")]


async def _held(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(quarantine)
                                .where(quarantine.c.channel == "snapshot"))).scalar_one()
        await conn.rollback()
    return n


@pytest.mark.parametrize("form", ["ndjson", "json"])
@pytest.mark.parametrize(("field", "coerced"), COERCED)
async def test_a_row_with_a_coerced_flag_or_date_is_rejected_naming_the_field(app_hub, form, field, coerced):  # noqa: ANN001
    key = app_hub.keys["E06000060"]
    rows = [GOOD, {"nhs_number": PEOPLE["B"], "entitled": True, field: coerced}]
    body, ctype = ((ndjson(rows), "application/x-ndjson") if form == "ndjson"
                   else (orjson.dumps(rows), "application/json"))
    snap = await send(app_hub, key, body, ctype)
    assert (snap["rows_read"], snap["rows_rejected"]) == (2, 1), snap
    assert [p["field"] for p in snap["problems"]] == [f"row 2, field {field}"]
    assert str(coerced) not in orjson.dumps(snap["problems"]).decode()
    assert await _held(app_hub) == 1


async def test_csv_flags_and_dates_are_still_read(app_hub) -> None:  # noqa: ANN001
    key = app_hub.keys["E06000060"]
    csv = ("NHS_NO,LOCAL_ID,S117_FLAG,RESP_LA_GSS,RESP_ICB_ODS,S117_START,S117_END,NEXT_REVIEW,FUNDING\n"
           f"{PEOPLE['A']},SW-A,Y,E06000060,QU9,07/04/2025,2025-12-31,01/06/2026,N\nTRAILER,1\n").encode()
    snap = await send(app_hub, key, csv, "text/csv")
    assert (snap["state"], snap["rows_read"], snap["rows_rejected"]) == ("comparing", 1, 0), snap
