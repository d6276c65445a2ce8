"""The person query's refusals take no less than S117_READ_REFUSAL_FLOOR_MS
(50), whatever they had to read: a refusal about someone on the register but
not the caller's reads and evaluates their history, one about a number not on
the register reads nothing, and without the floor the difference in time told
a body with an agreement who is on the s117 register. Allowed reads are not
held back. (A lower bound only: how long anything takes beyond it is the
machine's, not asserted.)"""

from __future__ import annotations

import random
import time
from datetime import date

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario

FLOOR = 0.05


async def test_refusals_wait_for_the_floor_and_allowed_reads_do_not(app_hub):  # noqa: ANN001
    assert app_hub.hub.settings.read_refusal_floor_ms == FLOOR * 1000  # the default
    changes = detention_to_move_scenario(random.Random(3), "floor", date(2025, 1, 6))
    for c in changes[:3]:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    pid = r.json()["person_id"]
    nhs = changes[0]["person"]["nhs_number"]
    # Birmingham holds an agreement (the sample one) but no relationship with the person.
    brum = (await add_client(app_hub.hub.engine, "Brum", "E08000025", "council", ["s117:read"]))[1]
    bucks = {"X-API-Key": app_hub.keys["E06000060"]}

    async def timed(method: str, url: str, headers: dict, **kw) -> tuple[int, float]:  # noqa: ANN003
        t = time.monotonic()
        r = await app_hub.http.request(method, url, headers=headers, **kw)
        return r.status_code, time.monotonic() - t

    for url in (f"/v1/persons/{pid}/s117", "/v1/persons/no-such-person/s117",
                f"/v1/persons/{pid}/s117?as_of=2025-02-01"):
        status, took = await timed("GET", url, {"X-API-Key": brum})
        assert status == 404 and took >= FLOOR, (url, took)
    for number in (nhs, "9434765919"):
        status, took = await timed("POST", "/v1/persons/lookup", {"X-API-Key": brum}, json={"nhs_number": number})
        assert status == 404 and took >= FLOOR, took
    app_hub.hub.settings.read_refusal_floor_ms = 2000.0  # an allowed read is never held to it
    status, took = await timed("GET", f"/v1/persons/{pid}/s117", bucks)
    assert status == 200 and took < 2.0


async def test_a_write_refused_for_no_relationship_waits_for_the_floor_too(app_hub):  # noqa: ANN001
    """A council's change about someone on the register but not its own (the precheck reads and
    evaluates their history) and one about a number not on the register: the same 403, neither
    answered before S117_WRITE_REFUSAL_FLOOR_MS (50), over REST; a change the source may write is
    not held back."""
    assert app_hub.hub.settings.write_refusal_floor_ms == FLOOR * 1000
    changes = detention_to_move_scenario(random.Random(4), "wfloor", date(2025, 1, 6))
    for c in changes[:3]:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    brum = (await add_client(app_hub.hub.engine, "Brum", "E08000025", "council", ["register:write"]))[1]
    moved = {**changes[3], "source_message_id": "wfloor-brum"}
    for person in (changes[0]["person"], {**changes[0]["person"], "nhs_number": "9434765919"}):
        t = time.monotonic()
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": brum}, json={**moved, "person": person})
        took = time.monotonic() - t
        assert r.status_code == 403 and r.json()["rule"] == "no-relationship" and took >= FLOOR, took
    app_hub.hub.settings.write_refusal_floor_ms = 2000.0
    t = time.monotonic()
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=changes[3])
    assert r.status_code == 202 and time.monotonic() - t < 2.0
