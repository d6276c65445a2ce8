"""mySociety's register of UK local authorities, as published, and the English social services authorities in it.

The hub names the responsible council (and its successor after a
reorganisation) from mySociety's `uk_local_authorities_current.csv`
(mysociety/uk_local_authority_names_and_codes,
`data/packages/uk_la_past_current/`): every UK authority, current and former,
with its GSS code, type, start and end dates, the authorities that replaced it
(`replaced-by`), a district's county (`county-la`) and its former GSS codes.
The hub ships the file as of 10 July 2025 (hub/refdata/data/PROVENANCE.md).
English local government is being reorganised (new unitary councils from
April 2026 to 2028): with that file the hub names a council after its
abolition and does not know its successor. An operator downloads mySociety's
newer file and points a setting at it, so the hub names the current council
without a new release:

* `S117_LOCAL_AUTHORITIES_FILE`: `uk_local_authorities_current.csv` as
  mySociety publishes it (header row; the columns `COLUMNS` are read, the
  others may be anything). It replaces the shipped file whole.
* `S117_LOCAL_AUTHORITIES_AS_OF`: the date it is as of (the file does not say:
  the date mySociety committed it), required with the file.

The English local social services authorities (the councils with duties under
s117: counties, unitaries, metropolitan districts, London boroughs and the
City of London) are the file's rows `is_social_services_authority` selects:
the filter the shipped `england_social_services_authorities.csv` was made
with, and the one the loader applies to the shipped file and to the
operator's alike (tests/unit/test_council_files.py checks that it gives the
shipped derived file's codes).

A row without a GSS code (a new council listed before ONS gives it one, as
England's 2026-2028 unitaries may be) is read and kept: the loader names it
as a successor without a GSS code (`council_successors_without_gss`), never a
council to address, and the rules leave a council it takes over from
undetermined after the vesting day until a register gives it a code (hazard
H-03; hub/domain/rules/engine.py `_council_org`).

Read by the same code as the shipped file, a file that cannot be read as that
format (or whose successions do not end: a cycle of `replaced-by`, or a chain
longer than the loader follows; or cannot be dated: a council with a
`replaced-by` but neither its `end-date` nor a successor's `start-date`, or
those dates at odds, `_successions_dated`) stops the hub at start with one line naming the setting and the line
and column at fault (`ReferenceFileError`), never a traceback and never
councils silently without it. Its date is a `Dataset` reported like the GP
practice ones (hub/refdata/ods_files.py). Codes, names and dates of public
bodies only: no personal data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from hub.refdata.ods_files import ReferenceFileError, _lines, _rows

LOCAL_AUTHORITIES_SETTING = "S117_LOCAL_AUTHORITIES_FILE"
LOCAL_AUTHORITIES_AS_OF_SETTING = "S117_LOCAL_AUTHORITIES_AS_OF"
LOCAL_AUTHORITIES_DATASET = "local-authorities"
LOCAL_AUTHORITIES_SOURCE = ("https://github.com/mysociety/uk_local_authority_names_and_codes "
                            "(data/packages/uk_la_past_current/uk_local_authorities_current.csv)")

# The columns the loader reads (hub/refdata/loader.py `_load_councils`); mySociety's file has more.
COLUMNS = ("local-authority-code", "nice-name", "gss-code", "start-date", "end-date", "replaced-by", "nation",
           "local-authority-type", "county-la", "former-gss-codes")
# Local social services authorities in England: unitary authorities, metropolitan districts, London
# boroughs, the City of London (CC) and the county councils (CTY). Not the non-metropolitan districts
# (NMD, lower tier: the loader resolves them to their county or successor), nor combined authorities.
SOCIAL_SERVICES_TYPES = frozenset({"UA", "MD", "LBO", "CC", "CTY"})

# The successions the loader follows from a code (hub/refdata/loader.py `_successors`, depth 0-8); a longer
# chain is refused at start rather than left unresolved.
MAX_SUCCESSIONS = 8
_LA_CODE = re.compile(r"[A-Z][A-Z0-9-]{1,9}")  # mySociety's register code: DOR, CPCA, NIR-A
_GSS = re.compile(r"[A-Z][0-9]{8}")  # ONS GSS code: E06000060


def is_social_services_authority(row: Mapping[str, str]) -> bool:
    """A row of mySociety's file that is an English local social services authority (current or former)."""
    return row["nation"].strip() == "England" and row["local-authority-type"].strip() in SOCIAL_SERVICES_TYPES


def is_council_read(row: Mapping[str, str]) -> bool:
    """A row the loader reads as a council whose successions it follows (hub/refdata/loader.py
    `_load_councils`): an English social services authority or non-metropolitan district with a GSS code."""
    return bool(row["gss-code"].strip()) and (
        is_social_services_authority(row)
        or (row["nation"].strip() == "England" and row["local-authority-type"].strip() == "NMD"))


def dates_succession(row: Mapping[str, str]) -> bool:
    """A successor whose `start-date` the loader reads as the day it takes over: a council it reads
    (`is_council_read`) or one the register lists without a GSS code yet."""
    return is_council_read(row) or not row["gss-code"].strip()


@dataclass(frozen=True, slots=True)
class LocalAuthorities:
    """The file's rows (the `COLUMNS` cells, stripped), in the file's order, and the date it is as of."""

    rows: tuple[dict[str, str], ...]
    as_of: date


def _codes(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def read_local_authorities(lines: Iterable[str], as_of: date,
                           setting: str = LOCAL_AUTHORITIES_SETTING) -> LocalAuthorities:
    """mySociety's uk_local_authorities_current.csv, checked row by row: every cell the loader reads is
    what it expects, and every authority a row names (`replaced-by`, `county-la`) is a row of the file."""
    rows = _rows(lines, setting)
    head = next(rows, None)
    if head is None:
        raise ReferenceFileError(setting, "(file)", "no rows")
    names = [n.strip() for n in head[1]]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ReferenceFileError(setting, "line 1", f"no column {', '.join(missing)} (mySociety's "
                                 "uk_local_authorities_current.csv is expected)")
    at = {c: names.index(c) for c in COLUMNS}
    out: list[dict[str, str]] = []
    line_of: dict[str, int] = {}  # local-authority-code -> its line
    for line, r in rows:
        if len(r) != len(names):
            raise ReferenceFileError(setting, f"line {line}", f"{len(r)} columns, the header has {len(names)}")
        cell = {c: r[i].strip() for c, i in at.items()}
        code = cell["local-authority-code"]
        if not _LA_CODE.fullmatch(code):
            raise ReferenceFileError(setting, f"line {line}, column local-authority-code",
                                     "not a register code (capital letters, e.g. BUC)")
        if code in line_of:
            raise ReferenceFileError(setting, f"line {line}, column local-authority-code",
                                     f"{code} is on line {line_of[code]} too")
        if cell["gss-code"] and not _GSS.fullmatch(cell["gss-code"]):
            raise ReferenceFileError(setting, f"line {line}, column gss-code", "not a GSS code (e.g. E06000060)")
        if not all(_GSS.fullmatch(c) for c in _codes(cell["former-gss-codes"])):
            raise ReferenceFileError(setting, f"line {line}, column former-gss-codes",
                                     "not GSS codes separated by commas")
        for column in ("start-date", "end-date"):
            if cell[column]:
                try:
                    date.fromisoformat(cell[column])
                except ValueError:
                    raise ReferenceFileError(setting, f"line {line}, column {column}",
                                             "not a date YYYY-MM-DD") from None
        if cell["nation"] == "England" and cell["gss-code"]:
            for column in ("nice-name", "local-authority-type"):
                if not cell[column]:
                    raise ReferenceFileError(setting, f"line {line}, column {column}", "empty")
        line_of[code] = line
        out.append(cell)
    if not out:
        raise ReferenceFileError(setting, "(file)", "no authority rows after the header")
    for cell in out:  # an authority named by another is in the file
        line = line_of[cell["local-authority-code"]]
        for column in ("replaced-by", "county-la"):
            unknown = [c for c in _codes(cell[column]) if c not in line_of]
            if unknown:
                raise ReferenceFileError(setting, f"line {line}, column {column}",
                                         f"{', '.join(unknown)} is not a local-authority-code of the file")
    _successions_end(out, line_of, setting)
    _successions_dated(out, line_of, setting)
    if not any(is_social_services_authority(c) and c["gss-code"] for c in out):
        raise ReferenceFileError(setting, "(file)", "no English social services authority (nation England, "
                                 f"local-authority-type one of {', '.join(sorted(SOCIAL_SERVICES_TYPES))})")
    return LocalAuthorities(tuple(out), as_of)


def _successions_end(rows: list[dict[str, str]], line_of: Mapping[str, int], setting: str) -> None:
    """Every chain of `replaced-by` ends, within `MAX_SUCCESSIONS` steps, at an authority replaced by none:
    a cycle (an authority replaced, through its successors, by itself) or a chain longer than the loader
    follows (hub/refdata/loader.py `_successors`) would leave each council on it silently with no council
    in place (everyone there named an unknown council). Raises ReferenceFileError at the first such row."""
    after = {c["local-authority-code"]: _codes(c["replaced-by"]) for c in rows}
    depth: dict[str, int] = {}  # code -> the longest chain of successions from it

    def longest(code: str, path: tuple[str, ...]) -> int:
        if code in depth:
            return depth[code]
        if code in path:
            cycle = ", ".join((*path[path.index(code):], code))
            raise ReferenceFileError(setting, f"line {line_of[path[-1]]}, column replaced-by",
                                     f"the authorities {cycle} replace one another in a cycle")
        if len(path) > MAX_SUCCESSIONS:
            raise ReferenceFileError(setting, f"line {line_of[path[0]]}, column replaced-by",
                                     f"a chain of more than {MAX_SUCCESSIONS} successions from {path[0]}")
        found = max((longest(s, (*path, code)) + 1 for s in after.get(code, ())), default=0)
        depth[code] = found
        return found

    for c in rows:
        longest(c["local-authority-code"], ())


def _successions_dated(rows: list[dict[str, str]], line_of: Mapping[str, int], setting: str) -> None:
    """Every succession the loader follows (a council it reads with a `replaced-by`) has one day its successors
    take over: the council's `end-date` (its last day, or mySociety's other way, the successor's first), or
    its successors' `start-date`. Every version mySociety published (June 2022 to July 2025) gives both, the
    successor starting on the council's end date or the day after. Raises ReferenceFileError at the first
    council whose succession cannot be dated (neither date: the loader would name the abolished council for
    good) or whose dates are at odds (its successors starting on different days, or not on its end date or
    the day after: the loader would take the earliest, silently)."""
    by_code = {c["local-authority-code"]: c for c in rows}
    for c in rows:
        after = _codes(c["replaced-by"])
        if not after or not is_council_read(c):
            continue
        code, line = c["local-authority-code"], line_of[c["local-authority-code"]]
        # The successors whose start-date the loader dates the succession by (loader.py `_load_councils`).
        dating = [s for s in after if dates_succession(by_code[s])]
        starts = {s: date.fromisoformat(by_code[s]["start-date"]) for s in dating if by_code[s]["start-date"]}
        if not c["end-date"] and not starts:
            named = ", ".join(dating or after)
            several = len(dating or after) > 1
            raise ReferenceFileError(
                setting, f"line {line}, column end-date",
                f"{code} is replaced by {named} but gives no end-date, nor {named} a start-date: the day its "
                f"successor{'s take' if several else ' takes'} over cannot be told (an end-date for {code} or a "
                f"start-date for {', '.join(f'{s} (line {line_of[s]})' for s in dating or after)} is needed"
                f"{'' if dating else '; none of them an English council the hub reads'})")
        if len(set(starts.values())) > 1:
            raise ReferenceFileError(
                setting, f"line {line}, column replaced-by",
                f"the successors of {code} start on different days: "
                + ", ".join(f"{s} on {d.isoformat()} (line {line_of[s]})" for s, d in starts.items())
                + " (one day their council's duties pass to them is expected)")
        if c["end-date"] and starts:
            end = date.fromisoformat(c["end-date"])
            successor, start = next(iter(starts.items()))
            gap = (start - end).days
            if gap not in (0, 1):
                at_odds = f"{gap} days after" if gap > 1 else "before it ends"
                raise ReferenceFileError(
                    setting, f"line {line}, column end-date",
                    f"{code} ends on {end.isoformat()} but its successor {successor} (line {line_of[successor]}) "
                    f"starts on {start.isoformat()}, {at_odds}: the end-date is the day before its successor "
                    "starts or that day")


def read_local_authorities_file(path: Path, as_of: date) -> LocalAuthorities:
    """The operator's uk_local_authorities_current.csv (`S117_LOCAL_AUTHORITIES_FILE`), as of
    `S117_LOCAL_AUTHORITIES_AS_OF`."""
    return read_local_authorities(_lines(path, LOCAL_AUTHORITIES_SETTING), as_of, LOCAL_AUTHORITIES_SETTING)
