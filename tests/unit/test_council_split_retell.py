"""The reference-data re-tell (hub/refdata_retell.py) for a county split between several successors (hazard
H-03): the people it moves are told, the county's code no longer held as their council. Real SQLite, the hub
in-process, a clock the test sets."""

from __future__ import annotations

import csv
import hashlib
from datetime import date
from pathlib import Path

import orjson
from sqlalchemy import select, update

from hub.audit import record_operator_action
from hub.refdata.loader import ReferenceSources, load_reference_data
from hub.refdata_retell import ACTION, ACTOR, ReferenceDataRetell, dataset_parts
from hub.store.schema import bus_messages, register_status
from tests.support import detention

DATA = Path(__file__).resolve().parents[2] / "hub" / "refdata" / "data"
BUCKS = "E06000060"
NORTH, SOUTH = ("BKN", "E06000098", "North Bucks"), ("BKS", "E06000097", "South Bucks")  # fictional codes


def split_register(path: Path, vesting: str) -> Path:
    """The shipped register with Buckinghamshire Council split on `vesting` between two new unitaries."""
    with (DATA / "mysociety_uk_local_authorities_current.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    at = {name: i for i, name in enumerate(rows[0])}
    bucks = next(r for r in rows[1:] if r[at["gss-code"]] == BUCKS)
    added = []
    for code, gss, name in (NORTH, SOUTH):
        new = list(bucks)
        new[at["local-authority-code"]], new[at["gss-code"]], new[at["nice-name"]] = code, gss, name
        new[at["official-name"]], new[at["start-date"]], new[at["alt-names"]] = f"{name} Council", vesting, name
        added.append(new)
    bucks[at["end-date"]], bucks[at["replaced-by"]] = vesting, f"{NORTH[0]},{SOUTH[0]}"
    bucks[at["current-authority"]] = "False"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([*rows, *added])
    return path


async def _put_on_register(app_hub, run: str = "split") -> None:  # noqa: ANN001
    for change in detention("9990000018", run, given_name="Ada", family_name="Lovelace"):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
        assert r.status_code == 202, r.text


async def _held(app_hub) -> str | None:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(register_status.c.council_code))).scalar_one()


async def _corrections(app_hub) -> list[dict]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.headers, bus_messages.c.payload))).all()
    return [p for h, p in rows if h.get("event_type") == "s117-notification-corrected"]


async def test_a_split_on_its_vesting_day_moves_the_person_to_no_council_and_is_told(app_hub, tmp_path: Path):
    await _put_on_register(app_hub)
    path = split_register(tmp_path / "uk_local_authorities_current.csv", vesting="2027-04-01")
    ref = load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=date(2026, 11, 1)))
    day = [date(2027, 3, 31)]
    retell = ReferenceDataRetell(app_hub.hub.engine, ref, app_hub.hub.agreements, today=lambda: day[0])
    assert await retell.run_once() == 0 and await _held(app_hub) == BUCKS  # before the vesting day: Bucks
    day[0] = date(2027, 4, 1)
    assert await retell.run_once() == 1
    assert await _held(app_hub) is None  # no council: never the abolished one's code, never a guess
    [told] = await _corrections(app_hub)
    status = told["status"] if "status" in told else told
    text = orjson.dumps(status).decode()
    assert "council-split" in text and NORTH[1] in text and SOUTH[1] in text
    assert await retell.run_once() == 0  # the same data, the same day: nobody again


async def test_the_first_start_of_this_version_tells_people_split_before_it(app_hub, tmp_path: Path):
    """A store whose last pass recorded the same data under the rules before this version (the split county's
    code kept as the council): the start's pass tells the person, though no dataset changed."""
    await _put_on_register(app_hub)
    path = split_register(tmp_path / "uk_local_authorities_current.csv", vesting="2026-04-01")
    ref = load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=date(2026, 11, 1)))
    today = date(2026, 12, 5)
    parts = dataset_parts(ref.datasets())
    before = hashlib.sha256(orjson.dumps({"datasets": parts, "successions_from": "2026-04-01"},
                                         option=orjson.OPT_SORT_KEYS)).hexdigest()
    async with app_hub.hub.engine.begin() as conn:  # as the version before left it
        await conn.execute(update(register_status).values(council_code=BUCKS))
        await record_operator_action(conn, ACTOR, ACTION, before[:100], {"fingerprint": before, "datasets": parts})
    retell = ReferenceDataRetell(app_hub.hub.engine, ref, app_hub.hub.agreements, today=lambda: today)
    assert await retell.run_once() == 1
    assert await _held(app_hub) is None


async def test_the_ops_view_counts_people_awaiting_a_successor_by_the_split_council(app_hub):
    """GET /v1/ops/council-splits and the gauge: per split council's GSS code (no NHS number anywhere), the
    people awaiting a successor; a person whose successor is named is no longer counted."""
    from hub.clients import add_client
    from hub.observability.metrics import COUNCIL_SPLIT_AWAITING

    admin = {"X-API-Key": (await add_client(app_hub.hub.engine, "Ops", "HUB", "trust", ["hub:admin"]))[1]}
    trust = {"X-API-Key": app_hub.keys["trust"]}
    base = {"source_system": "RiO", "person": {"nhs_number": "9990000026"}}
    for n, change in enumerate((
        {"change_type": "detained", "effective_date": "2022-01-05", "legal_status_code": "03",
         "hospital_ods": "RNU", "residence_la_gss": "E10000006"},  # Cumbria, split on 1 April 2023
        {"change_type": "left-hospital", "effective_date": "2022-03-01", "hospital_ods": "RNU"},
    )):
        r = await app_hub.http.post("/v1/register-changes", headers=trust,
                                    json={**base, "source_message_id": f"ops-{n}", **change})
        assert r.status_code == 202, r.text
    await _put_on_register(app_hub, "other")  # Buckinghamshire: determined, not counted
    r = await app_hub.http.get("/v1/ops/council-splits", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["awaiting_successor"] == [{"council": "E10000006", "people": 1}]
    assert COUNCIL_SPLIT_AWAITING.labels(council="E10000006")._value.get() == 1
    assert "9990000026" not in r.text
    assert (await app_hub.http.get("/v1/ops/council-splits", headers=trust)).status_code == 403
    r = await app_hub.http.post("/v1/register-changes", headers=trust, json={
        **base, "source_message_id": "ops-2", "change_type": "moved", "effective_date": "2026-01-05",
        "residence_before_detention_la_gss": "E06000063"})
    assert r.status_code == 202, r.text
    assert (await app_hub.http.get("/v1/ops/council-splits", headers=admin)).json()["awaiting_successor"] == []
    assert not [s for m in COUNCIL_SPLIT_AWAITING.collect() for s in m.samples if s.labels.get("council") == "E10000006"]
