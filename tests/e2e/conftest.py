from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.clients import add_client
from hub.store.db import create_engine, create_schema

SECRET = "e2e-webhook-secret-0123456789abcdef0123"

# Buckinghamshire Council may receive every event except the host-area move
# notice; Worcestershire (host area) only that notice; BOB ICB everything.
SHARING = {
    "version": 1,
    "agreements": [
        {"id": "DSA-TEST-BUCKS", "valid_from": "2020-01-01", "recipients": [
            {"org_code": "E06000060", "events": [
                "s117-register-change-recorded", "s117-entitlement-started", "s117-entitlement-ended",
                "s117-responsibility-transferred", "s117-discharge-refused",
                "s117-dispute-raised", "s117-dispute-resolved", "s117-review-due"],
             "field_groups": ["identity", "demographics", "legal-status", "responsibility", "explanations"]},
            {"org_code": "QU9", "events": ["*"], "field_groups": ["identity", "responsibility"]},
            # The detaining trust is pushed nothing but reads its patients' position (identity for lookup).
            {"org_code": "RNU", "events": [], "field_groups": ["identity", "legal-status", "responsibility"]},
        ]},
        {"id": "DSA-TEST-HOST", "valid_from": "2020-01-01", "recipients": [
            {"org_code": "E10000034", "events": ["s117-moved-out-of-area"], "field_groups": ["responsibility"]},
        ]},
    ],
}


@pytest.fixture
def sharing_file(tmp_path: Path) -> Path:
    path = tmp_path / "sharing.yaml"
    path.write_text(yaml.safe_dump(SHARING))
    return path


async def make_clients(db_url: str) -> dict[str, str]:
    engine = create_engine(db_url)
    await create_schema(engine)
    keys = {
        "trust": (await add_client(engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"]))[1],
        "E06000060": (await add_client(engine, "Bucks", "E06000060", "council", ["subscriptions:write", "s117:read"]))[1],
        "QU9": (await add_client(engine, "BOB ICB", "QU9", "icb", ["subscriptions:write", "s117:read"]))[1],
        "E10000034": (await add_client(engine, "Worcs", "E10000034", "council", ["subscriptions:write", "s117:read"]))[1],
    }
    await engine.dispose()
    return keys


async def hub_telling_councils(tmp_path: Path, agreement_id: str, councils: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """A hub process (not started) whose agreements add one granting `councils` (code -> name) every event with
    `identity` and `responsibility`, the clients of `make_clients` and a council client each for `councils`
    (able to subscribe, write and read): the process and the keys by org code."""
    from tests.support import HubProcess

    sharing = dict(SHARING)
    sharing["agreements"] = [*SHARING["agreements"], {
        "id": agreement_id, "valid_from": "2020-01-01", "recipients": [
            {"org_code": code, "events": ["*"], "field_groups": ["identity", "responsibility"]} for code in councils]}]
    (tmp_path / "sharing.yaml").write_text(yaml.safe_dump(sharing))
    hub = HubProcess(tmp_path, sharing_path=tmp_path / "sharing.yaml")
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    for code, name in councils.items():
        keys[code] = (await add_client(engine, name, code, "council",
                                       ["register:write", "subscriptions:write", "s117:read"]))[1]
    await engine.dispose()
    return hub, keys


async def subscribe_webhook(http: Any, keys: dict[str, str], receiver: Any, org: str = "E06000060") -> str:
    """`org`'s webhook subscription to `receiver` (a tests.support.Receiver signing with SECRET), made with
    its key from `make_clients` and answered 201: its subscription id."""
    r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[org]},
                        json={"url": receiver.url(org), "secret": SECRET})
    assert r.status_code == 201, r.text
    return r.json()["subscription_id"]
