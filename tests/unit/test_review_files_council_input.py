"""Review (council files): whole-file checks a council's export can fail.

- A file of nothing but Unicode white space (no-break spaces, the file and
  record separators U+001C-U+001F that some exports leave) was a bare 500 and
  no receipt: the byte check found text, the record splitter none, and the
  StopIteration escaped the request. Now `422` "the file is empty", on record.
- Two CSV exports joined (`cat a.csv b.csv`) had the second header row taken
  as a data row (quarantined with a list of column errors) and the second
  file's rows recorded as this one's; a fixed-width file's second H record was
  already refused whole. Now the CSV is refused the same way, naming the row.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from adapters.council_files import SWIFT_CSV, SWIFT_FIXED, open_file
from hub.clients import add_client
from hub.store.schema import file_receipts, quarantine, register_changes

HEADER = "RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO"


@pytest.fixture
async def council(app_hub):  # noqa: ANN001, ANN201
    _, key = await add_client(app_hub.hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    return {"X-API-Key": key}


async def count(hub, table, *where) -> int:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()


@pytest.mark.parametrize("body", [b"\xc2\xa0", b"\x1c\r\n", b"\xef\xbb\xbf\xe2\x80\x83\r\n\xc2\xa0", b"\x1f\x1e"])
@pytest.mark.parametrize("fmt", ["swift_csv", "swift_fixed"])
async def test_a_file_of_unicode_white_space_is_empty_not_a_500(app_hub, council, body: bytes, fmt: str) -> None:  # noqa: ANN001
    r = await app_hub.http.post(f"/v1/council-files?format={fmt}", content=body,
                                headers={**council, "Content-Type": "text/plain"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"field": "(file)", "reason": "the file is empty"}]
    assert await count(app_hub.hub, file_receipts, file_receipts.c.status == "rejected") == 1  # on record


def test_the_adapter_never_raises_on_white_space() -> None:
    for layout in (SWIFT_CSV, SWIFT_FIXED):
        assert [p.code for p in open_file("\u00a0\n\u2028".encode(), layout).problems] == ["empty"]


@pytest.mark.parametrize("second", [HEADER, "\ufeff" + HEADER, "record_id,event,effective_date,nhs_no",
                                    '"RECORD_ID","EVENT","EFFECTIVE_DATE","NHS_NO","SURNAME"'])
async def test_two_csv_exports_joined_are_refused_naming_the_second_header(app_hub, council, second: str) -> None:  # noqa: ANN001
    data = "\r\n".join([HEADER, "SW-1,REVIEW_DONE,01/07/2025,9991100016", second,
                        "SW-2,REVIEW_DONE,01/07/2025,9991100032", ""]).encode()
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=data,
                                headers={**council, "Content-Type": "text/csv"})
    assert r.status_code == 422, r.text
    reason = r.json()["errors"][0]["reason"]
    assert reason.startswith("row 2 is a second header row"), reason
    assert await count(app_hub.hub, quarantine) == 0 and await count(app_hub.hub, register_changes) == 0


def test_a_record_id_that_reads_record_id_is_still_a_row() -> None:
    """Only a record made of column names is a header: a data row mentioning RECORD_ID is mapped as a row."""
    data = "\r\n".join([HEADER, "RECORD_ID,REVIEW_DONE,01/07/2025,9991100016", ""]).encode()
    stream = open_file(data, SWIFT_CSV)
    assert stream.ok and stream.count == 1
    assert [r.record_id for r in stream.rows()] == ["RECORD_ID"]
