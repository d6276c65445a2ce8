"""Outside review 30 of the integration console, in a real browser (Debian's chromium driven by Playwright)
against a real hub: a webhook subscriber that fails (its delivery given up), a dead-lettered event, an input
held in quarantine whose source message id is markup an attacker chose.

The engineer on call answers from the page alone: for whom a delivery was given up (organisation, channel),
since when, why; the total of open dead letters agrees with the lists beneath it; what is quarantined and
why, traced in one press; a Replay or Retry pressed (twice, in a hurry) sends one request and says in the
page what became of it, the retried delivery followed until it is given up again. Nothing the attacker
wrote runs; nothing personal is shown."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import yaml
from sqlalchemy import text

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario
from hub.store.db import create_engine
from tests.e2e.conftest import SECRET, SHARING, make_clients, subscribe_webhook
from tests.e2e.test_console_csp import csp_violations, watch_csp
from tests.servers.tools import debian_tool
from tests.support import HubProcess, Receiver

pytestmark = pytest.mark.e2e
XSS = '<img src=x onerror="window.__pwned=1">'
# A table's rows as {heading: text}, read in one go (the page redraws its tables on every refresh).
ROWS = """(sel) => { const t = document.querySelector(sel);
  const heads = [...t.querySelectorAll("th")].map(e => e.innerText);
  return [...t.querySelectorAll("tr")].slice(1).map(tr => Object.fromEntries(
    [...tr.querySelectorAll("td")].map((td, i) => [heads[i], td.innerText]))); }"""


async def test_the_on_call_engineer_sees_for_whom_and_why_and_what_each_action_did(tmp_path):
    from playwright.async_api import async_playwright

    chromium = debian_tool("chromium", "chromium")
    (tmp_path / "sharing.yaml").write_text(yaml.safe_dump(SHARING))
    receiver = Receiver(secret=SECRET, fail_with=503)  # down for good: its delivery is given up
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=tmp_path / "sharing.yaml", S117_WEBHOOK_MAX_ATTEMPTS="1")
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, admin = await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"])
    ops = {"X-API-Key": admin}
    await hub.start()
    run = uuid.uuid4().hex[:8]
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            await subscribe_webhook(http, keys, receiver)
            icb = await subscribe_webhook(http, keys, receiver, "QU9")
            host = await subscribe_webhook(http, keys, receiver, "E10000034")
            change = detention_to_move_scenario(random.Random(3), f"rv30-{run}", date(2025, 1, 6))[0]
            change["legal_status_code"] = "03"
            person = change["person"]
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
            assert r.status_code == 202, r.text
            bad = {**change, "source_message_id": XSS, "hospital_ods": "not an ODS code"}
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=bad)
            assert r.status_code == 422, r.text
            for _ in range(200):
                dead = (await http.get("/v1/ops/dead-letters", headers=ops)).json()["deliveries"]
                if len(dead) == 2:
                    break
                await asyncio.sleep(0.1)
            assert len(dead) == 2, "the failing subscribers' deliveries were never given up"
        # An event a handler could not process (as the dispatcher records one), its reason markup.
        async with engine.begin() as conn:
            ev = (await conn.execute(text('SELECT event_id, "offset", topic FROM bus_messages ORDER BY "offset" '
                                          "LIMIT 1"))).one()
            await conn.execute(text('INSERT INTO dead_letters (topic, group_id, "offset", event_id, handler, reason, at) '
                                    "VALUES (:t, 'dispatcher', :o, :e, 'dispatcher', :r, :at)"),
                               {"t": ev.topic, "o": ev.offset, "e": ev.event_id, "r": "ValueError " + XSS,
                                "at": datetime.now(UTC)})
            # The ICB's subscriber still being retried (the default: until it is back), next in an hour.
            await conn.execute(text("UPDATE deliveries SET status = 'pending', attempts = 3, last_error = 'HTTP 503', "
                                    "next_attempt_at = :at WHERE subscription_id = :s"),
                               {"s": icb, "at": datetime.now(UTC) + timedelta(hours=1)})
            # The host council's endpoint answered 410 Gone (as hub/delivery/leases.py suspends one).
            gone_at = datetime(2026, 3, 1, 2, 47, tzinfo=UTC)
            await conn.execute(text("UPDATE subscriptions SET suspended_at = :at, suspended_reason = 'gone' "
                                    "WHERE subscription_id = :s"), {"s": host, "at": gone_at})
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            dead = (await http.get("/v1/ops/dead-letters", headers=ops)).json()["deliveries"]
        assert [d["org_code"] for d in dead] == ["E06000060"]

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = await browser.new_page(viewport={"width": 1400, "height": 1600})
            reported = await watch_csp(page)
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
            logged: list[str] = []
            page.on("console", lambda m: logged.append(m.text))
            posts: list[str] = []
            page.on("request", lambda q: posts.append(q.url) if q.method == "POST" else None)
            await page.goto(f"{hub.base_url}/console")
            await page.fill("#key", admin)
            await page.click("#signin")
            await page.wait_for_selector("#dead table")
            # The key is in this tab's sessionStorage alone: not left in the page, the URL or localStorage.
            assert await page.input_value("#key") == ""
            assert admin not in page.url and await page.evaluate("localStorage.length") == 0
            # The tables' times are UTC, and the page says so (its clock was the browser's local time).
            for _ in range(100):  # (a polled predicate would be eval, which the page's policy refuses)
                if await page.inner_text("#updated"):
                    break
                await page.wait_for_timeout(100)
            assert (await page.inner_text("#updated")).endswith("UTC · all times UTC")

            # A subscriber still being retried: why its queue waits, for how long, when it is tried next.
            rows = await page.evaluate(ROWS, "#subs table")
            waiting = next(r for r in rows if r["organisation"] == "QU9")
            assert waiting["last error"].startswith("HTTP 503 next try "), waiting
            assert waiting["attempts"] == "3" and waiting["oldest pending"].endswith((" s", " min")), waiting

            # A suspended subscription says since when, beside its Resume.
            gone = next(r for r in rows if r["organisation"] == "E10000034")
            assert gone["state"].startswith("suspended gone since 2026-03-01 02:47:00"), gone

            # The total agrees with the lists: one handler's dead letter and the delivery given up.
            total = await page.inner_text("#deadcount")
            assert total == str(1 + len(dead)), total
            panel = await page.inner_text("#dead")
            [row] = await page.evaluate(ROWS, "#dead table:nth-of-type(2)")
            assert (row["organisation"], row["channel"], row["last error"]) == ("E06000060", "webhook", "HTTP 503"), row
            assert row["queued"] == dead[0]["created_at"][:19].replace("T", " ")
            assert "since" in await page.locator("#dead table").nth(0).locator("th").all_inner_texts()
            assert XSS in panel  # shown as text

            # Quarantined input: source, channel, the field and why; the attacker's id as text; traced in one press.
            quarantine = await page.inner_text("#quarantine")
            assert "held now: 1" in quarantine and "hospital_ods" in quarantine and XSS in quarantine
            assert "not an ODS code" not in quarantine  # the reason names the field, never its value
            await page.click("#quarantine button[data-trace-message]")
            await page.wait_for_selector("#traceout tr.stage-quarantined")
            assert "hospital_ods" in await page.inner_text("#traceout")
            await page.click("nav button[data-tab=overview]")
            await page.wait_for_selector("#dead button[data-replay]")

            # Replay pressed twice in a hurry: one request, its outcome in the page, no 409 dialog.
            button = page.locator("#dead button[data-replay]")
            await button.dispatch_event("click")
            await button.dispatch_event("click")
            await page.wait_for_selector("#actions .action-outcome.ok")
            assert sum("/replay" in u for u in posts) == 1, posts
            assert "handler dispatcher ran again" in await page.inner_text("#actions")

            # Retry the delivery given up: followed until the still-failing subscriber has it given up again.
            await page.click(f"#dead button[data-retry='{dead[0]['delivery_id']}']")
            for _ in range(300):
                actions = await page.inner_text("#actions")
                if "given up again" in actions:
                    break
                await page.wait_for_timeout(100)
            assert "retry" in actions and "E06000060" in actions and "HTTP 503" in actions, actions

            # The subscriber lost data: its messages since an hour ago put back in its queue, from its row.
            await page.click(f"#subs button[data-replay-sub='{dead[0]['subscription_id']}']")
            assert "E06000060 webhook" in await page.inner_text("#subreplay")
            await page.click("#subreplay button[type=submit]")
            for _ in range(100):
                actions = await page.inner_text("#actions")
                if "put back" in actions:
                    break
                await page.wait_for_timeout(100)
            assert "replay subscription" in actions and "1 message(s) put back to be sent" in actions, actions

            assert dialogs == []
            # Every answer the page asked for was a success: nothing in the browser's console (the icon was a 404).
            assert not [m for m in logged if "Failed to load resource" in m], logged
            assert await page.evaluate("window.__pwned") is None
            content = await page.content()
            assert not [v for v in person.values() if v in content]
            assert await csp_violations(page, reported) == []
            await browser.close()
        async with engine.connect() as conn:
            # The engineer's actions from the page (the hub's own record of the reference data in use, made at
            # a start that finds people on the register, is not one: hub/refdata_retell.py).
            done = (await conn.execute(text("SELECT action, COUNT(*) FROM operator_actions "
                                            "WHERE client_id <> 'hub:reference-data' GROUP BY action"))).all()
        assert dict(done) == {"replay-dead-letter": 1, "retry-delivery": 1,
                              "replay-subscription": 1}, done
    finally:
        hub.stop()
        await receiver.stop()
        await engine.dispose()
