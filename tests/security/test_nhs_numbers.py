"""Issue #6, item 5: strict NHS numbers on every channel. Probes replayed:
`²` gave a 500 on REST, lookup, FHIR and council files and a dropped MLLP
connection; Arabic-Indic and full-width digits were accepted and made a
second person for an existing NHS number; `0000000000` was accepted."""

from __future__ import annotations

import asyncio
import copy
import json
import unicodedata
from tests.support import council_file_done
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hub.clients import add_client
from hub.ingest.nhs_number import nhs_number_problem, normalise, with_check_digit
from hub.mllp import MllpServer, frame
from hub.store.schema import persons

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
VALID = "9990001006"  # the HL7 fixture's patient; passes the check digit
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
# Every way the probes spelled a number that is not ten ASCII digits.
PROBES = {
    "superscript two": VALID[:-1] + "²",
    "all superscripts": VALID.translate(SUPERSCRIPT),
    "arabic-indic": VALID.translate(ARABIC_INDIC),
    "full-width": VALID.translate(FULL_WIDTH),
    "one devanagari digit": VALID[:4] + "६" + VALID[5:],
    "all zeros": "0000000000",
}


def _non_ascii_digit_chars() -> list[str]:
    """Every code point Python's isdigit()/isdecimal()/isnumeric() takes for a
    digit that is not 0-9: Nd (Arabic-Indic, full-width, Devanagari...), No
    (superscripts, circled) and Nl."""
    out = []
    for cp in range(0x80, 0x30000):
        ch = chr(cp)
        if unicodedata.category(ch) in ("Nd", "No", "Nl") and (ch.isdigit() or ch.isdecimal() or ch.isnumeric()):
            out.append(ch)
    return out


UNICODE_DIGITS = _non_ascii_digit_chars()


def test_the_unicode_digit_classes_are_covered():
    cats = {unicodedata.category(c) for c in UNICODE_DIGITS}
    assert {"Nd", "No"} <= cats
    assert {"²", "٣", "３", "①", "६"} <= set(UNICODE_DIGITS)


@settings(max_examples=500, deadline=None)
@given(first_nine=st.text(alphabet="0123456789", min_size=9, max_size=9),
       position=st.integers(0, 9), replacement=st.sampled_from(UNICODE_DIGITS))
def test_any_unicode_digit_anywhere_is_refused_and_never_raises(first_nine, position, replacement):
    number = with_check_digit(first_nine) or first_nine + "0"
    probe = number[:position] + replacement + number[position + 1:]
    reason = nhs_number_problem(probe)
    assert reason is not None and reason.startswith("must be 10 digits")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_any_text_gets_a_reason_or_is_ten_ascii_digits(text):
    reason = nhs_number_problem(text)  # never raises
    if reason is None:
        digits = normalise(text)
        assert len(digits) == 10 and all("0" <= c <= "9" for c in digits) and digits != "0000000000"


def test_all_zeros_and_bad_check_digits_are_refused():
    assert nhs_number_problem("0000000000") is not None
    assert nhs_number_problem("000 000 0000") is not None
    assert nhs_number_problem(VALID) is None and nhs_number_problem("999 000 1006") is None
    assert nhs_number_problem("9990001007") == "fails the modulus-11 check digit"
    assert nhs_number_problem(None) is not None and nhs_number_problem(9990001006) is not None  # type: ignore[arg-type]
    assert nhs_number_problem("9990001006\u00a0") is not None  # only ASCII spaces are dropped


def _change(nhs_number: str, smid: str) -> dict:
    return {"source_system": "RiO", "source_message_id": smid, "change_type": "detained",
            "effective_date": "2025-01-06", "legal_status_code": "03", "hospital_ods": "RNU",
            "gp_practice_ods": "K82001", "residence_la_gss": "E06000060",
            "person": {"nhs_number": nhs_number, "given_name": "Alex", "family_name": "Testpatient"}}


async def _people(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(persons))).scalar_one()


@pytest.mark.parametrize("name", PROBES)
async def test_rest_answers_a_named_422_and_makes_no_second_person(app_hub, name):
    h = {"X-API-Key": app_hub.keys["trust"]}
    assert (await app_hub.http.post("/v1/register-changes", headers=h, json=_change(VALID, "ok-1"))).status_code == 202
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=_change(PROBES[name], f"probe-{name}"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "person.nhs_number" in {e["field"] for e in r.json()["errors"]}
    assert await _people(app_hub) == 1


@pytest.mark.parametrize("name", PROBES)
async def test_lookup_answers_a_named_422(app_hub, name):
    r = await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": app_hub.keys["trust"]},
                                json={"nhs_number": PROBES[name]})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "nhs_number"


@pytest.mark.parametrize("name", PROBES)
async def test_fhir_answers_a_422_operation_outcome(app_hub, name):
    bundle = json.loads((FIXTURES / "fhir_inbound" / "detained.json").read_text())
    text = json.dumps(bundle).replace('"9990000018"', json.dumps(PROBES[name]))
    r = await app_hub.http.post("/v1/fhir/$process-message", content=text.encode(),
                                headers={"X-API-Key": app_hub.keys["trust"], "Content-Type": "application/fhir+json"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert any("identifier" in " ".join(i.get("expression", [])) or "NHS" in i.get("diagnostics", "")
               for i in body["issue"] if i["severity"] == "error")


@pytest.mark.parametrize("name", PROBES)
async def test_a_council_file_row_is_rejected_by_column_not_a_500(app_hub, name):
    _, key = await add_client(app_hub.hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    header = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NOTIFIED_DATE,NHS_NO,SURNAME,FORENAME,DOB,POSTCODE,LA_GSS,NFA,GP_ODS,"
              "REVIEW_REASON,LA_AGREES,NHS_AGREES,PERSON_INVOLVED,END_REASONS,PARTICIPANTS")
    row = f"SW-1,REVIEW_DONE,01/07/2025,01/07/2025,{PROBES[name]},Testpatient,Alex,14/03/1971,WR1 2AA,E10000034,N,K82001,,,,,,"
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=f"{header}\n{row}\n".encode(),
                                headers={"X-API-Key": key, "Content-Type": "text/csv"})
    r = await council_file_done(app_hub.http, r, {"X-API-Key": key})  # rows recorded in the background
    assert r.status_code == 200, r.text
    (entry,) = r.json()["report"]
    assert entry["status"] == "rejected"
    assert any("NHS_NO" in e["field"] for e in entry["errors"])


def _a01(nhs_number: str, control_id: str) -> bytes:
    text = (FIXTURES / "hl7v2" / "ADT_A01_s3_detained.hl7").read_text().replace("\n", "\r")
    return text.replace(VALID, nhs_number).replace("RNU-A01-0001", control_id).encode()


@pytest.mark.parametrize("name", PROBES)
async def test_mllp_answers_ae_naming_pid_3(app_hub, name):
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    ack = await server.handle(_a01(PROBES[name], f"probe-{len(name)}"))
    segments = ack.split("\r")
    assert segments[1].startswith("MSA|AE|"), ack
    assert any(s.startswith("ERR|PID^1^3^") and "nhs_number" in s for s in segments[2:]), ack
    server._sock.close()


async def test_mllp_over_tcp_answers_every_probe_on_one_connection(app_hub):
    """The probe with `²` used to drop the connection; now each message gets
    its ACK and the connection stays up for the next one."""
    stop = asyncio.Event()
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    task = asyncio.create_task(server.serve(stop))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for i, probe in enumerate(PROBES.values()):
            writer.write(frame(_a01(probe, f"tcp-{i}")))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 10)
            assert b"MSA|AE|" in ack, ack
        writer.write(frame(_a01(VALID, "tcp-ok")))
        await writer.drain()
        assert b"MSA|AA|" in await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 10)
        writer.close()
    finally:
        stop.set()
        await task


async def test_any_exception_inside_the_mllp_handler_still_answers(app_hub, monkeypatch):
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)

    async def broken(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("store exploded")

    monkeypatch.setattr(app_hub.hub.ingest, "accept_mapped", broken)
    ack = await server.handle(_a01(VALID, "boom-1"))
    assert ack.split("\r")[1].startswith("MSA|AE|boom-1|"), ack
    monkeypatch.setattr(server, "_source", broken)
    assert "MSA|AE|boom-2|" in await server.handle(_a01(VALID, "boom-2"))
    assert "\rMSA|AR||" in await server.handle(b"\xff\xfe garbage that is not HL7")
    server._sock.close()
