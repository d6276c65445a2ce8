"""The dispatcher's event messages as JSON bytes, the parts its recipients share serialised once.

`EventMessages(...).render(...)` gives exactly the bytes of
``orjson.dumps(bundle)`` for the ``bundle`` that ``build_event_message`` (with
``add_task``, hub/workflows/fhir_task.py) makes from the same arguments, but
the dispatcher sends one message per recipient, several for one register
change (the event's recipients, then each whose position changed), all of one
status, change and person: the Patient, Encounter and EpisodeOfCare (but for
their ids and references), the profiles, codings and the sender are built and
serialised once an `EventMessages` (once per agreement's field groups), and a
recipient's message is those bytes joined around its own ids, destination,
event and position. Building each message's nested dicts, serialising them
and freeing them was about a sixth of the back process's CPU at one client
(bench/JOURNAL.md, "Eighteenth session"); tests/unit/test_fhir_message_json.py
holds the two equal.

Everything here is ASCII ids and hub URLs joined with `orjson.dumps` of
whatever came from outside, so the escaping is orjson's own.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, Final

import orjson

from hub.domain.model import DomainEvent, EventType, Org, RegisterChange, S117Status
from hub.fhir.messages import (
    EVENT_DISPLAYS,
    EXPLANATIONS,
    FIELD_GROUPS,
    HUB_SENDER_ID,
    LEGAL_STATUS,
    PatientDetails,
    _encounter_parts,
    _entry_uuids_ascii,
    _episode_extensions,
    _episode_middle,
    _episode_tail,
    _event_explanation,
    _org_endpoint,
    _org_ref,
    _patient_fields,
    _position_params,
    _position_uuid,
    _status_explanations,
    _urls,
)
from hub.fhir.namespaces import DEFAULT_NAMESPACES, Namespaces
from hub.workflows.fhir_task import task_entry

__all__ = ["EventMessages"]

_dumps: Final = orjson.dumps


def _inner(obj: dict[str, Any]) -> bytes:
    """A dict's members as JSON without the braces (b"" if it has none)."""
    return _dumps(obj)[1:-1]


class EventMessages:
    """The messages of one status, change and person (one bus message's handling).

    Made for one (status, change, patient, ...) and never reused for another:
    what it serialised is kept by field groups, not checked against the
    arguments again.
    """

    __slots__ = ("_status", "_change", "_patient", "_legal_status_display", "_hospital_ods", "_ns", "_urls",
                 "_metas", "_event_occurred", "_sender_source", "_parts", "_summaries", "_codings",
                 "_destinations", "_positions")

    def __init__(self, *, status: S117Status, change: RegisterChange, patient: PatientDetails,
                 source_endpoint: str, legal_status_display: str | None, sender: Org | None = None,
                 hospital_ods: str | None = None, ns: Namespaces = DEFAULT_NAMESPACES) -> None:
        self._status, self._change, self._patient = status, change, patient
        self._legal_status_display, self._hospital_ods, self._ns = legal_status_display, hospital_ods, ns
        # What does not depend on the status (the base's pieces, the event codings, the recipients'
        # destinations, the hub as sender) is kept per base, for every renderer (one a status).
        shared = _shared(ns)
        self._urls, self._metas, self._event_occurred = shared.urls, shared.metas, shared.event_occurred
        self._codings, self._destinations = shared.codings, shared.destinations
        if sender is not None:
            self._sender_source = _sender_source(sender, source_endpoint, ns)
        elif source_endpoint in shared.sources:
            self._sender_source = shared.sources[source_endpoint]
        else:
            if len(shared.sources) >= _KEPT:
                shared.sources.clear()
            self._sender_source = shared.sources[source_endpoint] = _sender_source(None, source_endpoint, ns)
        self._parts: dict[frozenset[str], Any] = {}  # field groups -> `_parts_for`
        self._summaries: dict[str, bytes] = {}  # an event's summary -> its explanation's JSON
        self._positions: dict[int, tuple[dict[str, Any], bytes]] = {}  # id(view) -> (the view, its parameters)

    def serves(self, status: S117Status, change: RegisterChange, patient: PatientDetails,
               legal_status_display: str | None) -> bool:
        """Whether this was made of these very objects (and this display): a
        caller may keep it for its next message only then."""
        return (status is self._status and change is self._change and patient is self._patient
                and legal_status_display == self._legal_status_display)

    def render(self, *, event: DomainEvent, message_id: str, sent_at: datetime, recipient: Org,
               include: frozenset[str], destination_endpoint: str | None = None,
               position: dict[str, Any] | None = None, version: int | None = None,
               supersedes: str | None = None, reason: str | None = None) -> bytes:
        """``orjson.dumps`` of ``build_event_message(...)`` with the event's Task
        (``add_task(bundle, event.details, include)``), the other arguments this
        object's.

        A message a recipient: its own pieces are formatted with ``%`` where
        that gives orjson's bytes (the ids, the version, the dates and a UTC
        ``sent_at``: ASCII digits and hex that JSON never escapes), not one
        call each, and everything is joined once (bench/JOURNAL.md,
        "Twenty-seventh session: the dispatcher's calls an event")."""
        if not include <= FIELD_GROUPS:
            raise ValueError(f"unknown field group(s) {sorted(include - FIELD_GROUPS)}; known: {sorted(FIELD_GROUPS)}")
        tz = sent_at.tzinfo
        if tz is not UTC and (tz is None or sent_at.utcoffset() is None):
            raise ValueError("sent_at must be timezone-aware (FHIR instant)")
        if position is not None and version is None:
            raise ValueError("a position needs its version")
        metas = self._metas
        # (header, patient, encounter, episode), as bytes; as text only for a Task
        h_id, p_id, e_id, ep_id = _entry_uuids_ascii(message_id)
        # (What is kept is read with `in` and `[]`, not `get`: no call a message.)
        if include in self._parts:
            parts = self._parts[include]
        else:
            parts = self._parts[include] = self._parts_for(include)
        patient_inner, encounter, plain, explained, episode_tail = parts
        # The message's pieces in order, joined once: the Bundle and its MessageHeader up to the
        # focus (`head`), the focus' references, then the entries (`body`).
        focus: list[bytes] = [b'{"reference":"urn:uuid:', ep_id, b'"}']
        body: list[bytes] = [
            b']}},{"fullUrl":"urn:uuid:', p_id, b'","resource":{"resourceType":"Patient","id":"', p_id, b'",',
            patient_inner, b"}"]

        # --- Encounter (group "legal-status", if there is a detention to tell) ---
        if encounter is not None:
            body += (b'},{"fullUrl":"urn:uuid:', e_id, b'","resource":{"resourceType":"Encounter","id":"', e_id,
                     b'",', encounter[0], b',"subject":{"reference":"urn:uuid:', p_id,
                     b'"},"episodeOfCare":[{"reference":"urn:uuid:', ep_id, b'"}]', encounter[1])
            focus += (b',{"reference":"urn:uuid:', e_id, b'"}')

        # --- EpisodeOfCare: the event's explanation between the shared parts ---
        body += (b'},{"fullUrl":"urn:uuid:', ep_id, b'","resource":{"resourceType":"EpisodeOfCare","id":"', ep_id)
        summary = event.summary if explained is not None else None
        if summary:
            if summary in self._summaries:
                said = self._summaries[summary]
            else:
                said = self._summaries[summary] = _dumps(_event_explanation(event, self._urls.determination)[0])
            body += (explained[0], said, explained[1])
        else:
            body += plain
        body += (b'"reference":"urn:uuid:', p_id, b'"}', episode_tail)

        # --- the recipient's position ----------------------------------------
        if position is not None:
            params_id = _position_uuid(message_id).encode()
            focus += (b',{"reference":"urn:uuid:', params_id, b'"}')
            # `position_parameters`: the version, what it supersedes and why, then the position (kept by the
            # view's identity: a recipient's view is one object for the person's messages in a batch, never changed).
            held = self._positions.get(id(position))
            if held is None or held[0] is not position:
                # The parameters after the version and so on: the list's JSON less its "[" (orjson writes a
                # list as its items' JSON between commas), one call rather than one an item.
                params = _position_params(position)
                held = self._positions[id(position)] = (position, b"," + _dumps(params)[1:] if params else b"]")
            body += (b'},{"fullUrl":"urn:uuid:', params_id, b'","resource":{"resourceType":"Parameters","id":"',
                     params_id, b'","parameter":[{"name":"version","valueInteger":',
                     b"%d" % version if type(version) is int else _dumps(version), b"}")
            if supersedes:
                body += (b',{"name":"supersedes","valueString":', _dumps(supersedes), b"}")
            if reason:
                body += (b',{"name":"reason","valueString":', _dumps(reason), b"}")
            body += (held[1], metas["Parameters"])

        # --- the event's Task (transfer / dispute events: `task_entry` has none without a "task") ---
        details = event.details
        if details and "task" in details:
            found = task_entry(message_id, details, include, "urn:uuid:" + ep_id.decode(),
                               "urn:uuid:" + p_id.decode(), self._ns)
            if found is not None:
                full_url, task = found
                focus += (b",", _dumps({"reference": full_url}))
                body += (b"},", _dumps({"fullUrl": full_url, "resource": task})[:-1])  # its brace closed as the others

        # --- the Bundle and its MessageHeader, first of the entries -------------
        if tz is UTC:  # `isoformat` less its "+00:00", "Z" (the usual FHIR spelling of UTC, as R4B renders it)
            timestamp = (b'"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"' % (
                sent_at.year, sent_at.month, sent_at.day, sent_at.hour, sent_at.minute, sent_at.second,
                sent_at.microsecond) if sent_at.microsecond else b'"%04d-%02d-%02dT%02d:%02d:%02dZ"' % (
                sent_at.year, sent_at.month, sent_at.day, sent_at.hour, sent_at.minute, sent_at.second))
        else:
            text = sent_at.isoformat()
            if text.endswith("+00:00"):
                text = text[:-6] + "Z"
            timestamp = _dumps(text)
        occurred = event.occurred_on
        return b"".join([
            b'{"resourceType":"Bundle","id":', _dumps(message_id), metas["Bundle"], timestamp,
            b',"entry":[{"fullUrl":"urn:uuid:', h_id, b'","resource":{"resourceType":"MessageHeader","id":"', h_id,
            metas["MessageHeader"], self._event_occurred,
            b"%04d-%02d-%02d" % (occurred.year, occurred.month, occurred.day) if type(occurred) is date
            else occurred.isoformat().encode(),
            b'"}],"eventCoding":', self._codings[kind] if (kind := event.event_type) in self._codings
            else self._coding(kind),
            b',"destination":', self._destinations[to] if (to := (recipient.code, recipient.name, recipient.kind,
                                                                 destination_endpoint)) in self._destinations
            else self._destination(recipient, destination_endpoint), self._sender_source,
            *focus, *body, b"}]}"])

    # --- the shared parts, serialised at their first use -------------------

    def _parts_for(self, include: frozenset[str]) -> tuple[bytes, tuple[bytes, bytes] | None, tuple[bytes, bytes],
                                                           tuple[bytes, bytes] | None, bytes]:
        """What the messages with these field groups share: the Patient's JSON
        after its id; the Encounter's around its references (None if none);
        the EpisodeOfCare's from its id to its patient's reference, without the
        event's explanation and in two pieces around it (None without group
        "explanations"); and the EpisodeOfCare's after the reference."""
        status, urls = self._status, self._urls
        patient_inner = _inner(_patient_fields(status, self._patient, include, self._ns, urls.profiles))
        encounter = None
        if LEGAL_STATUS in include:
            found = _encounter_parts(status, self._change, self._legal_status_display, self._hospital_ods,
                                     urls.profiles)
            if found is not None:
                encounter = (_inner(found[0]), (b"," + _inner(found[1]) if found[1] else b"") + b"}")
        meta = b'","meta":' + _dumps({"profile": [urls.profiles["EpisodeOfCare"]]})
        before = [_dumps(x) for x in _episode_extensions(status, include, urls)]
        after = [_dumps(x) for x in _status_explanations(status, urls.determination)] \
            if EXPLANATIONS in include else []
        rest = b"," + _inner(_episode_middle(status)) + b',"patient":{'
        extensions = before + after
        plain = (meta + (b',"extension":[' + b",".join(extensions) + b"]" if extensions else b""), rest)
        explained = (meta + b',"extension":[' + b"".join(x + b"," for x in before),
                     b"".join(b"," + x for x in after) + b"]" + rest) if EXPLANATIONS in include else None
        tail = _inner(_episode_tail(status, include))
        return patient_inner, encounter, plain, explained, (b"," + tail if tail else b"") + b"}"

    def _coding(self, event_type: EventType) -> bytes:
        out = self._codings.get(event_type)
        if out is None:
            out = self._codings[event_type] = _dumps({"system": self._ns.event_codesystem, "code": event_type.value,
                                                      "display": EVENT_DISPLAYS[event_type]})
        return out

    def _destination(self, recipient: Org, endpoint: str | None) -> bytes:
        key = (recipient.code, recipient.name, recipient.kind, endpoint)
        out = self._destinations.get(key)
        if out is None:
            if len(self._destinations) >= _KEPT:  # shared by the base's renderers: bounded
                self._destinations.clear()
            out = self._destinations[key] = _dumps([{
                "name": recipient.name, "endpoint": endpoint or _org_endpoint(recipient),
                "receiver": _org_ref(recipient)}])
        return out


_KEPT: Final = 4_096  # destinations (and sources) kept per base, emptied when full


def _sender_source(sender: Org | None, source_endpoint: str, ns: Namespaces) -> bytes:
    """The MessageHeader's sender and source, up to its focus."""
    return b"".join((b',"sender":', _dumps(_org_ref(sender) if sender is not None else {
        "identifier": {"system": ns.system_id_system, "value": HUB_SENDER_ID}, "display": "S117 Hub"}),
        b',"source":', _dumps({"name": "S117 Hub", "endpoint": source_endpoint}), b',"focus":['))


class _Shared:
    """What every message under one canonical base shares, whatever its status, kept for all the
    renderers (one a status: a new one for most bus messages): the base's URLs and pieces, each
    event type's coding, each recipient's destination (by its code, name, kind and endpoint), the
    hub's sender and source (by the source endpoint). None of it depends on a person."""

    __slots__ = ("urls", "metas", "event_occurred", "codings", "destinations", "sources")

    def __init__(self, ns: Namespaces) -> None:
        self.urls = _urls(ns)
        self.metas, self.event_occurred = _ns_parts(ns)
        self.codings: dict[EventType, bytes] = {}
        # (the recipient's code, name and kind, the endpoint) -> the destination's JSON: an `Org`'s own
        # hash is a Python call (a frozen dataclass's), its fields' tuple's none
        self.destinations: dict[tuple[str, str, str, str | None], bytes] = {}
        self.sources: dict[str, bytes] = {}  # the source endpoint -> `_sender_source` (the hub as sender)


@lru_cache(maxsize=64)  # a hub has one base; tests make many
def _shared(ns: Namespaces) -> _Shared:
    return _Shared(ns)


@lru_cache(maxsize=64)  # a hub has one base; tests make many
def _ns_parts(ns: Namespaces) -> tuple[dict[str, bytes], bytes]:
    """The pieces of JSON around each resource type's ``meta`` (as `render` joins
    them), and the event-occurred extension's up to its date."""
    urls = _urls(ns)
    meta = {t: _dumps({"profile": [p]}) for t, p in urls.profiles.items()}
    return ({"Bundle": b',"meta":' + meta["Bundle"] + b',"type":"message","timestamp":',
             "MessageHeader": b'","meta":' + meta["MessageHeader"] + b',"extension":[{"url":',
             "Parameters": b',"meta":' + meta["Parameters"] + b"}"},
            _dumps(urls.event_occurred) + b',"valueDate":"')
