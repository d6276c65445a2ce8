"""Name-based ids built without the UUID object (hub/ids.py) are uuid5 of
the same namespace and name, exactly: event ids, per-recipient message ids,
view event ids, organisations' endpoints."""

import uuid

from hypothesis import given, strategies as st

from hub.delivery.dispatcher import MESSAGE_NAMESPACE, VIEW_EVENT_NAMESPACE, message_id_for, view_event_id_for
from hub.fhir.messages import _ORG_ENDPOINT_NS, _endpoint_of
from hub.ids import uuid5
from hub.ingest.service import EVENT_NAMESPACE, event_id_for


@given(st.text(max_size=60), st.integers(0, 20), st.text(max_size=40))
def test_event_ids_are_uuid5_of_change_index_and_type(change_id, index, event_type):
    assert event_id_for(change_id, index, event_type) == str(uuid.uuid5(EVENT_NAMESPACE, f"{change_id}/{index}/{event_type}"))


@given(st.uuids(), st.text(max_size=80))
def test_uuid5_is_the_standard_librarys(namespace, name):
    assert uuid5(namespace, name) == str(uuid.uuid5(namespace, name))


@given(st.text(max_size=40), st.text(max_size=12))
def test_message_view_and_endpoint_ids(event_id, org):
    assert message_id_for(event_id, org) == str(uuid.uuid5(MESSAGE_NAMESPACE, f"{event_id}/{org}"))
    assert view_event_id_for(event_id, org) == str(uuid.uuid5(VIEW_EVENT_NAMESPACE, f"{event_id}/{org}"))
    assert _endpoint_of("https://fhir.nhs.uk/Id/ods-organization-code", org) == \
        f"urn:uuid:{uuid.uuid5(_ORG_ENDPOINT_NS, 'https://fhir.nhs.uk/Id/ods-organization-code|' + org)}"


def test_uuid4_is_a_random_version_4_uuid_as_the_standard_library_writes_it(monkeypatch):
    from hub import ids

    seen = {ids.uuid4() for _ in range(2000)}
    assert len(seen) == 2000
    for u in seen:
        parsed = uuid.UUID(u)
        assert str(parsed) == u and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # The same bits as uuid.uuid4 given the same 16 random bytes.
    raw = bytes(range(200, 216))
    monkeypatch.setattr(ids.os, "urandom", lambda n: raw[:n])
    assert ids.uuid4() == str(uuid.UUID(bytes=raw, version=4))
