"""Text a body sends with its reconciliation snapshot and item decisions, as the hub keeps and shows it:

- a LOCAL_ID (`local_id`) holds no control or bidirectional formatting character but the tab and line
  breaks a quoted CSV field may hold (RFC 4180), as the register change contract's free text: NUL, ESC,
  NEL or an RLO override were kept as sent; such a row is now refused naming `local_id`, and quarantined;
- the council's own extract (adapters/council_files/outbound.py) writes a line break or tab in a text cell
  as a space: a local id holding one split a fixed-width record in two (a line the trailer did not count),
  and broke a line-by-line reader of the CSV;
- the report's CSV (`GET /v1/reconciliations/{id}?format=csv`) writes a local id or a decision's reason
  that begins with `=`, `+`, `-`, `@`, a tab or a line break behind an apostrophe, as the statements do
  (hub/money/render.py `csv_text`): it was written as sent, a formula when the team opens the file;
- an item decision's `reason` holds no control character other than tab, CR and LF (`422` naming it)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

import orjson
import pytest
from sqlalchemy import func, select

from adapters.council_files.outbound import OUT_LAYOUTS, ExportWriter, read_export, row_values
from adapters.snapshots import validate_row
from hub.reconciliation import items_csv_lines
from hub.store.schema import quarantine
from tests.unit.test_reconciliation_api import PEOPLE, compared, ndjson, put_on_register, send

FORMULA = "=HYPERLINK(\"http://x.example/\",\"open\")"
LOCAL_ID_REASON = ("must not contain control characters or Unicode bidirectional formatting characters "
                   "(U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) other than tab, CR and LF")


@pytest.mark.parametrize("layout", ["swift_fixed", "swift_csv"])
def test_an_extract_writes_a_local_id_holding_a_line_break_on_one_line(layout: str) -> None:
    out = OUT_LAYOUTS[layout]
    writer = ExportWriter(out, "E06000060", datetime(2026, 12, 3, 2, 0), "full")
    rows = [{"EVENT_CODE": "S117_POSITION", "EFFECTIVE_DATE": date(2026, 12, 3), "LOCAL_ID": local,
             "NHS_NO": "9991100016", "S117_FLAG": True} for local in ("SW-B\r\nD999", "SW\tC\nD", "SW-A")]
    data = writer.header() + b"".join(writer.row(row_values(r, frozenset({"identity"}), out)) for r in rows)
    data += writer.trailer()[0]
    lines = data.split(b"\r\n")[:-1]
    assert len(lines) == 1 + 3 + 2  # header, a line per row, trailer, SHA256
    assert not any(b"\n" in line or b"\r" in line for line in lines)
    if layout == "swift_fixed":
        assert {len(line) for line in lines[1:4]} == {out.record_length}
    assert [r["LOCAL_ID"] for r in read_export(data, out)] == ["SW-B D999", "SW C D", "SW-A"]


@pytest.mark.parametrize("local_id", ["SW\x001", "SW\x1b[31m1", "SW\u202e1", "SW\x851", "SW\x0b1"])
def test_a_local_id_with_a_control_or_bidi_character_is_a_row_problem_naming_it(local_id: str) -> None:
    row = {"nhs_number": PEOPLE["A"], "local_id": local_id, "entitled": True}
    parsed = validate_row(3, row, orjson.dumps(row))
    assert parsed.value is None
    assert [(p.field, p.reason) for p in parsed.problems] == [
        ("local_id", LOCAL_ID_REASON)]
    assert parsed.nhs_number == PEOPLE["A"] and parsed.local_id is None  # who it is about; not the bad id


def test_an_ordinary_local_id_is_kept_as_sent() -> None:
    for local_id in ("SW-1", "MOS 2001/7", "Zoë-4", "SW\r\nA", "SW\tA"):
        row = {"nhs_number": PEOPLE["A"], "local_id": local_id, "entitled": True}
        parsed = validate_row(1, row, orjson.dumps(row))
        assert parsed.value is not None and parsed.value.local_id == local_id


def test_the_report_csv_never_starts_a_cell_the_body_sent_as_a_formula() -> None:
    items = [{"item_id": "i1", "state": "explained", "kind": "dates-differ", "field": "entitlement_start",
              "local_id": FORMULA, "person_id": "p1", "body_says": "2025-01-01", "hub_says": "2025-02-01",
              "who_must_act": "body", "action": "correct it", "explanation": "x", "citation": "Worcs 1.1",
              "reason": "+1 our date", "fixed_by": None}]
    rejected = [{"local_id": "@SUM(A1)", "who_must_act": "body", "action": "correct the row",
                 "errors": [{"field": "row 2, field entitled", "reason": "Input should be a valid boolean"}]}]
    rows = list(csv.DictReader(io.StringIO("".join(items_csv_lines(items, rejected)))))
    assert rows[0]["local_id"] == "'" + FORMULA and rows[0]["reason"] == "'+1 our date"
    assert rows[1]["local_id"] == "'@SUM(A1)"
    assert rows[0]["body_says"] == "2025-01-01" and rows[0]["citation"] == "Worcs 1.1"  # the hub's own, as they were


async def test_through_the_api_a_bad_local_id_is_refused_and_a_formula_is_escaped(app_hub) -> None:  # noqa: ANN001
    for who in ("A", "B"):
        await put_on_register(app_hub, who)
    key = app_hub.keys["E06000060"]
    snap = await send(app_hub, key, ndjson([
        {"nhs_number": PEOPLE["A"], "local_id": FORMULA, "entitled": True},
        {"nhs_number": PEOPLE["B"], "local_id": "SW-B\u0000\u001b[2J", "entitled": True},
    ]))
    assert snap["rows_rejected"] == 1
    assert snap["problems"] == [{"field": "row 2, field local_id", "reason": LOCAL_ID_REASON}]
    async with app_hub.hub.engine.connect() as conn:
        held = (await conn.execute(select(func.count()).select_from(quarantine)
                                   .where(quarantine.c.channel == "snapshot"))).scalar_one()
    assert held == 1
    report = await compared(app_hub, key, snap["snapshot_id"])
    item = next(i for i in report["items"] if i["local_id"] == FORMULA)  # JSON: as sent
    assert all("\x00" not in (i["local_id"] or "") for i in report["items"])
    assert [r["local_id"] for r in report["rejected_rows"]] == [None]  # B named by the row, not its bad id

    bad = await app_hub.http.post(f"/v1/reconciliations/items/{item['item_id']}", headers={"X-API-Key": key},
                                  json={"state": "explained", "reason": "see\x07bell"})
    assert bad.status_code == 422 and bad.json()["errors"] == [
        {"field": "reason", "reason": "must not contain control characters or Unicode bidirectional formatting characters "
                                      "(U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) other than tab, CR and LF"}], bad.text
    ok = await app_hub.http.post(f"/v1/reconciliations/items/{item['item_id']}", headers={"X-API-Key": key},
                                 json={"state": "explained", "reason": "-2 days: our\r\nsystem's cut-off"})
    assert ok.status_code == 200, ok.text

    r = await app_hub.http.get(f"/v1/reconciliations/{snap['snapshot_id']}?format=csv", headers={"X-API-Key": key})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    mine = next(row for row in rows if row["item_id"] == item["item_id"])
    assert mine["local_id"] == "'" + FORMULA and mine["reason"] == "'-2 days: our\r\nsystem's cut-off"
