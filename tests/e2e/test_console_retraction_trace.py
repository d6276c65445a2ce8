"""The console's trace (a real browser: Debian's chromium driven by Playwright, against a real hub
process) shows a change's retraction and its reversal alike: a discharge retracted in error and the
retraction reversed, traced by its source message id, shows a `retracted` row and then a `reinstated`
row, each saying who did it, each followed by the correction it published; the reversal's correlation
id traces the same change. Neither reason nor anything personal is on the page. Failed before: both rows
showed their stage and time only (the console described neither)."""

from __future__ import annotations

import random
from datetime import date

import httpx
import pytest

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario
from hub.store.db import create_engine
from tests.e2e.conftest import make_clients
from tests.e2e.test_console_csp import csp_violations, watch_csp
from tests.servers.tools import debian_tool
from tests.support import HubProcess

pytestmark = pytest.mark.e2e
REASONS = ("recorded against the wrong patient", "the retraction named the wrong change")


async def test_a_retraction_and_its_reversal_are_described_in_the_console_trace(tmp_path, sharing_file):
    from playwright.async_api import async_playwright

    chromium = debian_tool("chromium", "chromium")
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, admin = await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    changes = detention_to_move_scenario(random.Random(5), "ctr", date(2025, 1, 6))
    person = changes[0]["person"]
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            trust = {"X-API-Key": keys["trust"]}
            r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys["E06000060"]}, json={"channel": "feed"})
            assert r.status_code == 201, r.text
            for c in changes:
                r = await http.post("/v1/register-changes", headers=trust, json=c)
                assert r.status_code == 202, r.text
            moved = r.json()["change_id"]
            answers = []
            for path, reason in zip(("retraction", "retraction/reversal"), REASONS, strict=True):
                r = await http.post(f"/v1/register-changes/{moved}/{path}", headers=trust, json={"reason": reason})
                assert r.status_code == 200, r.text
                answers.append(r.json())

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            reported = await watch_csp(page)
            await page.goto(f"{hub.base_url}/console")
            await page.fill("#key", admin)
            await page.click("#signin")
            await page.wait_for_selector("#subs table")
            await page.click("nav button[data-tab=trace]")
            for kind, value in (("source_message_id", changes[-1]["source_message_id"]),
                                ("correlation_id", answers[1]["correlation_id"])):
                await page.select_option("#tracekind", kind)
                await page.fill("#tracevalue", value)
                await page.click("#traceform button[type=submit]")
                await page.wait_for_selector("#traceout tr.stage-reinstated")
                rows = await page.locator("#traceout tr").evaluate_all(
                    "rows => rows.map(r => [r.className, r.cells[2].innerText])")
                marked = [(i, text) for i, (stage, text) in enumerate(rows)
                          if stage in ("stage-retracted", "stage-reinstated")]
                assert [rows[i][0] for i, _ in marked] == ["stage-retracted", "stage-reinstated"], (kind, rows)
                (at_retracted, retracted), (at_reinstated, reinstated) = marked
                assert "retracted by RNU" in retracted and answers[0]["event_id"][:8] in retracted, retracted
                assert "retraction reversed by RNU" in reinstated and answers[1]["event_id"][:8] in reinstated
                assert answers[0]["event_id"][:8] in reinstated  # the retraction it reversed
                for i in (at_retracted, at_reinstated):  # each followed by the correction it published
                    assert rows[i + 1][0] == "stage-event-derived" and "s117-notification-corrected" in rows[i + 1][1]
                content = await page.content()
                assert not any(reason in content for reason in REASONS)
                assert person["nhs_number"] not in content and person["family_name"] not in content
            assert not await csp_violations(page, reported)
            await browser.close()
    finally:
        hub.stop()
