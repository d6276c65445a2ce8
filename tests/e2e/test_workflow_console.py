"""The console page of open transfers and disputes, in a real browser
(Playwright driving Debian's chromium) against the hub as a uvicorn process:
an overdue transfer comes first, in red, ahead of a dispute with time left."""

from __future__ import annotations

import asyncio
import random
from datetime import date, timedelta

import httpx
import pytest

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario
from hub.store.db import create_engine, create_schema
from tests.servers import unavailable
from tests.servers.tools import debian_tool
from tests.support import HubProcess

pytestmark = pytest.mark.e2e
BUCKS, WORCS = "E06000060", "E10000034"


async def test_console_lists_open_cases_oldest_breach_first(tmp_path):
    chromium = debian_tool("chromium", "chromium")  # installed from Debian's packages when missing
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright", "the playwright package is not installed")
    hub = HubProcess(tmp_path, S117_WORKFLOW_CLOCK_SETTABLE="true", S117_WORKFLOW_SCAN_INTERVAL_SECONDS="0.2")
    engine = create_engine(hub.db_url)
    await create_schema(engine)
    keys = {"trust": (await add_client(engine, "Oxford Health", "RNU", "trust", ["register:write"]))[1],
            "admin": (await add_client(engine, "Hub ops", "HUB", "hub-operator", ["hub:admin"]))[1],
            "R1A": (await add_client(engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1],
            WORCS: (await add_client(engine, "Worcs", WORCS, "council", ["s117:read", "workflows:write"]))[1]}
    await engine.dispose()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            start = date(2025, 1, 6)
            changes = detention_to_move_scenario(random.Random(5), "console", start)
            changes.append({**{k: changes[0][k] for k in ("source_system", "person")},
                            "source_message_id": "console-5", "change_type": "detained",
                            "effective_date": (start + timedelta(days=200)).isoformat(),
                            "legal_status_code": "03", "hospital_ods": "R1A", "residence_la_gss": WORCS})
            for c in changes:  # the re-detention at R1A is reported by R1A (the access policy)
                key = keys["R1A" if c.get("hospital_ods") == "R1A" else "trust"]
                r = await http.post("/v1/register-changes", headers={"X-API-Key": key}, json=c)
                assert r.status_code == 202, r.text
            person_id = r.json()["person_id"]
            for _ in range(100):
                items = (await http.get("/v1/transfers", headers={"X-API-Key": keys[WORCS]})).json()["items"]
                if items:
                    break
                await asyncio.sleep(0.1)
            # Fifteen days on the transfer is overdue; then a dispute opens with its full stage clock.
            r = await http.post("/v1/ops/workflows/clock", headers={"X-API-Key": keys["admin"]},
                                json={"advance_days": 15})
            assert r.status_code == 200
            r = await http.post("/v1/ops/workflows/scan", headers={"X-API-Key": keys["admin"]})
            assert r.status_code == 200
            # This scan records the breach, or the worker process's periodic one (every 0.2 s) did first.
            for _ in range(100):
                items = (await http.get("/v1/transfers", headers={"X-API-Key": keys[WORCS]})).json()["items"]
                if items[0]["state"] == "overdue":
                    break
                await asyncio.sleep(0.1)
            assert items[0]["state"] == "overdue"
            r = await http.post("/v1/disputes", headers={"X-API-Key": keys[WORCS]},
                                json={"person_id": person_id, "kind": "council", "parties": [WORCS, BUCKS],
                                      "reason": "ordinary residence"})
            assert r.status_code == 201, r.text

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                await page.goto(hub.base_url + "/console/workflows")
                await page.fill("#key", keys["admin"])
                await page.click("#signin")
                rows = page.locator("#cases tr[data-case]")
                await rows.nth(1).wait_for(timeout=15_000)
                assert await rows.count() == 2
                first, second = (await rows.nth(0).inner_text()), (await rows.nth(1).inner_text())
                assert first.startswith("transfer") and "overdue" in first and WORCS in first
                assert await rows.nth(0).locator(".bad").count() == 1
                assert second.startswith("dispute") and "working days left" in second
                # A council dispute: local resolution under the 2014 Disputes Regulations (Worcs 4.3.4, 15.4),
                # stage 1 of 2; not Worcestershire's NHS procedure (director level, Worcs 15.5) as before.
                assert "local resolution between the councils" in second and "stage 1 of 2" in second
            finally:
                await browser.close()
    finally:
        hub.stop()
