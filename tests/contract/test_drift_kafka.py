"""A drift alert on the Kafka channel (a real broker): one record on the
council's topic, headers, key and value as /asyncapi.json describes them; an
event about a body has no person, so its key is the message id and
ce_subject is empty."""

from __future__ import annotations

import uuid

import jsonschema
import orjson
import pytest

from hub.drift_alerts import DriftAlerts, event_id_for
from hub.fhir.drift import read_drift
from hub.fhir.validate import validate_message
from hub.reconciliation import Reconciler
from hub.sharing import SharingAgreements
from tests.contract.test_kafka_topic_channel import _consume, _hub
from tests.unit.test_drift_alerts import X, listing
from tests.unit.test_reconciliation_api import send

pytestmark = pytest.mark.integration

COUNCIL = "E06000060"


async def test_a_drift_alert_reaches_the_councils_topic_as_asyncapi_describes(tmp_path, kafka_bootstrap):
    async for app_hub in _hub(tmp_path, kafka_bootstrap):
        hub = app_hub.hub
        from hub.clients import add_client

        app_hub.keys["reader"] = (await add_client(hub.engine, "Bucks list", COUNCIL, "council", ["s117:read"]))[1]
        h = {"X-API-Key": app_hub.keys[COUNCIL]}
        topic = f"s117.out.e06000060.drift-{uuid.uuid4().hex[:8]}"
        r = await app_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "kafka", "topic": topic})
        assert r.status_code == 201, r.text
        sharing = SharingAgreements.from_document({"version": 1, "agreements": [
            {"id": "DSA-DRIFT-KAFKA", "valid_from": "2020-01-01", "recipients": [
                {"org_code": COUNCIL, "events": ["*"], "field_groups": ["responsibility"],
                 "reconciliation": {"drift_alert_open_items": 2}}]}]})
        alerts = DriftAlerts(sharing, hub.protector, hub.ref, hub.settings.hub_endpoint, hub.settings.namespaces())
        snap = await send(app_hub, app_hub.keys["reader"], listing(X[:3]))
        await Reconciler(hub.engine, hub.ref, hub.agreements, hub.reconciliation, alerts=alerts).run_once()
        while await hub.kafka_deliverer.run_once():
            pass

        (rec,) = await _consume(kafka_bootstrap, topic, 1)
        doc = (await app_hub.http.get("/asyncapi.json")).json()
        message_doc = doc["components"]["messages"]["S117EventMessage"]
        checker = jsonschema.FormatChecker()
        headers = {k: v.decode() for k, v in rec.headers}
        jsonschema.validate(headers, message_doc["headers"], format_checker=checker)
        jsonschema.validate(rec.key.decode(), message_doc["bindings"]["kafka"]["key"], format_checker=checker)
        message = orjson.loads(rec.value)
        jsonschema.validate(message, message_doc["payload"], format_checker=checker)
        validate_message(message)
        assert (headers["event_type"], headers["event_number"], headers["ce_subject"]) == (
            "s117-reconciliation-drift", "1", "")
        assert headers["event_id"] == event_id_for(COUNCIL, snap["snapshot_id"])
        assert rec.key.decode() == headers["message_id"] == headers["ce_id"]
        assert read_drift(message)["by_kind"]["missing-on-hub-register"] == 3
        assert not any(n.encode() in rec.value for n in X)
