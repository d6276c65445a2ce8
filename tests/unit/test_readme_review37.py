"""The README read as a newcomer integrating with the hub reads it, against the app (session 37's review).

What the README promises of what this session added, asked of the app in process (`app_hub`), so the
two cannot drift apart silently:

- the API table's row for `POST /v1/register-changes/{change_id}/retraction/reversal`: every status
  code it names is one the app answers (200, each 409 it names, the one 404, the 422 naming `reason`)
  and one the OpenAPI document lists for the route; the `200` fields it names are the answer's keys
  and the OpenAPI schema's required properties, no more, no fewer; `duplicate`; `sent-again`'s
  `standing` by `change_id` and `source_message_id` only;
- the successor warnings' reasons the README quotes are the rules' words;
- the Kafka OAUTHBEARER proxy settings the README's table names are settings and in
  deploy/hub.env.example, for both clusters;
- every module path the README names exists (the architecture map included), and every module this
  session added is named.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.clients import add_client
from hub.domain.model import ChangeType
from hub.domain.retraction import RESTATING_FACTS
from hub.domain.rules.engine import SUCCESSOR_UNCHANGED
from hub.sample_data import detention_to_move_scenario
from hub.settings import Settings
from hub.store.schema import operator_actions
from tests.histories import late_correction_history, materialise

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ROUTE = "/v1/register-changes/{change_id}/retraction/reversal"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


def _row(path: str) -> str:
    """The API table's row for `POST <path>` (its last column)."""
    rows = [line for line in README.splitlines() if line.startswith(f"| `POST {path}` |")]
    assert len(rows) == 1, rows
    return rows[0].split(" | ")[-1]


REVERSAL_ROW = _row(ROUTE)


def _promised_200_fields() -> set[str]:
    """The names the row gives the `200` answer: "`200` with `a`, `status: reinstated`, ..., `duplicate`;"."""
    said = re.search(r"`200` with (.*?`duplicate`)[;.]", REVERSAL_ROW)
    assert said is not None, REVERSAL_ROW
    return set(re.findall(r"`([a-z_]+)(?::[^`]*)?`", said.group(1)))


def _promised_codes() -> set[int]:
    return {int(code) for code in re.findall(r"`(\d{3})`", REVERSAL_ROW)}


def _kind(r: Any) -> str:
    return r.json()["type"].rsplit("/", 1)[-1]


def _instant(at: str) -> datetime:
    """A time as the trace (the store's own, naive UTC on SQLite) or an answer (with its offset) gives it."""
    t = datetime.fromisoformat(at)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("instance", "correlation_id")}


async def _drain(hub: Any) -> None:
    for _ in range(10):
        moved = 0
        while n := await hub.dispatcher.run_once():
            moved += n
        while n := await hub.workflow_consumer.run_once():
            moved += n
        if not moved:
            return


class _Calls:
    def __init__(self, app_hub: Any) -> None:
        self.http, self.hub = app_hub.http, app_hub.hub

    async def post(self, key: str, path: str, body: Any) -> Any:
        return await self.http.post(path, headers={"X-API-Key": key}, json=body)

    async def retract(self, key: str, change_id: str) -> Any:
        return await self.post(key, f"/v1/register-changes/{change_id}/retraction",
                               {"reason": "recorded against the wrong patient"})

    async def reverse(self, key: str, change_id: str, body: Any = None) -> Any:
        return await self.post(key, ROUTE.format(change_id=change_id),
                               {"reason": "the retraction named the wrong change"} if body is None else body)


# -- the reversal's row ------------------------------------------------------------------------------------------

def test_the_rows_promises_are_read_as_the_tests_below_expect() -> None:
    """The parse the other tests rest on: if the row is reworded so that these are not found, they
    would pass vacuously."""
    assert _promised_codes() == {200, 404, 409, 422}
    assert {"change_id", "status", "duplicate", "retraction_event_id"} <= _promised_200_fields()
    for said in ("`not-retracted`", "`sent-again`", "`standing`", "`source_message_id`", "naming `reason`",
                 "`duplicate: true`"):
        assert said in REVERSAL_ROW, said


async def test_each_status_the_reversal_row_promises_is_the_apps_answer(app_hub) -> None:  # noqa: ANN001
    """200 with exactly the fields named (`status: reinstated`, `duplicate` false, then true again);
    409 `not-retracted` naming change_id; 409 `sent-again` naming change_id with `standing` naming the
    resend by change_id and source_message_id only; 404 one identical answer for another organisation
    and an unknown id, retracted or not; 422 naming `reason`."""
    calls, trust, other = _Calls(app_hub), app_hub.keys["trust"], app_hub.keys["other-trust"]
    changes = detention_to_move_scenario(random.Random(37), "rr37", date(2025, 1, 6))
    ids = []
    for change in changes:
        r = await calls.post(trust, "/v1/register-changes", change)
        assert r.status_code == 202, r.text
        ids.append(r.json()["change_id"])
    moved = ids[-1]

    unknown = await calls.reverse(trust, UNKNOWN)
    assert unknown.status_code == 404 and _kind(unknown) == "not-found", unknown.text
    r = await calls.reverse(trust, moved)
    assert r.status_code == 409 and _kind(r) == "not-retracted", r.text
    assert r.json()["errors"] == [{"field": "change_id", "reason": "not retracted"}]
    r = await calls.reverse(other, moved)  # not retracted: to another organisation, the unknown id's answer
    assert r.status_code == 404 and _comparable(r.json()) == _comparable(unknown.json()), r.text

    retraction = await calls.retract(trust, moved)
    assert retraction.status_code == 200, retraction.text
    r = await calls.reverse(other, moved)
    assert r.status_code == 404 and _comparable(r.json()) == _comparable(unknown.json()), r.text
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 1001}):
        r = await calls.reverse(trust, moved, body)
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["reason"], (body, r.text)

    r = await calls.reverse(trust, moved)
    assert r.status_code == 200, r.text
    first = r.json()
    assert set(first) == _promised_200_fields()
    assert (first["status"], first["duplicate"], first["change_id"]) == ("reinstated", False, moved)
    assert (first["retraction_event_id"], first["retracted_at"], first["retracted_by"]) == (
        retraction.json()["event_id"], retraction.json()["retracted_at"], "RNU")  # the retraction reversed
    r = await calls.reverse(trust, moved, {"reason": "asked again"})
    assert r.status_code == 200 and r.json() == {**first, "duplicate": True}, r.text

    # Sent again since a retraction: refused, the resend named by its ids only.
    detained = ids[0]
    assert (await calls.retract(trust, detained)).status_code == 200
    r = await calls.post(trust, "/v1/register-changes", {**changes[0], "source_message_id": "rr37-1-again"})
    assert r.status_code == 202, r.text
    resend = r.json()["change_id"]
    r = await calls.reverse(trust, detained)
    assert r.status_code == 409 and _kind(r) == "sent-again", r.text
    assert [e["field"] for e in r.json()["errors"]] == ["change_id"]
    assert r.json()["standing"] == [{"change_id": resend, "source_message_id": "rr37-1-again"}]
    assert changes[0]["person"]["nhs_number"] not in r.text
    assert _promised_codes() == {200, 404, 409, 422}  # each one answered above


async def test_a_case_withdrawn_since_the_retraction_is_the_rows_third_409(app_hub) -> None:  # noqa: ANN001
    """"a transfer or dispute case of the person withdrawn or reopened since the retraction: `409` naming
    `change_id` (resend or correct by hand)"."""
    calls, hub = _Calls(app_hub), app_hub.hub
    operator = (await add_client(hub.engine, "Operator", "HUB", "hub-operator", ["hub:admin"]))[1]
    last = ""
    for change in materialise(late_correction_history(), "rr37-case", seed=3737):
        r = await calls.post(operator, "/v1/register-changes", change)
        assert r.status_code == 202, r.text
        last = r.json()["change_id"]
    await _drain(hub)
    assert (await calls.retract(operator, last)).status_code == 200
    await _drain(hub)
    r = await calls.reverse(operator, last)
    assert r.status_code == 409 and [e["field"] for e in r.json()["errors"]] == ["change_id"], r.text
    assert "withdrawn or reopened" in r.json()["detail"] and "by hand" in r.json()["detail"]


async def test_who_reversed_what_is_audited_and_traced_as_the_readme_says(app_hub) -> None:  # noqa: ANN001
    """"the operator's reversal of a retraction of a change another organisation recorded also as an
    operator action `register-change-reinstate`" (whoever made the retraction: here the operator itself);
    the trace's `reinstated` stage: who, when, its correlation id and event id (which find it), the
    retraction it reversed, never the reason; retracted again, a retraction asked again answers the
    standing one (not the first), and a reversal asked again is a new reversal, not the first's answer."""
    calls, hub = _Calls(app_hub), app_hub.hub
    operator = (await add_client(hub.engine, "Operator", "HUB", "hub-operator", ["hub:admin"]))[1]
    change = detention_to_move_scenario(random.Random(38), "rr37-op", date(2025, 1, 6))[0]
    r = await calls.post(app_hub.keys["trust"], "/v1/register-changes", change)
    assert r.status_code == 202, r.text
    change_id = r.json()["change_id"]
    retraction = await calls.retract(operator, change_id)
    assert retraction.status_code == 200, retraction.text
    reason = "the operator retracted the wrong change id"
    first = await calls.reverse(operator, change_id, {"reason": reason})
    assert first.status_code == 200 and first.json()["reinstated_by"] == "HUB", first.text
    async with hub.engine.connect() as conn:
        actions = [tuple(a) for a in (await conn.execute(
            select(operator_actions.c.action, operator_actions.c.target)
            .where(operator_actions.c.action.like("register-change-%"))
            .order_by(operator_actions.c.action_id))).all()]
    assert actions == [("register-change-retract", change_id), ("register-change-reinstate", change_id)]

    r = await app_hub.http.get("/v1/ops/trace", headers={"X-API-Key": operator},
                               params={"correlation_id": first.json()["correlation_id"]})
    assert r.status_code == 200, r.text
    stages = [s for s in r.json()["timeline"] if s["stage"] == "reinstated"]
    assert len(stages) == 1 and _instant(stages[0].pop("at")) == _instant(first.json()["reinstated_at"])
    assert stages == [{"stage": "reinstated", "change_id": change_id, "reinstated_by": "HUB",
                       "source": stages[0]["source"],
                       "correlation_id": first.json()["correlation_id"], "event_id": first.json()["event_id"],
                       "retraction_event_id": retraction.json()["event_id"]}]
    assert reason not in r.text and "wrong patient" not in r.text

    second = await calls.retract(operator, change_id)  # retracted again: a new retraction, then its answer
    assert second.status_code == 200 and second.json()["duplicate"] is False, second.text
    assert second.json()["event_id"] != retraction.json()["event_id"]
    r = await calls.retract(operator, change_id)
    assert r.status_code == 200 and r.json() == {**second.json(), "duplicate": True}, r.text
    again = await calls.reverse(operator, change_id, {"reason": reason})
    assert again.status_code == 200 and again.json()["duplicate"] is False, again.text
    assert again.json()["event_id"] != first.json()["event_id"]


async def test_the_openapi_document_lists_the_rows_codes_and_fields(app_hub) -> None:  # noqa: ANN001
    doc = (await app_hub.http.get("/openapi.json")).json()
    operation = doc["paths"][ROUTE]["post"]
    assert _promised_codes() <= {int(code) for code in operation["responses"]}
    assert "sent-again" in operation["responses"]["409"]["description"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert set(schema["required"]) == set(schema["properties"]) == _promised_200_fields()


def _restating_table() -> dict[str, tuple[str, ...] | None]:
    """The section's table "Change type | Identifying facts": each type and the facts it names (None:
    the whole change)."""
    lines = README.split("| Change type | Identifying facts", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    out: dict[str, tuple[str, ...] | None] = {}
    for line in lines:
        types, facts = (cell.strip() for cell in line.strip("|").split("|"))
        named: tuple[str, ...] | None
        if facts.startswith("the whole change"):
            named = None
        elif facts.startswith("none"):
            named = ()
        else:
            names = re.findall(r"`([a-z_]+)`", facts)
            if "the dispute's" in facts:
                names = [f"dispute.{n}" for n in names]
            if facts.startswith("the hospital") and "hospital_ods" not in names:
                names.append("hospital_ods")
            named = tuple(sorted(names))
        for t in re.findall(r"`([a-z0-9-]+)`", types):
            assert t not in out, t
            out[t] = named
    return out


def test_the_sections_identifying_facts_are_restates_own() -> None:
    """Every change type once, with the facts hub.domain.retraction.restates compares for it."""
    assert _restating_table() == {t.value: (None if f is None else tuple(sorted(f)))
                                  for t, f in RESTATING_FACTS.items()}
    assert {t.value for t in ChangeType} == set(RESTATING_FACTS)


# -- the successor warnings ----------------------------------------------------------------------------------------

def test_the_successor_warnings_the_readme_quotes_are_the_rules_words() -> None:
    quoted = re.findall(r'"((?:is not one of the councils|no council split awaits)[^"]*)"', README)
    assert len(quoted) == 2, quoted
    for quote in quoted:
        parts = [p.strip() for p in quote.split("...") if p.strip()]
        assert any(all(p in reason for p in parts) for reason in SUCCESSOR_UNCHANGED.values()), quote


# -- Kafka: the token's proxy --------------------------------------------------------------------------------------

def test_the_oauthbearer_proxy_settings_are_settings_and_in_the_example() -> None:
    example = (ROOT / "deploy" / "hub.env.example").read_text(encoding="utf-8")
    fields = Settings.model_fields
    for name in ("S117_KAFKA_SASL_OAUTHBEARER_PROXY", "S117_KAFKA_OUTBOUND_SASL_OAUTHBEARER_PROXY"):
        assert name.removeprefix("S117_").lower() in fields, name
        assert re.search(rf"^#?{name}=", example, re.MULTILINE), name
    assert "`S117_KAFKA_SASL_OAUTHBEARER_PROXY`" in README
    # "the same nineteen for the outbound cluster": its own settings, bootstrap aside.
    outbound = [f for f in fields if f.startswith("kafka_outbound_") and f != "kafka_outbound_bootstrap"]
    assert "the same nineteen" in README and len(outbound) == 19, outbound


# -- the module paths the README names ----------------------------------------------------------------------------

_NOT_PATHS = {"tests/servers.one_at_a_time"}  # a function of tests/servers


def test_every_module_path_the_readme_names_exists() -> None:
    named = {p.rstrip(".,:;)") for p in re.findall(r"\b(?:hub|tests|adapters|deploy|contracts|schemas)/[\w./-]+",
                                                   README)}
    missing = sorted(p for p in named - _NOT_PATHS if not p.startswith("hub/v1/") and not (ROOT / p).exists())
    assert missing == []


@pytest.mark.parametrize("module", ["hub/unretractions.py", "hub/domain/stay_bounds.py", "hub/bus/kafka_oauth.py",
                                    "tests/servers/http_proxy.py", "tests/servers/token_endpoint.py"])
def test_each_module_this_session_added_is_named(module: str) -> None:
    assert f"{module}" in README, module
