"""Packages and money end to end, the hub as a real uvicorn process: a
council file with package records -> the person query shows the split with
its citation -> October's recharge statement as JSON, CSV and PDF -> the
oversight report shows the spend -> a re-detention elsewhere notified late
moves the package's days from its date to the new pair, and October is
restated, saying so."""

from __future__ import annotations

import csv
import io
import random
import subprocess

import httpx
import pytest
import yaml

from hub.clients import add_client
from hub.sample_data import synthetic_nhs_number
from hub.store.db import create_engine
from tests.e2e.conftest import SHARING, make_clients
from tests.servers.poppler import require_poppler
from tests.support import HubProcess, REPO, assert_nothing_personal, council_file_done, put_on_register

pytestmark = pytest.mark.e2e

PACKAGES = REPO / "tests" / "fixtures" / "council_files" / "bucks_packages.csv"
PERSON = {"nhs_number": "9991100016", "given_name": "Alex", "family_name": "Testpatient",
          "birth_date": "1971-03-14", "postcode": "HP20 1AA"}


@pytest.fixture
def funding_sharing(tmp_path):
    """The e2e agreements, with Bucks and BOB ICB granted the funding group."""
    doc = yaml.safe_load(yaml.safe_dump(SHARING))
    for recipient in doc["agreements"][0]["recipients"]:
        recipient["field_groups"] = [*recipient["field_groups"], "funding"]
    path = tmp_path / "sharing.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_council_file_packages_to_statement_and_oversight(tmp_path, funding_sharing):
    require_poppler()
    hub = HubProcess(tmp_path, sharing_path=funding_sharing)
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, swift = await add_client(engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    _, oversight = await add_client(engine, "Bucks oversight", "E06000060", "council", ["reports:read"])
    await engine.dispose()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            person_id = await put_on_register(http, keys["trust"], PERSON)
            base = {"source_system": "RiO", "person": PERSON}

            # 1. The council's nightly file with package records.
            r = await http.post("/v1/council-files?format=swift_csv", content=PACKAGES.read_bytes(),
                                headers={"X-API-Key": swift, "Content-Type": "text/csv"})
            r = await council_file_done(http, r, {"X-API-Key": swift})  # rows recorded in the background
            assert r.status_code == 200, r.text
            assert (r.json()["accepted"], r.json()["rejected"]) == (5, 2)

            # 2. The person query shows the split with its citation, to a body granted `funding`.
            for org in ("E06000060", "QU9"):
                funding = (await http.get(f"/v1/persons/{person_id}/s117?as_of=2026-10-20",
                                          headers={"X-API-Key": keys[org]})).json()["funding"]
                assert funding["arrangement"]["citation"] == "Bucks 'Aligned Budget Funding Split'"
                assert funding["arrangement"]["council_percent"] == "53.93"
            l1 = [p for p in funding["packages"] if p["package_id"] == "L1"][-1]
            assert l1["split_per_week"]["citation"] == "Bucks 'Aligned Budget Funding Split'"
            # Worcestershire, not granted funding (nor a party), sees nothing.
            r = await http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": keys["E10000034"]})
            assert r.status_code == 404 or "funding" not in r.json()

            # 3. October's statement in all three formats, for the two bodies only.
            q = "/v1/statements?month=2026-10&council=E06000060&icb=QU9"
            s = (await http.get(q, headers={"X-API-Key": keys["QU9"]})).json()
            (person,) = s["persons"]
            assert {i["package_id"] for i in person["lines"]} == {"L1", "L2", "L3", "L4"}
            # L1 770.00 from 15 Oct + 700.00 before; L2 255.00; L3 FNC and L4 top-up excluded.
            eligible = 140_000 + 187_000 + 112_929
            assert s["totals"]["eligible_pence"] == eligible
            assert s["totals"]["excluded_pence"] == round(23_500 * 31 / 7) + round(4_000 * 31 / 7)
            assert s["totals"]["council_pence"] + s["totals"]["icb_pence"] == eligible
            assert s["totals"]["icb_owes_council_pence"] == s["totals"]["icb_pence"]
            c = await http.get(q + "&format=csv", headers={"X-API-Key": keys["E06000060"]})
            rows = list(csv.DictReader(io.StringIO(c.text)))
            assert rows[-1]["person_id"] == "TOTAL" and rows[-1]["eligible"] == f"{eligible / 100:.2f}"
            p = await http.get(q + "&format=pdf", headers={"X-API-Key": keys["E06000060"]})
            assert p.headers["content-type"] == "application/pdf"
            (tmp_path / "statement.pdf").write_bytes(p.content)
            subprocess.run(["pdftoppm", "-png", "-r", "30", "-f", "1", "-l", "1", str(tmp_path / "statement.pdf"),
                            str(tmp_path / "page")], check=True, timeout=60)
            text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "statement.pdf"), "-"], capture_output=True,
                                  text=True, check=True, timeout=60).stdout
            assert "recharge statement: 2026-10" in text and f"{s['totals']['icb_pence'] / 100:.2f}" in text
            assert list(tmp_path.glob("page*.png"))
            assert (await http.get(q, headers={"X-API-Key": keys["E10000034"]})).status_code == 404

            # 4. The oversight report shows the spend: one person's is suppressed ...
            report = (await http.get("/v1/reports/register-summary", headers={"X-API-Key": oversight})).json()
            (row,) = report["expenditure"]["rows"]
            assert (row["council"]["code"], row["commissioner"]["code"], row["people"]) == ("E06000060", "QU9", "*")
            assert row["projected_year"]["eligible"] == "*"
            # ... nine people's is shown, rounded: eight more on the register, each with a 500.00 a week line.
            rng = random.Random(117)
            lines = ["RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO,PACKAGE_ID,SERVICE_TYPE,PROVIDER_TYPE,PROVIDER,NEED,"
                     "WEEKLY_COST"]
            for n in range(8):
                other = {**PERSON, "nhs_number": synthetic_nhs_number(rng)}
                for change in (
                    {"source_system": "RiO", "person": other, "source_message_id": f"t-{n}-1",
                     "change_type": "detained", "effective_date": "2025-01-06", "legal_status_code": "03",
                     "hospital_ods": "RNU", "gp_practice_ods": "K82001", "residence_la_gss": "E06000060"},
                    {"source_system": "RiO", "person": other, "source_message_id": f"t-{n}-2",
                     "change_type": "left-hospital", "effective_date": "2025-04-07", "hospital_ods": "RNU"},
                ):
                    r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                    assert r.status_code == 202, r.text
                lines.append(f"PK-3{n:03d},PKG_START,01/10/2026,{other['nhs_number']},M{n},day opportunities,LA,"
                             f"BCC-PRV-00789,SC,500.00")
            r = await http.post("/v1/council-files?format=swift_csv", content="\n".join(lines).encode(),
                                headers={"X-API-Key": swift, "Content-Type": "text/csv"})
            r = await council_file_done(http, r, {"X-API-Key": swift})  # rows recorded in the background
            assert r.json()["accepted"] == 8, r.text
            report = (await http.get("/v1/reports/register-summary", headers={"X-API-Key": oversight})).json()
            (row,) = report["expenditure"]["rows"]
            assert row["people"] == 10  # 9, rounded to 5
            # 770.00 + 255.00 + 8 x 500.00 = 5025.00 a week -> 5000
            assert row["committed_weekly"]["eligible"] == 5000
            assert isinstance(row["projected_year"]["council"], int) and row["projected_year"]["council"] > 0
            oct_ = next(t for t in report["expenditure"]["trend"] if t["month"] == "2026-10")
            assert oct_["people"] == 10 and oct_["spend"]["eligible"] > 0

            # 5. Re-detained from Worcestershire on 15 October, notified after October was stated: the
            #    package's days from the 15th are charged to Worcestershire and BOB ICB (Worcs 4.3.3; the ICB
            #    stays, 4.4.2), up to the 14th to Bucks; October is restated, and says so.
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json={
                **base, "source_message_id": "t-3", "change_type": "detained", "effective_date": "2026-10-15",
                "legal_status_code": "03", "hospital_ods": "RNU", "gp_practice_ods": "K82001",
                "residence_la_gss": "E10000034"})
            assert r.status_code == 202, r.text
            s2 = (await http.get(q, headers={"X-API-Key": keys["QU9"]})).json()
            assert s2["issue"]["restated"] is True and s2["issue"]["restates"]["number"] >= 1
            mine = next(p for p in s2["persons"] if p["person_id"] == person_id)
            assert max(i["to"] for i in mine["lines"]) == "2026-10-14"
            moved = (await http.get("/v1/statements?month=2026-10&council=E10000034&icb=QU9",
                                    headers={"X-API-Key": keys["QU9"]})).json()
            (only,) = moved["persons"]
            assert only["person_id"] == person_id and min(i["from"] for i in only["lines"]) == "2026-10-15"
            assert all("responsible on the register from 2026-10-15" in i["note"] for i in only["lines"])
            p = await http.get(q + "&format=pdf", headers={"X-API-Key": keys["E06000060"]})
            (tmp_path / "restated.pdf").write_bytes(p.content)
            text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "restated.pdf"), "-"], capture_output=True,
                                  text=True, check=True, timeout=60).stdout
            assert "RESTATEMENT" in text
    finally:
        hub.stop()
    logs = hub.logs()
    assert "package recorded" in logs
    assert_nothing_personal(logs, "9991100016", "Testpatient", "1971-03-14")
