"""The dispatcher's message renderer (hub/fhir/message_json.py) gives the very
bytes of ``orjson.dumps(build_event_message(...))`` with ``add_task``, however
the field groups, events, recipients and positions vary, and one renderer
serves many recipients of one status without mixing them up."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from hub.domain.model import Determination, EventType, Org
from hub.fhir import examples
from hub.fhir.message_json import EventMessages
from hub.fhir.messages import FIELD_GROUPS, PatientDetails, build_event_message
from hub.fhir.namespaces import DEFAULT_NAMESPACES, Namespaces
from hub.workflows.fhir_task import add_task

CASES = examples.golden_cases()
TASK = orjson.dumps({"resourceType": "Task", "id": "example", "status": "requested", "intent": "order",
                     "identifier": [{"value": "case-1"}], "meta": {"versionId": "1"},
                     "description": "council responsibility moves \"now\" \u2014 \u00e9"}).decode()
SUBSETS = [frozenset(c) for n in range(len(FIELD_GROUPS) + 1)
           for c in itertools.combinations(sorted(FIELD_GROUPS), n)]
SHARED = ("status", "change", "patient", "source_endpoint", "legal_status_display", "sender", "hospital_ods", "ns")


def _expected(kwargs: dict[str, Any]) -> bytes:
    """What the dispatcher sent before the renderer: the dicts, their Task, serialised."""
    bundle = build_event_message(**kwargs)
    add_task(bundle, kwargs["event"].details, kwargs["include"], ns=kwargs.get("ns", DEFAULT_NAMESPACES))
    return orjson.dumps(bundle)


def _render(messages: EventMessages, kwargs: dict[str, Any]) -> bytes:
    return messages.render(**{k: v for k, v in kwargs.items() if k not in SHARED})


def _messages(kwargs: dict[str, Any]) -> EventMessages:
    return EventMessages(**{k: kwargs[k] for k in SHARED if k in kwargs})


def _variants() -> list[dict[str, Any]]:
    """Each golden case with and without a position, a Task, a sender, a destination endpoint."""
    position = {"roles": ["responsible-council"], "entitled": True, "entitlement_start": "2024-03-31",
                "responsible_council": "E06000060", "reviews": [{"kind": "annual", "due_on": "2025-03-31"}],
                "disputes": [{"dispute_id": "d-1", "kind": "council"}]}
    out = []
    for name, kwargs in CASES.items():
        out.append(kwargs)
        out.append({**kwargs, "position": position, "version": 3, "supersedes": "ev-1", "reason": "it \"changed\""})
        event = dataclasses.replace(kwargs["event"], details={"task": TASK}, summary="")
        out.append({**kwargs, "event": event, "message_id": f"{name}-task", "position": position, "version": 1})
        out.append({**kwargs, "sender": Org("QU9", "An ICB \u00e9", "icb"), "destination_endpoint": "https://x/y",
                    "hospital_ods": "RNU",
                    "sent_at": datetime(2024, 1, 2, 3, 4, 5, 678, tzinfo=timezone(timedelta(hours=1)))})
    return out


@pytest.mark.parametrize("include", SUBSETS, ids=lambda s: "+".join(sorted(s)) or "none")
def test_every_field_group_set_gives_the_same_bytes_as_the_dicts(include: frozenset[str]) -> None:
    for kwargs in _variants():
        kwargs = {**kwargs, "include": include}
        assert _render(_messages(kwargs), kwargs) == _expected(kwargs), kwargs["message_id"]


def test_one_renderer_serves_many_recipients_events_and_field_groups_of_one_status() -> None:
    variants = [v for v in _variants() if v["status"] is CASES["entitlement-started-all-groups"]["status"]
                and "sender" not in v]
    assert len(variants) >= 6
    messages = _messages(variants[0])
    recipients = [examples.BUCKS_COUNCIL, examples.BOB_ICB, Org("E10000034", "Oxfordshire", "council")]
    events = [v["event"] for v in variants] + [dataclasses.replace(
        variants[0]["event"], event_type=EventType.NOTIFICATION_CORRECTED, occurred_on=date(2025, 5, 6),
        summary="Your position for this person changed: \u00e9.")]
    seen = set()
    for i, (event, recipient, include) in enumerate(itertools.product(events, recipients, SUBSETS[::7])):
        kwargs = {**variants[i % len(variants)], "event": event, "recipient": recipient, "include": include,
                  "message_id": f"m-{i}", "sent_at": datetime(2024, 3, 18, 9, 30, i % 60, tzinfo=UTC)}
        body = _render(messages, kwargs)
        assert body == _expected(kwargs)
        seen.add(body)
    assert len(seen) == i + 1  # every message its own


def test_blank_names_determinations_and_no_detention_render_alike() -> None:
    kwargs = CASES["entitlement-started-all-groups"]
    status = dataclasses.replace(
        kwargs["status"], qualifying_section_code=None, entitling_section_code=None, detention_start=None,
        entitling_detention_start=None, next_review=None, entitlement=Determination(None, "", None))
    change = dataclasses.replace(kwargs["change"], legal_status_code=None)
    for patient in (PatientDetails("9434765919", "", ""), PatientDetails("9434765919", "A", "", None, "OX1 1AA")):
        for include in (FIELD_GROUPS, frozenset()):
            k = {**kwargs, "status": status, "change": change, "patient": patient, "include": include}
            assert _render(_messages(k), k) == _expected(k)


def test_the_renderer_refuses_what_the_builder_refuses() -> None:
    kwargs = CASES["entitlement-started-all-groups"]
    messages = _messages(kwargs)
    with pytest.raises(ValueError, match="unknown field group"):
        _render(messages, {**kwargs, "include": frozenset({"funding"})})
    with pytest.raises(ValueError, match="timezone-aware"):
        _render(messages, {**kwargs, "sent_at": datetime(2024, 1, 1)})  # noqa: DTZ001
    with pytest.raises(ValueError, match="needs its version"):
        _render(messages, {**kwargs, "position": {"roles": []}})


def test_a_hub_under_another_base_renders_its_own_urls() -> None:
    ns = Namespaces.for_base("https://other.example.net/s117")
    for kwargs in _variants():
        kwargs = {**kwargs, "ns": ns, "source_endpoint": f"{ns.fhir_base}/messages"}
        body = _render(_messages(kwargs), kwargs)
        assert body == _expected(kwargs)
        assert b"https://other.example.net/s117/fhir/StructureDefinition/S117-MessageBundle" in body
        assert DEFAULT_NAMESPACES.fhir_base.encode() not in body


def test_a_renderer_serves_only_the_objects_it_was_made_of() -> None:
    kwargs = CASES["entitlement-started-all-groups"]
    messages = _messages(kwargs)
    status, change, patient = kwargs["status"], kwargs["change"], kwargs["patient"]
    display = kwargs["legal_status_display"]
    assert messages.serves(status, change, patient, display)
    assert not messages.serves(dataclasses.replace(status), change, patient, display)  # equal, not the same
    assert not messages.serves(status, dataclasses.replace(change), patient, display)
    assert not messages.serves(status, change, dataclasses.replace(patient), display)
    assert not messages.serves(status, change, patient, "another display")


def test_a_position_is_read_afresh_when_it_is_another_object() -> None:
    kwargs = {**CASES["entitlement-started-with-position"], "include": FIELD_GROUPS}
    messages = _messages(kwargs)
    first = {"roles": ["responsible-council"], "entitled": True}
    second = {"roles": ["coordinating-council"], "entitled": False}
    for i, position in enumerate((first, second, first, dict(second, entitled=True))):
        k = {**kwargs, "position": position, "version": i + 1, "message_id": f"p-{i}"}
        assert _render(messages, k) == _expected(k)


def test_a_position_with_no_parameters_and_one_with_one_render_alike() -> None:
    """The position's parameters after the version are the list's JSON less its "[" (`render`): a body
    told it is not involved (no roles, nothing else) has none, and the bytes close the list at once."""
    kwargs = {**CASES["entitlement-started-with-position"], "include": FIELD_GROUPS}
    messages = _messages(kwargs)
    for i, position in enumerate(({"roles": []}, {}, {"roles": ["coordinating-council"]}, {"entitled": False})):
        for supersedes, reason in ((None, None), ("ev-0", "not \"involved\"")):
            k = {**kwargs, "position": position, "version": i + 1, "supersedes": supersedes, "reason": reason,
                 "message_id": f"n-{i}-{supersedes}"}
            assert _render(messages, k) == _expected(k)


def test_times_dates_versions_and_details_of_any_kind_render_alike() -> None:
    """`render` formats a UTC `sent_at`, the event's date and the version with `%` (no call each) and
    asks for a Task only when the details name one: the bytes stay the dicts' for every other kind too
    (another zone, a zero offset that is not `UTC`, whole seconds, an old year, a datetime where a date
    is expected, a large version, details with an empty or no Task)."""
    from zoneinfo import ZoneInfo

    kwargs = {**CASES["entitlement-started-with-position"], "include": FIELD_GROUPS}
    messages = _messages(kwargs)
    times = [datetime(2024, 3, 18, 9, 30, 5, 123456, tzinfo=UTC), datetime(2024, 3, 18, 9, 30, 5, tzinfo=UTC),
             datetime(2024, 3, 18, 0, 0, 0, 1, tzinfo=UTC), datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
             datetime(2024, 3, 18, 9, 30, 5, 7, tzinfo=timezone(timedelta(0))),
             datetime(2024, 3, 18, 9, 30, 5, tzinfo=ZoneInfo("UTC")),
             datetime(2024, 3, 18, 9, 30, 5, 500, tzinfo=timezone(timedelta(hours=5, minutes=30))),
             datetime(2024, 3, 18, 9, 30, 5, tzinfo=ZoneInfo("Europe/London"))]
    occurred = [date(2024, 3, 18), date(12, 1, 2), datetime(2024, 3, 18, 1, 2, 3)]
    details: list[dict[str, str]] = [{}, {"reason": "moved"}, {"task": ""}, {"task": TASK, "reason": "x"}]
    for i, (sent_at, on, detail, version) in enumerate(itertools.product(times, occurred, details, (1, 10**12))):
        event = dataclasses.replace(kwargs["event"], occurred_on=on, details=detail)
        k = {**kwargs, "event": event, "sent_at": sent_at, "version": version, "message_id": f"t-{i}",
             "position": {"roles": ["responsible-council"], "entitled": True}}
        assert _render(messages, k) == _expected(k), (sent_at, on, detail, version)


def _calls(fn: Any) -> int:
    """The Python and built-in function calls `fn()` makes (what cProfile counts), not timed."""
    import sys

    counted = 0

    def profile(_frame: Any, event: str, _arg: Any) -> None:
        nonlocal counted
        if event in ("call", "c_call"):
            counted += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return counted


def test_a_recipients_message_takes_few_calls_once_its_status_parts_are_made() -> None:
    """The dispatcher renders a message a recipient (about two an event): its ids, version, dates and
    `sent_at` formatted by `%`, one join, no Task asked for when the details name none, what is kept read with `in`: 14 calls a
    message, 35 before (bench/JOURNAL.md, "Twenty-seventh session: the dispatcher's calls an event")."""
    kwargs = {**CASES["entitlement-started-with-position"], "include": FIELD_GROUPS}
    messages = _messages(kwargs)
    event = dataclasses.replace(kwargs["event"], details={"reason": "moved"})
    position = {"roles": ["responsible-council"], "entitled": True}
    k = {**kwargs, "event": event, "position": position, "version": 2, "sent_at": datetime.now(UTC)}
    _render(messages, {**k, "message_id": "c-0"})  # the status's parts and the position's parameters, made once
    args = {name: v for name, v in k.items() if name not in SHARED} | {"message_id": "c-1"}
    assert _calls(lambda: messages.render(**args)) <= 17  # 14 (and the lambda's)


def test_recipients_alike_but_for_a_name_kind_or_endpoint_each_have_their_own_destination() -> None:
    """A destination is kept by the recipient's code, name and kind and the endpoint (not by the `Org`,
    whose hash is a call): any of them differing is another destination."""
    kwargs = {**CASES["entitlement-started-all-groups"], "include": FIELD_GROUPS}
    messages = _messages(kwargs)
    recipients = [(Org("E06000060", "Bucks", "council"), None), (Org("E06000060", "Bucks", "council"), None),
                  (Org("E06000060", "Buckinghamshire", "council"), None), (Org("E06000060", "Bucks", "icb"), None),
                  (Org("E06000060", "Bucks", "council"), "https://x/y"), (Org("E06000061", "Bucks", "council"), None)]
    for i, (recipient, endpoint) in enumerate(recipients):
        k = {**kwargs, "recipient": recipient, "destination_endpoint": endpoint, "message_id": f"d-{i}"}
        assert _render(messages, k) == _expected(k)


def test_renderers_of_one_base_share_what_no_status_changes_and_stay_right() -> None:
    """A renderer is made for each status (most bus messages); the codings, destinations and the hub's
    sender and source are kept per base for all of them (none names a person): renderers of two
    statuses share them and each still renders the dicts' bytes; another base, or a sender of
    another's, has its own; the kept destinations are bounded (emptied when full, then made again)."""
    import hub.fhir.message_json as message_json

    one, other = CASES["entitlement-started-all-groups"], CASES["responsibility-transferred"]
    first, second = _messages(one), _messages(other)
    assert first._destinations is second._destinations and first._codings is second._codings
    assert first._sender_source is second._sender_source
    elsewhere = _messages({**one, "ns": Namespaces.for_base("https://other.example.net/s117")})
    assert elsewhere._destinations is not first._destinations
    assert _messages({**one, "sender": Org("QU9", "An ICB", "icb")})._sender_source != first._sender_source
    bound = message_json._KEPT
    try:
        message_json._KEPT = 3
        for i, kwargs in enumerate([one, other] * 4):
            messages = first if kwargs is one else second
            k = {**kwargs, "include": FIELD_GROUPS, "message_id": f"s-{i}",
                 "recipient": Org(f"E0600006{i}", f"Council {i}", "council")}
            assert _render(messages, k) == _expected(k)
            assert len(first._destinations) <= 3
    finally:
        message_json._KEPT = bound
