"""/asyncapi.json is a valid AsyncAPI 3.0 document (checked against the
official schema, tests/fixtures/asyncapi/PROVENANCE.md), and its outbound
message headers are exactly those hub.delivery.kafka_topic writes. The same
document is checked against records read back from a real broker in
tests/contract/test_kafka_topic_channel.py."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import orjson

from hub.delivery.kafka_topic import record_headers
from hub.fhir.namespaces import HUB_PERSON_ID_SYSTEM

SCHEMA = Path(__file__).resolve().parent.parent / "fixtures" / "asyncapi" / "asyncapi-3.0.0.schema.json"


def test_the_schema_copy_is_the_one_recorded():
    recorded = (SCHEMA.parent / "PROVENANCE.md").read_text()
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() in recorded


async def test_asyncapi_document_is_valid_asyncapi_3(app_hub):
    r = await app_hub.http.get("/asyncapi.json")
    assert r.status_code == 200
    doc = r.json()
    schema = json.loads(SCHEMA.read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
    assert errors == [], [e.message[:200] for e in errors[:5]]
    # A document that breaks the spec is caught: the check has teeth.
    broken = {**doc, "channels": {"x": {"address": 5}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


async def test_documented_headers_are_the_ones_written(app_hub):
    doc = (await app_hub.http.get("/asyncapi.json")).json()
    headers_schema = doc["components"]["messages"]["S117EventMessage"]["headers"]
    person = str(uuid.uuid4())
    body = orjson.dumps({"resourceType": "Bundle", "type": "message", "timestamp": "2026-11-30T12:00:00.000Z",
                         "entry": [{"resource": {"resourceType": "Patient", "identifier": [
                             {"system": HUB_PERSON_ID_SYSTEM, "value": person}]}}]})
    row = SimpleNamespace(event_id=str(uuid.uuid4()), message_id=str(uuid.uuid4()),
                          event_type="s117-entitlement-started", correlation_id="c-1", event_number=7,
                          created_at=datetime.now(UTC))
    for epoch in ("0", str(uuid.uuid4())):  # never restored; restored from a backup (hub/store/restores.py)
        written = {k: v.decode() for k, v in record_headers(row, body, "https://hub.example/fhir", epoch)}
        assert set(written) == set(headers_schema["properties"]) == set(headers_schema["required"])
        jsonschema.validate(written, headers_schema, format_checker=jsonschema.FormatChecker())
        assert written["event_number"] == "7" and written["ce_time"] == "2026-11-30T12:00:00.000Z"
        assert written["restore_epoch"] == epoch
