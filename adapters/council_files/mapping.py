"""Council flat file -> canonical register changes, one per data record.

Pure: reads only the bytes it is given. A file-level problem (empty, not
UTF-8, bad header, trailer count wrong) rejects the whole file; anything wrong
with one record is that record's problem only, named "row N, column X" with a
reason that never quotes the value (values may be personal data, and a file
sent without its header row would put a person's details where column names
belong, so header cells are never quoted either). Rows are numbered from 1 =
the first data record after the header.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from adapters.council_files.events import (
    COHORT_CODES,
    COMMON_COLUMNS,
    COUNCIL_EVENTS,
    DISCHARGE_REASON_CODES,
    DISPUTE_KIND_CODES,
    EXCLUSION_CODES,
    NEED_CODES,
    PACKAGE_COMMON,
    PACKAGE_EVENTS,
    PAYER_CODES,
    PROVIDER_KIND_CODES,
    REFUSED_EVENTS,
    TRUST_EVENTS,
    EventSpec,
    PackageSpec,
)
from adapters.council_files.layouts import Column, Layout, _columns_by_name
from hub.ingest.contract import POSTCODE
from hub.ingest.nhs_number import nhs_number_problem
from hub.ingest.validation import FieldProblem

_RECORD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
_GSS = re.compile(r"^[EWSN][0-9]{8}$")
_ODS = re.compile(r"^[A-Z0-9]{3,6}$")
_POSTCODE = re.compile(POSTCODE)  # the register change contract's, one pattern for every channel


@dataclass(frozen=True, slots=True)
class FileProblem:
    code: str  # short, stable: empty, encoding, header, trailer, quoting, record
    reason: str  # plain words, never a value from the file

    def as_dict(self) -> dict[str, str]:
        return {"field": "(file)", "reason": self.reason}


@dataclass(frozen=True, slots=True)
class MappedRow:
    row: int  # 1 = the first data record
    record_id: str | None  # RECORD_ID when it could be read
    original: bytes  # the record as sent (without its line ending)
    data: dict[str, Any] | None  # canonical register change, or None if problems
    problems: tuple[FieldProblem, ...] = ()
    # A record with problems: what it is about, as far as it could be read (the change type its EVENT
    # claims, the NHS number when it is valid; a package record is {"record": "package", ...}): all the
    # access policy asks before anything of the row is kept (hub/file_jobs.py). None when nothing is.
    # Derived from the record (left out of comparisons).
    about: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.data is not None


@dataclass(frozen=True, slots=True)
class FileMapping:
    layout: str
    rows: tuple[MappedRow, ...] = ()
    problems: tuple[FileProblem, ...] = ()  # non-empty: the whole file is rejected, rows is empty
    sender: str | None = None  # fixed width: the header's COUNCIL_GSS
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Bad(Exception):
    """A value that cannot be read; the message is the reason (no value in it)."""


# ----------------------------------------------------------------- parsers


def _split(text: str, sep: str) -> list[str]:
    return [p.strip() for p in text.split(sep) if p.strip()]


def _code(text: str) -> str:
    value = text.upper()
    if not (_GSS.match(value) or _ODS.match(value)):
        raise _Bad("is not a GSS council code or an ODS organisation code")
    return value


def _max(n: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if len(text) > n:
            raise _Bad(f"is longer than {n} characters")
        return text
    return parse


def _pattern(rx: re.Pattern[str], reason: str, upper: bool = True) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.upper() if upper else text
        if not rx.match(value):
            raise _Bad(reason)
        return value
    return parse


def _nhs(text: str) -> str:
    digits = text.replace(" ", "")  # only ASCII spaces may separate the digits, as on every channel (not "-")
    reason = nhs_number_problem(digits)
    if reason:
        raise _Bad(reason)
    return digits


_check_record_id = _pattern(_RECORD_ID, "must be 1-100 letters, digits or . _ : / - (starting with a letter or digit)",
                            upper=False)


_SEPARATORS = str.maketrans("", "", " ./:_-")


def _record_id(text: str) -> str:
    """RECORD_ID is echoed in reports and kept in clear as the idempotency key:
    it must not be an NHS number (some case systems use one as the record id)."""
    value = _check_record_id(text)
    digits = value.translate(_SEPARATORS)  # re.sub(r"[ ./:_-]", "", value), without the regex
    if len(digits) == 10 and nhs_number_problem(digits) is None:
        raise _Bad("must not be an NHS number: use the case system's own record id")
    return value


def _postcode(text: str) -> str:
    value = " ".join(text.upper().split())
    if not _POSTCODE.match(value):
        raise _Bad("is not a UK postcode")
    return value


def _flag(text: str) -> bool:
    value = text.upper()
    if value not in ("Y", "N"):
        raise _Bad("must be Y or N")
    return value == "Y"


def _list(text: str) -> list[str]:
    items = _split(text, ";")
    if any(len(i) > 100 for i in items):
        raise _Bad("has an entry longer than 100 characters")
    return items


def _reasons(text: str) -> list[str]:
    codes = [c.upper() for c in _split(text, ";")]
    if not codes:
        raise _Bad("names no reason")
    unknown = [i for i, c in enumerate(codes, 1) if c not in DISCHARGE_REASON_CODES]
    if unknown:
        raise _Bad(f"entry {unknown[0]} is not a reason code ({', '.join(DISCHARGE_REASON_CODES)})")
    return [DISCHARGE_REASON_CODES[c].value for c in codes]


def _dispute_kind(text: str) -> str:
    kind = DISPUTE_KIND_CODES.get(text.upper())
    if kind is None:
        raise _Bad("must be LA (between councils) or NHS (between commissioners)")
    return kind.value


def _codes(text: str) -> list[str]:
    items = _split(text, ";")
    out = []
    for i, item in enumerate(items, 1):
        try:
            out.append(_code(item))
        except _Bad:
            raise _Bad(f"entry {i} is not a GSS council code or an ODS organisation code") from None
    if len(out) < 2:
        raise _Bad("must name at least two parties, separated by ';'")
    return out


def _choice(codes: dict[str, str], what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = codes.get(text.upper())
        if value is None:
            raise _Bad(f"must be {what}: " + ", ".join(codes))
        return value
    return parse


_MONEY = re.compile(r"^[0-9]{1,7}(\.[0-9]{1,2})?$")
_DECIMAL = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,2})?$")


def _money(text: str) -> int:
    """Pounds as the file writes them (1250.00, 1250.5, 1250) -> whole pence, exactly."""
    if not _MONEY.match(text):
        raise _Bad("is not an amount in pounds (digits, at most two decimals, no sign or symbol)")
    pounds, _, pence = text.partition(".")
    return int(pounds) * 100 + int((pence + "00")[:2])


def _decimal(text: str) -> str:
    if not _DECIMAL.match(text):
        raise _Bad("is not a number of units (at most 999.99)")
    return text


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):  # not "²" or "٣"
        raise _Bad("is not a number")
    return int(text)


_DMY = re.compile(r"^[0-9]{2}/[0-9]{2}/[0-9]{4}$")
_YMD = re.compile(r"^[0-9]{8}$")


_ISO = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
# A layout's date formats as the published layouts write them: every field zero-padded, full length. strptime
# alone takes `2025071` for %Y%m%d (1 July) and `1/7/2025` for %d/%m/%Y, so only text of the exact shape
# reaches it; (year, month, day) slices for the forms read without it.
_DATE_SHAPES: dict[str, tuple[re.Pattern[str], tuple[slice, slice, slice] | None]] = {
    "%d/%m/%Y": (_DMY, (slice(6, 10), slice(3, 5), slice(0, 2))),
    "%Y%m%d": (_YMD, (slice(0, 4), slice(4, 6), slice(6, 8))),
    "%Y-%m-%d": (_ISO, (slice(0, 4), slice(5, 7), slice(8, 10))),
}


def _date_parser(layout: Layout) -> Callable[[str], date]:
    shapes = [(fmt, *_DATE_SHAPES.get(fmt, (None, None))) for fmt in layout.date_formats]

    def parse(text: str) -> date:
        for fmt, shape, parts in shapes:
            if shape is not None and not shape.fullmatch(text):
                continue  # not this form's exact shape
            try:
                if parts is not None:
                    return date(int(text[parts[0]]), int(text[parts[1]]), int(text[parts[2]]))
                return datetime.strptime(text, fmt).date()  # a form without a known shape (none published)
            except ValueError:
                continue  # a day that does not exist
        raise _Bad(f"is not a date in the form {layout.date_format_label}")
    return parse


PARSERS: dict[str, Callable[[str], Any]] = {
    "id": lambda text: _record_id(text),
    "nhs": _nhs,
    "name": _max(100),
    "postcode": _postcode,
    "gss": _pattern(_GSS, "is not a GSS code (a letter and 8 digits, e.g. E06000060)"),
    "ods": _pattern(_ODS, "is not an ODS code (3-6 letters or digits)"),
    "flag": _flag,
    "text": _max(200),
    "list": _list,
    "reasons": _reasons,
    "dispute_kind": _dispute_kind,
    "codes": _codes,
    "code": _code,
    "count": _count,
    "money": _money,
    "decimal": _decimal,
    "need": _choice(NEED_CODES, "H (health), SC (social care) or J (joint)"),
    "exclusion": _choice(EXCLUSION_CODES, "blank or one of"),
    "provider_kind": _choice(PROVIDER_KIND_CODES, "ODS (an NHS organisation) or LA (the council's provider id)"),
    "provider": _pattern(re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,39}$"),
                         "must be an ODS code or provider id (letters, digits, . _ : / -)", upper=False),
    "cohort": _choice(COHORT_CODES, "one of"),
    "payer": _choice(PAYER_CODES, "LA (the council pays the provider) or ICB"),
}


# id(layout) -> (layout, its date parser): built once per layout, not for every date of every row.
_DATE_PARSERS: dict[int, tuple[Layout, Callable[[str], date]]] = {}


def _parser(layout: Layout, col: Column) -> Callable[[str], Any]:
    if col.kind in ("date", "date_fixed"):
        entry = _DATE_PARSERS.get(id(layout))
        if entry is None or entry[0] is not layout:
            entry = _DATE_PARSERS[id(layout)] = (layout, _date_parser(layout))
        return entry[1]
    return PARSERS[col.kind]


def _parse(layout: Layout, col: Column, text: str) -> Any:
    return _parser(layout, col)(text)


# id(layout) -> (layout, column name -> (column, its parser), the columns every record requires, column
# name -> where its value goes in the change (parents, leaf) for columns with a target): worked out once
# per layout rather than for every column of every row.
_PLANS: dict[int, tuple[Layout, dict[str, tuple[Column, Callable[[str], Any]]], tuple[str, ...],
                        dict[str, tuple[tuple[str, ...], str]]]] = {}


_KEPT_DATES = 4096  # distinct texts a change-date column keeps read; emptied when full


def _kept_dates(parse: Callable[[str], date]) -> Callable[[str], date]:
    """`parse` with the dates it read kept by their text: a nightly file's
    effective and notified dates are a few days' worth, read for every row (a
    date is immutable: the same object serves every row). Only good dates are
    kept (a bad one raises each time, as before), at most _KEPT_DATES of them;
    used for a change's date columns, never a person's date of birth."""
    kept: dict[str, date] = {}

    def read(text: str) -> date:
        got = kept.get(text)
        if got is None:
            got = parse(text)
            if len(kept) >= _KEPT_DATES:
                kept.clear()
            kept[text] = got
        return got

    return read


def _plan(layout: Layout) -> tuple[dict[str, tuple[Column, Callable[[str], Any]]], tuple[str, ...],
                                   dict[str, tuple[tuple[str, ...], str]]]:
    entry = _PLANS.get(id(layout))
    if entry is None or entry[0] is not layout:
        def parser(col: Column) -> Callable[[str], Any]:
            if col.kind in ("date", "date_fixed") and not (col.target or "").startswith("person."):
                return _kept_dates(_parser(layout, col))  # a change's dates (not a person's: DOB)
            if col.kind in ("date", "date_fixed") or col.kind in PARSERS:
                return _parser(layout, col)
            return lambda text: _parse(layout, col, text)  # an unknown kind fails when read, as before
        columns = _columns_by_name(layout.columns)
        by_name = {name: (col, parser(col)) for name, col in columns.items()}
        required = tuple(c.name for c in layout.columns if c.required and c.name != "REC_TYPE")
        targets = {name: _path(col.target) for name, col in columns.items() if col.target is not None}
        entry = _PLANS[id(layout)] = (layout, by_name, required, targets)
    return entry[1], entry[2], entry[3]


# ----------------------------------------------------------------- records


@lru_cache(maxsize=256)  # a layout's few column targets: split once, not once a value
def _path(path: str) -> tuple[tuple[str, ...], str]:
    *parents, leaf = path.split(".")
    return tuple(parents), leaf


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    parents, leaf = _path(path)
    for p in parents:
        target = target.setdefault(p, {})
    target[leaf] = value


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


# (id(layout), EVENT code or None) -> (layout, the event's columns in the order read: (name, its parser or None,
# where its value goes or None), the required columns with their reasons): worked out once per layout and event
# rather than for every row. Keyed by the code only when it is an EVENT of the layout (a fixed set).
_EVENT_PLANS: dict[tuple[int, str | None], tuple[Layout, tuple[tuple[str, Callable[[str], Any] | None,
                                                                  tuple[tuple[str, ...], str] | None], ...],
                                                  tuple[tuple[str, str], ...], str | None]] = {}


def _event_plan(layout: Layout, spec: EventSpec | None, event_text: str) -> tuple[
        tuple[tuple[str, Callable[[str], Any] | None, tuple[tuple[str, ...], str] | None], ...],
        tuple[tuple[str, str], ...], str | None]:
    key = (id(layout), event_text if spec is not None else None)
    entry = _EVENT_PLANS.get(key)
    if entry is None or entry[0] is not layout:
        parsers, every_record_requires, targets = _plan(layout)
        names = [*COMMON_COLUMNS, *(spec.uses if spec else ())]
        columns = tuple((n, found[1] if (found := parsers.get(n)) is not None else None, targets.get(n))
                        for n in names if n != "EVENT")
        required = [*every_record_requires, *spec.requires] if spec else every_record_requires
        reasons = tuple((name, f"is required for {event_text}" if spec and name in spec.requires else "is required")
                        for name in required)
        entry = _EVENT_PLANS[key] = (layout, columns, reasons, spec.change_type.value if spec else None)
    return entry[1], entry[2], entry[3]


_REPEATS = "repeats the RECORD_ID of row "


def map_record(layout: Layout, row: int, values: dict[str, str], original: bytes,
               seen_ids: dict[str, int] | None = None) -> MappedRow:
    """One data record (column name -> text as read, stripped) to a MappedRow.
    Columns absent from `values` count as blank.

    Each column of the record's EVENT read in one loop over the event's plan
    (`_event_plan`: its columns, parsers, targets and required columns worked
    out once per layout and event), the change built as the values are read
    (dropped if the record has a problem). The same MappedRow, problems in the
    same order, as reading each column by name (`map_record_by_name` in its test, kept as
    the reference: tests/unit/adapters/test_council_mapping_plan.py)."""
    problems: list[FieldProblem] = []
    record_id = None
    text = values.get("RECORD_ID", "")
    if text:
        found = _plan(layout)[0].get("RECORD_ID")
        if found is not None:
            try:
                record_id = found[1](text)
            except _Bad as exc:
                problems.append(FieldProblem(f"row {row}, column RECORD_ID", str(exc)))
    if record_id is not None and seen_ids is not None:
        first = seen_ids.setdefault(record_id, row)
        if first != row:
            problems.append(FieldProblem(f"row {row}, column RECORD_ID",
                                         f"{_REPEATS}{first}: each record needs its own id"))

    spec: EventSpec | None = None
    package: PackageSpec | None = None
    event_text = values.get("EVENT", "").strip().upper()
    if event_text:
        spec = COUNCIL_EVENTS.get(event_text)
        package = PACKAGE_EVENTS.get(event_text)
        if spec is None and package is None:
            refused = REFUSED_EVENTS.get(event_text)
            problems.append(FieldProblem(f"row {row}, column EVENT", refused or "is not an EVENT code of the layout ("
                                         + ", ".join([*COUNCIL_EVENTS, *PACKAGE_EVENTS]) + ")"))

    if package is not None:
        def bad(column: str | None, reason: str) -> None:
            where = f"row {row}, column {column}" if column else f"row {row}"
            problems.append(FieldProblem(where, reason))

        parsers = _plan(layout)[0]

        def read(name: str) -> Any:
            text = values.get(name, "")
            if not text:
                return None
            found = parsers.get(name)
            if found is None:
                return None
            try:
                return found[1](text)
            except _Bad as exc:
                bad(name, str(exc))
                return None

        return _map_package(layout, row, values, original, package, event_text, read, bad, problems, record_id)

    columns, required, change_type = _event_plan(layout, spec, event_text)
    data: dict[str, Any] = {"schema_version": "1", "source_system": layout.source_system,
                            "change_type": change_type} if spec is not None else {}
    nfa: Any = None
    la_gss: Any = None
    for name, parse, where in columns:
        if name == "RECORD_ID":  # read above: a bad one is reported there, a blank one as required (below)
            if record_id is None:
                continue
            value: Any = record_id
        else:
            text = values.get(name, "")
            if not text or parse is None:
                continue
            try:
                value = parse(text)
            except _Bad as exc:
                problems.append(FieldProblem(f"row {row}, column {name}", str(exc)))
                continue
            if value is None:
                continue
        if name == "NFA":
            nfa = value
        elif name == "LA_GSS":
            la_gss = value
        if where is None:
            continue
        parents, leaf = where
        target = data
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value.isoformat() if isinstance(value, date) else value

    for name, reason in required:
        if not values.get(name, "").strip():
            problems.append(FieldProblem(f"row {row}, column {name}", reason))

    if change_type == "moved":
        # A row naming only the successor of a split council (PRE_DETENTION_LA_GSS) says the person has not
        # moved: it needs no residence, as the register change contract's move naming only it (hazard H-03).
        naming_successor = bool(values.get("PRE_DETENTION_LA_GSS", "").strip())
        if nfa is True and la_gss is not None:
            problems.append(FieldProblem(f"row {row}, column LA_GSS", "must be blank when NFA is Y (no fixed abode)"))
        elif nfa is not True and not naming_successor and not values.get("LA_GSS", "").strip():
            problems.append(FieldProblem(
                f"row {row}, column LA_GSS", "is required for ADDR_CHANGE (the council of ordinary residence after "
                "the move), or NFA Y when the person has no fixed abode, or PRE_DETENTION_LA_GSS alone when the "
                "row only names the successor of a split council"))

    if problems or spec is None:
        claimed = change_type if spec is not None else _trust_event(event_text)
        return MappedRow(row, record_id, original, None, tuple(problems), _about(claimed, data.get("person")))
    return MappedRow(row, record_id, original, data, ())


def _trust_event(event_text: str) -> str | None:
    claimed = TRUST_EVENTS.get(event_text)
    return claimed.value if claimed is not None else None


def _about(change_type: str | None, person: Any, **more: Any) -> dict[str, Any] | None:
    """`MappedRow.about` of a record with problems: its change type, if its EVENT names one, and its NHS
    number, if valid (nothing else of the person)."""
    about: dict[str, Any] = dict(more)
    if change_type is not None:
        about["change_type"] = change_type
    nhs = person.get("nhs_number") if isinstance(person, dict) else None
    if nhs:
        about["person"] = {"nhs_number": nhs}
    return about or None


def _map_package(layout: Layout, row: int, values: dict[str, str], original: bytes, spec: PackageSpec,
                 event_text: str, read: Callable[[str], Any], bad: Callable[[str | None, str], None],
                 problems: list[FieldProblem], record_id: str | None) -> MappedRow:
    """A package record -> the package contract (hub/money/contract.py), tagged record=package."""
    parsed = {n: read(n) for n in (*PACKAGE_COMMON, *spec.uses) if n not in ("EVENT", "RECORD_ID")}
    for name in ("RECORD_ID", "EFFECTIVE_DATE", "NHS_NO", *spec.requires):
        if not values.get(name, "").strip():
            bad(name, f"is required for {event_text}" if name in spec.requires else "is required")
    if problems:
        return MappedRow(row, record_id, original, None, tuple(problems),
                         _about(None, {"nhs_number": parsed.get("NHS_NO")}, record="package"))
    data: dict[str, Any] = {"record": "package", "action": spec.action, "source_message_id": record_id}
    for name, value in parsed.items():
        col = layout.column(name)
        if value is None or col is None or col.target is None:
            continue
        _set(data, col.target, _jsonable(value))
    return MappedRow(row, record_id, original, data, ())


# ----------------------------------------------------------------- files


_PACKED = (
    # What a case system's export may arrive as instead of its text: named, rather than "not UTF-8 on line 1".
    (b"\x1f\x8b", "the file is gzip-compressed: send the uncompressed export (UTF-8 text)"),
    (b"PK\x03\x04", "the file is a ZIP archive (or an Excel .xlsx workbook): send the export itself, as UTF-8 "
                     "text in the layout"),
    (b"\xd0\xcf\x11\xe0", "the file is an Excel .xls workbook (or another OLE document): send the export itself, "
                          "as UTF-8 text in the layout"),
)


def _decode(data: bytes) -> tuple[str | None, FileProblem | None]:
    """The file's text: UTF-8 (a BOM dropped), its line ends CRLF or LF, or CR alone in a file with no LF at
    all (Excel for Mac's and older case systems' "Macintosh" line ends) read as LF."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None, FileProblem("encoding", "the file is UTF-16; the layout requires UTF-8 (with or without BOM)")
    for magic, reason in _PACKED:
        if data.startswith(magic):
            return None, FileProblem("encoding", reason)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        return None, FileProblem("empty", "the file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, FileProblem("encoding", f"the file is not UTF-8 text (first invalid byte on line {line}); "
                                             "the layout requires UTF-8, with or without BOM")
    if "\x00" in text:
        return None, FileProblem("encoding", "the file contains NUL characters: it is not a text file")
    if not text.strip():  # Unicode white space only (no-break spaces, separators U+001C-U+001F, ...)
        return None, FileProblem("empty", "the file is empty")
    if "\n" not in text and "\r" in text:
        # Line ends CR alone, the whole file: otherwise one line, refused as a header that is not valid CSV
        # or a fixed-width file with no trailer. A CR in a file that has LFs stays what it was.
        text = text.replace("\r", "\n")
    return text, None


def _csv_records(text: str) -> tuple[Iterator[str], FileProblem | None]:
    """Split into records at line ends outside quoted fields (a quoted field
    may hold commas and line breaks; a quote only opens one at the start of a
    field). CRLF or LF; blank lines are skipped. Malformed quoting inside a
    record is left for the CSV reader to refuse, for that record only.
    Checks the quoting of the whole text first, then yields one record at a time."""
    if '"' not in text:  # no quoted field: records are the lines
        return (r for r in _lines(text) if r.strip()), None
    if _quoting_state(text) == "quoted":
        return iter(()), FileProblem("quoting", "a quoted field is not closed before the end of the file")
    return _quoted_records(text), None


def _lines(text: str) -> Iterator[str]:
    start = 0
    while True:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:].removesuffix("\r")
            return
        yield text[start:end].removesuffix("\r")
        start = end + 1


def _scan(text: str) -> Iterator[tuple[int, int] | str]:
    """The quoting state machine: yields each record's span as it ends, then the final state."""
    start, state = 0, "start"  # start, plain, quoted, closing
    for i, ch in enumerate(text):
        if state == "quoted":
            if ch == '"':
                state = "closing"
            continue
        if state == "closing" and ch == '"':
            state = "quoted"  # "" inside a quoted field
        elif ch == ",":
            state = "start"
        elif ch == "\n":
            yield start, i
            start, state = i + 1, "start"
        elif state == "start" and ch == '"':
            state = "quoted"
        else:
            state = "plain"
    if state != "quoted":
        yield start, len(text)
    yield state


def _quoting_state(text: str) -> str:
    state: Any = None
    for state in _scan(text):
        pass
    return state


def _quoted_records(text: str) -> Iterator[str]:
    for span in _scan(text):
        if isinstance(span, str):
            return
        record = text[span[0]:span[1]].removesuffix("\r")
        if record.strip():
            yield record


@dataclass(slots=True)
class FileStream:
    """A council file checked as a whole (header, trailer, quoting), its data
    records mapped one at a time by `rows()`: only the text and the row in hand
    are held, never every mapped row."""

    layout: Layout
    problems: tuple[FileProblem, ...] = ()  # non-empty: the whole file is rejected
    count: int = 0  # data records
    sender: str | None = None
    header: dict[str, Any] = field(default_factory=dict)
    _records: Callable[[], Iterator[str]] | None = None
    _names: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def rows(self) -> Iterator[MappedRow]:
        """The data records, mapped in file order (each call reads the text again)."""
        if self._records is None:
            return
        seen: dict[str, int] = {}
        firsts: dict[str, bytes] = {}  # RECORD_ID -> a digest of the first record with it, as sent
        for n, record in enumerate(self._records(), 1):
            mapped = self._row(n, record, seen)
            if mapped.record_id is None:
                yield mapped
                continue
            digest = hashlib.blake2b(mapped.original.strip(), digest_size=16).digest()
            first = firsts.setdefault(mapped.record_id, digest)
            if first == digest and len(mapped.problems) == 1 and seen.get(mapped.record_id) != n \
                    and mapped.problems[0].reason.startswith(_REPEATS):
                # The same record twice (an export's join writing a row again): not a different row under a
                # reused id but the row again, answered as a resent row is, as a duplicate of the first.
                mapped = self._row(n, record, None)
            yield mapped

    def _row(self, n: int, record: str, seen: dict[str, int] | None) -> MappedRow:
        if self.layout.kind == "csv":
            return _csv_row(self.layout, self._names, n, record, seen)
        return _fixed_row(self.layout, n, record, seen)


def _rejected(layout: Layout, code: str, reason: str) -> FileStream:
    return FileStream(layout, problems=(FileProblem(code, reason),))


def _open_csv(data: bytes, layout: Layout) -> FileStream:
    text, problem = _decode(data)
    if problem:
        return FileStream(layout, problems=(problem,))
    records, problem = _csv_records(text)
    if problem:
        return FileStream(layout, problems=(problem,))
    first = next(records, None)
    if first is None:  # nothing but blank records: never a StopIteration out of a request
        return _rejected(layout, "empty", "the file is empty")
    try:
        header = next(csv.reader([first], strict=True))
    except csv.Error:
        return _rejected(layout, "header", "the header row is not valid CSV")
    names = [h.strip().upper() for h in header]
    known = {c.name for c in layout.columns}
    if not any(name in known for name in names):
        # Not a header with a mistake in it: no header at all, or not comma-separated. One problem saying
        # so, rather than every cell and every required column (and never a cell's text: it may be a person's).
        if len(names) == 1 and ("\t" in first or ";" in first):
            return _rejected(layout, "header", "the header row has no commas: the layout is comma-separated "
                                               "(the file looks tab- or semicolon-separated)")
        return _rejected(layout, "header", "the first row names none of the layout's columns: the file has no "
                                           "header row, or names its columns otherwise (the header names the "
                                           "layout's columns, e.g. RECORD_ID, EVENT, NHS_NO)")
    problems = []
    for i, name in enumerate(names, 1):
        if not name:
            problems.append(FileProblem("header", f"header column {i} is blank"))
        elif name not in known:
            problems.append(FileProblem("header", f"header column {i} is not a column of the {layout.name} layout"))
        elif name in names[: i - 1]:
            problems.append(FileProblem("header", f"header column {i} repeats an earlier column"))
    for col in layout.columns:
        if col.required and col.name not in names:
            problems.append(FileProblem("header", f"the header has no {col.name} column (required)"))
    if problems:
        return FileStream(layout, problems=tuple(problems))
    count, trailer, declared = 0, 0, ""
    for count, record in enumerate(records, 1):
        if trailer:
            # Rows after a trailer: two files joined, or the trailer written before the end.
            return _rejected(layout, "trailer", f"row {trailer} is a trailer row (TRAILER,<count>) but rows follow "
                                                "it: the trailer is the last row of a file (two files joined?)")
        if _MAYBE_HEADER.search(record) and _is_header(record, known):
            # Two exports joined (`cat a.csv b.csv`): refused whole, as a fixed-width file's second H record
            # is, rather than its header quarantined as a bad row and the second file's rows taken as this one's.
            return _rejected(layout, "header", f"row {count} is a second header row (column names): a file has "
                                               "one header (two files joined?)")
        if _MAYBE_TRAILER.match(record):
            cells = _trailer_cells(record)
            if cells is not None:
                trailer, declared = count, cells
    if trailer:
        # The optional trailer (as the reconciliation CSV writes it): the count of data rows, checked, so a file
        # cut short is refused whole rather than its first part recorded as the night's export.
        if not (declared.isascii() and declared.isdigit()):
            return _rejected(layout, "trailer", f"row {trailer} (the trailer, TRAILER,<count>): the count is not "
                                                "a number")
        count -= 1
        if int(declared) != count:
            return _rejected(layout, "trailer", f"trailer row: TRAILER says {int(declared)} data rows; the file "
                                                f"has {count}: the file may be truncated or padded")
    rows = count

    def body() -> Iterator[str]:
        again, _ = _csv_records(text)
        next(again)  # the header
        return itertools.islice(again, rows)  # not the trailer

    return FileStream(layout, count=count, _records=body, _names=names)


_MAYBE_TRAILER = re.compile(r'^\s*"?\s*TRAILER\s*"?\s*,', re.IGNORECASE)


def _trailer_cells(record: str) -> str | None:
    """A trailer row's count: a record `TRAILER,<count>` (any case; further fields, if the export pads the row
    to the header's width, blank). None: not a trailer (a data record has its required columns filled)."""
    try:
        cells = [c.strip() for c in _fields(record)]
    except csv.Error:
        return None
    if len(cells) < 2 or cells[0].upper() != "TRAILER" or any(cells[2:]):
        return None
    return cells[1]


_MAYBE_HEADER = re.compile("RECORD_ID", re.IGNORECASE)  # the one column every header names


def _is_header(record: str, known: set[str]) -> bool:
    """A record made only of the layout's column names, RECORD_ID among them: a header row (a joined file's
    own header may start with its byte order mark)."""
    try:
        cells = [c.strip().upper() for c in _fields(record.replace("\ufeff", ""))]
    except csv.Error:
        return False
    return "RECORD_ID" in cells and all(c in known for c in cells)


def _fields(record: str) -> list[str]:
    """A CSV record's fields, as `csv.reader(strict=True)` reads them (csv.Error if it refuses the
    record). Without a quote or a carriage return they are the record split at its commas (the reader
    refuses a CR in an unquoted field: such a record is left to it)."""
    if '"' not in record and "\r" not in record:
        return record.split(",")
    return next(csv.reader([record], strict=True))


def _why_not_csv(record: str) -> tuple[str, list[str] | None]:
    """Why the CSV reader refused a record, in the council's terms (never quoting it); its fields, when they
    can still be read (a stray CR)."""
    if "\r" in record:
        try:
            fields = _fields(record.replace("\r", ""))
        except csv.Error:
            pass
        else:
            return ("has a carriage return (CR) inside an unquoted field: quote the field, or end lines with "
                    "CRLF or LF"), fields
    return "is not valid CSV (a quote inside an unquoted field, or text after a closing quote)", None


def _about_nhs(text: str) -> dict[str, Any] | None:
    """`MappedRow.about` of a record that could not be read column by column: its NHS number, if the NHS_NO
    column's place holds a valid one, so the access policy is asked before anything of the row is kept
    (a row about someone the council has no role for is refused, whatever else is wrong with it)."""
    try:
        return _about(None, {"nhs_number": _nhs(text.strip())})
    except _Bad:
        return None


def _about_fields(names: list[str], fields: list[str] | None) -> dict[str, Any] | None:
    if fields is None or "NHS_NO" not in names:
        return None
    at = names.index("NHS_NO")
    return _about_nhs(fields[at]) if at < len(fields) else None


def _csv_row(layout: Layout, names: list[str], n: int, record: str, seen: dict[str, int] | None) -> MappedRow:
    original = record.encode("utf-8")
    try:
        fields = _fields(record)
    except csv.Error:
        reason, fields = _why_not_csv(record)
        return MappedRow(n, None, original, None, (FieldProblem(f"row {n}", reason),),
                         _about_fields(names, fields))
    if len(fields) != len(names):
        return MappedRow(n, None, original, None, (FieldProblem(
            f"row {n}", f"has {len(fields)} fields; the header has {len(names)}"),), _about_fields(names, fields))
    values = dict(zip(names, map(str.strip, fields)))  # {name: value.strip() ...}, in C
    return map_record(layout, n, values, original, seen)


def _slice(line: str, col: Column) -> str:
    return line[col.start - 1: col.end].strip()


def _open_fixed(data: bytes, layout: Layout) -> FileStream:
    text, problem = _decode(data)
    if problem:
        return FileStream(layout, problems=(problem,))

    def lines() -> Iterator[str]:
        return (line for line in _lines(text) if line.strip())

    first = next(lines(), None)
    if first is None:
        return _rejected(layout, "empty", "the file is empty")
    head = first
    if not head.startswith("H"):
        return _rejected(layout, "header", "the first record is not a header record (H)")
    header: dict[str, Any] = {}
    problems = []
    for col in layout.header[1:]:
        raw = _slice(head, col)
        if not raw:
            if col.required:
                problems.append(FileProblem("header", f"header record: {col.name} (columns {col.start}-{col.end}) "
                                                      "is blank"))
            continue
        try:
            header[col.name] = _parse(layout, col, raw)
        except _Bad as exc:
            problems.append(FileProblem("header", f"header record: {col.name} (columns {col.start}-{col.end}) {exc}"))
    if "FILE_TYPE" in header and header["FILE_TYPE"] != layout.file_type:
        problems.append(FileProblem("header", f"header record: FILE_TYPE is not {layout.file_type}"))
    if problems:
        return FileStream(layout, problems=tuple(problems))

    total, last = 0, ""
    for line in lines():
        if line.startswith("H") and total:  # before the trailer count, which a second header would only upset
            return _rejected(layout, "header", f"row {total} is a second header record (H): a file has one "
                                               "header (two files joined?)")
        total, last = total + 1, line
    if total < 2 or not last.startswith("T"):
        return _rejected(layout, "trailer", "the last record is not a trailer record (T): the file may be truncated")
    count_col = layout.trailer[1]
    try:
        declared = _parse(layout, count_col, _slice(last, count_col))
    except _Bad:
        return _rejected(layout, "trailer", f"trailer record: RECORD_COUNT (columns {count_col.start}-"
                                            f"{count_col.end}) is not a number")
    count = total - 2
    if declared != count:
        return _rejected(layout, "trailer", f"trailer record: RECORD_COUNT says {declared} data records; the file "
                                            f"has {count}: the file may be truncated or padded")

    def body() -> Iterator[str]:
        it = lines()
        next(it)  # the header
        return itertools.islice(it, count)  # not the trailer

    return FileStream(layout, count=count, sender=header.get("COUNCIL_GSS"),
                      header={k: _jsonable(v) for k, v in header.items()}, _records=body)


def _fixed_row(layout: Layout, n: int, line: str, seen: dict[str, int] | None) -> MappedRow:
    original = line.encode("utf-8")
    if not line.startswith("D"):
        return MappedRow(n, None, original, None, (FieldProblem(f"row {n}, column REC_TYPE",
                                                                "is not a data record (D)"),))
    if len(line) > layout.record_length:
        nhs = layout.column("NHS_NO")
        return MappedRow(n, None, original, None, (FieldProblem(
            f"row {n}", f"is {len(line)} characters long; a data record has {layout.record_length}"),),
            _about_nhs(_slice(line, nhs) if nhs is not None else ""))
    values = {col.name: _slice(line, col) for col in layout.columns if col.name != "REC_TYPE"}
    mapped = map_record(layout, n, values, original, seen)
    if mapped.data is None and "\t" in line:
        # A tab is one character where the layout wants spaces: the columns after it are read from the wrong
        # place, so say so first rather than only naming each column that then fails.
        tab = FieldProblem(f"row {n}", "contains a tab character: fixed-width records are padded with spaces, "
                                       "not tabs (columns after it are read from the wrong positions)")
        return MappedRow(n, mapped.record_id, original, None, (tab, *mapped.problems), mapped.about)
    return mapped


def open_file(data: bytes, layout: Layout) -> FileStream:
    """Check a council file as a whole; its rows are then mapped lazily (`rows()`). Never raises for bad input."""
    if layout.kind == "csv":
        return _open_csv(data, layout)
    if layout.kind == "fixed":
        return _open_fixed(data, layout)
    raise ValueError(f"layout kind {layout.kind!r} is not supported")


def map_file(data: bytes, layout: Layout) -> FileMapping:
    """Map a whole council file (every row in memory: small files and tests;
    the hub's file jobs use `open_file`). Never raises for bad input."""
    stream = open_file(data, layout)
    if stream.problems:
        return FileMapping(layout.name, problems=stream.problems)
    return FileMapping(layout.name, rows=tuple(stream.rows()), sender=stream.sender, header=stream.header)


def column_for(layout: Layout, canonical_field: str) -> str | None:
    """The layout column that fills a canonical field (e.g. "person.nhs_number"
    -> "NHS_NO"), to name the hub's own validation problems in the file's terms."""
    best = None
    for col in layout.columns:
        t = col.target
        if t and (canonical_field == t or canonical_field.startswith(t + ".")):
            if best is None or len(t) > len(best[1]):
                best = (col.name, t)
    return best[0] if best else None
