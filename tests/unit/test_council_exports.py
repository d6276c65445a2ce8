"""Council register extracts through the in-process app and a real SQLite
store: a council-file subscription's daily delta files (numbered on from the
last file, nothing lost or repeated, atomic with a manifest), a full extract
that the hub's own snapshot parser reads back with no differences, and
acknowledgement by API or by the ack/ folder."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from adapters.council_files.outbound import OUT_LAYOUTS, read_export
from hub.clients import add_client
from hub.exports import ExportService, last_due
from hub.reconciliation import Reconciler
from hub.store.schema import council_file_subscriptions, deliveries
from tests.support import detention

NHS = ["9991100016", "9991100032", "9991100059"]



class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


async def post(app_hub, change: dict) -> None:  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
    assert r.status_code == 202, r.text


async def dispatch(app_hub) -> None:  # noqa: ANN001
    while await app_hub.hub.dispatcher.run_once():
        pass


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))


@pytest.fixture
def exporter(app_hub, clock, tmp_path: Path) -> ExportService:  # noqa: ANN001
    h = app_hub.hub
    # Its monotonic clock (on which another builder's claim is timed) moves with the test's clock.
    return ExportService(h.engine, h.ref, h.agreements, h.sharing, h.protector, tmp_path / "exports", 36.0, now=clock,
                         ticks=lambda: clock.at.timestamp())


def test_schedule_is_uk_local_time() -> None:
    # 02:00 in London is 02:00 UTC in winter and 01:00 UTC in summer.
    assert last_due("daily 02:00", datetime(2026, 12, 1, 2, 30, tzinfo=UTC)) == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    assert last_due("daily 02:00", datetime(2026, 7, 1, 1, 30, tzinfo=UTC)) == datetime(2026, 7, 1, 1, 0, tzinfo=UTC)
    assert last_due("daily 02:00", datetime(2026, 12, 1, 1, 59, tzinfo=UTC)) == datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


async def test_daily_delta_files_start_where_the_last_ended(app_hub, exporter, clock) -> None:  # noqa: ANN001
    key = app_hub.keys["E06000060"]
    app_hub.hub.exports = exporter
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": key},
                                json={"channel": "council-file", "layout": "swift_csv", "schedule": "daily 02:00"})
    assert r.status_code == 201, r.text
    sub = r.json()
    assert (sub["channel"], sub["layout"], sub["schedule"], sub["mode"]) == ("council-file", "swift_csv",
                                                                                "daily 02:00", "delta")
    # The subscription was made on the test clock's day, not the machine's (the
    # first file is the first scheduled time after subscribing).
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(council_file_subscriptions.update()
                           .where(council_file_subscriptions.c.subscription_id == sub["subscription_id"])
                           .values(created_at=clock.at))
    # Day 1: two people's changes flow; nothing is written before 02:00.
    for nhs, run in zip(NHS[:2], "ab"):
        for change in detention(nhs, run):
            await post(app_hub, change)
    await dispatch(app_hub)
    assert await exporter.run_once() == 0
    clock.at = datetime(2026, 12, 1, 2, 5, tzinfo=UTC)
    assert await exporter.run_once() == 2  # queued, then built
    assert await exporter.run_once() == 0  # not twice for one schedule
    r = await app_hub.http.get("/v1/exports?state=ready", headers={"X-API-Key": key})
    [day1] = r.json()["items"]
    path = exporter._dir / "E06000060" / "outbound" / day1["file_name"]
    data = path.read_bytes()
    manifest = path.with_name(path.name + ".sha256").read_text()
    assert manifest == f"{hashlib.sha256(data[:data.rindex(b'SHA256,')]).hexdigest()}  {path.name}\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not list(path.parent.glob(".*.part"))  # written atomically: nothing half-done is left
    rows1 = read_export(data, OUT_LAYOUTS["swift_csv"])
    async with app_hub.hub.engine.connect() as conn:
        sent = (await conn.execute(select(deliveries.c.event_id, deliveries.c.status)
                                   .where(deliveries.c.subscription_id == sub["subscription_id"])
                                   .order_by(deliveries.c.delivery_seq))).all()
    # The delta re-read yields exactly the events sent, in order, numbered from 1.
    assert [r["EVENT_ID"] for r in rows1] == [s.event_id for s in sent]
    assert [int(r["EVENT_NO"]) for r in rows1] == list(range(1, len(sent) + 1))
    assert {s.status for s in sent} == {"delivered"}
    assert {r["EVENT_CODE"] for r in rows1} >= {"DETAINED", "LEFT_HOSPITAL", "S117_START"}
    assert {r["NHS_NO"] for r in rows1} == set(NHS[:2]) and {r["RESP_LA_GSS"] for r in rows1} == {"E06000060"}
    assert (day1["first_event_no"], day1["last_event_no"], day1["record_count"]) == (1, len(sent), len(sent))

    # The council downloads it (streamed, with the checksum) and acknowledges it.
    r = await app_hub.http.get(f"/v1/exports/{day1['export_id']}", headers={"X-API-Key": key})
    assert r.status_code == 200 and r.content == data and r.headers["S117-SHA256"] == day1["sha256"]
    other = await app_hub.http.get(f"/v1/exports/{day1['export_id']}", headers={"X-API-Key": app_hub.keys["E08000025"]})
    assert other.status_code == 404
    # Both downloads are in the access decisions (an extract is many people: no one person named);
    # the file itself, as it was written, one allowed row for each of its two people.
    from hub.store.schema import access_decisions  # noqa: PLC0415
    async with app_hub.hub.engine.connect() as conn:
        audited = (await conn.execute(select(access_decisions.c.org_code, access_decisions.c.decision,
                                             access_decisions.c.person_id)
                                      .where(access_decisions.c.channel == "export"))).all()
    assert sorted((o, d) for o, d, p in audited if p is None) == [("E06000060", "allowed"), ("E08000025", "denied")]
    assert sorted((o, d) for o, d, p in audited if p is not None) == [("E06000060", "allowed")] * 2
    r = await app_hub.http.post(f"/v1/exports/{day1['export_id']}/ack", headers={"X-API-Key": key})
    assert (r.json()["state"], r.json()["ack_via"]) == ("acknowledged", "api")

    # Day 2: the third person; the file numbers on from day 1, no event lost or repeated.
    for change in detention(NHS[2], "c"):
        await post(app_hub, change)
    await dispatch(app_hub)
    clock.at = datetime(2026, 12, 2, 2, 1, tzinfo=UTC)
    await exporter.run_once()
    r = await app_hub.http.get("/v1/exports?state=ready", headers={"X-API-Key": key})
    [day2] = r.json()["items"]
    rows2 = read_export((exporter._dir / "E06000060" / "outbound" / day2["file_name"]).read_bytes(),
                        OUT_LAYOUTS["swift_csv"])
    assert int(rows2[0]["EVENT_NO"]) == len(rows1) + 1
    assert not {r["EVENT_ID"] for r in rows1} & {r["EVENT_ID"] for r in rows2}
    assert {r["NHS_NO"] for r in rows2} == {NHS[2]}
    # Acknowledged by moving the file into ack/; an unacknowledged file is overdue after 36 hours.
    clock.at += timedelta(hours=40)
    assert [e["export_id"] for e in await exporter.unacknowledged() if e["overdue"]] == [day2["export_id"]]
    out = exporter._dir / "E06000060" / "outbound"
    (out / "ack").mkdir()
    (out / day2["file_name"]).rename(out / "ack" / day2["file_name"])
    await exporter.run_once()
    assert (await exporter.export(day2["export_id"]))["ack_via"] == "folder"
    # That run also wrote day 3's file (empty: nothing happened), which now waits for its own acknowledgement.
    [day3] = await exporter.unacknowledged()
    assert (day3["record_count"], day3["first_event_no"], day3["overdue"]) == (0, None, False)


async def test_a_file_half_built_when_the_hub_died_is_built_again_the_same(app_hub, exporter, clock) -> None:  # noqa: ANN001
    key = app_hub.keys["E06000060"]
    sub = (await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": key},
                                   json={"channel": "council-file"})).json()
    for change in detention(NHS[0], "a"):
        await post(app_hub, change)
    await dispatch(app_hub)
    export = await exporter.run_now(sub["subscription_id"])
    row = await exporter.export_row(export["export_id"])
    await exporter._claim_deliveries(row, "S117_half.csv")  # the hub dies after claiming, before the file
    for change in detention(NHS[1], "b"):  # more arrive before the restart
        await post(app_hub, change)
    await dispatch(app_hub)
    await exporter.build_waiting()
    first = await exporter.export(export["export_id"])
    assert (first["state"], first["file_name"]) == ("ready", "S117_half.csv")
    rows = read_export((exporter._dir / "E06000060" / "outbound" / first["file_name"]).read_bytes(),
                       OUT_LAYOUTS["swift_csv"])
    assert {r["NHS_NO"] for r in rows} == {NHS[0]}  # only what it had claimed; B's events wait for the next file
    nxt = await exporter.run_now(sub["subscription_id"])
    await exporter.build_waiting()
    rows2 = read_export((exporter._dir / "E06000060" / "outbound" / (await exporter.export(nxt["export_id"]))["file_name"])
                        .read_bytes(), OUT_LAYOUTS["swift_csv"])
    assert {r["NHS_NO"] for r in rows2} == {NHS[1]} and int(rows2[0]["EVENT_NO"]) == len(rows) + 1


async def test_full_extract_read_back_as_a_snapshot_has_no_differences(app_hub, exporter) -> None:  # noqa: ANN001
    key = app_hub.keys["E06000060"]
    for nhs, run in zip(NHS, "abc"):
        for change in detention(nhs, run):
            await post(app_hub, change)
    await dispatch(app_hub)
    app_hub.hub.exports = exporter
    r = await app_hub.http.post("/v1/exports", headers={"X-API-Key": key}, json={"layout": "swift_csv"})
    assert r.status_code == 202, r.text
    await exporter.build_waiting()
    done = await exporter.export(r.json()["export_id"])
    assert (done["state"], done["record_count"]) == ("ready", 3)
    data = (exporter._dir / "E06000060" / "outbound" / done["file_name"]).read_bytes()
    assert {row["EVENT_CODE"] for row in read_export(data, OUT_LAYOUTS["swift_csv"])} == {"S117_POSITION"}
    snap = await app_hub.http.post("/v1/reconciliations", content=data,
                                   headers={"X-API-Key": key, "Content-Type": "text/csv"})
    assert snap.status_code == 202 and snap.json()["rows_read"] == 3, snap.text
    h = app_hub.hub
    await Reconciler(h.engine, h.ref, h.agreements, h.reconciliation).run_once()
    report = (await app_hub.http.get(f"/v1/reconciliations/{snap.json()['snapshot_id']}",
                                     headers={"X-API-Key": key})).json()
    assert (report["state"], report["differences_found"], report["items"]) == ("done", 0, [])


async def test_a_council_without_an_agreement_gets_no_extract(app_hub) -> None:  # noqa: ANN001
    r = await app_hub.http.post("/v1/exports", headers={"X-API-Key": app_hub.keys["E08000025"]}, json={})
    assert r.status_code == 403


async def test_full_extract_leaves_withheld_columns_empty(app_hub, exporter) -> None:  # noqa: ANN001
    """Worcestershire's agreement grants identity and responsibility only: legal status and citation stay empty."""
    _, worcs = await add_client(app_hub.hub.engine, "Worcs", "E10000034", "council", ["subscriptions:write"])
    change = detention(NHS[0], "w")
    change[0]["residence_la_gss"] = "E10000034"
    for c in change:
        await post(app_hub, c)
    await dispatch(app_hub)
    app_hub.hub.exports = exporter
    r = await app_hub.http.post("/v1/exports", headers={"X-API-Key": worcs}, json={"layout": "swift_fixed"})
    await exporter.build_waiting()
    done = await exporter.export(r.json()["export_id"])
    [row] = read_export((exporter._dir / "E10000034" / "outbound" / done["file_name"]).read_bytes(),
                        OUT_LAYOUTS["swift_fixed"])
    assert row["NHS_NO"] == NHS[0] and row["RESP_LA_GSS"] == "E10000034"
    assert (row["LEGAL_STATUS"], row["CITATION"]) == ("", "")
    assert orjson.dumps(done)  # the export record carries no personal data


async def test_one_builder_at_a_time_and_a_stale_one_leaves_a_finished_file_alone(app_hub, exporter, clock) -> None:  # noqa: ANN001
    """An operator's `s117hub export` claims its extract as it asks for it: the hub's worker beside it does
    not build that file too; and a worker that read the export while it was queued, and reaches it after
    the operator's file was written and acknowledged, does not set it back to building nor write it again."""
    from hub.exports import ExportRequest

    for c in detention(NHS[0], "a"):
        await post(app_hub, c)
    await dispatch(app_hub)
    export = await exporter.request(ExportRequest("E06000060", "swift_csv", "full"), builder="operator-cli")
    stale = await exporter.export_row(export["export_id"])  # what a worker's poll read while it was queued
    assert await exporter.build_waiting() == 0  # the worker leaves it to the operator
    assert (await exporter.export(export["export_id"]))["state"] == "queued"
    assert await exporter.build(stale, builder="operator-cli") is True
    done = await exporter.acknowledge(export["export_id"], "api")
    path = exporter._dir / "E06000060" / "outbound" / done["file_name"]
    written = path.stat().st_mtime_ns
    assert await exporter.build(stale) is False  # the worker, late, with the row it read before
    after = await exporter.export(export["export_id"])
    assert (after["state"], after["ack_via"]) == ("acknowledged", "api")
    assert path.stat().st_mtime_ns == written


async def test_a_builder_that_died_is_taken_over_once_its_claim_lapses(app_hub, exporter, clock) -> None:  # noqa: ANN001
    from hub.exports import BUILD_LEASE, ExportRequest

    for c in detention(NHS[0], "a"):
        await post(app_hub, c)
    await dispatch(app_hub)
    export = await exporter.request(ExportRequest("E06000060", "swift_csv", "full"), builder="died")
    assert await exporter.build_waiting() == 0  # the claim first seen: timed from here, on the worker's own clock
    clock.at += BUILD_LEASE - timedelta(seconds=1)
    assert await exporter.build_waiting() == 0
    clock.at += timedelta(seconds=2)  # seen unrenewed for the whole lease
    assert await exporter.build_waiting() == 1
    done = await exporter.export(export["export_id"])
    assert (done["state"], done["record_count"]) == ("ready", 1)
