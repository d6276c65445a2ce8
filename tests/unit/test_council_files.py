"""The council succession data kept current without a hub release (hub/refdata/council_files.py, hazard H-03):
mySociety's newer uk_local_authorities_current.csv named by S117_LOCAL_AUTHORITIES_FILE (with
S117_LOCAL_AUTHORITIES_AS_OF), read as published in place of the shipped one; the social services authorities
selected from it by the filter the shipped derived file was made with; a file that is not that format stops the
hub at start naming the setting and the line and column; its date a metric for S117ReferenceDataOld and a
warning at start when it is old. Real files in tmp dirs."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from hub.api.app import create_app
from hub.observability.metrics import REFERENCE_DATA_AS_OF
from hub.refdata.council_files import is_social_services_authority, read_local_authorities_file
from hub.refdata.loader import ReferenceSources, load_reference_data
from hub.refdata.ods_files import ReferenceFileError
from hub.refdata_retell import ReferenceDataRetell, seconds_until
from hub.settings import Settings
from hub.store.schema import operator_actions, register_status
from tests.conftest import test_settings as hub_settings
from tests.support import detention

DATA = Path(__file__).resolve().parents[2] / "hub" / "refdata" / "data"
SHIPPED = DATA / "mysociety_uk_local_authorities_current.csv"
BUCKS = "E06000060"  # Buckinghamshire Council (BUC), a unitary since 2020-04-01
SUCCESSOR = ("CHV", "E06000099", "Chiltern Vale")  # a council made by a reorganisation (fictional; no such code)
VESTING = "2026-04-01"
AS_OF = date(2026, 11, 1)


def _shipped_rows() -> list[list[str]]:
    with SHIPPED.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


def reorganised(path: Path, vesting: str = VESTING,
                successors: tuple[tuple[str, str, str], ...] = (SUCCESSOR,)) -> Path:
    """The shipped register as mySociety would publish it after a reorganisation: Buckinghamshire Council
    ended on 1 April 2026 (or `vesting`) and replaced by a new unitary, Chiltern Vale, from that day (or by
    `successors`: register code, GSS code, empty when ONS has not given one yet, and name)."""
    rows = _shipped_rows()
    at = {name: i for i, name in enumerate(rows[0])}
    bucks = None
    for r in rows[1:]:
        if r[at["gss-code"]] == BUCKS:
            bucks = list(r)
            r[at["end-date"]], r[at["current-authority"]] = vesting, "False"
            r[at["replaced-by"]] = ",".join(code for code, _, _ in successors)
    assert bucks is not None
    added = []
    for code, gss, name in successors:
        new = list(bucks)
        new[at["local-authority-code"]], new[at["gss-code"]], new[at["nice-name"]] = code, gss, name
        new[at["official-name"]], new[at["start-date"]], new[at["alt-names"]] = f"{name} Council", vesting, name
        if not gss:  # listed before ONS gives it a code: none of the codes that go with one either
            new[at["former-gss-codes"]] = ""
        added.append(new)
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([*rows, *added])
    return path


def test_the_filter_gives_the_shipped_social_services_authorities() -> None:
    """england_social_services_authorities.csv was derived from the mySociety file by this filter: the same
    161 codes (153 current, 8 former), so an operator's newer file gives the authorities the same way."""
    with (DATA / "england_social_services_authorities.csv").open(encoding="utf-8-sig", newline="") as f:
        derived = {r["gss_code"] for r in csv.DictReader(f)}
    with SHIPPED.open(encoding="utf-8-sig", newline="") as f:
        filtered = {r["gss-code"] for r in csv.DictReader(f) if is_social_services_authority(r)}
    assert len(derived) == 161
    assert filtered == derived
    ref = load_reference_data()  # the loader applies it: every derived code an SSA, no district one
    assert all(ref.is_known_council_code(code) for code in derived)
    assert not ref.is_known_council_code("E07000004")  # Aylesbury Vale, a district (abolished 2020)


def test_a_newer_register_names_the_successor_of_a_council_abolished_since(tmp_path: Path) -> None:
    shipped = load_reference_data()
    assert [o.code for o in shipped.council_successors(BUCKS, date(2026, 5, 1))] == [BUCKS]
    assert not shipped.is_known_council_code(SUCCESSOR[1])
    path = reorganised(tmp_path / "uk_local_authorities_current.csv")
    ref = load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))
    assert ref.is_known_council_code(SUCCESSOR[1])
    assert [(o.code, o.name) for o in ref.council_successors(BUCKS, date(2026, 5, 1))] == [
        (SUCCESSOR[1], SUCCESSOR[2])]
    assert [o.code for o in ref.council_successors(BUCKS, date(2026, 3, 31))] == [BUCKS]  # its last day
    # A code of before 2020 follows both reorganisations (Buckinghamshire CC -> Buckinghamshire -> Chiltern Vale).
    assert [o.code for o in ref.council_successors("E10000002", date(2026, 5, 1))] == [SUCCESSOR[1]]
    assert [o.code for o in ref.council_successors("E07000004", date(2026, 5, 1))] == [SUCCESSOR[1]]
    assert {(d.name, d.as_of, d.file) for d in ref.datasets() if d.name == "local-authorities"} == {
        ("local-authorities", AS_OF, str(path))}
    assert [d.as_of for d in shipped.datasets() if d.name == "local-authorities"] == [date(2025, 7, 10)]


OXFORDSHIRE = "E10000025"  # the council of the trust's hospital (RNU): coordinates


def _position(ref, on: date):  # noqa: ANN001, ANN202
    """The rules' answer on `on` for a person living in Buckinghamshire before a 2025 detention at RNU."""
    from hub.domain.agreements import AgreementBook
    from hub.domain.rules import evaluate
    from tests.unit.domain.builders import PERSON, detained, left

    changes = [detained("2025-01-06", residence_la_gss=BUCKS, gp_practice_ods="K82001", hospital_ods="RNU"),
               left("2025-04-07")]
    return evaluate(PERSON, changes, ref, AgreementBook.default(), on)


def test_a_successor_listed_without_a_gss_code_is_kept_and_named_never_taken_for_a_council(tmp_path: Path) -> None:
    """mySociety can list a new council before ONS gives it a GSS code (hazard H-03): the row is read and
    kept (an empty gss-code is allowed), the loader names it as a successor without a GSS code from its
    vesting day (never the abolished council, never "unknown"), and the rules leave the council
    undetermined naming it; the register giving it the code later makes it responsible."""
    from hub.domain.model import Org
    from hub.domain.ports import COUNCIL_WITHOUT_GSS
    from hub.domain.views import undetermined_bodies

    path = reorganised(tmp_path / "uk_local_authorities_current.csv", successors=(("CHV", "", "Chiltern Vale"),))
    register = read_local_authorities_file(path, AS_OF)
    [row] = [r for r in register.rows if r["local-authority-code"] == "CHV"]
    assert (row["gss-code"], row["nice-name"], row["start-date"]) == ("", "Chiltern Vale", VESTING)
    ref = load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))
    after, before = date(2026, 5, 1), date(2026, 3, 31)
    chiltern_vale = Org("CHV", "Chiltern Vale", COUNCIL_WITHOUT_GSS)
    for code in (BUCKS, "E10000002", "E07000004"):  # the council, its predecessor county, a former district
        assert ref.council_successors(code, after) == ()
        assert ref.council_successors_without_gss(code, after) == (chiltern_vale,)
        assert ref.council(code, after) is None
    assert [o.code for o in ref.council_successors(BUCKS, before)] == [BUCKS]
    assert ref.council_successors_without_gss(BUCKS, before) == ()
    assert date.fromisoformat(VESTING) in ref.succession_days()  # the re-tell runs again that day
    assert not ref.is_known_council_code("CHV")

    assert _position(ref, before).responsible_council.org.code == BUCKS
    status = _position(ref, after)
    assert status.responsible_council is None and status.coordinating_council.org.code == OXFORDSHIRE
    [item] = undetermined_bodies(status)
    assert "Buckinghamshire (E06000060), is now Chiltern Vale (register code CHV, no GSS code yet)" in item["reason"]
    assert "S117_LOCAL_AUTHORITIES_FILE" in item["reason"] and "unknown council" not in item["reason"]

    later = reorganised(tmp_path / "later.csv")  # the register giving Chiltern Vale its GSS code
    ref = load_reference_data(ReferenceSources(local_authorities_file=later, local_authorities_as_of=AS_OF))
    assert _position(ref, after).responsible_council.org.code == SUCCESSOR[1]


def test_a_split_with_one_successor_without_a_gss_code_names_no_council_alone(tmp_path: Path) -> None:
    """Buckinghamshire split between North Chiltern (a GSS code) and South Chiltern (listed without one): the
    successor with a code is not taken for the council of the whole area."""
    from hub.domain.views import undetermined_bodies

    path = reorganised(tmp_path / "uk_local_authorities_current.csv",
                       successors=(("NCH", "E06000099", "North Chiltern"), ("SCH", "", "South Chiltern")))
    ref = load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))
    after = date(2026, 5, 1)
    assert [o.code for o in ref.council_successors(BUCKS, after)] == ["E06000099"]
    assert [o.code for o in ref.council_successors_without_gss(BUCKS, after)] == ["SCH"]
    assert ref.council(BUCKS, after) is None
    status = _position(ref, after)
    assert status.responsible_council is None and status.coordinating_council.org.code == OXFORDSHIRE
    [item] = undetermined_bodies(status)
    assert ("split between North Chiltern (E06000099) / South Chiltern (register code SCH, no GSS code yet)"
            in item["reason"])


HEAD = ",".join(_shipped_rows()[0])


def _row(**cells: str) -> str:
    """One row of mySociety's layout: Buckinghamshire's, with `cells` (column name -> value) in place."""
    rows = _shipped_rows()
    at = {name: i for i, name in enumerate(rows[0])}
    row = next(list(r) for r in rows[1:] if r[at["gss-code"]] == BUCKS)
    for name, value in cells.items():
        row[at[name.replace("_", "-")]] = value
    return ",".join(f'"{c}"' for c in row)


GOOD = _row()


@pytest.mark.parametrize(("text", "where"), [
    ("", "(file)"),
    (HEAD.replace("replaced-by", "successor") + "\n" + GOOD + "\n", "line 1"),  # a column the loader reads
    (HEAD + "\n", "(file)"),
    (f"{HEAD}\n{GOOD}\n{GOOD},extra\n", "line 3"),
    (f"{HEAD}\n{_row(local_authority_code='buc')}\n", "line 2, column local-authority-code"),
    (f"{HEAD}\n{GOOD}\n{_row(gss_code='E06000099')}\n", "line 3, column local-authority-code"),  # BUC twice
    (f"{HEAD}\n{_row(gss_code='E6000060')}\n", "line 2, column gss-code"),
    (f"{HEAD}\n{_row(end_date='31/03/2026')}\n", "line 2, column end-date"),
    (f"{HEAD}\n{_row(start_date='2020-04-31')}\n", "line 2, column start-date"),
    (f"{HEAD}\n{_row(former_gss_codes='E10000002;E07000004')}\n", "line 2, column former-gss-codes"),
    (f"{HEAD}\n{_row(end_date='2026-04-01', replaced_by='CHV')}\n", "line 2, column replaced-by"),  # not a row
    (f"{HEAD}\n{_row(local_authority_type='NMD', county_la='BKM')}\n", "line 2, column county-la"),
    (f"{HEAD}\n{_row(nice_name='')}\n", "line 2, column nice-name"),
    (f"{HEAD}\n{_row(nation='Wales', local_authority_type='WPA')}\n", "(file)"),  # no English SSA
])
def test_a_register_not_in_mysocietys_format_is_refused_naming_the_setting_and_line(tmp_path: Path, text: str,
                                                                                    where: str) -> None:
    path = tmp_path / "uk_local_authorities_current.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ReferenceFileError) as refused:
        read_local_authorities_file(path, AS_OF)
    assert refused.value.where == where
    assert str(refused.value).startswith(f"S117_LOCAL_AUTHORITIES_FILE: {where}: ")


def test_a_register_not_utf8_or_missing_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "uk_local_authorities_current.csv"
    path.write_bytes(f"{HEAD}\n{GOOD}\n".encode() + _row(nice_name="Buckingham\xe9").encode("latin-1") + b"\n")
    with pytest.raises(ReferenceFileError, match=r"^S117_LOCAL_AUTHORITIES_FILE: line 3: not UTF-8"):
        read_local_authorities_file(path, AS_OF)
    with pytest.raises(ReferenceFileError, match=r"^S117_LOCAL_AUTHORITIES_FILE: \(file\): cannot be read"):
        read_local_authorities_file(tmp_path / "missing.csv", AS_OF)


def test_the_register_needs_its_date_and_not_one_in_the_future(tmp_path: Path) -> None:
    path = tmp_path / "uk_local_authorities_current.csv"
    with pytest.raises(ValidationError, match="S117_LOCAL_AUTHORITIES_AS_OF .* is required with "
                                              "S117_LOCAL_AUTHORITIES_FILE"):
        Settings(local_authorities_file=path)
    with pytest.raises(ValidationError, match="S117_LOCAL_AUTHORITIES_AS_OF dates S117_LOCAL_AUTHORITIES_FILE"):
        Settings(local_authorities_as_of=AS_OF)
    with pytest.raises(ValidationError, match="S117_LOCAL_AUTHORITIES_AS_OF is in the future"):
        Settings(local_authorities_file=path, local_authorities_as_of=date(2999, 1, 1))
    assert Settings(local_authorities_file=path, local_authorities_as_of=AS_OF).local_authorities_as_of == AS_OF


async def test_the_hub_starts_with_the_operators_register_and_refuses_a_malformed_one(tmp_path: Path) -> None:
    path = reorganised(tmp_path / "uk_local_authorities_current.csv")
    app = create_app(hub_settings(tmp_path / "good", local_authorities_file=path, local_authorities_as_of=AS_OF))
    async with app.router.lifespan_context(app):
        assert app.state.hub.ref.council(BUCKS, date(2026, 5, 1)).code == SUCCESSOR[1]
    assert REFERENCE_DATA_AS_OF.labels(dataset="local-authorities")._value.get() == 1793491200.0  # 2026-11-01
    bad = tmp_path / "bad.csv"
    bad.write_text(f"{HEAD}\n{GOOD}\n{_row(local_authority_code='CHV', end_date='2026-04-01', replaced_by='XYZ')}\n",
                   encoding="utf-8")
    app = create_app(hub_settings(tmp_path / "bad", local_authorities_file=bad, local_authorities_as_of=AS_OF))
    with pytest.raises(ReferenceFileError, match=r"^S117_LOCAL_AUTHORITIES_FILE: line 3, column replaced-by: XYZ"):
        async with app.router.lifespan_context(app):
            pass


def test_serve_with_a_malformed_register_stops_with_one_line_naming_the_setting_and_line(tmp_path: Path) -> None:
    """`s117hub serve` (a real process): exit 2 and one plain line, not a start-up traceback."""
    path = tmp_path / "uk_local_authorities_current.csv"
    path.write_text(f"{HEAD}\n{GOOD}\n{_row(local_authority_code='CHV', end_date='1 April 2026')}\n",
                    encoding="utf-8")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("S117_")},
           "S117_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
           "S117_DATA_KEY_FILE": str(tmp_path / "data.key"), "S117_PORT": "0",
           "S117_LOCAL_AUTHORITIES_FILE": str(path), "S117_LOCAL_AUTHORITIES_AS_OF": "2026-11-01"}
    done = subprocess.run([sys.executable, "-m", "hub.cli", "serve"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert ("s117hub serve: S117_LOCAL_AUTHORITIES_FILE: line 3, column end-date: not a date YYYY-MM-DD"
            in done.stderr), done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr


def test_an_old_register_is_warned_of_at_start_and_its_date_exported(capsys) -> None:  # noqa: ANN001
    """On 5 December 2026 the shipped register (mySociety, 10 July 2025) is 513 days old: past 120."""
    from hub.bootstrap import _report_reference_data

    datasets = load_reference_data().datasets()
    _report_reference_data(datasets, 120, date(2026, 12, 5))
    lines = [line for line in capsys.readouterr().err.splitlines()
             if "reference data older" in line and "dataset=local-authorities" in line]
    assert len(lines) == 1
    assert "as_of=2025-07-10" in lines[0] and "age_days=513" in lines[0]
    assert "setting=S117_LOCAL_AUTHORITIES_FILE" in lines[0] and "council" in lines[0]
    assert REFERENCE_DATA_AS_OF.labels(dataset="local-authorities")._value.get() == 1752105600.0  # 2025-07-10
    _report_reference_data(datasets, 513, date(2026, 12, 5))
    assert "dataset=local-authorities" not in capsys.readouterr().err


async def test_a_successor_taking_over_after_the_register_is_loaded_is_told_on_its_vesting_day(app_hub,
                                                                                               tmp_path: Path):
    """A register naming a reorganisation still to come (Buckinghamshire replaced from 1 April 2027) loaded on
    31 March moves nobody; on 1 April the pass runs again (the latest succession in effect is part of the data's
    fingerprint) and the person's council moves to the successor, once. The back workers wait for that day
    (`next_succession`, `seconds_until`) with no restart. Real SQLite, the hub in-process, a clock the test sets."""
    for change in detention("9990000018", "vest", given_name="Ada", family_name="Lovelace"):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
        assert r.status_code == 202, r.text
    path = reorganised(tmp_path / "uk_local_authorities_current.csv", vesting="2027-04-01")
    ref = load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))
    day = [date(2027, 3, 31)]
    retell = ReferenceDataRetell(app_hub.hub.engine, ref, app_hub.hub.agreements, today=lambda: day[0])

    async def held() -> str:
        async with app_hub.hub.engine.connect() as conn:
            return (await conn.execute(select(register_status.c.council_code))).scalar_one()

    assert await retell.run_once() == 0 and await held() == BUCKS  # loaded the day before: nobody moves yet
    loaded = hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(SHIPPED.read_bytes())  # replaced on disk while the hub runs: not the data in use
    assert retell.next_succession(day[0]) == date(2027, 4, 1)
    # 23:00 BST on 31 March is 22:00 UTC: the workers wake at England's midnight, an hour later.
    assert seconds_until(date(2027, 4, 1), datetime(2027, 3, 31, 22, 0, tzinfo=UTC)) == 3600.0
    day[0] = date(2027, 4, 1)
    assert await retell.run_once() == 1 and await held() == SUCCESSOR[1]
    async with app_hub.hub.engine.connect() as conn:
        recorded = (await conn.execute(select(operator_actions.c.detail).where(
            operator_actions.c.action == "reference-data-in-use").order_by(operator_actions.c.action_id))).scalars().all()
    assert [r["successions_from"] for r in recorded] == ["2023-04-01", "2027-04-01"]
    assert {d["sha256"] for r in recorded for d in r["datasets"] if d["dataset"] == "local-authorities"} == {loaded}
    assert await retell.run_once() == 0  # the same data, the same day: nobody again
    assert retell.next_succession(day[0]) is None  # nothing more to wait for


async def test_the_workers_loop_waits_for_each_vesting_day_and_tries_again_after_a_failure(monkeypatch) -> None:  # noqa: ANN001
    """`run_reference_data_retell` (the back workers' task): a pass at start; then, while the data names a
    succession still to come, a wait until England's midnight of that day (never longer than
    LOOK_AGAIN_SECONDS: a wall clock set meanwhile is seen) and another pass; a pass that fails (the store
    unavailable) is tried again after RETRY_SECONDS; nothing left to wait for, the task ends; a stop ends it
    while it waits."""
    import asyncio

    from hub import refdata_retell

    waited: list[float] = []
    real_pause = refdata_retell.pause

    async def pause(stop: asyncio.Event, seconds: float) -> bool:
        waited.append(seconds)
        return await real_pause(stop, 0)

    class Retell:
        def __init__(self, plan: list) -> None:  # noqa: ANN001
            self.plan, self.passes = plan, 0

        def today(self) -> date:
            return date(2027, 3, 31)

        async def run_once(self) -> int:
            self.passes += 1
            step = self.plan.pop(0)
            if isinstance(step, Exception):
                raise step
            self._next = step
            return 0

        def next_succession(self, today: date) -> date | None:
            return self._next

    monkeypatch.setattr(refdata_retell, "pause", pause)
    monkeypatch.setattr(refdata_retell, "seconds_until", lambda day: {date(2027, 4, 1): 3600.0,
                                                                       date(2028, 4, 1): 9e6}[day])
    retell = Retell([date(2027, 4, 1), OSError("store unavailable"), date(2028, 4, 1), None])
    await asyncio.wait_for(refdata_retell.run_reference_data_retell(retell, asyncio.Event()), 5)
    assert retell.passes == 4
    assert waited == [3600.0, refdata_retell.RETRY_SECONDS, refdata_retell.LOOK_AGAIN_SECONDS]

    stop = asyncio.Event()

    async def stopping(stop_: asyncio.Event, seconds: float) -> bool:
        stop_.set()
        return True

    monkeypatch.setattr(refdata_retell, "pause", stopping)
    retell = Retell([date(2027, 4, 1), date(2027, 4, 1)])
    await asyncio.wait_for(refdata_retell.run_reference_data_retell(retell, stop), 5)
    assert retell.passes == 1  # stopped while waiting: no second pass
