"""The reference-data re-tell (hub/refdata_retell.py) for a county split between several successors (hazard
H-03): the people it moves are told, the county's code no longer held as their council. Real SQLite, the hub
in-process, a clock the test sets."""

from __future__ import annotations

import asyncio
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


CUMBRIA, CUMBERLAND = "E10000006", "E06000063"  # Cumbria, split on 1 April 2023 (Cumberland one successor)


async def _posted(app_hub, run: str, changes: tuple[dict, ...]) -> list[dict]:  # noqa: ANN001
    """`changes` of one person (9990000026) posted by the trust in turn, each accepted: their answers."""
    answers = []
    for n, change in enumerate(changes):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json={"source_system": "RiO", "person": {"nhs_number": "9990000026"},
                                          "source_message_id": f"{run}-{n}", **change})
        assert r.status_code == 202, r.text
        answers.append(r.json())
    return answers


_RULES_SPLIT = ("council-split-undetermined; council-successor-without-gss-undetermined; "
                "hospital-council-abolished-uncoordinated")


async def _as_the_version_before_left_it(app_hub, rules_before: str, council_code: str | None,  # noqa: ANN001
                                         today: date = date(2026, 12, 5)) -> ReferenceDataRetell:
    """The shipped data's last pass recorded under the rules' reading `rules_before` (the fingerprint the
    version before wrote), the register's counts holding `council_code` for everyone: the re-tell of this
    version's first start, to run."""
    ref = load_reference_data()
    parts = dataset_parts(ref.datasets())
    in_effect = max(d for d in ref.succession_days() if d <= today)
    before = hashlib.sha256(orjson.dumps({"datasets": parts, "successions_from": in_effect.isoformat(),
                                          "rules": rules_before}, option=orjson.OPT_SORT_KEYS)).hexdigest()
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(update(register_status).values(council_code=council_code))
        await record_operator_action(conn, ACTOR, ACTION, before[:100], {"fingerprint": before, "datasets": parts})
    return ReferenceDataRetell(app_hub.hub.engine, ref, app_hub.hub.agreements, today=lambda: today)


async def _split_person(app_hub, nhs: str = "9990000026", run: str = "ops") -> None:  # noqa: ANN001
    """A person detained in 2022 from Cumbria and discharged: after its split, no responsible council."""
    base = {"source_system": "RiO", "person": {"nhs_number": nhs}}
    for n, change in enumerate((
        {"change_type": "detained", "effective_date": "2022-01-05", "legal_status_code": "03",
         "hospital_ods": "RNU", "residence_la_gss": CUMBRIA},
        {"change_type": "left-hospital", "effective_date": "2022-03-01", "hospital_ods": "RNU"},
    )):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json={**base, "source_message_id": f"{run}-{n}", **change})
        assert r.status_code == 202, r.text


async def _name_successor(app_hub, nhs: str = "9990000026", run: str = "ops") -> None:  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RiO", "person": {"nhs_number": nhs}, "source_message_id": f"{run}-named",
        "change_type": "moved", "effective_date": "2026-01-05", "residence_before_detention_la_gss": CUMBERLAND})
    assert r.status_code == 202, r.text


NAMED = "the-successor-named"  # what a split council's people await (the gauge's `awaiting` label)


def _gauge(council: str, awaiting: str = NAMED) -> float | None:
    from hub.observability.metrics import COUNCIL_SPLIT_AWAITING

    return next((s.value for m in COUNCIL_SPLIT_AWAITING.collect() for s in m.samples
                 if s.labels.get("council") == council and s.labels.get("awaiting") == awaiting), None)


async def _until(check, what: str, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def test_the_ops_view_counts_people_awaiting_a_successor_by_the_split_council(app_hub):
    """GET /v1/ops/council-splits: per split council's GSS code (no NHS number anywhere), the people awaiting
    a successor; a person whose successor is named is no longer counted. The request does not set the gauge
    (the back workers' alone: a front's count would outlive their newer ones)."""
    from hub.clients import add_client
    from hub.observability.metrics import COUNCIL_SPLIT_AWAITING

    admin = {"X-API-Key": (await add_client(app_hub.hub.engine, "Ops", "HUB", "trust", ["hub:admin"]))[1]}
    trust = {"X-API-Key": app_hub.keys["trust"]}
    await _split_person(app_hub)
    await _put_on_register(app_hub, "other")  # Buckinghamshire: determined, not counted
    COUNCIL_SPLIT_AWAITING.labels(council=CUMBRIA, awaiting=NAMED).set(-1)
    r = await app_hub.http.get("/v1/ops/council-splits", headers=admin)
    assert r.status_code == 200, r.text
    [entry] = r.json()["awaiting_successor"]
    assert (entry["council"], entry["people"], entry["awaiting"]) == (CUMBRIA, 1, "the-successor-named")
    assert "residence_before_detention_la_gss" in entry["resolve_with"]
    assert _gauge(CUMBRIA) == -1
    assert "9990000026" not in r.text
    assert (await app_hub.http.get("/v1/ops/council-splits", headers=trust)).status_code == 403
    await _name_successor(app_hub)
    assert (await app_hub.http.get("/v1/ops/council-splits", headers=admin)).json()["awaiting_successor"] == []


async def test_the_back_workers_set_the_gauge_at_start_without_a_request(app_hub):
    """The hub's back workers count the people awaiting a successor at start (task council-split-count),
    no GET /v1/ops/council-splits needed: the alert S117CouncilSplitAwaitingSuccessor can rely on it."""
    from hub.observability.metrics import COUNCIL_SPLIT_AWAITING

    await _split_person(app_hub)
    await _put_on_register(app_hub, "other")
    COUNCIL_SPLIT_AWAITING.labels(council=CUMBRIA, awaiting=NAMED).set(-1)  # not yet counted here
    app_hub.hub.start_workers()
    try:
        assert "council-split-count" in {t.get_name() for t in app_hub.hub.worker_tasks()}
        await _until(lambda: _gauge(CUMBRIA) == 1, "the back workers never counted the person awaiting Cumbria's successor")
        assert not _gauge(BUCKS)  # determined: not counted (0 if an earlier count in this process had it split)
    finally:
        app_hub.hub._stop.set()
        await asyncio.gather(*app_hub.hub.worker_tasks(), return_exceptions=True)


async def test_the_count_runs_again_and_a_council_no_longer_awaited_reads_zero(app_hub):
    """Counted again every interval: once the successor is named the split council reads 0 (set, not left
    at its last count: in multiprocess mode a label cannot be removed, and the alert must resolve)."""
    from hub.observability.metrics import COUNCIL_SPLIT_AWAITING
    from hub.refdata_retell import run_council_split_count

    await _split_person(app_hub)
    COUNCIL_SPLIT_AWAITING.labels(council=CUMBRIA, awaiting=NAMED).set(-1)
    stop = asyncio.Event()
    task = asyncio.create_task(run_council_split_count(app_hub.hub.engine, app_hub.hub.ref, app_hub.hub.agreements,
                                                       0.05, stop))
    try:
        await _until(lambda: _gauge(CUMBRIA) == 1, "not counted")
        await _name_successor(app_hub)
        await _until(lambda: _gauge(CUMBRIA) == 0, "the named successor's person still counted, or the label left at 1")
    finally:
        stop.set()
        await task


async def test_the_count_reads_histories_in_batches_and_only_of_people_without_a_council(app_hub, monkeypatch):
    """The count's cost is bounded by the people with no responsible council, their histories read a batch
    per query (not one query a person): at 100k people on the register, a few hundred queries at most."""
    from sqlalchemy import event

    from hub import refdata_retell
    from hub.domain.dates import england_day

    numbers = ["9990000026", "9990000034", "9990000042", "9990000050", "9990000069"]
    for n, nhs in enumerate(numbers):
        await _split_person(app_hub, nhs, run=f"batch{n}")
    await _put_on_register(app_hub, "other")  # determined: its history never read
    monkeypatch.setattr(refdata_retell, "AWAITING_BATCH", 2)
    reads: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:  # noqa: ANN001, ANN002
        if "FROM register_changes" in statement:
            reads.append(statement)

    engine = app_hub.hub.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        counts = await refdata_retell.awaiting_successor(app_hub.hub.engine, app_hub.hub.ref, app_hub.hub.agreements,
                                                         england_day())
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert counts == {CUMBRIA: len(numbers)}
    assert len(reads) == 3, reads  # 5 people, 2 a query


async def test_the_first_start_of_this_version_tells_people_whose_successor_was_named_earlier_in_the_stay(app_hub):
    """A person held under s2 from Cumbria (split 2023), the successor named, then s3 in the same stay: the
    version before left them undetermined (the naming made before the s3 not taken), the hospital's council
    coordinating. The first start of this version (the rules' reading in the fingerprint, `RULES`) tells them
    once: Cumberland responsible. Failed before: the same fingerprint, nobody told."""
    await _posted(app_hub, "stay", (
        {"change_type": "detained", "effective_date": "2025-03-03", "legal_status_code": "02",
         "hospital_ods": "RNU", "residence_la_gss": CUMBRIA},
        {"change_type": "moved", "effective_date": "2025-03-05", "residence_before_detention_la_gss": CUMBERLAND},
        {"change_type": "section-changed", "effective_date": "2025-03-20", "legal_status_code": "03",
         "hospital_ods": "RNU"},
    ))
    # As the version before left it: no council
    retell = await _as_the_version_before_left_it(app_hub, _RULES_SPLIT, None)
    assert await retell.run_once() == 1
    assert await _held(app_hub) == CUMBERLAND
    [told] = await _corrections(app_hub)
    assert CUMBERLAND in orjson.dumps(told).decode()
    assert await retell.run_once() == 0  # once


async def test_the_first_start_of_this_version_tells_people_whose_successor_was_named_on_the_admission_day(app_hub):
    """A person detained under s3 from Cumbria (split 2023), the successor named in a move dated the day of the
    admission (sorted before the detention: the version before read it as before the stay, never taken, the
    hospital's council coordinating). The first start of this version tells them once: Cumberland responsible.
    Failed before: the same fingerprint, nobody told."""
    answers = await _posted(app_hub, "day", (
        {"change_type": "detained", "effective_date": "2025-03-03", "legal_status_code": "03",
         "hospital_ods": "RNU", "residence_la_gss": CUMBRIA},
        {"change_type": "moved", "effective_date": "2025-03-03", "residence_before_detention_la_gss": CUMBERLAND},
    ))
    assert all("warnings" not in a for a in answers)  # the naming is taken: its sender is told of nothing to do
    # As the version before left it: no council
    retell = await _as_the_version_before_left_it(
        app_hub, _RULES_SPLIT + "; successor-named-earlier-in-the-stay-taken", None)
    assert await retell.run_once() == 1
    assert await _held(app_hub) == CUMBERLAND
    [told] = await _corrections(app_hub)
    assert CUMBERLAND in orjson.dumps(told).decode()
    assert await retell.run_once() == 0  # once


async def test_the_first_start_of_this_version_tells_people_an_earlier_stays_naming_no_longer_holds(app_hub):
    """Held under s2 from Cumbria (split 2023), the successor named, discharged; then a section changed to s3
    with no detention recorded (the rules begin one there, in no stay): the version before took the earlier
    stay's naming (Cumberland responsible). The first start of this version tells them once: no council
    responsible, Cumberland corrected. Failed before: the same fingerprint, nobody told."""
    await _posted(app_hub, "out", (
        {"change_type": "detained", "effective_date": "2025-03-03", "legal_status_code": "02",
         "hospital_ods": "RNU", "residence_la_gss": CUMBRIA},
        {"change_type": "moved", "effective_date": "2025-03-05", "residence_before_detention_la_gss": CUMBERLAND},
        {"change_type": "left-hospital", "effective_date": "2025-03-20"},
        {"change_type": "section-changed", "effective_date": "2025-05-01", "legal_status_code": "03",
         "hospital_ods": "RNU"},
    ))
    # As the version before left it: Cumberland
    retell = await _as_the_version_before_left_it(
        app_hub, _RULES_SPLIT + "; successor-named-earlier-in-the-stay-taken; "
        "successor-named-on-the-admission-day-taken", CUMBERLAND)
    assert await retell.run_once() == 1
    assert await _held(app_hub) is None
    assert len(await _corrections(app_hub)) >= 1
    assert await retell.run_once() == 0  # once
