"""Money writes refused by the access policy take no less than S117_WRITE_REFUSAL_FLOOR_MS, as register
changes do (tests/security/test_refusal_floor.py). A package change refused about someone on the register
reads the person's lines and evaluates their register pairs (more since a line is changed by the pair it
is charged to on the day); one about an unknown person, or an unknown decision id, reads next to nothing.
The same 404 answered at once told a body holding `funding` who is on the s117 register, by time. A
write that is allowed is not held back. (A lower bound only: how long anything takes beyond it is the
machine's, not asserted.)"""

from __future__ import annotations

import time

from tests.unit.test_package_handover import BRUM, BUCKS, QGH, _both_moved, _change, _clients, _end, _post

FLOOR = 0.3


async def test_package_and_split_refusals_wait_for_the_floor_and_allowed_writes_do_not(app_hub):  # noqa: ANN001
    key = {org: k for org, (_cid, k) in (await _clients(app_hub)).items()}
    pid = await _both_moved(app_hub, key, seed=91)
    app_hub.hub.settings.write_refusal_floor_ms = FLOOR * 1000

    async def timed(method: str, url: str, k: str, **kw) -> tuple[int, float]:  # noqa: ANN003
        t = time.monotonic()
        r = await app_hub.http.request(method, url, headers={"X-API-Key": k}, **kw)
        return r.status_code, time.monotonic() - t

    # Birmingham holds `funding` but no relationship with the person: a known person's line, one named as
    # Bucks's, an unknown person; a split about the person; an unknown decision to agree.
    for body in (_change(pid, "fl-1", "2026-11-01", 80000), _end(pid, "fl-2", "2026-11-10", line_recorded_by=BUCKS),
                 _change("00000000-0000-0000-0000-000000000000", "fl-3", "2026-11-01", 80000)):
        status, took = await timed("POST", "/v1/packages", key[BRUM], json=body)
        assert status == 404 and took >= FLOOR, (body["source_message_id"], status, took)
    status, took = await timed("POST", "/v1/split-decisions/00000000-0000-0000-0000-000000000000/agree", key[BRUM])
    assert status == 404 and took >= FLOOR, (status, took)
    status, took = await timed("POST", "/v1/split-decisions", key[BRUM], json={
        "person_id": pid, "kind": "exception", "council_share_percent": "50", "effective_from": "2026-12-01",
        "reference": "panel 2026-11-30"})
    assert status == 404 and took >= FLOOR, (status, took)

    app_hub.hub.settings.write_refusal_floor_ms = 2000.0  # an allowed write is never held to it
    r = await _post(app_hub, key[QGH], _change(pid, "fl-5", "2026-11-01", 80000, line_recorded_by=BUCKS))
    status, took = await timed("POST", "/v1/packages", key[QGH],
                               json=_end(pid, "fl-6", "2026-11-10", line_recorded_by=BUCKS))
    assert r.status_code == 201 and status == 201 and took < 2.0, (r.text, status, took)
