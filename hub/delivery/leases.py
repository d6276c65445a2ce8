"""What every push deliverer (webhook, Kafka topic, file export) shares: the
head of each subscription's queue, the lease, the outcome, the backoff, and
the per-subscription tasks that drain the queues (`SubscriptionDeliverer`).

* Order: a subscription's deliveries go out one at a time, oldest first; a
  batch starts only at the oldest pending one (its *head*) once it is due, and
  stops at the first failure, so a failure holds the rest back rather than
  letting a later message overtake it. A channel may pipeline, if the
  subscription asked (`subscriptions.pipeline`, webhooks): a window of
  deliveries is sent at once and their outcomes come back in order; the
  first that failed stops the batch, those behind it in its window that the
  subscriber took are delivered (they overtook it: the subscriber's choice),
  the rest are given back and sent again after it.
* Batches (`claim_batch`, `record_batch`): a subscription's task leases up to
  `_claim_max` of its oldest pending deliveries, sends them one after the
  other (on the channel's kept-alive connection), and records every outcome
  at once: delivered, the failed one (backoff or dead), and those not sent
  after it (given back as they were); unless it failed or is stopping, its
  next batch is leased in that same transaction. Every task's claims and
  records go through the process's one `Ledger` (hub/delivery/ledger.py):
  those waiting at the same moment share a transaction. A crash between a
  send and the record leaves them pending: they are sent again once the
  lease runs out (at least once, in order, the same event numbers).
* Lease: before sending, a deliverer claims the head (and the batch behind
  it) and pushes `next_attempt_at` out by the lease. Another hub
  instance on the same store then leaves it alone; if this one dies mid-send,
  the lease runs out and the delivery is sent again (at least once). The
  lease is sized to the attempt it covers (the channel's hard deadline for one
  attempt plus a margin, see hub.bootstrap), so after a crash the delivery is
  picked up by the next poll once that lease has run out. A batch sends its
  next delivery only while a whole attempt still fits in its lease; the rest
  are given back and leased again.
* Agreement at the time of disclosure: each batch, as it is leased, asks the
  data-sharing agreements in force today (`sharing_of`, the hub's one object,
  whose grants a reload of the file swaps in place) the dispatcher's question again for each
  delivery (hub.sharing.DisclosureCheck: the organisation, the event type, and
  the field groups the message was rendered with, which can only narrow). One
  no longer allowed is not leased nor sent: it is `held` in the same
  transaction, with a `denied` disclosure saying why (hub.delivery.queue
  `hold_disallowed`), and counted (`s117_deliveries_total{outcome="held"}`); the
  queue goes on past it, as past a dead one. An operator's retry
  (`POST /v1/ops/deliveries/{id}/retry`) or replay puts it back, and it is
  asked again then. Decided in memory (per batch, per organisation and event
  type); the message's field groups come with the claim: the delivery row
  carries them (`deliveries.field_groups`, written when it was queued).
* Released by an operator: a retry or replay (hub/api/ops.py) marks each
  delivery it puts back on a push channel (`last_error` `released by <the
  operator's client id>`, `RELEASED`). The claim that next takes it asks the
  agreements in force as it asks of any (still not allowed: held again, a
  `denied` disclosure); one allowed is recorded as disclosed again, in the
  claim's transaction: an `allowed` disclosure (the subscription's channel,
  the agreement in force now, the field groups the message carries, the
  reason naming the operator), and the mark is cleared, so the record shows
  allowed at queue time, denied when held, and allowed when it was released
  and sent, not nothing. A deliverer that asks no agreements (built bare, in
  tests and benches) records nothing.
* Outcome: delivered (after the channel has made it durable: an HTTP 2xx, a
  Kafka acknowledgement, an fsync), or failed with capped full-jitter
  exponential backoff, or dead after `max_attempts` failures when that is set.
  A failure whose answer asked for a wait (a webhook's 429 or 503 with
  `Retry-After`: `_retry_after`) waits at least that long, up to the
  backoff cap: the subscriber's word is heeded, but cannot stall its queue
  for longer than the hub would back off anyway.
* Suspension: a failure the channel says ends the endpoint (`_suspension`: a
  webhook's `410 Gone`) is not retried. The delivery stays pending, its
  attempt and error recorded, due at once (nothing lost, the same event
  number); the *subscription* is suspended in the same transaction
  (`subscriptions.suspended_at`, `suspended_reason`; a FHIR subscription's
  status `error`, with the reason). A suspended subscription is still active
  (DELETE stops one), but neither the polls' heads nor a claim take its
  queue, in this instance or any other on the store, until a resume clears
  it (hub/api/subscriptions.py `resume`, for the subscriber's and the
  operator's endpoints: `lift_suspension`); then delivery goes on from its
  oldest pending message, in order, and with a fresh retry budget: a resume
  puts the attempt count of the subscription's pending deliveries back to 0,
  so the attempt that was answered 410 (or any failed before it) does not
  count towards `max_attempts` and a subscriber that was gone and came back
  gets the full number of attempts for the message it missed. A resume is a
  line requests in flight do not cross (`subscriptions.suspension_epoch`, one
  more at every resume, read when a heartbeat or a batch starts): a 410 to a
  request sent before the latest resume suspends nothing (the suspending
  UPDATE compares the epoch: compare-and-set) and is logged as stale (`STALE_GONE`);
  its delivery is sent again at once, and a 410 then suspends as usual. A
  batch leased before a heartbeat's 410 suspended the subscription may still be
  in flight when it is resumed: the resume forgives its attempts too, and its
  record, seeing the epoch moved (`_record`), keeps that: its failure does not
  count (never dead on the old budget), those it did not send are given back
  due at once (not left leased until the lease runs out), so delivery goes on
  at once after it, in order, each attempt counted once. A pipelined
  window follows "Order": the suspension is the first failure's; a 410 behind
  an earlier failure is given back with the rest. A FHIR rest-hook
  subscription is suspended the same way when a heartbeat is answered 410
  (`suspend_subscription`, hub.delivery.fhir_rest_hook); a handshake answered
  410 is a failed handshake (hub/api/fhir_subscriptions.py: in error and off,
  nothing queued for an endpoint gone before it was used).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.periodic import every
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.delivery.ledger import ledger_for
from hub.delivery.queue import disclosed_under_another, disclosure_row, hold_disallowed
from hub.sharing import DisclosureCheck, SharingAgreements
from hub.store.db import Prepared, execute_prepared, snapshot, store_fault
from hub.store.schema import deliveries, deliveries_with_messages, delivery_messages, disclosures, subscriptions
from hub.domain.dates import england_day

log = get_logger("hub.delivery")
# Outcomes the store could not take, tried again after this, doubling up to the most (`_record_held`).
HELD_FIRST_WAIT = 0.05
HELD_MAX_WAIT = 2.0
# A delivery an operator put back to be sent (`last_error`: this and the operator's client id), until
# the claim that takes it records the disclosure (module docstring, "Released by an operator").
RELEASED = "released by "


def backoff_seconds(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [base*2^(n-1)/2, base*2^(n-1)], capped."""
    # The exponent is bounded so that a delivery retried for weeks cannot overflow the float.
    ceiling = min(cap, base * (2 ** min(max(0, attempts - 1), 60)))
    r = (rng or random).random()
    return ceiling / 2 + r * ceiling / 2


@dataclass(frozen=True)
class RetryPolicy:
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    max_attempts: int = 0  # 0 = retry until it goes through
    lease_seconds: float = 60.0


def aware(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything the hub writes is UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


async def pending_heads(conn: AsyncConnection, channel: str) -> list[Any]:
    """The oldest pending delivery (subscription_id, next_attempt_at) of every
    active subscription on `channel`, in one statement. Not filtered by
    `next_attempt_at`: see `SubscriptionDeliverer._due_heads`. Per subscription, one probe of
    `ix_deliveries_pending` (its lowest pending number): the cost follows
    the number of subscriptions, not the backlog (a GROUP BY over every
    pending delivery made each poll slower the further delivery fell behind)."""
    return list((await execute_prepared(conn, _PENDING_HEADS, {"channel": channel})).all())


_HEAD_SEQ = (select(func.min(deliveries.c.delivery_seq))
             .where(deliveries.c.subscription_id == subscriptions.c.subscription_id,
                    deliveries.c.status == "pending")
             .correlate(subscriptions).scalar_subquery())
_PENDING_HEADS = Prepared(select(deliveries.c.subscription_id, deliveries.c.next_attempt_at)
                          .select_from(subscriptions.join(deliveries, deliveries.c.delivery_seq == _HEAD_SEQ))
                          .where(subscriptions.c.channel == bindparam("channel"), subscriptions.c.active.is_(True),
                                 subscriptions.c.suspended_at.is_(None))
                          .order_by(deliveries.c.delivery_seq))
# A lease's statements, built once (hub.store.db.Prepared). Each row is updated
# by its own key in one executemany rather than an IN list, which SQLAlchemy
# would re-render for every length.
# The claim carries each delivery's message (`row.payload`, from `delivery_messages`), and
# (a column of `deliveries`) the field groups it was rendered with (`row.field_groups`).
_CLAIM = Prepared(select(deliveries, delivery_messages.c.payload, subscriptions.c.url, subscriptions.c.topic,
                         subscriptions.c.secret, subscriptions.c.org_code, subscriptions.c.fhir,
                         subscriptions.c.pipeline, subscriptions.c.suspension_epoch)
                  .select_from(deliveries_with_messages.join(
                      subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id))
                  .where(deliveries.c.subscription_id == bindparam("subscription_id"),
                         deliveries.c.status == "pending", subscriptions.c.active.is_(True),
                         subscriptions.c.suspended_at.is_(None), subscriptions.c.channel == bindparam("channel"))
                  .order_by(deliveries.c.delivery_seq).limit(bindparam("limit"))
                  .with_for_update(of=deliveries))
_LEASE = Prepared(deliveries.update().where(deliveries.c.delivery_seq == bindparam("seq"))
                  .values(attempts=deliveries.c.attempts + 1, next_attempt_at=bindparam("until")))
_DELIVERED = Prepared(deliveries.update().where(deliveries.c.delivery_seq == bindparam("seq"))
                      .values(status="delivered", delivered_at=bindparam("at"), last_error=None))
_FAILED = Prepared(deliveries.update().where(deliveries.c.delivery_seq == bindparam("seq"))
                   .values(attempts=bindparam("attempts"), last_error=bindparam("err"),
                           next_attempt_at=bindparam("until")))
_DEAD = Prepared(deliveries.update().where(deliveries.c.delivery_seq == bindparam("seq"))
                 .values(status="dead", attempts=bindparam("attempts"), last_error=bindparam("err")))
_GIVEN_BACK = Prepared(deliveries.update()
                       .where(deliveries.c.delivery_seq == bindparam("seq"), deliveries.c.status == "pending",
                              deliveries.c.attempts == bindparam("leased"))
                       .values(attempts=bindparam("given_back"), next_attempt_at=bindparam("at")))


async def claim_batch(engine: AsyncEngine, channel: str, subscription_id: str, limit: int,
                      lease_seconds: float, check: DisclosureCheck | None = None,
                      handler: str | None = None, sharing: SharingAgreements | None = None) -> list[Any]:
    """Lease up to `limit` of the subscription's pending deliveries, oldest
    first, if its head is due (else []): each one's attempt count goes up by
    one (`row.attempts + 1` is the attempt made) and its `next_attempt_at`
    moves out by the lease. The rows carry the subscription's url, topic,
    secret, org code and FHIR settings. Made in the process's next ledger
    transaction with the other deliverers' claims and outcomes (hub.delivery.ledger).

    PostgreSQL: the rows are locked (FOR UPDATE) until commit, so a second
    instance waits and then finds the head leased; SQLite: BEGIN IMMEDIATE.

    `check`: the agreements in force now; a delivery they no longer allow is
    held, not leased (module docstring), and counted under `handler`.
    `sharing`: those agreements (`check`'s), naming the agreement of a delivery an operator released
    (module docstring, "Released by an operator")."""
    claim = Claim(channel, subscription_id, limit, lease_seconds, check, _Holds() if check is not None else None,
                  sharing)
    rows = await ledger_for(engine).run(lambda conn: _claim(conn, claim))
    _count_holds(claim, handler or channel)
    return rows


class _Holds:
    """What a claim held (counted once its transaction has committed)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


@dataclass(frozen=True, slots=True)
class Claim:
    channel: str
    subscription_id: str
    limit: int
    lease_seconds: float
    check: DisclosureCheck | None = None  # the agreements in force now (None: not asked)
    holds: _Holds | None = None
    sharing: SharingAgreements | None = None  # `check`'s agreements: a released delivery's disclosure names them


_HELD_ROUNDS = 50  # batches wholly held looked past in one claim (the rest: the next poll)


def _count_holds(claim: Claim | None, handler: str) -> None:
    if claim is not None and claim.holds is not None and claim.holds.count:
        metrics.DELIVERY.labels(channel=handler, outcome="held").inc(claim.holds.count)


async def _claim(conn: AsyncConnection, claim: Claim) -> list[Any]:
    if claim.holds is not None:
        claim.holds.count = 0  # a ledger transaction made again makes its claims again
    for _ in range(_HELD_ROUNDS):
        # PostgreSQL: the rows are locked (FOR UPDATE OF deliveries); SQLite renders no lock.
        rows = (await execute_prepared(conn, _CLAIM, {"subscription_id": claim.subscription_id,
                                                      "channel": claim.channel, "limit": claim.limit})).all()
        now = datetime.now(UTC)
        taken = []
        for r in rows:
            if aware(r.next_attempt_at) > now:
                break  # the head backing off or leased by another instance (or one behind it leased)
            taken.append(r)
        if claim.check is None or not taken:
            break
        held = await _hold_withheld(conn, claim, taken)
        if not held:
            break
        taken = [r for r in taken if r.delivery_seq not in held]
        if taken or len(rows) < claim.limit:
            break
        # The whole batch held and there may be more behind it: the next rows, in this transaction.
    if taken:
        until = now + timedelta(seconds=claim.lease_seconds)
        await execute_prepared(conn, _LEASE, [{"seq": r.delivery_seq, "until": until} for r in taken])
        if claim.check is not None and claim.sharing is not None:
            released = [r for r in taken if r.last_error is not None and r.last_error.startswith(RELEASED)]
            if released:
                await disclosed_again(conn, claim.sharing, claim.channel, claim.subscription_id,
                                      released[0].org_code, released, now)
            # Sent under an agreement other than the one it was queued under (a renewal): recorded so.
            await disclosed_under_another(conn, claim.check, [r for r in taken if r not in released],
                                          taken[0].org_code, claim.channel, now)
    return taken


_UNMARK = Prepared(deliveries.update().where(deliveries.c.delivery_seq == bindparam("seq"),
                                             deliveries.c.last_error == bindparam("mark"))
                   .values(last_error=None))


async def disclosed_again(conn: AsyncConnection, sharing: SharingAgreements, channel: str, subscription_id: str,
                          org: str, rows: list[Any], now: datetime) -> None:
    """Deliveries of one subscription (its organisation `org`) an operator released (`RELEASED`), asked
    again and allowed by the agreements in force (`_claim`; a pull feed's page, hub/api/feeds.py): each an
    `allowed` disclosure, as the dispatcher's at queue time, under the person its message is about (that
    disclosure's), with the agreement in force now, the field groups the message carries, and the operator
    named in the reason; its mark cleared (recorded once). In the caller's transaction: sent (or handed
    out) and recorded, or neither."""
    persons = {row.event_id: row.person_id for row in (await conn.execute(
        select(disclosures.c.event_id, disclosures.c.person_id)
        .where(disclosures.c.event_id.in_(sorted({r.event_id for r in rows})),
               disclosures.c.recipient_org == org, disclosures.c.decision == "allowed")))}
    today = england_day(now)
    out = []
    for r in rows:
        decision = sharing.decide(org, r.event_type, today)
        operator = r.last_error[len(RELEASED):]
        out.append(disclosure_row(
            event_id=r.event_id, person_id=persons.get(r.event_id), event_type=r.event_type, recipient_org=org,
            decision="allowed", agreement_id=decision.agreement_id,
            field_groups=sorted(r.field_groups) if r.field_groups is not None else sorted(decision.field_groups),
            reason=f"{decision.reason} at delivery, released by {operator}", channel=channel, at=now))
    await conn.execute(disclosures.insert(), out)
    await execute_prepared(conn, _UNMARK, [{"seq": r.delivery_seq, "mark": r.last_error} for r in rows])
    log.info("released delivery disclosed", channel=channel, recipient=org,
             subscription_id=subscription_id, count=len(rows),
             delivery_ids=[r.delivery_id for r in rows], event_ids=[r.event_id for r in rows])


async def _hold_withheld(conn: AsyncConnection, claim: Claim, rows: list[Any]) -> set[int]:
    """Hold the `rows` the agreements in force no longer allow; their `delivery_seq`s (counted once
    the claim's transaction commits)."""
    assert claim.check is not None and rows
    withheld = await hold_disallowed(conn, claim.check, rows, rows[0].org_code, claim.channel,
                                     claim.subscription_id)  # a claim is one subscription's: one organisation
    if withheld and claim.holds is not None:
        claim.holds.count += len(withheld)
    return {r.delivery_seq for r, _ in withheld}


@dataclass(frozen=True, slots=True)
class Recorded:
    wait: float | None  # the failed one's backoff; None: nothing failed, it is dead, or its subscription suspended
    claimed: list[Any]  # the next batch, when `then_claim` was asked for
    suspended: bool = False  # `suspend` was asked for and this record suspended the subscription
    stale: bool = False  # `suspend` was asked for, but the batch was leased before the latest resume


def suspended_fhir(fhir: dict[str, Any] | None, reason: str) -> dict[str, Any] | None:
    """A FHIR subscription's settings while suspended: status `error`, the reason as its error
    (hub.fhir.subscriptions.subscription_resource shows both; heartbeats are sent only while `active`)."""
    if fhir is None:
        return None
    return {**fhir, "status": "error", "error": [{"text": f"delivery suspended: {reason}"}]}


def resumed_fhir(fhir: dict[str, Any] | None) -> dict[str, Any] | None:
    """A FHIR subscription's settings once resumed: `active` again, the suspension's error gone."""
    if fhir is None:
        return None
    return {**{k: v for k, v in fhir.items() if k != "error"}, "status": "active"}


async def record_batch(engine: AsyncEngine, delivered: list[Any], failed: Any, error: str | None,
                       unsent: list[Any], policy: RetryPolicy, handler: str,
                       then_claim: Claim | None = None, retry_after: float | None = None,
                       suspend: str | None = None) -> Recorded:
    """Record the outcomes of one leased batch (rows from `claim_batch`) in one
    transaction: `delivered` as delivered; `failed` (if any) due again after a
    backoff (`wait`), or dead at `policy.max_attempts` (`wait` None; None too
    when nothing failed); `unsent` given back with the attempt count they had
    and due at once (compare-and-set on the count: rows another instance has
    leased since are left alone). `then_claim`: the subscription's next batch
    leased in the same transaction, after the outcomes (`claimed`).
    `retry_after`: the seconds the failed one's answer asked the hub to wait;
    its backoff is at least that, capped at `policy.backoff_cap`.
    `suspend`: the failed one's answer ended the endpoint (why, e.g. "gone (HTTP 410)"): it stays
    pending, due at once, never dead, and its subscription is suspended (module docstring;
    `suspended` says whether this record did it: not if it was stopped or suspended meanwhile, nor
    if it was resumed since the batch was leased: `stale`, the 410 answered a request sent before that
    resume). A batch leased before the subscription's latest resume keeps the fresh retry budget the
    resume gave (`_record`). Made in the process's next ledger transaction (hub.delivery.ledger)."""

    async def op(conn: AsyncConnection) -> Recorded:
        wait, suspended, stale = await _record(conn, delivered, failed, error, unsent, policy, retry_after,
                                               suspend)
        return Recorded(wait, await _claim(conn, then_claim) if then_claim is not None else [], suspended, stale)

    recorded = await ledger_for(engine).run(op)
    _count_holds(then_claim, handler)
    if delivered:
        metrics.DELIVERY.labels(channel=handler, outcome="delivered").inc(len(delivered))
    if failed is not None:
        metrics.DELIVERY.labels(channel=handler, outcome="failed").inc()
        if recorded.wait is None and suspend is None:
            metrics.DEAD_LETTERS.labels(handler=handler).inc()
    return recorded


async def _record(conn: AsyncConnection, delivered: list[Any], failed: Any, error: str | None,
                  unsent: list[Any], policy: RetryPolicy, retry_after: float | None = None,
                  suspend: str | None = None) -> tuple[float | None, bool, bool]:
    """The outcomes' writes (`record_batch`): the failed one's wait, whether it suspended the
    subscription, whether its `suspend` was stale (the batch leased before the latest resume)."""
    now = datetime.now(UTC)
    wait: float | None = None
    suspended = stale = False
    # Resumed since the batch was leased (a heartbeat's 410 suspended the subscription while the batch
    # was in flight, then the subscriber resumed it): the resume forgave every attempt made before it,
    # this batch's too (`lift_suspension` put their counts back to 0, leased or not). Its outcomes keep
    # that: the failed one's attempt is not counted (never dead on the old budget), a 410 to it is stale
    # (it suspends nothing: sent again at once, a 410 then suspends), and those not sent are given back
    # due at once at their count of 0, rather than left leased until the lease runs out.
    # Read (and on PostgreSQL locked) before any delivery row is written: the lock order is a resume's
    # (`lift_suspension`: the subscription, then its deliveries), so the two never wait on each other.
    resumed = (failed is not None or bool(unsent)) and await _resumed_since(conn, failed or unsent[0])
    if delivered:
        await execute_prepared(conn, _DELIVERED, [{"seq": r.delivery_seq, "at": now} for r in delivered])
    if failed is not None:
        attempts, err = 0 if resumed else failed.attempts + 1, (error or "failed")[:200]
        if suspend is not None:
            # Not retried, not dead: pending and due, the first sent once its subscription is resumed.
            await execute_prepared(conn, _FAILED, {"seq": failed.delivery_seq, "attempts": attempts, "err": err,
                                                   "until": now})
            if resumed:
                stale = True
            else:
                suspended = await _suspend(conn, failed.subscription_id, getattr(failed, "fhir", None),
                                           failed.suspension_epoch, suspend, now)
        elif policy.max_attempts and attempts >= policy.max_attempts:
            await execute_prepared(conn, _DEAD, {"seq": failed.delivery_seq, "attempts": attempts, "err": err})
        else:
            wait = backoff_seconds(attempts, policy.backoff_base, policy.backoff_cap)
            if retry_after is not None:  # the subscriber asked for a wait: heeded, up to the cap
                wait = max(wait, min(retry_after, policy.backoff_cap))
            await execute_prepared(conn, _FAILED, {"seq": failed.delivery_seq, "attempts": attempts, "err": err,
                                                   "until": now + timedelta(seconds=wait)})
    if unsent:
        await execute_prepared(conn, _GIVEN_BACK, [
            {"seq": r.delivery_seq, "leased": 0 if resumed else r.attempts + 1,
             "given_back": 0 if resumed else r.attempts, "at": now}
            for r in unsent])
    return wait, suspended, stale


async def _resumed_since(conn: AsyncConnection, row: Any) -> bool:
    """Whether `row`'s subscription (a claimed delivery's row) has been resumed since it was leased:
    its `suspension_epoch` moved on. PostgreSQL: the subscription's row is locked (FOR UPDATE) until
    the record commits, so a resume (`lift_suspension`, which updates it first) comes wholly before
    this record's writes or wholly after them, never between the read and the writes."""
    epoch = (await conn.execute(select(subscriptions.c.suspension_epoch)
                                .where(subscriptions.c.subscription_id == row.subscription_id)
                                .with_for_update())).scalar_one_or_none()
    return epoch is not None and epoch != row.suspension_epoch


def suspension_values(fhir: dict[str, Any] | None, reason: str, now: datetime) -> dict[str, Any]:
    """The `subscriptions` columns of a subscription suspended at `now` for `reason` (a FHIR
    subscription's settings too: `suspended_fhir`)."""
    values: dict[str, Any] = {"suspended_at": now, "suspended_reason": reason[:64]}
    suspended = suspended_fhir(fhir, reason)
    if suspended is not None:
        values["fhir"] = suspended
    return values


async def _suspend(conn: AsyncConnection, subscription_id: str, fhir: dict[str, Any] | None, epoch: int,
                   reason: str, now: datetime) -> bool:
    """Suspend the subscription (`fhir`: its FHIR settings as read with `epoch`) for a 410 answering a
    request sent at its `suspension_epoch` `epoch`, unless it was stopped, suspended or resumed since
    (compare-and-set: a 410 to a request sent before the latest resume suspends nothing); whether it did."""
    done = await conn.execute(subscriptions.update().where(
        subscriptions.c.subscription_id == subscription_id, subscriptions.c.active.is_(True),
        subscriptions.c.suspended_at.is_(None), subscriptions.c.suspension_epoch == epoch)
        .values(**suspension_values(fhir, reason, now)))
    return done.rowcount == 1


# What is logged (at info) when a 410 Gone answered a request sent before the subscription's latest
# resume (a delivery's, `SubscriptionDeliverer._stale_suspension`, or a FHIR heartbeat's).
STALE_GONE = "410 Gone to a request sent before the subscription was resumed: not suspended again"


@dataclass(frozen=True, slots=True)
class Suspension:
    """What `suspend_subscription` did: `row` (the subscription's org code, channel, url) if it suspended
    it, else None; `stale`: it did not, because it was resumed after the request was sent."""

    row: Any | None
    stale: bool = False


async def suspend_subscription(engine: AsyncEngine, subscription_id: str, reason: str, epoch: int) -> Suspension:
    """Suspend a subscription for `reason` outside a delivery's record: a FHIR rest-hook heartbeat
    answered 410 Gone (hub.delivery.fhir_rest_hook), sent while its `suspension_epoch` was `epoch`.
    The same columns as a delivery's suspension (`_suspend`), in the process's next ledger
    transaction; unless it was stopped or suspended meanwhile, or resumed since the heartbeat was sent
    (`stale`)."""

    async def op(conn: AsyncConnection) -> Suspension:
        row = (await conn.execute(select(subscriptions.c.subscription_id, subscriptions.c.org_code,
                                         subscriptions.c.channel, subscriptions.c.url, subscriptions.c.fhir,
                                         subscriptions.c.suspension_epoch)
                                  .where(subscriptions.c.subscription_id == subscription_id)
                                  .with_for_update())).first()  # PostgreSQL: no resume between read and write
        if row is None:
            return Suspension(None)
        if await _suspend(conn, subscription_id, row.fhir, epoch, reason, datetime.now(UTC)):
            return Suspension(row)
        return Suspension(None, stale=row.suspension_epoch != epoch)  # not suspended: stale if resumed since

    return await ledger_for(engine).run(op)


async def lift_suspension(conn: AsyncConnection, row: Any) -> bool:
    """Resume `row`'s suspended subscription (its `subscriptions` row as read in `conn`'s
    transaction) in that transaction: the suspension cleared (a FHIR subscription's status `active`
    again, `resumed_fhir`), and its pending deliveries given a fresh retry budget (their `attempts`
    back to 0, as an operator's retry does): the attempt answered 410 Gone, and any failed before it,
    do not count towards `RetryPolicy.max_attempts` once the subscriber is back, so the message it
    missed gets the full number of attempts, and being gone never dead-letters it sooner. Its
    `suspension_epoch` goes up by one: a 410 to a request sent before this resume (a heartbeat, a batch
    in flight) suspends nothing (`_suspend`), and a batch leased before it records its outcomes on the
    fresh budget (`_record`). The deliverers of every instance take its queue again at their next poll
    (or wake-up). Whether it did: not when it is stopped or not suspended (or was resumed meanwhile)."""
    values: dict[str, Any] = {"suspended_at": None, "suspended_reason": None,
                              "suspension_epoch": subscriptions.c.suspension_epoch + 1}
    if row.fhir is not None and row.suspended_at is not None:
        values["fhir"] = resumed_fhir(row.fhir)
    done = await conn.execute(subscriptions.update().where(
        subscriptions.c.subscription_id == row.subscription_id, subscriptions.c.active.is_(True),
        subscriptions.c.suspended_at.is_not(None)).values(**values))
    if done.rowcount != 1:
        return False
    # No claim takes a suspended subscription's queue, but a batch leased before a heartbeat's 410
    # suspended it may still be in flight: its rows are put back to 0 too (the attempt in flight was made
    # before the resume), and its record, seeing the epoch moved (`_record`), keeps them so: the ones it
    # did not send are given back at 0 and due at once, the lease's compare-and-set on that count.
    await conn.execute(deliveries.update().where(
        deliveries.c.subscription_id == row.subscription_id, deliveries.c.status == "pending",
        deliveries.c.attempts > 0).values(attempts=0))
    return True


class SubscriptionDeliverer:
    """A push channel whose subscriptions each drain their own ordered queue.

    `serve` (the running hub) keeps one asyncio task per active subscription
    that has a due head: the task leases that subscription's deliveries in
    batches (`claim_batch`, up to `_claim_max`), sends them one after the
    other, oldest first, records each batch's outcomes in one transaction
    (`record_batch`), and ends when its queue is empty or its head is backing
    off (or its subscription was suspended: no poll starts it again until it is
    resumed); the next poll starts it again. Subscriptions never wait for
    each other: one endpoint's latency, timeouts or outage only holds up its own
    queue. In-flight attempts are bounded overall by `max_in_flight`.

    `run_once` is one awaited pass (up to `_batch` per subscription), for tests
    and the lockstep baseline of bench/bench_delivery.py.

    Subclasses set `channel`, `_engine`, `_policy`, `_deadline` (one attempt's
    hard deadline) and `_batch`, and implement `_send` (None: the channel took
    it; else the error kind) and `_outcome` (logging)."""

    channel: str
    handler: str  # the metric / dead-letter label
    _engine: AsyncEngine
    _policy: RetryPolicy
    _deadline: float = 0.0
    _batch: int = 100
    _claim_max: int = 100
    _max_in_flight: int = 100
    _slots: asyncio.Semaphore | None = None
    stop_grace_seconds: float = 5.0
    # Polls that find nothing to do (no head due, no drain running) come further
    # apart, doubling up to this, and never later than the next head falls due:
    # a wake-up (`wake`: this process's dispatcher queued deliveries) is at once
    # whatever the wait. What only a poll finds (another process's deliveries
    # with no wake-up, an operator's retry) waits at most this long.
    idle_poll_max_seconds: float = 1.0
    _next_due_in: float | None = None  # seconds until the earliest head not yet due (the last poll's)
    # The data-sharing agreements in force now (the hub's one object: a reload
    # of the file swaps its grants in place), asked again before every batch is sent (module
    # docstring); set by hub.bootstrap. None: not asked (a deliverer built
    # bare, in tests and benches, sends what was queued).
    sharing_of: Callable[[], SharingAgreements | None] | None = None

    def _check(self) -> tuple[DisclosureCheck | None, SharingAgreements | None]:
        """The agreements' decision at the time of disclosure, for one batch, and those agreements."""
        sharing = self.sharing_of() if self.sharing_of is not None else None
        return (DisclosureCheck(sharing, england_day()) if sharing is not None else None), sharing

    async def _due_heads(self) -> list[Any]:
        """The due head of every subscription on this channel (`serve` notes those whose task is still running)."""
        # A read (a WAL snapshot on SQLite, inline): polling never queues behind a writer.
        async with snapshot(self._engine) as conn:
            heads = await pending_heads(conn, self.channel)
        now = datetime.now(UTC)
        ready, next_due = [], None  # the heads due now, and the earliest time one not yet due falls due
        for h in heads:
            at = aware(h.next_attempt_at)
            if at <= now:
                ready.append(h)
            elif next_due is None or at < next_due:
                next_due = at
        self._next_due_in = (next_due - now).total_seconds() if next_due is not None else None
        return ready

    async def run_once(self) -> int:
        """Drain every subscription with a due head (up to a batch each) and
        wait for all of them; returns how many deliveries were attempted."""
        heads = await self._due_heads()
        if not heads:
            return 0
        return sum(await asyncio.gather(*(self._drain(h.subscription_id, self._batch) for h in heads)))

    async def serve(self, poll_seconds: float, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set: one task per subscription with work."""
        tasks: dict[str, asyncio.Task] = {}
        wake = self._wake = asyncio.Event()
        # Subscriptions a poll found due while their task was running (it may
        # have made its last claim before those deliveries were queued): polled
        # again as soon as the task ends. A task that emptied its queue (its
        # last claim, made after the outcomes, found nothing) needs no poll of
        # its own: whatever is queued for it later comes with a wake-up or is
        # found by the next poll, as for a subscription with no task.
        missed: set[str] = set()
        emptied: set[str] = set()  # the tasks that ended on an empty claim (`_drain`)

        def finished(sid: str, task: asyncio.Task) -> None:
            tasks.pop(sid, None)
            done_empty = sid in emptied
            emptied.discard(sid)
            if not task.cancelled() and task.exception() is not None:
                log.error("delivery task error", channel=self.channel, subscription_id=sid,
                          exc_type=type(task.exception()).__name__)
                done_empty = False
            if sid in missed or not done_empty:  # failed (its backoff), stopped, or maybe more
                missed.discard(sid)
                wake.set()

        idle_wait = poll_seconds
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    heads = await self._due_heads()
                    await self._observe()
                except Exception as exc:  # noqa: BLE001 - the store may be briefly unavailable: log, poll again
                    log.error("delivery loop error", channel=self.channel, exc_type=type(exc).__name__)
                    heads = []
                    self._next_due_in = None
                for head in heads:
                    sid = head.subscription_id
                    if sid in tasks:
                        missed.add(sid)
                    else:
                        task = asyncio.create_task(self._drain(sid, None, stop, emptied),
                                                   name=f"{self.channel}:{sid}")
                        tasks[sid] = task
                        task.add_done_callback(lambda t, sid=sid: finished(sid, t))
                if heads or tasks:
                    idle_wait, wait = poll_seconds, poll_seconds
                else:  # nothing to do: poll less often (`idle_poll_max_seconds`), not past the next head's time
                    wait = idle_wait
                    idle_wait = min(max(idle_wait * 2, poll_seconds), max(self.idle_poll_max_seconds, poll_seconds))
                    if self._next_due_in is not None:
                        wait = min(wait, max(self._next_due_in, 0.0) + 0.005)
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
                try:
                    await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
        finally:
            # Drain: attempts in flight finish (up to a grace period); the
            # leases of any cut short run out and they are sent again.
            pending = list(tasks.values())
            if pending:
                _, late = await asyncio.wait(pending, timeout=self.stop_grace_seconds)
                for t in late:
                    t.cancel()
                await asyncio.gather(*late, return_exceptions=True)

    _wake: asyncio.Event | None = None

    def wake(self) -> None:
        """New deliveries were queued in this process (the dispatcher calls it
        after its commit): look for due heads now rather than at the next poll."""
        if self._wake is not None:
            self._wake.set()

    async def _observe(self) -> None:
        """Hook for per-poll metrics."""

    async def _drain(self, subscription_id: str, limit: int | None, stop: asyncio.Event | None = None,
                     emptied: set[str] | None = None) -> int:
        """Send the subscription's due deliveries in leased batches, oldest
        first, until its queue is empty, its head fails (the rest wait behind
        it), `limit` attempts are made or `stop` is set; returns the attempts.
        `emptied`: the subscription is added to it when it ended on a claim
        that found nothing due (`serve`: no poll of its own needed)."""
        attempted = 0
        lease = self._policy.lease_seconds
        claimed: list[Any] | None = None  # the next batch, leased with the last batch's outcomes
        while limit is None or attempted < limit:
            if stop is not None and stop.is_set():
                break
            if claimed is None:
                leased_at = time.monotonic()
                check, sharing = self._check()
                rows = await claim_batch(self._engine, self.channel, subscription_id, self._want(limit, attempted),
                                         lease, check, self.handler, sharing)
            else:
                rows = claimed
            if not rows:
                if emptied is not None:
                    emptied.add(subscription_id)
                break  # empty, the head is backing off, or another instance holds it
            delivered: list[Any] = []
            failed, error = None, None
            if self._slots is None:
                self._slots = asyncio.Semaphore(self._max_in_flight)
            window = self._window_of(rows[0])
            sent = 0  # rows[:sent] have an outcome
            while sent < len(rows):
                # The first attempt always fits in the lease; a later one only
                # while a whole attempt still ends well inside it.
                if sent and ((stop is not None and stop.is_set())
                             or time.monotonic() - leased_at + self._deadline > lease * 0.8):
                    break
                if window == 1:
                    row = rows[sent]
                    async with self._slots:
                        error = await self._send(row)
                    sent += 1
                    if error is None:
                        delivered.append(row)
                        continue
                    failed = row
                    break
                # Pipelined (the subscription's choice): a window written at once,
                # its answers in order. One that failed holds back what was not
                # yet taken; those behind it that the subscriber took are delivered.
                chunk = rows[sent:sent + window]
                async with self._slots:
                    errors = await self._send_window(chunk)
                sent += len(chunk)
                for row, err in zip(chunk, errors):  # fewer outcomes than rows: the rest were not taken
                    if err is None:
                        delivered.append(row)
                    elif failed is None:
                        failed, error = row, err
                    # a later failure was not taken either: given back with the unsent, sent again after it
                if failed is not None or len(errors) < len(chunk):
                    break
            settled = {id(r) for r in delivered}
            if failed is not None:
                settled.add(id(failed))
            unsent = [r for r in rows if id(r) not in settled]
            attempted += len(delivered) + (failed is not None)
            # Going on: the next batch is leased in the same transaction as these outcomes.
            more = failed is None and (limit is None or attempted < limit) and not (stop is not None and stop.is_set())
            next_lease = time.monotonic()
            retry_after = self._retry_after(failed) if failed is not None else None
            suspend = self._suspension(error) if failed is not None else None
            recorded = await self._record_held(
                delivered, failed, error, unsent, retry_after, suspend,
                self._claim_of(subscription_id, self._want(limit, attempted), lease) if more else None)
            for row in delivered:
                self._outcome(row, None, None)
            if failed is not None:
                if suspend is not None:
                    if recorded.suspended:
                        self._suspended(failed, error, suspend)
                    elif recorded.stale:
                        self._stale_suspension(failed, error)
                else:
                    self._outcome(failed, error, recorded.wait)
                break  # failed: the rest wait behind it, until the backoff runs out (or a resume)
            if not more:
                break
            claimed, leased_at = recorded.claimed, next_lease
        return attempted

    async def _record_held(self, delivered: list[Any], failed: Any, error: str | None, unsent: list[Any],
                           retry_after: float | None, suspend: str | None, then_claim: Claim | None) -> Recorded:
        """A batch's outcomes recorded (`record_batch`). While the store cannot take them (a store fault:
        its disk full or failing, the server gone or not answering) they are held here and tried again,
        not dropped: a delivery the subscriber took and whose record was lost would be sent again once its
        lease ran out. Only the process ending first (a crash, a stop past its grace) leaves them to be
        sent again (at least once). Any other error is raised as before."""
        wait, said = HELD_FIRST_WAIT, False
        while True:
            try:
                return await record_batch(self._engine, delivered, failed, error, unsent, self._policy, self.handler,
                                          then_claim=then_claim, retry_after=retry_after, suspend=suspend)
            except Exception as exc:
                cause = store_fault(exc)
                if cause is None:
                    raise
                if not said:  # once a batch held, not at each try
                    said = True
                    log.warning("delivery outcomes held until the store takes them", channel=self.channel,
                                count=len(delivered) + (failed is not None), error_kind=cause)
            await asyncio.sleep(wait)
            wait = min(wait * 2, HELD_MAX_WAIT)

    def _claim_of(self, subscription_id: str, limit: int, lease: float) -> Claim:
        check, sharing = self._check()
        return Claim(self.channel, subscription_id, limit, lease, check, _Holds() if check is not None else None,
                     sharing)

    def _window_of(self, row: Any) -> int:
        """How many of the subscription's deliveries may be in flight at once: 1
        (one after the other) unless the channel pipelines and the subscription
        asked for it (`subscriptions.pipeline`)."""
        return 1

    async def _send_window(self, rows: list[Any]) -> list[str | None]:
        """Send `rows` pipelined: each one's outcome as `_send` gives it, in
        order; fewer than `rows` when the rest were not taken (they are given back)."""
        return [await self._send(row) for row in rows]

    def _retry_after(self, row: Any) -> float | None:
        """The seconds the failed `row`'s answer asked the hub to wait before trying again, if it asked
        (a webhook's `Retry-After`); None: the usual backoff. Asked once per failure."""
        return None

    def _suspension(self, error: str | None) -> str | None:
        """Why the failure `error` (as `_send` gave it) suspends the subscription rather than being
        retried (module docstring, "Suspension"); None: retried as usual."""
        return None

    def _suspended(self, row: Any, error: str | None, reason: str) -> None:
        """Log (and count) that `row`'s failure suspended its subscription: once, by the record that did."""

    def _stale_suspension(self, row: Any, error: str | None) -> None:
        """Log that `row`'s answer would have suspended its subscription, but came to a request sent
        before its latest resume (`record_batch`: stale): it is sent again at once."""
        log.info(STALE_GONE, subscription_id=row.subscription_id, recipient=row.org_code, channel=self.channel,
                 delivery_id=row.delivery_id, event_number=row.event_number, attempt=row.attempts + 1,
                 error_kind=error, correlation_id=row.correlation_id)

    def _want(self, limit: int | None, attempted: int) -> int:
        return self._claim_max if limit is None else min(self._claim_max, limit - attempted)

    async def _send(self, row: Any) -> str | None:
        """Send one leased delivery: None when the channel has taken it (made
        durable), else the kind of error (a status code or exception type)."""
        raise NotImplementedError

    def _outcome(self, row: Any, error: str | None, wait: float | None) -> None:
        """Log one recorded outcome: delivered (`error` None), failed and due
        again in `wait` seconds, or dead (`wait` None)."""


class Deliverer(Protocol):
    async def run_once(self) -> int: ...


async def run_deliverer(deliverer: Deliverer, poll_seconds: float, stop: asyncio.Event) -> None:
    """Run `deliverer` until `stop` is set: its own per-subscription tasks
    (`serve`) if it has them, else a loop of `run_once`, sleeping
    `poll_seconds` when idle. Work in progress finishes before it ends (drain)."""
    serve = getattr(deliverer, "serve", None)
    if serve is not None:
        await serve(poll_seconds, stop)
        return
    await every(poll_seconds, stop, deliverer.run_once, log=log, failed="delivery loop error", until_idle=True)
