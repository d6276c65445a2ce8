"""Settings, from the environment (prefix S117_) or a .env file.

Engines, clients and keys are created from these in the app's lifespan, never
at import time; tests build their own Settings and pass them in.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path

from typing import TYPE_CHECKING, Annotated

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hub.domain.dates import england_day
from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE, Namespaces
from hub.hosts import loopback

if TYPE_CHECKING:
    from hub.bus.kafka_security import KafkaSecurity

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="S117_", env_file=".env", extra="ignore")

    # sqlite+aiosqlite:///path for the embedded mode, postgresql+asyncpg://... in production.
    database_url: str = f"sqlite+aiosqlite:///{REPO_ROOT / 'var' / 's117hub.db'}"
    # SQLite (embedded): the page size of a database file the hub creates, in
    # bytes (a power of two, 512-65536); an existing file keeps its own. 4 KB by
    # default: 16 KB cuts a council file's WAL frames to a quarter but makes each
    # single change write about 3.3x the WAL bytes (bench/JOURNAL.md, "Fifteenth
    # session"). Checkpoints go by the WAL's bytes, whatever the page size (hub/store/db.py).
    sqlite_page_size: int = 4096
    # PostgreSQL (production): how long the hub waits on its store before it answers 503
    # `store-unavailable` (a server that takes connections but does not answer: hung, stopped with
    # SIGSTOP, a network partition). A new connection (asyncpg's own default 60 s); each statement
    # (asyncpg's command_timeout; 0 = no limit; migrations at start have none); a free connection of
    # the pool (20) when every one is in use. Worst case about the three added, inside the 120 s limit.
    store_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    store_statement_timeout_seconds: float = Field(default=30.0, ge=0, le=3600)
    store_pool_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # PostgreSQL over TLS: libpq's parameters on database_url (sslmode=verify-full&sslrootcert=<CA file>,
    # sslcert and sslkey for a client certificate; hub/store/postgres_tls.py). A store beyond this machine
    # (not loopback, not a Unix socket) must be verify-ca or verify-full; true only where the network
    # between the hub and PostgreSQL is otherwise protected.
    database_allow_unverified: bool = False
    # "sql" = the embedded durable log in the same database (the outbox is the log);
    # "kafka://host:port[,host:port]" = the same outbox relayed to Apache Kafka,
    # and the dispatcher consuming from Kafka.
    bus_url: str = "sql"
    kafka_partitions: int = 6
    host: str = "127.0.0.1"
    port: int = 8117
    # HTTP server limits (hub/server.py; bodies and request time: hub/api/limits.py).
    # A request line and headers must arrive within http_head_timeout_seconds
    # of the connection opening (slowloris) and be at most http_max_head_bytes.
    http_head_timeout_seconds: float = 10.0
    http_max_head_bytes: int = 64 * 1024
    http_keep_alive_seconds: int = 5
    # Connections + requests in progress beyond which new requests get a 503.
    http_max_concurrency: int = 500
    # Open connections from one peer address (loopback included) beyond which
    # a new one is answered a 503 at once and closed, so that one client
    # cannot take the whole of http_max_concurrency; 0: no per-peer cap (a
    # hub reached only through a reverse proxy, which then caps its clients).
    http_max_connections_per_peer: int = Field(default=64, ge=0)
    log_level: str = "INFO"
    log_json: bool = True

    # The data key: field encryption (hub/crypto.py) for personal details at rest, and the key for the
    # keyed hash that indexes NHS numbers. In embedded mode a key file is made
    # on first run under var/; production passes S117_DATA_KEY from a secret store.
    data_key: str | None = None
    data_key_file: Path = REPO_ROOT / "var" / "data.key"

    sharing_agreements_path: Path = REPO_ROOT / "contracts" / "data-sharing-agreements.yaml"
    # Every hub process looks at the agreements files (this and `area_agreements_path`) this often and,
    # when one has changed, loads it
    # with the checks made at start: a withdrawn or narrowed agreement takes effect within about
    # this long; a file that does not load leaves the last good agreements in force (hub/agreements_watch.py).
    # 0: never (the file is read at start only).
    agreements_reload_seconds: float = Field(default=5.0, ge=0, le=3600)
    area_agreements_path: Path = REPO_ROOT / "contracts" / "area-agreements.yaml"
    # A copy of GOV.UK's https://www.gov.uk/bank-holidays.json: its England and Wales
    # years replace the shipped calendar's (2018-2027) for the working-day clocks
    # (hub/refdata/bank_holidays.py); unreadable, the hub does not start.
    bank_holidays_file: Path | None = None
    # NHS England's newer GP practice files, each in place of the shipped one (hub/refdata/ods_files.py):
    # ODS epraccur.csv (no header row), with the date it is as of (the file does not say: the date of
    # NHS England's release), and the ICB era's gp-reg-pat-prac-map.csv (its EXTRACT_DATE says). Unreadable
    # or not that format, the hub does not start. All the hub's instances must name the same files.
    ods_epraccur_file: Path | None = None
    ods_epraccur_as_of: date | None = None
    gp_practice_map_file: Path | None = None
    # mySociety's newer register of local authorities (uk_local_authorities_current.csv, as published) in place
    # of the shipped one (July 2025), with the date it is as of (the file does not say: the date mySociety
    # committed it): councils abolished and made by a reorganisation, and their successions
    # (hub/refdata/council_files.py). Unreadable or not that format, the hub does not start.
    local_authorities_file: Path | None = None
    local_authorities_as_of: date | None = None
    # A reference dataset (the GP practice files, the register of local authorities; shipped or the
    # operator's) older than this many days is warned of at start and alerted (S117ReferenceDataOld): ODS
    # publishes epraccur quarterly and the map monthly, so 120 days is one quarter's release missed plus a
    # month to download and deploy the next; councils are reorganised on dates announced a year or more ahead.
    reference_data_max_age_days: int = Field(default=120, ge=1, le=3650)
    # People awaiting the successor of a council split between several (hazard H-03: no council responsible
    # meanwhile) are counted by the back workers at start and every this many seconds, for the gauge
    # s117_council_split_awaiting_successor and its alert S117CouncilSplitAwaitingSuccessor (hub/refdata_retell.py
    # `run_council_split_count`). Each count evaluates only the people with no responsible council. At most a
    # day: the alert looks back three days.
    council_split_count_seconds: float = Field(default=3600.0, ge=60, le=86400)
    # The one base of every URL the hub mints (CodeSystems, profiles,
    # extensions, identifier systems, problem types): hub/fhir/namespaces.py.
    # Embedded mode defaults to a clearly local value; production (PostgreSQL)
    # must set it, since receivers keep these URLs.
    canonical_base: str | None = None
    # MessageHeader.source.endpoint; default <canonical base>/fhir.
    hub_endpoint: str | None = None

    # Webhook delivery: exponential backoff from base to cap, with jitter.
    webhook_timeout_seconds: float = 10.0
    # Production: subscribers' webhooks must be https (deploy/hub.env.example sets it).
    webhook_require_https: bool = False
    webhook_backoff_base_seconds: float = 1.0
    webhook_backoff_cap_seconds: float = 300.0
    # 0 = retry until the subscriber is back (nothing is dropped); N > 0 moves a
    # delivery to the dead letters after N failed attempts.
    webhook_max_attempts: int = 0
    # Webhook targets (hub/delivery/targets.py): a URL whose host resolves to a
    # loopback, private, link-local, multicast, reserved or unspecified address
    # is refused at subscription and at every delivery, unless its host (a
    # name or an IP address, or a network such as 10.20.0.0/16) is named here.
    # Comma-separated in S117_WEBHOOK_ALLOWED_HOSTS, e.g. "127.0.0.1,hooks.lan".
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = []
    # TLS to subscribers' endpoints (webhooks, FHIR rest-hooks): the system's trust store, and also the
    # CAs in this PEM file (an HSCN or a council's own CA); and the hub's own certificate and key (PEM),
    # presented to an endpoint that asks for one (mutual TLS). hub/delivery/http1.py `client_tls`.
    webhook_tls_ca_file: Path | None = None
    webhook_tls_client_cert: Path | None = None
    webhook_tls_client_key: Path | None = None

    @field_validator("sqlite_page_size")
    @classmethod
    def _page_size(cls, value: int) -> int:
        if not 512 <= value <= 65536 or value & (value - 1):
            raise ValueError("sqlite_page_size must be a power of two from 512 to 65536")
        return value

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    worker_poll_seconds: float = 0.2
    # Each subscription drains its own queue; at most this many attempts are in
    # flight at once per channel, and at most this many connections per
    # webhook endpoint (scheme, host, port).
    delivery_max_in_flight: int = 100
    webhook_max_connections_per_host: int = 10
    # Server-Sent Events feeds: a comment line after this long with nothing to
    # send, and each stream ended after this long (the client reconnects with
    # Last-Event-ID), so no connection outlives a deploy by much.
    sse_heartbeat_seconds: float = 15.0
    sse_max_seconds: float = 60.0

    # Outbound channels beyond webhooks and pull feeds (hub/delivery/).
    # `kafka` subscriptions publish each FHIR message to a topic of the
    # subscriber's (default s117.out.<org code, lowercased>). They are allowed
    # when the hub has a Kafka cluster: the bus's (bus_url=kafka://...) or,
    # for a hub whose own bus is the embedded SQL log, this one
    # ("host:port[,host:port]"); it takes precedence over the bus's when set.
    kafka_outbound_bootstrap: str | None = None
    # Transport security and authentication of every Kafka client the hub makes (hub/bus/kafka_security.py;
    # README "Kafka security"): PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; the CA the brokers' certificates
    # chain to (PEM; default the system's); a client certificate and its unencrypted key (mutual TLS); the
    # SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), username and password, or a file holding the
    # password (a secret store's mount); or OAUTHBEARER (hub/bus/kafka_oauth.py): access tokens from an OAuth 2.0
    # token endpoint by the client-credentials grant, with the hub's client id and secret (or a file holding
    # it), an optional scope and audience, HTTP Basic (default) or body client authentication, and SASL
    # extensions (key=value,...), the CAs of the token endpoint, and an outbound proxy the token requests go
    # through (http[s]://[user:password@]host:port; the environment's HTTPS_PROXY/NO_PROXY are not used).
    # Production (PostgreSQL): PLAINTEXT to brokers beyond loopback is refused at start unless
    # kafka_allow_plaintext says the network is otherwise protected; an http:// token endpoint beyond loopback
    # is refused in every mode unless it says so.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_sasl_oauthbearer_token_endpoint_url: str | None = None
    kafka_sasl_oauthbearer_client_id: str | None = None
    kafka_sasl_oauthbearer_client_secret: SecretStr | None = None
    kafka_sasl_oauthbearer_client_secret_file: Path | None = None
    kafka_sasl_oauthbearer_scope: str | None = None
    kafka_sasl_oauthbearer_audience: str | None = None
    kafka_sasl_oauthbearer_client_auth: str | None = None
    kafka_sasl_oauthbearer_extensions: str | None = None
    kafka_sasl_oauthbearer_ca_file: Path | None = None
    kafka_sasl_oauthbearer_proxy: SecretStr | None = None  # its URL may hold the proxy's password
    kafka_allow_plaintext: bool = False
    # The outbound cluster (kafka_outbound_bootstrap) is reached with the settings above unless
    # kafka_outbound_security_protocol is set: then with these, taken whole (its own CA and credentials).
    kafka_outbound_security_protocol: str | None = None
    kafka_outbound_ssl_ca_file: Path | None = None
    kafka_outbound_ssl_cert_file: Path | None = None
    kafka_outbound_ssl_key_file: Path | None = None
    kafka_outbound_sasl_mechanism: str | None = None
    kafka_outbound_sasl_username: str | None = None
    kafka_outbound_sasl_password: SecretStr | None = None
    kafka_outbound_sasl_password_file: Path | None = None
    kafka_outbound_sasl_oauthbearer_token_endpoint_url: str | None = None
    kafka_outbound_sasl_oauthbearer_client_id: str | None = None
    kafka_outbound_sasl_oauthbearer_client_secret: SecretStr | None = None
    kafka_outbound_sasl_oauthbearer_client_secret_file: Path | None = None
    kafka_outbound_sasl_oauthbearer_scope: str | None = None
    kafka_outbound_sasl_oauthbearer_audience: str | None = None
    kafka_outbound_sasl_oauthbearer_client_auth: str | None = None
    kafka_outbound_sasl_oauthbearer_extensions: str | None = None
    kafka_outbound_sasl_oauthbearer_ca_file: Path | None = None
    kafka_outbound_sasl_oauthbearer_proxy: SecretStr | None = None
    kafka_outbound_allow_plaintext: bool = False

    @field_serializer("kafka_sasl_password", "kafka_outbound_sasl_password", "kafka_sasl_oauthbearer_client_secret",
                      "kafka_outbound_sasl_oauthbearer_client_secret", "kafka_sasl_oauthbearer_proxy",
                      "kafka_outbound_sasl_oauthbearer_proxy", when_used="json")
    def _password_to_worker(self, value: SecretStr | None) -> str | None:
        # JSON is how `s117hub serve` hands its settings to its worker processes (hub/worker_process.py),
        # as it hands S117_DATA_KEY; repr() and str() keep it masked.
        return value.get_secret_value() if value is not None else None
    # `file` subscriptions append NDJSON to <export_dir>/<org_code>/<YYYY-MM-DD>.ndjson (England's day)
    # (dirs 0700, files 0600) for the council to collect over SFTP.
    export_dir: Path = REPO_ROOT / "var" / "exports"
    # Council files (hub/exports.py) not acknowledged within this many hours raise an alert.
    export_ack_alert_hours: float = 36.0
    # Tamper-evident audit (hub/audit.py): HMAC key of the daily checkpoints
    # (default: derived from the data key). Chained every few seconds.
    audit_key: str | None = None
    audit_chain_seconds: float = 2.0
    # Retention (hub/retention.py), in days; 0 keeps for ever. Purged hourly.
    retain_delivered_payload_days: int = 30
    retain_outbox_days: int = 30
    retain_quarantine_raw_days: int = 90
    retain_audit_days: int = 2922
    retention_purge_seconds: float = 3600.0
    # The console's time series (hub/timeseries.py): a sample every this many seconds; 0: off.
    sample_seconds: float = 60.0
    run_workers: bool = True
    # The background workers (dispatcher, deliverers, consumers, housekeeping)
    # in a second process beside the API's, supervised by it, so that ingest
    # and delivery each have a core (hub/worker_process.py).
    # With separate_workers: the deliverers in a third process of their own,
    # woken by the dispatcher's process over a Unix datagram socket
    # (hub/delivery/wake.py), so that neither the dispatcher nor the
    # deliverers have to share a core's time with the other.
    # Unset (or "auto"): `s117hub serve` chooses (`serving_layout` in
    # hub/worker_process.py): three processes when the hub may use two cores
    # or more and its store is a file or a server, else one. An app built
    # directly (`create_app`, the demo, the tests) runs one process unless
    # they are set.
    separate_workers: bool | None = None
    separate_delivery: bool | None = None

    @field_validator("separate_workers", "separate_delivery", mode="before")
    @classmethod
    def _auto_layout(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "auto"):
            return None
        return value

    # Group commit (hub/ingest/group_commit.py): at most this many changes per
    # transaction, waiting at most this many milliseconds for a batch to fill
    # while changes arrive concurrently. 1 = one transaction per change.
    # An API key found active is trusted for this long without a look-up; a
    # key revoked in the store stops working within it (0: look up each request).
    api_key_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    ingest_batch_max: int = 64
    # The dispatcher, after a batch shorter than its limit, waits this long
    # from that batch's start before fetching the next (0: at once): fewer,
    # larger batches under sustained load, for at most this much more
    # latency; an event after a quiet spell is dispatched at once. 50 ms:
    # at one client (about 300 changes/s) batches of about 14 changes rather
    # than 6, about a fifth less of the hub's CPU a change, for about 20 ms
    # more POST -> webhook at the median (bench/JOURNAL.md, "Seventeenth
    # session").
    dispatch_linger_ms: float = Field(default=50.0, ge=0, le=1000)
    # At most this many events a dispatcher batch (one transaction). A batch
    # pays about 3 ms of CPU whatever its size (its reads, checks, commit):
    # when events back up, larger batches are what let the dispatcher catch
    # up (bench/JOURNAL.md, "Eleventh session"). On SQLite a batch is worked
    # out on a snapshot and holds the write lock only to make its writes.
    dispatch_batch_max: int = Field(default=100, ge=1, le=1000)
    ingest_batch_wait_ms: float = 2.0
    # Council files (hub/file_jobs.py): rows per chunk (one bulk transaction
    # each, the mapped rows held at once); false: each row through the
    # per-change path, as a REST change (for comparison: bench/bench_files.py).
    files_chunk_rows: int = Field(default=500, ge=1, le=5000)
    files_bulk: bool = True

    # HL7 v2 ADT over MLLP (hub/mllp.py): off unless a port is set. MLLP has no
    # authentication: keep it on a network only the trusts' engines reach.
    mllp_port: int | None = None
    mllp_host: str = "127.0.0.1"
    mllp_max_frame_bytes: int = 1024 * 1024
    # A started frame must be complete within mllp_read_timeout_seconds (a slow
    # sender); a connection with no frame in progress is closed after
    # mllp_idle_timeout_seconds (the engine reconnects when it next sends).
    mllp_read_timeout_seconds: float = 30.0
    mllp_idle_timeout_seconds: float = 30.0
    # Open connections beyond these (in total, and from one peer address) are
    # closed as soon as they are accepted.
    mllp_max_connections: int = 200
    mllp_max_connections_per_peer: int = 10
    # MLLP over TLS (production): the hub's certificate and key, and the CA that
    # signs trusts' client certificates (subject CN = the trust's ODS code,
    # which MSH-4 must match). Without them MLLP is plain TCP on a private network.
    mllp_tls_cert: Path | None = None
    mllp_tls_key: Path | None = None
    mllp_tls_client_ca: Path | None = None
    # Without client certificates MSH-4 names the source unchecked: anyone who
    # reaches the port can write as any registered trust. So MLLP without
    # S117_MLLP_TLS_CLIENT_CA listens only on a loopback address unless this is
    # set, which says the port is on a network only the trusts' engines reach
    # (e.g. behind an HSCN-facing TLS terminator that checks them).
    mllp_allow_unauthenticated: bool = False

    # The person query and look-up answer a refusal (not on the register, not
    # the caller's, no agreement) no sooner than this after they began: a
    # refusal that read and evaluated a person's history would otherwise take
    # longer than one about a number not on the register (a membership oracle
    # by time, for a body with an agreement). Allowed reads are not delayed.
    read_refusal_floor_ms: float = Field(default=50.0, ge=0, le=2000)
    # The same for a register change refused as about someone the source has no
    # role for (REST and FHIR: the one no-relationship 403).
    write_refusal_floor_ms: float = Field(default=50.0, ge=0, le=2000)

    # Review reminders (hub/scheduler.py): how far ahead a due review is
    # announced, and how often the register is scanned (0 = never).
    review_notice_days: int = 14
    review_scan_interval_seconds: float = 3600.0

    # Children in hospital (hub/children.py): how often the register is scanned for the notices owed
    # (Children Act 1989 s85, EHC plans; 0 = never). A notice at admission goes at the next scan.
    child_notice_scan_interval_seconds: float = Field(default=300.0, ge=0)

    # Transfers and disputes (hub/workflows): how often the clocks are scanned
    # for reminders, breaches and escalation (0 = never; POST
    # /v1/ops/workflows/scan runs one scan). workflow_clock_settable exists for
    # end-to-end tests only: it enables POST /v1/ops/workflows/clock, which
    # moves the workflows' "today" forward (the offset kept in the store's
    # `workflow_clock` row, which every process of the hub reads before a
    # scan; unset, it is never read). Never set it in production.
    workflow_scan_interval_seconds: float = 3600.0
    workflow_clock_settable: bool = False

    @model_validator(mode="after")
    def _mllp_sources_named(self) -> Settings:
        """MLLP's only proof of who is sending is a client certificate: refuse a
        listener anyone beyond this machine could reach without one (unless
        the operator says the network is closed), and half-configured TLS."""
        if (self.mllp_tls_cert is None) != (self.mllp_tls_key is None):
            raise ValueError("mllp_tls_cert, mllp_tls_key: S117_MLLP_TLS_CERT and S117_MLLP_TLS_KEY go together")
        if self.mllp_tls_client_ca is not None and self.mllp_tls_cert is None:
            raise ValueError("mllp_tls_client_ca: client certificates need the hub's own certificate and key "
                             "(S117_MLLP_TLS_CERT, S117_MLLP_TLS_KEY)")
        if (self.mllp_port is not None and self.mllp_tls_client_ca is None and not self.mllp_allow_unauthenticated
                and not loopback(self.mllp_host)):
            raise ValueError(
                f"mllp_host: MLLP on {self.mllp_host!r} without client certificates would let anyone who reaches "
                "the port send as any registered trust (MSH-4 is not proof of the sender): set "
                "S117_MLLP_TLS_CERT, S117_MLLP_TLS_KEY and S117_MLLP_TLS_CLIENT_CA, or S117_MLLP_ALLOW_UNAUTHENTICATED"
                "=true if only the trusts' engines can reach this network")
        return self

    def kafka_security(self, cluster: str = "bus") -> KafkaSecurity:
        """The security settings of the bus's cluster (`bus`) or of the outbound one (`outbound`: its own
        set if kafka_outbound_security_protocol is set, else the bus's)."""
        from hub.bus.kafka_security import KafkaSecurity

        own = cluster == "outbound" and self.kafka_outbound_security_protocol is not None
        f = "kafka_outbound_" if own else "kafka_"
        password = getattr(self, f + "sasl_password")
        secret = getattr(self, f + "sasl_oauthbearer_client_secret")
        proxy = getattr(self, f + "sasl_oauthbearer_proxy")

        def text(name: str) -> str | None:  # an empty variable (hub.env.example's `NAME=`): unset
            return (getattr(self, f + name) or "").strip() or None

        return KafkaSecurity(
            prefix=f"S117_{f.upper()}", protocol=str(getattr(self, f + "security_protocol")).strip().upper(),
            ca_file=getattr(self, f + "ssl_ca_file"), cert_file=getattr(self, f + "ssl_cert_file"),
            key_file=getattr(self, f + "ssl_key_file"),
            sasl_mechanism=(getattr(self, f + "sasl_mechanism") or "").strip().upper() or None,
            sasl_username=getattr(self, f + "sasl_username"),
            sasl_password=(password.get_secret_value() or None) if password is not None else None,  # empty: unset
            sasl_password_file=getattr(self, f + "sasl_password_file"),
            allow_plaintext=getattr(self, f + "allow_plaintext"),
            oauth_token_url=text("sasl_oauthbearer_token_endpoint_url"),
            oauth_client_id=text("sasl_oauthbearer_client_id"),
            oauth_client_secret=(secret.get_secret_value() or None) if secret is not None else None,
            oauth_client_secret_file=getattr(self, f + "sasl_oauthbearer_client_secret_file"),
            oauth_scope=text("sasl_oauthbearer_scope"), oauth_audience=text("sasl_oauthbearer_audience"),
            oauth_client_auth=(text("sasl_oauthbearer_client_auth") or "").lower() or None,
            oauth_extensions=text("sasl_oauthbearer_extensions"),
            oauth_ca_file=getattr(self, f + "sasl_oauthbearer_ca_file"),
            oauth_proxy=(proxy.get_secret_value().strip() or None) if proxy is not None else None)  # empty: unset

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        """Every Kafka setting usable as given, named if not (never its value); in production no
        unencrypted Kafka beyond loopback unless the operator says the network is protected."""
        if self.kafka_outbound_security_protocol is None:
            for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "sasl_mechanism", "sasl_username",
                         "sasl_password", "sasl_password_file", "sasl_oauthbearer_token_endpoint_url",
                         "sasl_oauthbearer_client_id", "sasl_oauthbearer_client_secret",
                         "sasl_oauthbearer_client_secret_file", "sasl_oauthbearer_scope", "sasl_oauthbearer_audience",
                         "sasl_oauthbearer_client_auth", "sasl_oauthbearer_extensions",
                         "sasl_oauthbearer_ca_file", "sasl_oauthbearer_proxy"):
                if getattr(self, "kafka_outbound_" + name) is not None:
                    raise ValueError(f"S117_KAFKA_OUTBOUND_{name.upper()}: set without "
                                     "S117_KAFKA_OUTBOUND_SECURITY_PROTOCOL (without it the outbound cluster is "
                                     "reached with the S117_KAFKA_* settings)")
        elif not self.kafka_outbound_bootstrap:
            raise ValueError("S117_KAFKA_OUTBOUND_SECURITY_PROTOCOL: set without S117_KAFKA_OUTBOUND_BOOTSTRAP "
                             "(the outbound cluster is then the bus's, reached with the S117_KAFKA_* settings)")
        bus = self.bus_url[len("kafka://"):].rstrip("/") if self.bus_url.startswith("kafka://") else None
        clusters = [("bus", bus), ("outbound", self.kafka_outbound_bootstrap)]
        for cluster, _ in clusters:
            problems = self.kafka_security(cluster).problems()
            if problems:
                raise ValueError(problems[0])
        if self.database_url.startswith("postgresql"):
            for cluster, bootstrap in clusters:
                refusal = self.kafka_security(cluster).plaintext_refusal(bootstrap) if bootstrap else None
                if refusal:
                    raise ValueError(refusal)
        return self

    @model_validator(mode="after")
    def _epraccur_dated(self) -> Settings:
        """epraccur.csv does not say when it was extracted: its date is the operator's to give."""
        if self.ods_epraccur_file is not None and self.ods_epraccur_as_of is None:
            raise ValueError("ods_epraccur_as_of: S117_ODS_EPRACCUR_AS_OF (YYYY-MM-DD, the date of NHS England's "
                             "release) is required with S117_ODS_EPRACCUR_FILE: epraccur.csv does not say it")
        if self.ods_epraccur_as_of is not None and self.ods_epraccur_file is None:
            raise ValueError("ods_epraccur_as_of: S117_ODS_EPRACCUR_AS_OF dates S117_ODS_EPRACCUR_FILE, which is not set")
        if self.ods_epraccur_as_of is not None and self.ods_epraccur_as_of > england_day():
            raise ValueError("ods_epraccur_as_of: S117_ODS_EPRACCUR_AS_OF is in the future")
        return self

    @model_validator(mode="after")
    def _local_authorities_dated(self) -> Settings:
        """mySociety's register does not say when it was published: its date is the operator's to give."""
        if self.local_authorities_file is not None and self.local_authorities_as_of is None:
            raise ValueError("local_authorities_as_of: S117_LOCAL_AUTHORITIES_AS_OF (YYYY-MM-DD, the date mySociety "
                             "committed the file) is required with S117_LOCAL_AUTHORITIES_FILE: the file does not say it")
        if self.local_authorities_as_of is not None and self.local_authorities_file is None:
            raise ValueError("local_authorities_as_of: S117_LOCAL_AUTHORITIES_AS_OF dates S117_LOCAL_AUTHORITIES_FILE, "
                             "which is not set")
        if self.local_authorities_as_of is not None and self.local_authorities_as_of > england_day():
            raise ValueError("local_authorities_as_of: S117_LOCAL_AUTHORITIES_AS_OF is in the future")
        return self

    @model_validator(mode="after")
    def _canonical_base(self) -> Settings:
        if self.canonical_base is None:
            if self.database_url.startswith("postgresql"):
                raise ValueError(
                    "canonical_base: S117_CANONICAL_BASE is required in production (a PostgreSQL "
                    "database): the https base of every URL the hub mints, e.g. https://s117.example.nhs.uk"
                )
            self.canonical_base = DEFAULT_CANONICAL_BASE
        base = self.canonical_base.rstrip("/")
        if not base.startswith(("https://", "http://")) or "?" in base or "#" in base:
            raise ValueError("canonical_base: must be an absolute http(s) URL without query or fragment")
        self.canonical_base = base
        if self.hub_endpoint is None:
            self.hub_endpoint = f"{base}/fhir"
        return self

    @model_validator(mode="after")
    def _webhook_tls(self) -> Settings:
        """The subscribers' TLS files read at start (a mistyped path is one line naming the setting,
        not every delivery failing later)."""
        files = (self.webhook_tls_ca_file, self.webhook_tls_client_cert, self.webhook_tls_client_key)
        if any(f is not None for f in files):  # (a TLS context costs about 20 ms: made only to check files)
            from hub.delivery.http1 import client_tls  # noqa: PLC0415 - settings load before the delivery modules

            client_tls(*files)
        return self

    @model_validator(mode="after")
    def _store_tls(self) -> Settings:
        """TLS parameters on a PostgreSQL URL that can be used, and verified beyond this machine."""
        if self.database_url.startswith("postgresql"):
            from sqlalchemy.engine import make_url  # noqa: PLC0415 - settings load before the store's modules

            from hub.store.postgres_tls import check  # noqa: PLC0415

            try:
                url = make_url(self.database_url)
            except Exception:  # noqa: BLE001 - the URL itself (never echoed: it may hold the password)
                raise ValueError("database_url: not a database URL") from None
            check(url, self.database_allow_unverified)
        return self

    def namespaces(self) -> Namespaces:
        """The hub's URLs under the configured canonical base."""
        return Namespaces.for_base(self.canonical_base or DEFAULT_CANONICAL_BASE)




@cache
def get_settings() -> Settings:
    return Settings()
