"""HL7 v2 over MLLP from the thirtieth outside review, over real TCP against a real hub process (an NHS
trust's interface engine as the socket client):

- a UTF-8 byte order mark before the MSH: the message was unreadable and its AR had an empty MSA-2;
- the HL7 null `""` is no value (a `""` date of birth made a detention an AE, a `""` given name was recorded
  as the name `""`);
- a frame ending in a batch trailer (BTS / FTS) is refused naming it, not "MSH appears more than once";
- an A13 refused by the access policy names the HL7 field (PV1-3.4), not the canonical `hospital_ods`;
- an unregistered MSH-4 that is not an ODS code (a name, say) is not logged;
- a message that did not map, sent again byte for byte while held in quarantine (an engine retrying its AE
  or AR), gets the first answer and quarantine id, and the quarantine holds it once."""

from __future__ import annotations

import uuid

import httpx
import pytest

from hub.ingest.nhs_number import nhs_number_problem
from tests.e2e.test_mllp import FIXTURES, Engine, ack_fields, fixture, msa, mllp_hub  # noqa: F401

pytestmark = pytest.mark.e2e

A01 = "ADT_A01_s3_detained.hl7"


def nhs_numbers() -> list[str]:  # 999 test numbers apart from tests/e2e/test_mllp.py's
    return [n for n in (f"999{i:07d}" for i in range(3000, 3400)) if nhs_number_problem(n) is None]


async def _held(hub, keys) -> dict[str, list[dict]]:  # noqa: ANN001
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        items = (await http.get("/v1/quarantine", headers={"X-API-Key": keys["trust"]},
                                params={"limit": 200})).json()["items"]
    held: dict[str, list[dict]] = {}
    for q in items:
        held.setdefault(q["source_message_id"], []).append(q)
    return held


async def test_what_real_engines_send_is_read_and_answered(mllp_hub) -> None:  # noqa: ANN001, F811
    hub, keys, _ = mllp_hub
    numbers = nhs_numbers()[0:10]
    run = uuid.uuid4().hex[:8]
    async with Engine(hub.mllp_port) as engine:
        # A byte order mark before the MSH: read, and answered with the control id.
        await engine.send_raw(b"\x0b\xef\xbb\xbf" + fixture(A01, numbers[0], f"BOM-{run}").encode() + b"\x1c\r")
        ack = await engine.next_ack()
        assert msa(ack)[1:3] == ["AA", f"BOM-{run}"], ack

        # HL7 nulls in optional fields: no value, the detention recorded.
        nulls = (fixture(A01, numbers[1], f"NULL-{run}").replace("TESTPATIENT^ALEX^J", 'TESTPATIENT^""^J')
                 .replace("|19800214|", '|""|').replace("HP20 1AA", '""'))
        ack = await engine.send(nulls)
        assert msa(ack)[1:3] == ["AA", f"NULL-{run}"], ack

        # A batch trailer after one message: AR naming it.
        ack = await engine.send(fixture(A01, numbers[2], f"BTS-{run}") + "\rBTS|1")
        assert msa(ack)[1:3] == ["AR", f"BTS-{run}"] and ack_fields(ack)["ERR"][0].startswith("ERR|BTS^1^"), ack
        assert "appears more than once" not in ack

        # An A13 naming another trust's hospital: AR naming the rule and PV1-3.4.
        a13 = (FIXTURES / "ADT_A13_cancel_discharge.hl7").read_text().replace("9990001006", numbers[3])
        a13 = a13.replace("RNU-A13-0001", f"A13-{run}").replace("WHITELEAF^WARD1^BED1^RNU", "WARD^1^1^R1A")
        ack = await engine.send(a13)
        assert msa(ack)[1:3] == ["AR", f"A13-{run}"] and "hospital-not-run-by-source" in ack, ack
        assert ack_fields(ack)["ERR"][0].startswith("ERR|PV1^1^3^207&PV1-3.4 "), ack

        # A sending facility that is not registered, and not an ODS code: AR, and not logged.
        ack = await engine.send(fixture(A01, numbers[4], f"FAC-{run}").replace("|RIO|RNU|", "|RIO|ZEBEDEE|"))
        assert msa(ack)[1:3] == ["AR", f"FAC-{run}"], ack

    held = await _held(hub, keys)
    assert not {f"BOM-{run}", f"NULL-{run}", f"BTS-{run}", f"A13-{run}"} & set(held)
    hub.stop()
    logs = hub.logs()
    assert "ZEBEDEE" not in logs and "(not an ODS code)" in logs
    for n in numbers:
        assert n not in logs


async def test_a_message_sent_again_while_held_is_answered_from_quarantine_once(mllp_hub) -> None:  # noqa: ANN001, F811
    hub, keys, _ = mllp_hub
    numbers = nhs_numbers()[10:20]
    run = uuid.uuid4().hex[:8]
    no_nhs = fixture(A01, numbers[0], f"RETRY-{run}").replace(f"{numbers[0]}^^^NHS^NH~", "")
    a11 = (FIXTURES / "ADT_A11_cancel_admit.hl7").read_text().replace("9990001006", numbers[1])
    a11 = a11.replace("RNU-A11-0001", f"A11R-{run}")
    async with Engine(hub.mllp_port) as engine:
        first = await engine.send(no_nhs)
        assert msa(first)[1:3] == ["AE", f"RETRY-{run}"] and "ERR|PID^1^3^101" in first, first
        first_a11 = await engine.send(a11)
        assert msa(first_a11)[1:3] == ["AR", f"A11R-{run}"] and "quarantine id" in first_a11, first_a11
        for _ in range(3):  # the engine retries: the same answer, the same quarantine id
            again = await engine.send(no_nhs)
            assert msa(again)[1:] == msa(first)[1:] and ack_fields(again)["ERR"] == ack_fields(first)["ERR"]
            again = await engine.send(a11)
            assert msa(again)[1:] == msa(first_a11)[1:]
        # Another message under the same control id (corrected, but still without an NHS number): held too.
        other = await engine.send(no_nhs.replace("TESTPATIENT", "CORRECTED"))
        assert msa(other)[1] == "AE" and msa(other)[3] != msa(first)[3], other

    held = await _held(hub, keys)
    assert len(held[f"A11R-{run}"]) == 1
    assert len(held[f"RETRY-{run}"]) == 2
    assert held[f"RETRY-{run}"][0]["quarantine_id"] != held[f"RETRY-{run}"][1]["quarantine_id"]
    assert {q["quarantine_id"] for q in held[f"RETRY-{run}"]} >= {msa(first)[3].rsplit(" ", 1)[1]}


async def test_frames_ended_by_fs_alone_are_each_answered(mllp_hub) -> None:  # noqa: ANN001, F811
    """An engine that ends its frames with FS and no CR (not MLLP, but sent): each message is answered.
    Before, the first waited for a CR; the second's start block threw it away unanswered and unrecorded."""
    hub, _, _ = mllp_hub
    numbers = nhs_numbers()[20:22]
    run = uuid.uuid4().hex[:8]
    async with Engine(hub.mllp_port) as engine:
        await engine.send_raw(b"".join(b"\x0b" + fixture(A01, n, f"FS{i}-{run}").encode() + b"\x1c"
                                       for i, n in enumerate(numbers)))
        acks = [await engine.next_ack(), await engine.next_ack()]
    assert [msa(a)[1:3] for a in acks] == [["AA", f"FS0-{run}"], ["AA", f"FS1-{run}"]], acks
