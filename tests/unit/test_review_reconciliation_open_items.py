"""Review (reconciliation): three items an outside review left open.

- A row rejected for a field other than the NHS number (a bad date) left the
  person out of the body's rows, so the comparison told the body the person
  was missing from its list, though the body had listed them. Such a person is
  now reported as `row-rejected` with the row's errors (`rejected_rows` in the
  report, a line in its CSV); not compared, so what was last found about them
  stands (a `missing-on-body-list` item is fixed: the body did list them).
- A CSV snapshot with a quoted field holding a line break (RFC 4180; council
  files, adapters/council_files, have always read them) was refused whole: the
  reader split it at every line end, so its trailer count no longer matched.
  Records now end at a line end outside quotes; the field's own check applies
  (a line break in a date is that column's row error).
- `agreement_rate_percent` was worked out from the exact counts beside counts
  published rounded or suppressed, so a reader could find the suppressed
  count (8 people, 3 agreeing: "10", "*" and 38% leave only 3 of 8). The rate
  is now worked out from the published counts, "*" when either is.

Through the API with the hub on SQLite, as tests/unit/test_reconciliation_api.py.
"""

from __future__ import annotations

import json

import orjson
import pytest

from hub.reconciliation import ItemWatcher, Reconciler
from hub.reports import suppress
from tests.support import detention

PEOPLE = {"A": "9991100016", "B": "9991100032", "C": "9991100059"}
CSV_HEADER = "NHS_NO,LOCAL_ID,S117_FLAG,RESP_LA_GSS,RESP_ICB_ODS,S117_START,S117_END,NEXT_REVIEW,FUNDING"


def nhs_numbers(n: int) -> list[str]:
    """`n` synthetic NHS numbers from the 999 test range, valid check digits."""
    out = []
    for stem in range(999110000, 999120000):
        digits = [int(c) for c in str(stem)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11
        if check == 11:
            check = 0
        if check != 10:
            out.append(f"{stem}{check}")
        if len(out) == n:
            return out
    raise AssertionError("not enough numbers")


async def put_on_register(app_hub, nhs: str, run: str) -> str:  # noqa: ANN001
    person_id = ""
    for change in detention(nhs, run):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
        assert r.status_code == 202, r.text
        person_id = r.json()["person_id"]
    return person_id


async def review_due(app_hub, person_id: str) -> str:  # noqa: ANN001
    """The register's next review date (every synthetic detention here has the same dates)."""
    r = await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert r.status_code == 200, r.text
    return r.json()["next_review"]["due_on"]


@pytest.fixture
async def register(app_hub):  # noqa: ANN001, ANN201
    people = {who: await put_on_register(app_hub, PEOPLE[who], who) for who in PEOPLE}
    REVIEW.append(await review_due(app_hub, people["A"]))
    yield people
    REVIEW.clear()


REVIEW: list[str] = []  # the register's next review date (ISO), read by the fixture


async def send(app_hub, body: bytes, content_type: str) -> dict:  # noqa: ANN001
    r = await app_hub.http.post("/v1/reconciliations", content=body,
                                headers={"X-API-Key": app_hub.keys["E06000060"], "Content-Type": content_type})
    assert r.status_code == 202, r.text
    return r.json()


async def compared(app_hub, snapshot_id: str) -> dict:  # noqa: ANN001
    hub = app_hub.hub
    await Reconciler(hub.engine, hub.ref, hub.agreements, hub.reconciliation).run_once()
    r = await app_hub.http.get(f"/v1/reconciliations/{snapshot_id}", headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert r.status_code == 200, r.text
    return r.json()


def row(who: str, **over: object) -> dict:
    """The register's view of a person, as the council's list would hold it."""
    return {"nhs_number": PEOPLE[who], "local_id": f"SW-{who}", "entitled": True, "responsible_council": "E06000060",
            "responsible_icb": "QU9", "entitlement_start": "2025-04-07", "next_review_due": REVIEW[0], **over}


def csv_row(who: str, *, icb: str = "QU9", start: str = "07/04/2025", local: str | None = None) -> str:
    return f"{PEOPLE[who]},{local or f'SW-{who}'},Y,E06000060,{icb},{start},,{REVIEW[0]},"


def ndjson(rows: list[dict]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


# ------------------------------------------------------------- 1. row rejected, not missing


BAD_DATE = {
    "ndjson": (lambda: ndjson([row("A"), row("B", entitlement_start="2025-13-40"), row("C")]),
               "application/x-ndjson", "entitlement_start"),
    "csv": (lambda: "\n".join([CSV_HEADER, csv_row("A"), csv_row("B", start="40/13/2025"), csv_row("C"),
                                "TRAILER,3", ""]).encode(), "text/csv", "S117_START"),
}


@pytest.mark.parametrize("fmt", sorted(BAD_DATE))
async def test_a_row_rejected_for_a_bad_date_is_reported_as_row_rejected_not_missing(
        app_hub, register, fmt: str) -> None:  # noqa: ANN001
    make, ctype, column = BAD_DATE[fmt]
    snap = await send(app_hub, make(), ctype)
    assert (snap["rows_read"], snap["rows_rejected"]) == (3, 1)
    report = await compared(app_hub, snap["snapshot_id"])
    assert report["state"] == "done"
    # The council listed B: it is never told B is missing from its list.
    assert [i for i in report["items"] if i["kind"] == "missing-on-body-list"] == []
    assert report["items"] == []
    [rejected] = report["rejected_rows"]
    assert rejected["outcome"] == "row-rejected" and rejected["row"] == 2 and rejected["local_id"] == "SW-B"
    assert [e["field"] for e in rejected["errors"]] == [f"row 2, field {column}"]
    assert rejected["errors"][0]["reason"]
    assert PEOPLE["B"] not in orjson.dumps(report).decode()  # never the NHS number
    # The CSV for the council's own team says the same.
    r = await app_hub.http.get(f"/v1/reconciliations/{snap['snapshot_id']}?format=csv",
                               headers={"X-API-Key": app_hub.keys["E06000060"]})
    lines = r.text.strip().splitlines()
    assert len(lines) == 2 and ",row-rejected," in lines[1] and "SW-B" in lines[1] and column in lines[1]
    assert "missing-on-body-list" not in r.text and PEOPLE["B"] not in r.text


async def test_a_row_rejected_for_its_nhs_number_names_no_person(app_hub, register) -> None:  # noqa: ANN001
    body = ndjson([row("A"), row("B", nhs_number="9991100033"), row("C")])  # bad check digit
    snap = await send(app_hub, body, "application/x-ndjson")
    report = await compared(app_hub, snap["snapshot_id"])
    # Nobody can tell whose row it was: B is missing from the list as the hub can read it.
    assert report["rejected_rows"] == []
    assert [(i["kind"], i["person_id"]) for i in report["items"]] == [("missing-on-body-list", register["B"])]
    assert [p["field"] for p in report["problems"]] == ["row 2, field nhs_number"]


async def test_what_was_found_before_stands_while_the_row_is_rejected(app_hub, register) -> None:  # noqa: ANN001
    hub = app_hub.hub
    # Night 1: B's ICB differs, C is left off the list.
    night1 = await compared(app_hub, (await send(app_hub, ndjson([row("A"), row("B", responsible_icb="QHL")]),
                                                 "application/x-ndjson"))["snapshot_id"])
    before = {(i["kind"], i["person_id"]): i for i in night1["items"]}
    assert set(before) == {("responsible-body-differs", register["B"]), ("missing-on-body-list", register["C"])}
    # Night 2: B's and C's rows both have a bad date.
    night2 = await compared(app_hub, (await send(app_hub, ndjson([
        row("A"), row("B", responsible_icb="QHL", entitlement_start="2025-02-30"),
        row("C", entitlement_start="not a date")]), "application/x-ndjson"))["snapshot_id"])
    items = {(i["kind"], i["person_id"]): i for i in night2["items"]}
    # B was not compared: the difference last found stands, the same item, still open.
    icb = items[("responsible-body-differs", register["B"])]
    assert (icb["item_id"], icb["state"], icb["local_id"]) == (
        before[("responsible-body-differs", register["B"])]["item_id"], "open", "SW-B")
    # C is on the list now: never reported missing, the old item fixed by the snapshot.
    missing = items[("missing-on-body-list", register["C"])]
    assert (missing["state"], missing["fixed_by"]) == ("fixed", "snapshot")
    assert sorted((r["row"], r["local_id"]) for r in night2["rejected_rows"]) == [(2, "SW-B"), (3, "SW-C")]
    assert night2["summary"]["open"] == 1
    # A later change to B is not checked against a row the hub could not read: the item stays open.
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RiO", "source_message_id": "B-review", "change_type": "review-completed",
        "effective_date": "2025-06-01", "person": {"nhs_number": PEOPLE["B"]}})
    assert r.status_code == 202, r.text
    while await ItemWatcher(hub.engine, hub.bus, hub.ref, hub.agreements).run_once():
        pass
    r = await app_hub.http.get(f"/v1/reconciliations/{night2['snapshot_id']}",
                               headers={"X-API-Key": app_hub.keys["E06000060"]})
    states = {(i["kind"], i["person_id"]): i["state"] for i in r.json()["items"]}
    assert states[("responsible-body-differs", register["B"])] == "open"


async def test_a_person_with_a_rejected_row_counts_on_the_list_and_not_as_agreeing(app_hub, register) -> None:  # noqa: ANN001
    from hub.reconciliation import list_agreement

    snap = await send(app_hub, ndjson([row("A"), row("B", entitlement_start="2025-13-40"), row("C")]),
                      "application/x-ndjson")
    await compared(app_hub, snap["snapshot_id"])
    [entry] = await list_agreement(app_hub.hub.engine, {"E06000060"})
    assert (entry["people"], entry["agreeing"]) == (3, 2)


# ------------------------------------------------------------- 2. RFC 4180 line breaks in a CSV


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
async def test_a_quoted_field_holding_a_line_break_is_read_as_rfc_4180(app_hub, register, eol: str) -> None:  # noqa: ANN001
    lines = [CSV_HEADER, csv_row("A", icb="QHL", local=f'"SW{eol}A"'), csv_row("B"), csv_row("C"), "TRAILER,3", ""]
    snap = await send(app_hub, eol.join(lines).encode(), "text/csv")
    assert (snap["state"], snap["rows_read"], snap["rows_rejected"], snap["problems"]) == ("comparing", 3, 0, [])
    report = await compared(app_hub, snap["snapshot_id"])
    [item] = report["items"]
    assert (item["kind"], item["field"], item["local_id"]) == ("responsible-body-differs", "responsible_icb",
                                                               f"SW{eol}A")


async def test_a_line_break_inside_a_date_is_that_rows_error_naming_the_column(app_hub, register) -> None:  # noqa: ANN001
    body = "\n".join([CSV_HEADER, csv_row("A"), csv_row("B", start='"07/04\n/2025"'), csv_row("C"),
                      "TRAILER,3", ""]).encode()
    snap = await send(app_hub, body, "text/csv")
    assert (snap["state"], snap["rows_read"], snap["rows_rejected"]) == ("comparing", 3, 1)
    assert [p["field"] for p in snap["problems"]] == ["row 2, field S117_START"]
    report = await compared(app_hub, snap["snapshot_id"])
    assert report["items"] == [] and [r["local_id"] for r in report["rejected_rows"]] == ["SW-B"]


async def test_a_quoted_field_never_closed_fails_the_snapshot_naming_the_row(app_hub, register) -> None:  # noqa: ANN001
    body = "\n".join([CSV_HEADER, csv_row("A"), csv_row("B", local='"SW-B'), csv_row("C"), "TRAILER,3", ""]).encode()
    snap = await send(app_hub, body, "text/csv")
    assert snap["state"] == "failed"
    assert snap["problems"] == [{"field": "row 2", "reason": "a quoted field is not closed before the end of the file"}]


# ------------------------------------------------------------- 3. the rate never narrows a suppressed count


def consistent(shown: dict, rate_of) -> set[tuple[int, int]]:  # noqa: ANN001
    """Every (people, agreeing) a reader could take the published row to mean, given how the rate is worked
    out (`rate_of(people, agreeing)`): what the row lets a reader work out."""
    out = set()
    for people in range(1, 200):
        for agreeing in range(people + 1):
            if (suppress(people), suppress(agreeing)) != (shown["people_on_either_list"], shown["agreeing"]):
                continue
            if rate_of(people, agreeing) == shown["agreement_rate_percent"]:
                out.add((people, agreeing))
    return out


async def test_the_agreement_rate_does_not_let_a_reader_work_out_a_suppressed_count(app_hub) -> None:  # noqa: ANN001
    from hub.clients import add_client

    numbers = nhs_numbers(8)
    person_ids = [await put_on_register(app_hub, nhs, f"P{i}") for i, nhs in enumerate(numbers)]
    due = await review_due(app_hub, person_ids[0])
    # The council lists all eight; five with another ICB: 3 of 8 agree.
    rows = [{"nhs_number": n, "entitled": True, "responsible_council": "E06000060", "next_review_due": due,
             "responsible_icb": "QU9" if i < 3 else "QHL"} for i, n in enumerate(numbers)]
    snap = await send(app_hub, ndjson(rows), "application/x-ndjson")
    await compared(app_hub, snap["snapshot_id"])
    _, reports = await add_client(app_hub.hub.engine, "Bucks s117 panel", "E06000060", "council", ["reports:read"])
    r = await app_hub.http.get("/v1/reports/register-summary", headers={"X-API-Key": reports})
    assert r.status_code == 200, r.text
    [shown] = r.json()["list_agreement"]
    assert (shown["people_on_either_list"], shown["agreeing"]) == (10, "*")

    # The old rate (exact counts) beside these counts: only 3 of 8 fits, the suppressed count found.
    old = dict(shown, agreement_rate_percent=round(100 * 3 / 8))
    assert consistent(old, lambda p, a: round(100 * a / p)) == {(8, 3)}
    # Published now: the rate says no more than the counts beside it.
    assert shown["agreement_rate_percent"] == "*"
    without_rate = consistent(dict(shown, agreement_rate_percent=None), lambda p, a: None)
    assert {a for _p, a in without_rate} == set(range(1, 8))


def test_the_rate_does_not_undo_the_rounding_of_larger_counts() -> None:
    from hub.reports import list_agreement_rows

    # 20 people, 17 agreeing: published 20 and 15 (rounded); the old 85% left only (20, 17), so the three
    # people whose lists differ (a count never published) could be read off it.
    [shown] = list_agreement_rows([{"body": "E06000060", "as_of": "2026-11-01", "people": 20, "agreeing": 17}])
    assert (shown["people_on_either_list"], shown["agreeing"]) == (20, 15)
    assert consistent(dict(shown, agreement_rate_percent=85), lambda p, a: round(100 * a / p)) == {(20, 17)}
    # Now the rate is the published counts' own: every pair the counts allow is still possible.
    assert shown["agreement_rate_percent"] == 75
    from_counts = lambda p, a: round(100 * suppress(a) / suppress(p))  # noqa: E731
    assert consistent(shown, from_counts) == consistent(dict(shown, agreement_rate_percent=None), lambda p, a: None)


# ------------------------------------------------------------- the readers and the domain, directly


async def read_all(reader, body: bytes, piece: int = 7) -> list:  # noqa: ANN001
    async def chunks():  # noqa: ANN202
        for i in range(0, len(body), piece):
            yield body[i:i + piece]
    return [p async for p in reader(chunks())]


async def test_csv_records_split_at_line_ends_outside_quotes_only() -> None:
    from adapters.snapshots import read_csv

    body = ('\ufeff"NHS_NO","LOCAL_ID","S117_FLAG"\r\n'
            f'"{PEOPLE["A"]}","SW ""A"",\r\nnorth",Y\r\n'  # a quote, a comma and a line break inside one field
            f'{PEOPLE["B"]},SW"B,Y\r\n'  # a quote inside an unquoted field opens nothing
            'TRAILER,2\r\n').encode()
    a, b = await read_all(read_csv, body)
    assert (a.row, a.value.local_id, b.row, b.value.local_id) == (1, 'SW "A",\r\nnorth', 2, 'SW"B')
    assert a.raw == f'"{PEOPLE["A"]}","SW ""A"",\r\nnorth",Y'.encode()


async def test_a_quoted_field_open_past_max_line_is_refused_not_buffered() -> None:
    from adapters.snapshots import MAX_LINE, SnapshotFileError, read_csv

    body = (f"NHS_NO,LOCAL_ID,S117_FLAG\n{PEOPLE['A']},SW-A,Y\n{PEOPLE['B']},\"SW-B,Y\n"
            + "x,y,z\n" * (MAX_LINE // 6 + 1) + "TRAILER,2\n").encode()
    with pytest.raises(SnapshotFileError) as exc:
        await read_all(read_csv, body, piece=4096)
    assert (exc.value.field, exc.value.reason) == ("row 2", f"is longer than {MAX_LINE} bytes (a quoted field not closed?)")


async def test_a_rejected_row_names_its_person_only_when_its_nhs_number_is_valid() -> None:
    from adapters.snapshots import read_csv, read_ndjson

    REVIEW.append("2026-01-01")  # no hub here: any review date
    try:
        await _rejected_rows_name(read_csv, read_ndjson)
    finally:
        REVIEW.clear()


async def _rejected_rows_name(read_csv, read_ndjson) -> None:  # noqa: ANN001
    rows = await read_all(read_ndjson, ndjson([
        row("A", entitlement_start="2025-13-40"), row("B", nhs_number="9991100033", entitlement_start="x"),
        row("C", local_id="L" * 51, funding="maybe"), {"local_id": "SW-D", "entitled": True}]))
    assert [(p.nhs_number, p.local_id) for p in rows] == [(PEOPLE["A"], "SW-A"), (None, None), (PEOPLE["C"], None),
                                                          (None, None)]
    body = "\n".join([CSV_HEADER, csv_row("A", start="31/02/2025"), "TRAILER,1", ""]).encode()
    [a] = await read_all(read_csv, body)
    assert (a.value, a.nhs_number, a.local_id, [p.field for p in a.problems]) == (None, PEOPLE["A"], "SW-A",
                                                                                ["S117_START"])


def test_what_stands_for_a_person_whose_row_was_rejected() -> None:
    from hub.domain.reconciliation import Difference, Item, ItemState, Kind, standing

    def item(kind: Kind, state: ItemState) -> Item:
        d = Difference("k", kind, "f", None, None, "body", "a", "e", "c")
        return Item(f"{kind}-{state}", d.key, state, d, "s1", "s1")

    items = [item(Kind.MISSING_ON_BODY_LIST, ItemState.OPEN), item(Kind.DATES_DIFFER, ItemState.EXPLAINED),
             item(Kind.RESPONSIBLE_BODY_DIFFERS, ItemState.ACCEPTED), item(Kind.REVIEW_OVERDUE, ItemState.FIXED)]
    assert [d.kind for d in standing(items)] == [Kind.DATES_DIFFER, Kind.RESPONSIBLE_BODY_DIFFERS]


async def test_a_quoted_record_of_max_line_bytes_is_still_read() -> None:
    from adapters.snapshots import MAX_LINE, read_csv

    record = f'{PEOPLE["A"]},"SW-A",Y,'
    record += "x" * (MAX_LINE - len(record))  # one line of exactly MAX_LINE bytes, as an unquoted line may be
    body = f"NHS_NO,LOCAL_ID,S117_FLAG,FUNDING\n{record}\nTRAILER,1\n".encode()
    [a] = await read_all(read_csv, body, piece=4096)
    assert len(a.raw) == MAX_LINE and [p.field for p in a.problems] == ["FUNDING"] and a.nhs_number == PEOPLE["A"]


def test_send_snapshot_exits_3_when_rows_were_rejected_though_no_difference_is_open(
        tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """A nightly job told exit 0 ("compared, no open differences") would never look at the rows to correct:
    before, a row rejected for a bad date showed as a missing person (an open item, exit 3); now that it does
    not, the rejected row itself is what the job must see."""
    import argparse

    import httpx

    from hub import snapshot_cli

    sid = "0b7c5c1e-8a43-4f4e-9d0e-6a1d2b3c4d5e"
    done = {"snapshot_id": sid, "state": "done", "rows_read": 3, "rows_rejected": 1, "items": [],
            "rejected_rows": [{"row": 2, "outcome": "row-rejected", "local_id": "SW-B", "errors": [
                {"field": "row 2, field entitlement_start", "reason": "Input should be a valid date"}]}]}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json={"snapshot_id": sid, "state": "comparing"})
        return httpx.Response(200, json=done)

    real = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(answer), **kw))
    path = tmp_path / "list.ndjson"
    path.write_text('{"nhs_number": "9991100016", "entitled": true}\n')
    args = argparse.Namespace(api_key="k", url="http://hub", format="ndjson", timeout=5.0, poll=0.0, file=path)
    with pytest.raises(SystemExit) as exit_:
        snapshot_cli.send_snapshot(args)
    assert exit_.value.code == 3
    assert json.loads(capsys.readouterr().out)["rejected_rows"][0]["local_id"] == "SW-B"
