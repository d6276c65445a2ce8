"""Tables of the hub's store: one schema for SQLite (embedded) and PostgreSQL.

Personal details are held only encrypted (`persons.details`, quarantine raw
input, delivery payloads) and the NHS number only as a keyed hash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    exists,
    text,
)
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ColumnElement

metadata = MetaData()


def for_dialect(dialect_name: str) -> Callable[..., bool]:
    """Alembic's `include_object` for a database: leaves out what the schema
    declares for other databases only (`ddl_if(dialect=...)`, which Alembic's
    comparison does not read), so `--autogenerate` and the migration test see
    the same schema the migrations build there."""

    def include(obj: object, _name: object, _type: object, _reflected: object, _compare_to: object) -> bool:
        only = getattr(getattr(obj, "_ddl_if", None), "dialect", None)
        return only is None or only == dialect_name

    return include

# BigInteger autoincrement is INTEGER PRIMARY KEY (rowid) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")


def index_of_set(name: str, column: str) -> Index:
    """An index of `column`'s rows where it is set (a partial index, SQLite
    and PostgreSQL): for a column mostly NULL on a row's first write and only
    ever looked up by value (`=`, `>=`: a comparison only a set value meets,
    so both databases use it). A NULL's entries all sit together, and a new
    row's NULL entry went into the middle of the index: a page or two more
    for each row written (bench/bench_pages.py)."""
    where = text(f"{column} IS NOT NULL")
    return Index(name, column, sqlite_where=where, postgresql_where=where)


api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("org_code", String(16), nullable=False),
    Column("org_kind", String(32), nullable=False),  # trust, council, icb, hub-operator
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

persons = Table(
    "persons",
    metadata,
    Column("person_id", String(36), primary_key=True),
    Column("nhs_number_index", String(64), nullable=False, unique=True),
    Column("details", LargeBinary, nullable=False),  # encrypted JSON (hub.crypto: AES-256-GCM)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

register_changes = Table(
    "register_changes",
    metadata,
    Column("change_id", String(36), primary_key=True),
    Column("person_id", String(36), ForeignKey("persons.person_id"), nullable=False),
    Column("source", String(64), nullable=False),
    Column("source_message_id", String(200), nullable=False),
    Column("change_type", String(64), nullable=False),
    Column("effective_date", Date, nullable=False),
    Column("notified_on", Date, nullable=False),
    Column("recorded_on", Date, nullable=False),
    Column("canonical", JSON, nullable=False),  # the RegisterChange, no personal details
    Column("correlation_id", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("channel", String(32), nullable=True),  # rest, fhir, mllp, file: where it came in (traces)
    UniqueConstraint("source", "source_message_id", name="uq_change_source_message"),
    Index("ix_changes_person", "person_id", "effective_date"),
    Index("ix_changes_correlation", "correlation_id"),
)

# A register change its source (or the hub operator) retracted as recorded in
# error (hub/retraction.py): the change stays on record, but no history holds
# it any more (`not_retracted`, in every read of a person's history). Who,
# when, why (the reason encrypted: free text may name someone), the request's
# correlation id, and the event that told it (the bus message whose dispatch
# corrects what each body was told). A second retraction is answered from this
# row; a reversal of the retraction takes it off (kept in
# `change_retraction_reversals`), and the change may be retracted again.
change_retractions = Table(
    "change_retractions",
    metadata,
    Column("change_id", String(36), ForeignKey("register_changes.change_id"), primary_key=True),
    Column("person_id", String(36), ForeignKey("persons.person_id"), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("org_code", String(16), nullable=False),
    Column("reason", LargeBinary, nullable=False),  # encrypted (hub.crypto)
    Column("correlation_id", String(64), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_retractions_person", "person_id"),
)

# Retractions reversed (hub/unretractions.py): a register change retracted in
# error (the wrong change id; a cancellation that matched the wrong detention)
# reinstated. The `change_retractions` row is taken off (the change counts in
# the history again with its own id and recorded time, and may be retracted
# again) and kept here whole (`retraction`: its columns, the reason still
# encrypted), with who reversed it, when, why (the reason encrypted: free text
# may name someone), the request's correlation id and the event that told it.
# One row a retraction reversed (`retraction_event_id`, the retraction's own
# event id, one a retraction): a change retracted and reinstated twice has two.
change_retraction_reversals = Table(
    "change_retraction_reversals",
    metadata,
    Column("retraction_event_id", String(36), primary_key=True),
    Column("change_id", String(36), ForeignKey("register_changes.change_id"), nullable=False),
    Column("person_id", String(36), ForeignKey("persons.person_id"), nullable=False),
    Column("retraction", JSON, nullable=False),  # the change_retractions row but its reason (ids, times)
    Column("retraction_reason", LargeBinary, nullable=False),  # encrypted (hub.crypto), as it was kept
    Column("client_id", String(64), nullable=False),
    Column("org_code", String(16), nullable=False),
    Column("reason", LargeBinary, nullable=False),  # encrypted (hub.crypto)
    Column("correlation_id", String(64), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_retraction_reversals_change", "change_id", "at"),
    Index("ix_retraction_reversals_person", "person_id"),
)

# NHS numbers merged by PDS (hub/merges.py): the superseded number's keyed hash
# and the retained number's, so that the superseded number resolves to the
# retained person everywhere (`hub.store.merged`: a look-up that finds no
# person by a number asks here). One row a superseded number, written once (the
# same merge again is answered from it); taken off only by a reversal of the
# merge, which keeps it in `person_merge_reversals`. The retained number encrypted (a
# person first seen under the superseded number is made under it), the hub
# persons each number held (either may be null), the changes and views moved
# from the superseded person to the retained one, who, when, the channel, the
# correlation id and the event that told it. Nothing personal in clear.
person_merges = Table(
    "person_merges",
    metadata,
    Column("superseded_index", String(64), primary_key=True),
    Column("retained_index", String(64), nullable=False),
    Column("retained_number", LargeBinary, nullable=False),  # encrypted (hub.crypto)
    Column("merge_id", String(36), nullable=False),
    Column("superseded_person_id", String(36), nullable=True),
    Column("retained_person_id", String(36), nullable=True),
    # {"changes", "cases", "care_package_lines", "split_decisions": ids moved to the retained person;
    #  "details_added": the names of the fields the retained person's details gained} (the last three since
    #  0039: what a reversal takes back)
    Column("moved", JSON, nullable=False),
    Column("forced", Boolean, nullable=False),  # dates of birth differed and the hub operator forced it
    Column("client_id", String(64), nullable=False),
    Column("org_code", String(16), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("correlation_id", String(64), nullable=False),
    Column("event_id", String(36), nullable=True),  # null: no body was told of either number
    Column("at", DateTime(timezone=True), nullable=False),
    # The superseded number encrypted (migration 0039): a reversal gives it back to the person a merge gave
    # the retained number (null: merged before it was kept).
    Column("superseded_number", LargeBinary, nullable=True),
    Index("ix_person_merges_merge", "merge_id", unique=True),  # a reversal finds its merge by id (0039)
)

# Merges reversed (hub/unmerges.py): a merge of two NHS numbers made in error
# (two patients, not one) undone. The `person_merges` row is taken off (the
# superseded number resolves to its own person again, and the same numbers may
# be merged again) and kept here whole (`merge_record`: its columns but the encrypted
# number), with what the reversal moved back to the superseded person
# (`moved_back`), what it could not attribute to either number and left with the
# retained person (`unattributed`: ids only), who, when, why (the reason
# encrypted: free text may name someone), the request's correlation id and the
# events that told it. Written once: the same reversal again is answered from it.
person_merge_reversals = Table(
    "person_merge_reversals",
    metadata,
    Column("merge_id", String(36), primary_key=True),
    Column("superseded_index", String(64), nullable=False),
    Column("retained_index", String(64), nullable=False),
    Column("superseded_person_id", String(36), nullable=True),
    Column("retained_person_id", String(36), nullable=True),
    Column("merge_record", JSON, nullable=False),
    Column("moved_back", JSON, nullable=False),
    Column("unattributed", JSON, nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("org_code", String(16), nullable=False),
    Column("reason", LargeBinary, nullable=False),  # encrypted (hub.crypto)
    Column("correlation_id", String(64), nullable=False),
    Column("event_ids", JSON, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)


def not_retracted() -> ColumnElement[bool]:
    """The one filter of a person's history: a register change no retraction
    names (`change_retractions`). Every read of a history (to evaluate it, to
    tell it, to charge it) selects `register_changes` with it; a read that
    means to see retracted changes too says so (`including_retracted`). The
    test suite fails any test whose statements read a change's content
    (`register_changes.canonical`) doing neither (tests/conftest.py)."""
    return ~exists().where(change_retractions.c.change_id == register_changes.c.change_id)


_S = TypeVar("_S", bound=Executable)

# The execution option a statement carries when it reads register changes'
# content whether retracted or not, on purpose (the retraction itself, the
# change a retraction names, what a case's event names when nothing is left).
INCLUDES_RETRACTED = "s117_includes_retracted"


def including_retracted(statement: _S) -> _S:
    """`statement`, marked as reading retracted changes too, on purpose."""
    return statement.execution_options(**{INCLUDES_RETRACTED: True})


# The answer given to a (source, source message id), replayed on a duplicate.
ingest_results = Table(
    "ingest_results",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("source_message_id", String(200), primary_key=True),
    Column("status_code", Integer, nullable=False),
    Column("body", JSON, nullable=False),
    # sha256 of the canonical payload (sorted keys): the same key with another
    # payload is a conflict (409), not a duplicate. NULL for rows before 0006.
    Column("payload_sha256", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# What the hub last told each organisation of each person (hub/domain/views.py):
# the dispatcher sends an organisation the difference between this and the
# truth, with `version` one higher; written in the dispatcher's transaction.
recipient_views = Table(
    "recipient_views",
    metadata,
    Column("person_id", String(36), ForeignKey("persons.person_id"), primary_key=True),
    Column("org_code", String(16), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("view", JSON, nullable=False),  # codes, dates and roles: no personal details
    Column("last_event_id", String(36), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Bus events the dispatcher has handled (the idempotent-consumer inbox): a
# redelivered event (Kafka after a crash, an offset moved back) is skipped
# whole, so it neither re-sends nor re-diffs the recipient views.
dispatched_events = Table(
    "dispatched_events",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("quarantine_id", String(36), primary_key=True),
    Column("source", String(64), nullable=False),
    Column("channel", String(32), nullable=False),  # rest, fhir, mllp, file
    Column("source_message_id", String(200), nullable=True),
    Column("errors", JSON, nullable=False),  # [{field, reason}] - never values
    Column("raw", LargeBinary, nullable=False),  # encrypted input as received (hub.crypto)
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False, default="held"),  # held, released, discarded
    Column("correlation_id", String(64), nullable=True),  # the trace of the request that sent it
    # Triage: resubmitted (linked to what the corrected input became) or discarded, with the reason.
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("resolved_by", String(36), nullable=True),  # the change id or new quarantine id
    Column("resolution_reason", String(500), nullable=True),
    Index("ix_quarantine_source", "source", "received_at"),
    Index("ix_quarantine_message", "source", "source_message_id", "received_at"),  # a resend (`_held_copy`)
    Index("ix_quarantine_received", "received_at"),  # the operator's newest-first list, the ops counts
    Index("ix_quarantine_correlation", "correlation_id"),
)

# The embedded durable log: a table of messages per topic with offsets, and
# committed offsets per consumer group (ack = commit), mirroring Kafka. Writing
# to it inside the register transaction *is* the outbox.
bus_messages = Table(
    "bus_messages",
    metadata,
    Column("offset", Id, primary_key=True, autoincrement=True),
    Column("topic", String(100), nullable=False),
    Column("key", String(100), nullable=False),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("payload", JSON, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("relayed_at", DateTime(timezone=True), nullable=True),  # set by the Kafka relay
    Index("ix_bus_topic_offset", "topic", "offset"),
    # The Kafka relay's "outbox rows not yet relayed, oldest first": a partial
    # index of just those, so each relay run reads them, not every relayed row
    # still kept (until retention purges them). PostgreSQL only: embedded mode
    # has no relay, and every row would be in it.
    Index("ix_bus_unrelayed", "offset", postgresql_where=text("relayed_at IS NULL")).ddl_if(dialect="postgresql"),
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("group_id", String(100), primary_key=True),
    Column("topic", String(100), primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("subscription_id", String(36), primary_key=True),
    Column("org_code", String(16), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),  # webhook (pull feed, kafka, file later)
    Column("url", Text, nullable=True),  # webhook
    Column("topic", String(249), nullable=True),  # kafka (249: Kafka's longest topic name)
    Column("secret", LargeBinary, nullable=True),  # encrypted signing secret (hub.crypto)
    Column("event_types", JSON, nullable=True),  # None = every event the agreement allows
    # channel "fhir" (a FHIR topic-based Subscription, hub/api/fhir_subscriptions.py):
    # {"topic", "content" (id-only | full-resource), "heartbeat_seconds", "status", "reason"}
    Column("fhir", JSON, nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # webhook: how many POSTs may be in flight on its connection (1: one at a
    # time, strictly in order; more: pipelined, the subscriber accepting that a
    # failed message may be overtaken by those sent behind it)
    Column("pipeline", Integer, nullable=False, default=1, server_default="1"),
    # Push channels: delivery paused (not stopped: `active` stays true) since this time, and why,
    # e.g. "gone (HTTP 410)": the subscriber said its endpoint is gone (hub/delivery/leases.py).
    # NULL: not suspended. Cleared by a resume (the subscriber's or an operator's).
    Column("suspended_at", DateTime(timezone=True), nullable=True),
    Column("suspended_reason", String(64), nullable=True),
    # How many times it has been resumed (hub/delivery/leases.py, "Suspension"): read when a heartbeat or
    # a delivery batch starts and compared when its 410 Gone would suspend it, so an answer to a request
    # sent before the latest resume suspends nothing (compare-and-set), and the outcomes of a batch leased
    # before it keep the fresh retry budget the resume gave.
    # (The store's default only, no Python-side one: an INSERT names it only if given, so the
    # migration tests' inserts into the tables of older revisions still work.)
    Column("suspension_epoch", Integer, nullable=False, server_default="0"),
    Index("ix_subscriptions_org", "org_code"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("delivery_seq", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", String(36), nullable=False, unique=True),
    Column("subscription_id", String(36), ForeignKey("subscriptions.subscription_id"), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("message_id", String(36), nullable=False),
    Column("event_type", String(64), nullable=False),
    # the message itself: `delivery_messages` (below)
    Column("status", String(16), nullable=False),  # pending, delivered, dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", String(200), nullable=True),  # status code / error kind, never a body
    Column("correlation_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    # The subscription's gap-free event number (1, 2, 3, ...), assigned when the
    # row is queued (hub.delivery.queue); every channel carries it.
    Column("event_number", BigInteger, nullable=True),
    # The field groups the message was rendered with (sorted names: its `allowed`
    # disclosure's), written when it is queued (hub.delivery.queue); every channel
    # asks the agreements in force again with them before sending (hub.sharing
    # DisclosureCheck). NULL: not known (a row queued by hand, or queued before
    # migration 0026 with no `allowed` disclosure to fill it from): the event type alone is asked.
    Column("field_groups", JSON(none_as_null=True), nullable=True),
    UniqueConstraint("subscription_id", "event_id", name="uq_delivery_subscription_event"),
    Index("ix_deliveries_pending", "subscription_id", "status", "delivery_seq"),
    Index("ux_deliveries_subscription_number", "subscription_id", "event_number", unique=True),
)

# A delivery's message (encrypted FHIR, hub.crypto; about 5 KB), one row per
# delivery, written when it is queued and never updated but by the retention
# purge (emptied, b""). Kept apart from `deliveries` because that row is
# written again at every lease and outcome: with the message in it, the record
# ran onto an overflow page, and marking it delivered (a record of another
# size) made SQLite rewrite the whole cell and free and re-allocate its
# overflow chain, about 5 WAL frames against 2 (bench/JOURNAL.md, "Sixteenth
# session"). Readers join on `delivery_seq` (the table's integer key: no
# index of its own). No foreign key: the row is written in its delivery's
# transaction and deliveries are never deleted, and one would make SQLite's
# migrations that rebuild `deliveries` (copy, drop, rename) fail while
# messages point at it.
delivery_messages = Table(
    "delivery_messages",
    metadata,
    Column("delivery_seq", Id, primary_key=True, autoincrement=False),
    Column("payload", LargeBinary, nullable=False),
)
# `deliveries` with each one's message: select from it to read `delivery_messages.c.payload`.
deliveries_with_messages = deliveries.join(delivery_messages,
                                           delivery_messages.c.delivery_seq == deliveries.c.delivery_seq)

# One counter row per subscription: the last event number given out. Queuing a
# delivery updates it in the same transaction (a row lock on PostgreSQL), so
# numbers are gap-free and strictly increasing even with two hub instances.
subscription_counters = Table(
    "subscription_counters",
    metadata,
    Column("subscription_id", String(36), ForeignKey("subscriptions.subscription_id"), primary_key=True),
    Column("last_event_number", BigInteger, nullable=False),
)

# Every decision to disclose (or withhold) an event to an organisation.
disclosures = Table(
    "disclosures",
    metadata,
    Column("disclosure_id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    # None for an event about a body itself (s117-reconciliation-drift: counts, no person).
    Column("person_id", String(36), nullable=True),
    Column("event_type", String(64), nullable=False),
    Column("recipient_org", String(16), nullable=False),
    Column("decision", String(16), nullable=False),  # allowed, denied, no-subscription
    Column("agreement_id", String(100), nullable=True),
    Column("field_groups", JSON, nullable=False),
    Column("reason", String(300), nullable=False),
    Column("channel", String(32), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_disclosures_event", "event_id"),
    Index("ix_disclosures_person", "person_id"),
)

# Service-level facts per change (Worcs 19.6), kept for reporting breaches.
service_levels = Table(
    "service_levels",
    metadata,
    Column("change_id", String(36), ForeignKey("register_changes.change_id"), primary_key=True),
    Column("notified_on", Date, nullable=False),
    Column("recorded_on", Date, nullable=False),
    Column("deadline", Date, nullable=False),
    Column("working_days_taken", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    # SQLite: the rows kept in their key's B-tree (migration 0024), not in a
    # rowid table beside a primary-key index: one page a change, not two.
    sqlite_with_rowid=False,
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("dead_letter_id", Id, primary_key=True, autoincrement=True),
    Column("topic", String(100), nullable=False),
    Column("group_id", String(100), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("event_id", String(36), nullable=True),
    Column("handler", String(100), nullable=False),
    Column("reason", String(300), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("replayed_at", DateTime(timezone=True), nullable=True),
)

# Council files received (POST /v1/council-files): counts and the per-row
# report (record ids, statuses, change and quarantine ids, reasons that never
# quote values). No personal data: the rows themselves are recorded as
# register changes or held, encrypted, in quarantine.
file_receipts = Table(
    "file_receipts",
    metadata,
    Column("file_id", String(36), primary_key=True),
    Column("source", String(64), nullable=False),
    Column("format", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # processing, processed, failed (given up after retries), rejected (file-level), replayed
    Column("row_count", Integer, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("problems", JSON, nullable=True),  # file-level [{field, reason}] when rejected
    Column("replay_of", String(36), nullable=True),  # the first receipt of a byte-identical file
    Column("report", JSON, nullable=True),  # files before file_rows: [{row, record_id, status, ...}]
    Column("received_at", DateTime(timezone=True), nullable=False),
    # Processed in the background (hub/file_jobs.py): rows handled so far, and
    # the file itself (encrypted, hub.crypto) until it is done, so a restart resumes.
    Column("rows_done", Integer, nullable=True),
    Column("content", LargeBinary, nullable=True),
    # The sha256 on the one receipt a file's rows are recorded under (processing, then processed), null on
    # every other (replayed, rejected, failed: given up releases it): two identical files arriving at once
    # cannot both claim it, the second is answered from the first (hub/api/files.py, migration 0028).
    Column("claim", String(64), nullable=True),
    Index("ix_file_receipts_source_sha", "source", "sha256"),
    Index("uq_file_receipts_source_claim", "source", "claim", unique=True),
)

# Reconciliation (hub/reconciliation.py): a body's own list of people on the
# s117 register, and the differences from the hub's register. Rows hold the
# NHS number only as the keyed hash and the body's local id encrypted.
reconciliation_snapshots = Table(
    "reconciliation_snapshots",
    metadata,
    Column("snapshot_id", String(36), primary_key=True),
    Column("source", String(64), nullable=False),  # the client that sent it
    Column("body_org", String(16), nullable=False),
    Column("body_kind", String(32), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("format", String(32), nullable=False),
    Column("state", String(16), nullable=False),  # receiving, comparing, done, failed
    Column("rows_read", Integer, nullable=False),
    Column("rows_rejected", Integer, nullable=False),
    Column("persons_compared", Integer, nullable=False),
    Column("persons_total", Integer, nullable=True),
    Column("differences", Integer, nullable=False),
    Column("problems", JSON, nullable=True),  # [{field: "row N, field X", reason}] (never values)
    Column("summary", JSON, nullable=True),  # counts per kind and state when done
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_reconciliation_snapshots_body", "body_org", "received_at"),
)

reconciliation_rows = Table(
    "reconciliation_rows",
    metadata,
    Column("snapshot_id", String(36), ForeignKey("reconciliation_snapshots.snapshot_id"), primary_key=True),
    Column("row_no", Integer, primary_key=True),
    Column("person_key", String(64), nullable=False),  # keyed hash of the NHS number
    Column("local_id", LargeBinary, nullable=True),  # encrypted (hub.crypto)
    Column("belief", JSON, nullable=False),  # entitled, responsible bodies, dates: codes and dates only
    # The NHS number whose keyed hash person_key is, encrypted (hub.crypto), so that a data key rotation can
    # recompute the hash (hub/store/rekey.py); null: kept before migration 0041, or person_key a tombstone.
    Column("person_number", LargeBinary, nullable=True),
    Index("ix_reconciliation_rows_person", "person_key"),
)

reconciliation_items = Table(
    "reconciliation_items",
    metadata,
    Column("item_id", String(36), primary_key=True),
    Column("body_org", String(16), nullable=False),
    Column("person_key", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("field", String(32), nullable=False),
    Column("state", String(16), nullable=False),  # open, explained, fixed, accepted
    Column("difference", JSON, nullable=False),  # body_says, hub_says, who_must_act, action, explanation, citation
    Column("person_id", String(36), nullable=True),  # only where the body has a part in the person
    Column("first_seen", String(36), nullable=False),
    Column("last_seen", String(36), nullable=False),
    Column("reason", String(500), nullable=True),
    Column("fixed_by", String(16), nullable=True),  # snapshot, change
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("person_number", LargeBinary, nullable=True),  # as reconciliation_rows.person_number
    UniqueConstraint("body_org", "person_key", "kind", "field", name="uq_reconciliation_item"),
    Index("ix_reconciliation_items_person", "person_key"),
)

# Drift alerts (hub/drift_alerts.py, hub/domain/drift.py): per body, whether
# an s117-reconciliation-drift event was sent for the crossing in force, so a
# crossing is alerted once and the next only after falling back below. Counts
# and ids only.
drift_alerts = Table(
    "drift_alerts",
    metadata,
    Column("body_org", String(16), primary_key=True),
    Column("above", Boolean, nullable=False),
    Column("snapshot_id", String(36), nullable=True),  # the snapshot whose comparison crossed
    Column("event_id", String(36), nullable=True),  # the alert's event id (stable: body + snapshot)
    Column("open_total", Integer, nullable=False),
    Column("alerted_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Council register extracts (hub/exports.py): files in the published outbound
# layouts. No personal data here: the files themselves live in export_dir.
council_file_subscriptions = Table(
    "council_file_subscriptions",
    metadata,
    Column("subscription_id", String(36), ForeignKey("subscriptions.subscription_id"), primary_key=True),
    Column("layout", String(32), nullable=False),
    Column("schedule", String(32), nullable=False),  # "daily HH:MM", UK time
    Column("mode", String(8), nullable=False),  # delta, full
    Column("last_run_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

council_exports = Table(
    "council_exports",
    metadata,
    Column("export_id", String(36), primary_key=True),
    Column("org_code", String(16), nullable=False),
    Column("subscription_id", String(36), nullable=True),  # None: built on demand
    Column("layout", String(32), nullable=False),
    Column("mode", String(8), nullable=False),
    Column("state", String(16), nullable=False),  # queued, building, ready, acknowledged
    Column("file_name", String(200), nullable=True),
    Column("sha256", String(64), nullable=True),
    Column("record_count", Integer, nullable=False),
    Column("first_event_no", BigInteger, nullable=True),
    Column("last_event_no", BigInteger, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("ready_at", DateTime(timezone=True), nullable=True),
    Column("acknowledged_at", DateTime(timezone=True), nullable=True),
    Column("ack_via", String(16), nullable=True),  # api, folder
    # The one process building the file, and until when its claim holds (renewed while it writes).
    Column("builder", String(36), nullable=True),
    Column("builder_until", DateTime(timezone=True), nullable=True),
    # The field groups the file's columns were filled under (sorted names; NULL: built before 0033,
    # taken as every group its layout can carry), and the client that asked for an on-demand file.
    Column("field_groups", JSON(none_as_null=True), nullable=True),
    Column("requested_by", String(64), nullable=True),
    Index("ix_council_exports_org", "org_code", "created_at"),
)

export_items = Table(
    "export_items",
    metadata,
    Column("export_id", String(36), ForeignKey("council_exports.export_id"), primary_key=True),
    Column("delivery_id", String(36), primary_key=True),
    Column("event_no", BigInteger, nullable=False),
    UniqueConstraint("delivery_id", name="uq_export_items_delivery"),
)


# A council file's per-row report, written a chunk at a time as it is processed:
# {row, record_id, status, change_id?, errors?, quarantine_id?}, never a value.
file_rows = Table(
    "file_rows",
    metadata,
    Column("file_id", String(36), ForeignKey("file_receipts.file_id"), primary_key=True),
    Column("row", Integer, primary_key=True),
    Column("entry", JSON, nullable=False),
)

# The register summary's inputs, one row per person, written in the same
# transaction as each of their changes (hub/register_counts.py) so that
# GET /v1/reports/register-summary aggregates rows instead of re-evaluating
# everyone. Organisation codes, flags and dates only: nothing identifying.
register_status = Table(
    "register_status",
    metadata,
    Column("person_id", String(36), ForeignKey("persons.person_id"), primary_key=True),
    Column("council_code", String(16), nullable=True),
    Column("council_name", String(200), nullable=True),
    Column("icb_code", String(16), nullable=True),
    Column("icb_name", String(200), nullable=True),
    Column("entitled", Boolean, nullable=False),
    Column("on_cto", Boolean, nullable=False),
    Column("in_hospital", Boolean, nullable=False),
    Column("open_disputes", Boolean, nullable=False),
    Column("entitlement_start", Date, nullable=True),
    Column("entitlement_end", Date, nullable=True),
    Column("next_review_due", Date, nullable=True),
    Column("late_changes", Integer, nullable=False),  # changes recorded after the service level
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The summary's aggregate groups by the pair in index order (no sort); a
    # look-up by council alone uses it too (its first column). Its monthly
    # trend reads only the last year's dates; a code's name and an
    # organisation's scope look up the ICB by value (migration 0023).
    Index("ix_register_status_pair", "council_code", "icb_code"),
    index_of_set("ix_register_status_icb", "icb_code"),
    index_of_set("ix_register_status_started", "entitlement_start"),
    index_of_set("ix_register_status_ended", "entitlement_end"),
)

# The access policy's decisions (hub/access.py): every write and read of a
# person, allowed or refused, with the rule and role that decided it. Nothing
# personal: the hub person id (null when no one matched), org and client ids.
access_decisions = Table(
    "access_decisions",
    metadata,
    Column("decision_id", Id, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("org_code", String(16), nullable=False),
    Column("channel", String(32), nullable=False),  # rest, fhir, mllp, file, query, lookup
    Column("action", String(16), nullable=False),  # write, read
    Column("change_type", String(64), nullable=True),
    Column("person_id", String(36), nullable=True),
    Column("decision", String(16), nullable=False),  # allowed, denied
    Column("rule", String(64), nullable=False),
    Column("role", String(32), nullable=True),
    Column("agreement_id", String(100), nullable=True),
    Column("field_groups", JSON, nullable=True),
    Column("as_of", Date, nullable=True),
    Column("correlation_id", String(64), nullable=True),
    # No index but the key (migration 0023): the audit chain reads the rows by
    # id, and finds a person's by its own index (audit_chain.person_id); every
    # change wrote a page of each of two indexes nothing read.
)

# Transfer and dispute cases (hub/workflows): the current case (its domain
# record in `data`, no personal data), the stages of a dispute, and the
# append-only history of every transition with the paragraph it rests on.
workflow_cases = Table(
    "workflow_cases",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("kind", String(16), nullable=False),  # transfer, dispute
    Column("person_id", String(36), nullable=False),
    Column("state", String(32), nullable=False),
    Column("parties", JSON, nullable=False),  # org codes that may see and act
    Column("dispute_id", String(100), nullable=True, unique=True),  # disputes: the register's dispute id
    Column("due_on", Date, nullable=True),  # the clock, if any
    Column("clock_owner", String(64), nullable=True),
    Column("data", JSON, nullable=False),  # the domain Case
    Column("version", Integer, nullable=False),
    Column("opened_on", Date, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_workflow_cases_kind_state", "kind", "state"),
    Index("ix_workflow_cases_person", "person_id"),
)

workflow_stages = Table(
    "workflow_stages",
    metadata,
    Column("case_id", String(36), ForeignKey("workflow_cases.case_id"), primary_key=True),
    Column("stage_index", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("started_on", Date, nullable=False),
    Column("due_on", Date, nullable=False),
    Column("ended_on", Date, nullable=True),
    Column("outcome", String(32), nullable=True),  # escalated, resolved
)

workflow_transitions = Table(
    "workflow_transitions",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("case_id", String(36), ForeignKey("workflow_cases.case_id"), nullable=False),
    Column("action", String(32), nullable=False),
    Column("from_state", String(32), nullable=True),
    Column("to_state", String(32), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("on_date", Date, nullable=False),
    Column("citation", String(300), nullable=False),
    Column("explanation", String(500), nullable=False),
    Column("event_id", String(36), nullable=True),  # the event that told the parties
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_workflow_transitions_case", "case_id", "seq"),
)

# The end-to-end tests' settable workflow clock (S117_WORKFLOW_CLOCK_SETTABLE,
# never in production): one row, the days `POST /v1/ops/workflows/clock` moved
# the workflows' "today" forward, read by every process of the hub (the clock
# scanner may run in a worker process: hub/workflows/service.py, WorkflowClock).
workflow_clock = Table(
    "workflow_clock",
    metadata,
    Column("clock_id", String(16), primary_key=True),  # always "workflows"
    Column("offset_days", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Operator actions (replay, retry, resubmit, discard, run now): who did what, for the audit chain.
operator_actions = Table(
    "operator_actions",
    metadata,
    Column("action_id", Id, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(100), nullable=False),  # an id, never personal data
    Column("detail", JSON, nullable=False),
)

# The tamper-evident audit (hub/audit.py): every audit record in one hash chain.
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),  # disclosure, read, refusal, operator
    Column("source", String(32), nullable=False),
    Column("source_id", BigInteger, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("person_id", String(36), nullable=True),
    Column("org", String(64), nullable=True),
    Column("content", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Index("ix_audit_chain_person", "person_id"),
    Index("ix_audit_chain_source", "source", "source_id"),
)

audit_cursors = Table(
    "audit_cursors",
    metadata,
    Column("source", String(32), primary_key=True),  # a source table, or "(anchor)" after a purge
    Column("last_id", BigInteger, nullable=False),
    Column("anchor_hash", String(64), nullable=True),
)

# Ids of an audit source the chain read past without seeing them (hub/audit.py, PostgreSQL): a
# serial id is drawn at INSERT and visible at COMMIT, so a transaction still open may commit one
# below ids already chained. Read again (rows not yet chained) until every transaction that was
# writing the table when the gap was seen (`writers`: their virtual transaction ids) has ended.
audit_gaps = Table(
    "audit_gaps",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("first_id", BigInteger, primary_key=True),
    Column("last_id", BigInteger, nullable=False),
    Column("writers", JSON, nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("day", Date, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("signature", String(64), nullable=False),  # HMAC-SHA-256 of day|last_seq|last_hash
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# The hub's own small time series for the console's charts (hub/timeseries.py): one row per
# (minute, series, label); labels are channels, never anything about a person.
metric_samples = Table(
    "metric_samples",
    metadata,
    Column("at", DateTime(timezone=True), primary_key=True),
    Column("name", String(32), primary_key=True),
    Column("label", String(32), primary_key=True),
    Column("value", Float, nullable=False),
)

# Aftercare package lines (hub/domain/money/packages.py): one row per version
# of a line; a change ends the current version and adds the next, so what
# was charged before is never rewritten. No personal data: costs, providers
# and the hub's person id only (the field group `funding` governs sharing).
care_packages = Table(
    "care_packages",
    metadata,
    Column("line_id", Id, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("package_id", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("person_id", String(36), ForeignKey("persons.person_id"), nullable=False),
    Column("council", String(16), nullable=False),
    Column("icb", String(16), nullable=False),
    Column("paid_by", String(8), nullable=False),  # council, icb
    Column("service_type", String(100), nullable=False),
    Column("provider_kind", String(8), nullable=False),  # ods, council
    Column("provider_code", String(40), nullable=False),
    Column("need", String(16), nullable=False),
    Column("weekly_cost_pence", BigInteger, nullable=True),
    Column("unit_cost_pence", BigInteger, nullable=True),
    Column("units_per_week", String(16), nullable=True),  # a Decimal as text (exact)
    Column("s117_eligible", Boolean, nullable=False),
    Column("exclusion", String(32), nullable=True),
    Column("s17_leave", Boolean, nullable=False),
    Column("cohort", String(32), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=True),
    Column("source_message_id", String(200), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("source", "package_id", "version", name="uq_care_package_version"),
    Index("ix_care_packages_pair", "council", "icb", "start_date"),
    Index("ix_care_packages_person", "person_id"),
)

# Each distinct content of a closed month's recharge statement for a pair, as
# it was first served (hub/money/issues.py): a later different content is a
# new issue that says it restates the one before. Codes, totals and a digest
# only: nothing personal.
statement_issues = Table(
    "statement_issues",
    metadata,
    Column("council", String(16), primary_key=True),
    Column("icb", String(16), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("issue", Integer, primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("totals", JSON, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

# A person's split agreed by both bodies (panel decision, needs-matrix result
# at review, agreed exception): proposed by one, in force once the other
# agrees (Worcs 8.5, A2.3). Never updated after agreement.
split_decisions = Table(
    "split_decisions",
    metadata,
    Column("decision_id", String(36), primary_key=True),
    Column("person_id", String(36), ForeignKey("persons.person_id"), nullable=False),
    Column("council", String(16), nullable=False),
    Column("icb", String(16), nullable=False),
    Column("kind", String(16), nullable=False),  # panel, matrix, exception
    Column("council_share_bp", Integer, nullable=False),
    Column("effective_from", Date, nullable=False),
    Column("reference", String(100), nullable=False),
    Column("proposed_by", String(16), nullable=False),  # org code
    Column("proposed_at", DateTime(timezone=True), nullable=False),
    Column("agreed_by", String(16), nullable=True),
    Column("agreed_at", DateTime(timezone=True), nullable=True),
    Index("ix_split_decisions_person", "person_id"),
)

# Which data key the store was written under (hub/store/key_check.py): one row,
# `name` "data", holding a fixed text encrypted under the key. Every process
# that opens the store (the hub's, `s117hub export`, `s117hub audit`) opens it
# first and refuses to start if it cannot: a hub started with another key would
# neither read the people it holds nor find them by NHS number (the index is
# keyed from the same key), and would write rows the others cannot read.
store_keys = Table(
    "store_keys",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("check_token", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Each `s117hub restore` (hub/restore_cli.py): when, what the backup held, and
# what was advanced so that no event number or position version the displaced
# store had given is given again. `restore_id` is the restore epoch
# subscribers see (webhook and feed header `S117-Restore-Epoch`, the
# subscription's status); the newest row's is the store's. `version_floor`: the
# position `version` every next message is numbered above
# (hub/delivery/dispatcher.py); the greatest of all rows' holds. The rows of
# earlier restores the displaced store held are copied into the restored one.
# No personal data.
store_restores = Table(
    "store_restores",
    metadata,
    Column("restore_id", String(36), primary_key=True),
    Column("restored_at", DateTime(timezone=True), nullable=False),
    Column("backup_revision", String(32), nullable=True),
    Column("backup", JSON, nullable=False),  # file name, bytes, counts (people, register changes, deliveries)
    Column("displaced", JSON, nullable=False),  # where the displaced store was moved, whether it was read
    Column("version_floor", BigInteger, nullable=False),
    Column("advanced", JSON, nullable=False),  # subscriptions advanced, by how much, the margin used if any
)


# The row each hub process rewrites, every few seconds and only while a write has failed for a
# store fault (hub/store/writable.py): the first that commits says the store takes writes again.
# Never written while writes succeed. No personal data.
store_write_probe = Table(
    "store_write_probe",
    metadata,
    Column("probe_id", Integer, primary_key=True, autoincrement=False),
    Column("probed_at", DateTime(timezone=True), nullable=True),
)


# A data key rotation under way (`s117hub rotate-data-key`, hub/store/rekey.py): one row, `name` "data",
# while the store is rewritten under a new key a chunk at a time (it then holds data under two keys, and
# every process that opens it refuses to start: hub/store/key_check.py). A fixed text encrypted under the
# new key (the same key must finish it), both keys' fingerprints (one-way), the table being rewritten and
# the last row rewritten in it (`cursor`: its key's values), counts so far. Deleted in the transaction
# that records the new key in `store_keys`. No personal data.
store_key_rotations = Table(
    "store_key_rotations",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("new_check_token", LargeBinary, nullable=False),
    Column("old_fingerprint", String(32), nullable=False),
    Column("new_fingerprint", String(32), nullable=False),
    Column("phase", String(32), nullable=False),
    Column("cursor", JSON, nullable=True),
    Column("counts", JSON, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The operator gave --forget-unmatched-reconciliation (migration 0041): a resumed rotation does the same.
    Column("forget_unmatched", Boolean, nullable=True),
)
