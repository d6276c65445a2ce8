"""The console in a real browser (Debian's chromium driven by Playwright):
an ADT A01/A03 sent over MLLP is traced from its ACK to its webhook delivery;
a withheld disclosure appears for a body without an agreement; the charts
draw; the audit chain verifies. Screenshots are compared with checked-in
references within a tolerance (dynamic text such as ids and times masked);
S117_UPDATE_SCREENSHOTS=1 rewrites the references."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from hub.clients import add_client
from hub.store.db import create_engine
from tests.e2e.conftest import SECRET, SHARING, make_clients, subscribe_webhook
from tests.e2e.test_console_csp import csp_violations, watch_csp
from tests.e2e.test_mllp import Engine, fixture, msa, nhs_numbers
from tests.servers.tools import debian_tool
from tests.support import HubProcess, Receiver, free_port

pytestmark = pytest.mark.e2e
SHOTS = Path(__file__).resolve().parent / "screenshots"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"  # the README's pictures, refreshed with the references


async def document(page, name: str) -> None:  # noqa: ANN001
    if os.environ.get("S117_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(DOCS / name), full_page=True)
TOLERANCE = 0.03  # share of pixels that may differ (font hinting, anti-aliasing)


def compare(png: bytes, name: str) -> None:
    from io import BytesIO

    from PIL import Image, ImageChops

    ref = SHOTS / name
    if os.environ.get("S117_UPDATE_SCREENSHOTS") == "1":
        ref.write_bytes(png)
    assert ref.exists(), f"no reference screenshot {name}: run with S117_UPDATE_SCREENSHOTS=1 once and check it in"
    got, want = Image.open(BytesIO(png)).convert("RGB"), Image.open(ref).convert("RGB")
    assert got.size == want.size, f"{name}: size {got.size} != reference {want.size}"
    diff = ImageChops.difference(got, want).convert("L").point(lambda v: 255 if v > 40 else 0)
    changed = diff.histogram()[255] / (got.size[0] * got.size[1])
    assert changed <= TOLERANCE, f"{name}: {changed:.1%} of pixels differ from the reference"


async def test_mllp_change_traced_to_its_webhook_delivery_in_the_browser(tmp_path):
    from playwright.async_api import async_playwright

    chromium = debian_tool("chromium", "chromium")
    # No agreement for the ICB: its events are withheld, and the console must show it.
    sharing = {**SHARING, "agreements": [
        {**a, "recipients": [r for r in a["recipients"] if r["org_code"] != "QU9"]} for a in SHARING["agreements"]]}
    (tmp_path / "sharing.yaml").write_text(yaml.safe_dump(sharing))
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    mllp_port = free_port()
    hub = HubProcess(tmp_path, sharing_path=tmp_path / "sharing.yaml", S117_MLLP_PORT=str(mllp_port),
                     S117_SAMPLE_SECONDS="1", S117_AUDIT_CHAIN_SECONDS="0.5")
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, admin = await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    await hub.start()
    run = uuid.uuid4().hex[:8]
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            await subscribe_webhook(http, keys, receiver)
        nhs = nhs_numbers()[7]
        async with Engine(mllp_port) as trust:
            ack = await trust.send(fixture("ADT_A01_s3_detained.hl7", nhs, f"A01-{run}"))
            assert msa(ack)[1:3] == ["AA", f"A01-{run}"], ack
            ack = await trust.send(fixture("ADT_A03_discharge.hl7", nhs, f"A03-{run}"))
            assert msa(ack)[1:3] == ["AA", f"A03-{run}"], ack
        await receiver.wait_for(lambda: len(receiver.received) >= 3)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            reported = await watch_csp(page)  # the page runs under its policy (no inline script) untouched
            await page.goto(f"{hub.base_url}/console")
            # Before sign-in only the sign-in box shows (no empty panels beneath it).
            assert not await page.locator("#overview").is_visible()
            compare(await page.screenshot(), "console-sign-in.png")
            await page.fill("#key", admin)
            await page.click("#signin")
            await page.wait_for_selector("#subs table")
            # The hub's processes as `s117hub serve` chose them (three on two cores or more), each ready.
            from hub.worker_process import usable_cores

            hub_panel = await page.inner_text("#hub")
            assert "store: ok" in hub_panel and "workers in the front: ok" in hub_panel
            if usable_cores() >= 2:
                assert "ready: 3 process(es)" in hub_panel
                assert "worker process (dispatcher, consumers): ok" in hub_panel
                assert "delivery process (deliverers): ok" in hub_panel
            else:
                assert "ready: 1 process(es)" in hub_panel
            # The ingest panel's two lists are named, so an empty one reads "Quarantined: None.", not a stray "None."
            ingest_panel = await page.inner_text("#ingest")
            assert ingest_panel.index("Accepted") < ingest_panel.index("Quarantined")
            assert ingest_panel.split("Quarantined", 1)[1].strip() == "None."
            await document(page, "overview.png")

            # Trace the discharge by the MSH-10 the trust got back in MSA-2.
            await page.click("nav button[data-tab=trace]")
            await page.select_option("#tracekind", "source_message_id")
            await page.fill("#tracevalue", msa(ack)[2])
            await page.click("#traceform button[type=submit]")
            await page.wait_for_selector("tr.stage-delivered")
            text = await page.inner_text("#traceout")
            assert "left-hospital" in text and "via mllp" in text and "ACK AA sent after commit" in text
            stages = await page.locator("#traceout tr").evaluate_all("rows => rows.map(r => r.className)")
            assert stages[:3] == ["stage-recorded", "stage-answered", "stage-event-derived"]
            assert stages[-1] == "stage-delivered"
            assert "s117-entitlement-started" in text and "E06000060: allowed" in text
            assert "QU9: denied" in text  # the ICB has no agreement here
            assert "to E06000060 by webhook after" in text
            assert nhs not in await page.content()
            compare(await page.locator("#trace section").screenshot(mask=[page.locator(".dyn")]), "console-trace.png")
            await document(page, "trace.png")

            await page.click("nav button[data-tab=withheld]")
            await page.wait_for_selector("#withheldout table")
            withheld = await page.inner_text("#withheldout")
            assert "QU9" in withheld and "no data-sharing agreement in force names this organisation" in withheld
            await document(page, "withheld.png")

            await page.click("nav button[data-tab=charts]")
            await page.wait_for_selector("#chartsout svg")
            assert await page.locator("#chartsout svg").count() == 5
            await page.wait_for_selector("#spendout svg")  # the oversight report's spend, as a chart and a table
            assert "Monthly s117 spend (£)" in await page.inner_text("#spendout")
            for _ in range(30):  # the sampler runs every second here
                if await page.locator("#chartsout polyline").count():
                    break
                await page.wait_for_timeout(500)
                await page.select_option("#window", "hour")
            assert await page.locator("#chartsout polyline").count() >= 1
            labels = await page.inner_text("#chartsout")
            assert "Ingest per channel" in labels and "mllp" in labels
            await document(page, "charts.png")

            await page.click("nav button[data-tab=audit]")
            await page.click("#verify")
            await page.wait_for_selector("#verifyout .ok")
            assert "intact" in await page.inner_text("#verifyout")
            await document(page, "audit.png")
            # Every tab drawn, every button pressed: nothing the Content-Security-Policy refused.
            assert await csp_violations(page, reported) == []
            await browser.close()
    finally:
        hub.stop()
        await receiver.stop()


async def test_the_overview_counts_people_awaiting_a_split_councils_successor(tmp_path):
    """Hazard H-03: a person whose council area (Cumbria) was split between several successors has no
    responsible council until a register change names the successor. The overview shows, per split council,
    its GSS code and how many people await it (GET /v1/ops/council-splits: codes and counts, nothing
    personal), in a panel like the others; once the trust names the successor, the count falls to none."""
    from playwright.async_api import async_playwright

    chromium = debian_tool("chromium", "chromium")
    (tmp_path / "sharing.yaml").write_text(yaml.safe_dump(SHARING))
    hub = HubProcess(tmp_path, sharing_path=tmp_path / "sharing.yaml")
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, admin = await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    trust = {"X-API-Key": keys["trust"]}
    nhs = nhs_numbers()[9]
    base = {"source_system": "RiO", "person": {"nhs_number": nhs, "given_name": "Grace", "family_name": "Hopper"}}
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for n, change in enumerate((
                {"change_type": "detained", "effective_date": "2022-01-05", "legal_status_code": "03",
                 "hospital_ods": "RNU", "residence_la_gss": "E10000006"},  # Cumbria, split on 1 April 2023
                {"change_type": "left-hospital", "effective_date": "2022-03-01", "hospital_ods": "RNU"},
            )):
                r = await http.post("/v1/register-changes", headers=trust,
                                    json={**base, "source_message_id": f"split-{n}", **change})
                assert r.status_code == 202, r.text

            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                reported = await watch_csp(page)
                await page.goto(f"{hub.base_url}/console")
                await page.fill("#key", admin)
                await page.click("#signin")
                await page.wait_for_selector("#splits table")
                heads = await page.locator("#splits table th").all_inner_texts()
                assert heads == ["split council (GSS)", "people awaiting its successor", "awaiting"], heads
                assert await page.locator("#splits table tbody tr td").all_inner_texts() == [
                    "E10000006", "1", "the successor named (a moved change)"]
                assert "people awaiting: 1" in await page.inner_text("#splits")
                panel = page.locator("section", has=page.locator("#splits"))
                assert "Awaiting a split council's successor" in await panel.locator("h2").inner_text()
                look = "e => { const s = getComputedStyle(e); return [s.backgroundColor, s.boxShadow, s.borderRadius, s.padding]; }"
                ingest = page.locator("section", has=page.locator("#ingest"))
                assert await panel.evaluate(look) == await ingest.evaluate(look)  # the same look as its neighbours
                content = await page.content()
                assert nhs not in content and "Hopper" not in content

                # The trust names the successor covering the address: nobody awaits Cumbria's any more (read
                # afresh when the overview is opened again).
                r = await http.post("/v1/register-changes", headers=trust, json={
                    **base, "source_message_id": "split-named", "change_type": "moved", "effective_date": "2026-01-05",
                    "residence_before_detention_la_gss": "E06000063"})
                assert r.status_code == 202, r.text
                await page.click("nav button[data-tab=charts]")
                await page.click("nav button[data-tab=overview]")
                await page.locator("#splits", has_text="people awaiting: 0").wait_for(timeout=15_000)
                assert "None." in await page.inner_text("#splits")
                assert await csp_violations(page, reported) == []
                await browser.close()
    finally:
        hub.stop()


def _narrowed(without: str) -> dict:
    """The e2e agreements with Buckinghamshire no longer covering the event type `without`."""
    return {**SHARING, "agreements": [
        {**a, "recipients": [{**r, "events": [e for e in r["events"] if e != without]} if r["org_code"] == "E06000060"
                             else r for r in a["recipients"]]} for a in SHARING["agreements"]]}


async def test_a_held_delivery_is_listed_and_released_from_the_console(tmp_path):
    """A message queued for Buckinghamshire while its agreement covered the event type, then held when it
    was to be sent because the agreement (reloaded at the hub's restart) no longer did: the console lists
    it (subscription, organisation, channel, event type and number, why, when queued) and counts it with
    the subscription's; Release puts it back to be sent, and the page follows it: held again while the
    agreement still leaves the event type out, delivered once an agreement covers it again."""
    from playwright.async_api import async_playwright

    chromium = debian_tool("chromium", "chromium")
    held_type = "s117-entitlement-started"
    sharing_path = tmp_path / "sharing.yaml"
    sharing_path.write_text(yaml.safe_dump(SHARING))
    receiver = Receiver(secret=SECRET, fail_with=503)  # down: the messages wait in the queue
    await receiver.start()
    mllp_port = free_port()
    hub = HubProcess(tmp_path, sharing_path=sharing_path, S117_MLLP_PORT=str(mllp_port))
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, admin = await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    ops = {"X-API-Key": admin}
    run = uuid.uuid4().hex[:8]
    nhs = nhs_numbers()[8]

    async def restart(sharing: dict) -> HubProcess:
        hub.stop()
        sharing_path.write_text(yaml.safe_dump(sharing))
        again = HubProcess(tmp_path, sharing_path=sharing_path, db_url=hub.db_url)  # the same store and key
        await again.start()
        return again

    async def until(check, what: str, timeout: float = 30.0):  # noqa: ANN001, ANN202
        deadline = asyncio.get_running_loop().time() + timeout
        while not (got := await check()):
            assert asyncio.get_running_loop().time() < deadline, what
            await asyncio.sleep(0.1)
        return got

    async def sign_in(page, base_url: str) -> None:  # noqa: ANN001
        await page.goto(f"{base_url}/console")
        await page.fill("#key", admin)
        await page.click("#signin")
        await page.wait_for_selector("#held table")

    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            sub = await subscribe_webhook(http, keys, receiver)
            subscription = sub
            async with Engine(mllp_port) as trust:
                for name, kind in (("ADT_A01_s3_detained.hl7", "A01"), ("ADT_A03_discharge.hl7", "A03")):
                    ack = await trust.send(fixture(name, nhs, f"{kind}-{run}"))
                    assert msa(ack)[1] == "AA", ack

            async def queued() -> bool:  # the discharge's messages queued behind the failing first one
                trace = (await http.get("/v1/ops/trace", params={"source_message_id": f"A03-{run}"}, headers=ops)).json()
                return any(e["stage"] == "delivery-queued" and e.get("recipient") == "E06000060"
                           for e in trace["timeline"]) and len(receiver.received) >= 1
            await until(queued, "the discharge's message to Buckinghamshire was never queued")
        assert receiver.received[0].status == 503

        # The agreement no longer covers the event type; the endpoint is back.
        receiver.fail_with = None
        hub = await restart(_narrowed(held_type))
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            async def held_rows() -> list:
                return (await http.get("/v1/ops/deliveries/held", headers=ops)).json()["deliveries"]
            [row] = await until(held_rows, "nothing was held")
            sent = await until(lambda: _delivered(http, ops, subscription), "the allowed messages were not sent")
        assert (row["org_code"], row["channel"], row["event_type"], row["subscription_id"]) == \
            ("E06000060", "webhook", held_type, subscription)
        assert row["why"] == "held: event-type at delivery"
        assert row["event_id"] not in receiver.event_ids() and sent >= 1

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            reported = await watch_csp(page)
            await sign_in(page, hub.base_url)
            panel = await page.inner_text("#held")
            for shown in ("E06000060", "webhook", held_type, "held: event-type at delivery", subscription[:8],
                          row["queued_at"][:19].replace("T", " ")):
                assert shown in panel, (shown, panel)
            cells = await page.locator("#held table tr").nth(1).locator("td").all_inner_texts()
            assert cells[4] == str(row["event_number"]), cells
            assert "held now: 1" in panel
            # The overview's subscriptions count it too (GET /v1/ops/flows `held`).
            heads = await page.locator("#subs table th").all_inner_texts()
            sub_cells = await page.locator("#subs table tr").nth(1).locator("td").all_inner_texts()
            assert sub_cells[heads.index("held")] == "1", (heads, sub_cells)
            assert nhs not in await page.content()

            # Released while the agreement still leaves the event type out: held again, and said so.
            await page.click(f"#held button[data-release='{row['delivery_id']}']")
            await page.wait_for_selector("#released .outcome.bad", timeout=30_000)
            outcome = await page.inner_text("#released")
            assert "held again" in outcome and "held: event-type at delivery" in outcome and held_type in outcome
            async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
                state = (await http.get(f"/v1/ops/deliveries/{row['delivery_id']}", headers=ops)).json()
            assert state["status"] == "held", state
            await page.wait_for_function(  # listed again once the page has followed it
                f"!!document.querySelector(\"#held button[data-release='{row['delivery_id']}']:not([disabled])\")")
            assert row["event_id"] not in receiver.event_ids()
            assert await csp_violations(page, reported) == []
            await document(page, "held.png")

            # An agreement covers it again (the full one, at the next restart): released, it is delivered.
            hub = await restart(SHARING)
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            reported = await watch_csp(page)
            await sign_in(page, hub.base_url)
            await page.click(f"#held button[data-release='{row['delivery_id']}']")
            await page.wait_for_selector("#released .outcome.ok", timeout=30_000)
            assert "released: delivered" in await page.inner_text("#released")
            assert row["event_id"] in receiver.event_ids("E06000060")
            await page.wait_for_function("document.querySelector('#held').innerText.includes('held now: 0')")
            assert await page.locator("#held button[data-release]").count() == 0
            assert await csp_violations(page, reported) == []
            await browser.close()
    finally:
        hub.stop()
        await receiver.stop()


async def _delivered(http: httpx.AsyncClient, ops: dict, subscription: str) -> int:
    flows = (await http.get("/v1/ops/flows", headers=ops)).json()
    sub = next(s for s in flows["subscriptions"] if s["subscription_id"] == subscription)
    return sub["delivered"] if sub["pending"] == 0 else 0
