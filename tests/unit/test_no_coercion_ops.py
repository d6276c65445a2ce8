"""Ops: the test clock's `advance_days` (POST /v1/ops/workflows/clock, on a hub whose workflow clock is
settable) is a whole JSON number of days. `"3"`, `3.0` and `true` were read as 3, 3 and 1 and the clock
moved, breaching or reminding on every case by that many days. Refused now, naming the field, and the
clock left where it was."""

from __future__ import annotations

import httpx
import pytest

from tests.security.test_review_console_clock_hidden import _hub


@pytest.mark.parametrize("coerced", ["3", 3.0, True])
async def test_the_clock_advances_only_by_a_whole_json_number(tmp_path, coerced):  # noqa: ANN001
    app, ctx, keys = await _hub(tmp_path, settable=True)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            admin = {"X-API-Key": keys["admin"]}
            today = (await http.post("/v1/ops/workflows/scan", headers=admin)).json()["as_of"]
            r = await http.post("/v1/ops/workflows/clock", headers=admin, json={"advance_days": coerced})
            assert r.status_code == 422, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in r.json()["errors"]] == ["advance_days"]
            # Not moved: the scanner's day is still today.
            assert (await http.post("/v1/ops/workflows/scan", headers=admin)).json()["as_of"] == today
            r = await http.post("/v1/ops/workflows/clock", headers=admin, json={"advance_days": 3})
            assert r.status_code == 200 and r.json()["offset_days"] == 3
    finally:
        await ctx.__aexit__(None, None, None)
