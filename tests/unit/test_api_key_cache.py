"""API keys (hub/clients.py ClientCache): a key found active is trusted for a
few seconds without a look-up; a key revoked in the store stops working once
that time has passed; a key not known is looked up every time, so one just
added works at once."""

from __future__ import annotations

from sqlalchemy import update

from hub.clients import add_client
from hub.store.schema import api_clients


async def _revoke(hub, org: str) -> None:  # noqa: ANN001
    async with hub.engine.begin() as conn:
        await conn.execute(update(api_clients).where(api_clients.c.org_code == org).values(active=False))


async def test_a_revoked_key_stops_working_when_its_cached_time_is_up(app_hub):
    h = {"X-API-Key": app_hub.keys["E06000060"]}
    cache = app_hub.hub.clients
    assert cache.ttl == 5.0  # the default, S117_API_KEY_CACHE_SECONDS
    assert (await app_hub.http.get("/v1/subscriptions", headers=h)).status_code == 200
    await _revoke(app_hub.hub, "E06000060")
    # Within the cached time the key still works (the look-up is skipped) ...
    assert (await app_hub.http.get("/v1/subscriptions", headers=h)).status_code == 200
    # ... and once it has passed, the store's answer holds.
    for key in list(cache._held):
        cache._held[key] = (0.0, cache._held[key][1])
    r = await app_hub.http.get("/v1/subscriptions", headers=h)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


async def test_requests_finding_a_held_key_up_together_share_one_look_up(app_hub):
    """A busy source's connections all find its key's time up at once: one read
    of the store answers them all (on PostgreSQL each read was a pool connection,
    and a burst of them opened connections past the pool's size)."""
    import asyncio

    h = {"X-API-Key": app_hub.keys["E06000060"]}
    cache = app_hub.hub.clients
    assert (await app_hub.http.get("/v1/subscriptions", headers=h)).status_code == 200
    for key in list(cache._held):
        cache._held[key] = (0.0, cache._held[key][1])
    looked_up = cache._look_up
    calls = []

    async def counted(*args):  # noqa: ANN002, ANN202
        calls.append(args[1])
        return await looked_up(*args)

    cache._look_up = counted
    answers = await asyncio.gather(*(app_hub.http.get("/v1/subscriptions", headers=h) for _ in range(12)))
    assert [r.status_code for r in answers] == [200] * 12
    assert len(calls) == 1
    # Revoked, its time up: every request waiting on the one look-up is refused.
    await _revoke(app_hub.hub, "E06000060")
    for key in list(cache._held):
        cache._held[key] = (0.0, cache._held[key][1])
    answers = await asyncio.gather(*(app_hub.http.get("/v1/subscriptions", headers=h) for _ in range(6)))
    assert [r.status_code for r in answers] == [401] * 6 and len(calls) == 2


async def test_with_no_cache_a_revoked_key_is_refused_at_once_and_a_new_key_works_at_once(app_hub):
    app_hub.hub.clients.ttl = 0
    h = {"X-API-Key": app_hub.keys["E08000025"]}
    assert (await app_hub.http.get("/v1/subscriptions", headers=h)).status_code == 200
    await _revoke(app_hub.hub, "E08000025")
    assert (await app_hub.http.get("/v1/subscriptions", headers=h)).status_code == 401
    # An unknown key is never remembered as unknown: added now, it works now.
    app_hub.hub.clients.ttl = 5.0
    assert (await app_hub.http.get("/v1/subscriptions", headers={"X-API-Key": "not-yet"})).status_code == 401
    await add_client(app_hub.hub.engine, "Bucks 2", "E06000060", "council", ["subscriptions:write"], api_key="not-yet")
    assert (await app_hub.http.get("/v1/subscriptions", headers={"X-API-Key": "not-yet"})).status_code == 200


async def test_register_changes_authenticates_as_every_route_does(app_hub):
    """POST /v1/register-changes reads its key without FastAPI's dependencies:
    the same answers, nothing recorded, for no key, an unknown key, a revoked
    key and a key without the scope; the key is documented on the route."""
    from hub.store.schema import quarantine, register_changes
    from sqlalchemy import func, select

    app_hub.hub.clients.ttl = 0
    change = {"source_message_id": "auth-1", "change_type": "detained"}
    r = await app_hub.http.post("/v1/register-changes", json=change)
    assert r.status_code == 401 and r.json()["title"] == "Authentication required"
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": "s117_unknown"}, json=change)
    assert r.status_code == 401 and "not recognised" in r.json()["detail"]
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json=change)
    assert r.status_code == 403 and "register:write" in r.json()["detail"]
    await _revoke(app_hub.hub, "RV3")
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["other-trust"]},
                                json=change)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    async with app_hub.hub.engine.connect() as conn:
        for table in (register_changes, quarantine):
            assert (await conn.execute(select(func.count()).select_from(table))).scalar_one() == 0
    doc = (await app_hub.http.get("/openapi.json")).json()
    params = doc["paths"]["/v1/register-changes"]["post"]["parameters"]
    assert [p["name"] for p in params] == ["x-api-key"] and params[0]["in"] == "header"
