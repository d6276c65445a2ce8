"""HL7 v2 ADT over MLLP, end to end over real TCP: the hub as a real process
with S117_MLLP_PORT set, a trust's interface engine as a socket client, a
council's webhook receiver, and the REST API to check what was recorded."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from hub.mllp import Frame, MllpFramer, frame
from tests.e2e.conftest import SECRET, make_clients, subscribe_webhook
from tests.support import HubProcess, Receiver, assert_nothing_personal, free_port

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"
FIXTURE_NHS = "9990001006"


def fixture(name: str, nhs: str, control_id: str) -> str:
    text = (FIXTURES / name).read_bytes().decode()
    text = text.replace(FIXTURE_NHS, nhs)
    return re.sub(r"^(MSH(?:\|[^|\r]*){8}\|)[^|\r]*", lambda m: m.group(1) + control_id, text, count=1)


def ack_fields(ack: str) -> dict[str, list[str]]:
    segs = [s for s in ack.split("\r") if s]
    out: dict[str, list[str]] = {}
    for s in segs:
        out.setdefault(s[:3], []).append(s)
    return out


def msa(ack: str) -> list[str]:
    return ack_fields(ack)["MSA"][0].split("|")


class Engine:
    """A trust's interface engine: one MLLP connection, one ACK per message."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.framer = MllpFramer()
        self.acks: list[str] = []

    async def __aenter__(self) -> Engine:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def next_ack(self, timeout: float = 15.0) -> str:
        while not self.acks:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionError("hub closed the connection")
            self.acks += [f.payload.decode() for f in self.framer.feed(data) if isinstance(f, Frame)]
        return self.acks.pop(0)

    async def send(self, message: str) -> str:
        await self.send_raw(frame(message))
        return await self.next_ack()


def nhs_numbers() -> list[str]:
    from hub.ingest.nhs_number import nhs_number_problem

    return [n for n in (f"999{i:07d}" for i in range(2000, 2400)) if nhs_number_problem(n) is None]


@pytest.fixture
async def mllp_hub(tmp_path, sharing_file):
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    mllp_port = free_port()
    hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_MLLP_PORT=str(mllp_port))
    keys = await make_clients(hub.db_url)
    await hub.start()
    hub.mllp_port = mllp_port
    try:
        yield hub, keys, receiver
    finally:
        hub.stop()
        await receiver.stop()


async def test_detention_and_discharge_over_mllp_reach_the_council(mllp_hub):
    hub, keys, receiver = mllp_hub
    nhs = nhs_numbers()[0]
    run = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        await subscribe_webhook(http, keys, receiver)

        async with Engine(hub.mllp_port) as engine:
            admit = fixture("ADT_A01_s3_detained.hl7", nhs, f"A01-{run}")
            ack = await engine.send(admit)
            assert msa(ack)[:3] == ["MSA", "AA", f"A01-{run}"], ack
            assert ack.startswith("MSH|^~\\&|S117HUB|S117HUB|RIO|RNU|") and "|ACK^A01^ACK|" in ack

            # The same MSH-10 again: AA, the first answer, no second change.
            again = await engine.send(admit)
            assert msa(again)[1:3] == ["AA", f"A01-{run}"] and "duplicate" in msa(again)[3]
            # The same MSH-10 with another message: AE naming MSH-10, nothing recorded.
            reused = await engine.send(fixture("ADT_A03_discharge.hl7", nhs, f"A01-{run}"))
            assert msa(reused)[1:3] == ["AE", f"A01-{run}"], reused
            assert any(e.startswith("ERR|MSH^1^10") for e in ack_fields(reused)["ERR"]), reused

            ack = await engine.send(fixture("ADT_A03_discharge.hl7", nhs, f"A03-{run}"))
            assert msa(ack)[1:3] == ["AA", f"A03-{run}"], ack

        # Recorded: the trust finds the person and reads their s117 position.
        trust = {"X-API-Key": keys["trust"]}
        r = await http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": nhs})
        assert r.status_code == 200, r.text
        status = (await http.get(f"/v1/persons/{r.json()['person_id']}/s117", headers=trust)).json()
        changes = [c["change_type"] for c in status["register_service_level"]]
        assert sorted(changes) == ["detained", "left-hospital"]  # the duplicate added nothing

        # The council gets the signed FHIR message that entitlement started.
        def codes() -> list[str]:
            return [orjson.loads(x.body)["entry"][0]["resource"]["eventCoding"]["code"] for x in receiver.received]

        await receiver.wait_for(lambda: "s117-entitlement-started" in codes())
        assert all(x.signature_ok for x in receiver.received)
        started = next(x for x in receiver.received if "s117-entitlement-started" in x.body.decode())
        assert nhs in started.body.decode()  # Bucks' agreement includes identity

    hub.stop()
    logs = hub.logs()
    assert "mllp listening" in logs
    assert nhs not in logs and "TESTPATIENT" not in logs and "HP20 1AA" not in logs
    assert not re.search(r"(?<!\d)\d{10}(?!\d)", logs), "a ten-digit run (an NHS number?) reached the logs"


async def test_errors_are_answered_ae_or_ar_naming_the_hl7_field(mllp_hub):
    hub, keys, _ = mllp_hub
    numbers = nhs_numbers()
    run = uuid.uuid4().hex[:8]
    async with Engine(hub.mllp_port) as engine:
        # A bad check digit: the ingest finds it; the ACK names PID-3, not the canonical field.
        bad_nhs = numbers[1][:-1] + str((int(numbers[1][-1]) + 1) % 10)
        ack = await engine.send(fixture("ADT_A01_s3_detained.hl7", bad_nhs, f"BAD-{run}"))
        assert msa(ack)[1:3] == ["AE", f"BAD-{run}"], ack
        errs = ack_fields(ack)["ERR"]
        assert any(e.startswith("ERR|PID^1^3^") and "modulus-11" in e for e in errs), errs
        assert bad_nhs not in ack  # never echoes the value

        # No council of residence: AE naming PID-11.9; responsibility is never guessed.
        no_council = fixture("ADT_A01_s3_detained.hl7", numbers[2], f"NOLA-{run}").replace("^H^^E06000060", "^H")
        ack = await engine.send(no_council)
        assert msa(ack)[1] == "AE" and "ERR|PID^1^11^101&PID-11.9" in ack, ack

        # Cancel admit: AR, held in quarantine for review.
        ack = await engine.send(fixture("ADT_A11_cancel_admit.hl7", numbers[3], f"A11-{run}"))
        assert msa(ack)[1:3] == ["AR", f"A11-{run}"] and "no cancellation" in ack and "quarantine" in ack

        # Garbage between frames, and a message split across writes, on the same connection.
        a04 = (FIXTURES / "itk" / "ITK_ADT_A04.hl7").read_text().replace("\n", "\r")
        data = b"noise\r\n" + frame(a04)
        await engine.send_raw(data[:40])
        await asyncio.sleep(0.1)
        await engine.send_raw(data[40:])
        ack = await engine.next_ack()
        assert msa(ack)[1:3] == ["AR", "14038913245354"]  # RCB is not a registered facility

        # An informal admission: AA, nothing recorded.
        informal = fixture("ADT_A01_s3_detained.hl7", numbers[4], f"INF-{run}").replace("ZU5|2025|3|3|", "ZU5|2025|1|1|")
        ack = await engine.send(informal)
        assert msa(ack)[1] == "AA" and "no register change" in msa(ack)[3]

    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        trust = {"X-API-Key": keys["trust"]}
        held = (await http.get("/v1/quarantine", headers=trust)).json()["items"]
        by_id = {q["source_message_id"]: q for q in held}
        assert set(by_id) == {f"BAD-{run}", f"NOLA-{run}", f"A11-{run}"}
        assert all(q["channel"] == "mllp" for q in held)
        assert by_id[f"A11-{run}"]["errors"][0]["field"] == "MSH-9"
        one = (await http.get(f"/v1/quarantine/{by_id[f'A11-{run}']['quarantine_id']}", headers=trust)).json()
        assert "ADT^A11" in one["raw"]  # the HL7 message as sent, for the trust to correct
        r = await http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": numbers[4]})
        assert r.status_code == 404  # the informal admission left no trace

    # An oversize frame: AR, then the hub drops the connection.
    async with Engine(hub.mllp_port) as engine:
        big = fixture("ADT_A01_s3_detained.hl7", numbers[5], f"BIG-{run}") + "NTE|1||" + "x" * (1024 * 1024 + 10)
        await engine.send_raw(frame(big))
        ack = await engine.next_ack()
        assert msa(ack)[1:3] == ["AR", f"BIG-{run}"] and "size limit" in ack
        with pytest.raises(ConnectionError):
            await engine.next_ack()

    # The hub is still serving, and a sender that disconnects mid-frame does no harm.
    async with Engine(hub.mllp_port) as engine:
        await engine.send_raw(frame(fixture("ADT_A03_discharge.hl7", numbers[6], "x"))[:50])
    async with Engine(hub.mllp_port) as engine:
        ack = await engine.send(fixture("ADT_A08_s2_to_s3_update.hl7", numbers[6], f"A08-{run}"))
        assert msa(ack)[1:3] == ["AA", f"A08-{run}"], ack

    hub.stop()
    logs = hub.logs()
    assert_nothing_personal(logs, *numbers[:7] + [bad_nhs])


async def test_a_discharge_of_someone_not_on_the_register_is_acknowledged_and_not_kept(mllp_hub):
    hub, keys, _receiver = mllp_hub
    nhs = nhs_numbers()[-1]
    async with Engine(hub.mllp_port) as engine:
        ack = await engine.send(fixture("ADT_A03_discharge.hl7", nhs, "NOTREG-1"))
    assert msa(ack)[1:3] == ["AA", "NOTREG-1"]
    # The access policy's one answer: the same for someone in another trust's care (tests/security).
    assert "no register change: no person this source may report on" in ack
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        r = await http.post("/v1/persons/lookup", headers={"X-API-Key": keys["trust"]}, json={"nhs_number": nhs})
        assert r.status_code == 404  # no person record was made
        held = (await http.get("/v1/quarantine", headers={"X-API-Key": keys["trust"]})).json()["items"]
        assert not [q for q in held if q["source_message_id"] == "NOTREG-1"]


async def test_bad_input_is_refused_whole_and_msh10_is_echoed_as_sent(mllp_hub):
    """From an outside review: a batch, a repeated PID, MSH-10s that unescape alike, a bad escape in a
    name, and MSH-18, over the wire; nothing of a refused batch or an unreadable message is kept."""
    hub, keys, _ = mllp_hub
    numbers = nhs_numbers()[20:30]
    run = uuid.uuid4().hex[:8]
    a01 = "ADT_A01_s3_detained.hl7"
    async with Engine(hub.mllp_port) as engine:
        # A batch of two detentions: one AR naming the batch, neither recorded nor answered one by one.
        batch = ("FHS|^~\\&|RIO|RNU\rBHS|^~\\&|RIO|RNU\r" + fixture(a01, numbers[0], f"B1-{run}") + "\r"
                 + fixture(a01, numbers[1], f"B2-{run}") + "\rBTS|2\rFTS|1")
        ack = await engine.send(batch)
        assert msa(ack)[1] == "AR" and ack_fields(ack)["ERR"][0].startswith("ERR|FHS^1^"), ack
        assert "send each message in its own MLLP frame" in ack

        # Two PIDs naming different people: AE naming PID, quarantined.
        two = fixture(a01, numbers[2], f"PID2-{run}")
        pid = next(s for s in two.split("\r") if s.startswith("PID|"))
        two = two.replace(pid, pid + "\r" + pid.replace(numbers[2], numbers[3]))
        ack = await engine.send(two)
        assert msa(ack)[1:3] == ["AE", f"PID2-{run}"] and "PID appears twice" in ack, ack

        # Control ids that python-hl7 would unescape alike are two keys, echoed byte for byte.
        for i, control_id in enumerate((f"m4-{run}\\Xzz\\", f"m4-{run}\\Xqq\\", f"m5-{run}\\")):
            ack = await engine.send(fixture(a01, numbers[4 + i], control_id))
            assert msa(ack)[1:3] == ["AA", control_id] and "(duplicate)" not in ack, ack

        # A bad escape in the family name: AE naming PID-5, not a silently changed name.
        bad = fixture(a01, numbers[7], f"ESC-{run}").replace("TESTPATIENT^", "FOTHERINGAY\\Xzz\\^")
        ack = await engine.send(bad)
        assert msa(ack)[1:3] == ["AE", f"ESC-{run}"] and "ERR|PID^1^5^" in ack, ack

        # Declared UTF-8, sent Latin-1: AR naming MSH-18, nothing kept.
        latin = fixture(a01, numbers[8], f"CS-{run}").encode().replace(b"TESTPATIENT", b"M\xfcLLER")
        await engine.send_raw(frame(latin))
        ack = await engine.next_ack()
        assert msa(ack)[1:3] == ["AR", f"CS-{run}"] and "ERR|MSH^1^18^" in ack, ack

    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        trust = {"X-API-Key": keys["trust"]}
        held = {q["source_message_id"]: q for q in (await http.get("/v1/quarantine", headers=trust)).json()["items"]}
        assert f"PID2-{run}" in held and held[f"PID2-{run}"]["errors"][0]["field"] == "PID"
        assert f"ESC-{run}" in held and held[f"ESC-{run}"]["errors"][0]["field"] == "PID-5"
        assert not {f"B1-{run}", f"B2-{run}", f"CS-{run}"} & set(held)
        for n in (numbers[0], numbers[1], numbers[8]):
            r = await http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": n})
            assert r.status_code == 404  # neither message of the batch, nor the unreadable one, was kept
        for n in numbers[4:7]:
            r = await http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": n})
            assert r.status_code == 200  # each control id recorded its own detention

    hub.stop()
    logs = hub.logs()
    for n in numbers:
        assert n not in logs
    assert "FOTHERINGAY" not in logs and "TESTPATIENT" not in logs


async def test_a_field_sent_with_repetitions_is_refused_naming_it_and_held(mllp_hub):
    """From an outside review: a field the hub reads as one value, sent with repetitions, was cut to its first
    (PV2-10 `84~91` read as 84 days, a second council in ZU5-9 dropped) and the detention recorded. Over the
    wire: AE with an ERR naming each field, the message held in quarantine naming them, nothing recorded, no
    value in the ACK or the log; the same detention without the repetitions is recorded."""
    hub, keys, _ = mllp_hub
    nhs = nhs_numbers()[31]
    run = uuid.uuid4().hex[:8]
    child = fixture("ADT_A01_s3_detained.hl7", nhs, f"REP-{run}").replace(
        "ZU5|2025|3|3|1|202501061000|1", "PV2||||||||||84~91\rZU5|2025|3|3|1|202501061000|1|||E10000025~E10000014")
    async with Engine(hub.mllp_port) as engine:
        ack = await engine.send(child)
        assert msa(ack)[1:3] == ["AE", f"REP-{run}"] and "quarantine id" in msa(ack)[3], ack
        errs = ack_fields(ack)["ERR"]
        assert any(e.startswith("ERR|PV2^1^10^102&PV2-10 repeats: the field takes one value") for e in errs), errs
        assert any(e.startswith("ERR|ZU5^1^9^102&ZU5-9 repeats: the field takes one value") for e in errs), errs
        assert "E10000014" not in ack and "91" not in "".join(errs)

    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        trust = {"X-API-Key": keys["trust"]}
        held = [q for q in (await http.get("/v1/quarantine", headers=trust)).json()["items"]
                if q["source_message_id"] == f"REP-{run}"]
        assert len(held) == 1 and held[0]["channel"] == "mllp"
        assert {e["field"] for e in held[0]["errors"]} == {"PV2-10", "ZU5-9"}
        assert msa(ack)[3].endswith(held[0]["quarantine_id"])
        r = await http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": nhs})
        assert r.status_code == 404  # nothing of it recorded

        async with Engine(hub.mllp_port) as engine:  # the trust corrects it: one value each
            fixed = child.replace("84~91", "84").replace("E10000025~E10000014", "E10000025")
            ack = await engine.send(fixed.replace(f"REP-{run}", f"REP2-{run}"))
            assert msa(ack)[1:3] == ["AA", f"REP2-{run}"], ack
        r = await http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": nhs})
        assert r.status_code == 200

    hub.stop()
    logs = hub.logs()
    assert nhs not in logs and "E10000014" not in logs
