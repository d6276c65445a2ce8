"""The hub's published OUTBOUND council file layouts, as data: what a council
case system (SWIFT/AIS, Liquidlogic, Mosaic, Eclipse) imports to set its s117
flags, the mirror of the inbound layouts in `layouts.py`.

One row per event (a delta file) or per person (a full extract), CSV or fixed
width. Each column belongs to a field group; a column the council's
data-sharing agreement does not grant is present and empty, never omitted, so
a file always has the same shape. Columns a council needs to find the person
in its own system come first: its own reference (where the hub knows it) and
the NHS number.

CSV: a header line of column names, the rows, `TRAILER,<record count>`, then
`SHA256,<hex>`: the SHA-256 of every byte before that line. Fixed width: an
`H` header record, `D` records, a `T` trailer with the count and an `S`
record with the same SHA-256. A manifest file `<name>.sha256` beside each file
holds `<hex>  <name>` (the `sha256sum -c` format).

A text cell holds no line break or tab (a council's own reference, from its
snapshots, may: a quoted CSV field can hold one): each is written as a space,
so every record is one line in either layout. Otherwise a council's own
reference is written exactly as its snapshot sent it, the key its case system
imports by: one beginning with `=`, `+`, `-` or `@` is not escaped as the
hub's reports and statements escape text meant for a spreadsheet, so a
person opening a CSV extract by hand opens it as text (a spreadsheet's
import with the columns as text), never by double-clicking it.

The full-extract CSV is also a valid reconciliation snapshot
(`adapters/snapshots`, layout `swift_snapshot_csv`): the hub reads its own
extract back as a council's list, which is how the round trip is tested.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from adapters.council_files.events import COUNCIL_EVENTS


@dataclass(frozen=True, slots=True)
class OutColumn:
    name: str
    group: str | None  # the field group an agreement must grant; None: always shared with the recipient
    width: int  # fixed width: characters
    kind: str  # text, date, flag
    meaning: str


COLUMNS: tuple[OutColumn, ...] = (
    OutColumn("EVENT_ID", None, 36, "text", "the hub's event id (delta files; blank in a full extract): de-duplicate by it"),
    OutColumn("EVENT_NO", None, 10, "text", "delta files: the row's number in this subscription's sequence, gap-free across files (blank in a full extract)"),
    OutColumn("EVENT_CODE", None, 20, "text", "what happened: the inbound council code where one exists (ADDR_CHANGE, S117_END...), else the hub's"),
    OutColumn("EFFECTIVE_DATE", None, 8, "date", "when it happened (delta) or the date of the extract (full)"),
    OutColumn("LOCAL_ID", None, 20, "text", "the council's own person reference, where the hub knows it from the council's snapshots"),
    OutColumn("NHS_NO", "identity", 10, "text", "NHS number"),
    OutColumn("S117_FLAG", None, 1, "flag", "Y while entitled to s117 aftercare, else N"),
    OutColumn("RESP_LA_GSS", "responsibility", 9, "text", "responsible council (GSS)"),
    OutColumn("RESP_ICB_ODS", "responsibility", 6, "text", "responsible NHS commissioner (ODS)"),
    OutColumn("S117_START", None, 8, "date", "entitlement start"),
    OutColumn("S117_END", None, 8, "date", "entitlement end"),
    OutColumn("NEXT_REVIEW", None, 8, "date", "next review due"),
    OutColumn("REVIEW_KIND", None, 14, "text", "first, annual, new-placement or unscheduled"),
    OutColumn("OPEN_DISPUTE", "responsibility", 1, "flag", "Y while a responsibility dispute is open"),
    OutColumn("LEGAL_STATUS", "legal-status", 2, "text", "MHA legal status the aftercare duty flows from (England code)"),
    OutColumn("CITATION", "explanations", 40, "text", "the policy paragraph the responsible council was decided by"),
    # Added at the end (hazard H-03), so a loader reading the columns before it by position or header reads
    # them as before.
    OutColumn("RESP_UNDETERMINED", "responsibility", 65, "text",
              "each responsible body the person is owed (entitled, or detained under a qualifying section) that "
              "the hub could not determine, as `role=reason`, `;` between two: `responsible-council=temp-unknown` "
              "(no place of residence before the detention: no council until the area discharged to is known; "
              "the coordinating council acts meanwhile), `responsible-commissioner=unknown` (the reference data "
              "gives no NHS commissioner: someone must find it). Its RESP_LA_GSS / RESP_ICB_ODS is then empty "
              "and means **undetermined: act**. Empty: every body owed is named (or none is owed). Without "
              "`responsibility` granted, this and the bodies are all empty: not disclosed, never \"none\""),
)

# Event types with no inbound council code get their own outbound code.
_OUT_CODES = {
    "s117-entitlement-started": "S117_START",
    "s117-entitlement-ended": "S117_END",
    "s117-responsibility-transferred": "RESP_TRANSFER",
    "s117-discharge-refused": "END_REFUSED",
    "s117-dispute-raised": "DISPUTE_RAISED",
    "s117-dispute-resolved": "DISPUTE_RESOLVED",
    "s117-review-due": "REVIEW_DUE",
    "s117-moved-out-of-area": "ADDR_CHANGE",
}
_BY_CHANGE = {spec.change_type.value: code for code, spec in COUNCIL_EVENTS.items()}
FULL_EXTRACT_CODE = "S117_POSITION"


def event_code(event_type: str, change_type: str | None = None) -> str:
    """The council code for an event: a recorded change by its council code
    where one exists (or the change type itself), other events by their own."""
    if event_type == "s117-register-change-recorded" and change_type:
        return _BY_CHANGE.get(change_type, change_type.upper().replace("-", "_"))[:20]
    return _OUT_CODES.get(event_type, event_type.removeprefix("s117-").upper().replace("-", "_"))[:20]


@dataclass(frozen=True, slots=True)
class OutLayout:
    name: str
    kind: str  # csv, fixed
    date_format: str
    file_type: str = "S117OUT1"

    @property
    def record_length(self) -> int:
        return 1 + sum(c.width for c in COLUMNS)


OUT_LAYOUTS: dict[str, OutLayout] = {
    "swift_csv": OutLayout("swift_csv", "csv", "%d/%m/%Y"),
    "swift_fixed": OutLayout("swift_fixed", "fixed", "%Y%m%d"),
}


def row_values(values: dict[str, object], groups: frozenset[str], layout: OutLayout) -> list[str]:
    """One row's cells in column order: a column outside `groups` is empty."""
    out = []
    for c in COLUMNS:
        v = values.get(c.name) if c.group is None or c.group in groups else None
        if v is None or v == "":
            out.append("")
        elif c.kind == "date":
            out.append(v.strftime(layout.date_format) if isinstance(v, date) else str(v))
        elif c.kind == "flag":
            out.append("Y" if v else "N")
        else:
            out.append(_one_line(str(v)))
    return out


_BREAKS = re.compile(r"\r\n|[\r\n\t]")


def _one_line(text: str) -> str:
    """A text cell as one line: a line break or tab is a space (in a fixed-width record it split the record in
    two, and a line-by-line reader of the CSV found a row the trailer did not count)."""
    return _BREAKS.sub(" ", text) if ("\n" in text or "\r" in text or "\t" in text) else text


class ExportWriter:
    """Writes one file's bytes incrementally, keeping the running SHA-256 and count."""

    def __init__(self, layout: OutLayout, council: str, created: datetime, mode: str) -> None:
        self.layout = layout
        self.count = 0
        self._sha = hashlib.sha256()
        self._council, self._created, self._mode = council, created, mode

    def _emit(self, text: str) -> bytes:
        data = text.encode("utf-8")
        self._sha.update(data)
        return data

    def header(self) -> bytes:
        if self.layout.kind == "csv":
            return self._emit(",".join(c.name for c in COLUMNS) + "\r\n")
        rec = (f"H{self.layout.file_type:<8}{self._council:<9}{self._created:%Y%m%d}{self._mode.upper():<5}")
        return self._emit(rec.ljust(self.layout.record_length) + "\r\n")

    def row(self, cells: list[str]) -> bytes:
        self.count += 1
        if self.layout.kind == "csv":
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\r\n").writerow(cells)
            return self._emit(buf.getvalue())
        rec = "D" + "".join(v[:c.width].ljust(c.width) for v, c in zip(cells, COLUMNS))
        return self._emit(rec + "\r\n")

    def trailer(self) -> tuple[bytes, str]:
        """The trailer and the SHA-256 line; returns (bytes, hex digest)."""
        if self.layout.kind == "csv":
            data = self._emit(f"TRAILER,{self.count}\r\n")
            digest = self._sha.hexdigest()
            return data + f"SHA256,{digest}\r\n".encode(), digest
        data = self._emit(f"T{self.count:09d}".ljust(self.layout.record_length) + "\r\n")
        digest = self._sha.hexdigest()
        return data + f"S{digest}".ljust(self.layout.record_length).encode() + b"\r\n", digest


class ExportFileError(ValueError):
    pass


def read_export(data: bytes, layout: OutLayout) -> list[dict[str, str]]:
    """Read an outbound file back (the council's side of the contract, and the
    round-trip tests): checks the trailer count and the SHA-256 line."""
    lines = data.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) < 3:
        raise ExportFileError("file: too short for a header, trailer and checksum")
    body = b"".join(line + b"\r\n" for line in lines[:-1])
    last = lines[-1].decode().rstrip()
    digest = last.split(",", 1)[1] if layout.kind == "csv" else last[1:]
    if hashlib.sha256(body).hexdigest() != digest:
        raise ExportFileError("SHA256: does not match the file's contents")
    records = lines[1:-2]
    trailer = lines[-2].decode()
    count = int(trailer.split(",")[1]) if layout.kind == "csv" else int(trailer[1:10])
    if count != len(records):
        raise ExportFileError(f"TRAILER: counts {count} records, the file has {len(records)}")
    names = [c.name for c in COLUMNS]
    rows = []
    for rec in records:
        text = rec.decode()
        if layout.kind == "csv":
            cells = next(csv.reader([text]))
        else:
            cells, pos = [], 1
            for c in COLUMNS:
                cells.append(text[pos:pos + c.width].rstrip())
                pos += c.width
        rows.append(dict(zip(names, cells)))
    return rows


def published_layout_markdown() -> str:
    """The outbound layouts page (adapters/council_files/OUTBOUND.md), generated from this data."""
    out = ["# Outbound council file layouts (generated from `adapters/council_files/outbound.py`)", "",
           __doc__.strip().split("\n\n", 1)[1], "",
           "| # | column | fixed-width start | width | field group | meaning |",
           "|---|---|---|---|---|---|"]
    start = 2
    for i, c in enumerate(COLUMNS, 1):
        out.append(f"| {i} | `{c.name}` | {start} | {c.width} | {c.group or '(always)'} | {c.meaning} |")
        start += c.width
    out += ["", "Dates: CSV `DD/MM/YYYY`, fixed width `YYYYMMDD`. Flags `Y`/`N`. Fixed-width records are "
            f"{OUT_LAYOUTS['swift_fixed'].record_length} characters: `H` + `FILE_TYPE` (`S117OUT1`, 8) + council "
            "GSS (9) + created `YYYYMMDD` (8) + mode `DELTA`/`FULL` (5); `D` + the columns above; `T` + record "
            "count (9, zero-padded); `S` + the SHA-256 (64 hex). Lines end CRLF.", "",
           "Event codes: " + ", ".join(f"`{v}` ({k})" for k, v in _OUT_CODES.items())
           + "; a recorded register change carries the inbound council code of its change type where one "
             f"exists, else the change type in capitals; full extract rows carry `{FULL_EXTRACT_CODE}`.", ""]
    return "\n".join(out)


def iter_cells(rows: Iterable[dict[str, object]], groups: frozenset[str], layout: OutLayout) -> Iterator[list[str]]:
    for r in rows:
        yield row_values(r, groups, layout)


if __name__ == "__main__":
    (Path(__file__).with_name("OUTBOUND.md")).write_text(published_layout_markdown() + "\n")
