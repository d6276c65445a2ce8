"""Outside review 30: the statement's figures are the same in JSON, CSV and
PDF. The PDF gave, of the totals, only what each body owes: a finance officer
reconciling it with the JSON or the CSV's TOTAL row could not find the cost,
the eligible cost, each body's share or the excluded cost. Each section's
Total row now sums its lines, and a Totals line gives every total."""

from __future__ import annotations

import csv
import io
import subprocess

from hub.money.render import pounds
from tests.servers.poppler import require_poppler
from tests.unit.test_money_moves_api import BUCKS, QU9, _clients, _grant_funding, _statement
from tests.unit.test_packages_api import _person, start

CSV_OF = {"cost": "cost_pence", "eligible": "eligible_pence", "council_share": "council_pence",
          "icb_share": "icb_pence", "excluded": "excluded_pence", "awaiting_panel": "awaiting_panel_pence",
          "icb_owes_council": "icb_owes_council_pence", "council_owes_icb": "council_owes_icb_pence"}


async def test_json_csv_and_pdf_give_the_same_totals(app_hub, tmp_path):  # noqa: ANN001
    require_poppler()
    keys = await _clients(app_hub)
    _grant_funding(app_hub, BUCKS, QU9)
    pid, _ = await _person(app_hub)
    h = {"X-API-Key": keys[BUCKS]}
    for body in (start(pid, "f-1", "L1", effective_date="2026-09-01", weekly_cost_pence=100_003),
                 start(pid, "f-2", "L2", effective_date="2026-10-04", weekly_cost_pence=9_999, paid_by="icb"),
                 start(pid, "f-3", "L3", effective_date="2026-09-01", weekly_cost_pence=7_001, s17_leave=True),
                 start(pid, "f-4", "L4", effective_date="2026-09-01", weekly_cost_pence=5_000, exclusion="top-up")):
        assert (await app_hub.http.post("/v1/packages", headers=h, json=body)).status_code == 201
    totals = (await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9)).json()["totals"]
    rows = list(csv.DictReader(io.StringIO((await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9, "csv")).text)))
    assert rows[-1]["person_id"] == "TOTAL"
    assert {c: rows[-1][c] for c in CSV_OF} == {c: pounds(totals[f]) for c, f in CSV_OF.items()}
    pdf = tmp_path / "s.pdf"
    pdf.write_bytes((await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9, "pdf")).content)
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())
    for label, f in (("cost", "cost_pence"), ("eligible", "eligible_pence"), ("council share", "council_pence"),
                     ("ICB share", "icb_pence"), ("excluded", "excluded_pence")):
        assert f"{label} {pounds(totals[f])};" in text, (label, text[-600:])
