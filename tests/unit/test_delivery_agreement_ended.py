"""Disclosure rests on a data-sharing agreement in force at the time of
disclosure, not when the message was queued. Review: a message queued under
an agreement that then ended (expired, or withdrawn: the agreements reloaded
without it) was still pushed (webhook, file export, ...) once its endpoint
came back, and still handed out by the pull feed. Now every channel asks the
agreements in force again as it sends: a message no longer allowed is held
(`held`, a `denied` disclosure saying why, counted), nothing is sent, and an
operator's retry or replay releases it once an agreement is in force again.
With the real app on SQLite; the agreements replaced as a reload replaces them."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from hub.clients import add_client
from hub.delivery.fhir_rest_hook import FhirRestHookDeliverer
from hub.delivery.file_export import FileExportDeliverer, export_path
from hub.delivery.kafka_topic import KafkaTopicDeliverer
from hub.delivery.queue import create_counter
from hub.delivery.webhook import EVENT_NUMBER_HEADER
from hub.settings import REPO_ROOT
from hub.sharing import SharingAgreements
from hub.store.schema import access_decisions, deliveries, disclosures, subscriptions
from hub.domain.dates import england_day
from tests.support import push_scenario, read_http_request

COUNCIL = "E06000060"  # Buckinghamshire: every event type, every field group (contracts/data-sharing-agreements.yaml)
DOC = yaml.safe_load((REPO_ROOT / "contracts" / "data-sharing-agreements.yaml").read_text())


def _agreements(edit) -> SharingAgreements:  # noqa: ANN001
    """The sample agreements with the council's recipient entry changed by `edit` (None: removed)."""
    doc = copy.deepcopy(DOC)
    for ag in doc["agreements"]:
        kept = []
        for rec in ag.get("recipients") or []:
            if rec["org_code"] == COUNCIL:
                rec = edit(rec)
            if rec is not None:
                kept.append(rec)
        ag["recipients"] = kept
    return SharingAgreements.from_document(doc)


def _withdrawn() -> SharingAgreements:
    return _agreements(lambda rec: None)


def _expired() -> SharingAgreements:
    """The council's agreement ended yesterday (its own agreement, dated)."""
    doc = copy.deepcopy(DOC)
    for ag in doc["agreements"]:
        if any(r["org_code"] == COUNCIL for r in ag.get("recipients") or []):
            ag["valid_to"] = (england_day() - timedelta(days=1)).isoformat()
    return SharingAgreements.from_document(doc)


class Receiver:
    """A local webhook endpoint: 503 while down, 204 once up; records each event number it took."""

    def __init__(self) -> None:
        self.up = False
        self.requests = 0
        self.accepted: list[int] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                headers, _ = await read_http_request(reader)
                self.requests += 1
                status = 204 if self.up else 503
                if self.up:
                    self.accepted.append(int(headers[EVENT_NUMBER_HEADER.lower()]))
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % status)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self.server.close()


@contextlib.asynccontextmanager
async def _live_receiver(up: bool = True):  # noqa: ANN202
    """A `Receiver` listening (answering 204 if `up`, else 503), closed afterwards: (it, its port)."""
    receiver = Receiver()
    receiver.up = up
    port = await receiver.start()
    try:
        yield receiver, port
    finally:
        receiver.close()


async def _admin(app_hub) -> dict[str, str]:  # noqa: ANN001
    _, key = await add_client(app_hub.hub.engine, "Engineer", "HUB", "hub-operator", ["hub:admin"])
    return {"X-API-Key": key}


async def _subscribe(app_hub, body: dict) -> str:  # noqa: ANN001
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[COUNCIL]}, json=body)
    assert r.status_code == 201, r.text
    return r.json()["subscription_id"]


async def _rows(app_hub, sub: str) -> list:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return list((await conn.execute(
            select(deliveries.c.delivery_id, deliveries.c.event_id, deliveries.c.event_number, deliveries.c.status,
                   deliveries.c.event_type, deliveries.c.last_error, deliveries.c.attempts)
            .where(deliveries.c.subscription_id == sub).order_by(deliveries.c.event_number))).all())


async def _denied(app_hub, channel: str) -> list:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return list((await conn.execute(
            select(disclosures).where(disclosures.c.recipient_org == COUNCIL, disclosures.c.decision == "denied",
                                      disclosures.c.channel == channel))).all())


async def _due_now(app_hub, sub: str) -> None:  # noqa: ANN001
    """Past the backoff of the failed head (the endpoint was down)."""
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(update(deliveries).where(deliveries.c.subscription_id == sub)
                           .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))


async def _drain(deliverer) -> int:  # noqa: ANN001
    total = 0
    while n := await deliverer.run_once():
        total += n
    return total


def _held_count(channel: str) -> float:
    return REGISTRY.get_sample_value("s117_deliveries_total", {"channel": channel, "outcome": "held"}) or 0.0


async def test_a_webhook_message_queued_before_the_agreement_ended_is_held_not_sent(app_hub):
    h = app_hub.hub
    assert h.deliverer.sharing_of is not None and h.deliverer.sharing_of() is h.sharing  # wired by bootstrap
    async with _live_receiver(up=False) as (receiver, port):
        sub = await _subscribe(app_hub, {"channel": "webhook", "url": f"http://127.0.0.1:{port}/hook"})
        await push_scenario(app_hub, seed=71)
        queued = await _rows(app_hub, sub)
        assert len(queued) >= 3 and {r.status for r in queued} == {"pending"}

        await h.deliverer.run_once()  # the endpoint is down: the head fails, everything waits behind it
        assert receiver.accepted == [] and {r.status for r in await _rows(app_hub, sub)} == {"pending"}

        in_force = h.sharing
        h.sharing = _withdrawn()  # the agreements reloaded without the council's
        receiver.up, before, held_before = True, receiver.requests, _held_count("webhook")
        await _due_now(app_hub, sub)
        assert await _drain(h.deliverer) == 0

        assert receiver.requests == before and receiver.accepted == []  # not one message sent
        rows = await _rows(app_hub, sub)
        assert {r.status for r in rows} == {"held"}
        assert {r.last_error for r in rows} == {"held: no-agreement at delivery"}
        denied = await _denied(app_hub, "webhook")
        assert sorted(d.event_id for d in denied) == sorted(r.event_id for r in rows)
        assert all("no longer in force" in d.reason and d.person_id and d.field_groups == [] for d in denied)
        assert _held_count("webhook") - held_before == len(rows)

        # The operator sees them: counted per subscription, listed with why (ids and codes only).
        admin = await _admin(app_hub)
        flows = (await app_hub.http.get("/v1/ops/flows", headers=admin)).json()
        assert next(x for x in flows["subscriptions"] if x["subscription_id"] == sub)["held"] == len(rows)
        listed = (await app_hub.http.get("/v1/ops/deliveries/held", headers=admin)).json()["deliveries"]
        assert sorted(x["delivery_id"] for x in listed) == sorted(r.delivery_id for r in rows)
        assert {(x["org_code"], x["channel"], x["why"]) for x in listed} == {
            (COUNCIL, "webhook", "held: no-agreement at delivery")}
        assert (await app_hub.http.get("/v1/ops/deliveries/held", headers={"X-API-Key": app_hub.keys[COUNCIL]})
                ).status_code == 403

        # The agreement in force again: the operator's retry of each releases it, and it goes.
        h.sharing = in_force
        for r in rows:
            resp = await app_hub.http.post(f"/v1/ops/deliveries/{r.delivery_id}/retry", headers=admin)
            assert resp.status_code == 200, resp.text
        await _drain(h.deliverer)
        assert receiver.accepted == [r.event_number for r in rows]  # all of them, in order
        assert {r.status for r in await _rows(app_hub, sub)} == {"delivered"}


async def test_an_expired_agreement_holds_too_and_a_narrower_one_holds_only_what_it_no_longer_allows(app_hub):
    h = app_hub.hub
    async with _live_receiver() as (receiver, port):
        sub = await _subscribe(app_hub, {"channel": "webhook", "url": f"http://127.0.0.1:{port}/hook"})
        await push_scenario(app_hub, seed=72)
        rows = await _rows(app_hub, sub)
        types = {r.event_type for r in rows}
        assert "s117-entitlement-started" in types and len(types) >= 2

        h.sharing = _expired()
        assert await _drain(h.deliverer) == 0 and receiver.requests == 0
        assert {r.status for r in await _rows(app_hub, sub)} == {"held"}

        # In force again, but covering one event type only: the rest are held again.
        h.sharing = _agreements(lambda rec: {**rec, "events": ["s117-entitlement-started"]})
        resp = await app_hub.http.post(f"/v1/ops/subscriptions/{sub}/replay",
                                       params={"since": "2000-01-01T00:00:00Z"}, headers=await _admin(app_hub))
        assert resp.json()["requeued"] == len(rows)
        await _drain(h.deliverer)
        after = await _rows(app_hub, sub)
        allowed = {"s117-entitlement-started", "s117-notification-corrected"}  # a correction: any agreement
        assert {r.event_type for r in after if r.status == "delivered"} <= allowed
        assert receiver.accepted == [r.event_number for r in after if r.status == "delivered"]
        held = [r for r in after if r.status == "held"]
        assert held and all(r.event_type not in allowed for r in held)
        assert {r.last_error for r in held} == {"held: event-type at delivery"}
        assert any("no longer allows" in d.reason for d in await _denied(app_hub, "webhook"))


async def test_a_message_carrying_field_groups_the_agreement_no_longer_grants_is_held(app_hub):
    h = app_hub.hub
    async with _live_receiver() as (receiver, port):
        sub = await _subscribe(app_hub, {"channel": "webhook", "url": f"http://127.0.0.1:{port}/hook"})
        await push_scenario(app_hub, seed=73)  # rendered with demographics (names, birth date)
        h.sharing = _agreements(lambda rec: {**rec, "field_groups": [g for g in rec["field_groups"]
                                                                      if g not in ("demographics", "address")]})
        assert await _drain(h.deliverer) == 0 and receiver.requests == 0
        rows = await _rows(app_hub, sub)
        assert {r.status for r in rows} == {"held"} and {r.last_error for r in rows} == {
            "held: field-groups at delivery"}
        assert all("address, demographics" in d.reason for d in await _denied(app_hub, "webhook"))


async def test_the_feed_refuses_an_organisation_whose_agreement_ended_and_goes_on_once_in_force(app_hub):
    h = app_hub.hub
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    sub = await _subscribe(app_hub, {"channel": "feed"})
    await push_scenario(app_hub, seed=74)
    first = (await app_hub.http.get(f"/v1/feeds/{sub}?limit=2", headers=key)).json()
    assert len(first["items"]) == 2
    cursor = first["next_cursor"]

    in_force = h.sharing
    h.sharing = _withdrawn()
    for headers in (key, {**key, "Accept": "text/event-stream"}):
        r = await app_hub.http.get(f"/v1/feeds/{sub}?after={cursor}", headers=headers)
        assert r.status_code == 403, r.status_code
        assert r.json()["rule"] == "no-agreement" and "items" not in r.json()
    async with h.engine.connect() as conn:
        last = (await conn.execute(select(access_decisions.c.decision, access_decisions.c.rule)
                                   .where(access_decisions.c.channel == "feed")
                                   .order_by(access_decisions.c.decision_id.desc()).limit(1))).one()
    assert tuple(last) == ("denied", "no-agreement")
    rows = await _rows(app_hub, sub)
    assert {r.status for r in rows} == {"pending"}  # nothing acknowledged, nothing handed out
    assert [r.event_number for r in rows if r.attempts] == [1, 2]

    h.sharing = in_force
    rest = (await app_hub.http.get(f"/v1/feeds/{sub}?after={cursor}&limit=500", headers=key)).json()
    assert [i["event_number"] for i in rest["items"]] == [r.event_number for r in rows][2:]


async def test_the_feed_holds_what_a_narrower_agreement_no_longer_allows_and_its_cursor_stays_valid(app_hub):
    h = app_hub.hub
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    sub = await _subscribe(app_hub, {"channel": "feed"})
    await push_scenario(app_hub, seed=75)
    in_force = h.sharing
    h.sharing = _agreements(lambda rec: {**rec, "events": ["s117-entitlement-started"]})
    allowed = {"s117-entitlement-started", "s117-notification-corrected"}
    page = (await app_hub.http.get(f"/v1/feeds/{sub}?limit=500", headers=key)).json()
    rows = await _rows(app_hub, sub)
    assert page["items"] and {i["event_type"] for i in page["items"]} <= allowed
    held = [r for r in rows if r.status == "held"]
    assert held and all(r.event_type not in allowed and r.attempts == 0 for r in held)
    assert [i["event_number"] for i in page["items"]] == [r.event_number for r in rows if r.status != "held"]
    denied = await _denied(app_hub, "feed")
    assert sorted(d.event_id for d in denied) == sorted(r.event_id for r in held)

    # The cursor handed out is accepted and acknowledges what was served, never a held one.
    r = await app_hub.http.get(f"/v1/feeds/{sub}?after={page['next_cursor']}", headers=key)
    assert r.status_code == 200 and r.json()["items"] == []
    statuses = {x.event_number: x.status for x in await _rows(app_hub, sub)}
    assert all(statuses[x.event_number] == "held" for x in held)
    # A cursor at a held one that was never handed out (past everything served) acknowledges nothing.
    if held[-1].event_number > page["next_cursor"]:
        r = await app_hub.http.get(f"/v1/feeds/{sub}?after={held[-1].event_number}", headers=key)
        assert r.status_code == 422

    # In force again: the operator's retry puts a held one back; rewinding the cursor reads it.
    h.sharing = in_force
    admin = await _admin(app_hub)
    target = held[0]
    assert (await app_hub.http.post(f"/v1/ops/deliveries/{target.delivery_id}/retry",
                                    headers=admin)).status_code == 200
    again = (await app_hub.http.get(f"/v1/feeds/{sub}?after={target.event_number - 1}&limit=1", headers=key)).json()
    assert [i["event_id"] for i in again["items"]] == [target.event_id]


async def test_a_file_export_is_not_written_once_the_agreement_ended(app_hub, tmp_path: Path):
    h = app_hub.hub
    assert h.file_deliverer.sharing_of is not None  # wired by bootstrap, like the hub's own
    deliverer = FileExportDeliverer(h.engine, h.protector, tmp_path / "exports", backoff_base=0.0, backoff_cap=0.0)
    deliverer.sharing_of = lambda: h.sharing
    sub = await _subscribe(app_hub, {"channel": "file"})
    await push_scenario(app_hub, seed=76)
    path = export_path(tmp_path / "exports", COUNCIL, datetime.now(UTC))

    in_force = h.sharing
    h.sharing = _expired()
    held_before = _held_count("file-export")
    assert await _drain(deliverer) == 0
    assert not path.exists()
    rows = await _rows(app_hub, sub)
    assert {r.status for r in rows} == {"held"}
    assert len(await _denied(app_hub, "file")) == len(rows)
    assert _held_count("file-export") - held_before == len(rows)

    h.sharing = in_force
    resp = await app_hub.http.post(f"/v1/ops/subscriptions/{sub}/replay", params={"since": "2000-01-01T00:00:00Z"},
                                   headers=await _admin(app_hub))
    assert resp.status_code == 200
    await _drain(deliverer)
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert [x["event_number"] for x in lines] == [r.event_number for r in rows]
    assert {r.status for r in await _rows(app_hub, sub)} == {"delivered"}


def test_the_check_at_delivery_asks_what_the_dispatcher_asks() -> None:
    from hub.sharing import NARROWED, NO_AGREEMENT, NOT_COVERED, DisclosureCheck

    on = date(2026, 12, 1)
    check = DisclosureCheck(_withdrawn(), on)
    assert check.withheld(COUNCIL, "s117-entitlement-started", ["identity"]).kind == NO_AGREEMENT
    assert not check.any_in_force(COUNCIL)
    check = DisclosureCheck(_agreements(lambda rec: {**rec, "events": ["s117-entitlement-started"],
                                                      "field_groups": ["identity"]}), on)
    assert check.withheld(COUNCIL, "s117-entitlement-started", ["identity"]) is None
    assert check.withheld(COUNCIL, "s117-entitlement-started", None) is None  # unknown groups: the type alone
    assert check.withheld(COUNCIL, "s117-entitlement-ended", ["identity"]).kind == NOT_COVERED
    assert check.withheld(COUNCIL, "s117-notification-corrected", ["identity"]) is None  # UK GDPR Art. 19
    why = check.withheld(COUNCIL, "s117-entitlement-started", ["identity", "demographics"])
    assert why.kind == NARROWED and "demographics" in why.reason and why.agreement_id == "DSA-BOB-S117-2024"


@pytest.mark.parametrize("channel", ["kafka", "fhir"])
async def test_the_kafka_topic_and_fhir_rest_hook_channels_hold_too(app_hub, channel):
    """The same lease (hub.delivery.leases) under every push channel: what it would
    send is recorded instead (no broker, no FHIR server needed to see nothing go)."""
    h = app_hub.hub
    sid = str(uuid.uuid4())
    async with h.engine.begin() as conn:
        await conn.execute(subscriptions.insert().values(
            subscription_id=sid, org_code=COUNCIL, client_id="test", channel=channel, active=True,
            created_at=datetime.now(UTC), topic="s117.out.e06000060" if channel == "kafka" else None,
            url="http://127.0.0.1:9/fhir" if channel == "fhir" else None,
            secret=h.protector.encrypt(b"s" * 32), fhir={"status": "active"} if channel == "fhir" else None))
        await create_counter(conn, sid)
    await push_scenario(app_hub, seed=77)
    kind = KafkaTopicDeliverer if channel == "kafka" else FhirRestHookDeliverer
    deliverer = (KafkaTopicDeliverer(h.engine, h.protector, "127.0.0.1:9") if channel == "kafka" else
                 FhirRestHookDeliverer(h.engine, h.protector, h.http, hub_endpoint="https://hub.example"))
    assert isinstance(deliverer, kind)
    deliverer.sharing_of = lambda: h.sharing
    sent: list[int] = []

    async def send(row) -> None:  # noqa: ANN001
        sent.append(row.event_number)

    deliverer._send = send
    in_force = h.sharing
    h.sharing = _withdrawn()
    assert await _drain(deliverer) == 0 and sent == []
    rows = await _rows(app_hub, sid)
    assert rows and {r.status for r in rows} == {"held"}
    assert len(await _denied(app_hub, channel)) == len(rows)

    h.sharing = in_force
    admin = await _admin(app_hub)
    for r in rows:
        assert (await app_hub.http.post(f"/v1/ops/deliveries/{r.delivery_id}/retry", headers=admin)).status_code == 200
    await _drain(deliverer)
    assert sent == [r.event_number for r in rows]


@pytest.fixture
async def pg_app_hub(tmp_path: Path, postgres_database_url: str):  # noqa: ANN201
    """The app over PostgreSQL: the claim's probe of `disclosures` and the hold on its driver path."""
    import httpx

    from hub.api.app import create_app
    from tests.conftest import InProcessHub, test_settings

    app = create_app(test_settings(tmp_path).model_copy(update={"database_url": postgres_database_url}))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        keys = {"trust": (await add_client(hub.engine, "Oxford Health", "RNU", "trust",
                                           ["register:write", "s117:read"]))[1],
                COUNCIL: (await add_client(hub.engine, "Bucks", COUNCIL, "council",
                                           ["subscriptions:write", "s117:read"]))[1]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            yield InProcessHub(http, hub, keys)


async def test_a_webhook_hold_and_release_on_postgresql(pg_app_hub):
    await test_a_webhook_message_queued_before_the_agreement_ended_is_held_not_sent(pg_app_hub)


async def test_a_narrowed_agreement_on_postgresql(pg_app_hub):
    await test_a_message_carrying_field_groups_the_agreement_no_longer_grants_is_held(pg_app_hub)


async def test_the_feed_on_postgresql(pg_app_hub):
    await test_the_feed_holds_what_a_narrower_agreement_no_longer_allows_and_its_cursor_stays_valid(pg_app_hub)
    await test_the_feed_refuses_an_organisation_whose_agreement_ended_and_goes_on_once_in_force(pg_app_hub)


async def test_a_replay_by_event_number_gives_only_what_the_agreement_in_force_allows(app_hub):
    """`GET /v1/subscriptions/{id}/events` is a read under the agreement in force now: a message
    rendered with field groups the agreement no longer grants is listed by number, kind and why,
    without the message; the operator still reads them all."""
    h = app_hub.hub
    sub = await _subscribe(app_hub, {"channel": "feed"})
    sent = await push_scenario(app_hub, seed=74)  # rendered with demographics (names, birth date)
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    r = await app_hub.http.get(f"/v1/subscriptions/{sub}/events", headers=key)
    before = r.json()["items"]
    assert before and all("message" in i and "withheld" not in i for i in before)
    family = next(e["resource"]["name"][0]["family"] for e in before[0]["message"]["entry"]
                  if e["resource"]["resourceType"] == "Patient")
    assert family in r.text and sent
    h.sharing = _agreements(lambda rec: {**rec, "field_groups": [g for g in rec["field_groups"]
                                                                  if g not in ("demographics", "address")]})
    r = await app_hub.http.get(f"/v1/subscriptions/{sub}/events", headers=key)
    after = r.json()["items"]
    assert [i["event_number"] for i in after] == [i["event_number"] for i in before]
    assert all("message" not in i and i["withheld"]["kind"] == "field-groups" for i in after)
    assert family not in r.text
    admin = await _admin(app_hub)
    r = await app_hub.http.get(f"/v1/subscriptions/{sub}/events", headers=admin)
    assert r.status_code == 404  # the operator is no subscriber: the route is the organisation's own


async def test_each_recipient_is_judged_by_the_field_groups_of_its_own_message(app_hub):
    """Buckinghamshire's messages carry demographics and address; BOB ICB's (QU9) do not, and its
    agreement does not grant them. Each delivery is checked against the groups its own message was
    rendered with: QU9's webhook messages go out (the lease once read any recipient's disclosure
    of the event, and held QU9's as narrowed when the council's was read: the walking skeleton)."""
    qu9 = {"X-API-Key": (await add_client(app_hub.hub.engine, "BOB ICB", "QU9", "icb", ["subscriptions:write"]))[1]}
    async with _live_receiver() as (receiver, port):
        await _subscribe(app_hub, {"channel": "feed"})  # the council: its messages carry demographics
        r = await app_hub.http.post("/v1/subscriptions", headers=qu9,
                                    json={"channel": "webhook", "url": f"http://127.0.0.1:{port}/hook"})
        assert r.status_code == 201, r.text
        sub = r.json()["subscription_id"]
        await push_scenario(app_hub, seed=75)
        await _due_now(app_hub, sub)
        await _drain(app_hub.hub.deliverer)
        rows = await _rows(app_hub, sub)
        assert rows and {row.status for row in rows} == {"delivered"}, {row.last_error for row in rows}
        assert receiver.accepted == sorted(row.event_number for row in rows)
