"""Outside review 30: a restated closed month says which lines changed.

A finance officer holding issue 1 of October was told by issue 2 only that
"the packages, the register, a dispute, or how the hub works the statement
out" changed, and by how much the totals moved: with hundreds of lines, which
person's line to look at was left to a line-by-line comparison of two files.
Now each issue keeps what each person's line came to, and a restatement lists
the lines whose days or amounts changed (before and after), in `changes` and
in its explanation (the CSV's TOTAL row, the PDF)."""

from __future__ import annotations

import csv
import io

from sqlalchemy import update

from hub.store.schema import statement_issues
from tests.unit.test_money_moves_api import BUCKS, QU9, _clients, _grant_funding, _statement
from tests.unit.test_packages_api import _person, start


async def test_a_restated_month_names_the_lines_that_changed(app_hub):  # noqa: ANN001
    keys = await _clients(app_hub)
    _grant_funding(app_hub, BUCKS, QU9)
    pid, _ = await _person(app_hub)
    h = {"X-API-Key": keys[BUCKS]}
    for body in (start(pid, "r-1", "L1", effective_date="2026-09-01"),
                 start(pid, "r-2", "L2", effective_date="2026-09-01", weekly_cost_pence=14_000)):
        assert (await app_hub.http.post("/v1/packages", headers=h, json=body)).status_code == 201
    first = (await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9)).json()["issue"]
    assert first["number"] == 1 and "changes" not in first

    # L2's cost is corrected from 15 October, after October was stated.
    change = {"source_message_id": "r-3", "action": "change", "package_id": "L2", "person_id": pid,
              "effective_date": "2026-10-15", "weekly_cost_pence": 21_000}
    assert (await app_hub.http.post("/v1/packages", headers=h, json=change)).status_code == 201
    issue = (await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9)).json()["issue"]
    assert issue["number"] == 2 and issue["restated"] is True
    assert issue["difference"]["cost_pence"] == 17_000  # 17 days at 10.00 a week more
    assert [(c["person_id"], c["package_id"]) for c in issue["changes"]] == [(pid, "L2")]  # L1 did not change
    (c,) = issue["changes"]
    assert (c["before"]["days"], c["after"]["days"]) == (31, 31)
    assert (c["before"]["cost_pence"], c["after"]["cost_pence"]) == (62_000, 79_000)
    assert c["after"]["council_pence"] + c["after"]["icb_pence"] == 79_000
    assert f"person {pid} line L2: 31 -> 31 days, cost 620.00 -> 790.00" in issue["explanation"]
    assert set(issue["restates"]["totals"]) == set(issue["difference"])  # the totals, nothing else

    rows = list(csv.DictReader(io.StringIO((await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9,
                                                             "csv")).text)))
    assert rows[-1]["person_id"] == "TOTAL" and "line L2: 31 -> 31 days" in rows[-1]["note"]
    assert "line L1" not in rows[-1]["note"]


async def test_an_issue_kept_before_lines_were_kept_says_only_the_totals_compare(app_hub):  # noqa: ANN001
    keys = await _clients(app_hub)
    _grant_funding(app_hub, BUCKS, QU9)
    pid, _ = await _person(app_hub)
    h = {"X-API-Key": keys[BUCKS]}
    assert (await app_hub.http.post("/v1/packages", headers=h,
                                    json=start(pid, "o-1", "L1", effective_date="2026-09-01"))).status_code == 201
    assert (await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9)).status_code == 200
    async with app_hub.hub.engine.begin() as conn:  # as a hub before this review kept it: totals only
        totals = {"cost_pence": 310_000, "eligible_pence": 310_000, "council_pence": 1, "icb_pence": 2,
                  "excluded_pence": 0, "awaiting_panel_pence": 0, "icb_owes_council_pence": 2,
                  "council_owes_icb_pence": 0}
        await conn.execute(update(statement_issues).values(totals=totals, digest="0" * 64))
    issue = (await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9)).json()["issue"]
    assert issue["number"] == 2 and issue["changes"] is None
    assert "the lines it restates were not kept: compare the totals" in issue["explanation"]
