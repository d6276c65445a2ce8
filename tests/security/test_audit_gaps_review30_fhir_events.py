"""Audit gaps (session 30 outside review): a FHIR Subscription's `$events` is a disclosure, audited.

`GET /v1/fhir/Subscription/{id}/$events` (query-event, full-resource) hands a subscription's
messages out again, NHS number and all, and recorded nothing: `access_decisions` held a row
for a refused one (no agreement) but none for one allowed, so "who was told what about this
person" (`POST /v1/ops/audit/person`) never showed the re-read, where `GET
/v1/subscriptions/{id}/events` has been recorded since f6c6d5c. Now each allowed `$events` that
hands messages out records, for each person they are about, one allowed read on channel
`replay` with the field groups they carried and the agreement in force; one that hands
nothing out (a range past the last; id-only: ids and numbers, no message) records nothing.
ASGI app, real SQLite store, a real local endpoint for the handshake.
"""

from __future__ import annotations


from sqlalchemy import select

from hub.clients import add_client
from hub.store.schema import access_decisions, deliveries
from hub.domain.dates import england_day
from tests.security.test_review_p4_fhir_events import EVENT, _endpoint, _messages, _subscribed
from tests.support import detention
from tests.unit.test_delivery_agreement_ended import COUNCIL

NHS = "9991100024"


async def _replay_rows(app_hub) -> list:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(access_decisions).where(access_decisions.c.channel == "replay")
                                   .order_by(access_decisions.c.decision_id))).all()


async def test_fhir_events_handed_out_are_recorded_per_person_with_their_groups(app_hub):
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    async with _endpoint() as port:
        sid = await _subscribed(app_hub, port)
        for change in detention(NHS, "r30fhirev"):
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                        json=change)
            assert r.status_code == 202, r.text
        person_id = r.json()["person_id"]
        while await app_hub.hub.dispatcher.run_once():
            pass

        r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events", headers=key)
        assert r.status_code == 200, r.text
        assert len(_messages(r.json())) == 1 and NHS in r.text  # the message, in full: disclosed again
        rows = await _replay_rows(app_hub)
        assert len(rows) == 1, rows  # old: none
        row = rows[0]
        assert (row.org_code, row.person_id, row.decision, row.rule, row.action) == \
            (COUNCIL, person_id, "allowed", "allowed", "read")
        assert row.agreement_id == app_hub.hub.sharing.decide(COUNCIL, EVENT, england_day()).agreement_id
        async with app_hub.hub.engine.connect() as conn:
            carried = (await conn.execute(select(deliveries.c.field_groups)
                                          .where(deliveries.c.subscription_id == sid))).scalars().one()
        assert sorted(row.field_groups) == sorted(carried) and "identity" in carried

        # Nothing handed out: a range past the last message, or id-only (ids and numbers, no message).
        r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events?eventsSinceNumber=50", headers=key)
        assert r.status_code == 200 and _messages(r.json()) == []
        r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events?content=id-only", headers=key)
        assert r.status_code == 200 and _messages(r.json()) == [] and NHS not in r.text
        assert len(await _replay_rows(app_hub)) == 1

    # The subject access look-up shows the re-read.
    admin = {"X-API-Key": (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    r = await app_hub.http.post("/v1/ops/audit/person", headers=admin, json={"nhs_number": NHS})
    assert r.status_code == 200, r.text
    assert [(d["recipient"], d["decision"], d["agreement"]) for d in r.json()["disclosures"]
            if d["channel"] == "replay"] == [(COUNCIL, "allowed", row.agreement_id)]
