"""Audit gaps (session 30 outside review): council files out.

* A council file discloses every person it lists (written to the folder the council's SFTP
  account collects, and downloadable), yet was audited only at download, naming no one: "who
  was told what about this person" (`POST /v1/ops/audit/person`) never showed a full extract
  (`POST /v1/exports`, `s117hub export`, a scheduled file) or a delta file. Now the transaction
  that publishes a file records one allowed read for each person it lists (channel `export`, the
  groups their rows carried, the agreements in force, correlation id the export's id), a batch
  at a time (a full extract's people spill to a temporary file, never all held in memory).
* `GET /v1/exports/{id}` streamed a file built while the agreement granted `identity` (NHS
  numbers) after the agreement was narrowed. The groups a file was built with are now stored
  (`council_exports.field_groups`, migration 0033); a download whose groups the agreement in force
  no longer grants is refused, 403 `agreement-narrowed` naming the groups withdrawn, audited as a
  denied read. A file built before 0033 (NULL) counts as built with every group its layout can
  carry: refused unless the agreement grants all of them.

ASGI app with a real SQLite store (and the migrations on each store backend).
"""

from __future__ import annotations

import argparse
import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import DateTime, bindparam, inspect, select, text

from adapters.council_files.outbound import COLUMNS, OUT_LAYOUTS, read_export
from hub import export_cli
from hub import exports as exports_module
from hub.clients import add_client
from hub.exports import ExportService
from hub.settings import REPO_ROOT, get_settings
from hub.sharing import SharingAgreements
from hub.store.db import create_engine
from hub.store.schema import access_decisions, council_exports
from hub.domain.dates import england_day
from tests.contract.conftest import store_url  # noqa: F401 - the fixture (each store backend)
from tests.contract.test_migrations import _migrate
from tests.support import detention

COUNCIL = "E06000060"
_OLD_EXPORT = text(
    "INSERT INTO council_exports (export_id, org_code, layout, mode, state, record_count, created_at)"
    " VALUES ('eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee', 'E06000060', 'swift_csv', 'full', 'ready', 1, :at)"
).bindparams(bindparam("at", type_=DateTime(timezone=True)))
NHS = ["9991100016", "9991100032", "9991100059", "9991100067", "9991100075"]
LAYOUT_GROUPS = frozenset(c.group for c in COLUMNS if c.group)  # every group a file's columns can carry
AGREEMENTS = REPO_ROOT / "contracts" / "data-sharing-agreements.yaml"


def _sharing(drop: set[str] = frozenset()) -> SharingAgreements:
    """The sample agreements, with `drop` taken out of the council's field groups."""
    doc = copy.deepcopy(yaml.safe_load(AGREEMENTS.read_text()))
    for ag in doc["agreements"]:
        for rec in ag.get("recipients") or []:
            if rec["org_code"] == COUNCIL:
                rec["field_groups"] = [g for g in rec["field_groups"] if g not in drop]
    return SharingAgreements.from_document(doc)


def _exporter(app_hub, tmp_path: Path, sharing: SharingAgreements | None = None) -> ExportService:  # noqa: ANN001
    """The hub's exporter, as a hub (re)started with `sharing` builds and serves files."""
    h = app_hub.hub
    h.exports = ExportService(h.engine, h.ref, h.agreements, sharing or h.sharing, h.protector,
                              tmp_path / "exports", 36.0)
    return h.exports


async def _people(app_hub, nhs_numbers: list[str]) -> dict[str, str]:  # noqa: ANN001
    """Detained and discharged, each in the council's area: NHS number -> person id."""
    ids = {}
    for n, nhs in enumerate(nhs_numbers):
        for change in detention(nhs, f"r30x{n}"):
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                        json=change)
            assert r.status_code == 202, r.text
        ids[nhs] = r.json()["person_id"]
    while await app_hub.hub.dispatcher.run_once():
        pass
    return ids


async def _export_rows(app_hub, **where) -> list:  # noqa: ANN001, ANN003
    async with app_hub.hub.engine.connect() as conn:
        q = select(access_decisions).where(access_decisions.c.channel == "export")
        for k, v in where.items():
            q = q.where(access_decisions.c[k] == v)
        return (await conn.execute(q.order_by(access_decisions.c.decision_id))).all()


async def _full(app_hub, exporter: ExportService) -> dict:  # noqa: ANN001
    r = await app_hub.http.post("/v1/exports", headers={"X-API-Key": app_hub.keys[COUNCIL]}, json={})
    assert r.status_code == 202, r.text
    await exporter.build_waiting()
    export = await exporter.export(r.json()["export_id"])
    assert export["state"] == "ready", export
    return export


@pytest.fixture
def admin_key(app_hub):  # noqa: ANN001, ANN201
    async def make() -> dict[str, str]:
        return {"X-API-Key": (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    return make


# --- who a file disclosed -------------------------------------------------------------------------

async def test_a_full_extract_records_each_person_it_lists_in_the_transaction_that_publishes_it(
        app_hub, tmp_path, monkeypatch, admin_key):  # noqa: ANN001
    # A page of 2: five people go out in three batches (the spill read back across its boundaries).
    monkeypatch.setattr(exports_module, "PAGE", 2)
    exporter = _exporter(app_hub, tmp_path)
    people = await _people(app_hub, NHS)
    export = await _full(app_hub, exporter)
    rows = read_export((tmp_path / "exports" / COUNCIL / "outbound" / export["file_name"]).read_bytes(),
                       OUT_LAYOUTS["swift_csv"])
    assert sorted(r["NHS_NO"] for r in rows) == sorted(NHS)

    audited = await _export_rows(app_hub, correlation_id=export["export_id"])
    assert sorted(a.person_id for a in audited) == sorted(people.values())  # old: none
    today = england_day()
    want_groups = sorted(app_hub.hub.sharing.field_groups_for(COUNCIL, today) & LAYOUT_GROUPS)
    for a in audited:
        assert (a.org_code, a.action, a.decision, a.rule) == (COUNCIL, "read", "allowed", "allowed")
        assert a.field_groups == want_groups and "identity" in want_groups
        assert a.agreement_id == exporter.agreement_in_force(COUNCIL, today) and a.agreement_id
        assert a.client_id.startswith(f"{COUNCIL.lower()}-")  # the council's key that asked for it
    assert (await exporter.export_row(export["export_id"])).field_groups == want_groups

    # The subject access look-up shows the file.
    admin = await admin_key()
    r = await app_hub.http.post("/v1/ops/audit/person", headers=admin, json={"nhs_number": NHS[3]})
    assert [(d["recipient"], d["decision"], d["field_groups"]) for d in r.json()["disclosures"]
            if d["channel"] == "export"] == [(COUNCIL, "allowed", want_groups)]

    # The download: one row naming no one (the people were recorded as the file was written).
    r = await app_hub.http.get(f"/v1/exports/{export['export_id']}", headers={"X-API-Key": app_hub.keys[COUNCIL]})
    assert r.status_code == 200
    assert [(a.decision, a.field_groups) for a in await _export_rows(app_hub, person_id=None)] == \
        [("allowed", want_groups)]


async def test_a_file_that_is_never_published_records_no_one(app_hub, tmp_path, monkeypatch):  # noqa: ANN001
    """Its claim lost before the ready transaction (another builder took it over): nothing recorded;
    the builder that publishes it records its people, once."""
    exporter = _exporter(app_hub, tmp_path)
    await _people(app_hub, NHS[:2])
    r = await app_hub.http.post("/v1/exports", headers={"X-API-Key": app_hub.keys[COUNCIL]}, json={})
    row = await exporter.export_row(r.json()["export_id"])

    async def lost(claim) -> bool:  # noqa: ANN001
        claim.lost = True
        return False
    with monkeypatch.context() as m:
        m.setattr(exporter, "_renew", lost)  # every renewal finds the claim gone
        m.setattr(exports_module, "PAGE", 1)  # renewed (and found lost) at the first row
        assert await exporter.build(row) is False
    assert await _export_rows(app_hub) == []
    async with app_hub.hub.engine.begin() as conn:  # its claim lapsed: free for the next builder
        await conn.execute(council_exports.update().values(builder=None, builder_until=None))
    assert await exporter.build(await exporter.export_row(row.export_id)) is True
    assert len(await _export_rows(app_hub)) == 2


async def test_a_delta_file_records_its_people_with_the_groups_their_rows_carried(app_hub, tmp_path):  # noqa: ANN001
    exporter = _exporter(app_hub, tmp_path)
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[COUNCIL]},
                                json={"channel": "council-file", "mode": "delta"})
    assert r.status_code == 201, r.text
    sub = r.json()["subscription_id"]
    people = await _people(app_hub, NHS[:2])
    export = await exporter.run_now(sub)
    await exporter.build_waiting()
    export = await exporter.export(export["export_id"])
    assert export["state"] == "ready" and export["record_count"] == 6  # three rows a person
    audited = await _export_rows(app_hub, correlation_id=export["export_id"])
    assert sorted(a.person_id for a in audited) == sorted(people.values())  # once each: old, none
    row = await exporter.export_row(export["export_id"])
    for a in audited:
        assert (a.org_code, a.decision, a.agreement_id) == (COUNCIL, "allowed",
                                                            exporter.agreement_in_force(COUNCIL, england_day()))
        assert set(a.field_groups) <= LAYOUT_GROUPS and set(a.field_groups) <= set(row.field_groups)
        assert "identity" in a.field_groups
    async with app_hub.hub.engine.connect() as conn:
        from hub.store.schema import subscriptions  # noqa: PLC0415
        subscriber = (await conn.execute(select(subscriptions.c.client_id)
                                         .where(subscriptions.c.subscription_id == sub))).scalar_one()
    assert {a.client_id for a in audited} == {subscriber}


async def test_s117hub_export_records_the_people_it_lists_naming_the_command(app_hub, tmp_path, monkeypatch):  # noqa: ANN001
    people = await _people(app_hub, NHS[:2])
    for name, value in {"S117_DATABASE_URL": app_hub.hub.settings.database_url,
                        "S117_DATA_KEY_FILE": str(app_hub.hub.settings.data_key_file),
                        "S117_SHARING_AGREEMENTS_PATH": str(AGREEMENTS),
                        "S117_EXPORT_DIR": str(tmp_path / "cli-exports")}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        done = await export_cli._run(argparse.Namespace(org=COUNCIL, layout="swift_csv"))
    finally:
        get_settings.cache_clear()
    assert done["state"] == "ready" and Path(done["path"]).exists()
    audited = await _export_rows(app_hub, correlation_id=done["export_id"])
    assert sorted(a.person_id for a in audited) == sorted(people.values())
    assert {a.client_id for a in audited} == {"cli:s117hub-export"}


# --- a download the agreement in force no longer grants ---------------------------------------------

async def test_a_file_built_with_identity_is_not_sent_once_identity_is_withdrawn(app_hub, tmp_path):  # noqa: ANN001
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    exporter = _exporter(app_hub, tmp_path)
    await _people(app_hub, NHS[:1])
    export = await _full(app_hub, exporter)
    r = await app_hub.http.get(f"/v1/exports/{export['export_id']}", headers=key)
    assert r.status_code == 200 and NHS[0] in r.text

    # The hub restarted with the council's agreement narrowed: no identity (NHS numbers).
    exporter = _exporter(app_hub, tmp_path, _sharing({"identity"}))
    r = await app_hub.http.get(f"/v1/exports/{export['export_id']}", headers=key)
    assert r.status_code == 403, r.text  # old: 200, the NHS numbers
    body = r.json()
    assert (body["rule"], body["withdrawn_field_groups"]) == ("agreement-narrowed", ["identity"])
    assert NHS[0] not in r.text and "identity" in body["detail"]
    assert r.headers["content-type"].startswith("application/problem+json")
    denied = await _export_rows(app_hub, decision="denied")
    assert [(d.rule, d.person_id, d.org_code) for d in denied] == [("agreement-narrowed", None, COUNCIL)]
    assert "identity" in denied[0].field_groups  # what the file would have disclosed

    # A file built under the narrowed agreement carries no NHS number, and is sent.
    narrowed = await _full(app_hub, exporter)
    assert "identity" not in (await exporter.export_row(narrowed["export_id"])).field_groups
    r = await app_hub.http.get(f"/v1/exports/{narrowed['export_id']}", headers=key)
    assert r.status_code == 200 and NHS[0] not in r.text
    # A group the file never carried (demographics: no column holds it) withdrawn: still sent.
    _exporter(app_hub, tmp_path, _sharing({"identity", "demographics", "workflow"}))
    assert (await app_hub.http.get(f"/v1/exports/{narrowed['export_id']}", headers=key)).status_code == 200


async def test_a_file_built_before_its_groups_were_recorded_counts_as_carrying_every_column(app_hub, tmp_path):  # noqa: ANN001
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    exporter = _exporter(app_hub, tmp_path)
    await _people(app_hub, NHS[:1])
    export = await _full(app_hub, exporter)
    async with app_hub.hub.engine.begin() as conn:  # as migration 0033 leaves a file built before it
        await conn.execute(council_exports.update().values(field_groups=None))
    # The agreement grants every group the layout carries: sent.
    assert (await app_hub.http.get(f"/v1/exports/{export['export_id']}", headers=key)).status_code == 200
    # One of them withdrawn (explanations: the CITATION column), though this file may not have used it:
    # refused, naming it.
    _exporter(app_hub, tmp_path, _sharing({"explanations"}))
    r = await app_hub.http.get(f"/v1/exports/{export['export_id']}", headers=key)
    assert r.status_code == 403 and r.json()["withdrawn_field_groups"] == ["explanations"]


# --- the migration, on each store backend ----------------------------------------------------------

async def test_0033_adds_the_columns_null_for_files_already_written_and_its_downgrade_drops_them(store_url):  # noqa: F811
    engine = create_engine(store_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "upgrade", "0032")
            await conn.execute(_OLD_EXPORT, {"at": datetime(2026, 12, 1, tzinfo=UTC)})  # the 0032 table's columns
            await conn.run_sync(_migrate, "upgrade", "0033")
            row = (await conn.execute(select(council_exports.c.field_groups, council_exports.c.requested_by))).one()
            assert tuple(row) == (None, None)
            await conn.run_sync(_migrate, "downgrade", "0032")
            columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("council_exports")})
            assert not {"field_groups", "requested_by"} & columns and "builder_until" in columns
            await conn.run_sync(_migrate, "upgrade", "head")
    finally:
        await engine.dispose()
