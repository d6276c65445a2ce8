"""The register's day is the calendar day in England, not UTC's.

From late March to late October England is an hour ahead of UTC: between midnight and 01:00 BST the
UTC date is still yesterday's. The hub took "today" as UTC's date, so a change a trust recorded at
00:30 BST on 1 June, effective that day, was refused "effective_date is in the future" and, effective
the day before, recorded as received on 31 May (a working day earlier on the 5-working-day clock); an
agreement beginning on 1 June was not in force until 01:00. Every "today" now comes from one clock,
`hub.domain.dates.england_day`, which these tests move."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

import hub.domain.dates as dates
from hub.domain.dates import england_day
from hub.sharing import SharingAgreements
from hub.store.schema import service_levels
from tests.support import detention

# 00:30 on Monday 1 June 2026 in England (BST, UTC+1): still Sunday 31 May in UTC.
JUST_AFTER_MIDNIGHT_BST = datetime(2026, 5, 31, 23, 30, tzinfo=UTC)


def _clock_at(monkeypatch: pytest.MonkeyPatch, at: datetime) -> None:
    """The hub's clock (`england_day`'s `now`) at the instant `at`; nothing else in the process moves."""

    class _At(datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206
            return at.astimezone(tz) if tz is not None else at.replace(tzinfo=None)

    monkeypatch.setattr(dates, "datetime", _At)


@pytest.mark.parametrize(("at", "day"), [
    (JUST_AFTER_MIDNIGHT_BST, date(2026, 6, 1)),                      # BST: an hour ahead of UTC
    (datetime(2026, 6, 1, 22, 59, tzinfo=UTC), date(2026, 6, 1)),     # 23:59 BST
    (datetime(2026, 6, 1, 23, 0, tzinfo=UTC), date(2026, 6, 2)),      # midnight BST
    (datetime(2026, 12, 5, 0, 30, tzinfo=UTC), date(2026, 12, 5)),    # GMT: UTC's day
    (datetime(2026, 12, 4, 23, 59, tzinfo=UTC), date(2026, 12, 4)),
    (datetime(2026, 3, 29, 0, 59, tzinfo=UTC), date(2026, 3, 29)),    # the clocks go forward at 01:00 UTC
    (datetime(2026, 3, 28, 23, 30, tzinfo=UTC), date(2026, 3, 28)),   # still GMT
    (datetime(2026, 10, 24, 23, 30, tzinfo=UTC), date(2026, 10, 25)),  # 00:30 BST, the day the clocks go back
])
def test_an_instant_falls_on_englands_calendar_day(at: datetime, day: date) -> None:
    assert england_day(at) == day
    assert england_day(at.replace(tzinfo=None)) == day  # the store's naive times are UTC


def test_now_is_englands_day(monkeypatch: pytest.MonkeyPatch) -> None:
    _clock_at(monkeypatch, JUST_AFTER_MIDNIGHT_BST)
    assert england_day() == date(2026, 6, 1)


async def test_a_change_recorded_just_after_midnight_bst_is_of_that_day(app_hub, monkeypatch) -> None:  # noqa: ANN001
    _clock_at(monkeypatch, JUST_AFTER_MIDNIGHT_BST)
    detained, _ = detention("9434765919", "bst")
    # Detained that very day: not "in the future" in England (UTC still has 31 May).
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                json={**detained, "effective_date": "2026-06-01"})
    assert r.status_code == 202, r.text
    async with app_hub.hub.engine.connect() as conn:
        recorded = (await conn.execute(select(service_levels.c.notified_on, service_levels.c.recorded_on))).one()
    # Recorded (and notified, none being given) on England's day: the 5 working days count from it.
    assert recorded == (date(2026, 6, 1), date(2026, 6, 1))


async def test_an_agreement_is_in_force_over_its_days_in_england(app_hub, monkeypatch) -> None:  # noqa: ANN001
    """A council's agreement for 1 June alone lets it read from 00:30 BST on 1 June (was: refused till
    01:00) and not at 00:30 BST on 2 June (was: allowed till 01:00)."""
    council = "E06000060"
    for change in detention("9434765919", "bst-ag"):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json=change)
        assert r.status_code == 202, r.text
    sharing = app_hub.hub.sharing
    groups = sorted(set().union(*(g.field_groups for g in sharing.grants_for(council))))
    sharing.replace_grants(SharingAgreements.from_document({"version": 1, "agreements": [{
        "id": "DSA-BST-TEST", "title": "begins on 1 June 2026", "legal_basis": "test", "valid_from": "2026-06-01",
        "valid_to": "2026-06-01",
        "recipients": [{"org_code": council, "events": ["*"], "field_groups": groups}]}]}))
    _clock_at(monkeypatch, JUST_AFTER_MIDNIGHT_BST)
    bucks = {"X-API-Key": app_hub.keys[council]}
    found = await app_hub.http.post("/v1/persons/lookup", headers=bucks, json={"nhs_number": "9434765919"})
    assert found.status_code == 200, found.text
    r = await app_hub.http.get(f"/v1/persons/{found.json()['person_id']}/s117", headers=bucks)
    assert r.status_code == 200, r.text
    assert r.json()["responsible_council"]["org"]["code"] == council
    _clock_at(monkeypatch, datetime(2026, 6, 1, 23, 30, tzinfo=UTC))  # 00:30 BST on 2 June: the agreement has ended
    r = await app_hub.http.get(f"/v1/persons/{found.json()['person_id']}/s117", headers=bucks)
    assert r.status_code == 404, r.text
