"""Outside review (session 26, access and notifications): a FHIR
subscription's `$events` (query-event) gave back every message the
subscription had been sent, whatever the agreement in force now allows,
while the same subscription's `GET /v1/subscriptions/{id}/events`, the pull
feed and every push channel hold a message the agreement no longer covers or
that carries field groups it no longer grants. Probe replayed against a
running hub: Worcestershire's agreement reloaded without
`s117-responsibility-transferred`; the REST replay listed those messages as
`withheld`, `$events` still returned them in full. Now `$events` leaves them
out (their numbers are the gap, as on the feed). A real local endpoint
answers the handshake."""

from __future__ import annotations

import asyncio
import contextlib

from hub.fhir.subscriptions import TOPIC_BASE
from tests.support import push_scenario, read_http_request
from tests.unit.test_delivery_agreement_ended import COUNCIL, _agreements

FHIR = {"Content-Type": "application/fhir+json"}
EVENT = "s117-entitlement-started"


@contextlib.asynccontextmanager
async def _endpoint():  # noqa: ANN202
    """A FHIR rest-hook endpoint that takes anything (the handshake): its port."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_http_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def _subscribed(app_hub, port: int) -> str:  # noqa: ANN001
    resource = {"resourceType": "Subscription", "status": "requested", "reason": "S117 register",
                "criteria": f"{TOPIC_BASE}/{EVENT}",
                "channel": {"type": "rest-hook", "endpoint": f"http://127.0.0.1:{port}/fhir",
                            "payload": "application/fhir+json",
                            "_payload": {"extension": [{
                                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                                       "backport-payload-content", "valueCode": "full-resource"}]}}}
    r = await app_hub.http.post("/v1/fhir/Subscription", json=resource,
                                headers={"X-API-Key": app_hub.keys[COUNCIL], **FHIR})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "active"  # the handshake was answered
    return r.json()["id"]


def _messages(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle["entry"][1:]]  # after the SubscriptionStatus


def _numbers(bundle: dict) -> list[str]:
    return [e["eventNumber"] for e in bundle["entry"][0]["resource"].get("notificationEvent", [])]


async def test_fhir_events_leave_out_what_the_agreement_in_force_no_longer_covers(app_hub):
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    async with _endpoint() as port:
        sid = await _subscribed(app_hub, port)
        await push_scenario(app_hub, seed=81)
        r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events", headers=key)
        assert r.status_code == 200, r.text
        before = r.json()
        assert _messages(before) and _numbers(before) == ["1"]

        # Still an agreement in force naming the council, but no longer covering the topic's event type.
        app_hub.hub.sharing = _agreements(lambda rec: {**rec, "events": ["s117-moved-out-of-area"]})
        r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events", headers=key)
        assert r.status_code == 200, r.text
        after = r.json()
        assert _messages(after) == [] and _numbers(after) == []  # old: the message, in full
        # The REST replay of the same subscription says the same: withheld, without the message.
        r = await app_hub.http.get(f"/v1/subscriptions/{sid}/events", headers=key)
        assert [("message" in i, i.get("withheld", {}).get("kind")) for i in r.json()["items"]] == \
            [(False, "event-type")]


async def test_fhir_events_leave_out_messages_carrying_field_groups_no_longer_granted(app_hub):
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    async with _endpoint() as port:
        sid = await _subscribed(app_hub, port)
        await push_scenario(app_hub, seed=82)  # rendered with demographics (names, birth date)
        r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events", headers=key)
        patient = next(res for m in _messages(r.json()) for e in m["entry"]
                       if (res := e["resource"])["resourceType"] == "Patient")
        family = patient["name"][0]["family"]
        assert family in r.text

        app_hub.hub.sharing = _agreements(lambda rec: {**rec, "field_groups": [
            g for g in rec["field_groups"] if g not in ("demographics", "address")]})
        r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events", headers=key)
        assert r.status_code == 200, r.text
        assert _messages(r.json()) == [] and family not in r.text  # old: the name, as sent under the wider agreement
