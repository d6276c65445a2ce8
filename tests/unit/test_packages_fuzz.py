"""Property: whatever a body sends as a package or a split decision, the
answer is 201, a 404 (not its person) or a 422 naming fields, never a 500,
and never quotes the NHS number back."""

from __future__ import annotations

import random
from datetime import date

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario

CHANGES = detention_to_move_scenario(random.Random(3), "pfuzz", date(2025, 1, 6))
NHS = CHANGES[0]["person"]["nhs_number"]
BASE = {"source_message_id": "x", "action": "start", "package_id": "L1", "person": {"nhs_number": NHS},
        "effective_date": "2026-09-20", "end_date": "2027-09-20", "service_type": "supported accommodation",
        "provider": {"kind": "council", "code": "PRV-1"}, "need": "joint", "weekly_cost_pence": 70_000,
        "s117_eligible": True, "exclusion": "top-up", "s17_leave": False, "cohort": "adult", "paid_by": "icb"}
DECISION = {"person_id": "x", "kind": "panel", "council_share_percent": "55.5", "effective_from": "2026-10-01",
            "reference": "panel 1"}

junk = st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=30) \
    | st.sampled_from(["", "0001-01-01", "9999-12-31", "2024-02-30", "change", "end", NHS, "1e9", "-0", "100.001"]) \
    | st.lists(st.integers(-9, 9), max_size=2) | st.dictionaries(st.text(max_size=5), st.integers(-9, 9), max_size=2)


@st.composite
def mutated(draw, base):  # noqa: ANN001, ANN201
    body = dict(base)
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(sorted(body) + ["extra"]))
        if draw(st.booleans()):
            body.pop(key, None)
        else:
            body[key] = draw(junk)
    return body


def _check(r) -> None:  # noqa: ANN001
    assert r.status_code in (201, 404, 409, 422), r.text
    if r.status_code == 422:
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"] and all(e["field"] and e["reason"] for e in r.json()["errors"])
    assert NHS not in r.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated(BASE), decision=mutated(DECISION), n=st.integers(0, 10**9))
async def test_any_package_input_is_recorded_or_named_never_a_500(app_hub, body, decision, n):
    if not hasattr(app_hub, "_pfuzz"):
        for c in CHANGES[:3]:
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
            assert r.status_code in (202,), r.text
        app_hub._pfuzz = (await add_client(app_hub.hub.engine, "Bucks", "E06000060", "council",
                                           ["packages:write"]))[1]
    h = {"X-API-Key": app_hub._pfuzz}
    if isinstance(body.get("source_message_id"), str):
        body["source_message_id"] = f"f-{n}"
    _check(await app_hub.http.post("/v1/packages", headers=h, content=orjson.dumps(body)))
    _check(await app_hub.http.post("/v1/split-decisions", headers=h, content=orjson.dumps(decision)))
