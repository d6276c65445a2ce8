"""Disputes: a resolution's `responsible_from` is a date written YYYY-MM-DD and nothing else, as the
register-change contract takes dates (hub/ingest/contract.py `IsoDate`). Pydantic's lax `date` read a
Unix time (1735689600) as 2025-01-01 and recorded it as the terms a party proposed (and, agreed, the day
responsibility moved on the register). Refused now with a 422 naming the field, never the value, and
nothing recorded. The interim split's `shares` stay Decimals that may be sent as JSON strings ("50.5"):
exact, and what a JSON Decimal commonly is (see the report; README)."""

from __future__ import annotations

import pytest

from tests.unit.test_dispute_resolution_api import QGH, QU9, _keys, _raise
from tests.unit.test_workflows_api import h, workflow_hub  # noqa: F401 (the fixture)


# Each was read as 2025-01-01 (the Unix time, as a number or text; a datetime at midnight).
@pytest.mark.parametrize("coerced", [1735689600, 1735689600.0, "1735689600", "2025-01-01T00:00:00"])
async def test_a_resolution_date_is_only_a_yyyy_mm_dd_string(workflow_hub, coerced):  # noqa: ANN001, F811
    app, http = workflow_hub, workflow_hub.http
    await _keys(app)
    r = await _raise(app, QU9, "commissioner", [QU9, QGH])
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]

    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QU9),
                        json={"responsible": QGH, "responsible_from": coerced})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == ["responsible_from"]
    assert str(coerced) not in r.text  # the reason, never the value
    # Nothing was proposed: the case has no resolution pending, and the same terms written as a date work.
    case = (await http.get(f"/v1/disputes/{case_id}", headers=h(app, QU9))).json()
    assert case["resolution"] is None
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QU9),
                        json={"responsible": QGH, "responsible_from": "2025-01-01"})
    assert r.status_code == 202, r.text
    assert r.json()["resolution"]["proposed_by"] == QU9
