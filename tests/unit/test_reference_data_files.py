"""The GP practice reference data kept current without a hub release (hub/refdata/ods_files.py, hazard H-03):
NHS England's newer ODS epraccur.csv and gp-reg-pat-prac-map.csv named by settings, in the formats NHS
England publishes them, in place of the shipped ones; a file that is not that format stops the hub at start
naming the setting and the line and column; each dataset's date a metric for S117ReferenceDataOld (tested
by promtool in tests/unit/test_alert_rules.py) and a warning at start when it is old. Real files in tmp dirs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from hub.api.app import create_app
from hub.observability.metrics import REFERENCE_DATA_AS_OF, REFERENCE_DATA_MAX_AGE
from hub.refdata.loader import SHIPPED_EPRACCUR, ReferenceSources, load_reference_data
from hub.refdata.ods_files import ReferenceFileError, read_epraccur_file, read_practice_map_file
from hub.settings import Settings
from tests.conftest import test_settings as hub_settings

DATA = Path(__file__).resolve().parents[2] / "hub" / "refdata" / "data"
NEW_PRACTICE = "Y99001"  # in none of the shipped files
MOVED_PRACTICE = "A81001"  # The Densham Surgery: sub-ICB location 16C of North East and North Cumbria ICB (QHM)
ON = date(2026, 11, 2)


def _epraccur_row(code: str, commissioner: str, icb: str, prescribing: str = "4", close: str = "") -> list[str]:
    """A row as ODS epraccur.csv has it: 27 columns, no header."""
    row = [""] * 27
    row[0], row[1], row[2], row[3], row[9], row[10] = code, "A NEW SURGERY", "Y63", icb, "TS18 1AA", "20260601"
    row[11], row[12], row[13], row[14], row[25] = close, "A" if not close else "C", "B", commissioner, prescribing
    return row


def _newer_epraccur(path: Path, extra: list[list[str]], moved_to: str | None = None) -> Path:
    """The shipped epraccur with `extra` rows after it (and MOVED_PRACTICE's commissioner `moved_to`), quoted
    as NHS England writes it."""
    with (DATA / SHIPPED_EPRACCUR).open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    if moved_to:
        for r in rows:
            if r[0] == MOVED_PRACTICE:
                r[14] = r[23] = moved_to
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(rows + extra)
    return path


def test_a_newer_epraccur_names_the_sub_icb_and_icb_of_a_practice_the_shipped_data_lacks(tmp_path: Path) -> None:
    shipped = load_reference_data()
    assert not shipped.is_known_practice(NEW_PRACTICE)
    assert shipped.practice_commissioner(NEW_PRACTICE, ON, ON) is None
    path = _newer_epraccur(tmp_path / "epraccur.csv", [_epraccur_row(NEW_PRACTICE, "16C", "QHM")])
    ref = load_reference_data(ReferenceSources(epraccur_file=path, epraccur_as_of=date(2026, 11, 1)))
    assert ref.is_known_practice(NEW_PRACTICE)
    found = ref.practice_commissioner(NEW_PRACTICE, ON, ON)
    assert (found.at_date.code, found.successor.code) == ("16C", "QHM")
    assert "ODS epraccur November 2026" in found.trail
    assert {(d.name, d.as_of, d.file) for d in ref.datasets()} == {
        ("ods-epraccur", date(2026, 11, 1), str(path)), ("gp-practice-map", date(2025, 10, 1), None),
        ("local-authorities", date(2025, 7, 10), None)}  # the councils' register as shipped (test_council_files.py)


def test_a_practice_that_moved_sub_icb_is_named_by_the_newer_file(tmp_path: Path) -> None:
    """The shipped map (October 2025) names QHM; a newer epraccur (November 2026) that has the practice under
    Lancashire and South Cumbria's 00Q is asked first, being the more recent."""
    assert load_reference_data().practice_commissioner(MOVED_PRACTICE, ON, ON).successor.code == "QHM"
    path = _newer_epraccur(tmp_path / "epraccur.csv", [], moved_to="00Q")
    newer = load_reference_data(ReferenceSources(epraccur_file=path, epraccur_as_of=date(2026, 11, 1)))
    assert newer.practice_commissioner(MOVED_PRACTICE, ON, ON).successor.code == "QE1"
    older = load_reference_data(ReferenceSources(epraccur_file=path, epraccur_as_of=date(2025, 9, 1)))
    assert older.practice_commissioner(MOVED_PRACTICE, ON, ON).successor.code == "QHM"  # the map is newer


def test_a_newer_map_brings_its_sub_icb_locations_and_icbs(tmp_path: Path) -> None:
    """An ICB formed since (a merger: a new code) and its sub-ICB location, from the operator's map alone."""
    with (DATA / "gp-reg-pat-prac-map_2025-10.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    at = {name: head.index(name) for name in head}
    for r in rows[1:]:
        r[at["EXTRACT_DATE"]] = "01Nov2026"
        if r[at["PRACTICE_CODE"]] == MOVED_PRACTICE:
            r[at["SUB_ICB_LOCATION_CODE"]], r[at["SUB_ICB_LOCATION_NAME"]] = "99Z", "NHS Merged ICB - 99Z"
            r[at["ICB_CODE"]], r[at["ICB_NAME"]] = "QZZ", "NHS Merged Integrated Care Board"
    path = tmp_path / "gp-reg-pat-prac-map.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\r\n").writerows(rows)
    ref = load_reference_data(ReferenceSources(practice_map_file=path))
    found = ref.practice_commissioner(MOVED_PRACTICE, ON, ON)
    assert (found.at_date.code, found.successor.code, found.successor.name) == (
        "99Z", "QZZ", "NHS Merged Integrated Care Board")
    assert [d.as_of for d in ref.datasets() if d.name == "gp-practice-map"] == [date(2026, 11, 1)]
    assert ref.commissioner_successor("16C", ON).code == "QHM"  # the shipped table's others kept


def _lines(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


GOOD = ",".join(f'"{c}"' for c in _epraccur_row(NEW_PRACTICE, "16C", "QHM"))


@pytest.mark.parametrize(("text", "where"), [
    ("", "(file)"),
    (f"{GOOD}\r\n\"A1\",\"too few\"\r\n", "line 2"),
    ("\"Organisation Code\"" + ",\"x\"" * 26 + "\r\n", "line 1, column 1"),  # a header row: epraccur has none
    (f"{GOOD}\r\n" + GOOD.replace('"Y99001"', '"Y9901"'), "line 2, column 1"),
    (f"{GOOD}\r\n{GOOD}\r\n" + GOOD.replace('"16C"', '""', 1), "line 3, column 15"),
    (GOOD.replace('"4",""', '"four",""'), "line 1, column 26"),
    (",".join(f'"{c}"' for c in _epraccur_row(NEW_PRACTICE, "16C", "QHM", close="20261301")), "line 1, column 12"),
    (",".join(f'"{c}"' for c in _epraccur_row("Y99002", "16C", "QHM", prescribing="0")), "(file)"),  # no practice
])
def test_an_epraccur_not_in_ods_format_is_refused_naming_the_setting_and_line(tmp_path: Path, text: str,
                                                                              where: str) -> None:
    with pytest.raises(ReferenceFileError) as refused:
        read_epraccur_file(_lines(tmp_path / "epraccur.csv", text), date(2026, 11, 1))
    assert refused.value.where == where
    assert str(refused.value).startswith(f"S117_ODS_EPRACCUR_FILE: {where}: ")


def test_bytes_that_are_not_utf8_are_named_by_their_line(tmp_path: Path) -> None:
    path = tmp_path / "epraccur.csv"
    path.write_bytes(f"{GOOD}\r\n".encode() + b'"Y99002","CAF\xc9"' + b',""' * 25 + b"\r\n")
    with pytest.raises(ReferenceFileError, match=r"^S117_ODS_EPRACCUR_FILE: line 2: not UTF-8"):
        read_epraccur_file(path, date(2026, 11, 1))
    with pytest.raises(ReferenceFileError, match=r"^S117_ODS_EPRACCUR_FILE: \(file\): cannot be read"):
        read_epraccur_file(tmp_path / "missing.csv", date(2026, 11, 1))


MAP_HEAD = ("PUBLICATION,EXTRACT_DATE,PRACTICE_CODE,PRACTICE_NAME,PRACTICE_POSTCODE,PCN_CODE,PCN_NAME,"
            "ONS_SUB_ICB_LOCATION_CODE,SUB_ICB_LOCATION_CODE,SUB_ICB_LOCATION_NAME,ONS_ICB_CODE,ICB_CODE,ICB_NAME,"
            "ONS_COMM_REGION_CODE,COMM_REGION_CODE,COMM_REGION_NAME,SUPPLIER_NAME")
MAP_ROW = ("GP_PRAC_PAT_LIST,01Nov2026,A81001,THE DENSHAM SURGERY,TS18 1HU,U89141,STOCKTON PCN,E38000247,16C,"
           "NHS North East and North Cumbria ICB - 16C,E54000050,QHM,NHS North East and North Cumbria Integrated "
           "Care Board,E40000012,Y63,North East and Yorkshire,TPP")


@pytest.mark.parametrize(("text", "where"), [
    ("", "(file)"),
    (MAP_HEAD.replace("SUB_ICB_LOCATION", "CCG") + "\r\n", "line 1"),  # the CCG era's map
    (MAP_HEAD + "\r\n", "(file)"),
    (f"{MAP_HEAD}\r\n{MAP_ROW}\r\n{MAP_ROW.replace('01Nov2026', '01Dec2026')}\r\n", "line 3, column EXTRACT_DATE"),
    (f"{MAP_HEAD}\r\n{MAP_ROW.replace('01Nov2026', '2026-11-01')}\r\n", "line 2, column EXTRACT_DATE"),
    (f"{MAP_HEAD}\r\n{MAP_ROW.replace(',QHM,', ',,')}\r\n", "line 2, column ICB_CODE"),
    (f"{MAP_HEAD}\r\n{MAP_ROW},extra\r\n", "line 2"),
])
def test_a_map_not_in_nhs_englands_format_is_refused_naming_the_setting_and_line(tmp_path: Path, text: str,
                                                                                  where: str) -> None:
    with pytest.raises(ReferenceFileError) as refused:
        read_practice_map_file(_lines(tmp_path / "map.csv", text))
    assert refused.value.where == where
    assert str(refused.value).startswith(f"S117_GP_PRACTICE_MAP_FILE: {where}: ")


def test_epraccur_needs_its_date_and_not_one_in_the_future(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="S117_ODS_EPRACCUR_AS_OF .* is required with S117_ODS_EPRACCUR_FILE"):
        Settings(ods_epraccur_file=tmp_path / "epraccur.csv")
    with pytest.raises(ValidationError, match="in the future"):
        Settings(ods_epraccur_file=tmp_path / "epraccur.csv", ods_epraccur_as_of=date(2999, 1, 1))


async def test_the_hub_starts_with_the_operators_file_and_refuses_a_malformed_one(tmp_path: Path) -> None:
    path = _newer_epraccur(tmp_path / "epraccur.csv", [_epraccur_row(NEW_PRACTICE, "16C", "QHM")])
    app = create_app(hub_settings(tmp_path / "good", ods_epraccur_file=path, ods_epraccur_as_of=date(2026, 11, 1)))
    async with app.router.lifespan_context(app):
        assert app.state.hub.ref.practice_commissioner(NEW_PRACTICE, ON, ON).successor.code == "QHM"
    assert REFERENCE_DATA_AS_OF.labels(dataset="ods-epraccur")._value.get() == 1793491200.0  # 2026-11-01T00:00Z
    bad = _lines(tmp_path / "bad.csv", f"{GOOD}\r\n{GOOD}\r\n\"A81001\",\"cut short\"\r\n")
    app = create_app(hub_settings(tmp_path / "bad", ods_epraccur_file=bad, ods_epraccur_as_of=date(2026, 11, 1)))
    with pytest.raises(ReferenceFileError, match=r"^S117_ODS_EPRACCUR_FILE: line 3: 2 columns"):
        async with app.router.lifespan_context(app):
            pass


def test_serve_with_a_malformed_file_stops_with_one_line_naming_the_setting_and_line(tmp_path: Path) -> None:
    """`s117hub serve` (a real process): exit 2 and one plain line, not a start-up traceback."""
    path = _lines(tmp_path / "map.csv", f"{MAP_HEAD}\r\n{MAP_ROW}\r\n{MAP_ROW.replace('A81001', 'A-1')}\r\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("S117_")},
           "S117_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
           "S117_DATA_KEY_FILE": str(tmp_path / "data.key"), "S117_PORT": "0",
           "S117_GP_PRACTICE_MAP_FILE": str(path)}
    done = subprocess.run([sys.executable, "-m", "hub.cli", "serve"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert ("s117hub serve: S117_GP_PRACTICE_MAP_FILE: line 3, column PRACTICE_CODE: not an ODS code"
            in done.stderr), done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr


def test_an_old_dataset_is_warned_of_at_start_and_its_date_exported(capsys) -> None:  # noqa: ANN001
    """On 5 December 2026 the shipped epraccur (January 2024) is 1,069 days old and the map (October 2025) 430:
    both past 120 days. Codes and dates only."""
    from hub.bootstrap import _report_reference_data

    datasets = load_reference_data().datasets()
    _report_reference_data(datasets, 120, date(2026, 12, 5))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "reference data older" in line]
    assert len(lines) == 3, err  # the third, the councils' register: tests/unit/test_council_files.py
    assert "dataset=ods-epraccur" in lines[0] and "as_of=2024-01-01" in lines[0] and "age_days=1069" in lines[0]
    assert "setting=S117_ODS_EPRACCUR_FILE" in lines[0] and "max_age_days=120" in lines[0]
    assert "dataset=gp-practice-map" in lines[1] and "as_of=2025-10-01" in lines[1] and "age_days=430" in lines[1]
    assert "setting=S117_GP_PRACTICE_MAP_FILE" in lines[1]
    assert REFERENCE_DATA_AS_OF.labels(dataset="ods-epraccur")._value.get() == 1704067200.0  # 2024-01-01T00:00Z
    assert REFERENCE_DATA_AS_OF.labels(dataset="gp-practice-map")._value.get() == 1759276800.0  # 2025-10-01
    assert REFERENCE_DATA_MAX_AGE._value.get() == 120 * 86400
    _report_reference_data(datasets, 430, date(2026, 12, 5))  # the map is 430 days old: not older than that
    err = capsys.readouterr().err
    assert "dataset=ods-epraccur" in err and "dataset=gp-practice-map" not in err
