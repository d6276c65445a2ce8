"""Wires the ports to their implementations for one running hub.

Nothing here runs at import time: `build_hub` is called by the app's lifespan
(or by a test) with a Settings object, and `Hub.close` releases everything.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.agreements_loader import load_agreements
from hub.bus.sql import SqlLog
from hub.crypto import DataProtector
from hub.delivery.dispatcher import Dispatcher, run_dispatcher
from hub.delivery.webhook import WebhookDeliverer, run_deliverer
from hub.domain.agreements import AgreementBook
from hub.domain.ports import ReferenceData
from hub.fhir.messages import FIELD_GROUPS
from hub.ingest.service import IngestService
from hub.observability.logging import get_logger
from hub.refdata.loader import load_reference_data
from hub.settings import Settings
from hub.sharing import SharingAgreements
from hub.store.db import create_engine, create_schema

log = get_logger("hub.bootstrap")


@dataclass
class Hub:
    settings: Settings
    engine: AsyncEngine
    ref: ReferenceData
    agreements: AgreementBook
    protector: DataProtector
    sharing: SharingAgreements
    bus: SqlLog
    ingest: IngestService
    dispatcher: Dispatcher
    deliverer: WebhookDeliverer
    http: httpx.AsyncClient
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def start_workers(self) -> None:
        poll = self.settings.worker_poll_seconds
        self._tasks = [
            asyncio.create_task(run_dispatcher(self.dispatcher, poll, self._stop), name="dispatcher"),
            asyncio.create_task(run_deliverer(self.deliverer, poll, self._stop), name="webhook-deliverer"),
        ]

    async def close(self) -> None:
        # Drain: workers finish the message in hand, then stop.
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()
        await self.engine.dispose()


async def build_hub(settings: Settings) -> Hub:
    if settings.bus_url != "sql":
        raise ValueError("bus_url: only the embedded 'sql' log is available in this version")
    engine = create_engine(settings.database_url)
    await create_schema(engine)
    ref = load_reference_data()
    agreements = (
        load_agreements(settings.area_agreements_path)
        if settings.area_agreements_path.exists()
        else AgreementBook.default()
    )
    protector = DataProtector.from_settings(settings.data_key, settings.data_key_file)
    sharing = SharingAgreements.load(settings.sharing_agreements_path, FIELD_GROUPS)
    bus = SqlLog(engine)
    # Keep idle connections for less than common servers' 5 s keep-alive, so a
    # POST is not sent on a connection the subscriber is closing.
    http = httpx.AsyncClient(timeout=settings.webhook_timeout_seconds, follow_redirects=False,
                             limits=httpx.Limits(keepalive_expiry=2.0))
    hub = Hub(
        settings=settings, engine=engine, ref=ref, agreements=agreements, protector=protector,
        sharing=sharing, bus=bus,
        ingest=IngestService(engine, ref, agreements, protector),
        dispatcher=Dispatcher(engine, bus, ref, sharing, protector, settings.hub_endpoint),
        deliverer=WebhookDeliverer(
            engine, protector, http, settings.webhook_backoff_base_seconds,
            settings.webhook_backoff_cap_seconds, settings.webhook_max_attempts,
        ),
        http=http,
    )
    log.info("hub started", database=engine.dialect.name, bus=settings.bus_url)
    return hub
