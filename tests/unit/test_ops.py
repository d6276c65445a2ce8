"""Operations API: dead letters and replay, service-level breaches, access."""

from __future__ import annotations

import asyncio

import random
from datetime import date, timedelta

import pytest

import hub.delivery.dispatcher as dispatcher_module
from hub.clients import add_client
from hub.domain.working_days import add_working_days
from hub.sample_data import detention_to_move_scenario
from hub.domain.dates import england_day


@pytest.fixture
async def admin(app_hub):  # noqa: ANN001
    return {"X-API-Key": (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}


async def _subscribe_and_push(app_hub) -> list[dict]:  # noqa: ANN001
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json={"url": "http://127.0.0.1:9/hook", "secret": "x" * 32})
    assert r.status_code == 201
    out = []
    for c in detention_to_move_scenario(random.Random(5), "ops", date(2025, 1, 6))[:3]:
        out.append((await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                            json=c)).json())
    return out


async def test_a_failing_handler_dead_letters_the_event_and_replay_delivers_it(app_hub, admin, monkeypatch):
    await _subscribe_and_push(app_hub)
    real = dispatcher_module.EventMessages.render
    calls = {"n": 0}

    def broken(self, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls["n"] += 1
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(dispatcher_module.EventMessages, "render", broken)
    for _ in range(20):  # the worker's retries, then the dead letter (3 per message)
        try:
            await app_hub.hub.dispatcher.run_once()
        except dispatcher_module._Retry:
            pass
    flows = (await app_hub.http.get("/v1/ops/flows", headers=admin)).json()
    assert flows["dead_letters_open"] >= 1
    assert flows["bus"]["consumers"][0]["lag"] == 0  # the flow went on past the poison message
    dead = (await app_hub.http.get("/v1/ops/dead-letters", headers=admin)).json()["handlers"]
    assert dead[0]["reason"].startswith("RuntimeError after 3 attempts")

    monkeypatch.setattr(dispatcher_module.EventMessages, "render", real)
    for d in dead:
        r = await app_hub.http.post(f"/v1/ops/dead-letters/{d['dead_letter_id']}/replay", headers=admin)
        assert r.status_code == 200, r.text
    r = await app_hub.http.post(f"/v1/ops/dead-letters/{dead[0]['dead_letter_id']}/replay", headers=admin)
    assert r.status_code == 409
    flows = (await app_hub.http.get("/v1/ops/flows", headers=admin)).json()
    assert flows["dead_letters_open"] == 0
    assert flows["subscriptions"][0]["pending"] >= len(dead)


async def test_late_recording_shows_as_a_breach(app_hub, admin):
    change = detention_to_move_scenario(random.Random(6), "late", date(2025, 1, 6))[0]
    today = england_day()
    holidays = app_hub.hub.ref.bank_holidays()
    # Notice given more than five working days ago.
    notified = today - timedelta(days=21)
    change = {**change, "effective_date": (notified - timedelta(days=1)).isoformat(), "notified_on": notified.isoformat()}
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
    assert r.json()["service_level"]["state"] == "breach"
    assert r.json()["service_level"]["deadline"] == add_working_days(notified, 5, holidays).isoformat()
    sla = (await app_hub.http.get("/v1/ops/service-level", headers=admin)).json()
    assert sla["totals"]["breach"] == 1 and sla["items"][0]["change_id"] == r.json()["change_id"]


async def test_ops_needs_the_admin_scope(app_hub):
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        r = await app_hub.http.get("/v1/ops/flows", headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert r.status_code == 403
    # On record for the operator: which key, which organisation, which scope it lacked.
    refused = [e for e in logs if e["event"] == "request refused: scope not held"]
    assert [(e["org_code"], e["reason_codes"]) for e in refused] == [("E06000060", ["hub:admin"])]
    assert refused[0]["source"].startswith("e06000060-")


async def test_console_page_is_served(app_hub):
    r = await app_hub.http.get("/console")
    assert r.status_code == 200 and "integration console" in r.text


async def test_subscription_urls_may_not_carry_credentials(app_hub):
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json={"url": "http://user:pw@127.0.0.1:9/hook"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "url"


async def test_production_requires_https_webhooks(app_hub):
    app_hub.hub.settings.webhook_require_https = True
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json={"url": "http://127.0.0.1:9/hook"})
    assert r.status_code == 422 and "https" in r.json()["errors"][0]["reason"]
    app_hub.hub.settings.webhook_allowed_hosts = ["council.example"]  # no DNS in tests
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json={"url": "https://council.example/hook"})
    assert r.status_code == 201 and len(r.json()["secret"]) >= 32


async def test_openapi_documents_the_register_change_contract(app_hub):
    doc = (await app_hub.http.get("/openapi.json")).json()
    body = doc["paths"]["/v1/register-changes"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/S117RegisterChange"}
    contract = doc["components"]["schemas"]["S117RegisterChange"]
    assert "nhs_number" in doc["components"]["schemas"]["PersonIn"]["properties"]
    assert set(contract["required"]) >= {"source_message_id", "change_type", "effective_date", "person"}


async def test_out_of_range_numbers_are_named_not_overflowed(app_hub, admin):
    # Found by schemathesis: huge windows, limits and cursors used to overflow (a 500).
    for path in ("/v1/ops/flows?hours=1276453836", "/v1/ops/service-level?days=51284041",
                 "/v1/quarantine?limit=-4", "/v1/ops/dead-letters/134869289260857409536/replay"):
        method = app_hub.http.post if path.endswith("replay") else app_hub.http.get
        r = await method(path, headers=admin)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["errors"][0]["field"] in {"hours", "days", "limit", "dead_letter_id"}


async def test_a_running_hub_with_its_workers_is_ready_and_a_stopped_worker_is_not(app_hub) -> None:
    # The start-up task that resumes council files ends at once: that is not a stopped worker
    # (it made every running hub answer 503).
    app_hub.hub.start_workers()
    try:
        await asyncio.sleep(0.2)
        r = await app_hub.http.get("/health/ready")
        assert r.status_code == 200 and r.json()["checks"] == {"store": "ok", "store_writes": "ok", "workers": "ok"}, r.text
        dispatcher = next(t for t in app_hub.hub.worker_tasks() if t.get_name() == "dispatcher")
        dispatcher.cancel()
        await asyncio.sleep(0)
        r = await app_hub.http.get("/health/ready")
        assert r.status_code == 503 and r.json()["checks"]["workers"] == "stopped: dispatcher"
    finally:
        app_hub.hub._stop.set()
        await asyncio.gather(*app_hub.hub.worker_tasks(), return_exceptions=True)


async def test_readiness_reports_the_store_and_workers(app_hub, monkeypatch):
    r = await app_hub.http.get("/health/ready")
    assert r.status_code == 200 and r.json()["checks"] == {"store": "ok", "store_writes": "ok", "workers": "ok"}

    class StoreDown:
        def connect(self):  # noqa: ANN201
            raise OSError("store down")

    monkeypatch.setattr(app_hub.hub, "engine", StoreDown())
    r = await app_hub.http.get("/health/ready")
    assert r.status_code == 503 and r.json()["status"] == "not-ready"


async def test_an_operators_retry_and_replay_requeue_and_wake_the_deliverers(app_hub, admin, monkeypatch):
    from sqlalchemy import select, update

    from hub.store.schema import deliveries

    await _subscribe_and_push(app_hub)
    await app_hub.hub.dispatcher.run_once()
    woken: list[str] = []
    for d in app_hub.hub.deliverers():
        monkeypatch.setattr(d, "wake", lambda channel=d.channel: woken.append(channel))
    async with app_hub.hub.engine.begin() as conn:
        row = (await conn.execute(select(deliveries.c.delivery_id, deliveries.c.subscription_id).limit(1))).one()
        await conn.execute(update(deliveries).where(deliveries.c.delivery_id == row.delivery_id)
                           .values(status="dead", attempts=5))
    r = await app_hub.http.post(f"/v1/ops/deliveries/{row.delivery_id}/retry", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    async with app_hub.hub.engine.connect() as conn:
        status, attempts = (await conn.execute(select(deliveries.c.status, deliveries.c.attempts)
                                               .where(deliveries.c.delivery_id == row.delivery_id))).one()
    assert (status, attempts) == ("pending", 0)
    assert "webhook" in woken, "the deliverers would find the retry only at their next idle poll"

    woken.clear()
    r = await app_hub.http.post(f"/v1/ops/subscriptions/{row.subscription_id}/replay",
                                params={"since": "2000-01-01T00:00:00Z"}, headers=admin)
    assert r.status_code == 200 and r.json()["requeued"] >= 1
    assert "webhook" in woken
    assert (await app_hub.http.post("/v1/ops/deliveries/no-such-id/retry", headers=admin)).status_code == 404
    # An unknown subscription is a 404, not "0 requeued".
    r = await app_hub.http.post("/v1/ops/subscriptions/no-such-subscription/replay",
                                params={"since": "2000-01-01T00:00:00Z"}, headers=admin)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


async def test_one_deliverys_state_is_read_by_its_id_for_the_operator_alone(app_hub, admin):
    """The console follows a delivery it released (held again, delivered, waiting): `GET
    /v1/ops/deliveries/{id}` says where it stands, with ids and codes only; an unknown id is a 404,
    and a subscriber's key is refused."""
    from sqlalchemy import select, update

    from hub.store.schema import deliveries

    await _subscribe_and_push(app_hub)
    await app_hub.hub.dispatcher.run_once()
    async with app_hub.hub.engine.begin() as conn:
        row = (await conn.execute(select(deliveries.c.delivery_id, deliveries.c.subscription_id,
                                         deliveries.c.event_number, deliveries.c.event_type).limit(1))).one()
        await conn.execute(update(deliveries).where(deliveries.c.delivery_id == row.delivery_id)
                           .values(status="held", last_error="held: not-covered at delivery"))
    r = await app_hub.http.get(f"/v1/ops/deliveries/{row.delivery_id}", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"delivery_id": row.delivery_id, "subscription_id": row.subscription_id,
                        "org_code": "E06000060", "channel": "webhook", "event_id": r.json()["event_id"],
                        "event_number": row.event_number, "event_type": row.event_type, "status": "held",
                        "attempts": 0, "why": "held: not-covered at delivery"}
    assert (await app_hub.http.get("/v1/ops/deliveries/held", headers=admin)).json()["deliveries"][0][
        "delivery_id"] == row.delivery_id  # the list's own path is not taken for an id
    assert (await app_hub.http.get("/v1/ops/deliveries/no-such-id", headers=admin)).status_code == 404
    r = await app_hub.http.get(f"/v1/ops/deliveries/{row.delivery_id}",
                               headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert r.status_code == 403
