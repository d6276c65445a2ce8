"""Anonymised register summary: suppression, content, scope."""

from __future__ import annotations

import random
from datetime import date

import orjson
import pytest

from hub.clients import add_client
from hub.reports import SUPPRESSED, suppress
from hub.sample_data import detention_to_move_scenario
from hub.domain.dates import england_day


@pytest.mark.parametrize("n, shown", [(0, 0), (1, SUPPRESSED), (7, SUPPRESSED), (8, 10), (12, 10), (13, 15), (102, 100)])
def test_small_numbers_are_suppressed_and_the_rest_rounded(n, shown):
    assert suppress(n) == shown


async def _people(app_hub, count: int) -> list[str]:  # noqa: ANN001
    nhs = []
    for i in range(count):
        changes = detention_to_move_scenario(random.Random(100 + i), f"rep-{i}", date(2025, 1, 6))
        for c in changes[:3]:  # detained, s3, left hospital: entitled, Bucks + BOB ICB
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
            assert r.status_code == 202
        nhs.append(changes[0]["person"]["nhs_number"])
    return nhs


async def test_oversight_sees_suppressed_counts_for_its_own_area_and_no_person(app_hub):
    nhs = await _people(app_hub, 9)
    _, bucks_key = await add_client(app_hub.hub.engine, "Bucks oversight", "E06000060", "council", ["reports:read"])
    r = await app_hub.http.get("/v1/reports/register-summary", headers={"X-API-Key": bucks_key})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["scope"] == "E06000060"
    (row,) = report["rows"]
    assert row["council"]["code"] == "E06000060" and row["commissioner"]["code"] == "QU9"
    assert row["entitled"] == 10  # 9 people, rounded to the nearest 5
    assert row["on_cto"] == 0
    assert row["reviews_overdue"] == 10  # left hospital in 2025: the 3-month review has passed
    # Twelve calendar months up to this one; these entitlements began in April 2025.
    assert len(report["trend"]) == 12 and report["trend"][-1]["month"] == england_day().isoformat()[:7]
    in_window = {t["month"] for t in report["trend"]}
    assert ("2025-04" in in_window) == (report["trend"][0]["month"] <= "2025-04")
    assert all(t["entitlements_started"] == 0 for t in report["trend"] if t["month"] != "2025-04")
    text = orjson.dumps(report).decode()
    assert not any(n in text for n in nhs)
    assert "person_id" not in text

    _, brum_key = await add_client(app_hub.hub.engine, "Birmingham oversight", "E08000025", "council", ["reports:read"])
    other = (await app_hub.http.get("/v1/reports/register-summary", headers={"X-API-Key": brum_key})).json()
    assert other["rows"] == [] and other["total"]["entitled"] == 0


async def test_a_handful_of_people_shows_as_suppressed(app_hub):
    await _people(app_hub, 3)
    _, key = await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"])
    report = (await app_hub.http.get("/v1/reports/register-summary", headers={"X-API-Key": key})).json()
    assert report["rows"][0]["entitled"] == SUPPRESSED and report["total"]["entitled"] == SUPPRESSED


async def test_reports_need_their_scope(app_hub):
    r = await app_hub.http.get("/v1/reports/register-summary", headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert r.status_code == 403
