"""Review (retention, audit, council files out), each through the in-process
app on a real SQLite store:

- a council-file subscription wrote its delta and full files to the SFTP
  folder whatever the agreements in force when the file was written (every
  other channel holds what the agreement in force no longer allows);
- the retention purge deleted log messages a council-file delivery not yet
  written still needed (its row lost the person: no NHS number, no position);
- `audit verify` passed a chain whose signed checkpoint's entry had been
  deleted (the newest entries cut off), and a forged anchor (the oldest
  entries deleted as if purged);
- the subject access look-up (`POST /v1/ops/audit/person`) left out every
  read of the person's record (person query, lookup, FHIR): only pushes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adapters.council_files.outbound import OUT_LAYOUTS, read_export
from hub.clients import add_client
from hub.exports import ExportService
from hub.retention import Purger, RetentionPolicy
from hub.sharing import SharingAgreements
from hub.store.schema import (audit_chain, audit_cursors, bus_messages, council_exports, deliveries, disclosures,
                              export_items)
from tests.support import detention

COUNCIL = "E06000060"
NHS = ["9991100016", "9991100032"]


async def _post(app_hub, change: dict) -> None:  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
    assert r.status_code == 202, r.text


async def _dispatch(app_hub) -> None:  # noqa: ANN001
    while await app_hub.hub.dispatcher.run_once():
        pass


@pytest.fixture
def exporter(app_hub, tmp_path: Path) -> ExportService:  # noqa: ANN001
    h = app_hub.hub
    h.exports = ExportService(h.engine, h.ref, h.agreements, h.sharing, h.protector, tmp_path / "exports", 36.0)
    return h.exports


@pytest.fixture
async def admin(app_hub):  # noqa: ANN001
    return {"X-API-Key": (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}


async def _council_file(app_hub, mode: str = "delta") -> str:  # noqa: ANN001
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[COUNCIL]},
                                json={"channel": "council-file", "mode": mode})
    assert r.status_code == 201, r.text
    return r.json()["subscription_id"]


def _end_agreement(app_hub, exporter: ExportService) -> None:  # noqa: ANN001
    """The hub restarted with every agreement naming the council gone (ended, or withdrawn)."""
    h = app_hub.hub
    h.sharing = exporter._sharing = SharingAgreements(
        [g for org, grants in h.sharing._by_org.items() if org != COUNCIL for g in grants])


def _rows(exporter: ExportService, export: dict) -> list[dict]:
    return read_export((exporter._dir / COUNCIL / "outbound" / export["file_name"]).read_bytes(),
                       OUT_LAYOUTS["swift_csv"])


# --- council files out: the agreement in force when the file is written --------------------------

async def test_a_delta_file_holds_what_the_agreement_in_force_no_longer_allows(app_hub, exporter) -> None:  # noqa: ANN001
    sub = await _council_file(app_hub)
    for c in detention(NHS[0], "a"):
        await _post(app_hub, c)
    await _dispatch(app_hub)
    _end_agreement(app_hub, exporter)
    export = await exporter.run_now(sub)
    await exporter.build_waiting()
    export = await exporter.export(export["export_id"])
    assert _rows(exporter, export) == []  # nothing about the person written to the SFTP folder
    async with app_hub.hub.engine.connect() as conn:
        statuses = (await conn.execute(select(deliveries.c.status)
                                       .where(deliveries.c.subscription_id == sub))).scalars().all()
        denied = (await conn.execute(select(func.count()).select_from(disclosures).where(
            disclosures.c.recipient_org == COUNCIL, disclosures.c.decision == "denied",
            disclosures.c.channel == "council-file"))).scalar_one()
    assert statuses and set(statuses) == {"held"}  # held, as every other channel holds them
    assert denied == len(statuses)


async def _taken_then_crashed(app_hub, exporter: ExportService) -> tuple[str, dict, object]:  # noqa: ANN001
    """A delta file's build took the subscription's deliveries into the file, then the process died:
    (subscription id, the export, its row as the crash left it)."""
    sub = await _council_file(app_hub)
    for c in detention(NHS[0], "a"):
        await _post(app_hub, c)
    await _dispatch(app_hub)
    export = await exporter.run_now(sub)
    async with app_hub.hub.engine.connect() as conn:
        row = (await conn.execute(select(council_exports)
                                  .where(council_exports.c.export_id == export["export_id"]))).one()
    await exporter._claim_deliveries(row, "S117_crashed.csv")
    return sub, export, row


async def test_a_delta_file_rebuilt_after_a_crash_asks_the_agreements_in_force_again(app_hub, exporter) -> None:  # noqa: ANN001
    """The build crashed after taking the deliveries into the file; the restart loaded agreements that no
    longer name the council: the rebuild holds what it had taken rather than writing it to the folder."""
    sub, export, row = await _taken_then_crashed(app_hub, exporter)
    async with app_hub.hub.engine.connect() as conn:
        taken = (await conn.execute(select(func.count()).select_from(export_items)
                                    .where(export_items.c.export_id == export["export_id"]))).scalar_one()
    assert taken > 0
    _end_agreement(app_hub, exporter)
    await exporter.build_waiting()
    export = await exporter.export(export["export_id"])
    assert export["state"] == "ready" and _rows(exporter, export) == []
    async with app_hub.hub.engine.connect() as conn:
        statuses = (await conn.execute(select(deliveries.c.status)
                                       .where(deliveries.c.subscription_id == sub))).scalars().all()
        left = (await conn.execute(select(func.count()).select_from(export_items)
                                   .where(export_items.c.export_id == export["export_id"]))).scalar_one()
    assert set(statuses) == {"held"} and len(statuses) == taken and left == 0


async def test_a_rebuild_numbers_on_what_it_keeps_when_the_agreement_holds_some(app_hub, exporter) -> None:  # noqa: ANN001
    """Only the event types the agreement in force no longer covers leave a rebuilt file; the rest keep
    one run of numbers from the file's first."""
    sub, export, row = await _taken_then_crashed(app_hub, exporter)
    async with app_hub.hub.engine.connect() as conn:
        types = (await conn.execute(select(deliveries.c.event_type).join(
            export_items, export_items.c.delivery_id == deliveries.c.delivery_id)
            .where(export_items.c.export_id == export["export_id"]).order_by(export_items.c.event_no)
        )).scalars().all()
    assert len(set(types)) > 1, types
    dropped = types[0]
    h = app_hub.hub
    grants = [g for org, gs in h.sharing._by_org.items() for g in gs]
    h.sharing = exporter._sharing = SharingAgreements([
        replace(g, events=frozenset(types) - {dropped}) if g.org_code == COUNCIL else g
        for g in grants])
    await exporter.build_waiting()
    export = await exporter.export(export["export_id"])
    rows = _rows(exporter, export)
    kept = [t for t in types if t != dropped]
    assert len(rows) == len(kept)
    assert [int(r["EVENT_NO"]) for r in rows] == list(range(row.first_event_no or 1, (row.first_event_no or 1) + len(kept)))


async def test_a_scheduled_full_extract_is_not_written_once_the_agreement_ended(app_hub, exporter) -> None:  # noqa: ANN001
    sub = await _council_file(app_hub, "full")
    for c in detention(NHS[0], "a"):
        await _post(app_hub, c)
    await _dispatch(app_hub)
    _end_agreement(app_hub, exporter)
    export = await exporter.run_now(sub)
    await exporter.build_waiting()
    export = await exporter.export(export["export_id"])
    assert export["state"] == "withheld" and export["file_name"] is None
    assert not list((exporter._dir / COUNCIL / "outbound").glob("S117_*")) if (
        exporter._dir / COUNCIL / "outbound").exists() else True


# --- retention: log messages a council file still needs ------------------------------------------

async def test_the_outbox_purge_keeps_what_a_council_file_not_yet_written_needs(app_hub, exporter) -> None:  # noqa: ANN001
    sub = await _council_file(app_hub)
    for c in detention(NHS[0], "a"):
        await _post(app_hub, c)
    await _dispatch(app_hub)
    old = datetime.now(UTC) - timedelta(days=400)
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(bus_messages.update().values(created_at=old))
    done = await Purger(app_hub.hub.engine, app_hub.hub.audit, RetentionPolicy(30, 30, 90, 0)).run_once()
    export = await exporter.run_now(sub)
    await exporter.build_waiting()
    rows = _rows(exporter, await exporter.export(export["export_id"]))
    assert rows and {r["NHS_NO"] for r in rows} == {NHS[0]}, (done, rows)
    # Once the file is written, the messages are purged as any other.
    done = await Purger(app_hub.hub.engine, app_hub.hub.audit, RetentionPolicy(30, 30, 90, 0)).run_once()
    assert done["outbox"] >= len(rows)


# --- the audit chain ------------------------------------------------------------------------------

async def _chained_and_signed(app_hub) -> None:  # noqa: ANN001
    for c in detention(NHS[0], "a"):
        await _post(app_hub, c)
    await _dispatch(app_hub)
    chain = app_hub.hub.audit
    while await chain.extend():
        pass
    assert await chain.checkpoint(datetime.now(UTC).date() + timedelta(days=1)) == 1
    assert (await chain.verify())["ok"]


async def test_entries_cut_off_after_a_signed_checkpoint_are_caught(app_hub) -> None:  # noqa: ANN001
    await _chained_and_signed(app_hub)
    async with app_hub.hub.engine.begin() as conn:  # the newest entries (the signed one included) deleted
        top = (await conn.execute(select(func.max(audit_chain.c.seq)))).scalar_one()
        await conn.execute(audit_chain.delete().where(audit_chain.c.seq >= top - 1))
    result = await app_hub.hub.audit.verify()
    assert not result["ok"] and any("checkpoint" in p["problem"] for p in result["problems"]), result


async def test_a_forged_anchor_is_caught(app_hub) -> None:  # noqa: ANN001
    await _chained_and_signed(app_hub)
    async with app_hub.hub.engine.begin() as conn:  # the oldest entries deleted, as a purge would
        cut = (await conn.execute(select(audit_chain.c.seq, audit_chain.c.entry_hash)
                                  .where(audit_chain.c.seq == 3))).one()
        await conn.execute(audit_chain.delete().where(audit_chain.c.seq <= 3))
        await conn.execute(audit_cursors.insert().values(source="(anchor)", last_id=cut.seq,
                                                         anchor_hash=cut.entry_hash))
    result = await app_hub.hub.audit.verify()
    assert not result["ok"] and any("anchor" in p["problem"] for p in result["problems"]), result


async def test_the_purge_anchors_on_a_signed_checkpoint_and_the_chain_verifies(app_hub) -> None:  # noqa: ANN001
    await _chained_and_signed(app_hub)
    chain = app_hub.hub.audit
    tomorrow = datetime.now(UTC).date() + timedelta(days=2)
    n = await chain.purge_before(tomorrow)
    assert n > 0
    result = await chain.verify()
    assert result["ok"] and result["entries_checked"] == 0, result
    # New entries chain on from the anchor and verify.
    await _post(app_hub, {**detention(NHS[1], "b")[0]})
    await _dispatch(app_hub)
    assert await chain.extend() > 0
    assert (await chain.verify())["ok"]


# --- who was told what: reads too -----------------------------------------------------------------

async def test_the_subject_access_look_up_includes_reads_of_the_record(app_hub, admin) -> None:  # noqa: ANN001
    for c in detention(NHS[0], "a"):
        await _post(app_hub, c)
    await _dispatch(app_hub)
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    r = await app_hub.http.post("/v1/persons/lookup", headers=key, json={"nhs_number": NHS[0]})
    assert r.status_code == 200, r.text
    r = await app_hub.http.get(f"/v1/persons/{r.json()['person_id']}/s117", headers=key)
    assert r.status_code == 200, r.text
    r = await app_hub.http.post("/v1/ops/audit/person", headers=admin, json={"nhs_number": NHS[0]})
    told = r.json()["disclosures"]
    reads = [d for d in told if d["channel"] in ("query", "lookup")]
    assert reads and reads[0]["recipient"] == COUNCIL and reads[0]["decision"] == "allowed", told
    r = await app_hub.http.post("/v1/ops/audit/person", headers=admin, json={"nhs_number": NHS[0], "format": "fhir"})
    from fhir.resources.R4B.bundle import Bundle  # noqa: PLC0415
    bundle = Bundle.model_validate(r.json())
    assert "R" in [e.resource.action for e in bundle.entry]
    assert len(bundle.entry) == len(told)


# --- a full extract: the people the council was told of, not those it was not -----------------------

async def test_a_full_extract_leaves_out_people_the_council_was_never_told_of(app_hub, exporter) -> None:  # noqa: ANN001
    """Worcestershire (an agreement in force, no subscription) has no part in a Buckinghamshire person;
    the dispatcher recorded `no-subscription` for it (the agreement would have allowed an event, nothing
    was sent). The person query refuses it the person; the full extract must not list them either."""
    from hub.delivery.queue import disclosure_row  # noqa: PLC0415

    worcs = "E10000034"
    _, key = await add_client(app_hub.hub.engine, "Worcs", worcs, "council", ["subscriptions:write", "s117:read"])
    for c in detention(NHS[0], "a"):
        await _post(app_hub, c)
    await _dispatch(app_hub)
    async with app_hub.hub.engine.begin() as conn:
        person_id, event_id = (await conn.execute(select(disclosures.c.person_id, disclosures.c.event_id)
                                                  .where(disclosures.c.person_id.is_not(None)).limit(1))).one()
        await conn.execute(disclosures.insert().values(**disclosure_row(
            event_id=event_id, person_id=person_id, event_type="s117-moved-out-of-area", recipient_org=worcs,
            decision="no-subscription", agreement_id="DSA-HW-S117-HOST-2024", field_groups=["identity"],
            reason="no subscription", channel=None)))
    r = await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": key})
    assert r.status_code == 404
    r = await app_hub.http.post("/v1/exports", headers={"X-API-Key": key}, json={"layout": "swift_csv"})
    assert r.status_code == 202, r.text
    await exporter.build_waiting()
    done = await exporter.export(r.json()["export_id"])
    rows = read_export((exporter._dir / worcs / "outbound" / done["file_name"]).read_bytes(), OUT_LAYOUTS["swift_csv"])
    assert rows == [], rows


# --- the extract's audit: what was read, and what was refused ---------------------------------------

async def _export_reads(app_hub) -> list[tuple]:  # noqa: ANN001
    from hub.store.schema import access_decisions  # noqa: PLC0415
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(access_decisions.c.org_code, access_decisions.c.decision,
                                          access_decisions.c.rule)
                                   .where(access_decisions.c.channel == "export")
                                   .order_by(access_decisions.c.decision_id))).all()
        await conn.rollback()
    return [tuple(r) for r in rows]


async def test_a_download_of_a_file_not_built_is_not_audited_as_a_read(app_hub, exporter) -> None:  # noqa: ANN001
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    export_id = (await app_hub.http.post("/v1/exports", headers=key, json={})).json()["export_id"]
    r = await app_hub.http.get(f"/v1/exports/{export_id}", headers=key)
    assert r.status_code == 409
    assert await _export_reads(app_hub) == []  # nothing was disclosed
    await exporter.build_waiting()
    assert (await app_hub.http.get(f"/v1/exports/{export_id}", headers=key)).status_code == 200
    assert await _export_reads(app_hub) == [(COUNCIL, "allowed", "allowed")]


async def test_an_extract_asked_for_with_no_agreement_is_refused_by_rule_and_audited(app_hub) -> None:  # noqa: ANN001
    r = await app_hub.http.post("/v1/exports", headers={"X-API-Key": app_hub.keys["E08000025"]}, json={})
    assert r.status_code == 403 and r.json()["rule"] == "no-agreement"
    assert await _export_reads(app_hub) == [("E08000025", "denied", "no-agreement")]
