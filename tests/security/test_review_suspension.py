"""Review of the 410 Gone suspension's endpoints as a careless or hostile client would use them
(hub/api/subscriptions.py GET /v1/subscriptions/{id}, POST .../resume; hub/api/ops.py's resume).
The app in process on a real SQLite store."""

from __future__ import annotations

from hub.clients import add_client

COUNCIL = "E06000060"


async def _subscribe(app_hub, body: dict) -> str:  # noqa: ANN001
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[COUNCIL]}, json=body)
    assert r.status_code == 201, r.text
    return r.json()["subscription_id"]


async def test_resuming_a_channel_that_is_never_suspended_says_so(app_hub) -> None:  # noqa: ANN001
    """A pull feed or a council file is never suspended (only a push endpoint answers 410 Gone): the 409
    names the channel as why, rather than saying its messages are being sent to an endpoint."""
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    admin = {"X-API-Key": (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    for body in ({"channel": "feed"}, {"channel": "council-file", "layout": "swift_csv", "schedule": "daily 02:00"}):
        sid = await _subscribe(app_hub, body)
        for path, key in ((f"/v1/subscriptions/{sid}/resume", h), (f"/v1/ops/subscriptions/{sid}/resume", admin)):
            r = await app_hub.http.post(path, headers=key)
            assert r.status_code == 409, r.text
            problem = r.json()
            assert problem["type"].endswith("/not-suspendable"), problem
            assert problem["errors"] == [{"field": "channel", "reason":
                                          f"{body['channel']}: only a push subscription (webhook, FHIR rest-hook) "
                                          "is suspended, when its endpoint answers 410 Gone"}]
            assert body["channel"] in problem["detail"]
        # Stopped: still said as stopped.
        assert (await app_hub.http.delete(f"/v1/subscriptions/{sid}", headers=h)).status_code == 200
        r = await app_hub.http.post(f"/v1/subscriptions/{sid}/resume", headers=h)
        assert r.status_code == 409 and r.json()["type"].endswith("/subscription-stopped")


async def test_the_new_endpoints_refuse_other_organisations_bad_ids_and_missing_scopes_alike(app_hub) -> None:  # noqa: ANN001
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    sid = await _subscribe(app_hub, {"channel": "feed"})
    other = {"X-API-Key": (await add_client(app_hub.hub.engine, "BOB ICB", "QU9", "icb", ["subscriptions:write"]))[1]}
    unscoped = {"X-API-Key": (await add_client(app_hub.hub.engine, "reader", COUNCIL, "council", ["s117:read"]))[1]}
    missing = "00000000-0000-4000-8000-000000000000"
    # Another organisation's key: the same 404 as for an id that does not exist (its existence not revealed).
    for method, path in (("GET", ""), ("POST", "/resume")):
        theirs = await app_hub.http.request(method, f"/v1/subscriptions/{sid}{path}", headers=other)
        none = await app_hub.http.request(method, f"/v1/subscriptions/{missing}{path}", headers=other)
        assert theirs.status_code == none.status_code == 404
        assert theirs.json() == {**none.json(), **{k: theirs.json()[k] for k in ("instance",) if k in theirs.json()}}
        assert sid not in theirs.text
        # Without the scope: 403 before anything is looked up.
        assert (await app_hub.http.request(method, f"/v1/subscriptions/{sid}{path}", headers=unscoped)).status_code == 403
        # Ids that are not UUIDs, very long, or path tricks: 404 (or the router's own 404/405), never a 500.
        for bad in ("x" * 4000, "..%2F..%2Fops%2Fflows", "%00", "' OR 1=1 --", "%F0%9F%92%A9"):
            r = await app_hub.http.request(method, f"/v1/subscriptions/{bad}{path}", headers=h)
            assert r.status_code in (404, 405), (bad, r.status_code, r.text)
    # The operator's resume: hub:admin only (a subscriber's key is 403, whatever its organisation).
    assert (await app_hub.http.post(f"/v1/ops/subscriptions/{sid}/resume", headers=h)).status_code == 403


async def test_a_body_sent_to_resume_is_not_read_and_a_huge_one_is_refused_before_it(app_hub) -> None:  # noqa: ANN001
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    sid = await _subscribe(app_hub, {"channel": "feed"})
    r = await app_hub.http.post(f"/v1/subscriptions/{sid}/resume", headers=h, json={"state": "active"})
    assert r.status_code == 409 and r.json()["type"].endswith("/not-suspendable")
    r = await app_hub.http.post(f"/v1/subscriptions/{sid}/resume", headers=h, content=b"x" * (40 * 1024 * 1024))
    assert r.status_code == 413, r.status_code
