"""A request body sent with a Content-Encoding (gzip, say) is refused on every route by the limits in
front (hub/api/limits.py), before the key: `415` naming `Content-Encoding`, an OperationOutcome under
/v1/fhir/. The hub reads a body as sent: before, a gzip'd register change was a 422 "not JSON", a gzip'd
snapshot was read as text, and a council file's check was its route's own."""

from __future__ import annotations

import gzip

import orjson
import pytest

from tests.unit.test_quarantine_resend import BAD


@pytest.mark.parametrize(("path", "content_type"), [
    ("/v1/register-changes", "application/json"),
    ("/v1/council-files?format=swift_csv", "text/csv"),
    ("/v1/reconciliations?format=ndjson", "application/x-ndjson"),
    ("/v1/packages", "application/json"),
    ("/v1/fhir/$process-message", "application/fhir+json"),
])
async def test_a_compressed_body_is_refused_naming_content_encoding(app_hub, path: str, content_type: str):  # noqa: ANN001
    body = gzip.compress(orjson.dumps({**BAD, "legal_status_code": "03"}))
    for key in (app_hub.keys["trust"], "not-a-key"):
        r = await app_hub.http.post(path, content=body, headers={
            "X-API-Key": key, "Content-Type": content_type, "Content-Encoding": "gzip"})
        assert r.status_code == 415, r.text
        if path.startswith("/v1/fhir/"):
            assert r.headers["content-type"] == "application/fhir+json"
            assert [i["expression"] for i in r.json()["issue"]] == [["Content-Encoding"]]
        else:
            assert r.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in r.json()["errors"]] == ["Content-Encoding"]


async def test_identity_is_no_encoding(app_hub):  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", content=orjson.dumps(BAD), headers={
        "X-API-Key": app_hub.keys["trust"], "Content-Type": "application/json", "Content-Encoding": "identity"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] != "Content-Encoding", r.text
