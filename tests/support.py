"""Test harness: real servers on loopback (the hub as a uvicorn subprocess, a
real webhook receiver), free ports, synthetic data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import httpx
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

from hub.crypto import verify_webhook_request
from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE
from hub.domain.dates import england_day

REPO = Path(__file__).resolve().parent.parent

_TEN_DIGITS = re.compile(r"(?<!\d)\d{10}(?!\d)")


def assert_nothing_personal(logs: str, *values: str) -> None:
    """None of `values` (the test's NHS numbers, names, dates of birth, postcodes...) is in the hub's
    logs, nor any run of ten digits (an NHS number the test did not think of)."""
    for value in values:
        assert value not in logs, "a personal value reached the logs"
    assert not _TEN_DIGITS.search(logs), "a ten-digit run (an NHS number?) reached the logs"


def detention(nhs: str, run: str, *, hospital: str = "RNU", council: str = "E06000060", gp: str = "K82001",
              **person: str) -> list[dict]:
    """A trust's two changes for one synthetic person: detained under s3 on
    2025-01-06 (living in `council`, registered with `gp`), left hospital on
    2025-04-07: from then entitled to s117 aftercare. `person`: more of the
    person's details (given_name, ...); `run` makes the source message ids."""
    base = {"source_system": "RiO", "person": {"nhs_number": nhs, **person}}
    return [
        {**base, "source_message_id": f"{run}-1", "change_type": "detained", "effective_date": "2025-01-06",
         "legal_status_code": "03", "hospital_ods": hospital, "gp_practice_ods": gp, "residence_la_gss": council},
        {**base, "source_message_id": f"{run}-2", "change_type": "left-hospital", "effective_date": "2025-04-07",
         "hospital_ods": hospital},
    ]


async def put_on_register(http: httpx.AsyncClient, trust_key: str, person: dict, run: str = "t") -> str:
    """A trust's `detention` of `person` (its NHS number and details) posted to a running hub, each answered
    202: the hub person id."""
    details = {k: v for k, v in person.items() if k != "nhs_number"}
    for change in detention(person["nhs_number"], run, **details):
        r = await http.post("/v1/register-changes", headers={"X-API-Key": trust_key}, json=change)
        assert r.status_code == 202, r.text
    return r.json()["person_id"]


async def read_http_request(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes]:
    """One HTTP/1.1 request from a kept-alive connection (a `Content-Length`
    body, as the hub's webhook client sends): its headers, names lower-cased,
    and its body. The tests' raw receivers and bench/bench_delivery.py's use it."""
    head = await reader.readuntil(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return headers, await reader.readexactly(int(headers.get("content-length", "0")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Every distinct FHIR message a Receiver got in this test session (capped):
# tests/integration/test_fhir_validator.py runs the FHIR validator over them
# too (it runs after tests/e2e in a whole-suite run).
CAPTURED_MESSAGES: dict[str, bytes] = {}
CAPTURE_LIMIT = 60


def capture(body: bytes, message_id: str | None) -> None:
    if message_id and len(CAPTURED_MESSAGES) < CAPTURE_LIMIT:
        try:  # S117 message Bundles only: a FHIR subscription-notification wraps one (its own test checks it)
            if orjson.loads(body).get("type") != "message":
                return
        except (orjson.JSONDecodeError, AttributeError):
            pass
        CAPTURED_MESSAGES.setdefault(message_id, body)


@dataclass
class Received:
    org: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    status: int = 204  # what the receiver answered


@dataclass
class Receiver:
    """A council's webhook endpoint: records every POST, verifies signatures."""

    secret: str
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    fail_with: int | None = None  # answer every POST with this status (a broken subscriber)
    delay: float = 0.0  # seconds before answering (a slow subscriber)
    tls: dict[str, Any] | None = None  # uvicorn's ssl_* options: an https endpoint (mutual TLS with ssl_cert_reqs)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task | None = None

    def url(self, org: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hooks/{org}"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hooks/{org}")
        async def hook(org: str, request: Request) -> Response:
            body = await request.body()
            ok = verify_webhook_request(self.secret, request.headers, body)
            status = self.fail_with or 204
            self.received.append(Received(org, dict(request.headers), body, ok, status))
            capture(body, request.headers.get("S117-Message-Id"))
            if self.delay:
                await asyncio.sleep(self.delay)
            return Response(status_code=status)

        return app

    async def start(self) -> None:
        self._server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=self.port,
                                                     log_config=None, lifespan="off", **(self.tls or {})))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server:
            self._server.should_exit = True
            await self._task
            self._server = None

    def event_ids(self, org: str | None = None) -> list[str]:
        return [r.headers["s117-event-id"] for r in self.received if org is None or r.org == org]

    async def wait_for(self, predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s; received {len(self.received)} messages")
            await asyncio.sleep(0.05)


class HubProcess:
    """`s117hub serve` as a real process (so it can be SIGKILLed)."""

    def __init__(self, tmp: Path, sharing_path: Path | None = None, db_url: str | None = None,
                 bus_url: str = "sql", own_group: bool = False, **env: str) -> None:
        self.tmp = tmp
        # own_group: the hub in a process group (a session) of its own, so `kill_group` can SIGKILL
        # the front and its worker processes at once, as a host's crash or an OOM kill of the unit does.
        self.own_group = own_group
        self.port = free_port()
        self.db_url = db_url or f"sqlite+aiosqlite:///{tmp / 'hub.db'}"
        if db_url is None and "S117_SQLITE_PAGE_SIZE" not in env and not (tmp / "hub.db").exists():
            from tests.conftest import _template_store  # the migrated empty store, copied (not migrated again)

            shutil.copyfile(_template_store(), tmp / "hub.db")
        self.log_path = tmp / "hub.log"
        self.env = {
            **os.environ,
            "S117_DATABASE_URL": self.db_url,
            "S117_DATA_KEY_FILE": str(tmp / "data.key"),
            "S117_PORT": str(self.port),
            "S117_BUS_URL": bus_url,
            "S117_CANONICAL_BASE": DEFAULT_CANONICAL_BASE,  # required on PostgreSQL
            # Review reminders would add events these tests do not count; the
            # scanner has tests of its own (tests/unit/test_review_scheduler.py).
            "S117_REVIEW_SCAN_INTERVAL_SECONDS": "0",
            # Likewise the children's notices (tests/e2e/test_child_notices.py turns them on).
            "S117_CHILD_NOTICE_SCAN_INTERVAL_SECONDS": "0",
            "S117_WORKER_POLL_SECONDS": "0.05",
            "S117_WEBHOOK_BACKOFF_BASE_SECONDS": "0.1",
            "S117_WEBHOOK_BACKOFF_CAP_SECONDS": "0.5",
            # Short timeout, so a delivery leased by a hub that was SIGKILLed
            # mid-POST is free again soon after the restart (timeout + margin).
            "S117_WEBHOOK_TIMEOUT_SECONDS": "3",
            # The test receivers listen on loopback: allowed by the operator setting.
            "S117_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            **({"S117_SHARING_AGREEMENTS_PATH": str(sharing_path)} if sharing_path else {}),
            **env,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        """Started, and `/health/ready` says so: the store answers and the
        workers run, in a worker process of their own too (`s117hub serve`
        puts them apart on two cores: its first seconds would otherwise have
        no dispatcher)."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "serve"], cwd=REPO, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=self.own_group)
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hub exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
                try:
                    got = await http.get(self.base_url + "/health/ready")
                    if got.status_code == 200:
                        return
                except httpx.TransportError:
                    got = None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"hub did not become ready ({got.text if got is not None else 'no answer'}): "
                                       + self.log_path.read_text()[-2000:])
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, nothing is flushed by the process."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """`sig` to every process of the hub's group at once (the front and its worker processes:
        `own_group` must be set), then wait for the front."""
        assert self.proc is not None and self.own_group
        os.killpg(self.proc.pid, sig)
        self.proc.wait(20)

    def workers(self) -> dict[str, int]:
        """The front's worker processes still running, by role (`back`, `deliver`, or `all`)."""
        assert self.proc is not None
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) != self.proc.pid:
                continue
            role = next((e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"S117_WORKER_ROLE=")), None)
            if role:
                found[role] = int(entry.name)
        return found

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.own_group:  # nothing of this hub left behind (a worker the test orphaned)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


async def push_scenario(app_hub, seed: int, run_id: str | None = None) -> list[dict]:  # noqa: ANN001
    """Push one synthetic person's detention-to-move changes through the REST
    API as the test trust, then dispatch until the log is drained; returns the
    events the hub reported, in order."""
    import random
    import uuid
    from datetime import date

    from hub.sample_data import detention_to_move_scenario

    run_id = run_id or f"scn-{seed}-{uuid.uuid4().hex[:6]}"
    events: list[dict] = []
    for c in detention_to_move_scenario(random.Random(seed), run_id, date(2025, 1, 6)):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
        events += r.json()["events"]
    while await app_hub.hub.dispatcher.run_once():
        pass
    return events


async def left_hospital_80_days_ago(http, trust_key: str, seed: int, run: str):  # noqa: ANN001, ANN201
    """A person detained, then discharged 80 days ago, posted by the trust: their first review (within 3
    months, Worcs 14.1) falls due in about 10 days. Returns (the changes posted, the day they left, their
    person id)."""
    import random
    from datetime import date, timedelta

    from hub.sample_data import detention_to_move_scenario

    left = england_day() - timedelta(days=80)
    changes = detention_to_move_scenario(random.Random(seed), run, left - timedelta(days=90))[:3]
    changes[2]["effective_date"] = left.isoformat()
    for c in changes:
        r = await http.post("/v1/register-changes", headers={"X-API-Key": trust_key}, json=c)
        assert r.status_code == 202, r.text
    return changes, left, r.json()["person_id"]


async def council_file_done(http, response, headers: dict[str, str], timeout: float = 60.0):  # noqa: ANN001, ANN201
    """A council file's receipt once processed: `POST /v1/council-files` answers
    202 when the file is stored and its rows are recorded in the background;
    this polls `GET` (the Location) until it is no longer `processing`. Any
    other answer is returned as it is."""
    if response.status_code != 202:
        return response
    deadline = time.monotonic() + timeout
    while True:
        r = await http.get(response.headers["location"], headers=headers)
        if r.status_code != 200 or r.json().get("status") != "processing":
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"council file still processing after {timeout}s: {r.text[:300]}")
        await asyncio.sleep(0.05)


async def subscribe_webhook(hub_client, org: str, url: str, secret: str) -> str:  # noqa: ANN001
    """A webhook subscription for `org` (its key in `hub_client.keys`) to `url`; its id."""
    r = await hub_client.http.post("/v1/subscriptions", headers={"X-API-Key": hub_client.keys[org]},
                                   json={"url": url, "secret": secret})
    assert r.status_code == 201, r.text
    return r.json()["subscription_id"]


async def cut_off_uploads(port: int, target: str, head: str, body: bytes, pause: float = 0.3) -> int:
    """POST half of `body` to `target` on a real hub and close the connection, once with the whole
    length declared and once chunked (the sender's process killed, a dropped link): how many were sent.
    `head`: the request's other header lines (each ending in CRLF)."""
    half = body[: len(body) // 2]
    sent = 0
    for framing, data in ((f"Content-Length: {len(body)}", half),
                          ("Transfer-Encoding: chunked", b"%x\r\n" % len(half) + half + b"\r\n")):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {target} HTTP/1.1\r\nHost: hub\r\n{head}{framing}\r\n\r\n".encode() + data)
        await writer.drain()
        await asyncio.sleep(pause)
        writer.close()
        sent += 1
    return sent
