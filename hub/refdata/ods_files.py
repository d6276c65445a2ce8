"""NHS England's GP practice reference files, as published, and how old they are.

The hub ships an ODS `epraccur.csv` (January 2024) and a "Patients Registered
at a GP Practice" mapping file `gp-reg-pat-prac-map.csv` (October 2025) in
hub/refdata/data. NHS England publishes newer ones: practices open, close and
move between sub-ICB locations, and ICBs merge. An operator downloads them
and points a setting at each, so the hub names the current commissioner
without a new release:

* `S117_ODS_EPRACCUR_FILE`: ODS `epraccur.csv` (GP practices and other
  prescribing settings, open and closed; no header row, 27 columns: 1 the
  organisation code, 12 its close date `YYYYMMDD`, 15 its commissioner (the
  sub-ICB location, a CCG before July 2022), 26 the prescribing setting, 4
  for a GP practice). The file does not say when it was extracted, so
  `S117_ODS_EPRACCUR_AS_OF` says (the date on NHS England's download page).
* `S117_GP_PRACTICE_MAP_FILE`: `gp-reg-pat-prac-map.csv` of the ICB era
  (header row; `PRACTICE_CODE`, `SUB_ICB_LOCATION_CODE` / `_NAME`,
  `ICB_CODE` / `_NAME`; its `EXTRACT_DATE`, e.g. `01Oct2025`, is the date it is
  as of). Its sub-ICB locations and ICBs are laid over the shipped ones.

Each replaces the shipped file of its kind (the January 2022 CCG-era map,
the CCG and LSOA lookups describe eras that have ended and stay as shipped).
Read by the same code as the shipped files, a file that cannot be read as
its format stops the hub at start with one line naming the setting and the
line and column at fault (`ReferenceFileError`), never a traceback and never
reference data silently without it.

Each GP practice dataset in use is a `Dataset` with the date it is as of:
the hub logs a warning at start, and exports
`s117_reference_data_as_of_timestamp_seconds{dataset}` for the
`S117ReferenceDataOld` alert, when one is older than
`S117_REFERENCE_DATA_MAX_AGE_DAYS`. Codes and dates only: no personal data.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

EPRACCUR_SETTING = "S117_ODS_EPRACCUR_FILE"
PRACTICE_MAP_SETTING = "S117_GP_PRACTICE_MAP_FILE"
EPRACCUR_DATASET = "ods-epraccur"
PRACTICE_MAP_DATASET = "gp-practice-map"
# Where each is published, for the log line and the runbook.
EPRACCUR_SOURCE = "https://digital.nhs.uk/services/organisation-data-service/export-data-files/csv-downloads/gp-and-gp-practice-related-data"
PRACTICE_MAP_SOURCE = "https://digital.nhs.uk/data-and-information/publications/statistical/patients-registered-at-a-gp-practice"

EPRACCUR_COLUMNS = 27
GP_PRACTICE = "4"  # prescribing setting (column 26) of a GP practice
_CODE = re.compile(r"[A-Z0-9]{3,8}")
_PRACTICE = re.compile(r"[A-Z][0-9]{5}")
_COMMISSIONER = re.compile(r"[A-Z0-9]{3,5}")
_MAP_COLUMNS = ("EXTRACT_DATE", "PRACTICE_CODE", "SUB_ICB_LOCATION_CODE", "SUB_ICB_LOCATION_NAME",
                "ICB_CODE", "ICB_NAME")


class ReferenceFileError(ValueError):
    """A reference file the operator named is not NHS England's format: `where` names the line and column."""

    def __init__(self, setting: str, where: str, reason: str) -> None:
        super().__init__(f"{setting}: {where}: {reason}")
        self.setting = setting
        self.where = where
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Dataset:
    """One reference dataset in use: its name (the metric's label), the date it is as of, and
    the setting that replaces it (the shipped file's when `file` is None)."""

    name: str
    as_of: date
    setting: str
    source: str
    file: str | None = None  # the operator's file, or None for the shipped one


@dataclass(frozen=True, slots=True)
class Epraccur:
    """GP practices (prescribing setting 4), open and closed: code -> (commissioner, close date YYYYMMDD or "")."""

    practices: dict[str, tuple[str, str]]
    as_of: date


@dataclass(frozen=True, slots=True)
class PracticeMap:
    """Practice -> sub-ICB location, and each sub-ICB location's name and ICB (code, name)."""

    practices: dict[str, str]
    sub_icbs: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    as_of: date = date.min


def _lines(path: Path, setting: str) -> Iterator[str]:
    """The file's lines as text, a byte that is not UTF-8 named by its line."""
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise ReferenceFileError(setting, f"line {number}",
                                             "not UTF-8 text (the CSV as published is expected)") from None
    except OSError as exc:
        raise ReferenceFileError(setting, "(file)", f"cannot be read ({exc.strerror or type(exc).__name__})") from None


def _rows(lines: Iterable[str], setting: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each row; a row the CSV reader cannot split names its line."""
    reader = csv.reader(lines)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ReferenceFileError(setting, f"line {reader.line_num}", f"not CSV ({exc})") from None
        if row:
            yield reader.line_num, row


def _yyyymmdd(value: str) -> bool:
    if len(value) != 8 or not value.isdigit():
        return False
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True


def read_epraccur(lines: Iterable[str], as_of: date, setting: str = EPRACCUR_SETTING) -> Epraccur:
    """ODS epraccur (no header row): the GP practices, checked row by row."""
    practices: dict[str, tuple[str, str]] = {}
    rows = 0
    for line, r in _rows(lines, setting):
        rows += 1
        if len(r) != EPRACCUR_COLUMNS:
            raise ReferenceFileError(setting, f"line {line}",
                                     f"{len(r)} columns, ODS epraccur has {EPRACCUR_COLUMNS} (and no header row)")
        code, close, commissioner, prescribing = r[0].strip(), r[11].strip(), r[14].strip(), r[25].strip()
        if not _CODE.fullmatch(code):
            what = "a header row: epraccur.csv has none" if line == 1 else "not an ODS code"
            raise ReferenceFileError(setting, f"line {line}, column 1", what)
        if not prescribing.isdigit():
            raise ReferenceFileError(setting, f"line {line}, column 26", "the prescribing setting must be a number")
        if close and not _yyyymmdd(close):
            raise ReferenceFileError(setting, f"line {line}, column 12", "the close date must be YYYYMMDD")
        if prescribing != GP_PRACTICE:
            continue
        if not _PRACTICE.fullmatch(code):
            raise ReferenceFileError(setting, f"line {line}, column 1",
                                     "a GP practice's code is a letter and five digits")
        if not _COMMISSIONER.fullmatch(commissioner):
            raise ReferenceFileError(setting, f"line {line}, column 15",
                                     "a GP practice's commissioner (sub-ICB location) must be an ODS code")
        practices[code] = (commissioner, close)
    if not rows:
        raise ReferenceFileError(setting, "(file)", "no rows")
    if not practices:
        raise ReferenceFileError(setting, "(file)", "no GP practice (prescribing setting 4, column 26)")
    return Epraccur(practices, as_of)


def read_practice_map(lines: Iterable[str], setting: str = PRACTICE_MAP_SETTING) -> PracticeMap:
    """NHS England's gp-reg-pat-prac-map.csv of the ICB era (from July 2022): header row, one practice a row,
    every row of one EXTRACT_DATE (`01Oct2025`), the date the map is as of."""
    rows = _rows(lines, setting)
    head = next(rows, None)
    if head is None:
        raise ReferenceFileError(setting, "(file)", "no rows")
    _, names = head
    names = [n.strip() for n in names]
    missing = [c for c in _MAP_COLUMNS if c not in names]
    if missing:
        raise ReferenceFileError(setting, "line 1", f"no column {', '.join(missing)} (NHS England's "
                                 "gp-reg-pat-prac-map.csv of the ICB era, from July 2022, is expected)")
    at = {c: names.index(c) for c in _MAP_COLUMNS}
    practices: dict[str, str] = {}
    sub_icbs: dict[str, tuple[str, str, str]] = {}
    extract: str | None = None
    as_of = date.min
    for line, r in rows:
        if len(r) != len(names):
            raise ReferenceFileError(setting, f"line {line}", f"{len(r)} columns, the header has {len(names)}")
        cell = {c: r[i].strip() for c, i in at.items()}
        if cell["EXTRACT_DATE"] != extract:
            if extract is not None:
                raise ReferenceFileError(setting, f"line {line}, column EXTRACT_DATE",
                                         f"{cell['EXTRACT_DATE']!r} differs from line 2's: one extract a file")
            try:
                as_of = datetime.strptime(cell["EXTRACT_DATE"], "%d%b%Y").date()
            except ValueError:
                raise ReferenceFileError(setting, f"line {line}, column EXTRACT_DATE",
                                         "not a date like 01Oct2025") from None
            extract = cell["EXTRACT_DATE"]
        for column, pattern in (("PRACTICE_CODE", _CODE), ("SUB_ICB_LOCATION_CODE", _COMMISSIONER),
                                ("ICB_CODE", _COMMISSIONER)):
            if not pattern.fullmatch(cell[column]):
                raise ReferenceFileError(setting, f"line {line}, column {column}", "not an ODS code")
        for column in ("SUB_ICB_LOCATION_NAME", "ICB_NAME"):
            if not cell[column]:
                raise ReferenceFileError(setting, f"line {line}, column {column}", "empty")
        practices[cell["PRACTICE_CODE"]] = cell["SUB_ICB_LOCATION_CODE"]
        sub_icbs[cell["SUB_ICB_LOCATION_CODE"]] = (cell["SUB_ICB_LOCATION_NAME"], cell["ICB_CODE"], cell["ICB_NAME"])
    if not practices:
        raise ReferenceFileError(setting, "(file)", "no practice rows after the header")
    return PracticeMap(practices, sub_icbs, as_of)


def read_epraccur_file(path: Path, as_of: date) -> Epraccur:
    """The operator's epraccur.csv (`S117_ODS_EPRACCUR_FILE`), as of `S117_ODS_EPRACCUR_AS_OF`."""
    return read_epraccur(_lines(path, EPRACCUR_SETTING), as_of, EPRACCUR_SETTING)


def read_practice_map_file(path: Path) -> PracticeMap:
    """The operator's gp-reg-pat-prac-map.csv (`S117_GP_PRACTICE_MAP_FILE`)."""
    return read_practice_map(_lines(path, PRACTICE_MAP_SETTING), PRACTICE_MAP_SETTING)


def age_days(dataset: Dataset, today: date) -> int:
    return (today - dataset.as_of).days
