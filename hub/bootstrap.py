"""Wires the ports to their implementations for one running hub.

Nothing here runs at import time: `build_hub` is called by the app's lifespan
(or by a test) with a Settings object, and `Hub.close` releases everything.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from hub.agreements_loader import load_agreements
from hub.agreements_watch import AgreementsWatcher, file_state
from hub.store.writable import store_writes
from hub.bus.kafka import KafkaLog, KafkaRelay, TopicWait, run_relay
from hub.bus.kafka_security import FAULTS
from hub.bus.port import EVENTS_TOPIC, Subscriber
from hub.bus.sql import SqlLog
from hub.crypto import DataProtector
from hub.store.key_check import store_protector
from hub.store.restores import NO_RESTORE, restore_state
from hub.delivery.dispatcher import Dispatcher, run_dispatcher
from hub.delivery.fhir_rest_hook import FhirRestHookDeliverer
from hub.delivery.file_export import FileExportDeliverer
from hub.delivery.kafka_topic import KafkaTopicDeliverer
from hub.delivery.http1 import client_tls
from hub.delivery.webhook import HostClients, WebhookDeliverer, run_deliverer
from hub.domain.agreements import AgreementBook
from hub.domain.ports import COUNCIL_WITHOUT_GSS, ReferenceData
from hub.fhir.messages import FIELD_GROUPS
from hub.file_jobs import FileJobs
from hub.clients import ClientCache
from hub.ingest.service import IngestService
from hub.mllp import MllpLimits, MllpServer, server_tls_context
from hub.merges import PersonMergeService
from hub.retraction import RetractionService
from hub.drift_alerts import DriftAlerts
from hub.reconciliation import ItemWatcher, ReconciliationService, Reconciler, run_reconciler
from hub.exports import ExportService, run_exporter
from hub.audit import AuditChain, audit_key
from hub.retention import Purger, RetentionPolicy, run_housekeeping
from hub.timeseries import Sampler, run_sampler
from hub.scheduler import ReviewScanner, run_review_scanner
from hub.children import ChildNoticeScanner, run_child_notice_scanner
from hub.observability.logging import get_logger
from hub.observability.metrics import (
    BANK_HOLIDAYS_COVERED_UNTIL, HOSPITAL_SITES_ABOLISHED_COUNCILS, REFERENCE_DATA_AS_OF, REFERENCE_DATA_MAX_AGE,
)
from hub.refdata.bank_holidays import WARN_DAYS, covered_until
from hub.refdata.loader import HOSPITAL_SITES_FILE, SiteCouncilAbolished, reference_data, sources_of
from hub.refdata.ods_files import Dataset, age_days
from hub.register_counts import ensure_register_status
from hub.settings import Settings
from hub.worker_process import WorkerProcess
from hub.workflows.consumer import WorkflowConsumer, run_workflow_consumer, run_workflow_scanner
from hub.workflows.service import WorkflowService
from hub.money.service import PackageService
from hub.sharing import FUNDING, SharingAgreements
from hub.store.db import close_inline, create_engine, create_schema, engine_options
from hub.domain.dates import england_day

log = get_logger("hub.bootstrap")
LEASE_MARGIN_SECONDS = 5.0
KAFKA_REQUEST_TIMEOUT_SECONDS = 30.0  # KafkaTopicDeliverer's producer request_timeout_ms


def mllp_limits(s: Settings) -> MllpLimits:
    """The MLLP listener's limits from the settings (its refusal ACKs wait for
    the writes' refusal floor, S117_WRITE_REFUSAL_FLOOR_MS, as REST and FHIR do)."""
    return MllpLimits(max_frame_bytes=s.mllp_max_frame_bytes, read_timeout=s.mllp_read_timeout_seconds,
                      idle_timeout=s.mllp_idle_timeout_seconds, max_connections=s.mllp_max_connections,
                      max_per_peer=s.mllp_max_connections_per_peer, refusal_floor=s.write_refusal_floor_ms / 1000)


def kafka_bootstrap(bus_url: str) -> str | None:
    """`sql` -> None; `kafka://h1:9092,h2:9092` -> "h1:9092,h2:9092"."""
    if bus_url == "sql":
        return None
    if bus_url.startswith("kafka://") and len(bus_url) > len("kafka://"):
        return bus_url[len("kafka://"):].rstrip("/")
    raise ValueError("bus_url: must be 'sql' or 'kafka://host:port[,host:port]'")


def outbound_kafka_bootstrap(settings: Settings) -> str | None:
    """The Kafka cluster `kafka` subscriptions publish to: kafka_outbound_bootstrap
    if set (an embedded hub can publish outbound without a Kafka bus), else the bus's."""
    return settings.kafka_outbound_bootstrap or kafka_bootstrap(settings.bus_url)


@dataclass
class Hub:
    settings: Settings
    engine: AsyncEngine
    ref: ReferenceData
    agreements: AgreementBook
    protector: DataProtector
    sharing: SharingAgreements
    bus: Subscriber
    ingest: IngestService
    dispatcher: Dispatcher
    deliverer: WebhookDeliverer
    http: HostClients
    relay: KafkaRelay | None = None
    file_deliverer: FileExportDeliverer | None = None
    kafka_deliverer: KafkaTopicDeliverer | None = None  # None: no Kafka cluster, no kafka subscriptions
    reconciliation: ReconciliationService | None = None
    exports: ExportService | None = None
    workflows: WorkflowService | None = None
    retractions: RetractionService | None = None  # register changes recorded in error (set by build_hub; MLLP A11/A13)
    merges: PersonMergeService | None = None  # NHS number merges (set by build_hub; MLLP A40)
    workflow_consumer: WorkflowConsumer | None = None
    audit: AuditChain | None = None
    packages: PackageService | None = None  # aftercare packages and money (always set by build_hub)
    fhir_deliverer: FhirRestHookDeliverer | None = None
    files: FileJobs | None = None  # council files recorded in the background (set by build_hub)
    clients: ClientCache = field(default_factory=ClientCache)  # API keys seen in the last few seconds
    restore_epoch: str = NO_RESTORE  # the store's restore epoch (hub/store/restores.py; set by build_hub)
    # The watch on the data-sharing agreements file, swapping a changed file's grants into `sharing`
    # (hub/agreements_watch.py; set by build_hub, started by `watch_agreements`).
    agreements_watch: AgreementsWatcher | None = None
    worker_process: WorkerProcess | None = None  # the back workers' process (S117_SEPARATE_WORKERS)
    delivery_process: WorkerProcess | None = None  # the deliverers' process (S117_SEPARATE_DELIVERY)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _startup: list[asyncio.Task] = field(default_factory=list)  # one-shot start-up tasks
    _watching: asyncio.Task | None = None  # the agreements file's watch (`watch_agreements`)
    _probing: asyncio.Task | None = None  # the store's write probe while unwritable (`watch_store_writes`)
    topic: TopicWait | None = None  # Kafka mode: the bus's topic, made at start or once Kafka answers
    _topic_waiting: asyncio.Task | None = None  # trying Kafka again (`TopicWait.run`) while it is not reached

    def waiting(self) -> dict[str, str]:
        """What waits while the hub takes traffic (/health/ready's `waiting`): Kafka not reached since
        the start, the topic not made, the relay and the consumers not started."""
        waiting = {"bus": self.topic.waiting} if self.topic is not None and self.topic.waiting else {}
        # A Kafka cluster refusing the hub for a setting (authentication, tls, authorization), met by any
        # of its Kafka clients in this process or another live one of the hub (hub/bus/kafka_security.py).
        for name, why in FAULTS.waiting().items():
            if name not in waiting or not waiting[name].startswith("misconfigured"):
                waiting[name] = why
        return waiting

    def start_workers(self, front: bool = True, back: bool = True, deliver: bool = True) -> None:
        """Start the hub's tasks: `front` the listeners beside the API (MLLP,
        council files left half-done), `back` the background workers
        (dispatcher, consumers, housekeeping), `deliver` the deliverers. All in
        one process by default; with `S117_SEPARATE_WORKERS` the back ones and
        the deliverers run in a process of their own, and with
        `S117_SEPARATE_DELIVERY` too the deliverers in a third (hub/worker_process.py)."""
        self._tasks = []
        if front:
            self._start_front()
        if back:
            self._start_back(deliver_here=deliver)
        if deliver:
            self._start_deliverers()

    def watch_agreements(self, audit: bool) -> None:
        """Every process of the hub: look at the data-sharing and area agreements files every
        `S117_AGREEMENTS_RELOAD_SECONDS` and swap a changed file's agreements in (hub/agreements_watch.py),
        until the hub closes. `audit`: this process writes the audit record of a reload that changes
        grants (one process of the hub: the one running the back workers, or the only one). A task
        of its own, not one of `worker_tasks` (it runs with workers or without), stopped by `close`."""
        interval = self.settings.agreements_reload_seconds
        if self.agreements_watch is None or interval <= 0 or self._watching is not None:
            return
        self.agreements_watch.engine = self.engine if audit else None
        self._watching = asyncio.create_task(self.agreements_watch.run(interval, self._stop), name="agreements-watch")

    def watch_store_writes(self) -> None:
        """Every process of the hub: while a write has failed for a store fault (its disk full,
        read-only, locked), rewrite one row every few seconds until one commits (hub/store/writable.py;
        `/health/ready` says `store_writes` meanwhile). Nothing is written while writes succeed."""
        if self._probing is None:
            self._probing = asyncio.create_task(store_writes(self.engine).run(self.engine, self._stop),
                                                name="store-write-probe")

    def deliverers(self) -> list[Any]:
        """The deliverers this hub has, one per channel."""
        return [d for d in (self.deliverer, self.file_deliverer, self.kafka_deliverer, self.fhir_deliverer)
                if d is not None]

    def _start_front(self) -> None:
        # A one-shot task: done once the files are handed to their jobs (not a worker that stopped).
        self._startup.append(asyncio.create_task(self.files.resume(), name="council-files-resume"))
        if self.settings.mllp_port is not None:
            s = self.settings
            tls = (server_tls_context(s.mllp_tls_cert, s.mllp_tls_key, s.mllp_tls_client_ca)
                   if s.mllp_tls_cert and s.mllp_tls_key else None)
            limits = mllp_limits(s)
            if s.mllp_tls_client_ca is None:  # settings allow it only on loopback or on the operator's word
                log.warning("mllp without client certificates: MSH-4 names the sending trust unchecked",
                            port=s.mllp_port, allow_unauthenticated=s.mllp_allow_unauthenticated)
            mllp = MllpServer(self.engine, self.ingest, s.mllp_host, s.mllp_port, tls=tls, limits=limits,
                              retractions=self.retractions, merges=self.merges)
            self._tasks.append(asyncio.create_task(mllp.serve(self._stop), name="mllp"))

    def start_worker_process(self) -> WorkerProcess:
        """The back workers in a second process (and with `S117_SEPARATE_DELIVERY`
        the deliverers in a third), supervised from this one."""
        separate = self.settings.separate_delivery
        self.worker_process = WorkerProcess(self.settings, role="back" if separate else "all")
        self._tasks.append(asyncio.create_task(self.worker_process.run(self._stop), name="worker-process"))
        if separate:
            self.delivery_process = WorkerProcess(self.settings, role="deliver")
            self._tasks.append(asyncio.create_task(self.delivery_process.run(self._stop), name="delivery-process"))
        return self.worker_process

    def _start_deliverers(self) -> None:
        poll = self.settings.worker_poll_seconds
        for d in self.deliverers():  # named as before: "webhook-deliverer", "kafka-topic-deliverer", ...
            name = {"kafka": "kafka-topic", "fhir": "fhir-rest-hook"}.get(d.channel, d.channel) + "-deliverer"
            self._tasks.append(asyncio.create_task(run_deliverer(d, poll, self._stop), name=name))

    def _start_back(self, deliver_here: bool = True) -> None:
        poll = self.settings.worker_poll_seconds
        # The deliverers look for work as soon as the dispatcher has queued
        # some (in another process: hub/delivery/wake.py, set by the caller).
        if deliver_here:
            self.dispatcher.on_queued = {d.channel: d.wake for d in self.deliverers()}
        self._tasks += [
            asyncio.create_task(run_dispatcher(self.dispatcher, poll, self._stop), name="dispatcher"),
        ]
        if self.workflow_consumer is not None and self.workflows is not None:
            self._tasks.append(asyncio.create_task(run_workflow_consumer(self.workflow_consumer, poll, self._stop),
                                                   name="workflow-consumer"))
            if self.settings.workflow_scan_interval_seconds > 0:
                self._tasks.append(asyncio.create_task(
                    run_workflow_scanner(self.workflows, self.settings.workflow_scan_interval_seconds, self._stop),
                    name="workflow-scanner"))
        if self.relay is not None:
            self._tasks.append(asyncio.create_task(run_relay(self.relay, poll, self._stop), name="kafka-relay"))
        if self.reconciliation is not None:
            alerts = self.reconciliation.alerts
            self._tasks.append(asyncio.create_task(run_reconciler(
                Reconciler(self.engine, self.ref, self.agreements, self.reconciliation, alerts=alerts),
                ItemWatcher(self.engine, self.bus, self.ref, self.agreements, alerts=alerts),
                self.reconciliation, poll, self._stop), name="reconciler"))
        if self.audit is not None:
            s = self.settings
            purger = Purger(self.engine, self.audit, RetentionPolicy(
                s.retain_delivered_payload_days, s.retain_outbox_days, s.retain_quarantine_raw_days,
                s.retain_audit_days), export_dir=s.export_dir)
            self._tasks.append(asyncio.create_task(run_housekeeping(
                self.audit, purger, s.audit_chain_seconds, s.retention_purge_seconds, self._stop), name="housekeeping"))
        if self.settings.sample_seconds > 0:
            self._tasks.append(asyncio.create_task(run_sampler(
                Sampler(self.engine, self.bus), self.settings.sample_seconds, self._stop), name="sampler"))
        if self.exports is not None:
            self._tasks.append(asyncio.create_task(run_exporter(self.exports, poll, self._stop), name="exporter"))
        # A change of reference data since the last start: the bodies it moves told (hazard H-03). At start, and
        # on each later day the council data names a successor taking over.
        from hub.refdata_retell import (  # noqa: PLC0415 - back only
            ReferenceDataRetell,
            run_council_split_count,
            run_reference_data_retell,
        )

        self._startup.append(asyncio.create_task(run_reference_data_retell(
            ReferenceDataRetell(self.engine, self.ref, self.agreements), self._stop), name="reference-data-retell"))
        # The people a split council leaves with no responsible council, counted for the gauge and its alert
        # (hazard H-03): at start and every S117_COUNCIL_SPLIT_COUNT_SECONDS.
        self._tasks.append(asyncio.create_task(run_council_split_count(
            self.engine, self.ref, self.agreements, self.settings.council_split_count_seconds, self._stop),
            name="council-split-count"))
        if self.settings.review_scan_interval_seconds > 0:
            scanner = ReviewScanner(self.engine, self.ref, self.agreements, self.settings.review_notice_days)
            self._tasks.append(asyncio.create_task(
                run_review_scanner(scanner, self.settings.review_scan_interval_seconds, self._stop),
                name="review-scanner"))
        if self.settings.child_notice_scan_interval_seconds > 0:
            children = ChildNoticeScanner(self.engine, self.ref, self.sharing, self.protector,
                                          self.settings.hub_endpoint, self.settings.namespaces())
            self._tasks.append(asyncio.create_task(
                run_child_notice_scanner(children, self.settings.child_notice_scan_interval_seconds, self._stop),
                name="child-notice-scanner"))

    def worker_tasks(self) -> list[asyncio.Task]:
        """The long-running tasks: one that is done has stopped (the hub is not ready)."""
        return list(self._tasks)

    def failed_startup_tasks(self) -> list[str]:
        """One-shot start-up tasks that raised."""
        return [t.get_name() for t in self._startup if t.done() and not t.cancelled() and t.exception() is not None]

    async def close(self) -> None:
        # Drain: workers finish the message in hand, then stop.
        self._stop.set()
        if self._tasks or self._startup:
            await asyncio.gather(*self._tasks, *self._startup, return_exceptions=True)
        if self._watching is not None:
            await asyncio.gather(self._watching, return_exceptions=True)
        if self._probing is not None:
            await asyncio.gather(self._probing, return_exceptions=True)
        if self._topic_waiting is not None:
            await asyncio.gather(self._topic_waiting, return_exceptions=True)
        if self.files is not None:
            await self.files.close()  # after the chunk in hand; the rest resumes at the next start
        close = getattr(self.bus, "close", None)
        if close is not None:
            await close()  # Kafka: commit handled work, leave the group
        if self.relay is not None:
            await self.relay.close()
        if self.kafka_deliverer is not None:
            await self.kafka_deliverer.close()  # flush the outbound producer
        await self.http.aclose()
        FAULTS.clear()  # this process's Kafka clients are gone
        self.ingest.close()
        close_inline(self.engine)
        await self.engine.dispose()


def _report_calendar(holidays: frozenset[date], today: date | None = None, warn: bool = True) -> None:
    """The bank holiday calendar's reach: a metric for the alert, a warning at start when less
    than half a year is left (hub/refdata/bank_holidays.py)."""
    until = covered_until(holidays)
    if until is None:
        return
    BANK_HOLIDAYS_COVERED_UNTIL.set(datetime.combine(until, time.max, UTC).timestamp())
    left = (until - (today or england_day())).days
    if warn and left < WARN_DAYS:
        log.warning("bank holiday calendar ends soon: clocks past it count no holidays; set S117_BANK_HOLIDAYS_FILE",
                    covered_until=until.isoformat(), days_left=left)


def _report_reference_data(datasets: tuple[Dataset, ...], max_age_days: int, today: date | None = None,
                           warn: bool = True) -> None:
    """Each reference dataset's date (the GP practice files, the register of local authorities): a metric for
    the alert (S117ReferenceDataOld), a warning at start for one older than `max_age_days` naming the setting
    that takes the publisher's newer file (hub/refdata/ods_files.py, hub/refdata/council_files.py)."""
    today = today or england_day()
    REFERENCE_DATA_MAX_AGE.set(max_age_days * 86400)
    for d in datasets:
        REFERENCE_DATA_AS_OF.labels(dataset=d.name).set(datetime.combine(d.as_of, time.min, UTC).timestamp())
        age = age_days(d, today)
        if warn and age > max_age_days:
            log.warning("reference data older than S117_REFERENCE_DATA_MAX_AGE_DAYS: a GP practice opened or moved, "
                        "or a council made or abolished by a reorganisation, since is unknown or named wrongly; "
                        "download the publisher's current file and set the setting",
                        dataset=d.name, as_of=d.as_of.isoformat(), age_days=age, max_age_days=max_age_days,
                        setting=d.setting)


def _report_hospital_sites(abolished: tuple[SiteCouncilAbolished, ...], warn: bool = True) -> None:
    """The hospital sites (hospital_sites.csv) naming a council the register in use says was abolished
    (hazard H-03): a count for the alert (S117HospitalSiteCouncilAbolished), and a warning at start for each
    naming the site's ODS code, the council's code, its successors and the file to update (codes only).
    A single successor with a GSS code is followed by the rules; a split, or a successor without a GSS code,
    leaves people with no place of residence at the site with no coordinating council."""
    HOSPITAL_SITES_ABOLISHED_COUNCILS.set(len(abolished))
    if not warn:
        return
    for site in abolished:
        successors = ",".join(o.code + (" (no GSS code yet)" if o.kind == COUNCIL_WITHOUT_GSS else "")
                              for o in site.successors)
        log.warning("hospital site names an abolished council: update the site's council_gss in the hospital "
                    "sites file and restart every instance",
                    site=site.ods_code, council=site.council_gss, abolished_on=site.abolished_on.isoformat(),
                    successors=successors,
                    coordinating=("the successor (followed)" if site.followed else
                                  "none: no coordinating council can be named for people with no place of "
                                  "residence"),
                    file=HOSPITAL_SITES_FILE)


def _subscriber_tls(settings: Settings) -> Any:
    """The TLS context to subscribers when a CA or the hub's certificate is set (made here, once); else
    None: the client makes the system's when it first reaches an https endpoint (a context costs about
    20 ms, and most hubs a test starts reach none)."""
    files = (settings.webhook_tls_ca_file, settings.webhook_tls_client_cert, settings.webhook_tls_client_key)
    return client_tls(*files) if any(f is not None for f in files) else None


async def build_hub(settings: Settings, *, start_warnings: bool = True) -> Hub:
    """The hub `settings` describe. `start_warnings` False in a worker process the front started
    (hub/worker_process.py): the warnings about the settings and the reference data at start (Kafka without
    TLS, an old dataset, the calendar's end) are the front's to say, once, not once a process (the metrics
    for their alerts are set in every process alike)."""
    kafka_servers = kafka_bootstrap(settings.bus_url)
    outbound = outbound_kafka_bootstrap(settings)
    # Every Kafka client of the hub is made with its cluster's security, built once here
    # (hub/bus/kafka_security.py; the settings were checked when read, so this does not fail).
    # (OAUTHBEARER: one token provider a cluster, whose token every client of it shares.)
    bus_security = settings.kafka_security("bus").client_options("bus") if kafka_servers else {}
    outbound_security = settings.kafka_security("outbound").client_options("outbound") if outbound else {}
    for cluster, servers in (("bus", kafka_servers), ("outbound", outbound)):
        security = settings.kafka_security(cluster)
        if start_warnings and servers and not security.tls and security.allow_plaintext:  # on the operator's word
            log.warning("kafka without TLS: the network to the brokers must protect the data itself",
                        cluster=cluster, mode=security.protocol, allow_unauthenticated=True)
        if start_warnings and servers and security.token_url_in_clear():  # allowed on the operator's word
            log.warning("kafka oauth token endpoint over http: the network to it must protect the client secret "
                        "and the tokens itself", cluster=cluster, allow_unauthenticated=True)
    engine = create_engine(settings.database_url, **engine_options(settings))
    await create_schema(engine)
    ref = reference_data(settings.bank_holidays_file, sources_of(settings))
    _report_calendar(ref.bank_holidays(), warn=start_warnings)
    _report_reference_data(ref.datasets(), settings.reference_data_max_age_days, warn=start_warnings)
    _report_hospital_sites(ref.hospital_sites_naming_abolished_councils(england_day()), warn=start_warnings)
    # Taken before the read, as the sharing file's below: a change made meanwhile is loaded at the first look.
    area_state = file_state(settings.area_agreements_path)
    agreements = (
        load_agreements(settings.area_agreements_path)
        if settings.area_agreements_path.exists()
        else AgreementBook.default()
    )
    # The store's own key, or stop here (hub/store/key_check.py)
    protector = await store_protector(engine, settings.data_key, settings.data_key_file)
    await ensure_register_status(engine, ref, agreements)  # the summary's counts (hub/register_counts.py)
    # The file as it is before it is read: a change made meanwhile is loaded at the watch's first look.
    sharing_state = file_state(settings.sharing_agreements_path)
    sharing = SharingAgreements.load(settings.sharing_agreements_path, FIELD_GROUPS | {FUNDING})
    relay: KafkaRelay | None = None
    bus: Subscriber
    topic: TopicWait | None = None
    if kafka_servers:
        # Made here if Kafka answers; else the hub starts all the same (ingest does not need Kafka) and
        # the relay and the consumers wait for it (`TopicWait.run`, started below; /health/ready's `waiting`).
        topic = TopicWait(kafka_servers, EVENTS_TOPIC, partitions=settings.kafka_partitions,
                          client_options=bus_security)
        await topic.try_once()
        relay = KafkaRelay(engine, kafka_servers, topic_ready=topic.ready, client_options=bus_security)
        bus = KafkaLog(kafka_servers, topic_ready=topic.ready, client_options=bus_security)
    else:
        bus = SqlLog(engine)
    # One connection pool per webhook endpoint origin (keep-alive, per-host limit, HTTP/2 if offered),
    # every connection checked against the webhook target rules (hub/delivery/targets.py).
    http = HostClients(settings.webhook_timeout_seconds, per_host=settings.webhook_max_connections_per_host,
                       allowed_hosts=settings.webhook_allowed_hosts,
                       require_https=settings.webhook_require_https,
                       ssl_context=_subscriber_tls(settings))
    ingest = IngestService(engine, ref, agreements, protector, batch_max=settings.ingest_batch_max,
                           batch_wait=settings.ingest_batch_wait_ms / 1000)
    hub = Hub(
        settings=settings, engine=engine, ref=ref, agreements=agreements, protector=protector,
        sharing=sharing, bus=bus,
        ingest=ingest, clients=ClientCache(settings.api_key_cache_seconds),
        packages=PackageService(engine, ref, agreements, protector, ingest),
        dispatcher=Dispatcher(engine, bus, ref, sharing, protector, settings.hub_endpoint, agreements=agreements,
                              namespaces=settings.namespaces(), statuses=ingest.statuses),
        deliverer=WebhookDeliverer(
            engine, protector, http, settings.webhook_backoff_base_seconds,
            settings.webhook_backoff_cap_seconds, settings.webhook_max_attempts,
            # A lease outlives the longest attempt by a margin: a POST cannot
            # outlast the client timeout. A hub killed mid-POST thus delays that
            # one delivery by at most this long after it restarts.
            lease_seconds=settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS,
            timeout_seconds=settings.webhook_timeout_seconds, max_in_flight=settings.delivery_max_in_flight,
        ),
        http=http,
        fhir_deliverer=FhirRestHookDeliverer(
            engine, protector, http, settings.webhook_backoff_base_seconds, settings.webhook_backoff_cap_seconds,
            settings.webhook_max_attempts, settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS,
            timeout_seconds=settings.webhook_timeout_seconds, max_in_flight=settings.delivery_max_in_flight,
            hub_endpoint=settings.hub_endpoint, fhir_base=settings.namespaces().fhir_base,
        ),
        relay=relay,
        file_deliverer=FileExportDeliverer(
            engine, protector, settings.export_dir, backoff_base=settings.webhook_backoff_base_seconds,
            backoff_cap=settings.webhook_backoff_cap_seconds, max_attempts=settings.webhook_max_attempts,
            lease_seconds=LEASE_MARGIN_SECONDS,  # an fsync'd append takes milliseconds
            max_in_flight=settings.delivery_max_in_flight,
        ),
        kafka_deliverer=KafkaTopicDeliverer(
            engine, protector, outbound, backoff_base=settings.webhook_backoff_base_seconds,
            backoff_cap=settings.webhook_backoff_cap_seconds, max_attempts=settings.webhook_max_attempts,
            partitions=settings.kafka_partitions, source=settings.hub_endpoint,
            timeout_seconds=KAFKA_REQUEST_TIMEOUT_SECONDS,
            lease_seconds=KAFKA_REQUEST_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS,
            max_in_flight=settings.delivery_max_in_flight, client_options=outbound_security,
        ) if outbound else None,
        reconciliation=ReconciliationService(engine, protector, alerts=DriftAlerts(
            sharing, protector, ref, settings.hub_endpoint, settings.namespaces())),
        exports=ExportService(engine, ref, agreements, sharing, protector, settings.export_dir,
                              settings.export_ack_alert_hours),
        audit=AuditChain(engine, audit_key(settings.audit_key, protector.index)),
    )
    hub.retractions = RetractionService(engine, ref, agreements, protector)
    hub.merges = PersonMergeService(engine, ref, agreements, protector)
    # What a restore of the store left (hub/store/restores.py): its epoch, shown to subscribers, and the
    # floors above which versions and council file numbers go on. Fixed while the hub runs (a restore
    # is made with the hub stopped).
    restored = await restore_state(engine)
    hub.restore_epoch = restored.epoch
    hub.dispatcher.version_floor = restored.version_floor
    hub.exports.event_no_floors = restored.export_floors
    for deliverer in (hub.deliverer, hub.fhir_deliverer, hub.file_deliverer, hub.kafka_deliverer):
        if deliverer is not None:  # every outbound channel: a header, a Kafka header, a field of each line
            deliverer.restore_epoch = restored.epoch
    hub.dispatcher.linger = settings.dispatch_linger_ms / 1000
    hub.dispatcher.batch_limit = settings.dispatch_batch_max
    hub.workflows = WorkflowService(engine, ref, agreements, protector, hub.ingest,
                                    clock_settable=settings.workflow_clock_settable)
    hub.workflows.costs_for = hub.packages.interim_costs  # reimbursement from the real package costs
    # Package writes read the agreements as they are at each write (`funding`), in every process:
    # the API's and the worker process's council files alike.
    hub.packages.sharing_of = lambda: hub.sharing
    # Every push deliverer asks the agreements as they are when it sends, not as they were
    # when the message was queued (hub/delivery/leases.py, "Agreement at the time of disclosure").
    for deliverer in hub.deliverers():
        deliverer.sharing_of = lambda: hub.sharing
    hub.workflow_consumer = WorkflowConsumer(hub.workflows, bus, engine)
    # One agreements object for the process: everything above holds `sharing` itself (or asks
    # `hub.sharing`), and a reload swaps its grants in place, never a new object.
    # Likewise one area agreements object (`agreements`, held by the services above), taken in place.
    hub.agreements_watch = AgreementsWatcher(sharing, settings.sharing_agreements_path, FIELD_GROUPS | {FUNDING},
                                             loaded_state=sharing_state, area=agreements,
                                             area_path=settings.area_agreements_path if area_state else None,
                                             area_state=area_state)
    hub.files = FileJobs(engine, hub.ingest, protector, packages=hub.packages, chunk=settings.files_chunk_rows,
                         bulk=settings.files_bulk)
    hub.topic = topic
    if topic is not None and not topic.ready.is_set():
        hub._topic_waiting = asyncio.create_task(topic.run(hub._stop), name="kafka-topic-wait")
    log.info("hub started", database=engine.dialect.name, bus="kafka" if kafka_servers else "sql")
    return hub
