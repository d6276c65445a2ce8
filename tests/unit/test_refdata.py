"""PublicReferenceData against real codes; expected answers read from the data files.

No network, nothing outside the repository.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from importlib import resources
from pathlib import Path

import pytest

from hub.domain.model import Org
from hub.domain.ports import ReferenceData
from hub.refdata.loader import PublicReferenceData, load_reference_data

D = date
TODAY = D(2025, 11, 1)


@pytest.fixture(scope="module")
def rd() -> PublicReferenceData:
    return load_reference_data()


def test_loader_is_cached_and_implements_the_port(rd: PublicReferenceData) -> None:
    assert load_reference_data() is rd
    port_methods = {
        n for n in vars(ReferenceData) if not n.startswith("_") and callable(getattr(ReferenceData, n))
    }
    assert port_methods  # the Protocol declares its methods
    for name in port_methods:
        assert callable(getattr(rd, name)), name



# ------------------------------------------------------------ legal status
def test_legal_status_qualifying_and_padding(rd: PublicReferenceData) -> None:
    s3 = rd.legal_status("03")
    assert s3 is not None and s3.s117_qualifying == "yes" and s3.detained
    assert rd.legal_status("3") == s3
    assert rd.legal_status(" 03 ") == s3


@pytest.mark.parametrize(
    ("code", "qualifying", "detained"),
    [
        ("01", "no", False),  # informal
        ("02", "no", True),  # s2
        ("10", "yes", True),  # s37
        ("37", "yes", True),  # s45A
        ("31", "review", True),  # CP(I)A 1964: depends on the order
        ("35", "no", False),  # guardianship s7 (England; CTO only in the Wales list)
        ("98", "no", False),
        ("99", "no", False),
    ],
)
def test_legal_status_rows(rd: PublicReferenceData, code: str, qualifying: str, detained: bool) -> None:
    ls = rd.legal_status(code)
    assert ls is not None
    assert (ls.code, ls.s117_qualifying, ls.detained) == (code, qualifying, detained)


def test_legal_status_unknown(rd: PublicReferenceData) -> None:
    assert rd.legal_status("11") is None  # there is no code 11
    assert rd.legal_status("17A") is None
    assert rd.legal_status("") is None


# ---------------------------------------------------------------- councils
BUCKS = Org("E06000060", "Buckinghamshire", "council")
CUMBERLAND = Org("E06000063", "Cumberland", "council")
WESTMORLAND = Org("E06000064", "Westmorland and Furness", "council")


def test_bucks_county_council_succeeded_by_unitary(rd: PublicReferenceData) -> None:
    assert rd.council("E10000002", D(2020, 3, 31)) == Org("E10000002", "Buckinghamshire County", "council")
    assert rd.council("E10000002", D(2020, 4, 1)) == BUCKS
    assert rd.council_successors("E10000002", TODAY) == (BUCKS,)


def test_cumbria_split(rd: PublicReferenceData) -> None:
    assert rd.council("E10000006", D(2023, 3, 31)) == Org("E10000006", "Cumbria", "council")
    assert rd.council("E10000006", D(2023, 4, 1)) is None
    assert rd.council_successors("E10000006", D(2023, 4, 1)) == (CUMBERLAND, WESTMORLAND)


def test_northamptonshire_split(rd: PublicReferenceData) -> None:
    assert rd.council("E10000021", D(2021, 3, 31)) is not None
    assert rd.council("E10000021", D(2021, 4, 1)) is None
    assert {o.code for o in rd.council_successors("E10000021", D(2021, 4, 1))} == {"E06000061", "E06000062"}


def test_other_successions(rd: PublicReferenceData) -> None:
    assert rd.council("E10000023", TODAY).code == "E06000065"  # North Yorkshire
    assert rd.council("E10000027", TODAY).code == "E06000066"  # Somerset
    assert rd.council("E06000028", TODAY).code == "E06000058"  # Bournemouth -> BCP
    assert rd.council("E10000009", TODAY).code == "E06000059"  # Dorset CC -> Dorset Council


def test_current_council_and_recoded_gss(rd: PublicReferenceData) -> None:
    assert rd.council("E09000015", TODAY) == Org("E09000015", "Harrow", "council")
    assert rd.council("e10000034", TODAY).name == "Worcestershire"
    # Northumberland's and Gateshead's pre-2013 codes
    assert rd.council("E06000048", TODAY).code == "E06000057"
    assert rd.council("E08000020", TODAY).code == "E08000037"


def test_district_codes_resolve_to_their_social_services_authority(rd: PublicReferenceData) -> None:
    assert rd.council("E07000004", D(2019, 1, 1)).code == "E10000002"  # Aylesbury Vale in Bucks CC
    assert rd.council("E07000004", D(2021, 1, 1)) == BUCKS
    assert rd.council("E07000026", D(2022, 1, 1)).code == "E10000006"  # Allerdale in Cumbria
    assert rd.council("E07000026", D(2024, 1, 1)) == CUMBERLAND
    assert rd.council("E07000237", TODAY).code == "E10000034"  # Worcester in Worcestershire


def test_unknown_council(rd: PublicReferenceData) -> None:
    assert rd.council("E99999999", TODAY) is None
    assert rd.council_successors("E99999999", TODAY) == ()
    assert not rd.is_known_council_code("E99999999")
    assert not rd.is_known_council_code("S12000034")  # Scottish
    for code in ("E06000060", "E10000002", "E10000006", "E06000048"):
        assert rd.is_known_council_code(code)
    assert not rd.is_known_council_code("E07000004")  # a district: resolvable, but not an SSA


def test_every_authority_resolves(rd: PublicReferenceData) -> None:
    ssas = [c for c in rd._councils.values() if c.ssa]
    assert len(ssas) == 161  # 153 current + 8 former
    for c in ssas:
        assert rd.is_known_council_code(c.gss)
        assert rd.council_successors(c.gss, TODAY), c.gss
        icb = rd.council_commissioner(c.gss, TODAY)
        assert icb is not None and icb.kind == "icb", c.gss
        ccg = rd.council_commissioner(c.gss, D(2021, 1, 1))
        assert ccg is not None and ccg.kind == "ccg", c.gss
    current = {o.code for c in ssas for o in rd.council_successors(c.gss, TODAY)}
    assert len(current) == 153


# ----------------------------------------------------------- commissioners
QHM = Org("QHM", "NHS North East and North Cumbria Integrated Care Board", "icb")


def test_practice_in_ccg_era(rd: PublicReferenceData) -> None:
    r = rd.practice_commissioner("A81001", D(2021, 5, 1), TODAY)
    assert r is not None
    assert r.at_date == Org("16C", "NHS Tees Valley CCG", "ccg")
    assert r.successor == QHM
    assert r.trail == (
        "practice A81001 in NHS Tees Valley CCG (16C) on 2021-05-01; 16C became sub-ICB "
        "location 16C of NHS North East and North Cumbria ICB (QHM) on 2022-07-01"
    )


def test_practice_either_side_of_1_july_2022(rd: PublicReferenceData) -> None:
    before = rd.practice_commissioner("A81001", D(2022, 6, 30), TODAY)
    after = rd.practice_commissioner("a81001", D(2022, 7, 1), TODAY)
    assert before is not None and after is not None
    assert before.at_date.kind == "ccg" and before.at_date.code == "16C"
    assert after.at_date == Org("16C", "NHS North East and North Cumbria ICB - 16C", "sub-icb")
    assert before.successor == after.successor == QHM


def test_practice_successor_before_icbs_is_the_ccg(rd: PublicReferenceData) -> None:
    r = rd.practice_commissioner("A81001", D(2021, 5, 1), D(2022, 1, 1))
    assert r is not None and r.successor == r.at_date == Org("16C", "NHS Tees Valley CCG", "ccg")


def test_glossop_practice_follows_the_practice_to_derbyshire(rd: PublicReferenceData) -> None:
    r = rd.practice_commissioner("C81081", D(2021, 5, 1), TODAY)
    assert r is not None
    assert r.at_date.code == "01Y"
    assert r.successor.code == "QJ2"
    assert "15M" in r.trail
    # the CCG code as a whole went to Greater Manchester
    assert rd.commissioner_successor("01Y", TODAY).code == "QOP"


def test_west_birmingham_practice_follows_the_practice(rd: PublicReferenceData) -> None:
    r = rd.practice_commissioner("M85009", D(2021, 5, 1), TODAY)
    assert r is not None
    assert (r.at_date.code, r.successor.code) == ("D2P2L", "QHL")
    assert rd.commissioner_successor("D2P2L", TODAY).code == "QUA"


def test_practice_closed_before_2022_uses_epraccur(rd: PublicReferenceData) -> None:
    # B85011 closed 2018-11-30 under NHS Greater Huddersfield CCG (03A), which
    # merged into NHS Kirklees CCG (X2C4Y) in April 2021, now West Yorkshire ICB.
    assert rd.is_known_practice("B85011")
    r = rd.practice_commissioner("B85011", D(2018, 6, 1), TODAY)
    assert r is not None
    assert r.at_date == Org("03A", "NHS Greater Huddersfield CCG", "ccg")
    assert r.successor.code == "QWO"
    mid = rd.practice_commissioner("B85011", D(2018, 6, 1), D(2021, 6, 1))
    assert mid is not None and mid.successor == Org("X2C4Y", "NHS Kirklees CCG", "ccg")


def test_practice_closed_before_2022_with_unresolvable_commissioner(rd: PublicReferenceData) -> None:
    # A81003 closed 2017 under 00K (a pre-2020 CCG not in any staged lookup)
    assert rd.is_known_practice("A81003")
    assert rd.practice_commissioner("A81003", D(2016, 1, 1), TODAY) is None


def test_unknown_practice(rd: PublicReferenceData) -> None:
    assert not rd.is_known_practice("ZZZ999")
    assert rd.practice_commissioner("ZZZ999", D(2021, 1, 1), TODAY) is None


def test_trails_carry_no_names_of_people(rd: PublicReferenceData) -> None:
    r = rd.practice_commissioner("A81001", D(2021, 5, 1), TODAY)
    assert r is not None and "DENSHAM" not in r.trail.upper()  # not even the practice name


def test_every_practice_in_the_maps_resolves(rd: PublicReferenceData) -> None:
    for p in rd._prac25:
        r = rd.practice_commissioner(p, TODAY, TODAY)
        assert r is not None and r.at_date.kind == "sub-icb" and r.successor.kind == "icb", p
    for p in rd._prac22:
        r = rd.practice_commissioner(p, D(2021, 6, 1), TODAY)
        assert r is not None and r.at_date.kind == "ccg" and r.successor.kind == "icb", p
        assert rd.practice_commissioner(p, D(2023, 6, 1), TODAY) is not None, p


def test_every_ccg_code_reaches_one_of_the_42_icbs(rd: PublicReferenceData) -> None:
    icbs = set()
    for code in [*rd._ccg20, *rd._ccg21]:
        org = rd.commissioner_successor(code, TODAY)
        assert org is not None and org.kind == "icb", code
        icbs.add(org.code)
    assert len(icbs) == 42


@pytest.mark.parametrize(
    ("code", "on", "expected"),
    [
        ("16C", D(2022, 6, 30), Org("16C", "NHS Tees Valley CCG", "ccg")),
        ("16C", D(2022, 7, 1), QHM),
        ("QHM", D(2022, 7, 1), QHM),
        ("08V", D(2021, 3, 31), Org("08V", "NHS Tower Hamlets CCG", "ccg")),
        ("08V", D(2021, 4, 1), Org("A3A8R", "NHS North East London CCG", "ccg")),
        ("08V", D(2022, 7, 1), Org("QMF", "NHS North East London Integrated Care Board", "icb")),
        ("02Q", TODAY, Org("QT1", "NHS Nottingham and Nottinghamshire Integrated Care Board", "icb")),
        ("X24", TODAY, Org("X24", "NHS England", "nhs-england")),
    ],
)
def test_commissioner_successor(rd: PublicReferenceData, code: str, on: date, expected: Org) -> None:
    assert rd.commissioner_successor(code, on) == expected


def test_commissioner_successor_sub_icb_and_unknown(rd: PublicReferenceData) -> None:
    assert rd.commissioner_successor("15M", TODAY).code == "QJ2"
    assert rd.commissioner_successor("00K", TODAY) is None
    assert rd.commissioner_successor("NOPE", TODAY) is None


@pytest.mark.parametrize(
    ("gss", "icb"),
    [
        ("E06000060", "QU9"),  # Buckinghamshire
        ("E10000002", "QU9"),  # Bucks CC (former): its successor's area
        ("E10000034", "QGH"),  # Worcestershire
        ("E09000015", "QRV"),  # Harrow
        ("E08000025", "QHL"),  # Birmingham
        ("E06000063", "QHM"),  # Cumberland
        ("E06000064", "QE1"),  # Westmorland and Furness
        ("E06000065", "QOQ"),  # North Yorkshire (2023)
        ("E07000037", "QJ2"),  # High Peak district, incl. Glossop
    ],
)
def test_council_commissioner(rd: PublicReferenceData, gss: str, icb: str) -> None:
    org = rd.council_commissioner(gss, TODAY)
    assert org is not None and (org.code, org.kind) == (icb, "icb")


def test_council_commissioner_before_icbs(rd: PublicReferenceData) -> None:
    assert rd.council_commissioner("E09000030", D(2021, 1, 1)) == Org("08V", "NHS Tower Hamlets CCG", "ccg")
    assert rd.council_commissioner("E09000030", D(2022, 1, 1)) == Org("A3A8R", "NHS North East London CCG", "ccg")
    assert rd.council_commissioner("E99999999", TODAY) is None


def test_practice_commissioner_is_remembered_per_practice_and_dates() -> None:
    """Asked again with the same practice and dates, the same answer without resolving it again;
    another date, or another spelling of the code, is resolved on its own (to the same body)."""
    fresh = PublicReferenceData()
    resolved = []
    ccg_era = fresh._practice_ccg_era
    fresh._practice_ccg_era = lambda p, on, as_of: resolved.append((p, on, as_of)) or ccg_era(p, on, as_of)
    first = fresh.practice_commissioner("A81001", D(2021, 5, 1), TODAY)
    assert fresh.practice_commissioner("A81001", D(2021, 5, 1), TODAY) is first
    assert resolved == [("A81001", D(2021, 5, 1), TODAY)]
    assert fresh.practice_commissioner("a81001", D(2021, 5, 1), TODAY) == first
    assert fresh.practice_commissioner("A81001", D(2021, 5, 1), D(2022, 1, 1)) == \
        PublicReferenceData().practice_commissioner("A81001", D(2021, 5, 1), D(2022, 1, 1))
    assert len(resolved) == 3
    assert fresh.practice_commissioner("Z99999", D(2021, 5, 1), TODAY) is None
    assert fresh.practice_commissioner("Z99999", D(2021, 5, 1), TODAY) is None


def test_council_commissioner_is_remembered_per_code_and_date() -> None:
    """Asked again, the same answer (the same object, not walked again); another date is its own answer."""
    fresh = PublicReferenceData()
    walks = []
    walk = fresh._council_commissioner
    fresh._council_commissioner = lambda gss, on: walks.append((gss, on)) or walk(gss, on)
    first = fresh.council_commissioner("E09000030", D(2021, 1, 1))
    assert fresh.council_commissioner("E09000030", D(2021, 1, 1)) is first
    assert walks == [("E09000030", D(2021, 1, 1))]
    assert fresh.council_commissioner("E09000030", D(2022, 1, 1)) == Org("A3A8R", "NHS North East London CCG", "ccg")
    assert fresh.council_commissioner("E09000030", D(2021, 1, 1)) == Org("08V", "NHS Tower Hamlets CCG", "ccg")
    assert fresh.council_commissioner("E99999999", TODAY) is None
    assert fresh.council_commissioner("E99999999", TODAY) is None


# ------------------------------------------------------------------ others
def test_hospitals(rd: PublicReferenceData) -> None:
    assert rd.hospital("RXT") == Org("RXT", "Birmingham and Solihull Mental Health NHS Foundation Trust", "trust")
    assert rd.hospital_council_gss("rxt") == "E08000025"
    assert rd.hospital_council_gss("R1A") == "E10000034"
    assert rd.hospital("XXX") is None and rd.hospital_council_gss("XXX") is None
    assert len(rd._hospitals) == 11
    for code in rd._hospitals:
        gss = rd.hospital_council_gss(code)
        assert gss is not None and rd.is_known_council_code(gss), code
        assert rd.council(gss, TODAY) == rd.council(gss, date.min), code  # a current council


def test_nhs_england(rd: PublicReferenceData) -> None:
    assert rd.nhs_england() == Org("X24", "NHS England", "nhs-england")


def test_bank_holidays(rd: PublicReferenceData) -> None:
    bh = rd.bank_holidays()
    assert isinstance(bh, frozenset) and len(bh) == 83
    assert D(2022, 9, 19) in bh  # State Funeral
    assert D(2023, 5, 8) in bh  # Coronation
    assert D(2025, 12, 25) in bh and D(2025, 12, 26) in bh
    assert D(2025, 11, 30) not in bh  # St Andrew's Day: Scotland only
    assert all(d.weekday() < 5 for d in bh)


# -------------------------------------------------------------- provenance
DATA = Path(str(resources.files("hub.refdata").joinpath("data")))


def _listed_hashes() -> dict[str, str]:
    text = (DATA / "PROVENANCE.md").read_text(encoding="utf-8")
    return dict((m[2], m[1]) for m in re.finditer(r"^([0-9a-f]{64})  (\S+)$", text, re.M))


def test_every_data_file_is_listed_in_provenance_with_its_sha256() -> None:
    listed = _listed_hashes()
    present = {
        p.name for p in DATA.iterdir() if p.is_file() and p.name not in {"PROVENANCE.md", ".gitattributes"}
    }
    assert present == set(listed), "PROVENANCE.md sha256sums and hub/refdata/data disagree"
    for name in sorted(present):
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == listed[name], name
    # every file also has a provenance table row
    text = (DATA / "PROVENANCE.md").read_text(encoding="utf-8")
    for name in present:
        assert f"| {name} |" in text, name


def test_loader_reads_only_the_package() -> None:
    src = Path(str(resources.files("hub.refdata").joinpath("loader.py"))).read_text(encoding="utf-8")
    assert "../shared" not in src and "/work/" not in src and "__file__" not in src


def test_practice_before_the_2021_mergers_says_the_ccg_is_the_merged_one(rd: PublicReferenceData) -> None:
    # F82001 is in NHS North East London CCG (A3A8R, formed 1 April 2021) in the 2022 map
    r = rd.practice_commissioner("F82001", D(2019, 1, 1), TODAY)
    assert r is not None and r.at_date.code == "A3A8R" and r.successor.code == "QMF"
    assert "formed on 2021-04-01" in r.trail
    later = rd.practice_commissioner("F82001", D(2021, 6, 1), TODAY)
    assert later is not None and "formed on" not in later.trail


def test_the_trust_that_runs_a_hospital_follows_the_ods_site_rule(rd: PublicReferenceData) -> None:
    assert rd.hospital_trust("RNU") == "RNU"
    assert rd.hospital_trust("rnu01") == "RNU"  # a site: its first three characters are the trust
    assert rd.hospital_trust("R1A07") == "R1A"
    assert rd.hospital("RNU01").kind == "site" and rd.hospital_council_gss("RNU01") == "E10000025"
    assert rd.hospital_trust("ZZZ01") is None  # a site of a trust the hub does not know
    assert rd.hospital_trust("K82001") is None  # a GP practice is no hospital
