"""Outside review 31: the console pages' accessibility as an NHS digital accessibility auditor checks it
(public-sector bodies meet WCAG 2.2 AA), in a real browser (Playwright driving Debian's chromium) against one
real hub for the module, with something in every panel: a subscription whose deliveries were given up, a
handler's dead letter, a quarantined input, an overdue transfer and a dispute.

Keyboard alone: signed in, the sections' tabs moved by arrow keys, a Retry pressed, the replay form opened and
closed with focus going back where it came from, and the focus kept on its button while the page redraws its
tables every 5 s, which a Pause updates toggle stops; a visible focus indicator on everything reached.
Labels, table captions and header cells, landmarks, one status region that says what an action did and
stays silent while the panels poll. Reflow at 320 CSS px and text at 200% (the browser's font size setting)
without the page scrolling sideways; text contrast at least 4.5:1, computed from the browser's styles; chart
series told apart without colour."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import yaml
from sqlalchemy import text

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario
from hub.store.db import create_engine
from tests.e2e.conftest import SECRET, SHARING, make_clients
from tests.e2e.test_console_csp import csp_violations, watch_csp
from tests.servers import unavailable
from tests.servers.tools import debian_tool
from tests.support import HubProcess, free_port

pytestmark = pytest.mark.e2e
WORCS, BUCKS = "E10000034", "E06000060"

# Every visible text's contrast against the background it is drawn on (the nearest opaque ancestor's), as
# WCAG 2.2 computes it; SVG text (fill, not color) is read from its fill. Disabled controls are exempt.
CONTRAST = """() => {
  const rgba = c => (c.match(/[\\d.]+/g) || ["0", "0", "0", "0"]).map(Number);
  const lum = ([r, g, b]) => [r, g, b]
    .map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const back = el => { for (let e = el; e; e = e.parentElement) { const c = rgba(getComputedStyle(e).backgroundColor);
      if ((c[3] ?? 1) > 0.5) return c; }
    return [255, 255, 255]; };
  const low = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const t = walk.currentNode, el = t.parentElement;
    if (!t.textContent.trim() || !el.checkVisibility({visibilityProperty: true}) || el.closest(":disabled")) continue;
    const style = getComputedStyle(el);
    const fg = el.closest("svg") ? rgba(style.fill) : rgba(style.color);
    const a = lum(fg), b = lum(back(el.closest("svg") || el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(`${t.textContent.trim().slice(0, 30)} (${style.color} ${ratio.toFixed(2)})`);
  }
  return low; }"""
# Tables: each names itself (a caption) and heads its columns (th with scope, no empty heading).
TABLES = """() => [...document.querySelectorAll("table")].filter(t => t.checkVisibility()).flatMap(t => {
  const where = (t.closest("[id]") || {}).id, heads = [...t.querySelectorAll("th")], bad = [];
  if (!t.caption || !t.caption.textContent.trim()) bad.push(`${where}: no caption`);
  if (!heads.length) bad.push(`${where}: no header cells`);
  heads.filter(h => !h.textContent.trim()).forEach(() => bad.push(`${where}: an empty header cell`));
  heads.filter(h => !h.scope).forEach(h => bad.push(`${where}: th ${h.textContent.trim()} without scope`));
  return bad; })"""
# Form controls with a programmatic label (a <label>, aria-label or aria-labelledby; a placeholder is not one).
UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")].filter(e => e.checkVisibility())
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.getAttribute("aria-labelledby"))
  .map(e => e.id || e.outerHTML.slice(0, 60))"""
# Visible content outside every landmark (banner, nav, main), and the landmarks shown.
LANDMARKS = """() => {
  const marks = "header, nav, main, [role=banner], [role=navigation], [role=main]";
  const outside = [...document.body.querySelectorAll("p, h1, h2, h3, table, input, select, button, a")]
    .filter(e => e.checkVisibility() && !e.closest(marks)).map(e => e.outerHTML.slice(0, 50));
  const mains = [...document.querySelectorAll("main, [role=main]")].filter(e => e.checkVisibility()).length;
  const navs = [...document.querySelectorAll("nav:not([role]), [role=navigation]")]
    .filter(e => e.checkVisibility()).length;
  const levels = [...document.querySelectorAll("h1, h2, h3, h4")]
    .filter(e => e.checkVisibility()).map(e => +e.tagName[1]);
  const skipped = levels.filter((l, i) => i && l > levels[i - 1] + 1);
  return {outside, mains, navs, lang: document.documentElement.lang, first: levels[0], skipped}; }"""
# Each change to a live region's text (role status/alert/log or aria-live), as announced, from now on.
WATCH_LIVE = """() => { window.__said = []; window.__liveTargets = new Set();
  const live = n => (n.nodeType === 1 ? n : n.parentElement)
    ?.closest("[aria-live], [role=status], [role=alert], [role=log]");
  new MutationObserver(ms => { for (const m of ms) { const r = live(m.target);
      if (r && r.getAttribute("aria-live") !== "off") {
        window.__said.push(r.textContent.trim()); window.__liveTargets.add(r.id || r.tagName); } } })
    .observe(document.body, {subtree: true, childList: true, characterData: true}); }"""
FOCUSED = """() => { const e = document.activeElement; if (!e || e === document.body) return null;
  const s = getComputedStyle(e);
  return {tag: e.tagName, id: e.id, data: Object.assign({}, e.dataset), text: e.textContent.trim().slice(0, 40),
          outline: s.outlineStyle, width: parseFloat(s.outlineWidth), colour: s.outlineColor,
          visible: e.checkVisibility(), inside: !!e.closest("#app, main")}; }"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One hub for the module, with something in every panel the review drives."""
    tmp = tmp_path_factory.mktemp("a11y")

    async def seed() -> tuple[HubProcess, dict]:
        (tmp / "sharing.yaml").write_text(yaml.safe_dump(SHARING))
        hub = HubProcess(tmp, sharing_path=tmp / "sharing.yaml", S117_WEBHOOK_MAX_ATTEMPTS="1",
                         S117_WORKFLOW_CLOCK_SETTABLE="true")
        keys = await make_clients(hub.db_url)
        engine = create_engine(hub.db_url)
        keys["admin"] = (await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"]))[1]
        keys["R1A"] = (await add_client(engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1]
        keys["worcs"] = (await add_client(engine, "Worcs", WORCS, "council", ["s117:read", "workflows:write"]))[1]
        await hub.start()
        ops = {"X-API-Key": keys["admin"]}
        try:
            async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
                # Nothing listens there: each delivery is refused, given up after its one attempt.
                r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[BUCKS]},
                                    json={"url": f"http://127.0.0.1:{free_port()}/gone", "secret": SECRET})
                assert r.status_code == 201, r.text
                start = date(2025, 1, 6)
                changes = detention_to_move_scenario(random.Random(5), "a11y31", start)
                changes.append({**{k: changes[0][k] for k in ("source_system", "person")},
                                "source_message_id": "a11y31-5", "change_type": "detained",
                                "effective_date": (start + timedelta(days=200)).isoformat(),
                                "legal_status_code": "03", "hospital_ods": "R1A", "residence_la_gss": WORCS})
                for c in changes:
                    key = keys["R1A" if c.get("hospital_ods") == "R1A" else "trust"]
                    r = await http.post("/v1/register-changes", headers={"X-API-Key": key}, json=c)
                    assert r.status_code == 202, r.text
                person_id = r.json()["person_id"]
                bad = {**changes[0], "source_message_id": "a11y31-bad", "hospital_ods": "not an ODS code"}
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=bad)
                assert r.status_code == 422, r.text
                for _ in range(200):
                    dead = (await http.get("/v1/ops/dead-letters", headers=ops)).json()["deliveries"]
                    cases = (await http.get("/v1/transfers", headers=ops)).json()["items"]
                    if dead and cases:
                        break
                    await asyncio.sleep(0.1)
                assert dead and cases, "no delivery given up, or no transfer opened"
                r = await http.post("/v1/ops/workflows/clock", headers=ops, json={"advance_days": 15})
                assert r.status_code == 200, r.text
                r = await http.post("/v1/ops/workflows/scan", headers=ops)
                assert r.status_code == 200, r.text
                r = await http.post("/v1/disputes", headers={"X-API-Key": keys["worcs"]},
                                    json={"person_id": person_id, "kind": "council", "parties": [WORCS, BUCKS],
                                          "reason": "ordinary residence"})
                assert r.status_code == 201, r.text
            async with engine.begin() as conn:  # an event a handler could not process
                ev = (await conn.execute(text('SELECT event_id, "offset", topic FROM bus_messages '
                                              'ORDER BY "offset" LIMIT 1'))).one()
                await conn.execute(text('INSERT INTO dead_letters (topic, group_id, "offset", event_id, handler, '
                                        "reason, at) VALUES (:t, 'dispatcher', :o, :e, 'dispatcher', "
                                        "'ValueError', :at)"),
                                   {"t": ev.topic, "o": ev.offset, "e": ev.event_id, "at": datetime.now(UTC)})
        except BaseException:
            hub.stop()
            raise
        finally:
            await engine.dispose()
        return hub, keys

    hub, keys = asyncio.run(seed())
    try:
        yield hub, keys
    finally:
        hub.stop()


async def browser_for(pw):  # noqa: ANN001
    chromium = debian_tool("chromium", "chromium")
    return await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])


async def poll(page, js: str, want, timeout: float = 15.0):  # noqa: ANN001
    """The page's policy refuses eval, so a predicate is polled from here rather than by wait_for_function."""
    for _ in range(int(timeout * 10)):
        got = await page.evaluate(js)
        if want(got):
            return got
        await page.wait_for_timeout(100)
    raise AssertionError(f"{js}: still {got!r}")


# What each section draws once its answers are in (the tab's panel is drawn after its fetches).
DRAWN = {"overview": "#dead table", "trace": "#tracevalue", "charts": "#spendout > *", "withheld": "#withheldout > *",
         "audit": "#verify", "lists": "#exports > *"}


async def open_tab(page, tab: str) -> None:  # noqa: ANN001
    await page.click(f"[role=tab][data-tab={tab}]")
    await page.locator(f"#{tab}").wait_for()
    await page.wait_for_selector(DRAWN[tab])


async def sign_in_by_keyboard(page, base: str, path: str, key: str) -> None:  # noqa: ANN001
    await page.goto(base + path)
    for _ in range(3):  # the key's box, named by its label, after the header's link (the workflows page)
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "key":
            break
        assert await page.evaluate("!!document.activeElement.closest('header')")
    assert await page.evaluate("document.activeElement.id") == "key"
    assert await page.get_by_label("API key").count() == 1
    await page.keyboard.type(key)
    await page.keyboard.press("Enter")


async def test_the_console_by_keyboard_alone(hub):
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright", "the playwright package is not installed")
    hub, keys = hub
    async with async_playwright() as pw:
        browser = await browser_for(pw)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        reported = await watch_csp(page)
        # A wrong key: said at once (an alert), not only painted red beside the button.
        await sign_in_by_keyboard(page, hub.base_url, "/console", "s117_not-a-key")
        alert = page.locator("#err")
        await alert.filter(has_text="401").wait_for()
        assert await alert.get_attribute("role") == "alert"
        await page.fill("#key", "")
        await page.focus("#key")
        await page.keyboard.type(keys["admin"])
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#dead table")
        # Signed in, the focus is in the console (it was left on the page's body, the sign-in box gone).
        focused = await page.evaluate(FOCUSED)
        assert focused and focused["inside"] and focused["visible"], focused

        # The sections are tabs in a navigation landmark: arrow keys move between them, each tab names its panel.
        await page.focus("[role=tab][aria-selected=true]")
        await page.keyboard.press("ArrowRight")
        assert (await page.evaluate(FOCUSED))["data"] == {"tab": "trace"}
        assert not await page.locator("#trace").is_hidden() and await page.locator("#overview").is_hidden()
        for tab in await page.locator("[role=tab]").all():
            panel = await tab.get_attribute("aria-controls")
            assert panel and await page.locator(f"#{panel}").get_attribute("role") == "tabpanel", panel
            assert await tab.get_attribute("tabindex") == ("0" if await tab.get_attribute("aria-selected") == "true"
                                                           else "-1")
        assert await page.locator("nav [role=tablist]").count() == 1
        await page.keyboard.press("Home")
        assert (await page.evaluate(FOCUSED))["data"] == {"tab": "overview"}
        await page.wait_for_selector("#dead button[data-retry]")

        # Every control reached by Tab, in the page's order, shows where the focus is: a solid outline at least
        # 2 px wide whose colour stands out 3:1 from the white panels (the browser's own ring is 1 px).
        seen = []
        for _ in range(40):
            await page.keyboard.press("Tab")
            f = await page.evaluate(FOCUSED)
            if f is None or f in seen:  # past the last control (out of the page), or round again
                break
            assert f["visible"], (seen, f)
            seen.append(f)
            assert f["outline"] == "solid" and f["width"] >= 2, f
        assert any("retry" in f["data"] for f in seen) and any("replaySub" in f["data"] for f in seen), seen

        # The page redraws its tables every 5 s: a Retry reached by keyboard keeps the focus across a redraw
        # (it fell to the page's body, and the next Tab started again from the top). Nothing is announced then.
        await page.evaluate(WATCH_LIVE)
        retry = await page.locator("#dead button[data-retry]").first.get_attribute("data-retry")
        await page.focus(f"#dead button[data-retry='{retry}']")
        before = await page.inner_text("#updated")
        await poll(page, "document.querySelector('#updated').textContent", lambda t: t != before, timeout=8)
        await page.wait_for_timeout(200)
        assert (await page.evaluate(FOCUSED) or {}).get("data") == {"retry": retry}
        assert await page.evaluate("window.__said") == [], "a live region spoke while the panels polled"
        # No panel that polls is a live region itself (each redraw would be read out again).
        assert await page.locator("#overview [aria-live], #overview [role=status], #updated[aria-live]").count() == 0

        # Pressed by keyboard: the outcome is announced in the one status region, once per change of state,
        # not once a second while the page follows the delivery.
        await page.keyboard.press("Enter")
        said = await poll(page, "window.__said", lambda s: any("given up again" in x for x in s))
        assert all("retry" in s for s in said) and len(said) <= 4, said
        assert await page.evaluate("[...window.__liveTargets]") == ["announce"]
        assert await page.get_attribute("#announce", "role") == "status"

        # Content that updates itself every 5 s can be paused (WCAG 2.2.2): a toggle in the header, by keyboard.
        await page.wait_for_timeout(300)  # (the page's own redraw once the retry is followed)
        polled: list[str] = []
        page.on("request", lambda q: polled.append(q.url) if "/v1/ops/flows" in q.url else None)
        await page.focus("#pause")
        await page.keyboard.press("Enter")
        assert await page.get_attribute("#pause", "aria-pressed") == "true"
        await page.wait_for_timeout(5500)
        assert polled == [] and (await page.inner_text("#updated")).endswith("updates paused")
        await page.keyboard.press("Enter")
        assert await page.get_attribute("#pause", "aria-pressed") == "false"
        await poll(page, "document.querySelector('#updated').textContent", lambda t: not t.endswith("paused"))

        # The replay form: opened by keyboard, the focus goes into it; Escape (or Cancel) closes it and the focus
        # returns to the row's Replay… button.
        for close in ("Escape", "cancel"):
            sub = page.locator("#subs button[data-replay-sub]").first
            sub_id = await sub.get_attribute("data-replay-sub")
            await sub.focus()
            await page.keyboard.press("Enter")
            assert (await page.evaluate(FOCUSED))["id"] == "subreplaysince"
            if close == "Escape":
                await page.keyboard.press("Escape")
            else:
                await page.focus("#subreplaycancel")
                await page.keyboard.press("Enter")
            assert await page.locator("#subreplay").is_hidden()
            assert (await page.evaluate(FOCUSED))["data"].get("replaySub") == sub_id, close

        # A trace by keyboard: its select and box are labelled, its outcome announced, its timeline headed.
        await page.focus("[role=tab][aria-selected=true]")
        await page.keyboard.press("ArrowRight")
        assert await page.evaluate(UNLABELLED) == []
        await page.focus("#tracevalue")
        await page.keyboard.type("a11y31-bad")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#traceout table")
        await poll(page, "window.__said", lambda s: any("change(s)" in x for x in s))
        assert await page.evaluate(TABLES) == []
        assert await csp_violations(page, reported) == []
        await browser.close()


async def test_the_pages_name_their_parts_and_read_in_contrast(hub):
    from playwright.async_api import async_playwright

    hub, keys = hub
    async with async_playwright() as pw:
        browser = await browser_for(pw)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        reported = await watch_csp(page)
        await page.goto(hub.base_url + "/console")
        marks = await page.evaluate(LANDMARKS)  # the sign-in page: its content in a main landmark
        assert marks["outside"] == [] and marks["mains"] == 1 and marks["lang"] == "en", marks
        assert await page.evaluate(UNLABELLED) == []
        await page.fill("#key", keys["admin"])
        await page.click("#signin")
        await page.wait_for_selector("#dead table")
        await page.wait_for_selector("#quarantine table")
        for tab in ("overview", "charts", "withheld", "audit", "lists"):
            await open_tab(page, tab)
            marks = await page.evaluate(LANDMARKS)
            assert (marks["outside"], marks["mains"], marks["navs"], marks["first"], marks["skipped"]) == \
                ([], 1, 1, 1, []), (tab, marks)
            assert await page.evaluate(TABLES) == [], tab
            assert await page.evaluate(UNLABELLED) == [], tab
            assert await page.evaluate(CONTRAST) == [], tab
        # Charts: several series in one chart are told apart by their line's dash as well as its colour, and the
        # chart says in words what it shows (each series and its latest value), not only its title.
        await page.click("[role=tab][data-tab=charts]")
        await page.wait_for_selector("#chartsout svg")
        charts = await page.evaluate("""() => [...document.querySelectorAll('#charts svg')].map(s => ({
            label: s.getAttribute('aria-label'),
            dashes: [...s.querySelectorAll('polyline')].map(p => p.getAttribute('stroke-dasharray') || 'solid')}))""")
        several = [c for c in charts if len(c["dashes"]) > 1]
        assert several, charts
        for c in several:
            assert len(set(c["dashes"])) == len(c["dashes"]), c
        for c in several:
            assert c["label"].count("latest") + c["label"].count("no data") == len(c["dashes"]), c

        # The transfers and disputes page: the same.
        page2 = await browser.new_page(viewport={"width": 1280, "height": 900})
        await sign_in_by_keyboard(page2, hub.base_url, "/console/workflows", keys["admin"])
        await page2.wait_for_selector("#cases table")
        focused = await page2.evaluate(FOCUSED)
        assert focused and focused["inside"], focused
        marks = await page2.evaluate(LANDMARKS)
        assert (marks["outside"], marks["mains"], marks["first"], marks["skipped"]) == ([], 1, 1, []), marks
        assert await page2.evaluate(TABLES) == []
        assert await page2.evaluate(CONTRAST) == []
        await page2.click("#pause")
        assert await page2.get_attribute("#pause", "aria-pressed") == "true"
        # An overdue case says so in words, not by its red alone.
        assert "overdue" in await page2.locator("#cases tr[data-case] .bad").first.inner_text()
        assert await csp_violations(page, reported) == []
        await browser.close()


async def test_reflow_at_320_px_and_text_at_200_percent(hub):
    from playwright.async_api import async_playwright

    hub, keys = hub
    wide = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    async with async_playwright() as pw:
        browser = await browser_for(pw)
        # 320 CSS px wide (1280 px at 400% zoom): the page does not scroll sideways; a wide table scrolls in its
        # own region, which takes the keyboard's focus (to scroll it by arrow keys) and is named.
        page = await browser.new_page(viewport={"width": 320, "height": 800})
        await page.goto(hub.base_url + "/console")
        await page.fill("#key", keys["admin"])
        await page.click("#signin")
        await page.wait_for_selector("#dead table")
        await page.wait_for_selector("#quarantine table")
        for tab in ("overview", "trace", "charts", "withheld", "audit", "lists"):
            await open_tab(page, tab)
            assert await page.evaluate(wide) == 0, tab
        await open_tab(page, "overview")
        # (a wide table scrolls in its panel, which says so to the keyboard and a screen reader)
        regions = await page.evaluate("""() => [...document.querySelectorAll('#overview div')]
            .filter(d => d.checkVisibility() && d.scrollWidth > d.clientWidth + 1
                         && getComputedStyle(d).overflowX === 'auto')
            .map(d => ({id: d.id, tabindex: d.getAttribute('tabindex'), role: d.getAttribute('role'),
                        name: d.getAttribute('aria-label')}))""")
        assert "subs" in [r["id"] for r in regions], regions
        assert all(r["tabindex"] == "0" and r["role"] == "region" and r["name"] for r in regions), regions
        page2 = await browser.new_page(viewport={"width": 320, "height": 800})
        await page2.goto(hub.base_url + "/console/workflows")
        await page2.fill("#key", keys["admin"])
        await page2.click("#signin")
        await page2.wait_for_selector("#cases table")
        assert await page2.evaluate(wide) == 0

        # Text at 200%: the browser's font size set to 32 px (16 by default). The pages' text follows it (it was
        # set in px, which that setting leaves alone) and the page still does not scroll sideways at 1280 px.
        for path, ready in (("/console", "#dead table"), ("/console/workflows", "#cases table")):
            page3 = await browser.new_page(viewport={"width": 1280, "height": 900})
            cdp = await page3.context.new_cdp_session(page3)
            await cdp.send("Page.setFontSizes", {"fontSizes": {"standard": 32}})
            await page3.goto(hub.base_url + path)
            await page3.fill("#key", keys["admin"])
            await page3.click("#signin")
            await page3.wait_for_selector(ready)
            sizes = await page3.evaluate("""() => ['body', 'h1', 'td', 'button'].map(s =>
                parseFloat(getComputedStyle(document.querySelector(s)).fontSize))""")
            assert sizes[0] >= 28 and sizes[1] >= 36 and sizes[2] >= 24 and sizes[3] >= 24, (path, sizes)
            assert await page3.evaluate(wide) == 0, path
        await browser.close()
