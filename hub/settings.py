"""Settings, from the environment (prefix S117_) or a .env file.

Engines, clients and keys are created from these in the app's lifespan, never
at import time; tests build their own Settings and pass them in.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="S117_", env_file=".env", extra="ignore")

    # sqlite+aiosqlite:///path for the embedded mode, postgresql+asyncpg://... in production.
    database_url: str = f"sqlite+aiosqlite:///{REPO_ROOT / 'var' / 's117hub.db'}"
    # "sql" = the embedded durable log in the same database (the outbox is the log);
    # "kafka://host:port[,host:port]" = the same outbox relayed to Apache Kafka,
    # and the dispatcher consuming from Kafka.
    bus_url: str = "sql"
    kafka_partitions: int = 6
    host: str = "127.0.0.1"
    port: int = 8117
    log_level: str = "INFO"
    log_json: bool = True

    # Field encryption (Fernet) for personal details at rest, and the key for the
    # keyed hash that indexes NHS numbers. In embedded mode a key file is made
    # on first run under var/; production passes S117_DATA_KEY from a secret store.
    data_key: str | None = None
    data_key_file: Path = REPO_ROOT / "var" / "data.key"

    sharing_agreements_path: Path = REPO_ROOT / "contracts" / "data-sharing-agreements.yaml"
    area_agreements_path: Path = REPO_ROOT / "contracts" / "area-agreements.yaml"
    hub_endpoint: str = "https://s117-hub.example.org/fhir"

    # Webhook delivery: exponential backoff from base to cap, with jitter.
    webhook_timeout_seconds: float = 10.0
    # Production: subscribers' webhooks must be https (deploy/hub.env.example sets it).
    webhook_require_https: bool = False
    webhook_backoff_base_seconds: float = 1.0
    webhook_backoff_cap_seconds: float = 300.0
    # 0 = retry until the subscriber is back (nothing is dropped); N > 0 moves a
    # delivery to the dead letters after N failed attempts.
    webhook_max_attempts: int = 0
    worker_poll_seconds: float = 0.2

    # Outbound channels beyond webhooks and pull feeds (hub/delivery/).
    # `kafka` subscriptions publish each FHIR message to a topic of the
    # subscriber's (default s117.out.<org code, lowercased>). They are allowed
    # when the hub has a Kafka cluster: the bus's (bus_url=kafka://...) or,
    # for a hub whose own bus is the embedded SQL log, this one
    # ("host:port[,host:port]"); it takes precedence over the bus's when set.
    kafka_outbound_bootstrap: str | None = None
    # `file` subscriptions append NDJSON to <export_dir>/<org_code>/<YYYY-MM-DD>.ndjson
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

    # HL7 v2 ADT over MLLP (hub/mllp.py): off unless a port is set. MLLP has no
    # authentication: keep it on a network only the trusts' engines reach.
    mllp_port: int | None = None
    mllp_host: str = "127.0.0.1"
    mllp_max_frame_bytes: int = 1024 * 1024
    # MLLP over TLS (production): the hub's certificate and key, and the CA that
    # signs trusts' client certificates (subject CN = the trust's ODS code,
    # which MSH-4 must match). Without them MLLP is plain TCP on a private network.
    mllp_tls_cert: Path | None = None
    mllp_tls_key: Path | None = None
    mllp_tls_client_ca: Path | None = None

    # Review reminders (hub/scheduler.py): how far ahead a due review is
    # announced, and how often the register is scanned (0 = never).
    review_notice_days: int = 14
    review_scan_interval_seconds: float = 3600.0


@cache
def get_settings() -> Settings:
    return Settings()
