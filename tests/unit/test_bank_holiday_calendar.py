"""The bank holiday calendar the working-day clocks count with (hub/refdata/bank_holidays.py): the
shipped one (2018-2027) with an operator's copy of GOV.UK's bank-holidays.json merged over it
(`S117_BANK_HOLIDAYS_FILE`), a file that cannot be read stopping the hub at start naming the element,
and a warning and a metric when the calendar runs out within half a year."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import httpx
import pytest

from hub.api.app import create_app
from hub.clients import add_client
from hub.observability.metrics import BANK_HOLIDAYS_COVERED_UNTIL
from hub.refdata.bank_holidays import CalendarError, covered_until, merged, read_govuk_file
from hub.refdata.loader import load_reference_data
from tests.conftest import test_settings as hub_settings


def _govuk(path: Path, england: list[str], scotland: tuple[str, ...] = ("2028-01-02",)) -> Path:
    """A file shaped as https://www.gov.uk/bank-holidays.json."""
    path.write_text(json.dumps({
        "england-and-wales": {"division": "england-and-wales", "events": [
            {"title": "a holiday", "date": d, "notes": "", "bunting": True} for d in england]},
        "scotland": {"division": "scotland", "events": [
            {"title": "2 January", "date": d, "notes": "", "bunting": True} for d in scotland]},
    }))
    return path


def test_the_files_years_replace_the_shipped_ones_and_other_years_stay(tmp_path: Path) -> None:
    shipped = load_reference_data().bank_holidays()
    assert date(2026, 12, 25) in shipped and date(2027, 12, 27) in shipped
    assert covered_until(shipped) == date(2027, 12, 31)
    published = read_govuk_file(_govuk(tmp_path / "bh.json", ["2027-01-01", "2027-06-07", "2028-01-03"]))
    assert published == {date(2027, 1, 1), date(2027, 6, 7), date(2028, 1, 3)}  # Scotland's left out
    calendar = merged(shipped, published)
    assert date(2027, 6, 7) in calendar and date(2028, 1, 3) in calendar
    assert date(2027, 12, 27) not in calendar  # 2027 is the file's now
    assert {d for d in calendar if d.year == 2026} == {d for d in shipped if d.year == 2026}
    assert covered_until(calendar) == date(2028, 12, 31)


@pytest.mark.parametrize(("content", "where"), [
    (b"\xff\xfe not json", "(file)"),
    (b"[]", "england-and-wales"),
    (json.dumps({"scotland": {"events": []}}).encode(), "england-and-wales"),
    (json.dumps({"england-and-wales": {"events": []}}).encode(), "england-and-wales.events"),
    (json.dumps({"england-and-wales": {"events": [{"date": "2028-01-03"}, {"date": "3/1/2028"}]}}).encode(),
     "england-and-wales.events[1].date"),
    (json.dumps({"england-and-wales": {"events": [{"date": "2028-02-30"}]}}).encode(),
     "england-and-wales.events[0].date"),
    (json.dumps({"england-and-wales": {"events": [{"title": "no date"}]}}).encode(),
     "england-and-wales.events[0].date"),
])
def test_a_file_that_is_not_govuks_document_is_refused_naming_the_element(tmp_path: Path, content: bytes,
                                                                          where: str) -> None:
    path = tmp_path / "bh.json"
    path.write_bytes(content)
    with pytest.raises(CalendarError) as refused:
        read_govuk_file(path)
    assert refused.value.where == where
    assert str(refused.value).startswith(f"S117_BANK_HOLIDAYS_FILE: {where}: ")


def test_a_missing_file_is_refused() -> None:
    with pytest.raises(CalendarError, match="cannot be read"):
        read_govuk_file(Path("/nonexistent/bank-holidays.json"))


async def _deadline(tmp_path: Path, **settings) -> str:  # noqa: ANN003
    """The register service level's deadline of a change notified on Friday 5 June 2026 (5 working
    days, Worcs 19.6), through the hub's own POST."""
    app = create_app(hub_settings(tmp_path, **settings))
    async with app.router.lifespan_context(app):
        key = (await add_client(app.state.hub.engine, "Oxford Health", "RNU", "trust", ["register:write"]))[1]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            r = await http.post("/v1/register-changes", headers={"X-API-Key": key}, json={
                "source_system": "RiO (demo)", "source_message_id": "bh-1", "change_type": "detained",
                "effective_date": "2026-06-03", "notified_on": "2026-06-05", "legal_status_code": "03",
                "hospital_ods": "RNU", "gp_practice_ods": "K81002", "residence_la_gss": "E06000060",
                "person": {"nhs_number": "9990001006", "given_name": "Test", "family_name": "Calendar"}})
    assert r.status_code == 202, r.text
    return r.json()["service_level"]["deadline"]


async def test_the_hub_counts_with_the_operators_file(tmp_path: Path) -> None:
    """A one-off holiday the file adds to 2026 (Monday 8 June, hypothetical) moves the deadline a day."""
    assert await _deadline(tmp_path / "shipped") == "2026-06-12"
    year = sorted(d.isoformat() for d in load_reference_data().bank_holidays() if d.year == 2026)
    path = _govuk(tmp_path / "bh.json", [*year, "2026-06-08", "2028-01-03"])
    assert await _deadline(tmp_path / "file", bank_holidays_file=path) == "2026-06-15"
    assert BANK_HOLIDAYS_COVERED_UNTIL._value.get() == 1861919999.999999  # 2028-12-31T23:59:59.999999Z


async def test_an_unreadable_file_stops_the_hub_at_start(tmp_path: Path) -> None:
    path = tmp_path / "bh.json"
    path.write_text("<html>not the file</html>")
    app = create_app(hub_settings(tmp_path, bank_holidays_file=path))
    with pytest.raises(CalendarError, match=r"S117_BANK_HOLIDAYS_FILE: \(file\): not JSON"):
        async with app.router.lifespan_context(app):
            pass


async def test_a_calendar_ending_within_half_a_year_is_warned_of(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """On 4 December 2026 the shipped calendar reaches the end of 2027, over half a year away; a
    file whose last year is 2026 leaves 27 days: the hub warns at start, naming the setting, and
    the metric says so."""
    path = _govuk(tmp_path / "bh.json", ["2026-12-25", "2026-12-28"])
    calendar = merged(frozenset({d for d in load_reference_data().bank_holidays() if d.year <= 2026}),
                      read_govuk_file(path))
    from hub.bootstrap import _report_calendar

    today = date(2026, 12, 4)
    _report_calendar(calendar, today)
    err = capsys.readouterr().err
    assert "bank holiday calendar ends soon" in err and "covered_until=2026-12-31" in err, err
    assert "days_left=27" in err and "S117_BANK_HOLIDAYS_FILE" in err
    assert BANK_HOLIDAYS_COVERED_UNTIL._value.get() == 1798761599.999999  # 2026-12-31T23:59:59.999999Z
    _report_calendar(load_reference_data().bank_holidays(), today)
    assert "ends soon" not in capsys.readouterr().err  # 2027-12-31: 392 days away
    _report_calendar(load_reference_data().bank_holidays(), date(2027, 7, 1))
    assert "days_left=183" not in capsys.readouterr().err
    _report_calendar(load_reference_data().bank_holidays(), date(2027, 7, 2))
    assert "days_left=182" in capsys.readouterr().err


def test_serve_with_an_unreadable_file_stops_with_one_line_naming_the_element(tmp_path: Path) -> None:
    """`s117hub serve` (a real process): exit 2 and one plain line, not a start-up traceback."""
    import os
    import subprocess
    import sys

    path = tmp_path / "bh.json"
    path.write_text(json.dumps({"england-and-wales": {"events": [{"date": "2028-01-03"}, {"date": "03/01/2028"}]}}))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("S117_")},
           "S117_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
           "S117_DATA_KEY_FILE": str(tmp_path / "data.key"), "S117_PORT": "0",
           "S117_BANK_HOLIDAYS_FILE": str(path)}
    done = subprocess.run([sys.executable, "-m", "hub.cli", "serve"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert ("s117hub serve: S117_BANK_HOLIDAYS_FILE: england-and-wales.events[1].date: must be a YYYY-MM-DD date"
            in done.stderr), done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
