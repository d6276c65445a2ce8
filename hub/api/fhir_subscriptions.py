"""FHIR topic-based subscriptions (R5 Backport IG in R4B) over the same store
as every other subscription: a `fhir` subscription is a queue of the same
deliveries, numbered the same way, delivered by hub.delivery.fhir_rest_hook.

GET  /v1/fhir/SubscriptionTopic                      the hub's topics (one per S117 event type)
POST /v1/fhir/Subscription                           rest-hook, id-only / full-resource, heartbeat; handshake
GET  /v1/fhir/Subscription/{id}                      the subscription, with its status
DELETE /v1/fhir/Subscription/{id}                    off
GET  /v1/fhir/Subscription/{id}/$status              SubscriptionStatus (query-status)
GET  /v1/fhir/Subscription/{id}/$events              past notifications by event number (query-event); a read:
                                                     403 no-agreement without a data-sharing agreement in force,
                                                     and only the messages the agreement in force allows;
                                                     those handed out (full-resource) are audited as reads
                                                     (access_decisions, channel replay, one row a person)
FHIR subscriptions count toward the per-organisation cap (hub/api/subscriptions.py MAX_ACTIVE_PER_ORG).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select

from hub.ids import uuid4
from hub.api.deps import ClientDep, EventNumber, HubDep, require
from hub.api.outcomes import FHIR_JSON, issue, outcome_of
from hub.api.problems import ProblemError, answer
from hub.api.subscriptions import MAX_ACTIVE_PER_ORG, audit_replay, require_agreement_in_force, subscription_status
from hub.delivery.fhir_rest_hook import CHANNEL, post_notification
from hub.delivery.queue import create_counter
from hub.delivery.targets import url_problem
from hub.fhir.negotiation import body_media_refusal, format_refusal
from hub.fhir.subscriptions import (
    CONTENTS,
    Event,
    SubscriptionInvalid,
    notification,
    read_subscription,
    subscription_resource,
    topics,
)
from hub.observability.logging import get_logger
from hub.sharing import DisclosureCheck
from hub.store.schema import deliveries, deliveries_with_messages, delivery_messages, subscriptions
from hub.domain.dates import england_day

_BODY_TYPES = frozenset({FHIR_JSON, "application/json"})


async def _negotiated(request: Request) -> None:
    """FHIR R4 JSON only, both ways (hub/fhir/negotiation.py), before anything is read or done: a client
    asking for XML or another FHIR version is a 406, a Subscription sent in another format (or with no
    Content-Type) a 415, each an OperationOutcome naming `Accept`, `_format` or `Content-Type`."""
    refused = format_refusal(request)
    if refused is not None:
        raise ProblemError(406, "not-acceptable", "Not acceptable", refused[0],
                           errors=[{"field": refused[1], "reason": refused[0]}])
    if request.method == "POST":
        refused = body_media_refusal(request.headers.get("content-type", ""), _BODY_TYPES,
                                     "the Subscription as application/fhir+json (or application/json)")
        if refused is not None:
            raise ProblemError(415, "unsupported-media-type", "Unsupported media type", refused[0],
                               errors=[{"field": refused[1], "reason": refused[0]}])


router = APIRouter(prefix="/v1/fhir", tags=["fhir-subscriptions"], dependencies=[Depends(_negotiated)], responses={
    406: answer("An answer other than FHIR R4 JSON was asked for (_format, Accept): nothing done", problem=False,
                fhir=True)})


def _base(hub) -> str:  # noqa: ANN001
    """The hub's FHIR base under the operator's canonical base (`S117_CANONICAL_BASE`): the topics' URLs."""
    return hub.settings.namespaces().fhir_base
log = get_logger("hub.fhir_subscriptions")
MAX_BODY = 64 * 1024


def _fhir(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def _outcome(status: int, issues: list[tuple[str, str]], code: str = "invalid") -> JSONResponse:
    return outcome_of(status, [issue("error", code, why, where) for where, why in issues])


_AT_CAP = (f"this organisation already has {MAX_ACTIVE_PER_ORG} active subscriptions (the most it may hold, "
           "on every channel): delete one it no longer uses first")


async def _active(conn, org_code: str) -> int:  # noqa: ANN001
    """The organisation's active subscriptions, every channel (POST /v1/subscriptions counts the same)."""
    return (await conn.execute(select(func.count()).select_from(subscriptions).where(
        subscriptions.c.org_code == org_code, subscriptions.c.active.is_(True)))).scalar_one()


_NO_SUCH = "No FHIR subscription with that id for this organisation"  # the 404's, as documented


def _not_found() -> JSONResponse:
    return _outcome(404, [("Subscription.id", "no FHIR subscription with that id for this organisation")],
                    code="not-found")


@router.get("/SubscriptionTopic", summary="The hub's SubscriptionTopics (one per S117 event type)")
async def list_topics(hub: HubDep, client: ClientDep) -> Response:
    entries = [{"fullUrl": t["url"], "resource": t, "search": {"mode": "match"}} for t in topics(_base(hub))]
    return _fhir({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})


@router.post("/Subscription", status_code=201, summary="Subscribe (rest-hook) to a topic: handshake, then notifications",
             responses={415: answer("A Subscription sent other than as application/fhir+json or application/json "
                                    "(or in another fhirVersion): nothing done", problem=False, fhir=True),
                        422: answer("Refused: an OperationOutcome naming each problem", problem=False, fhir=True)})
async def create(request: Request, hub: HubDep, client: ClientDep) -> Response:
    require(client, "subscriptions:write")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return _outcome(413, [("Subscription", f"larger than {MAX_BODY} bytes")], code="too-costly")
    try:
        resource = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _outcome(422, [("Subscription", "not JSON")], code="structure")
    try:
        req = read_subscription(resource, _base(hub))
    except SubscriptionInvalid as exc:
        return _outcome(422, exc.issues)
    if hub.settings.webhook_require_https and not req.endpoint.startswith("https://"):
        return _outcome(422, [("Subscription.channel.endpoint", "must use https: notifications carry personal data")])
    why = await url_problem(req.endpoint, hub.settings.webhook_allowed_hosts)
    if why:
        return _outcome(422, [("Subscription.channel.endpoint", why)])
    decision = hub.sharing.decide(client.org_code, req.event_type, england_day())
    if not decision.allowed:
        return _outcome(422, [("Subscription.criteria",
                               "this topic is not within your organisation's data-sharing agreement")],
                        code="forbidden")
    sub_id = uuid4()
    secret = secrets.token_urlsafe(32)
    fhir: dict[str, Any] = {"event_type": req.event_type, "endpoint": req.endpoint, "content": req.content,
                            "heartbeat_seconds": req.heartbeat_seconds, "reason": req.reason, "status": "requested"}
    async with hub.engine.begin() as conn:
        # The per-organisation cap of POST /v1/subscriptions: every event is queued once per active
        # subscription, so without it one key could multiply each message (and its POSTs) at will.
        if await _active(conn, client.org_code) >= MAX_ACTIVE_PER_ORG:
            return _outcome(422, [("Subscription.channel", _AT_CAP)], code="business-rule")
        await conn.execute(subscriptions.insert().values(
            subscription_id=sub_id, org_code=client.org_code, client_id=client.client_id, channel=CHANNEL,
            url=req.endpoint, secret=hub.protector.encrypt(secret.encode()), event_types=[req.event_type],
            fhir=fhir, active=False, created_at=datetime.now(UTC)))
        await create_counter(conn, sub_id)
    # Handshake before anything is queued: the endpoint must answer 2xx.
    handshake = notification(kind="handshake", subscription_id=sub_id, hub_endpoint=hub.settings.hub_endpoint,
                             fhir_base=_base(hub),
                             fhir=fhir, since_start=0, status="requested")
    error = await post_notification(hub.http, req.endpoint, secret, handshake,
                                    hub.settings.webhook_timeout_seconds, "handshake")
    fhir = {**fhir, "status": "error" if error else "active"}
    if error:
        fhir["error"] = [{"text": f"handshake failed: {error}"}]
    async with hub.engine.begin() as conn:
        # Counted again as it is turned on: others may have been made during the handshake.
        if error is None and await _active(conn, client.org_code) >= MAX_ACTIVE_PER_ORG:
            await conn.execute(subscriptions.update().where(subscriptions.c.subscription_id == sub_id)
                               .values(fhir={**fhir, "status": "off"}, active=False))
            return _outcome(422, [("Subscription.channel", _AT_CAP)], code="business-rule")
        await conn.execute(subscriptions.update().where(subscriptions.c.subscription_id == sub_id)
                           .values(fhir=fhir, active=error is None))
    log.info("fhir subscription", subscription_id=sub_id, status="active" if error is None else "error",
             error_kind=error)
    body = subscription_resource(subscription_id=sub_id, hub_endpoint=hub.settings.hub_endpoint,
                                 fhir_base=_base(hub), fhir=fhir, active=True)
    # The signing secret is shown once (S117-Signature on every notification, as for webhooks).
    return _fhir(body, 201, {"Location": f"/v1/fhir/Subscription/{sub_id}", "S117-Webhook-Secret": secret})


async def _own(hub, client, subscription_id: str):  # noqa: ANN001, ANN202
    async with hub.engine.connect() as conn:
        row = (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == subscription_id))).first()
        await conn.rollback()
    if row is None or row.org_code != client.org_code or row.channel != CHANNEL:
        return None
    return row


@router.get("/Subscription/{subscription_id}", summary="A FHIR subscription of the caller's organisation",
            responses={404: answer(_NO_SUCH, problem=False, fhir=True)})
async def read(subscription_id: str, hub: HubDep, client: ClientDep) -> Response:
    require(client, "subscriptions:write")
    row = await _own(hub, client, subscription_id)
    if row is None:
        return _not_found()
    fhir = row.fhir or {}
    return _fhir(subscription_resource(subscription_id=row.subscription_id, hub_endpoint=hub.settings.hub_endpoint,
                                       fhir_base=_base(hub),
                                       fhir=fhir, active=row.active or fhir.get("status") == "error"))


@router.delete("/Subscription/{subscription_id}", summary="Turn a FHIR subscription off",
               responses={404: answer(_NO_SUCH, problem=False, fhir=True)})
async def delete(subscription_id: str, hub: HubDep, client: ClientDep) -> Response:
    require(client, "subscriptions:write")
    row = await _own(hub, client, subscription_id)
    if row is None:
        return _not_found()
    async with hub.engine.begin() as conn:
        await conn.execute(subscriptions.update().where(subscriptions.c.subscription_id == subscription_id)
                           .values(active=False, fhir={**(row.fhir or {}), "status": "off"}))
    return _fhir(subscription_resource(subscription_id=subscription_id, hub_endpoint=hub.settings.hub_endpoint,
                                       fhir_base=_base(hub),
                                       fhir={**(row.fhir or {}), "status": "off"}, active=False))


@router.get("/Subscription/{subscription_id}/$status", summary="SubscriptionStatus: events since start",
            responses={404: answer(_NO_SUCH, problem=False, fhir=True)})
async def status(subscription_id: str, hub: HubDep, client: ClientDep) -> Response:
    require(client, "subscriptions:write")
    row = await _own(hub, client, subscription_id)
    if row is None:
        return _not_found()
    s = await subscription_status(hub.engine, row)
    fhir = row.fhir or {}
    bundle = notification(kind="query-status", subscription_id=subscription_id, hub_endpoint=hub.settings.hub_endpoint,
                          fhir_base=_base(hub),
                          fhir=fhir, since_start=s["events_since_subscription_start"],
                          status=fhir.get("status", "active") if row.active else "off", bundle_type="searchset")
    bundle["entry"][0]["search"] = {"mode": "match"}
    bundle["total"] = 1
    return _fhir(bundle)


@router.get("/Subscription/{subscription_id}/$events", summary="Past notifications by event number",
            responses={403: answer("The key lacks the scope, or no data-sharing agreement is in force", problem=False,
                                   fhir=True),
                       404: answer(_NO_SUCH, problem=False, fhir=True),
                       422: answer("A parameter refused, for its form or its meaning", problem=False, fhir=True)})
async def events(subscription_id: str, hub: HubDep, client: ClientDep,
                 eventsSinceNumber: EventNumber = 1,  # noqa: N803 - FHIR's name
                 eventsUntilNumber: EventNumber | None = None,  # noqa: N803
                 content: str | None = None) -> Response:
    require(client, "subscriptions:write")
    row = await _own(hub, client, subscription_id)
    if row is None:
        return _not_found()
    try:
        # A replay is a read, as GET /v1/subscriptions/{id}/events: no agreement in force naming the
        # organisation, none of the messages, whatever they were sent under.
        await require_agreement_in_force(hub, client)
    except ProblemError as exc:
        return _outcome(403, [("Subscription", f"{exc.extra['rule']}: {exc.detail}")], code="forbidden")
    if content is not None and content not in CONTENTS:
        return _outcome(422, [("content", "must be id-only or full-resource")])
    if eventsUntilNumber is not None and eventsUntilNumber < eventsSinceNumber:
        return _outcome(422, [("eventsUntilNumber", "must not be less than eventsSinceNumber")])
    # Each message as the agreement in force now allows it, as GET /v1/subscriptions/{id}/events
    # gives it (hub/sharing.py DisclosureCheck, as a delivery is checked): one the agreement no
    # longer covers, or rendered with field groups it no longer grants, is left out (its event
    # number is the gap the subscriber sees, as on the pull feed); the operator is no subscriber.
    check = None if "hub:admin" in client.scopes else DisclosureCheck(hub.sharing, england_day())
    async with hub.engine.connect() as conn:
        q = (select(deliveries.c.event_number, delivery_messages.c.payload, deliveries.c.message_id,
                    deliveries.c.created_at, deliveries.c.event_type, deliveries.c.field_groups,
                    deliveries.c.event_id)
             .select_from(deliveries_with_messages)
             .where(deliveries.c.subscription_id == subscription_id,
                    deliveries.c.event_number >= eventsSinceNumber)
             .order_by(deliveries.c.event_number).limit(100))
        if eventsUntilNumber is not None:
            q = q.where(deliveries.c.event_number <= eventsUntilNumber)
        rows = (await conn.execute(q)).all()
        await conn.rollback()
    s = await subscription_status(hub.engine, row)
    fhir = row.fhir or {}
    given = [r for r in rows if check is None or check.withheld(row.org_code, r.event_type, r.field_groups) is None]
    shape = content or fhir.get("content")
    bundle = notification(
        kind="query-event", subscription_id=subscription_id, hub_endpoint=hub.settings.hub_endpoint,
        fhir_base=_base(hub), fhir=fhir,
        since_start=s["events_since_subscription_start"], content=shape,
        status=fhir.get("status", "active") if row.active else "off",
        events=[Event(r.event_number, hub.protector.decrypt(r.payload) if shape == "full-resource" and r.payload
                      else None, r.message_id, r.created_at) for r in given])
    # A replay hands the messages out again: recorded as GET /v1/subscriptions/{id}/events records
    # it (access_decisions, channel `replay`, one allowed read per person, the groups they carried,
    # the agreement in force). id-only gives each message's id and number, not the message: no one's
    # record is read, nothing recorded; nothing handed out, nothing recorded. A message the retention
    # purge has emptied (S117_RETAIN_DELIVERED_PAYLOAD_DAYS) is given by number and id, as id-only.
    if shape == "full-resource":  # a message the retention purge emptied is not handed out
        await audit_replay(hub, client, row.org_code, [(r.event_id, r.field_groups) for r in given if r.payload])
    return _fhir(bundle)
