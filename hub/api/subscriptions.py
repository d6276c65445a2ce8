"""Councils and ICBs subscribe to their feeds: webhooks, pull feeds, Kafka
topics and file exports, with a delivery log; every message of a subscription
has a gap-free event number (hub.delivery.queue), replayed by number with
/events and summed up by /status. FHIR Subscriptions (hub/api/fhir_subscriptions.py)
are the same subscriptions seen through FHIR.

A push subscription whose subscriber answered `410 Gone` is suspended
(hub/delivery/leases.py, "Suspension"): `state` "suspended" with
`suspended_at` and `suspended_reason`, nothing sent until
`POST /v1/subscriptions/{id}/resume` (or the operator's
`POST /v1/ops/subscriptions/{id}/resume`, both through `resume`) clears it;
its pending messages then have a fresh retry budget."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator
from sqlalchemy import func, select

from hub.ids import uuid4
from hub.api.deps import MAX_ID, ClientDep, EventNumber, HubDep, Limit, WholeNumber, require
from hub.access import AccessPolicy, record_decision
from hub.api.problems import ProblemError
from hub.delivery.leases import lift_suspension
from hub.delivery.queue import create_counter
from hub.delivery.kafka_topic import TOPIC_PATTERN, default_topic, topic_problem
from hub.delivery.targets import url_problem
from hub.domain.access import Rule
from hub.domain.model import EventType
from hub.observability.logging import bound_correlation_id, get_logger
from hub.sharing import DisclosureCheck
from hub.store.restores import epoch_of
from hub.store.schema import (
    council_file_subscriptions,
    deliveries,
    deliveries_with_messages,
    delivery_messages,
    disclosures,
    subscription_counters,
    subscriptions,
)
from hub.domain.dates import england_day

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
log = get_logger("hub.subscriptions")
# Active subscriptions an organisation may hold at once, on every channel (FHIR ones included).
MAX_ACTIVE_PER_ORG = 20


class SubscriptionIn(BaseModel):
    """`webhook`: the hub POSTs each message to `url`, signed. `feed`: the
    subscriber pulls its messages from GET /v1/feeds/{subscription_id} (for
    councils that cannot expose an inbound endpoint). `kafka`: the hub
    publishes each message to `topic` (default `s117.out.<org code
    lowercased>`) on its Kafka cluster. `file`: the hub appends each message as
    an NDJSON line to `<export_dir>/<org_code>/<YYYY-MM-DD>.ndjson` for
    collection over SFTP."""

    model_config = ConfigDict(extra="forbid")
    channel: Literal["webhook", "feed", "kafka", "file", "council-file"] = "webhook"
    url: HttpUrl | None = None
    secret: str | None = Field(default=None, min_length=32, description="HMAC key; generated if omitted")
    topic: str | None = Field(default=None, pattern=TOPIC_PATTERN,
                              description="kafka only; default s117.out.<org code lowercased>")
    event_types: list[EventType] | None = Field(default=None, description="Filter; default every allowed event")
    layout: Literal["swift_csv", "swift_fixed"] | None = Field(
        default=None, description="council-file only: the published outbound layout")
    schedule: str | None = Field(default=None, max_length=32,
                                 description="council-file only: 'daily HH:MM' (UK time); default daily 02:00")
    mode: Literal["delta", "full"] | None = Field(default=None, description="council-file only: default delta")
    # strict: a whole JSON number only ("8", 8.0 and true were read as 8, 8 and 1)
    pipeline: int | None = Field(
        default=None, strict=True, ge=1, le=16,
        description="webhook only: how many POSTs may be in flight on the connection (default 1: each sent "
                    "once the one before it was accepted). More: pipelined, for a subscriber that orders by "
                    "S117-Event-Number: a message that fails can be overtaken by those sent behind it")

    @model_validator(mode="after")
    def _fields_for_the_channel(self) -> "SubscriptionIn":
        if self.channel == "webhook" and self.url is None:
            raise ValueError("url is required for a webhook subscription")
        if self.channel == "feed" and (self.url is not None or self.secret is not None):
            raise ValueError("a feed subscription takes no url or secret: the subscriber pulls with its API key")
        if self.channel in ("kafka", "file") and (self.url is not None or self.secret is not None):
            raise ValueError(f"a {self.channel} subscription takes no url or secret")
        if self.channel != "kafka" and self.topic is not None:
            raise ValueError("topic is for kafka subscriptions only")
        if self.channel != "webhook" and self.pipeline is not None:
            raise ValueError("pipeline is for webhook subscriptions only")
        if self.channel == "council-file":
            if self.url is not None or self.secret is not None:
                raise ValueError("a council-file subscription takes no url or secret")
            from hub.exports import schedule_problem

            why = schedule_problem(self.schedule or "daily 02:00")
            if why:
                raise ValueError(f"schedule {why}")
        elif self.layout is not None or self.schedule is not None or self.mode is not None:
            raise ValueError("layout, schedule and mode are for council-file subscriptions only")
        return self


# The channels whose subscriptions are suspended by a 410 Gone (hub/delivery/webhook.py; the FHIR rest-hook's
# deliverer is a webhook's): a pull feed, a Kafka topic or a file is never suspended.
SUSPENDABLE_CHANNELS = frozenset({"webhook", "fhir"})


def subscription_state(row) -> str:  # noqa: ANN001
    """`stopped` (DELETE: `active` false), `suspended` (active, but nothing is sent until it is resumed:
    its subscriber answered 410 Gone) or `active`."""
    if not row.active:
        return "stopped"
    return "suspended" if row.suspended_at is not None else "active"


def iso(at: datetime | None) -> str | None:
    """A stored time as ISO 8601 with its offset: the store keeps UTC, but SQLite gives it back without
    one (PostgreSQL with `+00:00`), and a subscriber an hour off UTC would read it as its own time."""
    if at is None:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()


def suspension_view(row) -> dict:  # noqa: ANN001
    """The state, and since when and why it is suspended (null when it is not)."""
    suspended = row.active and row.suspended_at is not None
    return {"state": subscription_state(row),
            "suspended_at": iso(row.suspended_at) if suspended else None,
            "suspended_reason": row.suspended_reason if suspended else None}


def _view(row, council_file=None) -> dict:  # noqa: ANN001
    kafka = row.channel == "kafka"
    extra = ({"layout": council_file.layout, "schedule": council_file.schedule, "mode": council_file.mode}
             if council_file is not None else {})
    return {"subscription_id": row.subscription_id, "org_code": row.org_code, "channel": row.channel,
            "url": row.url, **({"topic": row.topic} if kafka else {}),
            **({"pipeline": row.pipeline} if row.channel == "webhook" else {}),
            "event_types": row.event_types, "active": row.active, **suspension_view(row),
            "created_at": iso(row.created_at), **extra}


def _reject(field: str, reason: str) -> ProblemError:
    return ProblemError(422, "invalid-request", "Request rejected", f"{field} {reason}",
                        errors=[{"field": field, "reason": reason}])


@router.post("", status_code=201, summary="Subscribe the caller's organisation: webhook, feed, kafka or file")
async def create_subscription(body: SubscriptionIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "subscriptions:write")
    if body.url is not None and hub.settings.webhook_require_https and body.url.scheme != "https":
        raise ProblemError(422, "invalid-request", "Request rejected", "url must use https",
                           errors=[{"field": "url", "reason": "must use https: webhooks carry personal data"}])
    if body.url is not None and (body.url.username or body.url.password):
        raise ProblemError(422, "invalid-request", "Request rejected", "url must not carry credentials",
                           errors=[{"field": "url", "reason": "must not carry credentials; the signature authenticates"}])
    if body.event_types:
        # A filter naming an event type no agreement in force lets the organisation receive
        # could never deliver anything of it (each message is decided again at dispatch and
        # at sending): refused, naming them, as POST /v1/fhir/Subscription refuses such a topic.
        today = england_day()
        outside = sorted({e.value for e in body.event_types
                          if not hub.sharing.decide(client.org_code, e.value, today).allowed})
        if outside:
            raise _reject("event_types", "names event types no data-sharing agreement in force lets this "
                                         f"organisation receive: {', '.join(outside)}")
    url = str(body.url) if body.url else None
    if url is not None:
        why = await url_problem(url, hub.settings.webhook_allowed_hosts)
        if why:
            raise _reject("url", why)
    topic = None
    if body.channel == "kafka":
        if hub.kafka_deliverer is None:
            raise _reject("channel", "kafka needs a Kafka cluster: this hub has none configured "
                                     "(S117_BUS_URL=kafka://... or S117_KAFKA_OUTBOUND_BOOTSTRAP)")
        topic = body.topic or default_topic(client.org_code)
        why = topic_problem(topic, client.org_code)
        if why:
            raise _reject("topic", why)
    secret = (body.secret or secrets.token_urlsafe(32)) if body.channel == "webhook" else None
    sub_id = uuid4()
    async with hub.engine.begin() as conn:
        # Every event is queued once per active subscription: without a bound, one key could
        # multiply each message (and its POSTs to one URL) as often as it liked.
        active = (await conn.execute(select(func.count()).select_from(subscriptions).where(
            subscriptions.c.org_code == client.org_code, subscriptions.c.active.is_(True)))).scalar_one()
        if active >= MAX_ACTIVE_PER_ORG:
            raise _reject("channel", f"this organisation already has {MAX_ACTIVE_PER_ORG} active subscriptions "
                                     "(the most it may hold): delete one it no longer uses first")
        if topic is not None:
            # A topic another organisation subscribed (active or not: its consumers may still read it)
            # is not a destination: this organisation's messages would reach that organisation's readers.
            taken = (await conn.execute(select(subscriptions.c.subscription_id).where(
                subscriptions.c.channel == "kafka", subscriptions.c.topic == topic,
                subscriptions.c.org_code != client.org_code).limit(1))).first()
            if taken is not None:
                raise _reject("topic", "is another organisation's topic: choose a name of this organisation's own")
        if body.channel == "file":
            # One file per organisation and day: a second file subscription would write every line twice.
            taken = (await conn.execute(select(subscriptions.c.subscription_id).where(
                subscriptions.c.org_code == client.org_code, subscriptions.c.channel == "file",
                subscriptions.c.active.is_(True)))).first()
            if taken is not None:
                raise _reject("channel", "this organisation already has an active file subscription")
        await conn.execute(subscriptions.insert().values(
            subscription_id=sub_id, org_code=client.org_code, client_id=client.client_id,
            channel=body.channel, url=url, topic=topic,
            secret=hub.protector.encrypt(secret.encode()) if secret else None,
            event_types=[e.value for e in body.event_types] if body.event_types else None,
            active=True, created_at=datetime.now(UTC), pipeline=body.pipeline or 1,
        ))
        await create_counter(conn, sub_id)
        council_file = None
        if body.channel == "council-file":
            await conn.execute(council_file_subscriptions.insert().values(
                subscription_id=sub_id, layout=body.layout or "swift_csv", schedule=body.schedule or "daily 02:00",
                mode=body.mode or "delta", last_run_at=None, created_at=datetime.now(UTC)))
            council_file = (await conn.execute(select(council_file_subscriptions).where(
                council_file_subscriptions.c.subscription_id == sub_id))).one()
        row = (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == sub_id))).one()
    # The secret is shown once, at creation; the hub keeps it encrypted.
    return {**_view(row, council_file), **({"secret": secret} if secret else {})}


@router.get("", summary="The caller's organisation's subscriptions")
async def list_subscriptions(hub: HubDep, client: ClientDep) -> dict:
    require(client, "subscriptions:write")
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(subscriptions).where(subscriptions.c.org_code == client.org_code))).all()
        await conn.rollback()
    return {"items": [_view(r) for r in rows]}


async def require_agreement_in_force(hub, client) -> None:  # noqa: ANN001
    """A re-read of messages already sent (a replay by event number) is a read:
    no agreement in force naming the organisation, no read (as for a person's
    record, README "Roles and access"), whatever it was sent while one was.
    A refusal is audited (`access_decisions`, channel `replay`), as any refused read."""
    if "hub:admin" in client.scopes:
        return
    if not DisclosureCheck(hub.sharing, england_day()).any_in_force(client.org_code):
        async with hub.engine.begin() as conn:
            await record_decision(conn, client, channel="replay", action="read", allowed=False,
                                  rule=Rule.NO_AGREEMENT)
        raise ProblemError(403, "forbidden", "Not permitted",
                           "no data-sharing agreement in force names this organisation", rule="no-agreement")


async def audit_replay(hub, client, org_code: str, handed: list[tuple[str, Any]]) -> None:  # noqa: ANN001
    """An allowed replay (`/events`, a FHIR Subscription's `$events`) discloses its messages again: one
    `access_decisions` row (channel `replay`, action `read`, allowed) for each person the messages
    handed out are about, with the field groups they carried and the agreement now in force, so
    "who was told what about this person" (audit person) shows the re-read as it shows a person query.
    `handed`: (event id, the delivery's field groups) of each message given with its body. A message
    about a body (a drift alert) names no person: no row; none handed out, nothing recorded."""
    if not handed or "hub:admin" in client.scopes:
        return
    event_ids = sorted({e for e, _g in handed})
    groups = frozenset().union(*(frozenset(g or ()) for _e, g in handed))
    agreement = AccessPolicy.read_grant(hub.sharing, client, england_day()).agreement_id
    async with hub.engine.begin() as conn:
        people = sorted({p for p in (await conn.execute(
            select(disclosures.c.person_id).distinct().where(
                disclosures.c.event_id.in_(event_ids), disclosures.c.recipient_org == org_code,
                disclosures.c.person_id.is_not(None)))).scalars().all()})
        if people:
            await record_decision(conn, client, channel="replay", action="read", allowed=True, rule=Rule.ALLOWED,
                                  agreement_id=agreement, field_groups=groups, person_ids=people,
                                  correlation_id=bound_correlation_id())


async def _own(hub, client, subscription_id: str):  # noqa: ANN001, ANN202
    async with hub.engine.connect() as conn:
        row = (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == subscription_id))).first()
        await conn.rollback()
    if row is None or row.org_code != client.org_code:
        raise ProblemError(404, "not-found", "Not found", "no subscription with that id for this organisation")
    return row


@router.get("/{subscription_id}", summary="One of the caller's organisation's subscriptions, with its state",
            responses={404: {"description": "No subscription with that id for this organisation"}})
async def read_subscription(subscription_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "subscriptions:write")
    row = await _own(hub, client, subscription_id)
    async with hub.engine.connect() as conn:
        council_file = (await conn.execute(select(council_file_subscriptions).where(
            council_file_subscriptions.c.subscription_id == subscription_id))).first()
        await conn.rollback()
    return _view(row, council_file)


async def clear_suspension(conn, subscription_id: str) -> Any:  # noqa: ANN001
    """Resume a suspended subscription in `conn`'s transaction (hub.delivery.leases `lift_suspension`: its
    suspension cleared, a FHIR subscription's status `active` again, its pending deliveries a fresh retry
    budget), so the deliverers of every instance take its queue again from the oldest pending message.
    The row as it was before; raises a 409 naming why when it is not suspended (stopped, or not
    suspended), a 404 when there is no such subscription. Called by `resume`."""
    row = (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == subscription_id))).first()
    if row is None:
        raise ProblemError(404, "not-found", "Not found", "no subscription with that id")
    if await lift_suspension(conn, row):
        return row
    # Not suspended (or stopped, or resumed by another request, since it was read): read again, say why.
    now = (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == subscription_id))).one()
    state = subscription_state(now)
    if state == "stopped":
        raise ProblemError(409, "subscription-stopped", "Subscription stopped",
                           "state: this subscription was stopped (DELETE) and is not resumed; "
                           "subscribe again to receive messages", state=state,
                           errors=[{"field": "state", "reason": "stopped: a stopped subscription is not resumed"}])
    if now.channel not in SUSPENDABLE_CHANNELS:
        raise ProblemError(409, "not-suspendable", "Not suspendable",
                           f"channel: a {now.channel} subscription is never suspended (only a push subscription "
                           "is, when its endpoint answers 410 Gone): there is nothing to resume", state=state,
                           errors=[{"field": "channel", "reason": f"{now.channel}: only a push subscription "
                                    "(webhook, FHIR rest-hook) is suspended, when its endpoint answers 410 Gone"}])
    raise ProblemError(409, "not-suspended", "Not suspended",
                       "state: this subscription is not suspended: its messages are being sent (a subscription "
                       "is suspended when its endpoint answers 410 Gone)", state=state,
                       errors=[{"field": "state", "reason": "not suspended"}])


def wake_deliverers(hub) -> None:  # noqa: ANN001
    """A resumed subscription's deliveries are due: this process's deliverers look at once rather than at
    their next (idle) poll; deliverers in another process or instance find them by polling."""
    for deliverer in hub.deliverers():
        deliverer.wake()


async def resume(hub, subscription_id: str, source: str,  # noqa: ANN001
                 audit: Callable[[Any, Any], Awaitable[None]] | None = None) -> tuple[Any, Any]:
    """Resume a suspended subscription: the one way both resume endpoints (the subscriber's, below, and
    the operator's, hub/api/ops.py) go. Its suspension cleared in one transaction (`clear_suspension`:
    a 404 or 409 naming why when there is nothing to resume), with `audit(conn, was)` in that same
    transaction if given (the operator's audit record); once committed, one "subscription resumed" line
    (`source`: who resumed it) and this process's deliverers woken. The row as it was and as it is now."""
    async with hub.engine.begin() as conn:
        was = await clear_suspension(conn, subscription_id)
        if audit is not None:
            await audit(conn, was)
        row = (await conn.execute(select(subscriptions).where(
            subscriptions.c.subscription_id == subscription_id))).one()
    log.info("subscription resumed", subscription_id=subscription_id, recipient=row.org_code, channel=row.channel,
             source=source, was=was.suspended_reason)
    wake_deliverers(hub)
    return was, row


@router.post("/{subscription_id}/resume",
             summary="Resume a suspended subscription (its endpoint answered 410 Gone): sending goes on from "
                     "the oldest pending message",
             responses={404: {"description": "No subscription with that id for this organisation"},
                        409: {"description": "Not suspended, or stopped"}})
async def resume_subscription(subscription_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "subscriptions:write")
    await _own(hub, client, subscription_id)
    _, row = await resume(hub, subscription_id, client.client_id)
    return _view(row)


class SecretIn(BaseModel):
    """A signed subscription's new secret (webhook, FHIR rest-hook); the hub makes one if it is omitted."""

    model_config = ConfigDict(extra="forbid")
    secret: str | None = Field(default=None, min_length=32, description="HMAC key; generated if omitted")


# The channels whose messages are signed (S117-Signature) under the subscription's secret.
SIGNED_CHANNELS = frozenset({"webhook", "fhir"})


@router.post("/{subscription_id}/secret",
             summary="Change a webhook's or FHIR rest-hook's signing secret (shown once): every message "
                     "sent after it is signed under the new one, its event numbers going on",
             responses={404: {"description": "No subscription with that id for this organisation"},
                        409: {"description": "Stopped, or a channel that is not signed (named)"}})
async def change_secret(subscription_id: str, hub: HubDep, client: ClientDep, body: SecretIn | None = None) -> Response:
    """Rotate the secret without a new subscription (which would number its messages from 1 again and
    leave the old one's pending messages behind). The messages already taken for sending at that moment
    (a batch in flight) may still go out under the old secret: the subscriber accepts both until the
    new one has been seen."""
    require(client, "subscriptions:write")
    row = await _own(hub, client, subscription_id)
    if row.channel not in SIGNED_CHANNELS:
        raise ProblemError(409, "not-signed", "Not signed",
                           f"channel: a {row.channel} subscription's messages are not signed: it has no secret",
                           errors=[{"field": "channel", "reason": f"{row.channel}: only a webhook or FHIR "
                                    "rest-hook subscription has a signing secret"}])
    secret = (body.secret if body is not None else None) or secrets.token_urlsafe(32)
    async with hub.engine.begin() as conn:
        changed = await conn.execute(subscriptions.update().where(
            subscriptions.c.subscription_id == subscription_id, subscriptions.c.active.is_(True))
            .values(secret=hub.protector.encrypt(secret.encode())))
        if not changed.rowcount:
            raise ProblemError(409, "subscription-stopped", "Subscription stopped",
                               "state: this subscription was stopped (DELETE); subscribe again to receive messages",
                               state="stopped", errors=[{"field": "state", "reason": "stopped"}])
        row = (await conn.execute(select(subscriptions).where(
            subscriptions.c.subscription_id == subscription_id))).one()
    log.info("subscription secret changed", subscription_id=subscription_id, recipient=row.org_code,
             channel=row.channel, source=client.client_id)
    # Shown once, as at creation; never cached on the way.
    return Response(orjson.dumps({**_view(row), "secret": secret}), media_type="application/json",
                    headers={"Cache-Control": "no-store"})


@router.delete("/{subscription_id}", summary="Stop a subscription (its delivery log is kept)",
               responses={404: {"description": "No subscription with that id for this organisation"}})
async def delete_subscription(subscription_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "subscriptions:write")
    await _own(hub, client, subscription_id)
    async with hub.engine.begin() as conn:
        await conn.execute(subscriptions.update().where(subscriptions.c.subscription_id == subscription_id)
                           .values(active=False))
    return {"subscription_id": subscription_id, "active": False}


@router.get("/{subscription_id}/deliveries", summary="Delivery log of a subscription",
            responses={404: {"description": "No subscription with that id for this organisation"}})
async def delivery_log(subscription_id: str, hub: HubDep, client: ClientDep, limit: Limit = 100) -> dict:
    require(client, "subscriptions:write")
    await _own(hub, client, subscription_id)
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(
            select(deliveries.c.delivery_id, deliveries.c.event_id, deliveries.c.message_id, deliveries.c.event_type,
                   deliveries.c.status, deliveries.c.attempts, deliveries.c.last_error, deliveries.c.created_at,
                   deliveries.c.delivered_at, deliveries.c.next_attempt_at, deliveries.c.event_number)
            .where(deliveries.c.subscription_id == subscription_id)
            .order_by(deliveries.c.delivery_seq.desc()).limit(limit)
        )).all()
        await conn.rollback()
    return {"items": [
        {"delivery_id": r.delivery_id, "event_number": r.event_number, "event_id": r.event_id, "message_id": r.message_id,
         "event_type": r.event_type, "status": r.status, "attempts": r.attempts, "last_error": r.last_error,
         "created_at": iso(r.created_at), "delivered_at": iso(r.delivered_at),
         "next_attempt_at": iso(r.next_attempt_at)}
        for r in rows
    ]}


@router.get("/{subscription_id}/events", summary="Replay a subscription's messages by event number",
            responses={404: {"description": "No subscription with that id for this organisation"}})
async def events(subscription_id: str, hub: HubDep, client: ClientDep,
                 from_: Annotated[int, Query(alias="from", ge=1, le=MAX_ID), WholeNumber] = 1,
                 to: EventNumber | None = None, limit: Limit = 100) -> Response:
    """The messages numbered `from`..`to` (inclusive; `to` defaults to the
    newest), oldest first, up to `limit`; whatever their delivery status. For a
    subscriber that saw a gap in the event numbers. Reading them changes
    nothing: delivery goes on as before. A delivered message the retention
    purge has emptied is listed by number with `purged: true`, without it."""
    require(client, "subscriptions:write")
    if to is not None and to < from_:
        raise _reject("to", "must not be less than from")
    sub = await _own(hub, client, subscription_id)
    await require_agreement_in_force(hub, client)
    # Each message as the agreement in force now allows it (hub/sharing.py
    # DisclosureCheck, as a delivery is checked): one it no longer allows is
    # listed by number, kind and why, without the message.
    check = None if "hub:admin" in client.scopes else DisclosureCheck(hub.sharing, england_day())
    async with hub.engine.connect() as conn:
        q = (select(deliveries.c.event_number, deliveries.c.event_id, deliveries.c.message_id,
                    deliveries.c.event_type, deliveries.c.status, deliveries.c.created_at,
                    delivery_messages.c.payload, deliveries.c.field_groups)
             .select_from(deliveries_with_messages)
             .where(deliveries.c.subscription_id == subscription_id, deliveries.c.event_number >= from_)
             .order_by(deliveries.c.event_number).limit(limit))
        if to is not None:
            q = q.where(deliveries.c.event_number <= to)
        rows = (await conn.execute(q)).all()
        last = await _last_number(conn, subscription_id)
        await conn.rollback()
    items = []
    handed: list[tuple[str, Any]] = []  # (event id, field groups) of each message given with its body
    for r in rows:
        item = {"event_number": r.event_number, "event_id": r.event_id, "message_id": r.message_id,
                "event_type": r.event_type, "status": r.status, "queued_at": iso(r.created_at)}
        withheld = check.withheld(sub.org_code, r.event_type, r.field_groups) if check is not None else None
        if withheld is not None:
            item["withheld"] = {"kind": withheld.kind, "reason": withheld.reason}
        elif not r.payload:  # emptied by the retention purge (hub/retention.py): nothing left to give
            item["purged"] = True
        else:
            item["message"] = orjson.Fragment(hub.protector.decrypt(r.payload))
            handed.append((r.event_id, r.field_groups))
        items.append(item)
    await audit_replay(hub, client, sub.org_code, handed)
    end = min(to, last) if to is not None else last  # nothing numbered past the last queued yet
    more = bool(rows) and rows[-1].event_number < end
    body = {"subscription_id": subscription_id, "events_since_subscription_start": last, "items": items,
            "more": more}
    return Response(orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"})


async def _last_number(conn, subscription_id: str) -> int:  # noqa: ANN001
    n = (await conn.execute(select(subscription_counters.c.last_event_number)
                            .where(subscription_counters.c.subscription_id == subscription_id))).scalar_one_or_none()
    return int(n or 0)


@router.get("/{subscription_id}/status", summary="Event numbers queued, sent and acknowledged; the queue's head",
            responses={404: {"description": "No subscription with that id for this organisation"}})
async def status(subscription_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "subscriptions:write")
    sub = await _own(hub, client, subscription_id)
    return await subscription_status(hub.engine, sub)


async def subscription_status(engine, sub) -> dict:  # noqa: ANN001
    """What a subscriber (and FHIR $status) is told about its subscription.

    `last_event_number_sent`: for a feed, the highest event number handed out
    (each fetch counts an attempt: hub/api/feeds.py). For a push channel, the
    highest with a finished attempt: delivered, or failed (`last_error` set,
    backing off or dead: hub/delivery/leases.py `_record`). Not the attempt
    count there: the lease counts an attempt on every row of a batch before
    any of it is sent (those not sent are given back with their count).

    `restore_epoch`: "0" until the store is restored from a backup, then that
    restore's id (hub/store/restores.py, README "Backup and restore")."""
    sid = sub.subscription_id
    if sub.channel == "feed":
        sent_filter = (deliveries.c.attempts > 0) | (deliveries.c.status == "delivered")
    else:
        sent_filter = (deliveries.c.status == "delivered") | deliveries.c.last_error.is_not(None)
    async with engine.connect() as conn:
        last = await _last_number(conn, sid)
        sent = (await conn.execute(select(func.max(deliveries.c.event_number)).where(
            deliveries.c.subscription_id == sid, sent_filter))).scalar_one()
        acked = (await conn.execute(select(func.max(deliveries.c.event_number)).where(
            deliveries.c.subscription_id == sid, deliveries.c.status == "delivered"))).scalar_one()
        counts = dict((await conn.execute(select(deliveries.c.status, func.count()).where(
            deliveries.c.subscription_id == sid).group_by(deliveries.c.status))).all())
        head = (await conn.execute(select(deliveries.c.event_number, deliveries.c.attempts, deliveries.c.last_error,
                                          deliveries.c.next_attempt_at, deliveries.c.created_at)
                                   .where(deliveries.c.subscription_id == sid, deliveries.c.status == "pending")
                                   .order_by(deliveries.c.delivery_seq).limit(1))).first()
        epoch = await epoch_of(conn)
        await conn.rollback()
    return {
        "subscription_id": sid, "channel": sub.channel, "active": sub.active, **suspension_view(sub),
        "events_since_subscription_start": last,
        "last_event_number_sent": sent or 0,
        "last_event_number_acknowledged": acked or 0,
        "pending": counts.get("pending", 0), "dead": counts.get("dead", 0),
        "restore_epoch": epoch,
        "head": None if head is None else {
            "event_number": head.event_number, "attempts": head.attempts, "last_error": head.last_error,
            "queued_at": iso(head.created_at), "next_attempt_at": iso(head.next_attempt_at)},
    }
