"""Review (FHIR subscriptions), the same subscriptions as POST /v1/subscriptions
seen through FHIR, had two of the REST route's guards missing:

* `GET /v1/fhir/Subscription/{id}/$events` replayed every message a
  subscription had been sent to an organisation whose data-sharing agreement
  had gone (GET /v1/subscriptions/{id}/events: 403 `no-agreement`). A replay is
  a read: now the same 403, as an OperationOutcome naming the rule.
* `POST /v1/fhir/Subscription` did not count toward the per-organisation cap
  (`MAX_ACTIVE_PER_ORG` active subscriptions, every channel): a key could add
  FHIR subscriptions without bound, each message queued once for each. Now
  the next one is refused (422 OperationOutcome at `Subscription.channel`),
  counted again as it is turned on after its handshake."""

from __future__ import annotations

from sqlalchemy import func, select

import hub.api.fhir_subscriptions as fhir_subscriptions
from hub.api.subscriptions import MAX_ACTIVE_PER_ORG
from hub.clients import add_client
from hub.fhir.subscriptions import TOPIC_BASE
from hub.store.schema import subscriptions
from tests.support import push_scenario

COUNCIL = "E06000060"
FHIR = {"Content-Type": "application/fhir+json"}


def _resource(event_type: str = "s117-entitlement-started") -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "S117 register",
            "criteria": f"{TOPIC_BASE}/{event_type}",
            "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/fhir", "payload": "application/fhir+json"}}


def _handshakes(monkeypatch, during=None) -> list[str]:  # noqa: ANN001
    """The endpoint's handshake answered 2xx (the hook itself is not under test); `during` runs meanwhile."""
    sent: list[str] = []

    async def post_notification(http, url, secret, bundle, timeout, kind):  # noqa: ANN001, ANN202
        sent.append(kind)
        if during is not None:
            await during()
        return None

    monkeypatch.setattr(fhir_subscriptions, "post_notification", post_notification)
    return sent


async def _active(app_hub, org: str) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(subscriptions).where(
            subscriptions.c.org_code == org, subscriptions.c.active.is_(True)))).scalar_one()


async def _rows(app_hub, org: str) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(subscriptions).where(
            subscriptions.c.org_code == org))).scalar_one()


async def test_fhir_events_replay_needs_an_agreement_in_force(app_hub, monkeypatch):
    _handshakes(monkeypatch)
    key = {"X-API-Key": app_hub.keys[COUNCIL], **FHIR}
    r = await app_hub.http.post("/v1/fhir/Subscription", headers=key,
                                json=_resource("s117-register-change-recorded"))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    await push_scenario(app_hub, seed=61)
    r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events?content=full-resource", headers=key)
    assert r.status_code == 200 and len(r.json()["entry"]) > 1  # the status, then the messages

    monkeypatch.delitem(app_hub.hub.sharing._by_org, COUNCIL)  # every agreement naming the council gone
    r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events?content=full-resource", headers=key)
    assert r.status_code == 403, r.status_code  # (a 200 would be the messages: not printed)
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and "entry" not in body
    issue = body["issue"][0]
    assert issue["code"] == "forbidden" and issue["diagnostics"].startswith("no-agreement: ")
    # The REST replay of the same subscription answers alike (problem details, rule no-agreement).
    r = await app_hub.http.get(f"/v1/subscriptions/{sid}/events", headers=key)
    assert r.status_code == 403 and r.json()["rule"] == "no-agreement"
    # Not its subscription: 404 as before, whatever the agreements.
    _, admin = await add_client(app_hub.hub.engine, "Engineer", "HUB", "hub-operator", ["hub:admin"])
    r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events", headers={"X-API-Key": admin})
    assert r.status_code == 404


async def test_fhir_subscriptions_count_toward_the_organisations_cap(app_hub, monkeypatch):
    sent = _handshakes(monkeypatch)
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    for _ in range(MAX_ACTIVE_PER_ORG - 1):
        assert (await app_hub.http.post("/v1/subscriptions", headers=key, json={"channel": "feed"})).status_code == 201
    r = await app_hub.http.post("/v1/fhir/Subscription", headers={**key, **FHIR}, json=_resource())
    assert r.status_code == 201, r.text  # the twentieth
    assert await _active(app_hub, COUNCIL) == MAX_ACTIVE_PER_ORG

    sent.clear()
    r = await app_hub.http.post("/v1/fhir/Subscription", headers={**key, **FHIR}, json=_resource())
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Subscription.channel"] and str(MAX_ACTIVE_PER_ORG) in issue["diagnostics"]
    assert "S117-Webhook-Secret" not in r.headers and sent == []  # no handshake sent, nothing kept
    assert await _rows(app_hub, COUNCIL) == MAX_ACTIVE_PER_ORG
    # The REST route counts the FHIR one too; another organisation is not held back.
    r = await app_hub.http.post("/v1/subscriptions", headers=key, json={"channel": "feed"})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["channel"]
    _, icb = await add_client(app_hub.hub.engine, "BOB ICB", "QU9", "icb", ["subscriptions:write"])
    r = await app_hub.http.post("/v1/fhir/Subscription", headers={"X-API-Key": icb, **FHIR}, json=_resource())
    assert r.status_code == 201, r.text

    # A FHIR subscription turned off frees its place.
    sid = (await app_hub.http.get("/v1/subscriptions", headers=key)).json()["items"]
    fhir_id = next(s["subscription_id"] for s in sid if s["channel"] == "fhir")
    assert (await app_hub.http.delete(f"/v1/fhir/Subscription/{fhir_id}", headers={**key, **FHIR})).status_code == 200
    r = await app_hub.http.post("/v1/fhir/Subscription", headers={**key, **FHIR}, json=_resource())
    assert r.status_code == 201, r.text


async def test_the_cap_is_counted_again_when_the_handshake_is_done(app_hub, monkeypatch):
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    for _ in range(MAX_ACTIVE_PER_ORG - 1):
        assert (await app_hub.http.post("/v1/subscriptions", headers=key, json={"channel": "feed"})).status_code == 201

    async def another_meanwhile() -> None:  # the twentieth place taken while the endpoint answered
        r = await app_hub.http.post("/v1/subscriptions", headers=key, json={"channel": "feed"})
        assert r.status_code == 201, r.text

    _handshakes(monkeypatch, during=another_meanwhile)
    r = await app_hub.http.post("/v1/fhir/Subscription", headers={**key, **FHIR}, json=_resource())
    assert r.status_code == 422, r.text
    assert r.json()["issue"][0]["expression"] == ["Subscription.channel"]
    assert await _active(app_hub, COUNCIL) == MAX_ACTIVE_PER_ORG  # the FHIR one left off
