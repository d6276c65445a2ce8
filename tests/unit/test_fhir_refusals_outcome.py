"""Under /v1/fhir/ every refusal is a FHIR OperationOutcome (application/fhir+json): a FHIR client reads
nothing else. The limits' answers already were (a body too large or too slow, an answer too late), but a
missing or unknown key (401), a key without the scope (403), a parameter refused (422) and an unknown
method (405) came as RFC 9457 problem details, which a FHIR client cannot read. The issue names the field
where there is one, never the value."""

from __future__ import annotations

from hub.clients import add_client

FHIR = "application/fhir+json"


def _outcome(r, status: int, code: str) -> list[dict]:  # noqa: ANN001
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(FHIR), r.headers["content-type"]
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert {i["code"] for i in body["issue"]} == {code}, body
    return body["issue"]


async def test_the_shared_refusals_under_fhir_are_operation_outcomes(app_hub):  # noqa: ANN001
    http = app_hub.http
    _outcome(await http.get("/v1/fhir/Subscription/x/$events"), 401, "login")
    _outcome(await http.get("/v1/fhir/Subscription/x/$events", headers={"X-API-Key": "not-a-key"}), 401, "login")
    trust = {"X-API-Key": app_hub.keys["trust"]}  # register:write, not subscriptions:write
    _outcome(await http.get("/v1/fhir/Subscription/x/$events", headers=trust), 403, "forbidden")
    council = {"X-API-Key": app_hub.keys["E06000060"]}
    issues = _outcome(await http.get("/v1/fhir/Subscription/x/$events", params={"eventsSinceNumber": "5_0"},
                                     headers=council), 422, "invalid")
    assert [i["expression"] for i in issues] == [["eventsSinceNumber"]] and "5_0" not in str(issues)
    r = await http.delete("/v1/fhir/$process-message", headers=trust)
    _outcome(r, 405, "not-supported")
    assert "POST" in r.headers["allow"]


async def test_outside_fhir_the_same_refusals_stay_problem_details(app_hub):  # noqa: ANN001
    admin = (await add_client(app_hub.hub.engine, "op", "HUB", "operator", ["hub:admin"]))[1]
    r = await app_hub.http.get("/v1/quarantine", params={"limit": "5_0"}, headers={"X-API-Key": admin})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    r = await app_hub.http.get("/v1/quarantine")
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
