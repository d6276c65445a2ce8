"""Council files through ingest's bulk path (a chunk of rows per transaction)
give the same register, events, quarantine, audit and per-row report as each
row through the per-change path, on SQLite and PostgreSQL; a file interrupted
mid-chunk resumes without loss or duplication; the rows of a file are mapped a
chunk at a time, never all held at once."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import delete, literal_column, select, update

import adapters.council_files.mapping as mapping
from hub.api.app import create_app
from hub.bootstrap import Hub
from hub.clients import add_client
from hub.file_jobs import FileJobs, counts
from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE
from hub.ingest.service import load_person_details
from hub.settings import REPO_ROOT, Settings
from hub.store.schema import (access_decisions, bus_messages, file_receipts, file_rows, including_retracted,
                              ingest_results, persons, quarantine, register_changes, register_status)
from tests.conftest import InProcessHub
from tests.unit.test_council_files_api import PERSON_A, PERSON_C, trust_changes

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "council_files"
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CLIENT = re.compile(rb"\b(rnu|e06000060)-[0-9a-f]{8}\b")  # client ids: the code and a random suffix
TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")
HEADER = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NOTIFIED_DATE,NHS_NO,SURNAME,FORENAME,DOB,POSTCODE,LA_GSS,NFA,GP_ODS,"
          "REVIEW_REASON,LA_AGREES,NHS_AGREES,PERSON_INVOLVED,END_REASONS,PARTICIPANTS")


def same(value: Any) -> Any:
    """The value with what differs between two hubs by design (ids, timestamps) blanked."""
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return orjson.loads(CLIENT.sub(rb"\1", TIMESTAMP.sub(b"<at>", UUID.sub(b"<id>", raw))))


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    """A factory of empty databases of one kind (two hubs side by side)."""
    if request.param == "sqlite":
        return lambda name: _ready(f"sqlite+aiosqlite:///{tmp_path / name}.db")
    admin = request.getfixturevalue("postgres_url")
    from tests.servers.postgres import create_database

    return lambda name: create_database(admin)


async def _ready(url: str) -> str:
    return url


@asynccontextmanager
async def hub_at(url: str, tmp: Path, **overrides: Any) -> AsyncIterator[InProcessHub]:
    tmp.mkdir(parents=True, exist_ok=True)
    settings = Settings(database_url=url, canonical_base=DEFAULT_CANONICAL_BASE, data_key_file=tmp / "data.key",
                        sharing_agreements_path=REPO_ROOT / "contracts" / "data-sharing-agreements.yaml",
                        run_workers=False, webhook_allowed_hosts=["127.0.0.1"], **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        hub: Hub = app.state.hub
        keys = {"trust": (await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write"]))[1],
                "council": (await add_client(hub.engine, "Bucks SWIFT", "E06000060", "council",
                                             ["register:write"]))[1]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            yield InProcessHub(http, hub, keys)


async def send(h: InProcessHub, data: bytes) -> dict:
    r = await h.http.post("/v1/council-files?format=swift_csv", content=data,
                          headers={"X-API-Key": h.keys["council"], "Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    await h.hub.files.wait(r.json()["file_id"])
    return (await h.http.get(r.headers["location"], headers={"X-API-Key": h.keys["council"]})).json()


def csv(*rows: str) -> bytes:
    return ("\r\n".join([HEADER, *rows]) + "\r\n").encode()


# A second night: a row sent before (duplicate), a RECORD_ID reused for another change (409), the row
# rejected last night corrected, two rows for one person that only make sense in order (placed, then
# back home with a new GP, then reviewed), a row with a field missing, someone not on the register.
SECOND_NIGHT = csv(
    "SW-1001,ADDR_CHANGE,02/06/2025,03/06/2025,999 110 0016,Testpatient,Alex,14/03/1971,WR1 2AA,E10000034,N,K82001,,,,,,",
    "SW-1002,REVIEW_DONE,02/07/2025,02/07/2025,9991100016,,,,,,,,,,,,,",
    "SW-1006,REVIEW_DONE,28/07/2025,,9991100016,,,,,,,,,,,,,",
    "SW-1009,PLACEMENT,15/08/2025,,9991100032,,,,,,,,,,,,,",
    "SW-1010,ADDR_CHANGE,20/08/2025,,9991100032,Synthetic,Robin,,HP21 7AB,E06000060,N,M81001,,,,,,",
    "SW-1011,GP_CHANGE,21/08/2025,,9991100032,,,,,,,K82001,,,,,",
    "SW-1012,GP_CHANGE,22/08/2025,,9991100024,,,,,,,K82001,,,,,,",
    "SW-1013,REVIEW_DONE,23/08/2025,,9991100032,,,,,,,,,,,,,",
)


# A third: a dispute raised about Robin, then an end of entitlement it holds (the bulk path leaves it, and
# Robin's later rows, to the per-change path), then a GP change. The end is the council's part of a joint
# decision the care trust recorded first (TRUST_DISCHARGE_OF_ROBIN, sent before this night): it completes it.
THIRD_NIGHT = (
    "RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO,DISPUTE_ID,DISPUTE_TYPE,DISPUTE_PARTIES,LA_AGREES,NHS_AGREES,"
    "PERSON_INVOLVED,END_REASONS,PARTICIPANTS,GP_ODS\r\n"
    "SW-1020,DISPUTE_RAISED,01/09/2025,9991100032,OR-88,LA,E06000060;E10000034,,,,,,\r\n"
    "SW-1021,S117_END,02/09/2025,9991100032,,,,Y,Y,Y,NO_NEED,care coordinator;AMHP,\r\n"
    "SW-1022,GP_CHANGE,03/09/2025,9991100032,,,,,,,,,M81001\r\n"
    "SW-1023,REVIEW_DONE,03/09/2025,9991100016,,,,,,,,,\r\n").encode()


async def run_nights(h: InProcessHub) -> list[dict]:
    for person, run in ((PERSON_A, "a"), (PERSON_C, "c")):
        for change in trust_changes(person, run):
            r = await h.http.post("/v1/register-changes", headers={"X-API-Key": h.keys["trust"]}, json=change)
            assert r.status_code == 202, r.text
    first, second = await send(h, (FIXTURES / "bucks_nightly.csv").read_bytes()), await send(h, SECOND_NIGHT)
    r = await h.http.post("/v1/register-changes", headers={"X-API-Key": h.keys["trust"]},
                          json=TRUST_DISCHARGE_OF_ROBIN)
    assert r.status_code == 202, r.text
    return [first, second, await send(h, THIRD_NIGHT)]


# The care trust's part of Robin's joint s117 discharge (for the NHS commissioner): it awaits the
# council's own, which the third night's S117_END gives (Worcs 16.1).
TRUST_DISCHARGE_OF_ROBIN = {
    "source_system": "RiO", "source_message_id": "c-discharge", "person": PERSON_C,
    "change_type": "s117-discharge-decided", "effective_date": "2025-09-01",
    "discharge": {"council_agrees": True, "commissioner_agrees": True, "reasons": ["no-longer-needs-services"],
                  "participants": ["care coordinator", "AMHP"], "person_involved": True}}


async def state(hub: Hub) -> dict[str, Any]:
    """Everything the two paths must agree on, per person (by NHS number) in order."""
    async with hub.engine.connect() as conn:
        nhs = {r.person_id: load_person_details(hub.protector, r.details)
               for r in (await conn.execute(select(persons))).all()}
        changes = defaultdict(list)
        for r in (await conn.execute(select(register_changes).order_by(register_changes.c.received_at))).all():
            changes[nhs[r.person_id]["nhs_number"]].append(
                {k: v for k, v in r._mapping.items() if k not in ("received_at",)})
        events = defaultdict(list)
        for r in (await conn.execute(select(bus_messages).order_by(bus_messages.c.offset))).all():
            events[nhs[r.key]["nhs_number"]].append((r.headers["event_type"], r.headers.get("late"), r.payload))
        status = {nhs[r.person_id]["nhs_number"]: {k: v for k, v in r._mapping.items() if k != "updated_at"}
                  for r in (await conn.execute(select(register_status))).all()}
        held = sorted((r.source_message_id or "", r.errors, hub.protector.decrypt(r.raw).decode())
                      for r in (await conn.execute(select(quarantine))).all())
        answers = {r.source_message_id: (r.status_code, r.body, r.payload_sha256)
                   for r in (await conn.execute(select(ingest_results))).all()}
        audit = Counter((r.channel, r.action, r.change_type, r.decision, r.rule, r.person_id is None)
                        for r in (await conn.execute(select(access_decisions))).all())
    return same({"people": sorted(nhs.values(), key=lambda d: d["nhs_number"]), "changes": changes,
                 "events": events, "status": status, "quarantine": held, "answers": answers,
                 "audit": sorted(audit.items())})


def counted() -> Counter:
    """The ingest and service-level counters (hub/observability/metrics.py) as they stand."""
    from hub.observability import metrics

    out: Counter = Counter()
    for metric in (metrics.INGEST, metrics.SERVICE_LEVEL):
        for family in metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_bulk_path_gives_the_same_register_events_and_report_as_row_by_row(databases, tmp_path):
    results = {}
    counts_by_path = {}
    for bulk in (False, True):
        async with hub_at(await databases(f"hub-{bulk}"), tmp_path / f"hub-{bulk}", files_bulk=bulk,
                          files_chunk_rows=4) as h:
            before = counted()
            reports = await run_nights(h)
            counts_by_path[bulk] = {k: v for k, v in (counted() - before).items() if v}
            results[bulk] = (same(reports), await state(h.hub))
            # The bulk run took the bulk path for every row (not its per-change fallback).
            assert (h.hub.ingest.bulk_rows, h.hub.ingest.bulk_failures) == ((18, 0) if bulk else (0, 0))
    (row_reports, row_state), (bulk_reports, bulk_state) = results[False], results[True]
    # The same changes counted accepted, duplicate, refused, quarantined; the same late ones.
    assert counts_by_path[True] == counts_by_path[False]
    assert any("accepted" in str(k) for k in counts_by_path[True]) and \
        any("service_level" in k[0] for k in counts_by_path[True])
    second = bulk_reports[1]["report"]
    assert [(e["record_id"], e["status"]) for e in second] == [
        ("SW-1001", "duplicate"), ("SW-1002", "rejected"), ("SW-1006", "accepted"), ("SW-1009", "accepted"),
        ("SW-1010", "accepted"), (None, "rejected"), ("SW-1012", "rejected"), ("SW-1013", "accepted")]
    assert "already used" in second[1]["errors"][0]["reason"]
    assert second[5]["errors"][0]["field"] == "row 6"  # 17 fields, the header has 18
    assert second[6]["errors"][0]["reason"].startswith("no person this source may report on")
    assert bulk_reports == row_reports
    for part in row_state:
        if bulk_state[part] != row_state[part]:  # show where
            a = json.dumps(row_state[part], indent=1, sort_keys=True).splitlines()
            b = json.dumps(bulk_state[part], indent=1, sort_keys=True).splitlines()
            print("\n".join(difflib.unified_diff(a, b, lineterm="", n=2)))
        assert bulk_state[part] == row_state[part], part
    third = bulk_reports[2]["report"]
    assert [(e["record_id"], e["status"]) for e in third] == [
        ("SW-1020", "accepted"), ("SW-1021", "rejected"), ("SW-1022", "accepted"), ("SW-1023", "accepted")]
    assert "while dispute OR-88 is open" in third[1]["errors"][0]["reason"] and third[1]["quarantine_id"]
    # Robin's rows in file order: placed, moved home (a new GP), reviewed.
    robin = bulk_state["changes"]["9991100032"]
    assert [(c["source_message_id"], c["change_type"]) for c in robin[2:5]] == [
        ("SW-1009", "placement-started"), ("SW-1010", "moved"), ("SW-1013", "review-completed")]


async def test_a_file_interrupted_mid_chunk_resumes_without_loss_or_duplication(databases, tmp_path):
    async with hub_at(await databases("hub"), tmp_path / "hub", files_chunk_rows=3) as h:
        first, second, _third = await run_nights(h)
        hub = h.hub
        changes_before = await _count(hub, register_changes)
        events_before = await _count(hub, bus_messages)
        # As if killed while the second night's last chunk (rows 7-8) was being recorded, after its
        # transaction committed: its changes are in, its report entries and progress are not.
        reported = counts(second["report"][:6])
        async with hub.engine.begin() as conn:
            await conn.execute(delete(file_rows).where(file_rows.c.file_id == second["file_id"], file_rows.c.row > 6))
            await conn.execute(update(file_receipts).where(file_receipts.c.file_id == second["file_id"]).values(
                status="processing", rows_done=6, accepted=reported["accepted"], duplicates=reported["duplicates"],
                rejected=reported["rejected"], content=hub.protector.encrypt(SECOND_NIGHT)))
        jobs = FileJobs(hub.engine, hub.ingest, hub.protector, chunk=3)  # the restarted hub
        await jobs.resume()
        await jobs.wait(second["file_id"])
        again = (await h.http.get(f"/v1/council-files/{second['file_id']}",
                                  headers={"X-API-Key": h.keys["council"]})).json()
        assert [(e["record_id"], e["status"], e.get("change_id")) for e in again["report"]] == [
            (e["record_id"], e["status"], e.get("change_id")) for e in second["report"]]
        assert (again["status"], again["accepted"], again["duplicates"], again["rejected"]) == (
            "processed", second["accepted"], second["duplicates"], second["rejected"])
        assert await _count(hub, register_changes) == changes_before  # nothing recorded twice
        assert await _count(hub, bus_messages) == events_before


async def _count(hub: Hub, table: Any) -> int:
    from sqlalchemy import func

    async with hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def test_rows_are_mapped_a_chunk_at_a_time(tmp_path, monkeypatch):
    """At most one chunk of a file's rows is mapped and held at a time: the
    count of rows mapped when each chunk reaches ingest is its own end."""
    mapped = 0
    real_map_record = mapping.map_record

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal mapped
        mapped += 1
        return real_map_record(*args, **kwargs)

    monkeypatch.setattr(mapping, "map_record", counting)
    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", tmp_path, files_chunk_rows=3) as h:
        for person, run in ((PERSON_A, "a"), (PERSON_C, "c")):
            for change in trust_changes(person, run):
                assert (await h.http.post("/v1/register-changes", headers={"X-API-Key": h.keys["trust"]},
                                          json=change)).status_code == 202
        seen: list[tuple[int, int]] = []
        real_bulk = h.hub.ingest.accept_bulk

        async def spy(client: Any, rows: list, channel: str, cache: Any = None) -> Any:
            seen.append((mapped, len(rows)))
            return await real_bulk(client, rows, channel, cache)

        monkeypatch.setattr(h.hub.ingest, "accept_bulk", spy)
        rows = [f"M-{i},REVIEW_DONE,{1 + i % 28:02d}/07/2025,,{('9991100016', '9991100032')[i % 2]},,,,,,,,,,,,,"
                for i in range(10)]
        body = await send(h, csv(*rows))
    assert (body["rows"], body["accepted"]) == (10, 10)
    assert seen == [(3, 3), (6, 3), (9, 3), (10, 1)]  # not (10, 3) first: the rows are not mapped up front


async def test_a_failed_bulk_transaction_leaves_its_rows_to_the_per_change_path(tmp_path, monkeypatch):
    """Nothing of a failed chunk is kept and none of its rows is lost: each goes the per-change way."""
    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'row.db'}", tmp_path / "row", files_bulk=False) as h:
        expected = same(await run_nights(h))
    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}", tmp_path / "bulk", files_chunk_rows=4) as h:
        real_unit = h.hub.ingest._bulk_unit
        calls = 0

        async def failing(conn: Any, *args: Any) -> Any:
            nonlocal calls
            calls += 1
            result = await real_unit(conn, *args)  # written, then the transaction fails
            if calls % 2:
                raise RuntimeError("disk I/O error")
            return result

        monkeypatch.setattr(h.hub.ingest, "_bulk_unit", failing)
        reports = same(await run_nights(h))
        assert h.hub.ingest.bulk_failures == 3 and 0 < h.hub.ingest.bulk_rows < 18
    assert reports == expected


async def test_a_bulk_unit_failing_for_a_fault_of_the_hubs_own_is_logged_an_error(tmp_path, monkeypatch, capsys):
    """A chunk that fails for the hub's own fault (a bug: an exception that is not the store's) still has
    every row taken, one at a time, but far slower and silently: it is an ERROR line naming the exception's
    type. Before: the same INFO line as a store fault (an UnboundLocalError sent every chunk of every file
    the per-change way, and nothing but the files' speed said so)."""
    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}", tmp_path / "bulk", files_chunk_rows=4) as h:
        async def broken(conn: Any, *args: Any) -> Any:
            raise UnboundLocalError("cannot access local variable")

        monkeypatch.setattr(h.hub.ingest, "_bulk_unit", broken)
        await run_nights(h)
        assert h.hub.ingest.bulk_failures > 0 and h.hub.ingest.bulk_rows == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "bulk ingest" in line]
    assert lines and all("error" in line and "UnboundLocalError" in line for line in lines), lines[:3]


async def _council_after_nights(h):  # noqa: ANN001, ANN202
    """The nights' files recorded; the council client that sent them (its source id)."""
    from hub.ingest.service import Client

    await run_nights(h)
    async with h.hub.engine.connect() as conn:
        row = (await conn.execute(select(file_receipts.c.source))).first()
    return Client(row.source, "Bucks SWIFT", "E06000060", "council", ("register:write",))


async def test_a_history_carried_between_chunks_is_read_again_once_someone_else_changed_it(tmp_path):
    """BulkCache: chunk 1 reads Alex's history and keeps it; the trust then records a re-admission;
    chunk 2 must judge Alex's row against the history with it (the count differs: read again)."""
    from adapters.council_files import SWIFT_CSV, map_file
    from hub.ingest.service import BulkCache, BulkRow

    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", tmp_path) as h:
        council = await _council_after_nights(h)
        cache = BulkCache()

        async def night(record_id: str, day: str) -> dict:
            mapped = map_file(csv(f"{record_id},GP_CHANGE,{day},,9991100032,,,,,,,M81001,,,,,,"), SWIFT_CSV).rows[0]
            [outcome] = await h.hub.ingest.accept_bulk(council, [BulkRow(mapped.data, mapped.original)], "file", cache)
            assert outcome is not None and outcome.status_code == 202, outcome
            async with h.hub.engine.connect() as conn:
                return (await conn.execute(select(register_status).where(
                    register_status.c.person_id == outcome.body["person_id"]))).one()._asdict()

        assert (await night("C-1", "01/09/2025"))["in_hospital"] is False
        assert cache.get(next(iter(cache._entries))) is not None and cache.hits == 0
        r = await h.http.post("/v1/register-changes", headers={"X-API-Key": h.keys["trust"]}, json={
            "source_system": "RiO", "person": PERSON_C, "source_message_id": "c-3", "change_type": "detained",
            "effective_date": "2025-09-05", "legal_status_code": "03", "hospital_ods": "RNU",
            "residence_la_gss": "E06000060"})
        assert r.status_code == 202, r.text
        assert (await night("C-2", "06/09/2025"))["in_hospital"] is True  # not the history cached before
        assert cache.hits == 0
        assert (await night("C-3", "07/09/2025"))["in_hospital"] is True  # unchanged since: carried over
        assert cache.hits == 1


async def test_an_evaluation_carried_over_midnight_is_not_used_the_next_day(tmp_path):
    """BulkCache carries each person's evaluation (as of the day it was made): a chunk processed the
    next day evaluates as of that day, so a change effective that day is folded in, not left out as
    one in the future."""
    from datetime import date

    from adapters.council_files import SWIFT_CSV, map_file
    from hub.bus.payload import status_on_the_bus
    from hub.codec import from_jsonable
    from hub.domain.model import RegisterChange
    from hub.domain.rules import evaluate
    from hub.ingest.service import BulkCache, BulkRow

    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", tmp_path) as h:
        council = await _council_after_nights(h)
        cache = BulkCache()

        async def night(record_id: str, day: date, gp: str) -> dict:
            h.hub.ingest._today = lambda: day
            text = f"{record_id},GP_CHANGE,{day:%d/%m/%Y},,9991100032,,,,,,,{gp},,,,,,"
            mapped = map_file(csv(text), SWIFT_CSV).rows[0]
            [outcome] = await h.hub.ingest.accept_bulk(council, [BulkRow(mapped.data, mapped.original)], "file", cache)
            assert outcome is not None and outcome.status_code == 202, outcome
            async with h.hub.engine.connect() as conn:
                payload = (await conn.execute(select(bus_messages.c.payload).where(
                    bus_messages.c.event_id == outcome.body["events"][0]["event_id"]))).scalar_one()
                history = [from_jsonable(RegisterChange, c) for c in (await conn.execute(including_retracted(
                    select(register_changes.c.canonical).where(
                        register_changes.c.person_id == outcome.body["person_id"])))).scalars()]
            expected = evaluate(outcome.body["person_id"], history, h.hub.ingest._ref, h.hub.ingest._agreements, day)
            assert payload["status"] == orjson.loads(orjson.dumps(status_on_the_bus(expected)))
            return payload["status"]

        first = await night("M-1", date(2025, 9, 1), "M81001")
        assert first["as_of"] == "2025-09-01"
        second = await night("M-2", date(2025, 9, 2), "K82001")  # the next day: the evaluation cached is stale
        assert second["as_of"] == "2025-09-02" and cache.hits == 1


async def test_the_report_is_streamed_a_page_at_a_time(tmp_path, monkeypatch):
    import hub.api.files as files_api

    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", tmp_path) as h:
        first, second, _third = await run_nights(h)  # pages of 1,000: one page each
        monkeypatch.setattr(files_api, "REPORT_PAGE", 3)
        pages = []
        real = files_api.read_only

        def counting(engine: Any) -> Any:
            pages.append(1)
            return real(engine)

        monkeypatch.setattr(files_api, "read_only", counting)
        for body in (first, second, _third):
            async with h.http.stream("GET", f"/v1/council-files/{body['file_id']}",
                                     headers={"X-API-Key": h.keys["council"]}) as r:
                assert "content-length" not in r.headers  # streamed, not built whole
                again = orjson.loads(await r.aread())
            assert again == body
        # Per report: the receipt, then pages of 3 rows (3 + 3 + 2, 3 + 1) and the empty page that ends it.
        assert len(pages) == 5 + 5 + 4
        replay = await h.http.post("/v1/council-files?format=swift_csv", content=SECOND_NIGHT,
                                   headers={"X-API-Key": h.keys["council"], "Content-Type": "text/csv"})
        assert replay.status_code == 200 and replay.json()["replay_of"] == second["file_id"]
        again = (await h.http.get(f"/v1/council-files/{replay.json()['file_id']}",
                                  headers={"X-API-Key": h.keys["council"]})).json()
        assert again["report"] == replay.json()["report"] == [
            {**e, "status": "duplicate"} if e["status"] == "accepted" else e for e in second["report"]]


def test_the_history_cache_is_bounded():
    from datetime import date

    from hub.ingest.service import BulkCache

    cache = BulkCache(max_weight=36)
    today = date(2025, 9, 1)
    cache.keep(today, {"p1": [object()] * 5, "p2": [object()] * 5, "p3": [object()] * 5}, {"p1": "s1"})
    assert cache.get("p1") is not None and cache.get("p2") is not None and cache.get("p3") is None  # 18 + 18
    cache.keep(today, {"p1": [object()] * 20}, {})  # grown past the bound: dropped, not kept over it
    assert cache.get("p1") is None and cache.get("p2") is not None
    cache.keep(date(2025, 9, 2), {"p3": [object()] * 2}, {})  # another day: statuses are stale, all dropped
    assert cache.get("p2") is None and cache.get("p3") is not None


async def test_the_bulk_paths_change_ids_are_time_ordered_uuids(tmp_path):
    """A row recorded in a bulk chunk gets a version 7 UUID (time-ordered: its index entries are appended);
    the per-change path's stay version 4; either is a UUID, masked alike in the comparison above."""
    import time
    import uuid

    began = time.time_ns() // 1_000_000
    async with hub_at(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", tmp_path / "hub", files_chunk_rows=4) as h:
        await run_nights(h)
        async with h.hub.engine.connect() as conn:
            rows = (await conn.execute(select(register_changes.c.change_id, register_changes.c.channel,
                                              register_changes.c.source_message_id)
                                       .order_by(literal_column("rowid")))).all()  # as inserted (SQLite)
        bulk = h.hub.ingest.bulk_rows
    ended = time.time_ns() // 1_000_000
    ids = [(uuid.UUID(r.change_id), r.channel) for r in rows]
    assert all(str(u) == r.change_id for (u, _), r in zip(ids, rows))
    assert {u.version for u, channel in ids if channel != "file"} == {4}  # the trust's, one at a time
    seven = [u for u, channel in ids if u.version == 7]
    assert all(channel == "file" for u, channel in ids if u.version == 7)
    assert 0 < len(seven) <= bulk
    stamps = [u.int >> 80 for u in seven]
    assert stamps == sorted(stamps) and began <= stamps[0] and stamps[-1] <= ended
