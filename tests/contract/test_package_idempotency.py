"""Package events (`POST /v1/packages`) are idempotent by (source, source_message_id) as register changes
are, on SQLite and PostgreSQL:

- the same id with another payload is a 409 naming `source_message_id`, nothing recorded or quarantined
  (it was answered 201 `duplicate` with the first line's answer: the second line silently dropped);
- an id the council already used for a register change (a council file's RECORD_ID) is the same 409 (it
  was answered with that register change's 202 body, the line dropped);
- the same event sent several times at once is recorded once and every sender gets the first answer (one
  of them used to be answered 422 "already started" and its copy held in quarantine)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from hub.api.app import create_app
from hub.bootstrap import Hub
from hub.clients import add_client
from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE
from hub.sample_data import detention_to_move_scenario
from hub.settings import REPO_ROOT, Settings
from hub.store.schema import care_packages, quarantine
from tests.conftest import InProcessHub


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_hub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[InProcessHub]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    else:
        from tests.servers.postgres import create_database

        url = await create_database(request.getfixturevalue("postgres_url"))
    settings = Settings(database_url=url, canonical_base=DEFAULT_CANONICAL_BASE, data_key_file=tmp_path / "data.key",
                        sharing_agreements_path=REPO_ROOT / "contracts" / "data-sharing-agreements.yaml",
                        run_workers=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        hub: Hub = app.state.hub
        keys = {"trust": (await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write"]))[1],
                "bucks": (await add_client(hub.engine, "Bucks finance", "E06000060", "council",
                                           ["packages:write", "register:write", "s117:read"]))[1]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            yield InProcessHub(http, hub, keys)


async def _person(h: InProcessHub) -> str:
    changes = detention_to_move_scenario(random.Random(11), "pkg-idem", date(2025, 1, 6))
    for c in changes[:3]:  # detained, s3, left hospital: Bucks and BOB ICB responsible
        r = await h.http.post("/v1/register-changes", headers={"X-API-Key": h.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    return changes[0]["person"]["nhs_number"]


def _start(nhs: str, smid: str, package_id: str, **kw: object) -> dict:
    return {"source_message_id": smid, "action": "start", "package_id": package_id, "person": {"nhs_number": nhs},
            "effective_date": "2026-09-20", "service_type": "supported accommodation",
            "provider": {"kind": "council", "code": "BCC-PRV-00123"}, "need": "social-care",
            "weekly_cost_pence": 70_000, **kw}


async def _counts(h: InProcessHub) -> tuple[int, int]:
    async with h.hub.engine.connect() as conn:
        lines = (await conn.execute(select(func.count()).select_from(care_packages))).scalar_one()
        held = (await conn.execute(select(func.count()).select_from(quarantine))).scalar_one()
    return lines, held


async def test_an_id_reused_for_another_package_event_is_a_conflict_naming_it(store_hub: InProcessHub) -> None:
    h, nhs = store_hub, await _person(store_hub)
    headers = {"X-API-Key": h.keys["bucks"]}
    first = await h.http.post("/v1/packages", headers=headers, json=_start(nhs, "pk-1", "L1"))
    assert first.status_code == 201, first.text
    same = await h.http.post("/v1/packages", headers=headers, json=_start(nhs, "pk-1", "L1"))
    assert same.status_code == 201 and same.json() == {**first.json(), "duplicate": True}

    other = await h.http.post("/v1/packages", headers=headers, json=_start(nhs, "pk-1", "L2", weekly_cost_pence=1))
    assert other.status_code == 409, other.text
    assert other.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in other.json()["errors"]] == ["source_message_id"]
    assert nhs not in other.text
    assert await _counts(h) == (1, 0)  # the second line not recorded, nothing quarantined


async def test_an_id_a_council_file_row_used_is_a_conflict_for_a_package(store_hub: InProcessHub) -> None:
    h, nhs = store_hub, await _person(store_hub)
    headers = {"X-API-Key": h.keys["bucks"]}
    file = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO\r\n" f"SW-77,REVIEW_DONE,01/07/2025,{nhs}\r\n").encode()
    r = await h.http.post("/v1/council-files?format=swift_csv", content=file,
                          headers={**headers, "Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    await h.hub.files.wait(r.json()["file_id"])
    report = (await h.http.get(r.headers["location"], headers=headers)).json()["report"]
    assert [row["status"] for row in report] == ["accepted"]

    clash = await h.http.post("/v1/packages", headers=headers, json=_start(nhs, "SW-77", "L9"))
    assert clash.status_code == 409, clash.text
    assert [e["field"] for e in clash.json()["errors"]] == ["source_message_id"]
    assert await _counts(h) == (0, 0)


async def test_the_same_event_sent_at_once_is_recorded_once_and_each_gets_the_first_answer(
        store_hub: InProcessHub) -> None:
    h, nhs = store_hub, await _person(store_hub)
    headers = {"X-API-Key": h.keys["bucks"]}
    answers = await asyncio.gather(*(h.http.post("/v1/packages", headers=headers, json=_start(nhs, "pk-c", "LC"))
                                     for _ in range(6)))
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert len({a.json()["versions"][0] for a in answers}) == 1
    assert sum(not a.json().get("duplicate") for a in answers) == 1
    assert await _counts(h) == (1, 0)

    change = {"source_message_id": "pk-c2", "action": "change", "package_id": "LC", "person": {"nhs_number": nhs},
              "effective_date": "2026-10-15", "weekly_cost_pence": 77_000}
    answers = await asyncio.gather(*(h.http.post("/v1/packages", headers=headers, json=change) for _ in range(6)))
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert {tuple(a.json()["versions"]) for a in answers} == {(1, 2)}
    assert await _counts(h) == (2, 0)
