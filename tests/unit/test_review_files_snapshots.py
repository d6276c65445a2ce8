"""Review (reconciliation snapshots).

- Progress leaked the register: `persons_total` was the number of people on
  the whole register and `persons_compared` counted every one of them, so any
  body with an agreement learnt, exactly, how many people the hub holds
  (including people it has no relationship with; the oversight report rounds
  and suppresses such counts), and by sending snapshots over time, how that
  moves. Progress is now counted in the body's own list.
- A 0-byte (or blank) NDJSON body was compared as a list with no one on it:
  every person of the body reported `missing-on-body-list`, every earlier
  difference closed as `fixed`, a drift alert on its way. An export that wrote
  nothing now fails the snapshot, naming the body, and changes nothing.
"""

from __future__ import annotations

import orjson
import pytest

from hub.reconciliation import Reconciler
from tests.support import detention

OURS = ("9991100016", "9991100032")  # Buckinghamshire's (E06000060)
THEIRS = ("9991100059", "9991100067", "9991100075")  # Worcestershire's (E10000034)


@pytest.fixture
async def register(app_hub):  # noqa: ANN001, ANN201
    for nhs, council in [*((n, "E06000060") for n in OURS), *((n, "E10000034") for n in THEIRS)]:
        for change in detention(nhs, nhs, council=council):
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                        json=change)
            assert r.status_code == 202, r.text


async def send_and_compare(app_hub, key: str, body: bytes) -> dict:  # noqa: ANN001
    r = await app_hub.http.post("/v1/reconciliations", content=body,
                                headers={"X-API-Key": key, "Content-Type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    hub = app_hub.hub
    await Reconciler(hub.engine, hub.ref, hub.agreements, hub.reconciliation).run_once()
    got = await app_hub.http.get(f"/v1/reconciliations/{r.json()['snapshot_id']}", headers={"X-API-Key": key})
    assert got.status_code == 200, got.text
    return got.json()


def ndjson(*numbers: str) -> bytes:
    return b"\n".join(orjson.dumps({"nhs_number": n, "entitled": True}) for n in numbers) + b"\n"


async def test_progress_counts_the_bodys_own_list_never_the_register(app_hub, register) -> None:  # noqa: ANN001
    key = app_hub.keys["E06000060"]
    one = await send_and_compare(app_hub, key, ndjson(OURS[0]))
    assert (one["state"], one["persons_compared"], one["persons_total"]) == ("done", 1, 1)
    # More people on the register, none of them Buckinghamshire's: the body's answer does not move.
    for change in detention("9991100083", "more", council="E10000034"):
        assert (await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                        json=change)).status_code == 202
    again = await send_and_compare(app_hub, key, ndjson(OURS[0]))
    assert (again["persons_compared"], again["persons_total"]) == (1, 1)
    both = await send_and_compare(app_hub, key, ndjson(*OURS, "9991100091"))  # one the hub never heard of
    assert (both["persons_compared"], both["persons_total"]) == (3, 3)


@pytest.mark.parametrize("body", [b"", b"\n", b"\r\n  \r\n"])
async def test_an_empty_ndjson_body_fails_and_changes_nothing(app_hub, register, body: bytes) -> None:  # noqa: ANN001
    key = app_hub.keys["E06000060"]
    first = await send_and_compare(app_hub, key, ndjson(OURS[0], THEIRS[0]))
    opened = first["summary"]["open"]  # OURS[1] missing, THEIRS[0] not ours, OURS[0]'s review overdue
    assert first["state"] == "done" and opened >= 2
    empty = await send_and_compare(app_hub, key, body)
    assert empty["state"] == "failed"
    assert [p["field"] for p in empty["problems"]] == ["(body)"]
    assert empty["problems"][0]["reason"].startswith("is empty")
    # The first snapshot's differences stand (not closed as fixed by a list that never came).
    items = (await app_hub.http.get(f"/v1/reconciliations/{first['snapshot_id']}",
                                    headers={"X-API-Key": key})).json()["items"]
    assert [i["state"] for i in items] == ["open"] * opened
    # An empty list is still sayable: a JSON array with nothing in it.
    r = await app_hub.http.post("/v1/reconciliations", content=b"[]",
                                headers={"X-API-Key": key, "Content-Type": "application/json"})
    assert r.status_code == 202 and r.json()["state"] == "comparing"
