"""A council that decommissioned its endpoint and says so (`410 Gone`) is sent
nothing more until it resumes its subscription, and then everything that
waited, in order, with the same event numbers. The hub as a real process
(its workers apart), a real HTTP receiver."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import select

from hub.clients import add_client
from hub.store.db import create_engine
from hub.store.schema import operator_actions

from tests.e2e.conftest import SECRET, make_clients
from tests.e2e.test_subscriptions import _Http, _until
from tests.support import HubProcess, Receiver, push_scenario

pytestmark = pytest.mark.e2e
COUNCIL = "E06000060"


def _suspended_gauge(metrics: str) -> float | None:
    m = re.search(r'^s117_subscriptions_suspended\{reason="gone"\} (\S+)$', metrics, re.M)
    return float(m.group(1)) if m else None


@asynccontextmanager
async def _gone(tmp_path, sharing_file, seed: int) -> AsyncIterator[SimpleNamespace]:  # noqa: ANN001
    """The hub as a process, with an operator's key; Buckinghamshire's webhook subscription to a receiver
    answering 410 Gone; the scenario's changes posted, and the subscription seen suspended."""
    receiver = Receiver(secret=SECRET, fail_with=410)
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, admin = await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    await receiver.start()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            h = {"X-API-Key": keys[COUNCIL]}
            sub = (await http.post("/v1/subscriptions", headers=h,
                                   json={"url": receiver.url(COUNCIL), "secret": SECRET})).json()["subscription_id"]
            await push_scenario(_Http(http, keys), seed=seed)

            async def state() -> str:
                return (await http.get(f"/v1/subscriptions/{sub}", headers=h)).json()["state"]

            async def suspended() -> bool:
                return await state() == "suspended"

            await _until(suspended)
            async def caught_up() -> bool:
                s = (await http.get(f"/v1/subscriptions/{sub}/status", headers=h)).json()
                return s["pending"] == 0 and s["last_event_number_acknowledged"] == s["events_since_subscription_start"]

            yield SimpleNamespace(hub=hub, http=http, h=h, sub=sub, receiver=receiver, admin=admin, state=state,
                                  caught_up=caught_up)
    finally:
        hub.stop()
        await receiver.stop()


async def test_a_gone_endpoint_is_suspended_and_resumed_from_its_oldest_pending_message(tmp_path, sharing_file):
    async with _gone(tmp_path, sharing_file, seed=81) as g:
        http, h, sub, receiver = g.http, g.h, g.sub, g.receiver
        # Once suspended, nothing more: the one POST answered 410, the first message.
        assert [(r.headers["s117-event-number"], r.status) for r in receiver.received] == [("1", 410)]
        one = (await http.get(f"/v1/subscriptions/{sub}", headers=h)).json()
        assert one["suspended_reason"] == "gone (HTTP 410)" and one["active"] is True

        async def counted() -> bool:  # the delivery process's gauge, through the API's /metrics
            return _suspended_gauge((await http.get("/metrics")).text) == 1.0

        await _until(counted)
        lines = [line for line in g.hub.logs().splitlines() if "webhook subscription suspended" in line]
        assert len(lines) == 1 and sub in lines[0]

        receiver.fail_with = None  # the endpoint is back
        r = await http.post(f"/v1/subscriptions/{sub}/resume", headers=h)
        assert r.status_code == 200 and r.json()["state"] == "active", r.text
        await _until(g.caught_up)
        last = (await http.get(f"/v1/subscriptions/{sub}/status", headers=h)).json()["events_since_subscription_start"]
        numbers = [int(r.headers["s117-event-number"]) for r in receiver.received]
        assert numbers == [1, *range(1, last + 1)]  # 1 again, then in order: nothing lost, nothing skipped
        assert all(r.signature_ok for r in receiver.received)
        assert await g.state() == "active"

        async def uncounted() -> bool:
            return _suspended_gauge((await http.get("/metrics")).text) == 0.0

        await _until(uncounted)


async def test_the_console_shows_a_suspended_subscription_and_the_operator_resumes_it(tmp_path, sharing_file):
    """In a real browser: the overview's subscriptions say `suspended` with the reason; the operator's
    Resume button (POST /v1/ops/subscriptions/{id}/resume, audited) sends what waited, and the row says
    `active` again. No NHS number on the page, no content-security-policy violation."""
    from playwright.async_api import async_playwright

    from tests.e2e.test_console_csp import csp_violations, watch_csp
    from tests.servers.tools import debian_tool

    chromium = debian_tool("chromium", "chromium")
    async with _gone(tmp_path, sharing_file, seed=82) as g:
        sub = g.sub
        g.receiver.fail_with = None  # the endpoint is back; the operator resumes it from the console
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            reported = await watch_csp(page)
            await page.goto(f"{g.hub.base_url}/console")
            await page.fill("#key", g.admin)
            await page.click("#signin")
            button = page.locator(f"#subs button[data-resume='{sub}']")
            await button.wait_for(timeout=30_000)
            # Read in one go: the page redraws the table on every refresh.
            heads, cells = await page.evaluate(f"""() => {{
                const b = document.querySelector("#subs button[data-resume='{sub}']");
                return [[...document.querySelectorAll("#subs table th")].map(e => e.innerText),
                        [...b.closest("tr").querySelectorAll("td")].map(e => e.innerText)];
            }}""")
            assert cells[heads.index("state")].startswith("suspended gone (HTTP 410)"), (heads, cells)
            await button.click()
            await button.wait_for(state="detached", timeout=30_000)  # the row redrawn: active
            page_text = await page.content()
            assert await csp_violations(page, reported) == []
            await browser.close()
        await _until(g.caught_up)
        assert await g.state() == "active"
        engine = create_engine(g.hub.db_url)
        async with engine.connect() as conn:
            actions = (await conn.execute(select(operator_actions.c.action, operator_actions.c.target))).all()
        await engine.dispose()
        assert ("resume-subscription", sub) in [tuple(a) for a in actions]  # the operator's resume, audited
        assert not re.search(r"\b\d{10}\b", page_text)  # no NHS number on the page
        assert [r.headers["s117-event-number"] for r in g.receiver.received][:2] == ["1", "1"]
