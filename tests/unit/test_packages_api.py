"""Packages over REST, the person query's funding part and recharge
statements (JSON, CSV, PDF rendered to PNG with poppler's pdftoppm)."""

from __future__ import annotations

import csv
import io
import random
import subprocess
from tests.support import council_file_done
from datetime import date
from decimal import Decimal

import pytest

from hub.clients import add_client
from hub.domain.access import TEXTS, Rule
from hub.sample_data import detention_to_move_scenario
from hub.domain.dates import england_day
from tests.servers.poppler import require_poppler


async def _person(app_hub, seed: int = 7) -> tuple[str, str]:  # noqa: ANN001
    changes = detention_to_move_scenario(random.Random(seed), f"pkg-{seed}", date(2025, 1, 6))
    for c in changes[:3]:  # detained, s3, left hospital: Bucks + BOB ICB responsible
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    nhs = changes[0]["person"]["nhs_number"]
    r = await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json={"nhs_number": nhs})
    return r.json()["person_id"], nhs


@pytest.fixture
async def bucks(app_hub):  # noqa: ANN001
    _, key = await add_client(app_hub.hub.engine, "Bucks finance", "E06000060", "council",
                              ["packages:write", "register:write", "s117:read"])
    return key


def start(pid: str, smid: str, pkg: str, **kw) -> dict:
    return {"source_message_id": smid, "action": "start", "package_id": pkg, "person_id": pid,
            "effective_date": "2026-09-20", "service_type": "supported accommodation",
            "provider": {"kind": "council", "code": "BCC-PRV-00123"}, "need": "social-care",
            "weekly_cost_pence": 70_000, **kw}


async def test_package_recorded_once_named_problems_quarantined_and_only_by_the_responsible(app_hub, bucks):
    pid, _ = await _person(app_hub)
    h = {"X-API-Key": bucks}
    r = await app_hub.http.post("/v1/packages", headers=h, json=start(pid, "pk-1", "L1"))
    assert r.status_code == 201, r.text
    assert (r.json()["council"], r.json()["icb"], r.json()["versions"]) == ("E06000060", "QU9", [1])
    again = await app_hub.http.post("/v1/packages", headers=h, json=start(pid, "pk-1", "L1"))
    assert again.status_code == 201 and again.json()["duplicate"] is True

    bad = await app_hub.http.post("/v1/packages", headers=h, json={
        **start(pid, "pk-2", "L2", weekly_cost_pence=-5, need="housing"), "colour": "red"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"weekly_cost_pence", "need", "colour"}
    held = (await app_hub.http.get(f"/v1/quarantine/{bad.json()['quarantine_id']}", headers=h))
    assert held.status_code == 200

    no_cost = await app_hub.http.post("/v1/packages", headers=h, json={
        **start(pid, "pk-3", "L3"), "weekly_cost_pence": None, "unit_cost_pence": 2_000})
    assert no_cost.status_code == 422
    assert no_cost.json()["errors"] == [{"field": "units_per_week",
                                         "reason": "a unit cost and units_per_week go together"}]
    early = await app_hub.http.post("/v1/packages", headers=h, json={
        "source_message_id": "pk-4", "action": "change", "package_id": "L1", "person_id": pid,
        "effective_date": "2026-09-01", "weekly_cost_pence": 1})
    assert early.status_code == 422 and early.json()["errors"][0]["field"] == "effective_date"

    _, brum = await add_client(app_hub.hub.engine, "Brum finance", "E08000025", "council", ["packages:write"])
    for body in (start(pid, "pk-5", "L5"), start("no-such-person", "pk-6", "L6")):
        r = await app_hub.http.post("/v1/packages", headers={"X-API-Key": brum}, json=body)
        assert r.status_code == 404 and r.json()["detail"].startswith("no person")
    r = await app_hub.http.post("/v1/packages", headers={"X-API-Key": app_hub.keys["trust"]}, json=start(pid, "x", "x"))
    assert r.status_code == 403


async def _three_lines(app_hub, key, pid):  # noqa: ANN001
    h = {"X-API-Key": key}
    for body in (
        start(pid, "s-1", "L1"),  # 700.00 a week from 20 Sept
        start(pid, "s-2", "L2", service_type="support worker", weekly_cost_pence=None, unit_cost_pence=2_550,
              units_per_week="10", need="joint", provider={"kind": "ods", "code": "RNU"}),
        start(pid, "s-3", "L3", service_type="nursing care", exclusion="nhs-funded-nursing-care", need="health",
              weekly_cost_pence=23_500),
        {"source_message_id": "s-4", "action": "change", "package_id": "L1", "person_id": pid,
         "effective_date": "2026-10-15", "weekly_cost_pence": 77_000},
    ):
        r = await app_hub.http.post("/v1/packages", headers=h, json=body)
        assert r.status_code == 201, r.text


async def test_person_query_shows_the_split_with_its_citation_only_with_funding_granted(app_hub, bucks):
    pid, _ = await _person(app_hub)
    await _three_lines(app_hub, bucks, pid)
    r = await app_hub.http.get(f"/v1/persons/{pid}/s117?as_of=2026-10-20",
                               headers={"X-API-Key": app_hub.keys["E06000060"]})
    funding = r.json()["funding"]
    assert funding["arrangement"]["citation"] == "Bucks 'Aligned Budget Funding Split'"
    assert (funding["arrangement"]["council_percent"], funding["arrangement"]["nhs_percent"]) == ("53.93", "46.07")
    l1 = [p for p in funding["packages"] if p["package_id"] == "L1"]
    assert [(p["version"], p["weekly_cost_pence"], p["end"]) for p in l1] == [
        (1, "70000", "2026-10-14"), (2, "77000", None)]
    assert l1[1]["split_per_week"]["council_pence"] == 41_526  # 77000 x 53.93% = 41526.1
    fnc = next(p for p in funding["packages"] if p["package_id"] == "L3")
    assert fnc["split_per_week"]["citation"] == "FOI Q5; Worcs 10.1"
    # A party without the funding group sees the position but no costs.
    r = await app_hub.http.get(f"/v1/persons/{pid}/s117", headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 200 and "funding" not in r.json()


def _render_first_page(pdf: bytes, tmp_path) -> bytes:  # noqa: ANN001
    require_poppler()
    (tmp_path / "s.pdf").write_bytes(pdf)
    for old in tmp_path.glob("page*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(tmp_path / "s.pdf"),
                    str(tmp_path / "page")], check=True, timeout=60)
    (png,) = list(tmp_path.glob("page*.png"))
    return png.read_bytes()


def _ink(png: bytes) -> int:
    """Dark pixels in an 8-bit grey or RGB PNG (stdlib only: inflate the IDAT, undo the row filters)."""
    import struct
    import zlib
    pos, width, height, bpp, data = 8, 0, 0, 1, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8: pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (0, 2)
            bpp = 1 if colour == 0 else 3
        elif kind == b"IDAT":
            data += chunk
        pos += 12 + length
    stride = width * bpp
    raw, prev, dark = zlib.decompress(data), bytearray(stride), 0
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        dark += sum(1 for x in range(0, stride, bpp) if sum(line[x:x + bpp]) < 128 * bpp)
        prev = line
    return dark


def test_ink_counts_dark_pixels_and_a_blank_page_has_none(tmp_path):
    from fpdf import FPDF
    blank = FPDF()
    blank.add_page()
    assert _ink(_render_first_page(bytes(blank.output()), tmp_path)) == 0


async def test_statement_in_three_formats_for_the_two_bodies_only(app_hub, bucks, tmp_path):
    pid, nhs = await _person(app_hub)
    await _three_lines(app_hub, bucks, pid)
    q = "/v1/statements?month=2026-10&council=E06000060&icb=QU9"
    h = {"X-API-Key": app_hub.keys["E06000060"]}
    s = (await app_hub.http.get(q, headers=h)).json()
    (person,) = s["persons"]
    items = {(i["package_id"], i["from"]): i for i in person["lines"]}
    # L1: 700/week 1-14 Oct = 1400.00; 770/week 15-31 Oct (17 days) = 1870.00
    assert items[("L1", "2026-10-01")]["cost_pence"] == 140_000
    assert items[("L1", "2026-10-15")]["cost_pence"] == 187_000
    # L2: 25.50 x 10 = 255.00 a week, 31 days = 1129.29 (1129.2857 half up)
    assert items[("L2", "2026-10-01")]["cost_pence"] == 112_929
    assert items[("L3", "2026-10-01")]["excluded_pence"] == items[("L3", "2026-10-01")]["cost_pence"]
    for i in person["lines"]:
        assert i["council_pence"] + i["icb_pence"] == i["eligible_pence"]
    for f in ("cost_pence", "council_pence", "icb_pence", "excluded_pence", "icb_owes_council_pence"):
        assert s["totals"][f] == sum(i[f] for i in person["lines"])
    assert s["totals"]["net_icb_to_council_pence"] == s["totals"]["icb_pence"]  # all council-paid
    assert nhs not in str(s)

    c = await app_hub.http.get(q + "&format=csv", headers=h)
    assert c.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(c.text)))
    assert rows[-1]["person_id"] == "TOTAL"
    assert sum(Decimal(r["icb_share"]) for r in rows[:-1]) == Decimal(rows[-1]["icb_share"]) \
        == Decimal(s["totals"]["icb_pence"]) / 100

    p = await app_hub.http.get(q + "&format=pdf", headers=h)
    assert p.headers["content-type"] == "application/pdf" and p.content.startswith(b"%PDF")
    assert _ink(_render_first_page(p.content, tmp_path)) > 500  # text and table lines, not a blank page

    # Another council, or a body without the funding group, gets the same 404 as for nothing at all.
    for key in (app_hub.keys["E08000025"], app_hub.keys["trust"]):
        assert (await app_hub.http.get(q, headers={"X-API-Key": key})).status_code == 404
    bad = await app_hub.http.get("/v1/statements?month=2026-13&council=E06000060&icb=QU9", headers=h)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "month"


async def test_council_file_package_records(app_hub, bucks):
    from tests.support import REPO
    changes = detention_to_move_scenario(random.Random(7), "pkg-file", date(2025, 1, 6))
    for c in changes[:3]:
        c["person"]["nhs_number"] = "9991100016"
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    body = (REPO / "tests" / "fixtures" / "council_files" / "bucks_packages.csv").read_bytes()
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=body,
                                headers={"X-API-Key": bucks, "Content-Type": "text/csv"})
    r = await council_file_done(app_hub.http, r, {"X-API-Key": bucks})  # rows recorded in the background
    assert r.status_code == 200, r.text
    report = r.json()["report"]
    assert [(e["record_id"], e["status"], e.get("package_id")) for e in report] == [
        ("PK-2001", "accepted", "L1"), ("PK-2002", "accepted", "L2"), ("PK-2003", "accepted", "L3"),
        ("PK-2004", "accepted", "L4"), ("PK-2005", "accepted", "L1"), ("PK-2006", "rejected", None),
        ("PK-2007", "rejected", None)]
    assert report[5]["errors"][0]["field"] == "row 6, column WEEKLY_COST"
    # Nobody on the register with that number: the access policy's one row error, nothing kept.
    assert report[6]["errors"] == [{"field": "row 7, column NHS_NO", "reason": TEXTS[Rule.NO_RELATIONSHIP]}]
    assert "quarantine_id" not in report[6] and report[6]["rule"] == "no-relationship"


async def test_oversight_report_shows_spend_suppressed_for_few_people(app_hub, bucks):
    _, oversight = await add_client(app_hub.hub.engine, "Bucks oversight", "E06000060", "council", ["reports:read"])
    h = {"X-API-Key": bucks}
    pids = []
    for n in range(8):
        pid, _ = await _person(app_hub, 100 + n)
        pids.append(pid)
        body = start(pid, f"o-{n}", f"O{n}", effective_date="2026-04-01", weekly_cost_pence=100_000)
        assert (await app_hub.http.post("/v1/packages", headers=h, json=body)).status_code == 201
        if n == 0:
            few = (await app_hub.http.get("/v1/reports/register-summary",
                                          headers={"X-API-Key": oversight})).json()["expenditure"]
            (row,) = few["rows"]
            assert row["people"] == "*" and row["committed_weekly"] == {"eligible": "*", "council": "*", "icb": "*"}
    report = (await app_hub.http.get("/v1/reports/register-summary", headers={"X-API-Key": oversight})).json()
    exp = report["expenditure"]
    (row,) = exp["rows"]
    assert (row["council"]["code"], row["commissioner"]["code"], row["people"]) == ("E06000060", "QU9", 10)
    # 8 x 1000.00 a week = 8000 a week; council 53.93% = 4314.40 -> 4300; ICB 3685.60 -> 3700
    assert row["committed_weekly"] == {"eligible": 8000, "council": 4300, "icb": 3700}
    assert exp["cohorts"][0]["cohort"] == "adult" and exp["total"]["people"] == 10
    assert exp["citation"] == "Worcs 18.2; Worcs Annex 3" and len(exp["trend"]) == 12
    today = england_day()
    if date(2026, 4, 1) <= today <= date(2027, 3, 31):
        assert row["projected_year"]["eligible"] >= row["spent_year_to_date"]["eligible"] > 0
    assert not any(pid in str(report) for pid in pids)
    # Another council's oversight group sees none of it.
    _, other = await add_client(app_hub.hub.engine, "Brum oversight", "E08000025", "council", ["reports:read"])
    assert (await app_hub.http.get("/v1/reports/register-summary",
                                   headers={"X-API-Key": other})).json()["expenditure"]["rows"] == []


async def test_a_persons_exception_needs_both_bodies_and_then_splits_the_statement(app_hub, bucks):
    """Worcs A2.2-A2.3 (case-by-case, both agreeing) and 8.5 (no unilateral change)."""
    from dataclasses import replace as dc_replace

    from hub.domain.agreements import FundingAgreement, FundingKind
    book = dc_replace(app_hub.hub.agreements, funding={("E06000060", "QU9"): FundingAgreement(
        FundingKind.DEFAULT_WITH_EXCEPTIONS, "60:40 with exceptions", "Worcs A2.1, A2.2", council_share_bp=6_000)})
    app_hub.hub.agreements = book
    app_hub.hub.packages._agreements = book
    _, icb = await add_client(app_hub.hub.engine, "BOB ICB finance", "QU9", "icb", ["packages:write", "s117:read"])
    pid, _ = await _person(app_hub)
    assert (await app_hub.http.post("/v1/packages", headers={"X-API-Key": bucks},
                                    json=start(pid, "d-1", "D1", effective_date="2026-10-01"))).status_code == 201
    body = {"person_id": pid, "kind": "exception", "council_share_percent": "20", "effective_from": "2026-10-11",
            "reference": "panel 2026-10-09"}
    wrong = await app_hub.http.post("/v1/split-decisions", headers={"X-API-Key": bucks}, json={**body, "kind": "panel"})
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "kind"
    r = await app_hub.http.post("/v1/split-decisions", headers={"X-API-Key": bucks}, json=body)
    assert r.status_code == 201 and r.json()["awaiting"] == "QU9"
    did = r.json()["decision_id"]
    q = "/v1/statements?month=2026-10&council=E06000060&icb=QU9"
    before = (await app_hub.http.get(q, headers={"X-API-Key": icb})).json()
    assert len(before["persons"][0]["lines"]) == 1  # not in force until the ICB agrees
    own = await app_hub.http.post(f"/v1/split-decisions/{did}/agree", headers={"X-API-Key": bucks})
    assert own.status_code == 409  # the proposer cannot agree with itself
    ok = await app_hub.http.post(f"/v1/split-decisions/{did}/agree", headers={"X-API-Key": icb})
    assert ok.status_code == 200 and ok.json()["status"] == "agreed"
    assert (await app_hub.http.post(f"/v1/split-decisions/{did}/agree", headers={"X-API-Key": icb})).status_code == 409
    after = (await app_hub.http.get(q, headers={"X-API-Key": icb})).json()
    first, second = after["persons"][0]["lines"]
    assert (first["to"], first["council_pence"]) == ("2026-10-10", 60_000)  # 10 days of 700.00 = 1000.00, 60%
    assert (second["from"], second["basis"], second["citation"]) == ("2026-10-11", "agreed exception",
                                                                     "Worcs A2.2, A2.3")
    assert second["council_pence"] == round(second["cost_pence"] * 0.2)
    earlier = await app_hub.http.post("/v1/split-decisions", headers={"X-API-Key": icb},
                                      json={**body, "effective_from": "2026-10-05"})
    assert earlier.status_code == 422 and earlier.json()["errors"][0]["field"] == "effective_from"
    _, brum = await add_client(app_hub.hub.engine, "Brum", "E08000025", "council", ["packages:write"])
    assert (await app_hub.http.post(f"/v1/split-decisions/{did}/agree", headers={"X-API-Key": brum})).status_code == 404


async def test_a_date_outside_the_contracts_range_is_named_as_such(app_hub, bucks):
    """A day that exists but lies outside 2000-2100 gets that reason, not "must be a date ... (a day
    that exists)", and no pydantic "Value error, " prefix; the value itself is never echoed."""
    pid, _ = await _person(app_hub)
    h = {"X-API-Key": bucks}
    r = await app_hub.http.post("/v1/packages", headers=h, json=start(pid, "pk-r1", "R1", effective_date="1990-01-01"))
    assert r.status_code == 422
    assert r.json()["errors"] == [{"field": "effective_date", "reason": "is before 2000-01-01: a package line's "
                                                                        "dates are from 2000-01-01 to 2100-12-31"}]
    r = await app_hub.http.post("/v1/packages", headers=h, json=start(pid, "pk-r2", "R2", end_date="9999-12-31"))
    assert r.status_code == 422
    assert r.json()["errors"] == [{"field": "end_date", "reason": "is after 2100-12-31: a package line's "
                                                                  "dates are from 2000-01-01 to 2100-12-31"}]
    assert "9999" not in r.text and "1990" not in r.text
