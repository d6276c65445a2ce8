"""Every /v1 answer is `Cache-Control: no-store` unless its route states its own: quarantined input as
sent (names, dates of birth, NHS numbers), a person's position, and refusals too (a 404 says who is
not on the register; a /v1/ops problem). Before, `GET /v1/quarantine/{id}` and the person query were
cacheable by a browser or a proxy, and /v1/ops' problems lacked the no-store its answers had."""

from __future__ import annotations

import orjson

from hub.clients import add_client
from tests.unit.test_quarantine_resend import BAD


async def test_personal_answers_and_refusals_are_not_stored(app_hub):  # noqa: ANN001
    trust = {"X-API-Key": app_hub.keys["trust"]}
    r = await app_hub.http.post("/v1/register-changes", content=orjson.dumps(BAD),
                                headers={**trust, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.headers["cache-control"] == "no-store"
    held = await app_hub.http.get(f"/v1/quarantine/{r.json()['quarantine_id']}", headers=trust)
    assert held.status_code == 200 and BAD["person"]["nhs_number"] in held.text
    assert held.headers["cache-control"] == "no-store"
    assert (await app_hub.http.get("/v1/quarantine", headers=trust)).headers["cache-control"] == "no-store"
    ok = {**BAD, "source_message_id": "ns-ok", "legal_status_code": "03"}
    r = await app_hub.http.post("/v1/register-changes", json=ok, headers=trust)
    assert r.status_code == 202 and r.headers["cache-control"] == "no-store"
    person = await app_hub.http.get(f"/v1/persons/{r.json()['person_id']}/s117", headers=trust)
    assert person.status_code == 200 and person.headers["cache-control"] == "no-store"
    admin = (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]
    for status, answer in ((401, await app_hub.http.get("/v1/ops/flows")),
                           (404, await app_hub.http.get("/v1/ops/deliveries/nope", headers={"X-API-Key": admin})),
                           (404, await app_hub.http.get("/v1/persons/00000000-0000-4000-8000-000000000000/s117",
                                                        headers=trust))):
        assert answer.status_code == status and answer.headers["cache-control"] == "no-store", answer.text
    # Outside /v1 (health, the OpenAPI document): as before.
    assert "cache-control" not in (await app_hub.http.get("/health")).headers
