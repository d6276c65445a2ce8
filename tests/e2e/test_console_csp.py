"""The console pages under their Content-Security-Policy in a real browser
(Playwright driving Debian's chromium): each page and its script load with no
violation reported, the page signs in and draws (so its script ran), and the
policy is in force (an inline handler slipped into the page is refused and
reported: the watch below sees violations). Helpers shared with
tests/e2e/test_console_browser.py."""

from __future__ import annotations

import pytest

from hub.clients import add_client
from hub.store.db import create_engine, create_schema
from tests.servers import unavailable
from tests.servers.tools import debian_tool
from tests.support import HubProcess

pytestmark = pytest.mark.e2e

# Installed before any script of the page's runs (CDP, not subject to the page's policy).
WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline")));
"""


async def watch_csp(page) -> list[str]:  # noqa: ANN001
    """Violations reported to the browser console (chromium: "Refused to ...
    Content Security Policy ..."), collected from now on; the page's own
    `securitypolicyviolation` events are read with `csp_violations`."""
    reported: list[str] = []
    page.on("console", lambda m: reported.append(m.text) if "Content Security Policy" in m.text else None)
    await page.add_init_script(WATCH)
    return reported


async def csp_violations(page, reported: list[str]) -> list[str]:  # noqa: ANN001
    return reported + await page.evaluate("window.__cspViolations")


async def test_the_console_pages_run_under_their_policy_with_no_violation(tmp_path):
    chromium = debian_tool("chromium", "chromium")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright", "the playwright package is not installed")
    hub = HubProcess(tmp_path)
    engine = create_engine(hub.db_url)
    await create_schema(engine)
    _, admin = await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    await hub.start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            for path, ready in (("/console", "#hub div"), ("/console/workflows", "#cases p, #cases table")):
                page = await browser.new_page()
                reported = await watch_csp(page)
                scripts = []
                page.on("response", lambda r: scripts.append(r) if r.url.endswith(".js") else None)
                response = await page.goto(f"{hub.base_url}{path}")
                assert response.headers["x-frame-options"] == "DENY"
                assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
                await page.fill("#key", admin)
                await page.click("#signin")
                await page.wait_for_selector(ready)
                await page.wait_for_timeout(300)
                assert [r.status for r in scripts] == [200] and scripts[0].headers["x-content-type-options"] == "nosniff"
                assert await csp_violations(page, reported) == [], path
                # The watch works and the policy holds: an inline handler put into the page is refused.
                await page.evaluate("""document.body.insertAdjacentHTML("beforeend",
                    '<img src="data:," onload="window.__ran = 1">')""")
                await page.wait_for_timeout(300)
                assert await page.evaluate("window.__ran") is None
                assert any("script-src" in v for v in await csp_violations(page, reported)), path
                await page.close()
            await browser.close()
    finally:
        hub.stop()
