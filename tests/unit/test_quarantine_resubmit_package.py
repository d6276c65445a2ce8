"""Quarantine triage takes a held package event back as a package event: `POST /v1/quarantine/{id}/resubmit`
with the corrected event (the package contract, hub/money/contract.py) records it through the package
service, as `POST /v1/packages` would, and marks the held input resubmitted. It was read against the
register change contract, so a package held in quarantine could never be corrected: every resubmission was
refused naming `action`, `package_id`, ... as unknown keys, and held again."""

from __future__ import annotations

from sqlalchemy import func, select

from hub.clients import add_client
from hub.store.schema import care_packages
from tests.unit.test_packages_api import _person, bucks, start  # noqa: F401 - the fixture


async def test_a_held_package_event_is_corrected_through_triage(app_hub, bucks) -> None:  # noqa: ANN001, F811
    pid, _ = await _person(app_hub)
    h = {"X-API-Key": bucks}
    held = await app_hub.http.post("/v1/packages", headers=h, json=start(pid, "pk-t1", "LT", need="housing"))
    assert held.status_code == 422 and held.json()["type"].endswith("/invalid-package")
    qid = held.json()["quarantine_id"]

    still = await app_hub.http.post(f"/v1/quarantine/{qid}/resubmit", headers=h,
                                    json=start(pid, "pk-t1", "LT", need="housing", weekly_cost_pence=-1))
    assert still.status_code == 422, still.text
    assert still.json()["type"].endswith("/invalid-package")
    assert {e["field"] for e in still.json()["errors"]} == {"need", "weekly_cost_pence"}
    assert still.json()["resubmission_of"] == qid
    assert (await app_hub.http.get(f"/v1/quarantine/{qid}", headers=h)).json()["status"] == "held"

    fixed = await app_hub.http.post(f"/v1/quarantine/{qid}/resubmit", headers=h, json=start(pid, "pk-t1", "LT"))
    assert fixed.status_code == 201, fixed.text
    assert (fixed.json()["package_id"], fixed.json()["versions"]) == ("LT", [1])
    after = (await app_hub.http.get(f"/v1/quarantine/{qid}", headers=h)).json()
    assert after["status"] == "resubmitted" and after["resolved_by"] == "LT"
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(care_packages))).scalar_one() == 1


async def test_a_package_resubmission_the_package_service_refuses_leaves_it_held(app_hub, bucks) -> None:  # noqa: ANN001, F811
    pid, _ = await _person(app_hub)
    held = await app_hub.http.post("/v1/packages", headers={"X-API-Key": bucks},
                                   json=start(pid, "pk-t2", "LT2", need="housing"))
    qid = held.json()["quarantine_id"]
    # The hub operator may resubmit another source's input, but a package line is written only by a body
    # responsible for the person: the package service's unknown-person answer, nothing kept, still held.
    _, admin = await add_client(app_hub.hub.engine, "Ops", "HUB", "hub-operator", ["hub:admin"])
    r = await app_hub.http.post(f"/v1/quarantine/{qid}/resubmit", headers={"X-API-Key": admin},
                                json=start(pid, "pk-t2", "LT2"))
    assert r.status_code == 404 and r.json()["resubmission_of"] == qid, r.text
    assert (await app_hub.http.get(f"/v1/quarantine/{qid}", headers={"X-API-Key": bucks})).json()["status"] == "held"
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(care_packages))).scalar_one() == 0
