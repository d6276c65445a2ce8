"""The hospital sites file (hub/refdata/data/hospital_sites.csv, operator configuration) checked at start
against the register of local authorities in use (hazard H-03): a site naming a council abolished on or
before the day is a warning at start naming the site's ODS code, the council's code, its successors and the
file to update (codes only), once per start and from the front only, and a gauge for the alert
S117HospitalSiteCouncilAbolished. The shipped data gives none."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

from hub.api.app import create_app
from hub.observability.metrics import HOSPITAL_SITES_ABOLISHED_COUNCILS
from hub.refdata.loader import ReferenceSources, load_reference_data
from tests.conftest import test_settings as hub_settings

DATA = Path(__file__).resolve().parents[2] / "hub" / "refdata" / "data"
SHIPPED = DATA / "mysociety_uk_local_authorities_current.csv"
OXFORDSHIRE = "E10000025"  # the council hospital_sites.csv names for Oxford Health (RNU)
WORCESTERSHIRE = "E10000034"  # the council it names for Herefordshire and Worcestershire (R1A)
# Fictional successors (no such councils or codes): register code, GSS code (empty: none yet), name.
NORTH_OXON = ("NOX", "E06000091", "North Oxfordshire")
SOUTH_OXON = ("OXS", "", "South Oxfordshire Unitary")
WYRE = ("WYV", "E06000092", "Wyre and Malvern")
AS_OF = date(2026, 11, 1)
TODAY = date(2026, 12, 5)


def _gauge() -> float:
    return HOSPITAL_SITES_ABOLISHED_COUNCILS._value.get()


def reorganised(path: Path, changes: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]]) -> Path:
    """The shipped register as mySociety would publish it after reorganisations: each council (GSS code)
    of `changes` ended on its vesting day and replaced by its successors from that day."""
    with SHIPPED.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    at = {name: i for i, name in enumerate(rows[0])}
    added = []
    for r in rows[1:]:
        if r[at["gss-code"]] in changes:
            vesting, successors = changes[r[at["gss-code"]]]
            old = list(r)
            r[at["end-date"]], r[at["current-authority"]] = vesting, "False"
            r[at["replaced-by"]] = ",".join(code for code, _, _ in successors)
            for code, gss, name in successors:
                new = list(old)
                new[at["local-authority-code"]], new[at["gss-code"]], new[at["nice-name"]] = code, gss, name
                new[at["official-name"]], new[at["start-date"]], new[at["alt-names"]] = f"{name} Council", vesting, name
                new[at["former-gss-codes"]] = ""
                added.append(new)
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([*rows, *added])
    return path


def _ref(tmp_path: Path, changes) -> object:  # noqa: ANN001
    path = reorganised(tmp_path / "uk_local_authorities_current.csv", changes)
    return load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "hospital site names an abolished council" in line]


def test_the_shipped_sites_name_no_abolished_council(capsys) -> None:  # noqa: ANN001
    """`make run` (the demo) and a hub with the shipped files: no site names a council abolished by the shipped
    register, today or years on."""
    from hub.bootstrap import _report_hospital_sites

    ref = load_reference_data()
    assert ref.hospital_sites_naming_abolished_councils(TODAY) == ()
    assert ref.hospital_sites_naming_abolished_councils(date(2035, 1, 1)) == ()
    _report_hospital_sites(ref.hospital_sites_naming_abolished_councils(TODAY))
    assert _gauge() == 0 and _warnings(capsys.readouterr().err) == []


def test_a_site_naming_an_abolished_council_is_warned_of_with_its_successors_and_counted(tmp_path: Path,
                                                                                          capsys) -> None:  # noqa: ANN001
    from hub.bootstrap import _report_hospital_sites

    ref = _ref(tmp_path, {OXFORDSHIRE: ("2026-04-01", (NORTH_OXON, SOUTH_OXON)),
                          WORCESTERSHIRE: ("2026-04-01", (WYRE,))})
    found = ref.hospital_sites_naming_abolished_councils(TODAY)
    assert [(s.ods_code, s.council_gss, s.abolished_on, [o.code for o in s.successors], s.followed)
            for s in found] == [("R1A", WORCESTERSHIRE, date(2026, 4, 1), [WYRE[1]], True),
                                ("RNU", OXFORDSHIRE, date(2026, 4, 1), [NORTH_OXON[1], SOUTH_OXON[0]], False)]
    _report_hospital_sites(found)
    assert _gauge() == 2
    lines = _warnings(capsys.readouterr().err)
    assert len(lines) == 2  # one a site, once
    [rnu] = [line for line in lines if "site=RNU" in line]
    for words in ("site=RNU", f"council={OXFORDSHIRE}", "abolished_on=2026-04-01",
                  f"successors='{NORTH_OXON[1]},OXS (no GSS code yet)'", "none: no coordinating council",
                  "file=hub/refdata/data/hospital_sites.csv", "warning"):
        assert words in rnu, words
    assert "[redacted]" not in rnu
    [r1a] = [line for line in lines if "site=R1A" in line]
    assert f"successors={WYRE[1]}" in r1a and "the successor (followed)" in r1a
    # A worker process the front started: the count alike, no warning (the front's to say, once).
    _report_hospital_sites(found, warn=False)
    assert _gauge() == 2 and _warnings(capsys.readouterr().err) == []


def test_a_council_still_to_be_abolished_is_not_warned_of(tmp_path: Path) -> None:
    ref = _ref(tmp_path, {OXFORDSHIRE: ("2027-04-01", (NORTH_OXON, SOUTH_OXON))})
    assert ref.hospital_sites_naming_abolished_councils(date(2027, 3, 31)) == ()  # its last day
    [site] = ref.hospital_sites_naming_abolished_councils(date(2027, 4, 1))
    assert site.ods_code == "RNU"


async def test_the_hub_warns_at_start_and_sets_the_gauge(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = reorganised(tmp_path / "uk_local_authorities_current.csv",
                       {OXFORDSHIRE: ("2026-04-01", (NORTH_OXON, SOUTH_OXON))})
    app = create_app(hub_settings(tmp_path / "hub", local_authorities_file=path, local_authorities_as_of=AS_OF))
    async with app.router.lifespan_context(app):
        pass
    assert _gauge() == 1
    [line] = _warnings(capsys.readouterr().err)
    assert "site=RNU" in line and f"council={OXFORDSHIRE}" in line and "[redacted]" not in line
