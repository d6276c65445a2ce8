"""Review (operator console and ops API, p10), reproduced on the in-process hub with a real SQLite store:

* The ops answers (a person's trace and audit by NHS number, held and dead deliveries, the lists) carried no
  `Cache-Control`: a browser or a proxy between the engineer and the hub could keep them. Now every /v1/ops
  answer is `no-store`, as the console pages already were. Probed with the same hub: no answer carries the
  person's NHS number, name, date of birth or postcode, a quarantined input's included.
* A trace of one person (`POST /v1/ops/trace/person` by NHS number, `GET /v1/ops/trace?person_id=`) returns
  everything recorded and sent about them but left no record of who looked; the audit's subject access
  look-up did. Both are now operator actions, found or not.
* `POST /v1/ops/deliveries/{id}/retry` on a delivery already delivered answered `404 not found`, as for an id
  that does not exist; now `409` naming its state (`delivered`; a message emptied by retention: `purged`).
* Two replays of one dead letter at once both passed the `replayed_at` check, both ran the handler and both
  were recorded; the dead letter is now taken in the replaying transaction first, so the second is `409`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from hub.clients import add_client
from hub.store.schema import bus_messages, dead_letters, deliveries, delivery_messages, operator_actions
from tests.support import detention

NHS = "9991100016"
PERSON = {"given_name": "Zebedee", "family_name": "Quixotic", "birth_date": "1971-03-14", "postcode": "HP19 8FF"}
PERSONAL = [NHS, "9991100024", "Zebedee", "Quixotic", "1971", "HP19"]
GETS = ["/v1/ops/flows", "/v1/ops/dead-letters", "/v1/ops/deliveries/held", "/v1/ops/service-level",
        "/v1/ops/withheld", "/v1/ops/series?window=hour", "/v1/ops/reconciliation", "/v1/ops/exports",
        "/v1/ops/audit/verify", "/v1/ops/trace?correlation_id=cafe-0a10", "/v1/ops/trace?source_message_id=p10-2"]


@pytest.fixture
async def admin(app_hub):  # noqa: ANN001
    return {"X-API-Key": (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}


@pytest.fixture
async def flowed(app_hub):  # noqa: ANN001
    await _flow(app_hub)


async def _flow(app_hub) -> None:  # noqa: ANN001
    """Bucks subscribed by feed; a person's two changes accepted and dispatched; a third quarantined, its
    bad values the person's name and date of birth."""
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json={"channel": "feed"})
    assert r.status_code == 201
    for c in detention(NHS, "p10", **PERSON):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    bad = {**detention(NHS, "bad")[0], "legal_status_code": "Zebedee Quixotic",
           "person": {**PERSON, "nhs_number": "9991100024", "birth_date": "1971-13-14"}}
    r = await app_hub.http.post("/v1/register-changes", json=bad,
                                headers={"X-API-Key": app_hub.keys["trust"], "X-Correlation-Id": "cafe-0a10"})
    assert r.status_code == 422
    while await app_hub.hub.dispatcher.run_once():
        pass


async def _actions(app_hub, action: str) -> list:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(operator_actions).where(operator_actions.c.action == action))).all()


async def test_every_ops_answer_is_not_stored_and_names_nobody(app_hub, admin, flowed):
    answers = {p: await app_hub.http.get(p, headers=admin) for p in GETS}
    for p in ("/v1/ops/trace/person", "/v1/ops/audit/person"):
        answers[p] = await app_hub.http.post(p, headers=admin, json={"nhs_number": NHS})
    assert answers["/v1/ops/trace?correlation_id=cafe-0a10"].json()["timeline"][0]["stage"] == "quarantined"
    assert answers["/v1/ops/trace/person"].json()["changes"] == 2
    for path, r in answers.items():
        assert r.status_code == 200, (path, r.text)
        assert r.headers.get("cache-control") == "no-store", path
        assert not [v for v in PERSONAL if v in r.text], path


async def test_tracing_one_person_is_an_operator_action(app_hub, admin, flowed):
    r = await app_hub.http.post("/v1/ops/trace/person", headers=admin, json={"nhs_number": NHS})
    assert r.status_code == 200
    person_id = next(e["person_id"] for e in r.json()["timeline"] if e["stage"] == "recorded")
    assert (await app_hub.http.post("/v1/ops/trace/person", headers=admin,
                                    json={"nhs_number": "9991100032"})).status_code == 404
    assert (await app_hub.http.get(f"/v1/ops/trace?person_id={person_id}", headers=admin)).status_code == 200
    assert (await app_hub.http.get("/v1/ops/trace?source_message_id=p10-1", headers=admin)).status_code == 200
    rows = await _actions(app_hub, "trace-person")
    assert [r.target for r in rows] == [person_id, "(not on the register)", person_id]
    assert {r.client_id for r in rows} == {"hub-operator"} or len({r.client_id for r in rows}) == 1
    assert not [r for r in rows if NHS in r.target or NHS in str(r.detail)]


async def test_retrying_a_delivered_or_purged_delivery_is_409_naming_its_state(app_hub, admin, flowed):
    async with app_hub.hub.engine.begin() as conn:
        first, second = (await conn.execute(select(deliveries.c.delivery_id, deliveries.c.delivery_seq)
                                            .order_by(deliveries.c.delivery_seq).limit(2))).all()
        await conn.execute(update(deliveries).where(deliveries.c.delivery_id == first.delivery_id)
                           .values(status="delivered", delivered_at=datetime.now(UTC)))
        await conn.execute(update(delivery_messages).where(delivery_messages.c.delivery_seq == second.delivery_seq)
                           .values(payload=b""))
    r = await app_hub.http.post(f"/v1/ops/deliveries/{first.delivery_id}/retry", headers=admin)
    assert r.status_code == 409, r.text
    assert (r.json()["type"].rsplit("/", 1)[1], r.json()["state"]) == ("already-delivered", "delivered")
    assert r.json()["errors"] == [{"field": "status", "reason": "delivered already"}]
    r = await app_hub.http.post(f"/v1/ops/deliveries/{second.delivery_id}/retry", headers=admin)
    assert r.status_code == 409, r.text
    assert r.json()["type"].endswith("/message-purged") and r.json()["errors"][0]["field"] == "message"
    r = await app_hub.http.post("/v1/ops/deliveries/no-such-delivery/retry", headers=admin)
    assert r.status_code == 404
    assert await _actions(app_hub, "retry-delivery") == []


async def test_two_replays_of_one_dead_letter_at_once_run_it_once(app_hub, admin, flowed, monkeypatch):
    await _replay_twice_at_once(app_hub, admin, monkeypatch)


@pytest.fixture
async def pg_app_hub(tmp_path, postgres_database_url: str):  # noqa: ANN001, ANN201
    """The app over PostgreSQL, where two requests' transactions run side by side (SQLite's one writer
    kept the second replay's read behind the first's commit)."""
    import httpx

    from hub.api.app import create_app
    from tests.conftest import InProcessHub, test_settings

    app = create_app(test_settings(tmp_path).model_copy(update={"database_url": postgres_database_url}))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        keys = {"trust": (await add_client(hub.engine, "Oxford Health", "RNU", "trust",
                                           ["register:write", "s117:read"]))[1],
                "E06000060": (await add_client(hub.engine, "Bucks", "E06000060", "council",
                                               ["subscriptions:write", "s117:read"]))[1]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            yield InProcessHub(http, hub, keys)


async def test_two_replays_of_one_dead_letter_at_once_on_postgresql(pg_app_hub, monkeypatch):
    admin = {"X-API-Key": (await add_client(pg_app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    await _flow(pg_app_hub)
    await _replay_twice_at_once(pg_app_hub, admin, monkeypatch)


async def _replay_twice_at_once(app_hub, admin, monkeypatch) -> None:  # noqa: ANN001
    async with app_hub.hub.engine.begin() as conn:
        msg = (await conn.execute(select(bus_messages).order_by(bus_messages.c.offset).limit(1))).first()
        dl = (await conn.execute(dead_letters.insert().values(
            topic=msg.topic, group_id="dispatcher", offset=msg.offset, event_id=msg.event_id, handler="dispatcher",
            reason="RuntimeError after 3 attempts", at=datetime.now(UTC)).returning(dead_letters.c.dead_letter_id)
        )).scalar_one()
    ran = []

    async def handle(conn, message):  # noqa: ANN001, ANN202 - the dispatcher, slow enough for both to have read
        ran.append(message.event_id)
        await asyncio.sleep(0.3)

    monkeypatch.setattr(app_hub.hub.dispatcher, "handle", handle)
    answers = await asyncio.gather(*(app_hub.http.post(f"/v1/ops/dead-letters/{dl}/replay", headers=admin)
                                     for _ in range(2)))
    assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
    assert ran == [msg.event_id]
    assert len(await _actions(app_hub, "replay-dead-letter")) == 1
