"""Review (subscriptions), reproduced on a running hub:

* No bound on the subscriptions one organisation holds: an ICB key made 60
  identical webhook subscriptions to one URL in about a second, and each
  register change was then queued and POSTed 60 times over (809 POSTs for
  four changes): a store, CPU and traffic amplifier pointed at any public
  URL. Now at most `MAX_ACTIVE_PER_ORG` active at once (422 naming `channel`).
* A Kafka topic is any name outside `s117.*`, and nothing stopped a second
  organisation naming the topic another had subscribed: the hub (which may
  write every topic) would then put its messages, about its own people, on
  the first organisation's topic for that organisation's consumers to read.
  A topic another organisation subscribed is refused (422 naming `topic`)."""

from __future__ import annotations

from sqlalchemy import func, select

from hub.api.subscriptions import MAX_ACTIVE_PER_ORG
from hub.store.schema import subscriptions

COUNCIL, OTHER = "E06000060", "E08000025"


async def _subscribe(app_hub, org: str, body: dict):  # noqa: ANN001, ANN202
    return await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[org]}, json=body)


async def test_an_organisation_holds_a_bounded_number_of_active_subscriptions(app_hub):
    hook = {"channel": "webhook", "url": "http://127.0.0.1:9/hook"}
    made = []
    for _ in range(MAX_ACTIVE_PER_ORG):
        r = await _subscribe(app_hub, COUNCIL, hook)
        assert r.status_code == 201, r.text
        made.append(r.json()["subscription_id"])
    for body in (hook, {"channel": "feed"}):
        r = await _subscribe(app_hub, COUNCIL, body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in r.json()["errors"]] == ["channel"]
        assert str(MAX_ACTIVE_PER_ORG) in r.json()["errors"][0]["reason"]
    async with app_hub.hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(subscriptions)
                                .where(subscriptions.c.org_code == COUNCIL))).scalar_one()
    assert n == MAX_ACTIVE_PER_ORG  # the refused ones left nothing behind

    # Another organisation is not held back by this one's; and a stopped subscription frees its place.
    assert (await _subscribe(app_hub, OTHER, hook)).status_code == 201
    r = await app_hub.http.delete(f"/v1/subscriptions/{made[0]}", headers={"X-API-Key": app_hub.keys[COUNCIL]})
    assert r.status_code == 200
    assert (await _subscribe(app_hub, COUNCIL, {"channel": "feed"})).status_code == 201


class _NoKafka:
    """Stands for a Kafka deliverer: the subscriptions API asks only whether the hub has one."""

    async def close(self) -> None:
        pass


async def test_a_kafka_topic_another_organisation_subscribed_is_refused(app_hub, monkeypatch):
    monkeypatch.setattr(app_hub.hub, "kafka_deliverer", _NoKafka())
    r = await _subscribe(app_hub, OTHER, {"channel": "kafka", "topic": "case-system-in"})
    assert r.status_code == 201, r.text
    # The other organisation's stopped subscription still owns its name: its consumers may read it yet.
    r = await app_hub.http.delete(f"/v1/subscriptions/{r.json()['subscription_id']}",
                                  headers={"X-API-Key": app_hub.keys[OTHER]})
    assert r.status_code == 200

    r = await _subscribe(app_hub, COUNCIL, {"channel": "kafka", "topic": "case-system-in"})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["topic"]
    assert "another organisation" in r.json()["errors"][0]["reason"]

    # Its own names, and the same name again for itself, are its own.
    assert (await _subscribe(app_hub, COUNCIL, {"channel": "kafka", "topic": "bucks-case-system"})).status_code == 201
    assert (await _subscribe(app_hub, COUNCIL, {"channel": "kafka", "topic": "bucks-case-system"})).status_code == 201
    assert (await _subscribe(app_hub, OTHER, {"channel": "kafka", "topic": "case-system-in"})).status_code == 201
    assert (await _subscribe(app_hub, COUNCIL, {"channel": "kafka"})).json()["topic"] == "s117.out.e06000060"
