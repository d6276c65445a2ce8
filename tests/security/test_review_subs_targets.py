"""Review (subscriptions): a URL with credentials in it is refused on every
kind of endpoint. `POST /v1/subscriptions` refused `https://user:pw@host/` for
a webhook, but `POST /v1/fhir/Subscription` took the same URL as a rest-hook
endpoint: the password was stored and shown back in the Subscription resource
(`channel.endpoint`, on creation and every GET). The refusal is now part of
the target check both share (hub/delivery/targets.py `url_problem`)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from hub.delivery.targets import url_problem
from hub.fhir.subscriptions import TOPIC_BASE
from hub.store.schema import subscriptions

COUNCIL = "E06000060"
CREDENTIAL_URLS = ["http://user:s3cret@127.0.0.1:9/hook", "http://token@127.0.0.1:9/hook",
                   "http://:s3cret@127.0.0.1:9/hook", "http://example.org@127.0.0.1:9/hook"]


def _fhir_subscription(endpoint: str) -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "S117 register",
            "criteria": f"{TOPIC_BASE}/s117-entitlement-started",
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}}


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
async def test_the_target_check_refuses_credentials(url):
    why = await url_problem(url, ["127.0.0.1"])
    assert why is not None and "credentials" in why


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
async def test_a_fhir_rest_hook_endpoint_with_credentials_is_422_and_nothing_is_kept(app_hub, url):
    r = await app_hub.http.post("/v1/fhir/Subscription", headers={"X-API-Key": app_hub.keys[COUNCIL],
                                                                 "Content-Type": "application/fhir+json"},
                                json=_fhir_subscription(url))
    assert r.status_code == 422, r.text
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Subscription.channel.endpoint"]
    assert "credentials" in issue["diagnostics"]
    assert "s3cret" not in r.text and "S117-Webhook-Secret" not in r.headers
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(subscriptions))).scalar_one() == 0


async def test_a_webhook_with_credentials_is_still_422_naming_url(app_hub):
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[COUNCIL]},
                                json={"url": "http://user:s3cret@127.0.0.1:9/hook"})
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["url"]
