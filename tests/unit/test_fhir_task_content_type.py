"""A Task's PUT and PATCH read only the body formats they name (FHIR http.html#mime-type; JSON Patch is
application/json-patch+json): a Task sent as XML, a FHIRPath Patch (a Parameters resource as
application/fhir+json), or a body with no Content-Type is a 415 OperationOutcome naming `Content-Type`,
and nothing is done; before, each was read as JSON whatever it was labelled (an XML body a 422 about the
Task's structure, a mislabelled one acted on)."""

from __future__ import annotations

import orjson

from tests.unit.test_workflows_api import WORCS, h, workflow_hub  # noqa: F401 - the fixture

ACCEPT = [{"op": "replace", "path": "/status", "value": "accepted"}]


def _refused_naming_content_type(r) -> None:  # noqa: ANN001
    assert r.status_code == 415, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    (issue,) = r.json()["issue"]
    assert issue["code"] == "not-supported" and issue["expression"] == ["Content-Type"], issue


async def test_put_and_patch_refuse_a_body_they_do_not_read_and_do_nothing(workflow_hub):  # noqa: F811
    http = workflow_hub.http
    t = (await http.get("/v1/transfers", headers=h(workflow_hub, WORCS))).json()["items"][0]
    url = f"/v1/fhir/Task/{t['fhir_task_id']}"
    task = (await http.get(url, headers=h(workflow_hub, WORCS))).json()
    accepted = orjson.dumps({**task, "status": "accepted"})

    for content_type in ("application/fhir+xml", "text/plain", None):
        headers = {**h(workflow_hub, WORCS), **({"Content-Type": content_type} if content_type else {})}
        _refused_naming_content_type(await http.put(url, headers=headers, content=accepted))
    r = await http.put(url, headers={**h(workflow_hub, WORCS),
                                     "Content-Type": "application/fhir+json; fhirVersion=3.0"}, content=accepted)
    _refused_naming_content_type(r)
    fhirpath_patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Task.status"},
        {"name": "value", "valueCode": "accepted"}]}]}
    r = await http.patch(url, headers={**h(workflow_hub, WORCS), "Content-Type": "application/fhir+json"},
                         content=orjson.dumps(fhirpath_patch))
    _refused_naming_content_type(r)
    r = await http.patch(url, headers={**h(workflow_hub, WORCS), "Content-Type": "text/plain"},
                         content=orjson.dumps(ACCEPT))
    _refused_naming_content_type(r)
    assert (await http.get(url, headers=h(workflow_hub, WORCS))).json()["status"] == "requested"  # nothing done

    # JSON Patch as its own media type is read, and acted on.
    r = await http.patch(url, headers={**h(workflow_hub, WORCS), "Content-Type": "application/json-patch+json"},
                         content=orjson.dumps(ACCEPT))
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
