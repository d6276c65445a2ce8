"""Split decisions agreed out of order (outside review): a decision is in
force only from a day after the last agreed one (Worcs 8.5: an earlier
decision is never rewritten). Two proposals awaiting the other body used to
be agreed whatever their dates: one dated before a decision agreed since, or
two on the same day (which one a statement applied was then the store's
row order)."""

from __future__ import annotations

from dataclasses import replace as dc_replace

from hub.domain.agreements import FundingAgreement, FundingKind
from tests.unit.test_money_access import QU9, WORCS, _clients, _moved_to_worcs
from tests.unit.test_money_moves_api import _grant_funding
from tests.unit.test_packages_api import start


async def test_a_proposal_overtaken_by_a_later_agreed_decision_cannot_be_agreed(app_hub):
    book = app_hub.hub.agreements
    book = dc_replace(book, funding={**book.funding, (WORCS, QU9): FundingAgreement(
        FundingKind.DEFAULT_WITH_EXCEPTIONS, "60:40 with exceptions", "Worcs A2.1, A2.2", council_share_bp=6_000)})
    app_hub.hub.agreements = app_hub.hub.packages._agreements = book
    key = {org: k for org, (_, k) in (await _clients(app_hub)).items()}
    pid, _ = await _moved_to_worcs(app_hub, 44)  # Worcestershire and QU9 responsible now
    _grant_funding(app_hub, WORCS, QU9)
    http = app_hub.http

    async def propose(share: str, day: str, ref: str) -> str:
        r = await http.post("/v1/split-decisions", headers={"X-API-Key": key[WORCS]}, json={
            "person_id": pid, "kind": "exception", "council_share_percent": share, "effective_from": day,
            "reference": ref})
        assert r.status_code == 201, r.text
        return r.json()["decision_id"]

    a = await propose("70", "2027-03-01", "A")
    b = await propose("30", "2027-02-01", "B")  # proposed before A was agreed: valid then
    c = await propose("10", "2027-03-01", "C")  # the same day as A
    agree = lambda d: http.post(f"/v1/split-decisions/{d}/agree", headers={"X-API-Key": key[QU9]})  # noqa: E731
    assert (await agree(a)).status_code == 200
    for late in (b, c):
        r = await agree(late)
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["field"] == "effective_from"
    # A later one is still agreed.
    d = await propose("40", "2027-04-01", "D")
    assert (await agree(d)).status_code == 200

    r = await http.post("/v1/packages", headers={"X-API-Key": key[WORCS]},
                        json=start(pid, "w1", "W1", effective_date="2026-12-01"))
    assert r.status_code == 201, r.text
    seen = {}
    for month in ("2027-02", "2027-03", "2027-04"):
        s = (await http.get(f"/v1/statements?month={month}&council={WORCS}&icb={QU9}",
                            headers={"X-API-Key": key[WORCS]})).json()
        seen[month] = [(i["basis"], i["arrangement"]) for p in s["persons"] for i in p["lines"]]
    assert seen["2027-02"] == [("area agreement", "60:40 with exceptions")]
    assert seen["2027-03"] == [("agreed exception", "60:40 with exceptions: agreed exception A")]
    assert seen["2027-04"] == [("agreed exception", "60:40 with exceptions: agreed exception D")]
