"""Hazard H-03 (docs/clinical-safety/hazard-log.yaml): a responsible body the hub could not determine is
said, never left to an absent element (which also means "not disclosed").

Through the app in-process (real SQLite, the dispatcher driven by hand, pull feeds as the subscribers):
a recipient whose agreement grants `responsibility` reads, in the person query and in every pushed
position (the S117-Position Parameters and the EpisodeOfCare), that no responsible council (or NHS
commissioner) is determined, why in words and a data-absent-reason code; a recipient without
`responsibility` sees nothing of it; a determined body reads as before."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hub.clients import add_client
from hub.domain.views import (COMMISSIONER_NOT_FOUND, COUNCIL_AWAITS_DISCHARGE_AREA, roles_of,
                              undetermined_bodies, view_of)
from hub.fhir import examples
from hub.fhir.messages import FIELD_GROUPS, build_event_message, read_position
from hub.sharing import SharingAgreements
from tests.support import detention

NHS = "9434765919"
OXON = "E10000025"  # Oxfordshire: the council of the hospital (RNU), coordinating
BOB_ICB = "QU9"
UNDETERMINED_EXT = "Extension-S117-ResponsibilityUndetermined"
COUNCIL_UNDETERMINED = {"role": "responsible-council", "absent_reason": "temp-unknown",
                        "reason": COUNCIL_AWAITS_DISCHARGE_AREA}


def _agreements(app_hub, oxon_groups: list[str]) -> None:  # noqa: ANN001
    """BOB ICB granted `responsibility` (not `explanations`: the words need no more); Oxfordshire as asked."""
    app_hub.hub.sharing.replace_grants(SharingAgreements.from_document({"agreements": [{
        "id": "DSA-TEST", "valid_from": "2024-04-01", "recipients": [
            {"org_code": BOB_ICB, "events": ["*"], "field_groups": ["identity", "responsibility"]},
            {"org_code": OXON, "events": ["*"], "field_groups": oxon_groups},
            {"org_code": "E06000060", "events": ["*"], "field_groups": ["identity", "responsibility"]},
            {"org_code": "RNU", "events": [], "field_groups": ["identity", "responsibility"]},
        ]}]}, frozenset(FIELD_GROUPS)))


async def _record(app_hub, changes: list[dict]) -> str:  # noqa: ANN001
    for change in changes:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json=change)
        assert r.status_code == 202, r.text
    return r.json()["person_id"]


async def _reader(app_hub, name: str, code: str, kind: str) -> tuple[dict, str]:  # noqa: ANN001
    """A body's key (s117:read) and its pull feed's id."""
    _, key = await add_client(app_hub.hub.engine, name, code, kind, ["subscriptions:write", "s117:read"])
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": key}, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    return {"X-API-Key": key}, r.json()["subscription_id"]


async def _dispatch(app_hub) -> None:  # noqa: ANN001
    while await app_hub.hub.dispatcher.run_once():
        pass


async def _messages(app_hub, headers: dict, feed: str) -> list[dict[str, Any]]:  # noqa: ANN001
    r = await app_hub.http.get(f"/v1/feeds/{feed}", headers=headers)
    assert r.status_code == 200, r.text
    return [i["message"] for i in r.json()["items"]]


def _latest(messages: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The position of the highest version and its message's EpisodeOfCare."""
    found = [(read_position(m), m) for m in messages]
    position, message = max(((p, m) for p, m in found if p is not None), key=lambda pm: pm[0].version)
    episode = next(e["resource"] for e in message["entry"] if e["resource"]["resourceType"] == "EpisodeOfCare")
    return position.view, episode


def _undetermined_exts(episode: dict[str, Any]) -> list[dict[str, Any]]:
    return [{p["url"]: p.get("valueCode", p.get("valueString")) for p in x["extension"]}
            for x in episode.get("extension", []) if x["url"].endswith(UNDETERMINED_EXT)]


def _no_fixed_abode() -> list[dict]:
    detained, left = detention(NHS, "nfa")
    del detained["residence_la_gss"], detained["gp_practice_ods"]
    detained["no_fixed_abode"] = True  # no place of residence before the detention, no GP
    return [detained, left]


async def test_no_council_determined_is_said_to_a_body_granted_responsibility_in_the_query_and_pushed(app_hub):
    _agreements(app_hub, ["identity", "responsibility"])
    icb, icb_feed = await _reader(app_hub, "BOB ICB", BOB_ICB, "icb")
    oxon, oxon_feed = await _reader(app_hub, "Oxfordshire", OXON, "council")
    person_id = await _record(app_hub, _no_fixed_abode())
    await _dispatch(app_hub)

    # The person query: `responsible_council` null as before, and why it is null said beside it.
    for headers in (icb, oxon):
        status = (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=headers)).json()
        assert status["entitled"] is True and status["responsible_council"] is None, status
        assert status["responsibility_undetermined"] == [COUNCIL_UNDETERMINED]
    # Pushed: the position and the EpisodeOfCare say it; no managingOrganization, no body named in its place.
    for headers, feed in ((icb, icb_feed), (oxon, oxon_feed)):
        view, episode = _latest(await _messages(app_hub, headers, feed))
        assert "responsible_council" not in view
        assert view["responsibility_undetermined"] == [COUNCIL_UNDETERMINED]
        assert "managingOrganization" not in episode
        assert _undetermined_exts(episode) == [
            {"role": "responsible-council", "absentReason": "temp-unknown", "reason": COUNCIL_AWAITS_DISCHARGE_AREA}]
    # The coordinating council was told as the person became unowned: an event naming it coordinating.
    first = await _messages(app_hub, oxon, oxon_feed)
    assert read_position(first[0]).view["roles"] == ["coordinating-council"]
    # No org code, no date in the words (nothing a body without `explanations` may not read).
    assert OXON not in COUNCIL_AWAITS_DISCHARGE_AREA and not any(c.isdigit() for c in COUNCIL_AWAITS_DISCHARGE_AREA)

    # Settled (the person settles in Buckinghamshire after leaving hospital): the council is named, the
    # statement is gone from the next position (a receiver replaces the whole position).
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RiO", "source_message_id": "nfa-3", "change_type": "moved",
        "effective_date": "2025-05-01", "person": {"nhs_number": NHS}, "residence_la_gss": "E06000060"})
    assert r.status_code == 202, r.text
    await _dispatch(app_hub)
    view, episode = _latest(await _messages(app_hub, icb, icb_feed))
    assert view["responsible_council"] == "E06000060"
    assert "responsibility_undetermined" not in view and _undetermined_exts(episode) == []
    status = (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=icb)).json()
    assert status["responsibility_undetermined"] == []


async def test_a_body_without_responsibility_is_told_nothing_of_it(app_hub):
    """The field group governs the whole of it: the same person, the same day, two bodies."""
    _agreements(app_hub, ["identity"])  # Oxfordshire coordinates but may not see who is responsible
    icb, icb_feed = await _reader(app_hub, "BOB ICB", BOB_ICB, "icb")
    oxon, oxon_feed = await _reader(app_hub, "Oxfordshire", OXON, "council")
    person_id = await _record(app_hub, _no_fixed_abode())
    await _dispatch(app_hub)
    granted = (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=icb)).json()
    assert granted["responsibility_undetermined"] == [COUNCIL_UNDETERMINED]
    assert _latest(await _messages(app_hub, icb, icb_feed))[0]["responsibility_undetermined"] == [COUNCIL_UNDETERMINED]
    status = (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=oxon)).json()
    assert status["entitled"] is True
    assert not {"responsibility_undetermined", "responsible_council", "coordinating_council"} & set(status)
    messages = await _messages(app_hub, oxon, oxon_feed)
    assert messages, "the coordinating council is told of the person (its role)"
    view, episode = _latest(messages)
    assert view["roles"] == ["coordinating-council"]
    assert "responsibility_undetermined" not in view and _undetermined_exts(episode) == []
    text = json.dumps(messages)
    assert "responsibilityUndetermined" not in text and UNDETERMINED_EXT not in text
    assert COUNCIL_AWAITS_DISCHARGE_AREA not in text


async def test_a_determined_body_reads_as_before(app_hub):
    _agreements(app_hub, ["identity", "responsibility"])
    icb, icb_feed = await _reader(app_hub, "BOB ICB", BOB_ICB, "icb")
    person_id = await _record(app_hub, detention(NHS, "det"))  # Buckinghamshire, GP K82001 (BOB ICB)
    await _dispatch(app_hub)
    status = (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=icb)).json()
    assert status["responsible_council"]["org"]["code"] == "E06000060"
    assert status["responsible_commissioner"]["org"]["code"] == BOB_ICB
    assert status["responsibility_undetermined"] == []  # said: nothing undetermined
    view, episode = _latest(await _messages(app_hub, icb, icb_feed))
    assert view["responsible_council"] == "E06000060" and view["responsible_commissioner"] == BOB_ICB
    assert "responsibility_undetermined" not in view
    assert episode["managingOrganization"]["identifier"]["value"] == "E06000060"
    assert _undetermined_exts(episode) == []


def test_no_commissioner_determined_is_said_with_its_reason_and_not_without_responsibility():
    """An NHS commissioner the reference data cannot give (a GP practice, an area it maps to none: the
    ingest refuses such codes, so only reference data changed since can leave one undetermined)."""
    _, status, change = examples.entitlement_started()
    status = dataclasses.replace(status, responsible_commissioner=None)
    item = {"role": "responsible-commissioner", "absent_reason": "unknown", "reason": COMMISSIONER_NOT_FOUND}
    roles = roles_of(status)["E06000060"]
    assert view_of(status, roles, frozenset({"responsibility"}))["responsibility_undetermined"] == [item]
    assert "responsibility_undetermined" not in view_of(status, roles, frozenset({"identity"}))
    for include, said in ((frozenset({"responsibility"}), True), (frozenset(), False)):
        position = view_of(status, roles, include)
        bundle = build_event_message(**{**examples.golden_cases()["entitlement-started-with-position"],
                                        "status": status, "change": change, "include": include,
                                        "position": position})
        assert read_position(bundle).view == position  # the receiver reads back what was sent
        episode = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "EpisodeOfCare")
        assert _undetermined_exts(episode) == ([{"role": "responsible-commissioner", "absentReason": "unknown",
                                                 "reason": COMMISSIONER_NOT_FOUND}] if said else [])
        assert "ResponsibleCommissioner" not in json.dumps(bundle)
    # Not owed (not entitled, not detained under a qualifying section): nothing to say.
    ended = dataclasses.replace(status, entitled=False, responsible_council=None)
    assert undetermined_bodies(ended) == ()
