"""File export channel: NDJSON lines, one per event, in order, 0600, fsync'd
before the delivery is marked delivered; and the subscription fields of the
kafka and file channels."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import orjson

from hub.delivery.file_export import FileExportDeliverer, append_durably, export_path
from hub.delivery.kafka_topic import topic_problem
from hub.fhir.validate import validate_message
from tests.support import push_scenario

COUNCIL = "E06000060"


async def _push(app_hub, seed: int = 11) -> list[dict]:  # noqa: ANN001
    return await push_scenario(app_hub, seed)


def _deliverer(app_hub, export_dir: Path) -> FileExportDeliverer:  # noqa: ANN001
    return FileExportDeliverer(app_hub.hub.engine, app_hub.hub.protector, export_dir,
                               backoff_base=0.0, backoff_cap=0.0)


async def test_messages_are_appended_as_ndjson_in_order_then_marked_delivered(app_hub, tmp_path):
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    r = await app_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "file"})
    assert r.status_code == 201, r.text
    assert r.json()["channel"] == "file" and r.json()["url"] is None and "secret" not in r.json()
    sub = r.json()["subscription_id"]
    events = await _push(app_hub)
    export_dir = tmp_path / "exports"
    deliverer = _deliverer(app_hub, export_dir)
    written = 0
    for _ in range(50):  # until idle
        if not (n := await deliverer.run_once()):
            break
        written += n

    log = (await app_hub.http.get(f"/v1/subscriptions/{sub}/deliveries", headers=h)).json()["items"]
    assert log and all(d["status"] == "delivered" and d["attempts"] == 1 for d in log)
    assert written == len(log)

    path = export_path(export_dir, COUNCIL, datetime.now(UTC))
    assert path.parent == export_dir / COUNCIL
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert len(lines) == len(log)
    # One line per event, nothing twice, in the order the events happened.
    ids = [line["event_id"] for line in lines]
    assert len(set(ids)) == len(ids)
    order = {e["event_id"]: i for i, e in enumerate(events)}
    assert [order[i] for i in ids] == sorted(order[i] for i in ids)
    # And in the order they were queued for the subscription (the delivery log is newest first).
    assert ids == [d["event_id"] for d in reversed(log)]
    by_id = {d["event_id"]: d for d in log}
    # Event numbers: 1, 2, 3, ... in the order of the lines, as the delivery log numbers them.
    assert [line["event_number"] for line in lines] == list(range(1, len(lines) + 1))
    for line in lines:
        assert set(line) == {"event_number", "event_id", "message_id", "event_type", "restore_epoch", "message"}
        assert line["restore_epoch"] == "0"  # never restored (tests/unit/test_restore_epoch_channels.py: after)
        assert line["event_number"] == by_id[line["event_id"]]["event_number"]
        assert line["message_id"] == by_id[line["event_id"]]["message_id"]
        assert line["event_type"] == by_id[line["event_id"]]["event_type"]
        validate_message(line["message"])
    assert "s117-entitlement-started" in {line["event_type"] for line in lines}

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # Nothing more to write: a further run leaves the file as it is.
    size = path.stat().st_size
    assert await deliverer.run_once() == 0
    assert path.stat().st_size == size


async def test_a_failed_write_is_retried_and_holds_back_the_rest(app_hub, tmp_path):
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    sub = (await app_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "file"})).json()["subscription_id"]
    await _push(app_hub, seed=12)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")  # export_dir is a file: every write fails
    assert await _deliverer(app_hub, blocked).run_once() == 1  # the head only; the rest wait behind it
    log = (await app_hub.http.get(f"/v1/subscriptions/{sub}/deliveries", headers=h)).json()["items"]
    head = log[-1]
    assert head["status"] == "pending" and head["attempts"] == 1 and head["last_error"]
    assert all(d["attempts"] == 0 for d in log[:-1])
    good = _deliverer(app_hub, tmp_path / "exports")
    for _ in range(50):
        if not await good.run_once():
            break
    log = (await app_hub.http.get(f"/v1/subscriptions/{sub}/deliveries", headers=h)).json()["items"]
    assert all(d["status"] == "delivered" for d in log) and log[-1]["attempts"] == 2


def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path):
    path = tmp_path / "exports" / COUNCIL / "2025-01-06.ndjson"
    append_durably(path, b'{"event_id":"a"}\n')
    with open(path, "ab") as f:
        f.write(b'{"event_id":"b","mess')  # a crash mid-write
    append_durably(path, b'{"event_id":"b"}\n')
    assert [orjson.loads(x)["event_id"] for x in path.read_bytes().splitlines()] == ["a", "b"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_one_file_subscription_per_organisation(app_hub):
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    assert (await app_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "file"})).status_code == 201
    r = await app_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "file"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "channel"


async def test_file_and_kafka_subscriptions_take_the_right_fields(app_hub):
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    for body, words in [
        ({"channel": "file", "url": "https://x.example/h"}, "takes no url"),
        ({"channel": "file", "topic": "s117.out.e06000060"}, "topic is for kafka"),
        ({"channel": "webhook", "url": "https://x.example/h", "topic": "t"}, "topic is for kafka"),
        ({"channel": "kafka", "secret": "x" * 40}, "takes no url or secret"),
        ({"channel": "kafka", "topic": "bad topic!"}, "topic"),
        ({"channel": "kafka", "topic": "x" * 201}, "topic"),
        ({"channel": "sftp"}, "channel"),
    ]:
        r = await app_hub.http.post("/v1/subscriptions", headers=h, json=body)
        assert r.status_code == 422 and words in r.text, (body, r.text)


async def test_kafka_subscriptions_need_a_kafka_cluster(app_hub):
    # The embedded test hub has no Kafka: a kafka subscription is refused, naming the field.
    assert app_hub.hub.kafka_deliverer is None
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[COUNCIL]},
                                json={"channel": "kafka"})
    assert r.status_code == 422
    assert r.json()["errors"] == [{"field": "channel", "reason": r.json()["errors"][0]["reason"]}]
    assert "Kafka" in r.json()["errors"][0]["reason"]


def test_topic_names_outside_the_hubs_namespace_or_the_subscribers_own():
    assert topic_problem("s117.out.e06000060", COUNCIL) is None
    assert topic_problem("s117.out.e06000060.test", COUNCIL) is None
    assert topic_problem("bucks.s117-inbound_v1", COUNCIL) is None
    assert topic_problem("s117.events", COUNCIL)  # the hub's own bus
    assert topic_problem("s117.out.e08000025", COUNCIL)  # another council's
    assert topic_problem("s117.out.e060000600", COUNCIL)
    assert topic_problem("__consumer_offsets", COUNCIL)
    assert topic_problem("..", COUNCIL)
    assert topic_problem("a/b", COUNCIL)
