"""Queuing a delivery: the one place a message is put on a subscription's
queue, with the subscription's next event number.

Event numbers are per subscription, start at 1 and have no gaps: the number
comes from the subscription's counter row (`subscription_counters`), bumped in
the caller's transaction together with the delivery insert. On PostgreSQL the
UPDATE takes the counter row's lock until commit, so two hub instances queuing
for one subscription take turns and neither number is lost nor shared; a
rolled-back transaction gives its number back with it. Every channel carries
the number (webhook `S117-Event-Number`, Kafka `event_number`, the feed cursor
and SSE id, the NDJSON `event_number` field), so a subscriber that sees N+2
after N knows it missed N+1 and can ask GET /v1/subscriptions/{id}/events for it.
The one exception: `s117hub restore` (hub/restore_cli.py) advances each
counter past the numbers the store it displaced had given, a gap never
filled, so that no number is given to two messages; subscribers see the
restore epoch change with it (hub/store/restores.py).

Every sharing decision is a row of `disclosures` (allowed per subscription
queued, denied, or allowed with no subscription), which the audit chain takes
up: `disclosure_row` is that row for every sender; `share` is the whole
decide-queue-audit step for a sender that sends one message at a time (the
drift alerts); the dispatcher batches the same rows (hub/delivery/dispatcher.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import LargeBinary, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.ids import uuid7
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.db import InList, Prepared, execute_prepared
from hub.sharing import DisclosureCheck, Withheld
from hub.store.schema import delivery_messages, deliveries, disclosures, subscription_counters, subscriptions
from hub.domain.dates import england_day

NO_SUBSCRIPTION = "allowed, but the organisation has no active subscription"
# A queued message the agreements in force no longer let go (hub.sharing.DisclosureCheck):
# out of the queue (the ones behind it go on, as past a dead one), kept, never sent until
# an operator's retry or replay puts it back (and the check passes then).
HELD = "held"


def disclosure_row(*, event_id: str, person_id: str | None, event_type: str, recipient_org: str, decision: str,
                   agreement_id: str | None, field_groups: Iterable[str] = (), reason: str, channel: str | None,
                   at: datetime | None = None) -> dict[str, Any]:
    """One sharing decision (`allowed`, `denied`, `no-subscription`) as a
    `disclosures` row: no personal data beyond the hub's person id (None for a
    message about a body)."""
    return dict(event_id=event_id, person_id=person_id, event_type=event_type, recipient_org=recipient_org,
                decision=decision, agreement_id=agreement_id, field_groups=list(field_groups), reason=reason[:300],
                channel=channel, at=at or datetime.now(UTC))


def subscribed(rows: Iterable[Any], event_type: str, channels: Collection[str] | None = None) -> list[Any]:
    """The subscriptions (rows with `channel`, `event_types`) that take `event_type` (and, if given, whose
    channel is one of `channels`)."""
    return [r for r in rows if (not r.event_types or event_type in r.event_types)
            and (channels is None or r.channel in channels)]


async def active_subscriptions(conn: AsyncConnection, org_code: str) -> list[Any]:
    """The organisation's active subscriptions, oldest first."""
    return list((await execute_prepared(conn, _ACTIVE, {"org_code": org_code})).all())


async def active_subscriptions_of(conn: AsyncConnection, orgs: Collection[str]) -> dict[str, list[Any]]:
    """`active_subscriptions` of each of `orgs`, in one statement (each
    organisation's list, oldest first; empty if it has none)."""
    out: dict[str, list[Any]] = {org: [] for org in orgs}
    if out:
        for row in await _ACTIVE_OF.execute(conn, list(out)):
            out[row.org_code].append(row)
    return out


async def share(
    conn: AsyncConnection, *, org: str, decision: Any, event_id: str, event_type: str, message_id: str,
    payload: Callable[[], bytes], correlation_id: str, person_id: str | None = None,
    channels: Collection[str] | None = None, field_groups: Iterable[str] = (),
) -> int | None:
    """Share one message with one organisation in the caller's transaction:
    `decision` is the agreement's (hub/sharing.py `decide`); refused, one
    `denied` disclosure; allowed with no active subscription taking the event
    (on one of `channels`), one `no-subscription`; else the message
    (`payload()`, encrypted, built only then) is queued to each such
    subscription with its next event number and each queuing is an `allowed`
    disclosure naming the channel (an event already on a subscription's queue
    is skipped, not audited again). The number queued, or None when not shared."""
    groups = sorted(field_groups)
    audit = dict(event_id=event_id, person_id=person_id, event_type=event_type, recipient_org=org,
                 agreement_id=decision.agreement_id)
    if not decision.allowed:
        await conn.execute(disclosures.insert().values(**disclosure_row(
            **audit, decision="denied", reason=decision.reason, channel=None)))
        metrics.DISPATCHED.labels(event_type=event_type, decision="denied").inc()
        return None
    subs = subscribed(await active_subscriptions(conn, org), event_type, channels)
    if not subs:
        await conn.execute(disclosures.insert().values(**disclosure_row(
            **audit, decision="no-subscription", field_groups=groups, reason=NO_SUBSCRIPTION, channel=None)))
        metrics.DISPATCHED.labels(event_type=event_type, decision="no-subscription").inc()
        return None
    body = payload()
    queued = 0
    for sub in subs:
        number = await queue_delivery(conn, subscription_id=sub.subscription_id, event_id=event_id,
                                      message_id=message_id, event_type=event_type, payload=body,
                                      correlation_id=correlation_id, field_groups=groups)
        if number is None:
            continue  # already on this subscription's queue: a replay
        queued += 1
        await conn.execute(disclosures.insert().values(**disclosure_row(
            **audit, decision="allowed", field_groups=groups, reason=decision.reason, channel=sub.channel)))
    metrics.DISPATCHED.labels(event_type=event_type, decision="allowed").inc()
    return queued


log = get_logger("hub.delivery")


async def hold_disallowed(conn: AsyncConnection, check: DisclosureCheck, rows: Iterable[Any], org_code: str,
                          channel: str, subscription_id: str) -> list[tuple[Any, Withheld]]:
    """Of one subscription's queued deliveries (`rows`: `delivery_seq`,
    `delivery_id`, `event_id`, `event_type`, `field_groups`), hold those the
    agreements in force no longer let go to `org_code` (`hold_withheld`) and
    say so in one log line; the held rows, each with why. Every channel asks
    here at the time of disclosure (the lease, a pull feed, a council file);
    the caller counts them (`s117_deliveries_total{outcome="held"}`)."""
    withheld = [(r, w) for r in rows if (w := check.withheld(org_code, r.event_type, r.field_groups)) is not None]
    if withheld:
        await hold_withheld(conn, withheld, org_code, channel)
        log.warning("delivery held: no agreement in force allows it now", channel=channel, recipient=org_code,
                    subscription_id=subscription_id, count=len(withheld),
                    error_kind=sorted({w.kind for _, w in withheld}),
                    delivery_ids=[r.delivery_id for r, _ in withheld], event_ids=[r.event_id for r, _ in withheld])
    return withheld


async def disclosed_under_another(conn: AsyncConnection, check: DisclosureCheck, rows: Iterable[Any],
                                  org_code: str, channel: str, now: datetime) -> int:
    """Of one subscription's deliveries being sent (or handed out) now, those the agreements in force
    let go under another agreement than the one they were queued under (`DisclosureCheck.moved_from`:
    an agreement ended and a renewal under a new id in force): each an `allowed` disclosure naming
    the agreement in force now and the one it was queued under, under the person its message is
    about, in the caller's transaction (sent and recorded, or neither); once per delivery and
    agreement (a retry finds its record). Nothing read when no agreement moved (the usual case)."""
    moved = []
    for r in rows:
        m = check.moved_from(org_code, r.event_type, england_day(r.created_at))
        if m is not None:
            moved.append((r, *m))
    if not moved:
        return 0
    known = (await conn.execute(
        select(disclosures.c.event_id, disclosures.c.person_id, disclosures.c.agreement_id)
        .where(disclosures.c.event_id.in_(sorted({r.event_id for r, _, _ in moved})),
               disclosures.c.recipient_org == org_code, disclosures.c.decision == "allowed"))).all()
    persons = {k.event_id: k.person_id for k in known}
    recorded = {(k.event_id, k.agreement_id) for k in known}
    out = [disclosure_row(
        event_id=r.event_id, person_id=persons.get(r.event_id), event_type=r.event_type, recipient_org=org_code,
        decision="allowed", agreement_id=now_.agreement_id,
        field_groups=sorted(r.field_groups) if r.field_groups is not None else sorted(now_.field_groups),
        reason=f"{now_.reason} at delivery (queued under {then or 'no agreement'})", channel=channel, at=now)
        for r, now_, then in moved if (r.event_id, now_.agreement_id) not in recorded]
    if out:
        await conn.execute(disclosures.insert(), out)
    return len(out)


async def hold_withheld(conn: AsyncConnection, held: list[tuple[Any, Withheld]], org_code: str,
                        channel: str) -> int:
    """Hold queued deliveries the agreements in force no longer allow
    (`held`: a row with `delivery_seq`, `event_id`, `event_type`, and why), in
    the caller's transaction: status `held` (`last_error` names the kind: no
    agreement, event type, field groups), and one `denied` disclosure each,
    naming the agreement and why, under the person the message was about.
    Only a row still pending is held (the caller read it pending in this
    transaction); returns how many."""
    if not held:
        return 0
    await execute_prepared(conn, _HOLD, [
        {"seq": r.delivery_seq, "err": f"held: {w.kind} at delivery"} for r, w in held])
    persons = {row.event_id: row.person_id for row in (await conn.execute(
        select(disclosures.c.event_id, disclosures.c.person_id)
        .where(disclosures.c.event_id.in_(sorted({r.event_id for r, _ in held})),
               disclosures.c.recipient_org == org_code, disclosures.c.decision == "allowed")))}
    now = datetime.now(UTC)
    await conn.execute(disclosures.insert(), [disclosure_row(
        event_id=r.event_id, person_id=persons.get(r.event_id), event_type=r.event_type, recipient_org=org_code,
        decision="denied", agreement_id=w.agreement_id, reason=w.reason, channel=channel, at=now)
        for r, w in held])
    return len(held)


async def next_event_number(conn: AsyncConnection, subscription_id: str) -> int:
    """Take the subscription's next event number inside the caller's transaction."""
    bumped = (await conn.execute(
        subscription_counters.update()
        .where(subscription_counters.c.subscription_id == subscription_id)
        .values(last_event_number=subscription_counters.c.last_event_number + 1)
        .returning(subscription_counters.c.last_event_number))).scalar_one_or_none()
    if bumped is not None:
        return int(bumped)
    # A subscription made without its counter row (the row is normally created
    # with the subscription, and by the migration for older ones).
    await conn.execute(subscription_counters.insert().values(subscription_id=subscription_id, last_event_number=1))
    return 1


async def create_counter(conn: AsyncConnection, subscription_id: str) -> None:
    """The counter row of a new subscription (call in the creating transaction)."""
    await conn.execute(subscription_counters.insert().values(subscription_id=subscription_id, last_event_number=0))


async def queue_delivery(
    conn: AsyncConnection, *, subscription_id: str, event_id: str, message_id: str, event_type: str,
    payload: bytes, correlation_id: str, now: datetime | None = None, known_new: bool = False,
    field_groups: list[str] | None = None,
) -> int | None:
    """Queue one message (`payload` already encrypted) for a subscription in
    the caller's transaction. Returns its event number, or None when this event
    is already on this subscription's queue (a replayed event: the unique
    (subscription, event) key means it is never queued twice). `known_new`:
    the caller knows this event was never queued (the look-up is skipped; the
    unique key still refuses a second row). `field_groups`: those the message
    was rendered with, as its `allowed` disclosure names them (None: not known)."""
    exists = not known_new and (await conn.execute(
        select(deliveries.c.delivery_seq).where(
            deliveries.c.subscription_id == subscription_id, deliveries.c.event_id == event_id))).first()
    if exists:
        return None
    number = await next_event_number(conn, subscription_id)
    await insert_deliveries(conn, [delivery_row(
        subscription_id=subscription_id, event_id=event_id, message_id=message_id, event_type=event_type,
        payload=payload, correlation_id=correlation_id, event_number=number, now=now or datetime.now(UTC),
        field_groups=field_groups)])
    return number


class EventNumbers:
    """Event numbers for many deliveries queued in one transaction (the
    dispatcher's batch): each subscription's counter row is read once, locked
    until commit (PostgreSQL `FOR UPDATE`; SQLite's BEGIN IMMEDIATE already
    holds the one write lock), numbers are handed out in memory and `flush`
    writes the last one back, once per subscription. Gap-free as
    `next_event_number`: a caller whose savepoint rolls back puts the numbers
    it took back with `restore(snapshot())` (taken before the savepoint); the rows are queued in `take`
    order, so numbers follow `delivery_seq` within each subscription."""

    def __init__(self, known: dict[str, int] | None = None) -> None:
        self._last: dict[str, int] = {}
        self._stored: dict[str, int | None] = {}  # what the row holds (None: no row yet)
        self._read: dict[str, int | None] = {}  # what the row held when first read
        # Counters as an earlier transaction left them, taken instead of reading the
        # row: only where `unchanged` is asked under the lock before any write (the
        # dispatcher's snapshot phase), so a counter moved since is caught there.
        self._known = known

    async def take(self, conn: AsyncConnection, subscription_id: str) -> int:
        if subscription_id not in self._last:
            known = self._known.get(subscription_id) if self._known is not None else None
            if known is not None:
                stored: int | None = known
            else:
                row = (await execute_prepared(conn, _COUNTER, {"subscription_id": subscription_id})).first()
                stored = int(row.last_event_number) if row is not None else None
            self._stored[subscription_id] = self._read[subscription_id] = stored
            self._last[subscription_id] = stored or 0
        self._last[subscription_id] += 1
        return self._last[subscription_id]

    def snapshot(self) -> dict[str, int]:
        return dict(self._last)

    def stored(self) -> dict[str, int]:
        """Each counter row as this transaction leaves it (after `flush`): what
        a later one may take as `known`, once this one has committed."""
        return {sid: n for sid, n in self._stored.items() if n is not None}

    async def unchanged(self, conn: AsyncConnection) -> bool:
        """Whether every counter read is still as read (another writer, such
        as a drift alert or a workflow notice, may have taken numbers since):
        all of them read again in one statement."""
        if not self._read:
            return True
        now: dict[str, int | None] = dict.fromkeys(self._read)
        for row in await _COUNTERS_OF.execute(conn, list(self._read)):
            now[row.subscription_id] = int(row.last_event_number)
        return now == self._read

    def restore(self, snapshot: dict[str, int]) -> None:
        # A counter first read after the snapshot was read (and locked) inside
        # the rolled-back savepoint, which released its lock (PostgreSQL): forget
        # it, so the next `take` reads and locks it again.
        for sid in [sid for sid in self._last if sid not in snapshot]:
            del self._last[sid], self._stored[sid], self._read[sid]
        self._last.update(snapshot)

    async def flush(self, conn: AsyncConnection) -> None:
        """Write every counter that moved (call before the transaction commits)."""
        moved = [(sid, n) for sid, n in self._last.items() if n != (self._stored[sid] or 0)]
        new = [{"subscription_id": sid, "last_event_number": n} for sid, n in moved if self._stored[sid] is None]
        old = [{"sid": sid, "n": n} for sid, n in moved if self._stored[sid] is not None]
        if new:
            await conn.execute(subscription_counters.insert(), new)
        if old:
            await execute_prepared(conn, _COUNTER_UPDATE, old)
        for sid, n in moved:
            self._stored[sid] = n


def delivery_row(*, subscription_id: str, event_id: str, message_id: str, event_type: str, payload: bytes,
                 correlation_id: str, event_number: int, now: datetime,
                 field_groups: list[str] | None = None) -> dict:
    """A pending delivery with its message (`payload`), as `insert_deliveries` takes it.
    `field_groups`: the groups the message was rendered with, sorted, as its
    `allowed` disclosure names them (None: not known), kept on the row for the
    check at the time of disclosure (hub/delivery/leases.py, hub/api/feeds.py).

    Its id is time-ordered (`uuid7`, RFC 9562), not random: `deliveries` has a
    unique index on it, and a random id put each new delivery on a random leaf
    of that index, a WAL frame (and a checkpoint's page write) a delivery once
    the table outgrew a batch's pages (25 of the 195 frames a commit of 16
    events, bench/JOURNAL.md "Seventeenth session"); a time-ordered one lands on
    the index's right-hand edge, where a batch's deliveries share a leaf. The
    id is still unique and opaque to recipients (`S117-Delivery-Id`)."""
    return dict(
        delivery_id=uuid7(), subscription_id=subscription_id, event_id=event_id, message_id=message_id,
        event_type=event_type, payload=payload, status="pending", attempts=0, next_attempt_at=now,
        correlation_id=correlation_id, created_at=now, event_number=event_number, field_groups=field_groups,
    )


async def insert_deliveries(conn: AsyncConnection, rows: list[dict]) -> None:
    """Queue `rows` (`delivery_row`s) in the caller's transaction: the
    deliveries in one executemany, then each message into `delivery_messages`
    under the `delivery_seq` its delivery was given, found by its
    `delivery_id` (an INSERT ... SELECT, so both stay one executemany, with
    no RETURNING). Both statements are built once and name their parameters,
    so a row's `payload` is simply not read by the first (a plain insert of
    a dict with a key that is not a column would leave the store's
    driver path for SQLAlchemy's whole execution: 7-10% more of the
    dispatcher's CPU at small batches)."""
    await execute_prepared(conn, _DELIVERIES, rows)
    await execute_prepared(conn, _MESSAGES, rows)


# The columns of a `delivery_row` but its message.
_QUEUED = ("delivery_id", "subscription_id", "event_id", "message_id", "event_type", "status", "attempts",
           "next_attempt_at", "correlation_id", "created_at", "event_number", "field_groups")
_DELIVERIES = Prepared(deliveries.insert().values(
    {name: bindparam(name, type_=deliveries.c[name].type) for name in _QUEUED}))
_MESSAGES = Prepared(delivery_messages.insert().from_select(
    ["delivery_seq", "payload"],
    select(deliveries.c.delivery_seq, bindparam("payload", type_=LargeBinary))
    .where(deliveries.c.delivery_id == bindparam("delivery_id"))))

# Statements the dispatcher runs per organisation or subscription of a batch (hub.store.db.Prepared).
_ACTIVE = Prepared(select(subscriptions).where(subscriptions.c.org_code == bindparam("org_code"),
                                               subscriptions.c.active.is_(True))
                   .order_by(subscriptions.c.created_at, subscriptions.c.subscription_id))
# Built once: a batch's counters were an UPDATE statement built, cache-keyed
# and compiled by SQLAlchemy at each flush (and again at the replay of a
# batch worked out on a snapshot).
_COUNTER_UPDATE = Prepared(subscription_counters.update()
                           .where(subscription_counters.c.subscription_id == bindparam("sid"))
                           .values(last_event_number=bindparam("n")))
_ACTIVE_OF = InList("orgs", lambda orgs: select(subscriptions)
                    .where(subscriptions.c.org_code.in_(orgs), subscriptions.c.active.is_(True))
                    .order_by(subscriptions.c.created_at, subscriptions.c.subscription_id))
_COUNTERS_OF = InList("sids", lambda sids: select(subscription_counters.c.subscription_id,
                                                  subscription_counters.c.last_event_number)
                      .where(subscription_counters.c.subscription_id.in_(sids)).with_for_update())
_HOLD = Prepared(deliveries.update()
                 .where(deliveries.c.delivery_seq == bindparam("seq"), deliveries.c.status == "pending")
                 .values(status=HELD, last_error=bindparam("err")))
_COUNTER = Prepared(select(subscription_counters.c.last_event_number)
                    .where(subscription_counters.c.subscription_id == bindparam("subscription_id"))
                    .with_for_update())
