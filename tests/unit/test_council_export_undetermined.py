"""Hazard H-03 in the council extracts (adapters/council_files/OUTBOUND.md): a responsible body the person
is owed and the hub could not determine is said in RESP_UNDETERMINED, the column added at the end under
the field group `responsibility`, so a council's loader tells "undetermined: act" from "not disclosed"
(both leave RESP_LA_GSS empty). Through the in-process app, a real SQLite store and the exporter's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.council_files.outbound import COLUMNS, OUT_LAYOUTS, read_export
from hub.clients import add_client
from hub.exports import ExportService
from hub.fhir.messages import FIELD_GROUPS
from hub.sharing import SharingAgreements
from tests.support import detention

NHS_NFA = "9434765919"  # no place of residence before the detention, no GP: no council determined
NHS_BUCKS = "9991100016"  # living in Buckinghamshire: council and ICB determined
OXON = "E10000025"  # Oxfordshire: the council of the hospital (RNU), coordinating
BUCKS = "E06000060"


def _grant(app_hub, oxon_groups: list[str]) -> None:  # noqa: ANN001
    app_hub.hub.sharing.replace_grants(SharingAgreements.from_document({"agreements": [{
        "id": "DSA-TEST", "valid_from": "2024-04-01", "recipients": [
            {"org_code": OXON, "events": ["*"], "field_groups": oxon_groups},
            {"org_code": BUCKS, "events": ["*"], "field_groups": ["identity", "responsibility"]},
            {"org_code": "QU9", "events": ["*"], "field_groups": ["identity", "responsibility"]},
        ]}]}, frozenset(FIELD_GROUPS)))


async def _record(app_hub) -> None:  # noqa: ANN001
    nfa = detention(NHS_NFA, "nfa")
    del nfa[0]["residence_la_gss"], nfa[0]["gp_practice_ods"]
    nfa[0]["no_fixed_abode"] = True
    for change in [*nfa, *detention(NHS_BUCKS, "bucks")]:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json=change)
        assert r.status_code == 202, r.text
    while await app_hub.hub.dispatcher.run_once():
        pass


async def _extract(app_hub, tmp_path: Path, org: str, key: str, layout: str) -> list[dict[str, str]]:  # noqa: ANN001
    h = app_hub.hub
    exporter = ExportService(h.engine, h.ref, h.agreements, h.sharing, h.protector, tmp_path / "exports", 36.0)
    h.exports = exporter
    r = await app_hub.http.post("/v1/exports", headers={"X-API-Key": key}, json={"layout": layout})
    assert r.status_code == 202, r.text
    await exporter.build_waiting()
    done = await exporter.export(r.json()["export_id"])
    assert done["state"] == "ready", done
    data = (tmp_path / "exports" / org / "outbound" / done["file_name"]).read_bytes()
    rows = read_export(data, OUT_LAYOUTS[layout])
    assert all(list(row) == [c.name for c in COLUMNS] for row in rows)
    return rows


@pytest.mark.parametrize("layout", sorted(OUT_LAYOUTS))
async def test_a_council_granted_responsibility_reads_that_no_council_is_determined(app_hub, tmp_path: Path,
                                                                                   layout: str) -> None:
    _grant(app_hub, ["identity", "responsibility"])
    _, oxon = await add_client(app_hub.hub.engine, "Oxfordshire", OXON, "council", ["subscriptions:write"])
    await _record(app_hub)
    [row] = [r for r in await _extract(app_hub, tmp_path, OXON, oxon, layout) if r["NHS_NO"] == NHS_NFA]
    assert row["S117_FLAG"] == "Y"
    assert row["RESP_LA_GSS"] == ""  # none named, never the hospital's council in its place
    assert row["RESP_UNDETERMINED"] == "responsible-council=temp-unknown"  # ... and said: undetermined, act
    assert row["RESP_ICB_ODS"] == "QU9"  # the ICB is determined (where present): not listed as undetermined


@pytest.mark.parametrize("layout", sorted(OUT_LAYOUTS))
async def test_a_council_not_granted_responsibility_sees_nothing_of_it(app_hub, tmp_path: Path,
                                                                       layout: str) -> None:
    _grant(app_hub, ["identity"])
    _, oxon = await add_client(app_hub.hub.engine, "Oxfordshire", OXON, "council", ["subscriptions:write"])
    await _record(app_hub)
    [row] = [r for r in await _extract(app_hub, tmp_path, OXON, oxon, layout) if r["NHS_NO"] == NHS_NFA]
    assert (row["RESP_LA_GSS"], row["RESP_ICB_ODS"], row["RESP_UNDETERMINED"]) == ("", "", "")


async def test_a_determined_bodys_row_reads_as_before(app_hub, tmp_path: Path) -> None:
    _grant(app_hub, ["identity", "responsibility"])
    await _record(app_hub)
    [row] = await _extract(app_hub, tmp_path, BUCKS, app_hub.keys[BUCKS], "swift_csv")
    assert (row["NHS_NO"], row["S117_FLAG"], row["RESP_LA_GSS"], row["RESP_ICB_ODS"]) == (NHS_BUCKS, "Y", BUCKS, "QU9")
    assert row["RESP_UNDETERMINED"] == ""
    # The columns before it are where they were: a loader reading by position reads them as before.
    assert [c.name for c in COLUMNS][:16] == [
        "EVENT_ID", "EVENT_NO", "EVENT_CODE", "EFFECTIVE_DATE", "LOCAL_ID", "NHS_NO", "S117_FLAG", "RESP_LA_GSS",
        "RESP_ICB_ODS", "S117_START", "S117_END", "NEXT_REVIEW", "REVIEW_KIND", "OPEN_DISPUTE", "LEGAL_STATUS",
        "CITATION"]
