"""`last_event_number_sent` in GET /v1/subscriptions/{id}/status counts what
was sent, not what was leased.

A push deliverer's lease (hub/delivery/leases.py `_claim`) adds an attempt to
every row of the batch before any of it is sent; the rows not attempted are
given back with their count restored. So for a push channel "sent" is the
highest event number with a finished attempt: delivered, or failed (its
`last_error` set, dead or backing off). For a feed it is what the feed has
handed out (tests/unit/test_subscription_events.py)."""

from __future__ import annotations

from hub.delivery.leases import Claim, RetryPolicy, claim_batch, record_batch
from tests.support import push_scenario

COUNCIL = "E06000060"
LEASE = 60.0


async def _webhook(app_hub) -> tuple[str, dict[str, str], int]:  # noqa: ANN001
    headers = {"X-API-Key": app_hub.keys[COUNCIL]}
    r = await app_hub.http.post("/v1/subscriptions", headers=headers,
                                json={"channel": "webhook", "url": "http://127.0.0.1:9/hook"})
    assert r.status_code == 201, r.text
    sub = r.json()["subscription_id"]
    await push_scenario(app_hub, seed=81)
    n = (await app_hub.http.get(f"/v1/subscriptions/{sub}/status", headers=headers)).json()[
        "events_since_subscription_start"]
    assert n >= 5, n
    return sub, headers, n


async def _status(app_hub, sub: str, headers: dict[str, str]) -> dict:  # noqa: ANN001
    r = await app_hub.http.get(f"/v1/subscriptions/{sub}/status", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_leased_batch_is_not_sent_until_its_attempts_finish(app_hub):
    sub, headers, n = await _webhook(app_hub)
    engine = app_hub.hub.engine
    # A subscriber that hangs: the whole batch is leased, nothing has come back yet.
    leased = await claim_batch(engine, "webhook", sub, 100, LEASE)
    assert [r.event_number for r in leased] == list(range(1, n + 1))
    status = await _status(app_hub, sub, headers)
    assert status["last_event_number_sent"] == 0 and status["last_event_number_acknowledged"] == 0
    assert status["head"]["attempts"] == 1  # the lease's attempt, in flight
    # 1-2 accepted; the next batch (3 on) leased in the same transaction and not yet sent.
    recorded = await record_batch(engine, leased[:2], None, None, leased[2:], RetryPolicy(lease_seconds=LEASE),
                                  "webhook", then_claim=Claim("webhook", sub, 100, LEASE))
    assert [r.event_number for r in recorded.claimed] == list(range(3, n + 1))
    status = await _status(app_hub, sub, headers)
    assert status["last_event_number_sent"] == 2 and status["last_event_number_acknowledged"] == 2


async def test_a_failed_attempt_counts_as_sent(app_hub):
    sub, headers, n = await _webhook(app_hub)
    engine = app_hub.hub.engine
    leased = await claim_batch(engine, "webhook", sub, 100, LEASE)
    # 1 accepted, 2 refused (503), the rest given back unsent.
    await record_batch(engine, leased[:1], leased[1], "HTTP 503", leased[2:], RetryPolicy(lease_seconds=LEASE),
                       "webhook")
    status = await _status(app_hub, sub, headers)
    assert status["last_event_number_sent"] == 2 and status["last_event_number_acknowledged"] == 1
    assert status["head"]["event_number"] == 2 and status["head"]["last_error"] == "HTTP 503"
    assert status["pending"] == n - 1

