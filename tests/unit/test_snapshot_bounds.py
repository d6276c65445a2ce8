"""Snapshot readers are bounded whatever the body (adapters/snapshots).

Before: a JSON array body nested 100,000 deep (200 KB) grew the front process
to 23.5 GB until it was killed; at depth 1000 the answer was a bare 500
(orjson's recursion limit, a TypeError, escaped the reader). ijson built each
array element whole, however deep or wide. Now the JSON reader counts the
nesting as it streams and refuses more than MAX_DEPTH, and an element longer
than MAX_LINE, before anything is built: the snapshot is `failed`, its
problem naming the row and the reason, as for any snapshot that cannot be
read whole. NDJSON rows nested too deep are row problems; a CSV line the csv
module cannot read is a row problem, never a 500.

Depths here stay at or below 5000: the machine is shared."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator

import orjson
import pytest

from adapters.snapshots import MAX_LINE, SnapshotFileError, read_json_array, read_ndjson

MAX_DEPTH = 32  # adapters.snapshots.MAX_DEPTH: the array is 1, a row 2

GOOD_ROW = {"nhs_number": "9991100016", "local_id": "SW-A", "entitled": True}


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


async def post(app_hub, body: bytes, content_type: str = "application/json"):  # noqa: ANN001, ANN201
    return await app_hub.http.post("/v1/reconciliations", content=body,
                                   headers={"X-API-Key": app_hub.keys["E06000060"], "Content-Type": content_type})


async def still_answers(app_hub) -> None:  # noqa: ANN001
    r = await post(app_hub, orjson.dumps([GOOD_ROW]))
    assert r.status_code == 202, r.text
    assert (r.json()["state"], r.json()["rows_read"], r.json()["rows_rejected"]) == ("comparing", 1, 0)


@pytest.mark.parametrize("depth", [1000, 5000])
async def test_a_deeply_nested_json_body_fails_the_snapshot_naming_why(app_hub, depth: int) -> None:  # noqa: ANN001
    r = await post(app_hub, deep(depth))
    assert r.status_code == 202, r.text
    snap = r.json()
    assert snap["state"] == "failed" and snap["rows_read"] == 0
    assert snap["problems"] == [{"field": "row 1", "reason": f"is nested more than {MAX_DEPTH} deep "
                                                             "(a row is a flat object)"}]
    await still_answers(app_hub)


async def test_a_deep_value_inside_a_row_fails_the_snapshot_at_that_row(app_hub) -> None:  # noqa: ANN001
    body = orjson.dumps([GOOD_ROW])[:-1] + b',{"nhs_number": ' + deep(1000) + b', "entitled": true}]'
    snap = (await post(app_hub, body)).json()
    assert snap["state"] == "failed"
    assert snap["problems"] == [{"field": "row 2", "reason": f"is nested more than {MAX_DEPTH} deep "
                                                             "(a row is a flat object)"}]
    await still_answers(app_hub)


@pytest.mark.parametrize("row", [
    # Counted a parser piece (4 KB) at a time: a row may pass MAX_LINE by less than that.
    {**GOOD_ROW, "local_id": "x" * (MAX_LINE + 8192)},  # one long string
    {f"k{i}": 1 for i in range(MAX_LINE // 6)},  # many keys
])
async def test_a_row_longer_than_a_line_may_be_fails_the_snapshot(app_hub, row: dict) -> None:  # noqa: ANN001
    snap = (await post(app_hub, orjson.dumps([GOOD_ROW, row]))).json()
    assert snap["state"] == "failed"
    assert snap["problems"] == [{"field": "row 2", "reason": f"is longer than {MAX_LINE} bytes"}]
    assert "xxxxxxxx" not in orjson.dumps(snap).decode()


@pytest.mark.parametrize("body", [b'{"rows": []}', b'"text"', b"12", b"", b"[", b"[1] [2]", b'[{"a": 1e400}]'])
async def test_a_body_that_is_not_a_json_array_fails_the_snapshot(app_hub, body: bytes) -> None:  # noqa: ANN001
    """A top-level object used to read as an empty list (everyone "missing")."""
    snap = (await post(app_hub, body)).json()
    assert snap["state"] == "failed" and snap["rows_read"] == 0
    assert snap["problems"] == [{"field": "(body)", "reason": "is not a valid JSON array of objects"}]


async def test_elements_that_are_not_objects_are_still_row_problems(app_hub) -> None:  # noqa: ANN001
    snap = (await post(app_hub, orjson.dumps([1, "x", None, [GOOD_ROW], GOOD_ROW]))).json()
    assert (snap["state"], snap["rows_read"], snap["rows_rejected"]) == ("comparing", 5, 4)
    assert [p["field"] for p in snap["problems"]] == ["row 1", "row 2", "row 3", "row 4"]


async def _chunks(body: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i:i + size]


async def _drain(reader, body: bytes) -> list:  # noqa: ANN001
    return [p async for p in reader(_chunks(body))]


@pytest.mark.parametrize("body", [deep(5000), b'[{"nhs_number": ' + deep(5000) + b"}]",
                                  b"[" + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"]"])
def test_the_json_reader_refuses_depth_in_a_few_megabytes(body: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(SnapshotFileError) as refused:
            asyncio.run(_drain(read_json_array, body))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.reason == f"is nested more than {MAX_DEPTH} deep (a row is a flat object)"
    assert peak < 3 * 1024 * 1024, peak


def test_nesting_up_to_the_limit_is_read() -> None:
    inner = b"[" * (MAX_DEPTH - 2) + b"]" * (MAX_DEPTH - 2)  # the array is 1, the row 2
    [row] = asyncio.run(_drain(read_json_array, b'[{"nhs_number": ' + inner + b"}]"))
    assert row.value is None and row.problems[0].field == "nhs_number"


def test_the_json_reader_reads_rows_split_anywhere_across_chunks() -> None:
    body = orjson.dumps([GOOD_ROW, {**GOOD_ROW, "nhs_number": "9991100032", "funding": None}, 7])

    async def bytewise() -> list:
        async def one_byte() -> AsyncIterator[bytes]:
            for i in range(len(body)):
                yield body[i:i + 1]
        return [p async for p in read_json_array(one_byte())]

    rows = asyncio.run(bytewise())
    assert [(r.row, r.value is not None) for r in rows] == [(1, True), (2, True), (3, False)]
    assert orjson.loads(rows[0].raw) == GOOD_ROW


@pytest.mark.parametrize("line", [deep(1000), b'{"nhs_number": ' + deep(40) + b', "entitled": true}'])
async def test_an_ndjson_row_nested_too_deep_is_a_row_problem(app_hub, line: bytes) -> None:  # noqa: ANN001
    body = line + b"\n" + orjson.dumps(GOOD_ROW) + b"\n"
    snap = (await post(app_hub, body, "application/x-ndjson")).json()
    assert (snap["state"], snap["rows_read"], snap["rows_rejected"]) == ("comparing", 2, 1)
    assert snap["problems"] == [{"field": "row 1", "reason": f"is nested more than {MAX_DEPTH} deep "
                                                             "(a row is a flat object)"}]


def test_ndjson_lines_split_across_chunks_and_many_short_lines() -> None:
    body = b"\r\n".join([orjson.dumps(GOOD_ROW)] * 3 + [b""] * 5000 + [b"not json"])
    for size in (1, 7, 65536):
        async def go(size: int = size) -> list:
            return [p async for p in read_ndjson(_chunks(body, size))]
        parsed = asyncio.run(go())
        assert [(p.row, p.value is not None) for p in parsed] == [(1, True), (2, True), (3, True), (4, False)]
        assert parsed[3].raw == b"not json"


async def test_a_csv_line_the_csv_module_cannot_read_is_a_row_problem(app_hub) -> None:  # noqa: ANN001
    csv = (b"NHS_NO,LOCAL_ID,S117_FLAG\n"
           b"9991100016,SW\rA,Y\n"  # a bare carriage return inside an unquoted value
           b"9991100032,SW-B,Y\nTRAILER,2\n")
    r = await post(app_hub, csv, "text/csv")
    assert r.status_code == 202, r.text
    snap = r.json()
    assert (snap["state"], snap["rows_read"], snap["rows_rejected"]) == ("comparing", 2, 1)
    assert snap["problems"] == [{"field": "row 1", "reason": "is not a valid CSV line"}]
    r = await post(app_hub, b"NHS_NO,S117\rFLAG\n", "text/csv")
    assert r.json()["problems"] == [{"field": "header", "reason": "is not a valid CSV line"}]


async def test_a_line_longer_than_max_line_is_refused_even_inside_one_chunk(app_hub) -> None:  # noqa: ANN001
    """The in-process client sends the body as one chunk: the limit is per line, not per chunk."""
    long_row = orjson.dumps({**GOOD_ROW, "local_id": "y" * (MAX_LINE + 1)})
    snap = (await post(app_hub, orjson.dumps(GOOD_ROW) + b"\n" + long_row + b"\n", "application/x-ndjson")).json()
    assert snap["state"] == "failed"
    assert snap["problems"] == [{"field": "(body)", "reason": f"a line is longer than {MAX_LINE} bytes"}]


@pytest.mark.parametrize("trailer", [b"TRAILER,+2", b"TRAILER,2_0", b"TRAILER,0x2", b"TRAILER,2,3",
                                     "TRAILER,٢".encode()])
async def test_a_trailer_counts_in_digits_only(app_hub, trailer: bytes) -> None:  # noqa: ANN001
    """`int()` read "+2" as 2 and "٢" (an Arabic-Indic two) as 2, and "2,3" as 2 (the rest ignored):
    a trailer that does not say plainly how many records the file holds fails the snapshot, naming it."""
    csv = b"NHS_NO,LOCAL_ID,S117_FLAG\n9991100016,SW-A,Y\n9991100032,SW-B,Y\n" + trailer + b"\n"
    snap = (await post(app_hub, csv, "text/csv")).json()
    assert snap["state"] == "failed", snap
    assert snap["problems"] == [{"field": "trailer", "reason": "must be TRAILER,<record count>"}]
    padded = (await post(app_hub, csv.replace(trailer, b"TRAILER,2,"), "text/csv")).json()
    assert padded["state"] == "comparing" and padded["rows_read"] == 2, padded
