"""Bad input to the transfer and dispute APIs (outside review): a problem
naming the field and why, never a bare 500 nor half a minute of CPU.

- Interim shares were any decimal: "1E+2000000" overflowed into a 500, and
  "1E+999990" cost about 30 s of CPU making it an integer; now each share is
  0..100 before any arithmetic, and a share with more than two decimals is
  refused even when the context's rounding would hide it.
- A FHIR Task PUT whose statusReason was not an object was a 500
  (AttributeError); a contest's reason through the Task was unbounded.
- A workflow's bad-terms refusal (422) named no field: now `errors` does.
"""

from __future__ import annotations

import orjson

from tests.unit.test_dispute_resolution_api import _keys, _raise
from tests.unit.test_workflows_api import drain, h, workflow_hub  # noqa: F401 (the fixture)

BUCKS, WORCS = "E06000060", "E10000034"


def _problem_naming(r, field: str, status: int = 422) -> None:  # noqa: ANN001
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in r.json()["errors"]], r.text


async def test_interim_shares_are_bounded_percentages_and_bad_terms_name_the_field(workflow_hub):
    app, http = workflow_hub, workflow_hub.http
    await _keys(app)
    r = await _raise(app, "QU9", "commissioner", ["QU9", "QGH"])
    assert r.status_code == 201, r.text
    url = f"/v1/disputes/{r.json()['case_id']}/interim"

    async def interim(shares: dict, lead: str = "QU9"):  # noqa: ANN202
        return await http.post(url, headers=h(app, "QU9"), json={"lead_body": lead, "shares": shares})

    _problem_naming(await interim({"QU9": "1E+2000000", "QGH": "0"}), "shares.QU9")
    _problem_naming(await interim({"QU9": "1E+999990", "QGH": "0"}), "shares.QU9")  # refused at once
    _problem_naming(await interim({"QU9": "150", "QGH": "-50"}), "shares.QGH")
    _problem_naming(await interim({"QU9": "50.000000000000000000000000000001",
                                   "QGH": "49.999999999999999999999999999999"}), "shares.QU9")
    _problem_naming(await interim({"QU9": "60", "QGH": "30"}), "shares")  # shares-must-total-100
    assert (await interim({"QU9": "60", "QGH": "30"})).json()["rule"] == "shares-must-total-100"
    _problem_naming(await interim({"QU9": "60", "QGH": "40"}, lead=BUCKS), "lead_body")
    r = await interim({"QU9": "60.50", "QGH": "39.50"})
    assert r.status_code == 200, r.text
    assert r.json()["proposal"]["shares"] == [["QU9", 6050], ["QGH", 3950]]  # basis points, exactly

    resolve = f"/v1/disputes/{r.json()['case_id']}/resolve"
    _problem_naming(await http.post(resolve, headers=h(app, "QU9"),
                                    json={"responsible": BUCKS, "responsible_from": "2025-01-01"}), "responsible")
    _problem_naming(await http.post(resolve, headers=h(app, "QU9"),
                                    json={"responsible": "QGH", "responsible_from": "2999-01-01"}),
                    "responsible_from")


async def test_a_task_put_or_patch_with_a_malformed_reason_is_a_named_outcome_not_a_500(workflow_hub):
    app, http = workflow_hub, workflow_hub.http
    t = (await http.get("/v1/transfers", headers=h(app, WORCS))).json()["items"][0]
    url = f"/v1/fhir/Task/{t['case_id']}"
    fhir = {**h(app, WORCS), "Content-Type": "application/fhir+json"}  # a body without one is a 415
    patch = {**h(app, WORCS), "Content-Type": "application/json-patch+json"}

    def expression(r) -> list[str]:  # noqa: ANN001
        assert r.status_code == 422, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
        return r.json()["issue"][0]["expression"]

    for reason in ("not ordinarily resident", ["x"], 5):
        r = await http.put(url, headers=fhir, content=orjson.dumps(
            {"resourceType": "Task", "status": "rejected", "statusReason": reason}))
        assert expression(r) == ["Task.statusReason"]
    r = await http.put(url, headers=fhir, content=orjson.dumps(
        {"resourceType": "Task", "status": "rejected", "statusReason": {"text": "x" * 1001}}))
    assert expression(r) == ["Task.statusReason.text"]
    r = await http.put(url, headers=fhir, content=orjson.dumps(
        {"resourceType": "Task", "status": ["rejected"]}))
    assert expression(r) == ["Task.status"]
    for op in ({"op": "add", "path": "/statusReason", "value": "text"},
               {"op": "add", "path": "/statusReason/text", "value": {"t": 1}}):
        r = await http.patch(url, headers=patch, content=orjson.dumps(
            [{"op": "replace", "path": "/status", "value": "rejected"}, op]))
        assert expression(r) == ["[1].value"]
    # Nothing was contested by any of these; a well-formed contest still is.
    assert (await http.get(url, headers=h(app, WORCS))).json()["status"] == "requested"
    r = await http.put(url, headers=fhir, content=orjson.dumps(
        {"resourceType": "Task", "status": "rejected", "statusReason": {"text": "not resident here"}}))
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
