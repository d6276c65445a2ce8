"""Review 36: the operator's council register (S117_LOCAL_AUTHORITIES_FILE, hub/refdata/council_files.py) whose
successions do not end. A register in which authorities replace one another in a cycle (an edit gone wrong: the
unitary given its predecessor as `replaced-by`), or a chain longer than the loader follows, was taken at start
and left each council on it with no council in place: Buckinghamshire named an unknown council, silently, for
everyone living there. Now refused at start as any malformed register is: one line naming the setting, the line
and the column. Real files in tmp dirs, the real loader."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest

from hub.refdata.council_files import MAX_SUCCESSIONS, read_local_authorities_file
from hub.refdata.loader import ReferenceSources, load_reference_data
from hub.refdata.ods_files import ReferenceFileError

SHIPPED = Path(__file__).resolve().parents[2] / "hub" / "refdata" / "data" / "mysociety_uk_local_authorities_current.csv"
BUCKS = "E06000060"  # Buckinghamshire Council (BUC), since 2020-04-01, replacing the county council BKM
AS_OF = date(2026, 11, 1)


def register(path: Path, changes: dict[str, dict[str, str]], extra: list[dict[str, str]] = ()) -> tuple[Path, dict]:
    """The shipped register with the rows named by local-authority-code changed (column -> value), and `extra`
    rows (Buckinghamshire's row with those cells) added; returns the path and each code's line."""
    with SHIPPED.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    at = {name: i for i, name in enumerate(rows[0])}
    bucks = next(r for r in rows[1:] if r[at["gss-code"]] == BUCKS)
    for cells in extra:
        row = list(bucks)
        for name, value in cells.items():
            row[at[name]] = value
        rows.append(row)
    for r in rows[1:]:
        for name, value in changes.get(r[at["local-authority-code"]], {}).items():
            r[at[name]] = value
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return path, {r[at["local-authority-code"]]: n for n, r in enumerate(rows[1:], start=2)}


def test_a_register_whose_councils_replace_one_another_in_a_cycle_is_refused_naming_the_line(tmp_path: Path):
    path, line = register(tmp_path / "la.csv", {"BUC": {"end-date": "2026-03-31", "replaced-by": "BKM"}})
    with pytest.raises(ReferenceFileError) as refused:
        load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))
    where = refused.value.where
    assert where in (f"line {line['BUC']}, column replaced-by", f"line {line['BKM']}, column replaced-by"), where
    assert str(refused.value).startswith(f"S117_LOCAL_AUTHORITIES_FILE: {where}: the authorities ")
    assert "in a cycle" in str(refused.value) and "BKM" in str(refused.value) and "BUC" in str(refused.value)


def test_a_council_replaced_by_itself_is_refused(tmp_path: Path):
    path, line = register(tmp_path / "la.csv", {"BUC": {"end-date": "2026-03-31", "replaced-by": "BUC"}})
    with pytest.raises(ReferenceFileError) as refused:
        read_local_authorities_file(path, AS_OF)
    assert refused.value.where == f"line {line['BUC']}, column replaced-by"
    assert "BUC, BUC replace one another in a cycle" in str(refused.value)


def test_a_chain_of_successions_longer_than_the_loader_follows_is_refused(tmp_path: Path):
    # BUC -> X1 -> X2 ... -> X9: nine successions, each a fictional unitary replacing the one before.
    n = MAX_SUCCESSIONS + 1
    extra = [{"local-authority-code": f"XA{i}", "gss-code": f"E0699990{i}", "nice-name": f"Vale {i}",
              "start-date": f"{2030 + i}-04-01", "end-date": f"{2031 + i}-03-31" if i < n else "",
              "replaced-by": f"XA{i + 1}" if i < n else ""} for i in range(1, n + 1)]
    path, line = register(tmp_path / "la.csv", {"BUC": {"end-date": "2031-03-31", "replaced-by": "XA1"}}, extra)
    with pytest.raises(ReferenceFileError) as refused:
        read_local_authorities_file(path, AS_OF)
    assert refused.value.where.endswith("column replaced-by")
    assert f"a chain of more than {MAX_SUCCESSIONS} successions" in str(refused.value)
    # The longest chain the loader follows (from the county and its districts: BKM -> BUC -> XA3 ... XA9, eight
    # successions): taken, and the last council named. (BUC ending the day before XA3 starts: dates at odds are
    # refused too, tests/unit/test_council_succession_dates.py.)
    path, _ = register(tmp_path / "ok.csv", {"BUC": {"end-date": "2033-03-31", "replaced-by": "XA3"}}, extra[2:])
    ref = load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))
    assert ref.council(BUCKS, date(2045, 1, 1)).code == f"E0699990{n}"
    assert ref.council("E10000002", date(2045, 1, 1)).code == f"E0699990{n}"  # the county: eight


def test_the_shipped_register_and_a_reorganisation_still_load(tmp_path: Path):
    path, _ = register(tmp_path / "la.csv", {})
    ref = load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))
    assert ref.council("E10000002", date(2026, 1, 1)).code == BUCKS
