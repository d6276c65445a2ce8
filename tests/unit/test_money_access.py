"""Who may write a person's package lines and split decisions, and the audit
of every money write and statement read (README "Roles and access", "Audit",
"Packages and money").

A package line is written only by a body responsible for the person on the
line's effective date (for a change or an end, one whose pair the line is
charged to), holding an agreement in force that grants `funding`; anyone else
gets the answer an unknown person gets, and nothing is kept or quarantined.
Council-file package rows go through the same rule. Every package and split
decision write, allowed or refused, and every statement read, is an
`access_decisions` row."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

from sqlalchemy import func, select

from hub.clients import add_client
from hub.domain.access import TEXTS, Rule
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import access_decisions, care_packages, quarantine
from tests.support import council_file_done
from tests.unit.test_money_moves_api import BUCKS, QGH, QU9, WORCS, _grant_funding
from tests.unit.test_packages_api import start

BRUM = "E08000025"


async def _clients(app_hub) -> dict[str, tuple[str, str]]:  # noqa: ANN001
    """org -> (client id, key)."""
    out = {}
    for org, kind in ((BUCKS, "council"), (QU9, "icb"), (QGH, "icb"), (WORCS, "council"), (BRUM, "council")):
        out[org] = await add_client(app_hub.hub.engine, f"{org} finance", org, kind,
                                    ["packages:write", "s117:read", "register:write"])
    return out


async def _moved_to_worcs(app_hub, seed: int) -> tuple[str, dict]:  # noqa: ANN001
    """Bucks and BOB ICB (QU9) responsible from 2025, Worcestershire (with QU9) from 15 October 2025:
    re-detained from Worcestershire (Worcs 4.3.3; the ICB stays, 4.4.2)."""
    changes = detention_to_move_scenario(random.Random(seed), f"ma-{seed}", date(2025, 1, 6))
    again = {"source_system": "RiO (demo)", "person": changes[0]["person"], "source_message_id": f"ma-{seed}-re",
             "change_type": "detained", "effective_date": "2025-10-15", "legal_status_code": "03",
             "hospital_ods": "RNU", "gp_practice_ods": "M81001", "residence_la_gss": WORCS}
    for c in [*changes[:4], again]:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    return r.json()["person_id"], changes[0]["person"]


def _post(app_hub, key: str, body: dict):  # noqa: ANN001, ANN202
    return app_hub.http.post("/v1/packages", headers={"X-API-Key": key}, json=body)


async def _rows(app_hub, table, *where) -> list:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(table).where(*where))).all()
        await conn.rollback()
    return rows


async def _count(app_hub, table, *where) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
        await conn.rollback()
    return n


async def _decisions(app_hub, client_id: str) -> list[tuple]:  # noqa: ANN001
    rows = await _rows(app_hub, access_decisions, access_decisions.c.client_id == client_id)
    return [(r.channel, r.action, r.change_type, r.decision, r.rule, r.role,
             tuple(r.field_groups) if r.field_groups is not None else None) for r in
            sorted(rows, key=lambda r: r.decision_id)]


async def test_a_line_is_written_only_by_a_body_responsible_on_its_date_holding_funding(app_hub):
    clients = await _clients(app_hub)
    key = {org: k for org, (_, k) in clients.items()}
    pid, _ = await _moved_to_worcs(app_hub, 41)
    unknown = await _post(app_hub, key[WORCS], start("no-such-person", "w-0", "W0", effective_date="2025-06-01"))
    assert unknown.status_code == 404

    # Worcestershire: not responsible on 1 June 2025, and (the sample agreements) no `funding` group.
    for smid, day in (("w-1", "2025-06-01"), ("w-2", "2025-11-01")):
        r = await _post(app_hub, key[WORCS], start(pid, smid, "W1", effective_date=day))
        assert (r.status_code, r.json()) == (404, unknown.json())
    _grant_funding(app_hub, WORCS)
    r = await _post(app_hub, key[WORCS], start(pid, "w-3", "W1", effective_date="2025-06-01"))
    assert (r.status_code, r.json()) == (404, unknown.json())  # granted funding, still not responsible then
    r = await _post(app_hub, key[WORCS], start(pid, "w-4", "W1", effective_date="2025-11-01"))
    assert r.status_code == 201, r.text
    assert (r.json()["council"], r.json()["icb"]) == (WORCS, QU9)

    # Bucks: responsible until 14 October 2025, its lines charged to Bucks and QU9; nothing after.
    r = await _post(app_hub, key[BUCKS], start(pid, "b-1", "B1", effective_date="2025-06-01"))
    assert r.status_code == 201 and (r.json()["council"], r.json()["icb"]) == (BUCKS, QU9)
    r = await _post(app_hub, key[BUCKS], start(pid, "b-2", "B2", effective_date="2025-11-01"))
    assert (r.status_code, r.json()) == (404, unknown.json())
    late = {"action": "change", "package_id": "B1", "person_id": pid, "weekly_cost_pence": 90_000}
    r = await _post(app_hub, key[BUCKS], {**late, "source_message_id": "b-3", "effective_date": "2025-12-01"})
    assert (r.status_code, r.json()) == (404, unknown.json())
    r = await _post(app_hub, key[BUCKS], {"source_message_id": "b-4", "action": "end", "package_id": "B1",
                                          "person_id": pid, "effective_date": "2025-12-31"})
    assert (r.status_code, r.json()) == (404, unknown.json())
    r = await _post(app_hub, key[BUCKS], {**late, "source_message_id": "b-5", "effective_date": "2025-09-01"})
    assert r.status_code == 201 and r.json()["versions"] == [1, 2]
    r = await _post(app_hub, key[BUCKS], {"source_message_id": "b-6", "action": "end", "package_id": "B1",
                                          "person_id": pid, "effective_date": "2025-10-14"})
    assert r.status_code == 201, r.text
    # The ICB, responsible throughout.
    r = await _post(app_hub, key[QU9], start(pid, "q-1", "Q1", effective_date="2025-06-01"))
    assert r.status_code == 201 and (r.json()["council"], r.json()["icb"]) == (BUCKS, QU9)

    kept = await _rows(app_hub, care_packages, care_packages.c.person_id == pid)
    assert sorted((r.source.split("-")[0], r.package_id, r.version, r.council, r.icb) for r in kept) == [
        ("e06000060", "B1", 1, BUCKS, QU9), ("e06000060", "B1", 2, BUCKS, QU9),
        ("e10000034", "W1", 1, WORCS, QU9), ("qu9", "Q1", 1, BUCKS, QU9)]
    assert await _count(app_hub, quarantine) == 0  # a refusal keeps nothing, not even in quarantine
    june = (await app_hub.http.get(f"/v1/statements?month=2025-06&council={BUCKS}&icb={QU9}",
                                   headers={"X-API-Key": key[BUCKS]})).json()
    assert sorted(i["package_id"] for p in june["persons"] for i in p["lines"]) == ["B1", "Q1"]

    # Each write decision, allowed or refused, is in access_decisions with its rule and group.
    write = ("rest", "write", "package-start")
    assert await _decisions(app_hub, clients[WORCS][0]) == [
        # No agreement granting funding: refused before the person is looked up (the unknown one too).
        (*write, "denied", "no-agreement", None, None),
        (*write, "denied", "no-agreement", None, None),
        (*write, "denied", "no-agreement", None, None),
        (*write, "denied", "no-relationship", None, None),  # granted, not responsible then
        (*write, "allowed", "allowed", "responsible-council", ("funding",)),
    ]
    assert [d[2:5] for d in await _decisions(app_hub, clients[BUCKS][0]) if d[0] == "rest"] == [
        ("package-start", "allowed", "allowed"), ("package-start", "denied", "no-relationship"),
        ("package-change", "denied", "no-relationship"), ("package-end", "denied", "no-relationship"),
        ("package-change", "allowed", "allowed"), ("package-end", "allowed", "allowed")]
    assert [d[3:6] for d in await _decisions(app_hub, clients[QU9][0])] == [
        ("allowed", "allowed", "responsible-commissioner")]
    rows = await _rows(app_hub, access_decisions, access_decisions.c.channel == "rest",
                       access_decisions.c.change_type.like("package-%"))
    assert {r.person_id for r in rows} == {None, pid}


async def test_a_change_to_a_line_charged_to_another_pair_is_refused(app_hub):
    """A line kept before the rule (Worcestershire's, charged to Bucks and QU9 for a day before it
    was responsible) cannot be changed or ended by it on a day it is charged to Bucks and QU9: not its
    pair then (from the move on 15 October it is: tests/unit/test_package_handover.py)."""
    clients = await _clients(app_hub)
    worcs_id, worcs = clients[WORCS]
    _grant_funding(app_hub, WORCS)
    pid, _ = await _moved_to_worcs(app_hub, 42)
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(care_packages.insert().values(
            source=worcs_id, package_id="OLD", version=1, person_id=pid, council=BUCKS, icb=QU9, paid_by="council",
            service_type="supported accommodation", provider_kind="council", provider_code="WCC-1",
            need="social-care", weekly_cost_pence=70_000, s117_eligible=True, s17_leave=False, cohort="adult",
            start_date=date(2025, 6, 1), end_date=None, source_message_id="old-1",
            recorded_at=datetime(2025, 6, 1, tzinfo=UTC)))
    change = {"action": "change", "package_id": "OLD", "person_id": pid, "weekly_cost_pence": 1}
    r = await _post(app_hub, worcs, {**change, "source_message_id": "w-9", "effective_date": "2025-09-01"})
    assert r.status_code == 404 and r.json()["detail"].startswith("no person")
    r = await _post(app_hub, worcs, {"source_message_id": "w-10", "action": "end", "package_id": "OLD",
                                     "person_id": pid, "effective_date": "2025-10-14"})
    assert r.status_code == 404
    (row,) = await _rows(app_hub, care_packages, care_packages.c.package_id == "OLD")
    assert (row.version, row.weekly_cost_pence, row.end_date) == (1, 70_000, None)
    assert await _count(app_hub, quarantine) == 0
    assert [d[2:5] for d in await _decisions(app_hub, worcs_id)] == [
        ("package-change", "denied", "no-relationship"), ("package-end", "denied", "no-relationship")]


HEADER = "RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO,PACKAGE_ID,SERVICE_TYPE,PROVIDER_TYPE,PROVIDER,NEED,WEEKLY_COST"


async def _council_file(app_hub, key: str, rows: list[str]) -> list[dict]:  # noqa: ANN001
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content="\n".join([HEADER, *rows]).encode(),
                                headers={"X-API-Key": key, "Content-Type": "text/csv"})
    r = await council_file_done(app_hub.http, r, {"X-API-Key": key})
    assert r.status_code == 200, r.text
    return r.json()["report"]


async def test_council_file_package_rows_get_the_same_rule_and_one_row_error(app_hub):
    clients = await _clients(app_hub)
    worcs_id, worcs = clients[WORCS]
    pid, person = await _moved_to_worcs(app_hub, 43)
    nhs = person["nhs_number"]
    rows = [f"WP-1,PKG_START,01/06/2025,{nhs},F1,day opportunities,LA,WCC-PRV-1,SC,55.00",   # not responsible then
            "WP-2,PKG_START,01/06/2025,9991100024,F2,day opportunities,LA,WCC-PRV-1,SC,55.00",  # nobody
            f"WP-3,PKG_START,01/11/2025,{nhs},F3,day opportunities,LA,WCC-PRV-1,SC,55.00"]  # no funding group
    report = await _council_file(app_hub, worcs, rows)
    assert [e["status"] for e in report] == ["rejected", "rejected", "rejected"]
    text = TEXTS[Rule.NO_RELATIONSHIP]
    for n, e in enumerate(report, start=1):
        assert e["errors"] == [{"field": f"row {n}, column NHS_NO", "reason": text}]
        assert "quarantine_id" not in e
    _grant_funding(app_hub, WORCS)
    report = await _council_file(app_hub, worcs, [r.replace("WP-", "WQ-").replace(",F", ",G") for r in rows])
    assert [e["status"] for e in report] == ["rejected", "rejected", "accepted"]
    assert report[0]["errors"] == [{"field": "row 1, column NHS_NO", "reason": text}]
    kept = await _rows(app_hub, care_packages, care_packages.c.source == worcs_id)
    assert [(r.package_id, r.council, r.icb, r.start_date) for r in kept] == [("G3", WORCS, QU9, date(2025, 11, 1))]
    assert await _count(app_hub, quarantine) == 0
    # Each row's decision is audited on the file channel (rows about different people are decided
    # concurrently: compared as sets of outcomes per file).
    decided = [(d[0], d[1], d[3], d[4]) for d in await _decisions(app_hub, worcs_id)]
    # Without funding, the package rule refuses before looking the person up (the row about nobody is
    # refused first by the register-change precheck every file row meets).
    assert sorted(decided[:3]) == sorted([("file", "write", "denied", "no-agreement")] * 2
                                         + [("file", "write", "denied", "no-relationship")])
    assert sorted(decided[3:]) == sorted([("file", "write", "denied", "no-relationship")] * 2
                                         + [("file", "write", "allowed", "allowed")])


async def test_split_decisions_need_a_responsible_body_with_funding_and_are_audited(app_hub):
    from dataclasses import replace as dc_replace

    from hub.domain.agreements import FundingAgreement, FundingKind
    book = app_hub.hub.agreements
    book = dc_replace(book, funding={**book.funding, (WORCS, QU9): FundingAgreement(
        FundingKind.DEFAULT_WITH_EXCEPTIONS, "60:40 with exceptions", "Worcs A2.1, A2.2", council_share_bp=6_000)})
    app_hub.hub.agreements = app_hub.hub.packages._agreements = book
    clients = await _clients(app_hub)
    key = {org: k for org, (_, k) in clients.items()}
    pid, _ = await _moved_to_worcs(app_hub, 44)  # Worcestershire and QU9 responsible now
    body = {"person_id": pid, "kind": "exception", "council_share_percent": "50", "effective_from": "2026-12-01",
            "reference": "panel 2026-11-30"}
    for org in (BRUM, BUCKS, WORCS):  # not responsible; a past party; responsible without `funding`
        r = await app_hub.http.post("/v1/split-decisions", headers={"X-API-Key": key[org]}, json=body)
        assert r.status_code == 404 and r.json()["detail"].startswith("no person"), (org, r.text)
    _grant_funding(app_hub, WORCS)
    r = await app_hub.http.post("/v1/split-decisions", headers={"X-API-Key": key[WORCS]}, json=body)
    assert r.status_code == 201 and r.json()["awaiting"] == QU9, r.text
    did = r.json()["decision_id"]
    assert (await app_hub.http.post(f"/v1/split-decisions/{did}/agree",
                                    headers={"X-API-Key": key[BRUM]})).status_code == 404
    assert (await app_hub.http.post(f"/v1/split-decisions/{did}/agree",
                                    headers={"X-API-Key": key[QU9]})).status_code == 200
    assert await _count(app_hub, quarantine) == 0
    propose, agree = ("rest", "write", "split-decision-propose"), ("rest", "write", "split-decision-agree")
    assert [d[:5] for d in await _decisions(app_hub, clients[BRUM][0])] == [
        (*propose, "denied", "no-relationship"), (*agree, "denied", "no-relationship")]
    assert [d[:5] for d in await _decisions(app_hub, clients[BUCKS][0])] == [(*propose, "denied", "no-relationship")]
    assert await _decisions(app_hub, clients[WORCS][0]) == [
        (*propose, "denied", "no-agreement", "responsible-council", None),
        (*propose, "allowed", "allowed", "responsible-council", ("funding",))]
    assert await _decisions(app_hub, clients[QU9][0]) == [
        (*agree, "allowed", "allowed", "responsible-commissioner", ("funding",))]


async def test_every_statement_read_is_an_access_decision(app_hub):
    clients = await _clients(app_hub)
    key = {org: k for org, (_, k) in clients.items()}
    q = f"/v1/statements?month=2025-06&council={BUCKS}&icb={QU9}"
    assert (await app_hub.http.get(q, headers={"X-API-Key": key[BUCKS]})).status_code == 200
    assert (await app_hub.http.get(q, headers={"X-API-Key": key[BRUM]})).status_code == 404
    assert (await app_hub.http.get(q + "&format=csv", headers={"X-API-Key": key[QU9]})).status_code == 200
    other = f"/v1/statements?month=2025-11&council={WORCS}&icb={QU9}"
    assert (await app_hub.http.get(other, headers={"X-API-Key": key[WORCS]})).status_code == 404  # no funding
    rows = await _rows(app_hub, access_decisions, access_decisions.c.channel == "statement")
    got = sorted((r.org_code, r.action, r.decision, r.rule, r.role, tuple(r.field_groups or ()), r.as_of,
                  r.person_id) for r in rows)
    assert got == sorted([
        (BUCKS, "read", "allowed", "allowed", "responsible-council", ("funding",), date(2025, 6, 1), None),
        (BRUM, "read", "denied", "no-relationship", None, (), date(2025, 6, 1), None),
        (QU9, "read", "allowed", "allowed", "responsible-commissioner", ("funding",), date(2025, 6, 1), None),
        (WORCS, "read", "denied", "no-agreement", "responsible-council", (), date(2025, 11, 1), None),
    ])


async def test_a_caller_without_funding_is_refused_whatever_its_body_holds_and_nothing_is_kept(app_hub):
    """A body holding no agreement that grants `funding` may write no line about anyone: its body is
    not read, validated or quarantined, not even one that is not JSON (the unknown person's answer,
    audited no-agreement); a body that holds funding still gets its malformed body named and held."""
    clients = await _clients(app_hub)
    worcs_id, worcs = clients[WORCS]
    pid, person = await _moved_to_worcs(app_hub, 44)
    unknown = await _post(app_hub, worcs, start("no-such-person", "u-0", "U0", effective_date="2025-11-01"))
    h = {"X-API-Key": worcs, "Content-Type": "application/json"}
    for n, raw in enumerate((b"not json", b"[1, 2]", b'{"person": {"nhs_number": "' + person["nhs_number"].encode()
                                                        + b'"}, "action": "bogus"}')):
        r = await app_hub.http.post("/v1/packages", content=raw, headers=h)
        assert (r.status_code, r.json()["detail"]) == (404, unknown.json()["detail"]), n
    assert await _count(app_hub, quarantine) == 0
    assert {d[4] for d in await _decisions(app_hub, worcs_id)} == {"no-agreement"}

    _grant_funding(app_hub, WORCS)
    r = await app_hub.http.post("/v1/packages", content=b"not json", headers=h)
    assert r.status_code == 422 and r.json()["errors"] == [{"field": "(body)", "reason": "must be a JSON object"}]
    assert await _count(app_hub, quarantine) == 1


async def test_a_malformed_line_about_someone_not_the_callers_is_refused_before_validation(app_hub):
    """When the person can be read but the action or the day cannot, the caller is asked whether it
    is responsible for the person today: Bucks (responsible until October 2025) gets the unknown
    person's answer for a malformed line and nothing is kept; Worcestershire, responsible now, gets
    its problems named and the line held in quarantine."""
    clients = await _clients(app_hub)
    _grant_funding(app_hub, WORCS, BUCKS)
    pid, person = await _moved_to_worcs(app_hub, 45)
    bad = {"source_message_id": "m-1", "action": "bogus", "package_id": "M1", "effective_date": "soon"}
    unknown = await _post(app_hub, clients[BUCKS][1], {**bad, "person_id": "no-such-person"})
    assert unknown.status_code == 404
    for who in ({"person_id": pid}, {"person": {"nhs_number": person["nhs_number"]}}):
        r = await _post(app_hub, clients[BUCKS][1], {**bad, **who})
        assert (r.status_code, r.json()["detail"]) == (404, unknown.json()["detail"])
    assert await _count(app_hub, quarantine) == 0
    r = await _post(app_hub, clients[WORCS][1], {**bad, "person_id": pid})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} >= {"action", "effective_date"}
    assert await _count(app_hub, quarantine) == 1
