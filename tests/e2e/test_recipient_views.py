"""Over real HTTP: a history posted newest first still leaves every receiver,
webhook or pull feed, holding the truth once it applies the highest version
per person; the body told something the older history contradicts holds a
correction naming the event it superseded."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import pytest
import yaml

from hub.clients import add_client
from hub.codec import from_jsonable
from hub.domain.model import S117Status
from hub.domain.views import NOT_INVOLVED, views_for
from hub.fhir.messages import FIELD_GROUPS, read_position
from hub.fhir.validate import validate_message
from hub.sharing import SharingAgreements
from hub.store.db import create_engine, create_schema
from hub.domain.dates import england_day
from tests.e2e.conftest import SECRET
from tests.histories import BOB_ICB, BUCKS, HW_ICB, ORGS, OXON, WORCS, agreements_yaml, late_correction_history, materialise
from tests.support import HubProcess, Receiver

pytestmark = pytest.mark.e2e

WEBHOOK_ORGS = (BUCKS, WORCS, BOB_ICB)
FEED_ORGS = (HW_ICB, OXON)


class FeedReader:
    def __init__(self, key: str, subscription_id: str) -> None:
        self.key, self.subscription_id, self.cursor = key, subscription_id, 0
        self.items: list[dict[str, Any]] = []

    async def pull(self, http: httpx.AsyncClient) -> None:
        while True:
            r = await http.get(f"/v1/feeds/{self.subscription_id}", params={"after": self.cursor},
                               headers={"X-API-Key": self.key})
            assert r.status_code == 200, r.text
            body = r.json()
            self.items += body["items"]
            self.cursor = body["next_cursor"]
            if not body["more"]:
                return


def highest(messages: list[dict[str, Any]], person_id: str) -> tuple[int, dict[str, Any]] | None:
    """What a receiver holds: the position of the highest version seen (duplicates by event id ignored)."""
    best: tuple[int, dict[str, Any]] | None = None
    seen: set[str] = set()
    for bundle in messages:
        if bundle["id"] in seen:
            continue
        seen.add(bundle["id"])
        position = read_position(bundle)
        assert position is not None
        if position.person_id == person_id and (best is None or position.version > best[0]):
            best = (position.version, position.view)
    return best


async def test_a_history_posted_newest_first_leaves_every_receiver_with_the_truth(tmp_path):
    sharing_path = tmp_path / "sharing.yaml"
    sharing_path.write_text(agreements_yaml())
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_path)
    engine = create_engine(hub.db_url)
    await create_schema(engine)
    # Arbitrary histories in any arrival order (moves before the detention, two trusts'
    # hospitals): written as the hub operator; the access policy is tested in tests/security.
    trust_key = (await add_client(engine, "Trust", "RNU", "trust", ["register:write", "s117:read", "hub:admin"]))[1]
    keys = {org: (await add_client(engine, org, org, "council" if org[0] == "E" else "icb",
                                   ["subscriptions:write", "s117:read"]))[1] for org in ORGS}
    await engine.dispose()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            feeds: dict[str, FeedReader] = {}
            for org in WEBHOOK_ORGS:
                r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[org]},
                                    json={"url": receiver.url(org), "secret": SECRET})
                assert r.status_code == 201, r.text
            for org in FEED_ORGS:
                r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[org]}, json={"channel": "feed"})
                assert r.status_code == 201, r.text
                feeds[org] = FeedReader(keys[org], r.json()["subscription_id"])

            changes = materialise(late_correction_history(), "e2e-views", seed=42)
            person_id = None
            for change in reversed(changes):  # newest first
                r = await http.post("/v1/register-changes", headers={"X-API-Key": trust_key}, json=change)
                assert r.status_code == 202, r.text
                person_id = r.json()["person_id"]
                await asyncio.sleep(0.3)  # let the dispatcher tell everyone what it knows so far

            status = from_jsonable(S117Status, (await http.get(
                f"/v1/persons/{person_id}/s117", headers={"X-API-Key": trust_key})).json())
            today = england_day()
            sharing = SharingAgreements.load(sharing_path, FIELD_GROUPS)
            truth = views_for(status, ORGS, lambda org: sharing.field_groups_for(org, today))

            def held() -> dict[str, Any]:
                out = {org: highest([orjson.loads(m.body) for m in receiver.received if m.org == org], person_id)
                       for org in WEBHOOK_ORGS}
                out |= {org: highest([item["message"] for item in feeds[org].items], person_id) for org in FEED_ORGS}
                return out

            deadline = time.monotonic() + 30
            while True:
                for reader in feeds.values():
                    await reader.pull(http)
                now = held()
                if all((now[org][1] if now[org] else NOT_INVOLVED) == truth[org] for org in ORGS):
                    break
                assert time.monotonic() < deadline, f"receivers hold {now}, the truth is {truth}"
                await asyncio.sleep(0.2)

            # The truth, in plain terms: Buckinghamshire re-determined by the
            # re-detention (Worcs 4.3.3), H&W ICB kept (Worcs 4.4.2), BOB ICB not.
            assert now[BUCKS][1]["roles"] == ["responsible-council"]
            assert now[BUCKS][1]["responsible_commissioner"] == HW_ICB
            assert now[HW_ICB][1]["roles"] == ["responsible-commissioner"]
            assert now[BOB_ICB][1] == {"roles": []}
            bob_messages = [m for m in receiver.received if m.org == BOB_ICB]
            bob = [orjson.loads(m.body) for m in bob_messages]
            # The correction is `s117-notification-corrected`, or (when BOB ICB is still on the distribution
            # as the outgoing body of a transfer not yet accepted) the routed event marked as a correction:
            # either way it names the event it supersedes and carries the corrected position.
            corrections = [i for i, b in enumerate(bob) if read_position(b).supersedes
                           and read_position(b).view["roles"] == []]
            assert corrections, "BOB ICB was told it was responsible: it must be corrected"
            k = corrections[0]
            assert k > 0 and read_position(bob[k - 1]).view["roles"] == ["responsible-commissioner"]
            # The correction names the event it supersedes: the last one BOB ICB was sent.
            assert read_position(bob[k]).supersedes == bob_messages[k - 1].headers["s117-event-id"]
            for bundle in bob:
                validate_message(bundle)
            assert all(m.signature_ok for m in receiver.received)
            # Message ids are stable per (event, recipient): none differs for one event id.
            ids: dict[str, str] = {}
            for m in receiver.received:
                assert ids.setdefault(m.headers["s117-event-id"] + m.org, m.headers["s117-message-id"]) == \
                    m.headers["s117-message-id"]
    finally:
        hub.stop()
        await receiver.stop()
