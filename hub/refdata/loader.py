"""`ReferenceData` from the public reference files shipped in hub/refdata/data.

Everything is read from the package (importlib.resources), never from outside
the repository. `load_reference_data()` parses the files once per process.
Provenance and sha256 of every file: hub/refdata/data/PROVENANCE.md.

Standard library only. The files hold organisation codes and names, no
personal data; trails built here carry ODS / GSS codes and dates only.

Eras of NHS commissioning, as the data can show them:

* before 1 July 2022 a practice's commissioner is the CCG of the January 2022
  GP registration map (CCGs as merged on 1 April 2021). For dates before
  April 2021 that is the merged CCG, not necessarily the pre-merger one: the
  practice-level history before 2021 is not in the public files.
  Practices absent from that map (closed earlier) fall back to the commissioner
  recorded in ODS epraccur (January 2024 extract).
* from 1 July 2022 it is the practice's sub-ICB location in the October 2025
  map (epraccur, then the CCG's 2022 successor, as fallbacks), and the ICB
  holding that sub-ICB location. Changes after October 2025 (e.g. the April
  2026 ICB mergers) are not in the shipped data.

The operator replaces the shipped epraccur and ICB-era map with NHS England's
newer files (`S117_ODS_EPRACCUR_FILE`, `S117_GP_PRACTICE_MAP_FILE`:
hub/refdata/ods_files.py); of the two, the one more recently as of is asked
first for a practice's sub-ICB location, and a newer map's sub-ICB locations
and ICBs are laid over the shipped table. The councils and their successions
come from mySociety's register of local authorities, shipped as of 10 July
2025 or the operator's newer one (`S117_LOCAL_AUTHORITIES_FILE`:
hub/refdata/council_files.py), the social services authorities selected from
it by one filter; a successor it lists without a GSS code yet is given apart
(`council_successors_without_gss`), and with one no council alone holds the
area (`council` gives None). Who holds a code's duties on a day is decided in
one place, `council_in_place` (hub/domain/ports.py `CouncilInPlace`).
"""

from __future__ import annotations

import copy
import csv
import functools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from hub.refdata.bank_holidays import merged, read_govuk_file
from hub.refdata.council_files import (
    LOCAL_AUTHORITIES_DATASET,
    LOCAL_AUTHORITIES_SETTING,
    LOCAL_AUTHORITIES_SOURCE,
    MAX_SUCCESSIONS,
    is_council_read,
    is_social_services_authority,
    read_local_authorities,
    read_local_authorities_file,
)
from hub.refdata.ods_files import (
    EPRACCUR_DATASET,
    EPRACCUR_SETTING,
    EPRACCUR_SOURCE,
    PRACTICE_MAP_DATASET,
    PRACTICE_MAP_SETTING,
    PRACTICE_MAP_SOURCE,
    Dataset,
    read_epraccur,
    read_epraccur_file,
    read_practice_map,
    read_practice_map_file,
)
from hub.refdata.ods import ods_parent_org
from hub.domain.model import Org
from hub.domain.ports import COUNCIL_WITHOUT_GSS, CommissionerResolution, CouncilInPlace, LegalStatus

ICB_START = date(2022, 7, 1)  # CCGs abolished, ICBs established
CCG21_START = date(2021, 4, 1)  # the April 2021 CCG mergers
NHS_ENGLAND = Org("X24", "NHS England", "nhs-england")

_DATA = "data"
SHIPPED_EPRACCUR = "ods_epraccur_2024-01.csv"
# The shipped epraccur's date: its file name's month (its latest date in the data is 2023-12-04; the copy
# was committed on 2024-01-24). The first of the month, so its age is never understated.
SHIPPED_EPRACCUR_AS_OF = date(2024, 1, 1)
SHIPPED_PRACTICE_MAP = "gp-reg-pat-prac-map_2025-10.csv"
SHIPPED_LOCAL_AUTHORITIES = "mysociety_uk_local_authorities_current.csv"
# The shipped register's date: the mySociety repository's HEAD commit it was copied at (PROVENANCE.md).
SHIPPED_LOCAL_AUTHORITIES_AS_OF = date(2025, 7, 10)


# Where the hospital sites and their councils are read from (operator configuration, shipped in the package).
HOSPITAL_SITES_FILE = "hub/refdata/data/hospital_sites.csv"


@dataclass(frozen=True, slots=True)
class SiteCouncilAbolished:
    """A hospital site (hospital_sites.csv) whose council the register in use says was abolished: the
    site's ODS code, the council's GSS code, the first day of its successors, and its successors on the day
    asked (GSS codes; a successor the register lists without one by its register code, kind
    COUNCIL_WITHOUT_GSS), and whether the rules follow them: one addressable successor (the hospital's
    council coordinates as it; `CouncilInPlace.council`), else (split, or a successor without a GSS code)
    no coordinating council can be named. Codes only: nothing personal."""

    ods_code: str
    council_gss: str
    abolished_on: date
    successors: tuple[Org, ...]
    followed: bool


@dataclass(frozen=True, slots=True)
class ReferenceSources:
    """The operator's newer NHS England files (hub/refdata/ods_files.py) and mySociety register of local
    authorities (hub/refdata/council_files.py), each None for the shipped one."""

    epraccur_file: Path | None = None
    epraccur_as_of: date | None = None
    practice_map_file: Path | None = None
    local_authorities_file: Path | None = None
    local_authorities_as_of: date | None = None


SHIPPED = ReferenceSources()


def sources_of(settings: Any) -> ReferenceSources:
    """The reference sources the settings name (`S117_ODS_EPRACCUR_FILE` and `_AS_OF`,
    `S117_GP_PRACTICE_MAP_FILE`, `S117_LOCAL_AUTHORITIES_FILE` and `_AS_OF`)."""
    return ReferenceSources(getattr(settings, "ods_epraccur_file", None), getattr(settings, "ods_epraccur_as_of", None),
                            getattr(settings, "gp_practice_map_file", None),
                            getattr(settings, "local_authorities_file", None),
                            getattr(settings, "local_authorities_as_of", None))

# Known errors in the mySociety register, corrected here (la_code -> county la_code).
# Forest Heath (abolished 2019, now West Suffolk) lay in Suffolk, not Surrey.
_COUNTY_FIXES = {"FOR": "SFK"}

# LSOA-level boundary moves of 1 July 2022 that the CCG -> sub-ICB table (a
# whole-CCG match) cannot show: the part of an April 2020 CCG lying in a given
# district went to another ICB. (CCG20 ODS, LAD20 GSS) -> ICB ODS.
_AREA_MOVES = {
    ("01Y", "E07000037"): "QJ2",  # Glossop (High Peak): Tameside and Glossop -> Derby and Derbyshire
    ("05L", "E08000025"): "QHL",  # West Birmingham: Sandwell and West Birmingham -> Birmingham and Solihull
}


def _open(name: str):
    path = resources.files("hub.refdata").joinpath(_DATA).joinpath(name)
    return path.open("r", encoding="utf-8-sig", newline="")


def _dict_rows(name: str) -> Iterator[dict[str, str]]:
    with _open(name) as f:
        yield from csv.DictReader(f)


def _norm(code: str | None) -> str:
    return (code or "").strip().upper()


def _iso(value: str) -> date | None:
    value = value.strip()
    return date.fromisoformat(value) if value else None


def _distinct(orgs: list[Org]) -> tuple[Org, ...]:
    """`orgs` in order, each code once."""
    seen: set[str] = set()
    return tuple(o for o in orgs if not (o.code in seen or seen.add(o.code)))


def _short_icb(name: str) -> str:
    return name.replace("Integrated Care Board", "ICB")


class _Council:
    __slots__ = ("gss", "la_code", "name", "start", "end", "replaced_by", "ssa")

    def __init__(self, row: dict[str, str], ssa: bool) -> None:
        self.gss = row["gss-code"]
        self.la_code = row["local-authority-code"]
        self.name = row["nice-name"]
        self.start = _iso(row["start-date"])
        self.end = _iso(row["end-date"])
        self.replaced_by = tuple(c.strip() for c in row["replaced-by"].split(",") if c.strip())
        self.ssa = ssa  # a local social services authority (upper tier / unitary)


# How many answers each of council_commissioner and practice_commissioner keeps (emptied when
# full): both full held 4.4 MB (tracemalloc, random practices, councils and dates); the answers
# that repeat (a person's history evaluated again for each change, a day's detentions at one
# practice) repeat within far fewer.
_ANSWERS_KEPT = 8_192
_UNKNOWN = object()


class _Answers:
    """A look-up's answers by its arguments, at most `kept` of them (emptied
    when full): the reference data does not change once loaded, so an answer
    holds for as long as the hub runs."""

    __slots__ = ("_by_key", "_kept")

    def __init__(self, kept: int) -> None:
        self._by_key: dict[Any, Any] = {}
        self._kept = kept

    def get(self, key: Any) -> Any:
        """The answer kept for `key`, or `_UNKNOWN`."""
        return self._by_key.get(key, _UNKNOWN)

    def keep(self, key: Any, answer: Any) -> Any:
        if len(self._by_key) >= self._kept:
            self._by_key.clear()
        self._by_key[key] = answer
        return answer


class PublicReferenceData:
    """The `ReferenceData` port (hub/domain/ports.py) over the shipped files."""

    def __init__(self, sources: ReferenceSources = SHIPPED) -> None:
        self._sources = sources
        # (code, date) -> council_in_place's answer: the reference data does not change once
        # loaded, and every evaluation of a detention asks it (the dispatcher's again).
        # Bounded at 50,000: codes a day apart are many keys.
        self._successors_of = _Answers(50_000)
        # (code, date) -> council_commissioner's answer, for the same reason: the usual-residence
        # fallback walks every district of the council's area (about 250 us a miss).
        self._commissioner_of = _Answers(_ANSWERS_KEPT)
        # (practice, date, as_of) -> practice_commissioner's answer (about 2 us a resolution): every
        # evaluation of a detention asks it, again each time a person's history is evaluated.
        self._practice_commissioner_of = _Answers(_ANSWERS_KEPT)
        self._load_legal_status()
        self._load_councils()
        self._load_nhs_orgs()
        self._load_practices()
        self._load_council_areas()
        self._load_hospitals()
        self._bank_holidays = frozenset(
            date.fromisoformat(r["date"])
            for r in _dict_rows("bank_holidays_england_and_wales_2018_2027.csv")
        )

    # ------------------------------------------------------------ loading
    def _load_legal_status(self) -> None:
        self._legal: dict[str, LegalStatus] = {}
        for r in _dict_rows("mha_legal_status_england.csv"):
            self._legal[r["code"]] = LegalStatus(
                code=r["code"],
                description=r["description"],
                s117_qualifying=r["s117_qualifying"],
                detained=r["description"].startswith("Formally detained"),
            )

    def _load_councils(self) -> None:
        # mySociety's register of local authorities: shipped (July 2025) or the operator's newer one
        # (S117_LOCAL_AUTHORITIES_FILE), read and checked by the same code. The social services authorities
        # are its rows the one filter selects (the shipped england_social_services_authorities.csv was made
        # with it: tests/unit/test_council_files.py).
        src = self._sources
        if src.local_authorities_file is None:
            with _open(SHIPPED_LOCAL_AUTHORITIES) as f:
                register = read_local_authorities(f, SHIPPED_LOCAL_AUTHORITIES_AS_OF,
                                                  f"hub/refdata/data/{SHIPPED_LOCAL_AUTHORITIES}")
        else:
            register = read_local_authorities_file(src.local_authorities_file, src.local_authorities_as_of or date.min)
        self._council_dataset = Dataset(
            LOCAL_AUTHORITIES_DATASET, register.as_of, LOCAL_AUTHORITIES_SETTING, LOCAL_AUTHORITIES_SOURCE,
            str(src.local_authorities_file) if src.local_authorities_file else None)
        self._councils: dict[str, _Council] = {}  # GSS -> council (SSAs and English districts)
        self._by_la: dict[str, _Council] = {}
        self._county_of: dict[str, str] = {}  # district GSS -> county la_code
        self._alias: dict[str, str] = {}  # former GSS code (pure re-coding) -> GSS
        # la_code -> an authority the register lists without a GSS code (a new council listed before ONS gives
        # it one): a successor no message can be addressed to, so a council it takes over from is no
        # determined council after the vesting day (`council_successors_without_gss`; hazard H-03).
        self._without_gss: dict[str, _Council] = {}
        for r in register.rows:
            if not r["gss-code"]:
                self._without_gss[r["local-authority-code"]] = _Council(r, is_social_services_authority(r))
                continue
            if not is_council_read(r):
                continue  # other nations, combined authorities etc.
            ssa = is_social_services_authority(r)
            c = _Council(r, ssa)
            self._councils[c.gss] = c
            self._by_la[c.la_code] = c
            if not ssa:
                self._county_of[c.gss] = _COUNTY_FIXES.get(c.la_code, r["county-la"])
            for old in r["former-gss-codes"].split(","):
                if old.strip():
                    self._alias[old.strip()] = c.gss
        # Effective last day: the register's end dates mix "last day" and
        # "first day of the successor"; the successor's start wins. Every succession read here has one of
        # the two dates, and both agree (the end date the day before the successor's start or that day, the
        # successors on one day): a register otherwise was refused at start (council_files.py
        # `_successions_dated`; hazard H-03), so no abolished council stays named for want of a date.
        self._last_day: dict[str, date | None] = {}
        for c in self._councils.values():
            last = c.end
            starts = [(self._by_la.get(s) or self._without_gss[s]).start for s in c.replaced_by
                      if s in self._by_la or s in self._without_gss]
            starts = [s for s in starts if s is not None]
            if starts:
                day_before = min(starts) - timedelta(days=1)
                last = day_before if last is None else min(last, day_before)
            self._last_day[c.gss] = last
        # The days a council's duties pass to its successor (the day after its effective last day): an
        # operator's newer register can name one still to come, and the bodies it moves are told that day
        # (hub/refdata_retell.py).
        self._succession_days = tuple(sorted({
            last + timedelta(days=1) for gss, last in self._last_day.items()
            if last is not None and self._councils[gss].replaced_by}))

    def _load_nhs_orgs(self) -> None:
        self._icbs: dict[str, Org] = {}
        self._sicbl: dict[str, Org] = {}
        self._sicbl_icb: dict[str, str] = {}
        for r in _dict_rows("sicbl_icb_region_from_gp-reg-map_2025-10.csv"):
            self._icbs[r["ICB_ODS_CODE"]] = Org(r["ICB_ODS_CODE"], r["ICB_NAME"], "icb")
            self._sicbl[r["SICBL_ODS_CODE"]] = Org(r["SICBL_ODS_CODE"], r["SICBL_NAME"], "sub-icb")
            self._sicbl_icb[r["SICBL_ODS_CODE"]] = r["ICB_ODS_CODE"]
        # April 2021 CCGs and the sub-ICB location each became on 1 July 2022.
        self._ccg21: dict[str, Org] = {}
        self._ccg21_loc: dict[str, str] = {}
        ccg21_stp: dict[str, str] = {}
        for r in _dict_rows("ccg21_stp21_to_sicbl22_icb22_samuel-book.csv"):
            self._ccg21[r["CCG21CDH"]] = Org(r["CCG21CDH"], r["CCG21NM"], "ccg")
            self._ccg21_loc[r["CCG21CDH"]] = r["LOC22CDH"]
            ccg21_stp[r["CCG21CDH"]] = r["STP21CDH"]
        # April 2020 CCGs (before the 2021 mergers) and their STP.
        self._ccg20: dict[str, Org] = {}
        self._ccg20_stp: dict[str, str] = {}
        for r in _dict_rows("ons_CCG20_STP20_EN_LU_2020-04.csv"):
            self._ccg20[r["CCG20CDH"]] = Org(r["CCG20CDH"], r["CCG20NM"], "ccg")
            self._ccg20_stp[r["CCG20CDH"]] = r["STP20CDH"]
        # A CCG of 2020 that merged in April 2021 went into the one new CCG of
        # its STP (e.g. the 7 north-east London CCGs -> A3A8R).
        new_by_stp: dict[str, list[str]] = defaultdict(list)
        for code, stp in ccg21_stp.items():
            if code not in self._ccg20:
                new_by_stp[stp].append(code)
        self._ccg20_to_21: dict[str, str] = {}
        for code, stp in self._ccg20_stp.items():
            if code in self._ccg21:
                self._ccg20_to_21[code] = code
            elif len(new_by_stp.get(stp, ())) == 1:
                self._ccg20_to_21[code] = new_by_stp[stp][0]

    def _load_practices(self) -> None:
        # practice -> CCG (Jan 2022) and practice -> sub-ICB location (Oct 2025)
        self._prac22: dict[str, str] = {}
        with _open("gp-reg-pat-prac-map_2022-01.csv") as f:
            rows = csv.reader(f)
            head = next(rows)
            ip, ic, inm = head.index("PRACTICE_CODE"), head.index("CCG_CODE"), head.index("CCG_NAME")
            for r in rows:
                self._prac22[r[ip]] = r[ic]
                if r[ic] not in self._ccg21:  # pragma: no cover - all 106 are in the table
                    self._ccg21[r[ic]] = Org(r[ic], r[inm], "ccg")
        # practice -> sub-ICB location in the ICB era: NHS England's map, the shipped one (October 2025) or the
        # operator's (S117_GP_PRACTICE_MAP_FILE), whose sub-ICB locations and ICBs are laid over the table's.
        src = self._sources
        if src.practice_map_file is None:
            with _open(SHIPPED_PRACTICE_MAP) as f:
                practice_map = read_practice_map(f, f"hub/refdata/data/{SHIPPED_PRACTICE_MAP}")
        else:
            practice_map = read_practice_map_file(src.practice_map_file)
            for loc, (name, icb, icb_name) in practice_map.sub_icbs.items():
                self._sicbl[loc] = Org(loc, name, "sub-icb")
                self._icbs[icb] = Org(icb, icb_name, "icb")
                self._sicbl_icb[loc] = icb
        self._prac25: dict[str, str] = practice_map.practices
        self._map_as_of = practice_map.as_of
        # ODS epraccur (no header): GP practices (prescribing setting 4) incl. closed ones:
        # code -> (commissioner, close date yyyymmdd). Shipped (January 2024) or the operator's.
        if src.epraccur_file is None:
            with _open(SHIPPED_EPRACCUR) as f:
                epraccur = read_epraccur(f, SHIPPED_EPRACCUR_AS_OF, f"hub/refdata/data/{SHIPPED_EPRACCUR}")
        else:
            epraccur = read_epraccur_file(src.epraccur_file, src.epraccur_as_of or date.min)
        self._epraccur: dict[str, tuple[str, str]] = epraccur.practices
        self._epraccur_as_of = epraccur.as_of
        # Of the two, the more recent is asked first for a practice's sub-ICB location (the ICB era).
        self._epraccur_first = self._epraccur_as_of > self._map_as_of
        self._datasets = (
            Dataset(EPRACCUR_DATASET, epraccur.as_of, EPRACCUR_SETTING, EPRACCUR_SOURCE,
                    str(src.epraccur_file) if src.epraccur_file else None),
            Dataset(PRACTICE_MAP_DATASET, practice_map.as_of, PRACTICE_MAP_SETTING, PRACTICE_MAP_SOURCE,
                    str(src.practice_map_file) if src.practice_map_file else None),
            self._council_dataset,
        )

    def datasets(self) -> tuple[Dataset, ...]:
        """The GP practice datasets and the register of local authorities in use, each with the date it is
        as of (hub/refdata/ods_files.py, hub/refdata/council_files.py)."""
        return self._datasets

    def succession_days(self) -> tuple[date, ...]:
        """Every day on which a council's duties pass to its successor (a reorganisation's vesting day),
        in order: on and after it, `council_successors` names the successor."""
        return self._succession_days

    def _load_council_areas(self) -> None:
        self._lad_ccg: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for r in _dict_rows("ons-derived_lad20_to_ccg20_lsoa_counts_2020-04.csv"):
            self._lad_ccg[r["LAD20CD"]].append((r["CCG20CDH"], int(r["LSOA11_COUNT"])))

    def _load_hospitals(self) -> None:
        self._hospitals: dict[str, tuple[Org, str]] = {}
        for r in _dict_rows("hospital_sites.csv"):
            code = _norm(r["ods_code"])
            self._hospitals[code] = (Org(code, r["name"], r["kind"] or "trust"), r["council_gss"])

    # ------------------------------------------------------- legal status
    def legal_status(self, code: str) -> LegalStatus | None:
        c = (code or "").strip()
        if c.isascii() and c.isdigit() and len(c) == 1:
            c = "0" + c
        return self._legal.get(c)

    # ----------------------------------------------------------- councils
    def _council_org(self, c: _Council) -> Org:
        return Org(c.gss, c.name, "council")

    def _canonical_gss(self, gss_code: str) -> str:
        g = _norm(gss_code)
        return self._alias.get(g, g)

    def council_in_place(self, gss_code: str, on: date) -> CouncilInPlace:
        """Who holds the code's duties on `on`: the one addressable council, or every successor when no
        council alone does (`CouncilInPlace`, the rule for the whole hub). Kept: asked for every evaluation
        of a change, a dictionary read once asked."""
        key = (gss_code, on)
        got = self._successors_of.get(key)
        if got is _UNKNOWN:
            out: list[Org] = []
            without_gss: list[Org] = []
            self._successors(self._canonical_gss(gss_code), on, out, without_gss, 0)
            got = self._successors_of.keep(key, CouncilInPlace(_distinct(out), _distinct(without_gss)))
        return got

    def council_successors(self, gss_code: str, on: date) -> tuple[Org, ...]:
        """Every social services authority with a GSS code in place on `on`
        that holds the code's area. A lower-tier district code resolves to its
        county (or, after the district's abolition, to the unitary that
        replaced it)."""
        return self.council_in_place(gss_code, on).with_gss

    def council_successors_without_gss(self, gss_code: str, on: date) -> tuple[Org, ...]:
        """The authorities in place on `on` that took over (part of) the code's area and that the register
        lists without a GSS code yet, named by the register's code (kind `COUNCIL_WITHOUT_GSS`)."""
        return self.council_in_place(gss_code, on).without_gss

    def _successors(self, gss: str, on: date, out: list[Org], without_gss: list[Org], depth: int) -> None:
        c = self._councils.get(gss)
        if c is None or depth > MAX_SUCCESSIONS + 1:  # the register's chains (checked), and a district's county
            return
        last = self._last_day[gss]
        if c.replaced_by and last is not None and on > last:
            for la in c.replaced_by:
                succ = self._by_la.get(la)
                if succ is not None:
                    self._successors(succ.gss, on, out, without_gss, depth + 1)
                elif la in self._without_gss:
                    # Listed before ONS gave it a GSS code: named by the register's code, never addressed.
                    pending = self._without_gss[la]
                    without_gss.append(Org(pending.la_code, pending.name or pending.la_code, COUNCIL_WITHOUT_GSS))
            return
        if c.ssa:
            # A code asked about before the council existed (mySociety start
            # dates are often register dates) still names that council.
            out.append(self._council_org(c))
            return
        county = self._by_la.get(self._county_of.get(gss, ""))
        if county is not None:
            self._successors(county.gss, on, out, without_gss, depth + 1)

    def council(self, gss_code: str, on: date) -> Org | None:
        """The one council with a GSS code holding the code's area on `on`; None for a split between several
        successors, or a successor the register lists without a GSS code yet (no council alone holds it)."""
        return self.council_in_place(gss_code, on).council

    def is_known_council_code(self, gss_code: str) -> bool:
        """A current or former English social services authority (or a former
        GSS code of one). Lower-tier district codes are not: `council()`
        resolves them to their county, but a register should name the SSA."""
        c = self._councils.get(self._canonical_gss(gss_code))
        return c is not None and c.ssa

    # ------------------------------------------------------ commissioners
    def _icb_of_sicbl(self, sicbl: str) -> Org | None:
        icb = self._sicbl_icb.get(sicbl)
        return self._icbs.get(icb) if icb else None

    def _ccg_org(self, code: str) -> Org | None:
        return self._ccg21.get(code) or self._ccg20.get(code)

    def _ccg_at(self, code: str, as_of: date) -> Org | None:
        """The CCG holding a CCG code's area on a date before 1 July 2022."""
        if code in self._ccg20 and code not in self._ccg21 and as_of >= CCG21_START:
            merged = self._ccg20_to_21.get(code)
            return self._ccg21[merged] if merged else self._ccg20[code]
        return self._ccg_org(code)

    def _ccg_sicbl(self, code: str) -> str | None:
        """The sub-ICB location that took over a CCG's area on 1 July 2022."""
        code = self._ccg20_to_21.get(code, code)
        loc = self._ccg21_loc.get(code)
        return loc if loc in self._sicbl else None

    def commissioner_successor(self, org_code: str, as_of: date) -> Org | None:
        """The body holding a commissioner code's duties on `as_of`: the ICB
        from 1 July 2022; before that date the CCG (a CCG code of April 2020
        follows the April 2021 merger). An ICB or sub-ICB code always gives the
        ICB. NHS England's code gives NHS England. None if unknown."""
        c = _norm(org_code)
        if c == NHS_ENGLAND.code:
            return NHS_ENGLAND
        if c in self._icbs:
            return self._icbs[c]
        is_ccg = c in self._ccg21 or c in self._ccg20
        if as_of < ICB_START and is_ccg:
            return self._ccg_at(c, as_of)
        if c in self._sicbl:
            return self._icb_of_sicbl(c)
        if is_ccg:
            loc = self._ccg_sicbl(c)
            if loc:
                return self._icb_of_sicbl(loc)
            stp = self._ccg20_stp.get(c)
            return self._icbs.get(stp) if stp else None
        return None

    def is_known_practice(self, practice_ods: str) -> bool:
        p = _norm(practice_ods)
        return p in self._prac22 or p in self._prac25 or p in self._epraccur

    def practice_commissioner(
        self, practice_ods: str, on: date, as_of: date
    ) -> CommissionerResolution | None:
        key = (practice_ods, on, as_of)
        got = self._practice_commissioner_of.get(key)
        if got is _UNKNOWN:
            p = _norm(practice_ods)
            got = self._practice_commissioner_of.keep(
                key, self._practice_ccg_era(p, on, as_of) if on < ICB_START else self._practice_icb_era(p, on, as_of))
        return got

    def _practice_ccg_era(self, p: str, on: date, as_of: date) -> CommissionerResolution | None:
        if p in self._prac22:
            ccg = self._ccg21.get(self._prac22[p])
            source = ""
            if on < CCG21_START and ccg is not None and ccg.code not in self._ccg20:
                # formed by the April 2021 mergers: the practice's earlier CCG
                # is not in the public files, so name the merged one and say so
                source = f" (a CCG formed on {CCG21_START.isoformat()}; the January 2022 map has no earlier CCG)"
        elif p in self._epraccur:
            commissioner, closed = self._epraccur[p]
            ccg = self._ccg_at(commissioner, on) if commissioner in self._ccg20 else self._ccg_org(commissioner)
            source = " (ODS epraccur"
            if closed:
                source += f"; practice closed {closed[:4]}-{closed[4:6]}-{closed[6:]}"
            source += ")"
        else:
            return None
        if ccg is None:
            return None
        trail = f"practice {p} in {ccg.name} ({ccg.code}) on {on.isoformat()}{source}"
        if as_of < ICB_START:
            holder = self._ccg_at(ccg.code, as_of) or ccg
            if holder.code != ccg.code:
                trail += f"; {ccg.code} merged into {holder.name} ({holder.code}) on {CCG21_START.isoformat()}"
            return CommissionerResolution(at_date=ccg, successor=holder, trail=trail)
        area_loc = self._ccg_sicbl(ccg.code)
        practice_loc = self._prac25.get(p)
        if practice_loc and practice_loc in self._sicbl:
            icb = self._icb_of_sicbl(practice_loc)
            if icb is None:  # pragma: no cover
                return None
            if practice_loc == area_loc:
                trail += (
                    f"; {ccg.code} became sub-ICB location {practice_loc} of "
                    f"{_short_icb(icb.name)} ({icb.code}) on {ICB_START.isoformat()}"
                )
            else:
                rest = (
                    f"the rest of {ccg.code} became sub-ICB location {area_loc} on {ICB_START.isoformat()}"
                    if area_loc
                    else f"{ccg.code} has no single successor sub-ICB location"
                )
                trail += (
                    f"; the practice moved to sub-ICB location {practice_loc} of "
                    f"{_short_icb(icb.name)} ({icb.code}) ({self._map_as_of:%B %Y} registration map; {rest})"
                )
            return CommissionerResolution(at_date=ccg, successor=icb, trail=trail)
        if area_loc:
            icb = self._icb_of_sicbl(area_loc)
        else:
            icb = self.commissioner_successor(ccg.code, as_of)
        if icb is None:
            return None
        trail += (
            f"; {ccg.code}'s area became sub-ICB location {area_loc} of "
            if area_loc
            else f"; {ccg.code}'s area passed to "
        ) + f"{_short_icb(icb.name)} ({icb.code}) on {ICB_START.isoformat()}"
        return CommissionerResolution(at_date=ccg, successor=icb, trail=trail)

    def _practice_icb_era(self, p: str, on: date, as_of: date) -> CommissionerResolution | None:
        loc: str | None = None
        source = ""
        from_map = self._prac25.get(p)
        found = self._epraccur.get(p)
        from_ods = found[0] if found is not None and found[0] in self._sicbl else None
        ods_note = f" (ODS epraccur {self._epraccur_as_of:%B %Y})"
        if self._epraccur_first and from_ods:
            loc, source = from_ods, ods_note
        elif from_map:
            loc = from_map
        elif from_ods:
            loc, source = from_ods, ods_note
        elif p in self._prac22:
            loc = self._ccg_sicbl(self._prac22[p])
            source = f" (successor of its January 2022 CCG {self._prac22[p]})"
        if not loc or loc not in self._sicbl:
            return None
        sub = self._sicbl[loc]
        icb = self._icb_of_sicbl(loc)
        if icb is None:  # pragma: no cover
            return None
        trail = (
            f"practice {p} in sub-ICB location {loc} of {_short_icb(icb.name)} "
            f"({icb.code}) on {on.isoformat()}{source}"
        )
        return CommissionerResolution(at_date=sub, successor=icb, trail=trail)

    # ------------------------------------------ usual-residence fallback
    def _lad_area(self, gss: str, depth: int = 0) -> set[str]:
        """The April 2020 local authority districts making up a council's area."""
        if gss in self._lad_ccg:
            return {gss}
        c = self._councils.get(gss)
        if c is None or depth > 8:
            return set()
        area = {
            lad
            for lad in self._lad_ccg
            if self._county_of.get(lad) == c.la_code
            or c.la_code in (self._councils[lad].replaced_by if lad in self._councils else ())
        }
        if not area:  # e.g. Buckinghamshire CC: its area is its successor's
            for la in c.replaced_by:
                succ = self._by_la.get(la)
                if succ is not None:
                    area |= self._lad_area(succ.gss, depth + 1)
        return area

    def council_commissioner(self, gss_code: str, as_of: date) -> Org | None:
        """The commissioner covering the largest share of a council's area
        (count of 2011 LSOAs, from the ONS April 2020 LSOA -> CCG -> LAD
        lookup), for the usual-residence fallback (Worcs 4.4.1).

        Approximate: LSOA counts, not population; CCG areas as of April 2020
        carried to their 2022 sub-ICB locations whole (except the Glossop and
        West Birmingham moves, applied at district level). From 1 July 2022 it
        is an ICB; for an earlier `as_of` the CCG then in place."""
        key = (gss_code, as_of)
        got = self._commissioner_of.get(key)
        if got is _UNKNOWN:
            got = self._commissioner_of.keep(key, self._council_commissioner(gss_code, as_of))
        return got

    def _council_commissioner(self, gss_code: str, as_of: date) -> Org | None:
        area = self._lad_area(self._canonical_gss(gss_code))
        if not area:
            return None
        totals: dict[str, int] = defaultdict(int)
        orgs: dict[str, Org] = {}
        for lad in area:
            for ccg20, n in self._lad_ccg[lad]:
                if as_of < ICB_START:
                    org = self._ccg_at(ccg20, as_of)
                else:
                    icb_code = _AREA_MOVES.get((ccg20, lad))
                    org = self._icbs.get(icb_code) if icb_code else self.commissioner_successor(ccg20, as_of)
                if org is None:
                    continue
                totals[org.code] += n
                orgs[org.code] = org
        if not totals:
            return None
        best = max(sorted(totals), key=lambda k: totals[k])
        return orgs[best]

    # ------------------------------------------------------------ others
    def hospital(self, ods_code: str) -> Org | None:
        code = _norm(ods_code)
        found = self._hospitals.get(code)
        if found:
            return found[0]
        # A site of a known trust (ODS: a 5-character site code starts with its trust's code).
        trust = ods_parent_org(code)
        if trust and trust != code and trust in self._hospitals:
            return Org(code, f"{self._hospitals[trust][0].name} site {code}", "site")
        return None

    def hospital_sites_naming_abolished_councils(self, on: date) -> tuple[SiteCouncilAbolished, ...]:
        """Every site of hospital_sites.csv whose council the register in use says was abolished on or
        before `on` (its effective last day before `on`), with its successors on `on`, by ODS code. A
        council still to be abolished (a later vesting day) is not one; nor a district code the rules
        resolve to its county (the district stands)."""
        out = []
        for code, (_org, council_gss) in sorted(self._hospitals.items()):
            gss = self._canonical_gss(council_gss)
            c = self._councils.get(gss)
            last = self._last_day.get(gss)
            if c is None or not c.replaced_by or last is None or on <= last:
                continue
            in_place = self.council_in_place(gss, on)
            out.append(SiteCouncilAbolished(code, _norm(council_gss), last + timedelta(days=1),
                                            in_place.with_gss + in_place.without_gss,
                                            in_place.council is not None))
        return tuple(out)

    def hospital_trust(self, ods_code: str) -> str | None:
        """The trust that runs the hospital site, by the ODS code rule (not
        from the operator file): None for a site the hub does not know."""
        code = _norm(ods_code)
        if self.hospital(code) is None:
            return None
        return ods_parent_org(code)

    def hospital_council_gss(self, ods_code: str) -> str | None:
        code = _norm(ods_code)
        found = self._hospitals.get(code) or self._hospitals.get(ods_parent_org(code) or "")
        return found[1] if found else None

    def bank_holidays(self) -> frozenset[date]:
        return self._bank_holidays

    def with_bank_holidays(self, holidays: frozenset[date]) -> PublicReferenceData:
        """The same reference data counting with another calendar (hub/refdata/bank_holidays.py:
        the operator's GOV.UK file merged over the shipped one); the rest, and its caches, shared."""
        other = copy.copy(self)
        other._bank_holidays = holidays
        return other

    def nhs_england(self) -> Org:
        return NHS_ENGLAND


@functools.cache
def load_reference_data(sources: ReferenceSources = SHIPPED) -> PublicReferenceData:
    """The shared reference data, parsed once per process (and per set of operator files)."""
    return PublicReferenceData(sources)


def reference_data(bank_holidays_file: Path | None = None,
                   sources: ReferenceSources = SHIPPED) -> PublicReferenceData:
    """The shared reference data, with the operator's bank holidays file
    (`S117_BANK_HOLIDAYS_FILE`, GOV.UK's bank-holidays.json) merged over the
    shipped calendar when one is set, and the operator's NHS England GP
    practice files and mySociety register of local authorities (`sources`:
    hub/refdata/ods_files.py, hub/refdata/council_files.py) in place of the
    shipped ones. A file that cannot be read raises `CalendarError` or
    `ReferenceFileError` naming the setting and the element, line or column."""
    ref = load_reference_data(sources)
    if bank_holidays_file is None:
        return ref
    return ref.with_bank_holidays(merged(ref.bank_holidays(), read_govuk_file(bank_holidays_file)))
