"""Every operation in the app's own OpenAPI document, probed from outside by schemathesis: requests
generated from the document (its examples, boundary and negative cases, then random ones), sent
in turn with a hub admin's, a trust's and a council's real key to the app in-process (ASGI, no
socket) over a real SQLite store holding sample people; a case whose path names a person, subscription, quarantine
item or merge is sent again with a real one. No answer may be a 5xx nor an exception out of the app; each
answer's status and media type must be ones the document states for its operation, and its body
match the schema the document gives it; a request the document calls invalid must be refused (4xx),
and one lacking a header the document requires too.

Bounded and derandomized (`derandomize`, a fixed seed): the same requests every run, a few per
operation, so it is a regression check that takes seconds. A deeper look is the same test with more
examples, e.g. `S117_SCHEMA_FUZZ_EXAMPLES=300` (minutes)."""

from __future__ import annotations

import itertools
import os
import random
import zlib
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from hub.api.app import create_app
from hub.clients import add_client
from hub.sample_data import bad_change, detention_to_move_scenario
from tests.conftest import test_settings as make_settings
from tests.unit.test_person_merges import nhs_number

EXAMPLES = int(os.environ.get("S117_SCHEMA_FUZZ_EXAMPLES", "5"))
KEYS = {  # kind: (org code, org kind, scopes, key)
    "admin": ("HUB", "hub-operator", ["hub:admin"], "fuzz-admin-key-7f3c1e0a9b2d4c6e8f10"),
    "trust": ("RNU", "trust", ["register:write", "s117:read"], "fuzz-trust-key-2b4d6f8a0c1e3a5c7e92"),
    "council": ("E06000060", "council",
                ["subscriptions:write", "s117:read", "reports:read", "workflows:write", "packages:write"],
                "fuzz-council-key-9e8d7c6b5a4f3e2d1c0b"),
}
# Each request goes with the next key in turn (the same order every run): an operation's cases are
# sent as each kind of client, for a third of the requests of sending every case with every key.
_KEY_TURN = itertools.cycle([key for _org, _kind, _scopes, key in KEYS.values()])
CHECKS = ["not_a_server_error", "response_schema_conformance", "negative_data_rejection", "missing_required_header",
          "status_code_conformance", "content_type_conformance"]

CONFIG = SchemathesisConfig()
CONFIG.update(seed=117, max_failures=None)
CONFIG.projects.override.checks.update(included_check_names=CHECKS)
CONFIG.projects.override.generation.update(max_examples=EXAMPLES, deterministic=True, database="none")
# The document only: this app is never started (the one probed is `hub_app`'s, over its own store).
schema = schemathesis.openapi.from_dict(create_app(make_settings(Path("unused"))).openapi(), config=CONFIG)

# Real ids the sample data gave, by the name of the path parameter that takes them.
REAL_IDS: dict[str, list[str]] = {}


def _app(tmp: Path) -> FastAPI:
    app = create_app(make_settings(tmp))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI):  # noqa: ANN202 - the app's own; the first time, keys and sample people too
        async with inner(a) as state:
            if not REAL_IDS:
                await _load(a)
            yield state

    app.router.lifespan_context = lifespan
    return app


async def _load(app: FastAPI) -> None:
    hub = app.state.hub
    for kind, (org, org_kind, scopes, key) in KEYS.items():
        await add_client(hub.engine, f"fuzz {kind}", org, org_kind, scopes, api_key=key)
    admin, trust, council = ({"X-API-Key": KEYS[k][3]} for k in ("admin", "trust", "council"))
    ids: dict[str, set[str]] = {"person_id": set()}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
        for seed in range(3):
            for change in detention_to_move_scenario(random.Random(seed), f"fuzz-{seed}", date(2025, 1, 6)):
                r = await http.post("/v1/register-changes", headers=trust, json=change)
                assert r.status_code == 202, r.text
                ids["person_id"].add(r.json()["person_id"])
        r = await http.post("/v1/register-changes", headers=trust, json=bad_change("fuzz-bad"))
        ids["quarantine_id"] = {r.json()["quarantine_id"]}
        r = await http.post("/v1/subscriptions", headers=council, json={"channel": "feed"})
        assert r.status_code == 201, r.text
        ids["subscription_id"] = {r.json()["subscription_id"]}
        # A merge of two numbers the register does not hold (the operator's: no sample person changes).
        r = await http.post("/v1/persons/merge", headers=admin,
                            json={"retained_nhs_number": nhs_number(901), "superseded_nhs_number": nhs_number(902)})
        assert r.status_code == 200, r.text
        ids["merge_id"] = {r.json()["merge_id"]}
    REAL_IDS.update({name: sorted(values) for name, values in ids.items()})


@pytest.fixture(scope="module")
def hub_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The app probed. Schemathesis starts its lifespan at the first request of each operation's test
    and ends it after that test (a restart over the same store)."""
    yield _app(tmp_path_factory.mktemp("schema-fuzz"))
    REAL_IDS.clear()


def _with_real_ids(case):  # noqa: ANN001, ANN202
    """The case again with each id in its path one the store holds (chosen from the generated value,
    so the same every run), so a route's reading of a real record is probed too; None if none."""
    names = [n for n in (case.path_parameters or {}) if REAL_IDS.get(n)]
    if not names:
        return None
    real = dict(case.path_parameters)
    for name in names:
        ids = REAL_IDS[name]
        real[name] = ids[zlib.crc32(str(real[name]).encode()) % len(ids)]
    return case.operation.Case(path_parameters=real, query=case.query, headers=case.headers, body=case.body,
                               media_type=case.media_type)


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_answer_is_a_5xx_or_off_its_schema(case, hub_app: FastAPI) -> None:  # noqa: ANN001
    case.call_and_validate(headers={"X-API-Key": next(_KEY_TURN)}, app=hub_app)
    real = _with_real_ids(case)
    if real is not None:
        real.call_and_validate(headers={"X-API-Key": next(_KEY_TURN)}, app=hub_app)
