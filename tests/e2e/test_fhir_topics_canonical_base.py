"""The FHIR SubscriptionTopics under the operator's canonical base (`S117_CANONICAL_BASE`), as every
other URL the hub mints: the topic list, the criteria a Subscription must name, the Subscription read
back, and the notifications a real receiver gets. Before, the topics were fixed under
https://s117-hub.localhost whatever the base, so a production hub's subscribers had to name a localhost
URL and got notifications naming it. A real hub process and a real HTTP receiver."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.e2e.conftest import SECRET, make_clients
from tests.e2e.test_fhir_subscriptions import COUNCIL, TOPIC, _status, _subscription
from tests.support import HubProcess, Receiver

pytestmark = pytest.mark.e2e
BASE = "https://s117.example.nhs.uk"
OURS = f"{BASE}/fhir/SubscriptionTopic/s117-entitlement-started"


async def test_topics_are_under_the_configured_canonical_base(tmp_path, sharing_file):  # noqa: ANN001
    receiver = Receiver(secret=SECRET)
    hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_CANONICAL_BASE=BASE)
    keys = await make_clients(hub.db_url)
    await receiver.start()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            h = {"X-API-Key": keys[COUNCIL], "Content-Type": "application/fhir+json"}
            topics = (await http.get("/v1/fhir/SubscriptionTopic", headers=h)).json()
            assert "entry" in topics, topics
            urls = {e["resource"]["url"] for e in topics["entry"]}
            assert OURS in urls and all(u.startswith(f"{BASE}/fhir/SubscriptionTopic/") for u in urls)
            # The default base's topic is not one of this hub's.
            r = await http.post("/v1/fhir/Subscription", headers=h,
                                content=orjson.dumps(_subscription(receiver.url(COUNCIL), topic=TOPIC)))
            assert r.status_code == 422 and "Subscription.criteria" in r.text, r.text
            r = await http.post("/v1/fhir/Subscription", headers=h,
                                content=orjson.dumps(_subscription(receiver.url(COUNCIL), topic=OURS)))
            assert r.status_code == 201, r.text
            sub = r.json()
            assert sub["criteria"] == OURS
            assert (await http.get(f"/v1/fhir/Subscription/{sub['id']}", headers=h)).json()["criteria"] == OURS
            assert _status(receiver.received[0].body)["topic"] == OURS  # the handshake
            metadata = (await http.get("/v1/fhir/metadata", headers=h)).text
            assert OURS in metadata and "s117-hub.localhost/fhir/SubscriptionTopic" not in metadata
    finally:
        hub.stop()
        await receiver.stop()
