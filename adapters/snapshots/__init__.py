"""Register snapshots: a body's whole current list of people it believes are
on the s117 register, sent for reconciliation (never as register changes).

Three forms, each read as a stream in bounded memory:
- NDJSON (`application/x-ndjson`): one JSON object per line (a body with
  none is refused: nothing tells an empty list from an export that failed);
- a JSON array (`application/json`), read incrementally from ijson's parser
  events: its nesting is counted as it streams and more than `MAX_DEPTH`
  (the array 1, a row 2) refuses the snapshot, as does an element longer
  than `MAX_LINE` (counted a 4 KB parser piece at a time), before any of it
  is built;
- CSV (`text/csv`), the council file layout `swift_snapshot_csv`: a header
  line of column names, data rows, and a trailer row `TRAILER,<count>`. As in
  council files (adapters/council_files), a record ends at a line end outside
  a quoted field (RFC 4180): a quoted field may hold line breaks, each column
  then checked as usual.

A line (NDJSON, CSV) is at most `MAX_LINE` bytes, and so is a CSV record
(its lines together). Every row is validated into `SnapshotRow`; a bad row is
reported by its row number and field, never by its values, and names who it
is about (`ParsedRow.nhs_number`) when its NHS number is itself valid. A body
that cannot be read whole raises `SnapshotFileError` (field and reason, never
a value); no other error leaves a reader.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ijson
import orjson
from ijson.common import ObjectBuilder
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from hub.codec import DUPLICATE_KEY, MAX_DUPLICATES_NAMED, JsonPath, json_path
from hub.ingest.contract import FREE_TEXT, IsoDate
from hub.ingest.nhs_number import nhs_number_problem, normalise
from hub.ingest.validation import PATTERN_REASONS

GSS = re.compile(r"^[EWSN]\d{8}$")
ODS = re.compile(r"^[A-Z0-9]{3,6}$")
MAX_LINE = 64 * 1024  # one row: far beyond any real row; a longer line is refused, not buffered
# A row is a flat object of strings, dates and flags: the JSON array is depth 1, a row 2. Deeper
# nesting is refused as it streams, before anything is built (a body of 100,000 `[` once grew the
# process to 23.5 GB: ijson built each element whole, and orjson failed on it past 255 levels).
MAX_DEPTH = 32
_PIECE = 4096  # bytes given to the JSON parser at a time: bounds the events one piece makes
TOO_DEEP = f"is nested more than {MAX_DEPTH} deep (a row is a flat object)"
NOT_AN_ARRAY = "is not a valid JSON array of objects"
UNREADABLE_VALUE = "holds a value the hub cannot read (a number beyond 64 bits or text that is not valid Unicode)"
NOT_CSV = "is not a valid CSV line"
FORMATS = ("ndjson", "json", "swift_snapshot_csv")
# The body's own person reference is kept, shown in the report and the console and written into its council
# files out: free text as the register change contract's (review_reason), no control or bidirectional
# formatting character but the tab and line breaks a quoted CSV field may hold (RFC 4180; the fixed-width
# extract writes those as spaces, adapters/council_files/outbound.py). NUL, ESC and the like were kept as sent.
_TEXT = re.compile(FREE_TEXT)
LOCAL_ID_REASON = PATTERN_REASONS[FREE_TEXT]

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
                             "LEGAL_STATUS", "CITATION", "RESP_UNDETERMINED"})


class SnapshotRow(BaseModel):
    """One person on a body's list, as the body believes."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    nhs_number: str
    local_id: str | None = Field(default=None, max_length=50)
    # true / false and YYYY-MM-DD strings only, as the register-change contract takes them (a lax bool
    # read "yes", "on", 1 as true, a lax date a Unix time); a CSV's Y/N and DD/MM/YYYY are mapped to
    # these first (`_csv_value`).
    entitled: StrictBool
    responsible_council: str | None = None
    responsible_icb: str | None = None
    entitlement_start: IsoDate | None = None
    entitlement_end: IsoDate | None = None
    next_review_due: IsoDate | None = None
    funding: StrictBool | None = None

    @field_validator("nhs_number")
    @classmethod
    def _nhs(cls, v: str) -> str:
        reason = nhs_number_problem(v)
        if reason:
            raise ValueError(reason)
        return normalise(v)

    @field_validator("local_id")
    @classmethod
    def _local_id(cls, v: str | None) -> str | None:
        if v is not None and not _TEXT.match(v):
            raise ValueError(LOCAL_ID_REASON)
        return v

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
    # A rejected row whose NHS number is valid (another field is not): who it is about, so the
    # comparison can say "row rejected" for that person rather than "missing from the body's list".
    nhs_number: str | None = None
    local_id: str | None = None


class SnapshotFileError(ValueError):
    """The snapshot as a whole cannot be read; `field` and `reason` say why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def about(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """Who a rejected row is about: its NHS number (normalised) and local id, when
    the NHS number is valid (the local id only when it is one); else (None, None)."""
    nhs = data.get("nhs_number")
    if not isinstance(nhs, str) or nhs_number_problem(nhs.strip()):
        return None, None
    local = data.get("local_id")
    local = local.strip() if isinstance(local, str) else None
    return normalise(nhs.strip()), local if local and len(local) <= 50 and _TEXT.match(local) else None


def rejected(row: int, raw: bytes, problems: tuple[RowProblem, ...], data: dict[str, Any]) -> ParsedRow:
    nhs, local = about(data)
    return ParsedRow(row, raw, None, problems, nhs, local)


def validate_row(row: int, data: Any, raw: bytes) -> ParsedRow:
    if not isinstance(data, dict):
        return ParsedRow(row, raw, None, (RowProblem(row, "", "must be a JSON object"),))
    try:
        return ParsedRow(row, raw, SnapshotRow.model_validate(data))
    except ValidationError as exc:
        problems = tuple(
            RowProblem(row, ".".join(str(p) for p in e["loc"]), _reason(e)) for e in exc.errors()
        )
        return rejected(row, raw, problems, data)


def _reason(error: dict[str, Any]) -> str:
    # pydantic's message, without ever echoing the input value.
    msg = str(error.get("msg", "is invalid"))
    return msg.removeprefix("Value error, ")


async def _lines(chunks: AsyncIterator[bytes], keep_cr: bool = False) -> AsyncIterator[bytes]:
    """Lines without their LF (and, unless `keep_cr`, without a CR before it)."""
    buf = b""
    async for chunk in chunks:
        buf += chunk
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:  # by position: one copy per line, not per chunk
            if nl - start > MAX_LINE:
                raise SnapshotFileError("(body)", f"a line is longer than {MAX_LINE} bytes")
            yield buf[start:nl] if keep_cr else buf[start:nl].rstrip(b"\r")
            start = nl + 1
        buf = buf[start:]
        if len(buf) > MAX_LINE:
            raise SnapshotFileError("(body)", f"a line is longer than {MAX_LINE} bytes")
    if buf.strip():
        yield buf if keep_cr else buf.rstrip(b"\r")


UNCLOSED = "a quoted field is not closed before the end of the file"
RECORD_TOO_LONG = f"is longer than {MAX_LINE} bytes (a quoted field not closed?)"


def _still_quoted(line: bytes, quoted: bool) -> bool:
    """Whether a quoted field is open at the end of `line` (`quoted`: it was open
    at its start). A quote opens a field only at its start, `""` inside one is a
    quote, as `csv.reader` and council files (adapters/council_files) read them;
    other malformed quoting is left to the CSV reader, for that record only."""
    i = 0
    while True:
        if quoted:
            j = line.find(b'"', i)
            if j < 0:
                return True
            if line[j + 1:j + 2] == b'"':
                i = j + 2
                continue
            quoted = False
            i = j + 1
        elif line[i:i + 1] == b'"':  # at the start of a field
            quoted, i = True, i + 1
            continue
        k = line.find(b",", i)  # the next field, if any
        if k < 0:
            return False
        i = k + 1


async def _csv_records(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, str | None]]:
    """CSV records (RFC 4180): a record ends at a line end outside a quoted field;
    line breaks inside one are kept as sent. Each with None, or, for a record a
    quoted field never closes (within `MAX_LINE` bytes, or before the end), the
    reason, and nothing after it."""
    parts: list[bytes] = []
    size = 0
    first = True
    async for line in _lines(chunks, keep_cr=True):
        quoted = bool(parts)
        if not quoted and b'"' not in line:  # most lines: no quote, a record of their own
            yield line.rstrip(b"\r"), None
            first = False
            continue
        size += len(line) + (1 if parts else 0)  # the record's bytes, its inner line ends counted
        parts.append(line)
        if size > MAX_LINE:
            yield b"\n".join(parts), RECORD_TOO_LONG
            return
        scanned = line[len(codecs.BOM_UTF8):] if first and line.startswith(codecs.BOM_UTF8) else line
        first = False
        if _still_quoted(scanned, quoted):
            continue
        yield b"\n".join(parts).rstrip(b"\r"), None
        parts, size = [], 0
    if parts:
        yield b"\n".join(parts), UNCLOSED


def _nesting(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep `value` nests objects and arrays (a scalar 0, a flat object 1),
    counted a level at a time without recursion, and no further than past `limit`."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return depth


EMPTY_NDJSON = ("is empty: an NDJSON list has no count to check it by, so an empty body (an export that wrote "
                "nothing) is refused rather than compared as a list with no one on it; a body whose list is "
                "empty sends the JSON array [] or the CSV layout with TRAILER,0")


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
        if _nesting(data) >= MAX_DEPTH:  # as deep as a JSON array's row may be (the array counts 1)
            yield ParsedRow(n, line, None, (RowProblem(n, "", TOO_DEEP),))
            continue
        yield validate_row(n, data, line)
    if n == 0:
        raise SnapshotFileError("(body)", EMPTY_NDJSON)


def _raw_json(item: Any) -> bytes:
    """What the body sent for one element, as JSON (kept encrypted in quarantine when rejected)."""
    try:
        return orjson.dumps(item, default=str)
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a lone surrogate
        try:
            return json.dumps(item, default=str, ensure_ascii=True).encode()
        except (TypeError, ValueError):
            return b""


def _element(n: int, item: Any) -> ParsedRow:
    try:
        raw = orjson.dumps(item, default=str)
    except TypeError:  # not something a row can hold; never a 500
        return ParsedRow(n, _raw_json(item), None, (RowProblem(n, "", UNREADABLE_VALUE),))
    return validate_row(n, item, raw)


class _ArrayReader:
    """A JSON array of rows from ijson's basic parser events: the nesting is
    counted event by event and each element built only while it stays within
    MAX_DEPTH and MAX_LINE bytes, so memory is bounded by those, not the body."""

    def __init__(self) -> None:
        self._events = ijson.sendable_list()
        self._parser = ijson.basic_parse_coro(self._events, use_float=True)
        self._depth = 0
        self._started = self._ended = False
        self._builder: ObjectBuilder | None = None
        self._n = 0
        # The element being built, level by level: an object's keys seen and its current key, or an
        # array's current index; and the paths of keys an object named twice (the builder keeps the last).
        self._frames: list[list[Any]] = []
        self._twice: list[JsonPath] = []
        self._pending = 0  # bytes given to the parser since the array started or the last element ended

    def feed(self, piece: bytes) -> list[ParsedRow]:
        try:
            self._parser.send(piece)
        except Exception as exc:  # noqa: BLE001 - ijson.JSONError, or anything else the parser raises
            failure: Exception | None = exc
        else:
            failure = None
        if not self._ended:
            self._pending += len(piece)
        rows = self._take()  # the events before a failure first: too deep is named as such
        if failure is not None:
            raise SnapshotFileError("(body)", NOT_AN_ARRAY) from failure
        if self._pending > MAX_LINE and not self._ended:
            if not self._started:
                raise SnapshotFileError("(body)", NOT_AN_ARRAY)
            raise SnapshotFileError(f"row {self._n + 1}", f"is longer than {MAX_LINE} bytes")
        return rows

    def finish(self) -> list[ParsedRow]:
        try:
            self._parser.close()
        except Exception as exc:  # noqa: BLE001 - a body cut short, trailing garbage
            raise SnapshotFileError("(body)", NOT_AN_ARRAY) from exc
        rows = self._take()
        if not self._ended:
            raise SnapshotFileError("(body)", NOT_AN_ARRAY)
        return rows

    def _take(self) -> list[ParsedRow]:
        rows: list[ParsedRow] = []
        try:
            for event, value in self._events:
                if event == "start_map" or event == "start_array":
                    self._depth += 1
                    if self._depth > MAX_DEPTH:
                        raise SnapshotFileError(f"row {self._n + 1}", TOO_DEEP)
                    if self._depth == 1:
                        if event != "start_array" or self._started:
                            raise SnapshotFileError("(body)", NOT_AN_ARRAY)
                        self._started, self._pending = True, 0
                        continue
                    if self._depth == 2:
                        self._builder = ObjectBuilder()
                        self._frames, self._twice = [], []
                    self._next_in_array()
                    self._frames.append([set(), None] if event == "start_map" else [-1])
                    assert self._builder is not None
                    self._builder.event(event, value)
                elif event == "end_map" or event == "end_array":
                    self._depth -= 1
                    if self._depth == 0:
                        self._ended = True
                        continue
                    if self._frames:
                        self._frames.pop()
                    assert self._builder is not None
                    self._builder.event(event, value)
                    if self._depth == 1:
                        rows.append(self._row(self._builder.value))
                elif self._depth == 0:  # a scalar where the array should be
                    raise SnapshotFileError("(body)", NOT_AN_ARRAY)
                elif self._depth == 1:  # an element that is not an object: a row problem
                    rows.append(self._row(value))
                else:
                    if event == "map_key":
                        self._key(value)
                    else:
                        self._next_in_array()
                    assert self._builder is not None
                    self._builder.event(event, value)
        finally:
            del self._events[:]
        return rows

    def _next_in_array(self) -> None:
        """A value starts inside the element: the next index if it is in an array."""
        if self._frames and len(self._frames[-1]) == 1:
            self._frames[-1][0] += 1

    def _key(self, key: str) -> None:
        frame = self._frames[-1]
        if key in frame[0]:
            if len(self._twice) < MAX_DUPLICATES_NAMED:
                path = tuple(f[1] if len(f) == 2 else f[0] for f in self._frames[:-1])
                self._twice.append((*path, key))
        else:
            frame[0].add(key)
        frame[1] = key

    def _row(self, item: Any) -> ParsedRow:
        self._n += 1
        self._builder, self._pending = None, 0
        twice, self._twice, self._frames = self._twice, [], []
        if twice:  # never read as the value the parser kept last; whom it is about read without those keys
            readable = {k: v for k, v in item.items() if (k,) not in twice} if isinstance(item, dict) else {}
            return rejected(self._n, _raw_json(item),
                            tuple(RowProblem(self._n, json_path(p), DUPLICATE_KEY) for p in twice), readable)
        return _element(self._n, item)


async def read_json_array(chunks: AsyncIterator[bytes]) -> AsyncIterator[ParsedRow]:
    reader = _ArrayReader()
    async for chunk in chunks:
        # In pieces: one send makes at most a piece's worth of events, counted before the next.
        for start in range(0, len(chunk), _PIECE):  # an empty chunk sends nothing (an empty send ends ijson's input)
            for parsed in reader.feed(chunk[start:start + _PIECE]):
                yield parsed
    for parsed in reader.finish():
        yield parsed


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
                return datetime.strptime(text, fmt).date().isoformat()  # as a JSON row writes it
            except ValueError:
                pass
        raise ValueError("must be a date DD/MM/YYYY (or YYYY-MM-DD)")
    return text


_PACKED = (
    (b"\x1f\x8b", "is gzip-compressed: send the uncompressed list (UTF-8 text)"),
    (b"PK\x03\x04", "is a ZIP archive (or an Excel .xlsx workbook): send the list itself, as UTF-8 CSV text"),
    (b"\xd0\xcf\x11\xe0", "is an Excel .xls workbook (or another OLE document): send the list itself, as UTF-8 CSV "
                          "text"),
)


async def _as_sent(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The CSV body's bytes, a compressed or spreadsheet upload named as such, and line ends CR alone (Excel
    for Mac's; no LF in the first MAX_LINE bytes, where a header line must end) read as LF: otherwise the
    whole list is one line, refused as a header that is not valid CSV."""
    head = b""
    mode: str | None = None  # "lf": as sent; "cr": CR read as LF
    async for chunk in chunks:
        if mode is None:
            head += chunk
            if len(head) < 4 and b"\n" not in head:
                continue
            for magic, reason in _PACKED:
                if head.startswith(magic):
                    raise SnapshotFileError("(body)", reason)
            if b"\n" in head:
                mode = "lf"
            elif len(head) > MAX_LINE:
                mode = "cr" if b"\r" in head else "lf"
            else:
                continue
            chunk, head = head, b""
        yield chunk.replace(b"\r", b"\n") if mode == "cr" else chunk
    if mode is None and head:
        for magic, reason in _PACKED:
            if head.startswith(magic):
                raise SnapshotFileError("(body)", reason)
        yield head.replace(b"\r", b"\n") if b"\r" in head else head


async def read_csv(chunks: AsyncIterator[bytes]) -> AsyncIterator[ParsedRow]:
    chunks = _as_sent(chunks)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    header: list[str] | None = None
    n = 0
    trailer_count: int | None = None
    digest = hashlib.sha256()
    checked = False

    async def text_lines() -> AsyncIterator[tuple[bytes, str]]:
        async for record, unclosed in _csv_records(chunks):
            if unclosed is not None:  # the rest of the file is inside the field: nothing more can be read
                raise SnapshotFileError(f"row {n + 1}" if header is not None else "header", unclosed)
            try:
                yield record, decoder.decode(record + b"\n")
            except UnicodeDecodeError as exc:  # named by its row: one line's Windows-1252 bytes are found
                raise SnapshotFileError("header" if header is None else f"row {n + 1}",
                                        "is not UTF-8 text (the list must be UTF-8: a Windows-1252 or Latin-1 "
                                        "export?)") from exc

    async for raw, text in text_lines():
        if not text.strip():
            continue
        try:
            cells: list[str] | None = next(csv.reader([text]), None)
        except csv.Error:  # e.g. a bare carriage return inside an unquoted value
            cells = None
        if trailer_count is not None and cells and cells[0].strip().upper() == "SHA256" and not checked:
            if len(cells) < 2 or cells[1].strip().lower() != digest.hexdigest():
                raise SnapshotFileError("SHA256", "does not match the file's contents")
            checked = True
            continue
        digest.update(raw + b"\r\n")  # the SHA256 line covers the records as the hub writes them, CRLF
        if header is None:
            if cells is None:
                raise SnapshotFileError("header", NOT_CSV)
            header = [c.strip().upper() for c in cells]
            missing = [c for c, _f, _k in CSV_COLUMNS if c not in header and c in ("NHS_NO", "S117_FLAG")]
            unknown = [c for c in header if c not in {name for name, _f, _k in CSV_COLUMNS} | IGNORED_COLUMNS]
            if missing or unknown:
                raise SnapshotFileError("header", f"missing column(s) {missing}" if missing
                                        else f"unknown column(s) {unknown}")
            continue
        if trailer_count is not None:
            raise SnapshotFileError("trailer", "records follow the trailer")
        if cells is None:
            n += 1
            yield ParsedRow(n, raw, None, (RowProblem(n, "", NOT_CSV),))
            continue
        if cells and cells[0].strip().upper() == "TRAILER":
            # The count alone (cells padded to the header's width by a spreadsheet left empty).
            count = cells[1].strip() if len(cells) >= 2 and not any(c.strip() for c in cells[2:]) else ""
            if not (count.isascii() and count.isdigit()):  # int() also read "+2", "2_0" and "٢"
                raise SnapshotFileError("trailer", "must be TRAILER,<record count>")
            trailer_count = int(count)
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
            yield rejected(n, raw, tuple(problems), data)
            continue
        parsed = validate_row(n, data, raw)
        if parsed.problems:
            names = {fld: name for name, fld, _k in CSV_COLUMNS}
            parsed = rejected(n, raw, tuple(RowProblem(n, names.get(p.field, p.field), p.reason)
                                            for p in parsed.problems), data)
        yield parsed
    if header is None:
        raise SnapshotFileError("header", "the file is empty")
    if trailer_count is None:
        raise SnapshotFileError("trailer", "is missing: the file may be cut short")
    if trailer_count != n:
        raise SnapshotFileError("trailer", f"counts {trailer_count} records, the file has {n}")


def reader_for(fmt: str):  # noqa: ANN201
    return {"ndjson": read_ndjson, "json": read_json_array, "swift_snapshot_csv": read_csv}[fmt]
