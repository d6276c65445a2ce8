"""A person's agreed split is its pair's: it divides only the days charged to
the council and ICB that agreed it (Worcs 8.5, A2.3), ends when
responsibility leaves that pair (re-detention from another area, Worcs
4.3.3), and does not come back when the person returns: the pair agrees a new
one. The days after a move follow the next pair's own arrangement (here a
60:40 default with exceptions, Worcs A2.1-A2.2). Through the real API (the
statements, the person query) and the report's own loaders (spend), the hub
on SQLite.

The setting (tests/unit/test_split_decisions_responsibility.py `_setup`):
Bucks and BOB ICB (QU9) responsible, both pairs' arrangements 60:40 with
exceptions; Bucks and QU9 agree 30% for the council from 1 June 2026; a
700.00 a week line from 1 June, paid by the council."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

from hub.domain.dates import add_months
from hub.domain.money.expenditure import expenditure, financial_year
from hub.domain.money.statements import period_cost
from tests.unit.test_money_moves_api import BUCKS, QU9, WORCS
from tests.unit.test_packages_api import start
from tests.unit.test_split_decisions_responsibility import _agree, _propose, _redetained_from_worcs, _setup

WEEK = 70_000


async def _agreed_from_june(app_hub, seed: int) -> tuple[dict[str, str], str, dict]:  # noqa: ANN001
    key, pid, person = await _setup(app_hub, seed)
    r = await _propose(app_hub, key[BUCKS], pid, "2026-06-01", "panel 2026-05-30")  # 30% council
    assert r.status_code == 201, r.text
    ok = await _agree(app_hub, key[QU9], r.json()["decision_id"])
    assert ok.status_code == 200 and (ok.json()["council"], ok.json()["icb"]) == (BUCKS, QU9), ok.text
    body = start(pid, f"pd-{seed}", f"PD{seed}", effective_date="2026-06-01")  # 700.00 a week, council-paid
    assert (await app_hub.http.post("/v1/packages", headers={"X-API-Key": key[BUCKS]}, json=body)).status_code == 201
    return key, pid, person


async def _left_and_detained_from(app_hub, person: dict, smid: str, left: str, day: str,  # noqa: ANN001
                                  council: str) -> None:
    """Leaves hospital on `left`, then detained again under s3 on `day` while living in `council`'s area:
    that council becomes responsible (Worcs 4.3.3); the ICB stays (aftercare already received, 4.4.2)."""
    base = {"source_system": "RiO (demo)", "person": person, "hospital_ods": "RNU"}
    for c in ({**base, "source_message_id": f"{smid}-left", "change_type": "left-hospital", "effective_date": left},
              {**base, "source_message_id": smid, "change_type": "detained", "effective_date": day,
               "legal_status_code": "03", "gp_practice_ods": "M81001", "residence_la_gss": council}):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text


async def _statement(app_hub, key: str, month: str, council: str, fmt: str = "json"):  # noqa: ANN001, ANN202
    r = await app_hub.http.get(f"/v1/statements?month={month}&council={council}&icb={QU9}&format={fmt}",
                               headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return r


def _items(body: dict) -> list[dict]:
    return [i for p in body["persons"] for i in p["lines"]]


def _shares(cost: int, council_bp: int) -> tuple[int, int]:
    """The statements' arithmetic: the council's share rounded half up, the NHS share the rest."""
    council = int((Decimal(cost) * council_bp / 10_000).to_integral_value(rounding="ROUND_HALF_UP"))
    return council, cost - council


async def _funding(app_hub, key: str, pid: str, as_of: str) -> dict:  # noqa: ANN001
    r = await app_hub.http.get(f"/v1/persons/{pid}/s117?as_of={as_of}", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return r.json()["funding"]


async def test_both_pairs_statements_for_the_month_of_the_move_each_charge_their_own_days(app_hub):
    key, pid, person = await _agreed_from_june(app_hub, 71)
    await _redetained_from_worcs(app_hub, person, 71, "2026-11-20")  # Worcestershire (with QU9) from 20 November

    old = (await _statement(app_hub, key[BUCKS], "2026-11", BUCKS)).json()
    new = (await _statement(app_hub, key[WORCS], "2026-11", WORCS)).json()
    (o,), (n,) = _items(old), _items(new)
    # 1-19 November: Bucks and QU9's own agreed exception, 30% the council's.
    cost_o = period_cost(Decimal(WEEK), 19)
    assert (o["from"], o["to"], o["days"], o["cost_pence"]) == ("2026-11-01", "2026-11-19", 19, cost_o)
    assert (o["basis"], o["council_pence"], o["icb_pence"]) == ("agreed exception", *_shares(cost_o, 3_000))
    assert "agreed exception" in o["arrangement"] and o["note"] == ""
    # 20-30 November: Worcestershire and QU9 agreed nothing for this person: their arrangement's default.
    cost_n = period_cost(Decimal(WEEK), 11)
    assert (n["from"], n["to"], n["days"], n["cost_pence"]) == ("2026-11-20", "2026-11-30", 11, cost_n)
    assert (n["basis"], n["council_pence"], n["icb_pence"]) == ("area agreement", *_shares(cost_n, 6_000))
    assert n["arrangement"] == "60:40 with exceptions" and n["citation"] == "Worcs A2.1, A2.2"
    assert "responsible on the register from 2026-11-20" in n["note"]
    # Consistent: the two statements make up the month, each item's shares its eligible cost, the
    # statements' totals their items, and the council-paid line makes each ICB side owe its council.
    assert o["cost_pence"] + n["cost_pence"] == period_cost(Decimal(WEEK), 30) == 300_000
    for s, i in ((old, o), (new, n)):
        assert i["council_pence"] + i["icb_pence"] == i["eligible_pence"] == i["cost_pence"]
        assert s["totals"]["cost_pence"] == i["cost_pence"]
        assert s["totals"]["net_icb_to_council_pence"] == i["icb_owes_council_pence"] == i["icb_pence"]
    # The ICB, party to both, reads the same two statements.
    assert _items((await _statement(app_hub, key[QU9], "2026-11", WORCS)).json()) == [n]
    assert _items((await _statement(app_hub, key[QU9], "2026-11", BUCKS)).json()) == [o]
    # October is all Bucks and QU9's, under their exception; December all Worcestershire's, by default.
    (octo,) = _items((await _statement(app_hub, key[BUCKS], "2026-10", BUCKS)).json())
    assert (octo["days"], octo["basis"]) == (31, "agreed exception")
    assert (await _statement(app_hub, key[WORCS], "2026-10", WORCS)).json()["persons"] == []
    (dec,) = _items((await _statement(app_hub, key[WORCS], "2026-12", WORCS)).json())
    assert (dec["from"], dec["basis"], dec["council_pence"]) == ("2026-12-01", "area agreement",
                                                                 _shares(dec["cost_pence"], 6_000)[0])
    assert (await _statement(app_hub, key[BUCKS], "2026-12", BUCKS)).json()["persons"] == []

    # The CSV finance teams import says the same: basis, citation and amounts (pounds) per pair.
    for council, k, item in ((BUCKS, key[BUCKS], o), (WORCS, key[WORCS], n)):
        rows = list(csv.DictReader(io.StringIO((await _statement(app_hub, k, "2026-11", council, "csv")).text)))
        (row, total) = rows
        assert (row["council"], row["from"], row["to"], row["basis"], row["citation"]) == (
            council, item["from"], item["to"], item["basis"], item["citation"])
        assert (row["council_share"], row["icb_share"]) == (f"{item['council_pence'] / 100:.2f}",
                                                            f"{item['icb_pence'] / 100:.2f}")
        assert total["person_id"] == "TOTAL" and total["cost"] == f"{item['cost_pence'] / 100:.2f}"


async def test_spend_counts_each_pairs_days_under_its_own_split(app_hub):
    """The register summary's expenditure (hub/api/reports.py `_expenditure`), from the same loaders,
    on a fixed day: 30 November 2026."""
    key, pid, person = await _agreed_from_june(app_hub, 72)
    await _redetained_from_worcs(app_hub, person, 72, "2026-11-20")
    today = date(2026, 11, 30)
    year_start, year_end = financial_year(today)
    first = min(year_start, add_months(date(today.year, today.month, 1), -11))
    packages = app_hub.hub.packages
    lines = [ln for ln in await packages.all_lines(first, year_end) if ln.person_id == pid]
    pairs, interims = await packages.moves(first, year_end)
    decisions = await packages.decisions([pid])
    (decision,) = decisions[pid]
    assert (decision.council, decision.icb, decision.last) == (BUCKS, QU9, date(2026, 11, 19))

    def spend(org: str | None):  # noqa: ANN202
        return expenditure(lines, app_hub.hub.agreements.funding_history, lambda p: decisions.get(p, ()), today,
                           lambda p: pairs.get(p, ()), lambda p: interims.get(p, ()), org)

    exp = spend(None)
    bucks, worcs = exp.by_pair[(BUCKS, QU9)], exp.by_pair[(WORCS, QU9)]
    # Committed on 30 November: Worcestershire's week at its 60:40, not Bucks and QU9's 30%.
    assert worcs.committed_weekly == [WEEK, *_shares(WEEK, 6_000)] and worcs.people == {pid}
    assert bucks.committed_weekly == [0, 0, 0] and bucks.people == set()
    # Spent: 1 June to 19 November (172 days) under the exception; 20 to 30 November (11 days) by default.
    b_cost, w_cost = period_cost(Decimal(WEEK), 172), period_cost(Decimal(WEEK), 11)
    assert bucks.spent_to_date == [b_cost, *_shares(b_cost, 3_000)]
    assert worcs.spent_to_date == [w_cost, *_shares(w_cost, 6_000)]
    # Projected: nothing more for Bucks; Worcestershire's rest of the year (121 days) by default too.
    rest = period_cost(Decimal(WEEK), 121)
    assert bucks.projected_year == bucks.spent_to_date
    assert worcs.projected_year == [w_cost + rest, _shares(w_cost, 6_000)[0] + _shares(rest, 6_000)[0],
                                    _shares(w_cost, 6_000)[1] + _shares(rest, 6_000)[1]]
    assert exp.total.spent_to_date == [b + w for b, w in zip(bucks.spent_to_date, worcs.spent_to_date, strict=True)]
    # November's trend: both pairs' days, each under its own split.
    n_old, n_new = period_cost(Decimal(WEEK), 19), period_cost(Decimal(WEEK), 11)
    assert exp.trend["2026-11"] == [n_old + n_new, _shares(n_old, 3_000)[0] + _shares(n_new, 6_000)[0],
                                    _shares(n_old, 3_000)[1] + _shares(n_new, 6_000)[1], 1]
    # Each body's own view: Worcestershire's spend is its days only, at its split.
    only = spend(WORCS)
    assert set(only.by_pair) == {(WORCS, QU9)} and only.by_pair[(WORCS, QU9)].spent_to_date == worcs.spent_to_date


async def test_the_person_query_shows_each_pair_its_own_split(app_hub):
    key, pid, person = await _agreed_from_june(app_hub, 73)
    await _redetained_from_worcs(app_hub, person, 73, "2026-11-20")
    # Before the move, to Bucks: the exception in force, 30% of the week the council's.
    before = await _funding(app_hub, key[BUCKS], pid, "2026-11-10")
    (line,) = before["packages"]
    assert (line["split_per_week"]["basis"], line["split_per_week"]["council_pence"]) == ("agreed exception", 21_000)
    (d,) = before["decisions"]
    assert (d["council"], d["icb"], d["effective_from"], d["in_force"], d["to"]) == (
        BUCKS, QU9, "2026-06-01", True, None)  # its end is after the day asked about
    # After the move, to Worcestershire and to the ICB: the new pair's default, the decision ended.
    for k in (key[WORCS], key[QU9]):
        after = await _funding(app_hub, k, pid, "2026-11-25")
        assert (after["council"], after["icb"]) == (WORCS, QU9)
        (line,) = after["packages"]
        week = line["split_per_week"]
        assert (week["basis"], week["council_pence"], week["icb_pence"]) == ("area agreement", 42_000, 28_000)
        assert after["weekly_in_force"]["council_pence"] == 42_000
    # The ended decision is shown to its own pair's ICB, not to Worcestershire, which never agreed it.
    assert (await _funding(app_hub, key[WORCS], pid, "2026-11-25"))["decisions"] == []
    (d,) = (await _funding(app_hub, key[QU9], pid, "2026-11-25"))["decisions"]
    assert (d["council"], d["in_force"], d["to"]) == (BUCKS, False, "2026-11-19")
    # The query's week and the statement's days agree: 11 days of Worcestershire's 60%.
    (n,) = _items((await _statement(app_hub, key[WORCS], "2026-11", WORCS)).json())
    assert abs(n["council_pence"] * 7 / n["days"] - 42_000) <= 1


async def test_a_split_ends_when_responsibility_leaves_its_pair_and_does_not_come_back(app_hub):
    key, pid, person = await _agreed_from_june(app_hub, 74)
    await _redetained_from_worcs(app_hub, person, 74, "2026-08-10")  # to Worcestershire (with QU9)
    await _left_and_detained_from(app_hub, person, "pd-74-back", "2026-09-20", "2026-10-05", BUCKS)  # back to Bucks

    aug_old = _items((await _statement(app_hub, key[BUCKS], "2026-08", BUCKS)).json())
    aug_new = _items((await _statement(app_hub, key[WORCS], "2026-08", WORCS)).json())
    assert [(i["from"], i["to"], i["basis"]) for i in aug_old] == [("2026-08-01", "2026-08-09", "agreed exception")]
    assert [(i["from"], i["to"], i["basis"]) for i in aug_new] == [("2026-08-10", "2026-08-31", "area agreement")]
    # Back with Bucks and QU9 from 5 October: the exception they agreed in May does not come back.
    octo = _items((await _statement(app_hub, key[BUCKS], "2026-10", BUCKS)).json())
    assert [(i["from"], i["to"], i["basis"]) for i in octo] == [("2026-10-05", "2026-10-31", "area agreement")]
    (i,) = octo
    assert (i["council_pence"], i["icb_pence"]) == _shares(i["cost_pence"], 6_000)
    assert [(i["from"], i["to"]) for i in _items((await _statement(app_hub, key[WORCS], "2026-10", WORCS)).json())
            ] == [("2026-10-01", "2026-10-04")]
    view = await _funding(app_hub, key[BUCKS], pid, "2026-10-10")
    assert view["packages"][0]["split_per_week"]["basis"] == "area agreement"
    (d,) = view["decisions"]
    assert (d["council"], d["in_force"], d["to"]) == (BUCKS, False, "2026-08-09")

    # A new agreement is needed: the pair responsible now agrees one, from the return or later.
    back = await _propose(app_hub, key[QU9], pid, "2026-10-01", "panel 2026-10-15")
    assert back.status_code == 422 and "2026-10-05" in back.json()["errors"][0]["reason"], back.text
    again = await _propose(app_hub, key[QU9], pid, "2026-10-20", "panel 2026-10-15")
    assert again.status_code == 201 and again.json()["awaiting"] == BUCKS, again.text
    assert (await _agree(app_hub, key[BUCKS], again.json()["decision_id"])).status_code == 200
    octo = _items((await _statement(app_hub, key[BUCKS], "2026-10", BUCKS)).json())
    assert [(i["from"], i["to"], i["basis"]) for i in octo] == [
        ("2026-10-05", "2026-10-19", "area agreement"), ("2026-10-20", "2026-10-31", "agreed exception")]
    assert (octo[1]["council_pence"], octo[1]["icb_pence"]) == _shares(octo[1]["cost_pence"], 3_000)
    # August is as it was: the new agreement rewrites nothing before its date.
    assert _items((await _statement(app_hub, key[BUCKS], "2026-08", BUCKS)).json()) == aug_old
    view = await _funding(app_hub, key[BUCKS], pid, "2026-11-01")
    assert [(d["effective_from"], d["in_force"], d["to"]) for d in view["decisions"]] == [
        ("2026-06-01", False, "2026-08-09"), ("2026-10-20", True, None)]


async def test_only_people_whose_register_changed_since_a_decision_are_evaluated_for_its_end(app_hub, monkeypatch):
    """`decisions()` (every decision, for the register summary's spend) evaluates the register only of people
    with a change effective from a decision's day on or received since it was proposed: the agreement checked
    the pair over its days as the register stood then. A later move and a late change dated before the
    decision both end it; a person with neither keeps theirs open, unevaluated."""
    import hub.money.service as service

    key, still, _ = await _agreed_from_june(app_hub, 75)
    _, moved, person = await _agreed_from_june(app_hub, 76)
    await _redetained_from_worcs(app_hub, person, 76, "2026-08-10")
    _, late, person = await _agreed_from_june(app_hub, 77)
    await _redetained_from_worcs(app_hub, person, 77, "2026-05-25")  # received now, dated before the decision
    asked: list[set[str]] = []
    real = service.load_pairs

    async def spy(conn, person_ids, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        asked.append(set(person_ids))
        return await real(conn, person_ids, *args, **kw)

    monkeypatch.setattr(service, "load_pairs", spy)
    found = await app_hub.hub.packages.decisions()
    assert asked == [{moved, late}]
    assert [d.last for d in found[still]] == [None]
    assert [d.last for d in found[moved]] == [date(2026, 8, 9)]
    assert [d.last for d in found[late]] == [date(2026, 5, 31)]
