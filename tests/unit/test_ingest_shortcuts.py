"""Ingest's per-message shortcuts give what the straightforward calls give:
the write decision knowing nothing of the person, decided once per
combination (`IngestService._decide_blind`), and whether the accepted line
is logged, known once per configured logger class
(`hub.observability.logging.writes_at`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
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
from hub.domain.access import Rule
from hub.store.db import close_inline, create_engine, create_schema

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


def test_a_blind_decision_is_kept_for_that_client_object_only(tmp_path: Path) -> None:
    """Decisions are kept under the client's id with the client itself: an
    entry left by another object (an id the interpreter reused) is not taken."""
    service = _service(tmp_path)
    council = CLIENTS[3]  # may not record a detention
    trust = Client(*[getattr(CLIENTS[0], f) for f in ("client_id", "name", "org_code", "org_kind", "scopes")])
    service._blind[(id(trust), ChangeType.DETAINED, "RNU01", "mllp")] = (
        council, service.access.decide_write(council, ChangeType.DETAINED, "RNU01", None, "mllp"))
    decision = service._decide_blind(trust, ChangeType.DETAINED, "RNU01", "mllp")
    assert decision == service.access.decide_write(trust, ChangeType.DETAINED, "RNU01", None, "mllp")
    assert decision.allowed
    assert service._blind[(id(trust), ChangeType.DETAINED, "RNU01", "mllp")][0] is trust
    # An equal client that is another object is decided for itself (and gets the same answer).
    assert service._decide_blind(CLIENTS[0], ChangeType.DETAINED, "RNU01", "mllp") == decision


def _change(change_type: str, nhs_number: object = "9990001006", hospital: object = "RNU01") -> dict:
    return {"change_type": change_type, "person": {"nhs_number": nhs_number}, "hospital_ods": hospital,
            "source_message_id": "m1", "effective_date": "2025-01-06"}


@pytest.mark.parametrize(("data", "refused"), [
    # allowed knowing nothing of the person: go on, the number and site are validation's to name
    (_change("detained"), False),
    (_change("detained", nhs_number="123"), False),
    (_change("detained", nhs_number=None), False),
    (_change("detained", hospital="ZZZ99"), False),
    # not allowed blind, no person to ask about (the number unreadable): validation names it
    (_change("left-hospital", nhs_number="123"), False),
    (_change("left-hospital", nhs_number=123), False),
    # a detention's unknown site, or none, is not a question of the person: validation names it
    (_change("detained", hospital={"ods": "RNU01"}), False),
    (_change("detained", hospital=None), False),
    # a trust may report anyone's detention: without a change type there is nothing to ask
    ({**_change("detained"), "change_type": "no-such-type"}, False),
    # not allowed blind, the number readable: the person is read; not on the register, refused
    (_change("left-hospital"), Rule.NO_RELATIONSHIP),
    # ... whatever else is wrong (a site the hub does not know, one that is not a code)
    (_change("left-hospital", hospital="ZZZ99"), Rule.NO_RELATIONSHIP),
    (_change("left-hospital", hospital=["RNU01"]), Rule.NO_RELATIONSHIP),
], ids=lambda v: repr(v) if not isinstance(v, dict) else f"{v.get('change_type')}-{v.get('hospital_ods')}-"
                                                           f"{(v.get('person') or {}).get('nhs_number')}")
def test_the_precheck_refuses_what_needs_a_relationship_the_trust_does_not_have(tmp_path: Path, data: dict,
                                                                                 refused: Rule | bool) -> None:
    assert _precheck(tmp_path, CLIENTS[0], data, "mllp") == refused


@pytest.mark.parametrize(("data", "refused"), [
    # a trust's change type: refused whoever the person is, whatever else the input holds
    (_change("detained"), Rule.TRUST_ONLY_CHANGE_TYPE),
    (_change("detained", nhs_number="123", hospital=None), Rule.TRUST_ONLY_CHANGE_TYPE),
    ({"change_type": "left-hospital"}, Rule.TRUST_ONLY_CHANGE_TYPE),
    # a council change type, a change type that cannot be read, a package record: the person is asked about
    (_change("moved", hospital=None), Rule.NO_RELATIONSHIP),
    ({**_change("moved"), "change_type": "no-such-type"}, Rule.NO_RELATIONSHIP),
    ({"record": "package", "person": {"nhs_number": "9990001006"}}, Rule.NO_RELATIONSHIP),
    # no person to ask about
    (_change("moved", nhs_number="123"), False),
    ({"change_type": "moved"}, False),
], ids=lambda v: repr(v) if not isinstance(v, dict) else f"{v.get('change_type')}-{v.get('hospital_ods')}-"
                                                           f"{(v.get('person') or {}).get('nhs_number')}")
def test_the_precheck_of_a_councils_input(tmp_path: Path, data: dict, refused: Rule | bool) -> None:
    assert _precheck(tmp_path, CLIENTS[3], data, "file") == refused


def _precheck(tmp_path: Path, client: Client, data: dict, channel: str) -> Rule | bool:
    """The rule `write_precheck` refuses `data` under, or False (go on), with nobody on the register."""
    service = _service(tmp_path)

    async def go() -> object:
        await create_schema(service._engine)
        try:
            return await service.write_precheck(client, data, channel)
        finally:
            close_inline(service._engine)
            await service._engine.dispose()

    outcome = asyncio.run(go())
    if outcome is None:
        return False
    assert outcome.status_code == 403
    return Rule(outcome.body["rule"])


def test_logs_info_follows_the_configured_level() -> None:
    before = structlog.get_config()
    try:
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
            assert writes_at(logging.INFO) is logs_at(ingest_service.log.bind(), logging.INFO)
            assert writes_at(logging.INFO) is (level <= logging.INFO)
    finally:
        structlog.configure(**before)
