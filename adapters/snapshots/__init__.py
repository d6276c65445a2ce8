"""Register snapshots: a body's whole current list of people it believes are
on the s117 register, sent for reconciliation (never as register changes).

Three forms, each read as a stream in bounded memory:
- NDJSON (`application/x-ndjson`): one JSON object per line;
- a JSON array (`application/json`), read incrementally with ijson;
- CSV (`text/csv`), the council file layout `swift_snapshot_csv`: a header
  line of column names, data rows, and a trailer row `TRAILER,<count>`.

Every row is validated into `SnapshotRow`; a bad row is reported by its row
number and field, never by its values.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import ijson
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hub.ingest.nhs_number import nhs_number_problem, normalise

GSS = re.compile(r"^[EWSN]\d{8}$")
ODS = re.compile(r"^[A-Z0-9]{3,6}$")
MAX_LINE = 64 * 1024  # one row: far beyond any real row; a longer line is refused, not buffered
FORMATS = ("ndjson", "json", "swift_snapshot_csv")

# The published CSV layout: column -> canonical field.
CSV_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # column, field, how it is read
    ("NHS_NO", "nhs_number", "text"),
    ("LOCAL_ID", "local_id", "text"),
    ("S117_FLAG", "entitled", "flag"),
    ("RESP_LA_GSS", "responsible_council", "text"),
    ("RESP_ICB_ODS", "responsible_icb", "text"),
    ("S117_START", "entitlement_start", "date"),
    ("S117_END", "entitlement_end", "date"),
    ("NEXT_REVIEW", "next_review_due", "date"),
    ("FUNDING", "funding", "flag"),
)
CSV_DATE_FORMATS = ("%d/%m/%Y", "%Y-%m-%d")
# The hub's own outbound full extract (adapters/council_files/outbound.py) is a
# valid snapshot: its other columns are read and ignored, and its SHA256 line
# after the trailer is checked.
IGNORED_COLUMNS = frozenset({"EVENT_ID", "EVENT_NO", "EVENT_CODE", "EFFECTIVE_DATE", "REVIEW_KIND", "OPEN_DISPUTE",
                             "LEGAL_STATUS", "CITATION"})


class SnapshotRow(BaseModel):
    """One person on a body's list, as the body believes."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    nhs_number: str
    local_id: str | None = Field(default=None, max_length=50)
    entitled: bool
    responsible_council: str | None = None
    responsible_icb: str | None = None
    entitlement_start: date | None = None
    entitlement_end: date | None = None
    next_review_due: date | None = None
    funding: bool | None = None

    @field_validator("nhs_number")
    @classmethod
    def _nhs(cls, v: str) -> str:
        reason = nhs_number_problem(v)
        if reason:
            raise ValueError(reason)
        return normalise(v)

    @field_validator("responsible_council")
    @classmethod
    def _gss(cls, v: str | None) -> str | None:
        if v and not GSS.fullmatch(v):
            raise ValueError("must be a GSS council code, e.g. E06000060")
        return v or None

    @field_validator("responsible_icb")
    @classmethod
    def _ods(cls, v: str | None) -> str | None:
        if v and not ODS.fullmatch(v):
            raise ValueError("must be an ODS code of 3-6 letters and digits")
        return v or None


@dataclass(frozen=True, slots=True)
class RowProblem:
    row: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": f"row {self.row}, field {self.field}" if self.field else f"row {self.row}",
                "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ParsedRow:
    row: int
    raw: bytes  # what the body sent for this row (kept encrypted in quarantine when rejected)
    value: SnapshotRow | None
    problems: tuple[RowProblem, ...] = ()


class SnapshotFileError(ValueError):
    """The snapshot as a whole cannot be read; `field` and `reason` say why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def validate_row(row: int, data: Any, raw: bytes) -> ParsedRow:
    if not isinstance(data, dict):
        return ParsedRow(row, raw, None, (RowProblem(row, "", "must be a JSON object"),))
    try:
        return ParsedRow(row, raw, SnapshotRow.model_validate(data))
    except ValidationError as exc:
        problems = tuple(
            RowProblem(row, ".".join(str(p) for p in e["loc"]), _reason(e)) for e in exc.errors()
        )
        return ParsedRow(row, raw, None, problems)


def _reason(error: dict[str, Any]) -> str:
    # pydantic's message, without ever echoing the input value.
    msg = str(error.get("msg", "is invalid"))
    return msg.removeprefix("Value error, ")


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    buf = b""
    async for chunk in chunks:
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1:]
            yield line.rstrip(b"\r")
        if len(buf) > MAX_LINE:
            raise SnapshotFileError("(body)", f"a line is longer than {MAX_LINE} bytes")
    if buf.strip():
        yield buf.rstrip(b"\r")


async def read_ndjson(chunks: AsyncIterator[bytes]) -> AsyncIterator[ParsedRow]:
    n = 0
    async for line in _lines(chunks):
        if not line.strip():
            continue
        n += 1
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield ParsedRow(n, line, None, (RowProblem(n, "", "is not valid JSON"),))
            continue
        yield validate_row(n, data, line)


async def read_json_array(chunks: AsyncIterator[bytes]) -> AsyncIterator[ParsedRow]:
    events = ijson.sendable_list()
    coro = ijson.items_coro(events, "item", use_float=True)
    n = 0
    try:
        async for chunk in chunks:
            if not chunk:
                continue  # an empty send means end of input to ijson
            coro.send(chunk)
            for item in events:
                n += 1
                yield validate_row(n, item, orjson.dumps(item, default=str))
            del events[:]
        coro.close()
    except ijson.JSONError as exc:
        raise SnapshotFileError("(body)", "is not a valid JSON array of objects") from exc
    for item in events:
        n += 1
        yield validate_row(n, item, orjson.dumps(item, default=str))


def _csv_value(kind: str, text: str) -> Any:
    if text == "":
        return None
    if kind == "flag":
        up = text.upper()
        if up in ("Y", "YES", "1", "TRUE"):
            return True
        if up in ("N", "NO", "0", "FALSE"):
            return False
        raise ValueError("must be Y or N")
    if kind == "date":
        for fmt in CSV_DATE_FORMATS:
            try:
                return datetime.strptime(text, fmt).date()
            except ValueError:
                pass
        raise ValueError("must be a date DD/MM/YYYY (or YYYY-MM-DD)")
    return text


async def read_csv(chunks: AsyncIterator[bytes]) -> AsyncIterator[ParsedRow]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    header: list[str] | None = None
    n = 0
    trailer_count: int | None = None
    digest = hashlib.sha256()
    checked = False

    async def text_lines() -> AsyncIterator[tuple[bytes, str]]:
        async for line in _lines(chunks):
            try:
                yield line, decoder.decode(line + b"\n")
            except UnicodeDecodeError as exc:
                raise SnapshotFileError("(body)", "is not UTF-8 text") from exc

    async for raw, text in text_lines():
        if not text.strip():
            continue
        cells = next(csv.reader([text]))
        if trailer_count is not None and cells and cells[0].strip().upper() == "SHA256" and not checked:
            if len(cells) < 2 or cells[1].strip().lower() != digest.hexdigest():
                raise SnapshotFileError("SHA256", "does not match the file's contents")
            checked = True
            continue
        digest.update(raw + b"\r\n")  # the SHA256 line covers the lines as the hub writes them, CRLF
        if header is None:
            header = [c.strip().upper() for c in cells]
            missing = [c for c, _f, _k in CSV_COLUMNS if c not in header and c in ("NHS_NO", "S117_FLAG")]
            unknown = [c for c in header if c not in {name for name, _f, _k in CSV_COLUMNS} | IGNORED_COLUMNS]
            if missing or unknown:
                raise SnapshotFileError("header", f"missing column(s) {missing}" if missing
                                        else f"unknown column(s) {unknown}")
            continue
        if trailer_count is not None:
            raise SnapshotFileError("trailer", "records follow the trailer")
        if cells and cells[0].strip().upper() == "TRAILER":
            try:
                trailer_count = int(cells[1])
            except (IndexError, ValueError) as exc:
                raise SnapshotFileError("trailer", "must be TRAILER,<record count>") from exc
            continue
        n += 1
        if len(cells) != len(header):
            yield ParsedRow(n, raw, None, (RowProblem(n, "", f"has {len(cells)} columns, the header {len(header)}"),))
            continue
        data: dict[str, Any] = {}
        problems: list[RowProblem] = []
        kinds = {name: (fld, kind) for name, fld, kind in CSV_COLUMNS}
        for name, cell in zip(header, cells):
            if name in IGNORED_COLUMNS:
                continue
            fld, kind = kinds[name]
            try:
                value = _csv_value(kind, cell.strip())
            except ValueError as exc:
                problems.append(RowProblem(n, name, str(exc)))
                continue
            if value is not None:
                data[fld] = value
        if problems:
            yield ParsedRow(n, raw, None, tuple(problems))
            continue
        parsed = validate_row(n, data, raw)
        if parsed.problems:
            names = {fld: name for name, fld, _k in CSV_COLUMNS}
            parsed = ParsedRow(n, raw, None, tuple(RowProblem(n, names.get(p.field, p.field), p.reason)
                                                    for p in parsed.problems))
        yield parsed
    if header is None:
        raise SnapshotFileError("header", "the file is empty")
    if trailer_count is None:
        raise SnapshotFileError("trailer", "is missing: the file may be cut short")
    if trailer_count != n:
        raise SnapshotFileError("trailer", f"counts {trailer_count} records, the file has {n}")


def reader_for(fmt: str):  # noqa: ANN201
    return {"ndjson": read_ndjson, "json": read_json_array, "swift_snapshot_csv": read_csv}[fmt]
