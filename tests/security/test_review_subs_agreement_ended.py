"""Review (replay and council files out), reproduced on a running hub
restarted with Buckinghamshire's data-sharing agreement gone: its person
reads were the one 404 and `POST /v1/exports` a 403 "no data-sharing
agreement in force names this organisation", but
`GET /v1/subscriptions/{id}/events` still answered every message it had ever
been sent (68: Patient with NHS number and name) and `GET /v1/exports/{id}`
still streamed its old register extract. A replay or a download is a read:
no agreement in force, no read (403 `no-agreement`, the download audited as
refused). The hub operator still reads them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from hub.clients import add_client
from hub.exports import ExportService
from hub.store.schema import access_decisions
from tests.support import push_scenario

COUNCIL = "E06000060"


def _end_agreement(app_hub, monkeypatch) -> None:  # noqa: ANN001
    """Every agreement naming the council gone (ended, or withdrawn by the operator)."""
    monkeypatch.delitem(app_hub.hub.sharing._by_org, COUNCIL)


async def test_replay_by_event_number_needs_an_agreement_in_force(app_hub, monkeypatch):
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    sid = (await app_hub.http.post("/v1/subscriptions", headers=key, json={"channel": "feed"})).json()[
        "subscription_id"]
    await push_scenario(app_hub, seed=51)
    r = await app_hub.http.get(f"/v1/subscriptions/{sid}/events", headers=key)
    assert r.status_code == 200 and r.json()["items"]

    _end_agreement(app_hub, monkeypatch)
    r = await app_hub.http.get(f"/v1/subscriptions/{sid}/events", headers=key)
    assert r.status_code == 403, r.status_code  # (a 200 would be the messages: not printed)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["rule"] == "no-agreement" and "items" not in r.json()
    async with app_hub.hub.engine.connect() as conn:  # the refused read is audited
        refused = (await conn.execute(select(access_decisions.c.decision, access_decisions.c.rule,
                                             access_decisions.c.action).where(
            access_decisions.c.channel == "replay", access_decisions.c.org_code == COUNCIL))).all()
        await conn.rollback()
    # The allowed replay before it is recorded too (tests/security/test_disclosure_review30_replay.py).
    assert [tuple(x) for x in refused] == [("allowed", "allowed", "read"), ("denied", "no-agreement", "read")]

    _, admin = await add_client(app_hub.hub.engine, "Engineer", "HUB", "hub-operator", ["hub:admin"])
    r = await app_hub.http.get(f"/v1/subscriptions/{sid}/events", headers={"X-API-Key": admin})
    assert r.status_code == 404  # the operator is no subscriber: the route is the organisation's own


async def test_an_extract_download_needs_an_agreement_in_force(app_hub, monkeypatch, tmp_path: Path):
    await push_scenario(app_hub, seed=52)
    h = app_hub.hub
    h.exports = ExportService(h.engine, h.ref, h.agreements, h.sharing, h.protector, tmp_path / "exports", 36.0)
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    export_id = (await app_hub.http.post("/v1/exports", headers=key, json={"layout": "swift_csv"})).json()["export_id"]
    await h.exports.build_waiting()
    assert (await app_hub.http.get(f"/v1/exports/{export_id}", headers=key)).status_code == 200

    _end_agreement(app_hub, monkeypatch)
    r = await app_hub.http.get(f"/v1/exports/{export_id}", headers=key)
    assert r.status_code == 403, r.status_code
    assert r.json()["rule"] == "no-agreement"
    async with h.engine.connect() as conn:
        last = (await conn.execute(select(access_decisions.c.decision, access_decisions.c.rule)
                                   .where(access_decisions.c.channel == "export")
                                   .order_by(access_decisions.c.decision_id.desc()).limit(1))).one()
    assert tuple(last) == ("denied", "no-agreement")

    _, admin = await add_client(h.engine, "Engineer", "HUB", "hub-operator", ["hub:admin"])
    assert (await app_hub.http.get(f"/v1/exports/{export_id}", headers={"X-API-Key": admin})).status_code == 200
