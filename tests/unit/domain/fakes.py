"""An in-memory ReferenceData with a handful of realistic-looking organisations.

Codes follow the real shapes (GSS E06/E09/E10, CCG three-character ODS, ICB
Qxx) and mostly the real codes, but the practices and their histories are
invented for the tests: nothing here is a real person's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from hub.domain.model import Org
from hub.domain.ports import COUNCIL_WITHOUT_GSS, CommissionerResolution, CouncilInPlace, LegalStatus

ICB_START = date(2022, 7, 1)

LEGAL_STATUSES = {
    code: LegalStatus(code, description, qualifying, detained)
    for code, description, qualifying, detained in [
        ("01", "Informal", "no", False),
        ("02", "Formally detained under Mental Health Act Section 2", "no", True),
        ("03", "Formally detained under Mental Health Act Section 3", "yes", True),
        ("04", "Formally detained under Mental Health Act Section 4", "no", True),
        ("05", "Formally detained under Mental Health Act Section 5(2)", "no", True),
        ("06", "Formally detained under Mental Health Act Section 5(4)", "no", True),
        ("07", "Formally detained under Mental Health Act Section 35", "no", True),
        ("08", "Formally detained under Mental Health Act Section 36", "no", True),
        ("09", "Formally detained under Mental Health Act Section 37 with section 41 restrictions", "yes", True),
        ("10", "Formally detained under Mental Health Act Section 37", "yes", True),
        ("12", "Formally detained under Mental Health Act Section 38", "no", True),
        ("15", "Formally detained under Mental Health Act Section 47 with section 49 restrictions", "yes", True),
        ("16", "Formally detained under Mental Health Act Section 47", "yes", True),
        ("17", "Formally detained under Mental Health Act Section 48 with section 49 restrictions", "yes", True),
        ("18", "Formally detained under Mental Health Act Section 48", "yes", True),
        ("19", "Formally detained under Mental Health Act Section 135", "no", True),
        ("20", "Formally detained under Mental Health Act Section 136", "no", True),
        ("31", "Formally detained under Criminal Procedure(Insanity) Act 1964 as amended", "review", True),
        ("35", "Subject to guardianship under Mental Health Act Section 7", "no", False),
        ("37", "Formally detained under Mental Health Act Section 45A (Limited direction in force)", "yes", True),
        ("38", "Formally detained under Mental Health Act Section 45A (Limitation direction ended)", "yes", True),
        ("98", "Not Applicable", "no", False),
    ]
}

# Council GSS codes.
WORCESTERSHIRE = "E10000034"
BUCKINGHAMSHIRE = "E06000060"
BUCKS_COUNTY_OLD = "E10000002"  # Buckinghamshire County Council, to 31 March 2020
HARROW = "E09000015"
OXFORDSHIRE = "E10000025"
BIRMINGHAM = "E08000025"
HEREFORDSHIRE = "E06000019"
CUMBRIA_OLD = "E10000006"  # split on 1 April 2023
CUMBERLAND = "E06000063"
WESTMORLAND = "E06000064"
# A reorganisation listed by the register of local authorities before ONS gives the new councils GSS codes
# (as England's of 2026-2028 may be). Fictional councils and codes.
WYVERN_OLD = "E06000097"  # a unitary replaced on 1 April 2026 by Wyvern Vale (register code WYV), no GSS code yet
MIDSHIRE_OLD = "E10000097"  # a county split on 1 April 2026: North Midshire, and South Midshire (SMI) without one
NORTH_MIDSHIRE = "E06000096"
WYVERN_VALE, SOUTH_MIDSHIRE = "WYV", "SMI"  # register codes (mySociety's local-authority-code), not GSS codes
# Successors listed without a GSS code: register code -> name.
WITHOUT_GSS = {WYVERN_VALE: "Wyvern Vale", SOUTH_MIDSHIRE: "South Midshire"}
# The GSS codes a later register gives them (`FakeReferenceData(gss_given=...)`).
GSS_GIVEN = {WYVERN_VALE: "E06000095", SOUTH_MIDSHIRE: "E06000094"}

# NHS commissioners (ODS).
HW_CCG = "18C"  # Herefordshire and Worcestershire (CCG, then sub-ICB location)
HW_ICB = "QGH"
BUCKS_CCG = "14Y"
AYLESBURY_VALE_CCG = "10Y"  # merged into Buckinghamshire CCG on 1 April 2018
OXON_CCG = "10Q"
BOB_ICB = "QU9"
NWL_CCG = "W2U3Z"
NWL_ICB = "QRV"
BSOL_CCG = "15E"
BSOL_ICB = "QHL"
NORTH_CUMBRIA_CCG = "01H"
NENC_ICB = "QHM"

# GP practices (invented codes in the real shape).
WORCS_PRACTICE = "M81901"
BUCKS_PRACTICE = "K82901"
OXON_PRACTICE = "K84901"
HARROW_PRACTICE = "E84901"
BHAM_PRACTICE = "M85901"
CUMBRIA_PRACTICE = "A82901"

# Hospitals (trust ODS) and the council each lies in.
HW_TRUST = "R1A"
OXFORD_HEALTH = "RNU"
CNWL = "RV3"
BSMHFT = "RXT"
# Hospitals (invented codes) whose site file still names a council since abolished (hazard H-03): one whose
# council has a single successor with a GSS code, one in a split county, one whose council's successor the
# register lists without a GSS code yet.
BUCKS_COUNTY_HOSPITAL = "RZB"
CUMBRIA_HOSPITAL = "RZC"
WYVERN_HOSPITAL = "RZW"


def _council(code: str, name: str) -> Org:
    return Org(code, name, "council")


COUNCILS = {
    WORCESTERSHIRE: _council(WORCESTERSHIRE, "Worcestershire"),
    BUCKINGHAMSHIRE: _council(BUCKINGHAMSHIRE, "Buckinghamshire"),
    BUCKS_COUNTY_OLD: _council(BUCKS_COUNTY_OLD, "Buckinghamshire County"),
    HARROW: _council(HARROW, "Harrow"),
    OXFORDSHIRE: _council(OXFORDSHIRE, "Oxfordshire"),
    BIRMINGHAM: _council(BIRMINGHAM, "Birmingham"),
    HEREFORDSHIRE: _council(HEREFORDSHIRE, "Herefordshire"),
    CUMBRIA_OLD: _council(CUMBRIA_OLD, "Cumbria"),
    CUMBERLAND: _council(CUMBERLAND, "Cumberland"),
    WESTMORLAND: _council(WESTMORLAND, "Westmorland and Furness"),
    WYVERN_OLD: _council(WYVERN_OLD, "Wyvern"),
    MIDSHIRE_OLD: _council(MIDSHIRE_OLD, "Midshire"),
    NORTH_MIDSHIRE: _council(NORTH_MIDSHIRE, "North Midshire"),
}

# Old code -> (date the successors took over, successor codes).
COUNCIL_SUCCESSIONS = {
    BUCKS_COUNTY_OLD: (date(2020, 4, 1), (BUCKINGHAMSHIRE,)),
    CUMBRIA_OLD: (date(2023, 4, 1), (CUMBERLAND, WESTMORLAND)),
    WYVERN_OLD: (date(2026, 4, 1), (WYVERN_VALE,)),
    MIDSHIRE_OLD: (date(2026, 4, 1), (NORTH_MIDSHIRE, SOUTH_MIDSHIRE)),
}

COUNCIL_STARTS = {
    BUCKINGHAMSHIRE: date(2020, 4, 1),
    CUMBERLAND: date(2023, 4, 1),
    WESTMORLAND: date(2023, 4, 1),
}

CCGS = {
    HW_CCG: "NHS Herefordshire and Worcestershire CCG",
    BUCKS_CCG: "NHS Buckinghamshire CCG",
    AYLESBURY_VALE_CCG: "NHS Aylesbury Vale CCG",
    OXON_CCG: "NHS Oxfordshire CCG",
    NWL_CCG: "NHS North West London CCG",
    BSOL_CCG: "NHS Birmingham and Solihull CCG",
    NORTH_CUMBRIA_CCG: "NHS North Cumbria CCG",
}

ICBS = {
    HW_ICB: "NHS Herefordshire and Worcestershire ICB",
    BOB_ICB: "NHS Buckinghamshire, Oxfordshire and Berkshire West ICB",
    NWL_ICB: "NHS North West London ICB",
    BSOL_ICB: "NHS Birmingham and Solihull ICB",
    NENC_ICB: "NHS North East and North Cumbria ICB",
}

# CCG merges before ICBs: old -> (date, new).
CCG_MERGES = {AYLESBURY_VALE_CCG: (date(2018, 4, 1), BUCKS_CCG)}

# Sub-ICB location (old CCG code) -> ICB from 1 July 2022.
SICBL_TO_ICB = {
    HW_CCG: HW_ICB,
    BUCKS_CCG: BOB_ICB,
    OXON_CCG: BOB_ICB,
    NWL_CCG: NWL_ICB,
    BSOL_CCG: BSOL_ICB,
    NORTH_CUMBRIA_CCG: NENC_ICB,
}

# Practice -> [(from date, commissioner code)], oldest first.
PRACTICES = {
    WORCS_PRACTICE: [(date(2000, 1, 1), HW_CCG)],
    BUCKS_PRACTICE: [(date(2000, 1, 1), AYLESBURY_VALE_CCG), (date(2018, 4, 1), BUCKS_CCG)],
    OXON_PRACTICE: [(date(2000, 1, 1), OXON_CCG)],
    HARROW_PRACTICE: [(date(2000, 1, 1), NWL_CCG)],
    BHAM_PRACTICE: [(date(2000, 1, 1), BSOL_CCG)],
    CUMBRIA_PRACTICE: [(date(2000, 1, 1), NORTH_CUMBRIA_CCG)],
}

COUNCIL_TO_CCG = {
    WORCESTERSHIRE: HW_CCG,
    HEREFORDSHIRE: HW_CCG,
    BUCKINGHAMSHIRE: BUCKS_CCG,
    BUCKS_COUNTY_OLD: BUCKS_CCG,
    OXFORDSHIRE: OXON_CCG,
    HARROW: NWL_CCG,
    BIRMINGHAM: BSOL_CCG,
    CUMBRIA_OLD: NORTH_CUMBRIA_CCG,
    CUMBERLAND: NORTH_CUMBRIA_CCG,
    WESTMORLAND: NORTH_CUMBRIA_CCG,
}

HOSPITALS = {
    HW_TRUST: (Org(HW_TRUST, "Herefordshire and Worcestershire Health and Care NHS Trust", "trust"), WORCESTERSHIRE),
    OXFORD_HEALTH: (Org(OXFORD_HEALTH, "Oxford Health NHS Foundation Trust", "trust"), OXFORDSHIRE),
    CNWL: (Org(CNWL, "Central and North West London NHS Foundation Trust", "trust"), HARROW),
    BSMHFT: (Org(BSMHFT, "Birmingham and Solihull Mental Health NHS Foundation Trust", "trust"), BIRMINGHAM),
    BUCKS_COUNTY_HOSPITAL: (Org(BUCKS_COUNTY_HOSPITAL, "Aylesbury Vale Hospital", "trust"), BUCKS_COUNTY_OLD),
    CUMBRIA_HOSPITAL: (Org(CUMBRIA_HOSPITAL, "Fellside Hospital", "trust"), CUMBRIA_OLD),
    WYVERN_HOSPITAL: (Org(WYVERN_HOSPITAL, "Wyvern Hospital", "trust"), WYVERN_OLD),
}

# England and Wales bank holidays 2024-2025 (gov.uk).
BANK_HOLIDAYS = frozenset(
    date.fromisoformat(day)
    for day in [
        "2024-01-01", "2024-03-29", "2024-04-01", "2024-05-06", "2024-05-27", "2024-08-26",
        "2024-12-25", "2024-12-26", "2025-01-01", "2025-04-18", "2025-04-21", "2025-05-05",
        "2025-05-26", "2025-08-25", "2025-12-25", "2025-12-26",
    ]
)

NHS_ENGLAND = Org("X24", "NHS England", "nhs-england")


@dataclass
class FakeReferenceData:
    calls: list[str] = field(default_factory=list)
    # Register code -> GSS code: the councils listed without one (`WITHOUT_GSS`) that a later register of
    # local authorities gives one (e.g. GSS_GIVEN).
    gss_given: dict[str, str] = field(default_factory=dict)

    def legal_status(self, code: str) -> LegalStatus | None:
        return LEGAL_STATUSES.get(code)

    def council(self, gss_code: str, on: date) -> Org | None:
        found = self.council_in_place(gss_code, on).council
        return found if found is not None else self._councils().get(gss_code)

    def council_in_place(self, gss_code: str, on: date) -> CouncilInPlace:
        return CouncilInPlace(self.council_successors(gss_code, on), self.council_successors_without_gss(gss_code, on))

    def _councils(self) -> dict[str, Org]:
        if not self.gss_given:
            return COUNCILS
        return {**COUNCILS, **{gss: _council(gss, WITHOUT_GSS[code]) for code, gss in self.gss_given.items()}}

    def _successor(self, code: str) -> Org:
        """A successor named in COUNCIL_SUCCESSIONS: a council with a GSS code, or one listed without."""
        if code in WITHOUT_GSS:
            gss = self.gss_given.get(code)
            return _council(gss, WITHOUT_GSS[code]) if gss else Org(code, WITHOUT_GSS[code], COUNCIL_WITHOUT_GSS)
        return COUNCILS[code]

    def _successors(self, gss_code: str, on: date) -> tuple[Org, ...]:
        if gss_code in COUNCIL_SUCCESSIONS:
            took_over, successors = COUNCIL_SUCCESSIONS[gss_code]
            if on >= took_over:
                return tuple(self._successor(code) for code in successors)
        found = self._councils().get(gss_code)
        return (found,) if found else ()

    def council_successors(self, gss_code: str, on: date) -> tuple[Org, ...]:
        return tuple(o for o in self._successors(gss_code, on) if o.kind != COUNCIL_WITHOUT_GSS)

    def council_successors_without_gss(self, gss_code: str, on: date) -> tuple[Org, ...]:
        return tuple(o for o in self._successors(gss_code, on) if o.kind == COUNCIL_WITHOUT_GSS)

    def is_known_council_code(self, gss_code: str) -> bool:
        return gss_code in self._councils()

    def _ccg_in_place(self, code: str, on: date) -> str:
        while code in CCG_MERGES and on >= CCG_MERGES[code][0]:
            code = CCG_MERGES[code][1]
        return code

    def _org_at(self, code: str, on: date) -> Org:
        """The body a commissioner code names on a date: CCG, or sub-ICB location from 1 July 2022."""
        if code in ICBS:
            return Org(code, ICBS[code], "icb")
        if on >= ICB_START and code in SICBL_TO_ICB:
            return Org(code, f"{ICBS[SICBL_TO_ICB[code]]} - {code}", "sub-icb")
        return Org(code, CCGS[code], "ccg")

    def commissioner_successor(self, org_code: str, as_of: date) -> Org | None:
        if org_code in ICBS:
            return Org(org_code, ICBS[org_code], "icb")
        if org_code not in CCGS:
            return None
        current = self._ccg_in_place(org_code, as_of)
        if as_of >= ICB_START:
            icb = SICBL_TO_ICB[current]
            return Org(icb, ICBS[icb], "icb")
        return Org(current, CCGS[current], "ccg")

    def practice_commissioner(self, practice_ods: str, on: date, as_of: date) -> CommissionerResolution | None:
        history = PRACTICES.get(practice_ods)
        if history is None:
            return None
        code = None
        for since, commissioner in history:
            if on >= since:
                code = commissioner
        if code is None:
            return None
        at_date = self._org_at(code, on)
        successor = self.commissioner_successor(code, as_of)
        assert successor is not None
        trail = f"{practice_ods} -> {code} on {on.isoformat()} -> {successor.code} on {as_of.isoformat()}"
        return CommissionerResolution(at_date=at_date, successor=successor, trail=trail)

    def is_known_practice(self, practice_ods: str) -> bool:
        return practice_ods in PRACTICES

    def council_commissioner(self, gss_code: str, as_of: date) -> Org | None:
        ccg = COUNCIL_TO_CCG.get(gss_code)
        return self.commissioner_successor(ccg, as_of) if ccg else None

    def hospital(self, ods_code: str) -> Org | None:
        found = HOSPITALS.get(ods_code)
        return found[0] if found else None

    def hospital_council_gss(self, ods_code: str) -> str | None:
        found = HOSPITALS.get(ods_code)
        return found[1] if found else None

    def hospital_trust(self, ods_code: str) -> str | None:
        # The ODS rule (hub/refdata/loader.py): a known site's first three characters are its trust.
        return ods_code[:3] if ods_code[:3] in HOSPITALS else None

    def bank_holidays(self) -> frozenset[date]:
        return BANK_HOLIDAYS

    def nhs_england(self) -> Org:
        return NHS_ENGLAND
