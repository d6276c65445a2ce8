"""The day of a council's succession, as the register gives it (hub/refdata/council_files.py, hazard H-03).

A council abolished in a reorganisation names its successors in `replaced-by`; the loader dates the succession
by the council's `end-date` and its successors' `start-date` (hub/refdata/loader.py `_load_councils`: the day
after the end date, or the successors' start, which wins). A register giving neither left the succession
undated and the abolished council named for good, told to no one after it was gone; a register whose dates
disagree (the successor starting days after the council ended, or before it ended, or the successors on
different days) was dated by the earliest of them, silently. Both are refused at start now, as a cycle of
`replaced-by` is: one line naming the setting, the line and the column, and what is missing or at odds. Every
version of mySociety's register published gives both dates, the successor's start the council's end date or
the day after; those, and either date alone, load as before. Real files in tmp dirs, the real loader."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from hub.refdata.council_files import read_local_authorities_file
from hub.refdata.loader import ReferenceSources, load_reference_data
from hub.refdata.ods_files import ReferenceFileError

SHIPPED = Path(__file__).resolve().parents[2] / "hub" / "refdata" / "data" / "mysociety_uk_local_authorities_current.csv"
BUCKS = "E06000060"  # Buckinghamshire Council (BUC), a unitary since 2020-04-01
CHV = "E06000099"  # Chiltern Vale (CHV), a fictional unitary replacing it (no such code)
WCV = "E06000098"  # Wycombe Vale (WCV), a second fictional one, for a split
AS_OF = date(2026, 11, 1)


def register(path: Path, bucks_end: str, starts: dict[str, str]) -> tuple[Path, dict[str, int]]:
    """The shipped register with Buckinghamshire Council ended on `bucks_end` (empty: no end date) and replaced
    by the fictional unitaries `starts` names (CHV, WCV: each code -> its start-date, empty for none); returns
    the path and each code's line."""
    with SHIPPED.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    at = {name: i for i, name in enumerate(rows[0])}
    bucks = next(r for r in rows[1:] if r[at["gss-code"]] == BUCKS)
    gss = {"CHV": CHV, "WCV": WCV}
    for code, start in starts.items():
        new = list(bucks)
        new[at["local-authority-code"]], new[at["gss-code"]], new[at["nice-name"]] = code, gss[code], f"Vale {code}"
        new[at["start-date"]], new[at["former-gss-codes"]] = start, ""
        rows.append(new)
    bucks[at["end-date"]], bucks[at["replaced-by"]] = bucks_end, ",".join(starts)
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return path, {r[at["local-authority-code"]]: n for n, r in enumerate(rows[1:], start=2)}


def load(path: Path):  # noqa: ANN201
    return load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))


def test_a_succession_with_neither_the_end_date_nor_a_successors_start_date_is_refused_naming_the_line(
        tmp_path: Path) -> None:
    path, line = register(tmp_path / "la.csv", "", {"CHV": ""})
    with pytest.raises(ReferenceFileError) as refused:
        load(path)
    assert refused.value.where == f"line {line['BUC']}, column end-date"
    message = str(refused.value)
    assert message.startswith(f"S117_LOCAL_AUTHORITIES_FILE: line {line['BUC']}, column end-date: ")
    assert "BUC is replaced by CHV" in message
    assert "an end-date for BUC or a start-date for CHV" in message and f"(line {line['CHV']})" in message
    assert "\n" not in message
    # A split, neither successor dated: the same, naming both.
    path, line = register(tmp_path / "split.csv", "", {"CHV": "", "WCV": ""})
    with pytest.raises(ReferenceFileError) as refused:
        read_local_authorities_file(path, AS_OF)
    assert refused.value.where == f"line {line['BUC']}, column end-date"
    assert "a start-date for CHV (line" in str(refused.value) and "WCV (line" in str(refused.value)


@pytest.mark.parametrize(("bucks_end", "starts"), [
    ("2027-03-31", {"CHV": ""}),  # the end date alone: the successor from the day after it
    ("", {"CHV": "2027-04-01"}),  # the successor's start alone
    ("", {"CHV": "2027-04-01", "WCV": ""}),  # one successor of a split dated
])
def test_either_date_alone_dates_the_succession_and_neither_is_refused(tmp_path: Path, bucks_end: str,
                                                                      starts: dict[str, str]) -> None:
    ref = load(register(tmp_path / "la.csv", bucks_end, starts)[0])
    assert ref.council(BUCKS, date(2027, 3, 31)).code == BUCKS
    after = ref.council(BUCKS, date(2027, 4, 1))  # a split: no council alone
    assert (after is None) if len(starts) > 1 else (after.code == CHV)
    assert date(2027, 4, 1) in ref.succession_days()
    # The same register without the date that dated it: refused.
    undated = register(tmp_path / "undated.csv", "", dict.fromkeys(starts, ""))[0]
    with pytest.raises(ReferenceFileError, match=r"column end-date: BUC is replaced by CHV"):
        read_local_authorities_file(undated, AS_OF)


@pytest.mark.parametrize("bucks_end", ["2027-03-31", "2027-04-01"])  # mySociety's two ways: last day, first day
def test_the_end_date_the_day_before_the_successors_start_or_on_it_is_the_normal_case(tmp_path: Path,
                                                                                     bucks_end: str) -> None:
    ref = load(register(tmp_path / "la.csv", bucks_end, {"CHV": "2027-04-01"})[0])
    assert ref.council(BUCKS, date(2027, 3, 31)).code == BUCKS
    assert ref.council(BUCKS, date(2027, 4, 1)).code == CHV
    # Nor a day either side: the successor starting two days after the council ended, or the council ending
    # after its successor started, says two different vesting days.
    for end, at_odds in (("2027-03-30", "2 days after"), ("2027-04-02", "before it ends")):
        path, line = register(tmp_path / f"{end}.csv", end, {"CHV": "2027-04-01"})
        with pytest.raises(ReferenceFileError) as refused:
            load(path)
        assert refused.value.where == f"line {line['BUC']}, column end-date"
        message = str(refused.value)
        assert f"BUC ends on {end} but its successor CHV (line {line['CHV']}) starts on 2027-04-01, " \
               f"{at_odds}" in message, message
        assert "the day before its successor starts or that day" in message


def test_successors_starting_on_different_days_are_refused(tmp_path: Path) -> None:
    path, line = register(tmp_path / "la.csv", "2027-03-31", {"CHV": "2027-04-01", "WCV": "2028-04-01"})
    with pytest.raises(ReferenceFileError) as refused:
        load(path)
    assert refused.value.where == f"line {line['BUC']}, column replaced-by"
    assert (f"the successors of BUC start on different days: CHV on 2027-04-01 (line {line['CHV']}), "
            f"WCV on 2028-04-01 (line {line['WCV']})") in str(refused.value)
    # Both on one day: a split, undetermined from that day (H-03), as before.
    ref = load(register(tmp_path / "ok.csv", "2027-03-31", {"CHV": "2027-04-01", "WCV": "2027-04-01"})[0])
    assert ref.council(BUCKS, date(2027, 3, 31)).code == BUCKS
    assert ref.council(BUCKS, date(2027, 4, 1)) is None
    assert {o.code for o in ref.council_successors(BUCKS, date(2027, 4, 1))} == {CHV, WCV}


def test_serve_with_an_undated_succession_stops_with_one_line_naming_the_setting_and_line(tmp_path: Path) -> None:
    """`s117hub serve` (a real process): exit 2 and one plain line, not a start-up traceback."""
    path, line = register(tmp_path / "uk_local_authorities_current.csv", "", {"CHV": ""})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("S117_")},
           "S117_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
           "S117_DATA_KEY_FILE": str(tmp_path / "data.key"), "S117_PORT": "0",
           "S117_LOCAL_AUTHORITIES_FILE": str(path), "S117_LOCAL_AUTHORITIES_AS_OF": "2026-11-01"}
    done = subprocess.run([sys.executable, "-m", "hub.cli", "serve"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [x for x in done.stderr.splitlines() if x.startswith("s117hub serve: ")]
    assert errors == [f"s117hub serve: S117_LOCAL_AUTHORITIES_FILE: line {line['BUC']}, column end-date: "
                      f"BUC is replaced by CHV but gives no end-date, nor CHV a start-date: the day its "
                      f"successor takes over cannot be told (an end-date for BUC or a start-date for CHV "
                      f"(line {line['CHV']}) is needed)"], done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr

