"""One log line for a register change sent alone over REST
(hub.observability.logging.RequestLine): `register change accepted` with the
request's own fields (`method`, `path`, `status_code`, `duration_ms`), where
there were two lines, that one and `request`. A request that recorded no
change keeps its `request` line; a change taken outside a request (MLLP, a
file) has its own line. The accepted line is written once the change is
durable, so a batch that failed and ran its changes again alone logs each once."""

from __future__ import annotations

import asyncio
import contextvars
import random
from datetime import date

from structlog.testing import capture_logs

from hub.ingest import group_commit
from hub.ingest.service import Client
from hub.observability.logging import ALLOWED_KEYS, carry_on_request_line, close_request_line, open_request_line
from hub.sample_data import detention_to_move_scenario

_REQUEST = {"method", "path", "status_code", "duration_ms"}
_ACCEPTED = {"source", "channel", "change_id", "person_id", "change_type", "count", "correlation_id", "status"}


def _of(logs: list[dict], cid: str) -> list[dict]:
    return [line for line in logs if line.get("correlation_id") == cid]


async def test_a_change_sent_alone_is_one_line_with_the_requests_fields(app_hub) -> None:  # noqa: ANN001
    change = detention_to_move_scenario(random.Random(7), "line", date(2025, 1, 6))[0]
    headers = {"X-API-Key": app_hub.keys["trust"]}
    with capture_logs() as logs:
        r = await app_hub.http.post("/v1/register-changes", json=change, headers={**headers, "X-Correlation-Id": "c0ffee-01"})
        again = await app_hub.http.post("/v1/register-changes", json=change,
                                        headers={**headers, "X-Correlation-Id": "c0ffee-02"})
        bad = await app_hub.http.post("/v1/register-changes", json={}, headers={**headers, "X-Correlation-Id": "c0ffee-03"})
    assert (r.status_code, again.status_code, bad.status_code) == (202, 202, 422)
    body = r.json()
    [line] = _of(logs, "c0ffee-01")
    assert line["event"] == "register change accepted"
    assert set(line) - {"event", "log_level"} == _ACCEPTED | _REQUEST
    assert set(line) - {"log_level"} <= ALLOWED_KEYS
    assert (line["method"], line["path"], line["status_code"]) == ("POST", "/v1/register-changes", 202)
    assert isinstance(line["duration_ms"], float)
    assert (line["change_id"], line["person_id"], line["count"], line["status"], line["change_type"], line["channel"]) \
        == (body["change_id"], body["person_id"], len(body["events"]), body["service_level"]["state"],
            change["change_type"], "rest")
    # A repeat (its first answer again) and a rejected change record nothing: their `request` line as before.
    assert [line["event"] for line in _of(logs, "c0ffee-02")] == ["request"]
    assert [line["event"] for line in _of(logs, "c0ffee-03")] == ["register change quarantined", "request"]


async def test_outside_a_request_the_accepted_line_is_its_own(app_hub) -> None:  # noqa: ANN001
    client = Client("mllp-trust", "MLLP trust", "RNU", "trust", ("register:write",))
    change = detention_to_move_scenario(random.Random(8), "alone", date(2025, 1, 6))[0]
    with capture_logs() as logs:
        outcome = await app_hub.hub.ingest.accept_mapped(client, change, b"raw", channel="mllp")
    assert outcome.status_code == 202
    [line] = [line for line in logs if line["event"] == "register change accepted"]
    assert set(line) - {"event", "log_level"} == _ACCEPTED
    assert line["change_id"] == outcome.body["change_id"]


async def test_a_batch_run_again_change_by_change_logs_each_change_once(app_hub, monkeypatch) -> None:  # noqa: ANN001
    """The first flush of a two-change batch fails: each change runs again
    alone and commits. Logged from the unit, each change had a line for the
    batch that was rolled back as well."""
    client = Client("batch-trust", "Batch trust", "RNU", "trust", ("register:write",))
    rng = random.Random(9)
    changes = [detention_to_move_scenario(rng, f"b{i}", date(2025, 1, 6))[0] for i in range(2)]  # two people
    flush, failed = group_commit.WriteBehind.flush, []

    async def failing_once(self) -> None:  # noqa: ANN001
        if not self.alone and not failed:  # inside a batch (not a unit alone)
            failed.append(True)
            raise RuntimeError("the batch fails")
        await flush(self)

    monkeypatch.setattr(group_commit.WriteBehind, "flush", failing_once)
    with capture_logs() as logs:
        outcomes = await asyncio.gather(*(app_hub.hub.ingest.accept_mapped(client, c, b"raw", channel="mllp")
                                          for c in changes))
    assert failed and [o.status_code for o in outcomes] == [202, 202]
    accepted = [line["change_id"] for line in logs if line["event"] == "register change accepted"]
    assert sorted(accepted) == sorted(o.body["change_id"] for o in outcomes)


def test_the_request_line_takes_one_line_of_its_own_id_while_open() -> None:
    def run() -> None:
        assert not carry_on_request_line("x", {"correlation_id": "c"})  # no request
        line, token = open_request_line("c")
        assert not carry_on_request_line("x", {"correlation_id": "other"})
        assert carry_on_request_line("first", {"correlation_id": "c", "n": 1})
        assert not carry_on_request_line("second", {"correlation_id": "c", "n": 2})
        close_request_line(line, token)
        assert (line.event, line.fields) == ("first", {"correlation_id": "c", "n": 1})
        assert not carry_on_request_line("late", {"correlation_id": "c"})

    contextvars.copy_context().run(run)


async def test_a_task_the_request_started_that_outlives_it_logs_its_own_line() -> None:
    """A task copies the context, the request's line with it: once the
    request's line is written, the task's lines go on their own."""
    line, token = open_request_line("c")
    later = asyncio.Event()

    async def task() -> bool:
        await later.wait()
        return carry_on_request_line("late", {"correlation_id": "c"})

    running = asyncio.create_task(task())
    close_request_line(line, token)
    later.set()
    assert await running is False
    assert line.event is None


async def test_a_fhir_message_is_one_line_too(app_hub) -> None:  # noqa: ANN001
    from tests.unit.test_fhir_inbound_api import URL, load, post

    with capture_logs() as logs:
        r = await post(app_hub, load("detained.json"))
    assert r.status_code == 200, r.text
    cid = r.headers["x-correlation-id"]
    [line] = _of(logs, cid)
    assert line["event"] == "register change accepted"
    assert (line["method"], line["path"], line["status_code"], line["channel"]) == ("POST", URL, 200, "fhir")
