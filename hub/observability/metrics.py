"""Prometheus metrics. Labels carry channels, outcomes and org codes, never
anything about a person."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INGEST = Counter("s117_ingest_total", "Register changes received", ["channel", "outcome"])
SERVICE_LEVEL = Counter("s117_register_service_level_total", "Changes recorded late or nearly late", ["state"])
DISPATCHED = Counter("s117_events_dispatched_total", "Events routed to recipients", ["event_type", "decision"])
# A dispatcher batch worked out on a snapshot and done again under the write lock:
# a message failed there (reason="failed") or what it read moved meanwhile ("moved").
DISPATCH_REDONE = Counter("s117_dispatch_batches_redone_total",
                          "Dispatcher batches worked out on a snapshot and done again under the write lock", ["reason"])
DELIVERY = Counter("s117_deliveries_total", "Push delivery attempts (webhook, kafka-topic, file-export)",
                   ["channel", "outcome"])
DELIVERY_SECONDS = Histogram("s117_webhook_delivery_seconds", "Webhook POST duration")
# With the workers apart (hub/observability/multiproc.py) a gauge says how the
# processes' values combine: one process sets each of these series, so the
# largest of the live ones is that value (a gone process's are dropped).
CONSUMER_LAG = Gauge("s117_consumer_lag_messages", "Messages not yet handled", ["group", "topic"],
                     multiprocess_mode="livemax")
PENDING_DELIVERIES = Gauge("s117_pending_deliveries", "Webhook deliveries waiting to be sent",
                           multiprocess_mode="livemax")
# Push subscriptions whose subscriber answered so that the hub stopped sending (reason "gone": a
# 410 Gone) until resumed: the store's count, set by the webhook deliverer's poll (hub/delivery/webhook.py).
SUBSCRIPTIONS_SUSPENDED = Gauge("s117_subscriptions_suspended",
                                "Active push subscriptions suspended until resumed (the subscriber answered 410 Gone)",
                                ["reason"], multiprocess_mode="livemax")
# Kafka mode: the outbox behind the relay (hub/bus/kafka.py `run_relay`). While Kafka cannot be reached,
# changes are still accepted into the store and wait here; the dispatcher's lag (above) counts only what
# reached Kafka, so it stays at 0 meanwhile. Set by the relay (one process).
RELAY_PENDING = Gauge("s117_relay_pending_messages", "Kafka mode: events in the outbox not yet acknowledged by Kafka",
                      multiprocess_mode="livemax")
RELAY_OLDEST = Gauge("s117_relay_oldest_pending_seconds",
                     "Kafka mode: how long the oldest event not yet acknowledged by Kafka has waited in the outbox",
                     multiprocess_mode="livemax")
DEAD_LETTERS = Counter("s117_dead_letters_total", "Messages moved to the dead letters", ["handler"])
EXPORTS_UNACKNOWLEDGED = Gauge("s117_council_exports_unacknowledged_overdue",
                               "Council files ready but not acknowledged within the alert time",
                               multiprocess_mode="livemax")
# The last day the bank holiday calendar covers (hub/refdata/bank_holidays.py): a working-day
# clock past it counts no holidays. Set at start by every process (the same value).
BANK_HOLIDAYS_COVERED_UNTIL = Gauge("s117_bank_holidays_covered_until_timestamp_seconds",
                                    "The end of the last year the bank holiday calendar covers (Unix time, UTC)",
                                    multiprocess_mode="livemax")
# The date each GP practice reference dataset in use is as of (hub/refdata/ods_files.py; label `dataset`:
# ods-epraccur, gp-practice-map), and the age past which it is alerted (S117_REFERENCE_DATA_MAX_AGE_DAYS):
# alert S117ReferenceDataOld. Set at start by every process (the same values). Dataset names only.
REFERENCE_DATA_AS_OF = Gauge("s117_reference_data_as_of_timestamp_seconds",
                             "The day a reference dataset in use is as of (Unix time, UTC midnight)", ["dataset"],
                             multiprocess_mode="livemin")
REFERENCE_DATA_MAX_AGE = Gauge("s117_reference_data_max_age_seconds",
                               "The age past which a reference dataset is alerted (S117_REFERENCE_DATA_MAX_AGE_DAYS)",
                               multiprocess_mode="livemin")
# Hospital sites (hub/refdata/data/hospital_sites.csv) naming a council the register of local authorities in
# use says was abolished on or before the day the hub started (hazard H-03): a count, no label (the start's
# warning names each site's ODS code, the council and its successors). Set at start by every process (the
# same value; hub/bootstrap.py `_report_hospital_sites`). Alert S117HospitalSiteCouncilAbolished.
HOSPITAL_SITES_ABOLISHED_COUNCILS = Gauge("s117_hospital_sites_naming_abolished_councils",
                                          "Hospital sites whose council (hospital_sites.csv) is abolished",
                                          multiprocess_mode="livemax")
# People whose council of ordinary residence is a county split between several successors and who await a
# register change naming the one covering their address (hazard H-03: no council is responsible meanwhile),
# by the split council's GSS code (a council's code: nothing personal) and what they await
# (`awaiting`: `the-successor-named`, a register change naming it; `the-successors-gss-code`, the operator's
# newer register: hub/refdata_retell.py AWAITING); 0 for a council whose people all had their successor named. Set by the back workers only (never the front: the processes' values combine by
# their maximum, so a front's count would outlive the workers' newer ones): at start and every
# S117_COUNCIL_SPLIT_COUNT_SECONDS, and after each reference-data re-tell pass (hub/refdata_retell.py
# `run_council_split_count`, `awaiting_successor`). Alert S117CouncilSplitAwaitingSuccessor.
COUNCIL_SPLIT_AWAITING = Gauge("s117_council_split_awaiting_successor",
                               "People whose split council's successor is not yet named (no council responsible)",
                               ["council", "awaiting"], multiprocess_mode="livemax")
WITHHELD = Gauge("s117_withheld_disclosures", "Events addressed to a body and withheld (look-back of the last query)",
                 ["recipient", "decision"], multiprocess_mode="livemax")
PURGED = Counter("s117_retention_purged_total", "Rows purged or emptied by the retention job", ["kind"])
SUBSCRIPTION_FAILING = Gauge("s117_subscription_failing_seconds",
                             "How long the oldest delivery a subscription has failed to send has waited",
                             ["org_code", "channel"], multiprocess_mode="livemax")
INGEST_BATCH = Histogram("s117_ingest_batch_changes", "Register changes written per group-commit transaction",
                         buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
INGEST_FALLBACKS = Counter("s117_ingest_batch_fallbacks_total",
                           "Group-commit batches rolled back and re-run one change per transaction")
# SQLite (embedded mode): how long the shared writer's COMMITs (the WAL's fsync,
# on the event loop: the process waits for it) and the WAL checkpoints (pages
# copied into the database file and fsynced, in a thread) take in this process.
# A slow disk shows here first: a COMMIT held for hundreds of milliseconds holds
# every ACK, POST answer and delivery behind it (bench/JOURNAL.md, "Thirteenth session").
_DISK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STORE_COMMIT_SECONDS = Histogram("s117_store_commit_seconds",
                                 "SQLite write transactions' COMMIT (the WAL's fsync) in this process",
                                 buckets=_DISK_BUCKETS)
STORE_CHECKPOINT_SECONDS = Histogram("s117_store_checkpoint_seconds",
                                     "SQLite WAL checkpoints (pages copied into the database file, fsynced)",
                                     buckets=_DISK_BUCKETS)
# Whether the store takes writes (hub/store/writable.py): 0 from a write that failed for a store
# fault (disk full, read-only, locked) until one succeeds (a probe every few seconds meanwhile);
# the lowest of the live processes'. `/health/ready` answers 503 meanwhile (alert S117StoreNotWritable).
STORE_WRITABLE = Gauge("s117_store_writable",
                       "1 while the store takes writes; 0 from a write that failed for a store fault "
                       "until one succeeds (the lowest of the live processes')", multiprocess_mode="livemin")
# The data-sharing and area agreements files (hub/agreements_watch.py), watched by every hub process:
# when the agreements now in force in a process were loaded (at start, or by its last good
# reload; the oldest of the live processes': a process left behind shows here), and whether its
# last reload was refused (1 until a good one: the last good agreements stay in force meanwhile;
# alert S117AgreementsReloadFailed). Reloads counted by outcome (`loaded`, `failed`), per process.
AGREEMENTS_LOADED_AT = Gauge("s117_agreements_loaded_timestamp_seconds",
                             "When the agreements in force (data-sharing, area) were last loaded (Unix time; the oldest process's)",
                             multiprocess_mode="livemin")
AGREEMENTS_RELOAD_FAILED = Gauge("s117_agreements_reload_failed",
                                 "1 while an agreements file (data-sharing, area) changed but could not be loaded "
                                 "(the last good agreements stay in force)", multiprocess_mode="livemax")
AGREEMENTS_RELOADS = Counter("s117_agreements_reloads_total",
                             "Reloads of the agreements files (data-sharing, area) by outcome (every process counts its own)",
                             ["outcome"])
# Kafka refusing the hub for a setting rather than being down (hub/bus/kafka_security.py): 1 while a
# component of a cluster ("bus", "outbound") last failed for `cause` (authentication, tls,
# authorization), the largest of the live processes' (alert S117KafkaMisconfigured); and every failed
# Kafka attempt by cause ("unreachable" for a broker down or a network fault).
KAFKA_MISCONFIGURED = Gauge("s117_kafka_misconfigured",
                            "1 while Kafka refuses the hub for a setting (authentication, tls, authorization)",
                            ["cluster", "cause"], multiprocess_mode="livemax")
KAFKA_FAILURES = Counter("s117_kafka_failures_total",
                         "Failed Kafka attempts (relay runs, topic waits, outbound sends) by cause",
                         ["cluster", "cause"])
