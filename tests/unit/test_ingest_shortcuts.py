"""Ingest's per-message shortcuts give what the straightforward calls give:
the write decision knowing nothing of the person, decided once per
combination (`IngestService._decide_blind`), and whether the accepted line
is logged, known once per configured logger class
(`hub.observability.logging.writes_at`)."""

from __future__ import annotations

import logging
from pathlib import Path

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.agreements_loader import load_agreements
from hub.crypto import DataProtector
from hub.domain.model import ChangeType
from hub.ingest import service as ingest_service
from hub.ingest.service import Client, IngestService
from hub.observability.logging import logs_at, writes_at
from hub.refdata.loader import load_reference_data
from hub.settings import REPO_ROOT
from hub.store.db import create_engine

_REF = load_reference_data()
_HOSPITALS = sorted(_REF._hospitals)[:40]  # some of the shipped sites and trusts
CLIENTS = [
    Client("t1", "Oxford Health", "RNU", "trust", ("register:write",)),
    Client("t2", "Another trust", "RV3", "trust", ("register:write",)),
    Client("t3", "An admin trust", "RNU", "trust", ("register:write", "hub:admin")),
    Client("c1", "A council", "E08000025", "council", ("register:write",)),
    Client("i1", "An ICB", "QHL", "icb", ("register:write",)),
    Client("h1", "The hub", "HUB", "hub", ("register:write",)),
]
HOSPITALS = [None, "", "RNU01", "RNUDM", "RV3AA", "ZZZ99", *_HOSPITALS]
CHANNELS = ["rest", "mllp", "council-file", "fhir", "workflow", "resubmit-mllp", "resubmit-rest", "other"]


def _service(tmp: Path) -> IngestService:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'hub.db'}")
    agreements = load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml")
    return IngestService(engine, _REF, agreements, DataProtector.from_settings(None, tmp / "key"))


def test_blind_decisions_are_the_policys(tmp_path: Path) -> None:
    service = _service(tmp_path)

    @settings(max_examples=400, deadline=None)
    @given(st.sampled_from(CLIENTS), st.sampled_from(list(ChangeType)), st.sampled_from(HOSPITALS),
           st.sampled_from(CHANNELS))
    def check(client: Client, change_type: ChangeType, hospital: str | None, channel: str) -> None:
        expected = service.access.decide_write(client, change_type, hospital, None, channel)
        assert service._decide_blind(client, change_type, hospital, channel) == expected  # made
        assert service._decide_blind(client, change_type, hospital, channel) == expected  # remembered

    check()


def test_blind_decisions_stay_bounded(tmp_path: Path) -> None:
    service = _service(tmp_path)
    for n in range(5000):
        client = Client(f"t{n}", "trust", "RNU", "trust", ("register:write",))
        assert service._decide_blind(client, ChangeType.DETAINED, "RNU01", "mllp") == \
            service.access.decide_write(client, ChangeType.DETAINED, "RNU01", None, "mllp")
    assert len(service._blind) <= 4096


def test_logs_info_follows_the_configured_level() -> None:
    before = structlog.get_config()
    try:
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
            assert writes_at(logging.INFO) is logs_at(ingest_service.log.bind(), logging.INFO)
            assert writes_at(logging.INFO) is (level <= logging.INFO)
    finally:
        structlog.configure(**before)
