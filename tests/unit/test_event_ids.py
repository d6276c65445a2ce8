"""Name-based ids built without the UUID object (hub/ids.py) are uuid5 of
the same namespace and name, exactly: event ids, per-recipient message ids,
view event ids, organisations' endpoints; random ones (uuid4) are the
standard library's for the same random bytes; the keyed NHS-number index is
HMAC-SHA256's hex digest."""

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
    assert uuid5(namespace.bytes, name) == str(uuid.uuid5(namespace, name))  # the namespace's bytes taken once


@given(st.text(max_size=40), st.text(max_size=12))
def test_message_view_and_endpoint_ids(event_id, org):
    assert message_id_for(event_id, org) == str(uuid.uuid5(MESSAGE_NAMESPACE, f"{event_id}/{org}"))
    assert view_event_id_for(event_id, org) == str(uuid.uuid5(VIEW_EVENT_NAMESPACE, f"{event_id}/{org}"))
    assert _endpoint_of("https://fhir.nhs.uk/Id/ods-organization-code", org) == \
        f"urn:uuid:{uuid.uuid5(_ORG_ENDPOINT_NS, 'https://fhir.nhs.uk/Id/ods-organization-code|' + org)}"


@given(st.binary(min_size=16, max_size=16))
def test_uuid4_is_the_standard_librarys_for_the_same_random_bytes(random_bytes):
    """The same bytes give the standard library's id, unless its last group holds ten digits in a
    row (an NHS number to the log redactor): then the hub draws again, and takes the next bytes'."""
    from unittest import mock

    import hub.ids

    clean = b"\xff" * 16  # no digit at all
    standard = str(uuid.UUID(bytes=random_bytes, version=4))
    with mock.patch.object(hub.ids.os, "urandom", side_effect=[random_bytes, clean]) as drawn:
        made = hub.ids.uuid4()
    if hub.ids._BARE_TEN.search(standard.rsplit("-", 1)[1]):
        assert drawn.call_count == 2 and made == str(uuid.UUID(bytes=clean, version=4))
    else:
        assert drawn.call_count == 1 and made == standard


def test_a_random_id_holding_ten_digits_in_its_last_group_is_drawn_again():
    """Ten digits between letters would be masked as an NHS number in the logs: the hub draws again
    (a mocked random source giving the same bytes each time must not make it loop for ever)."""
    from unittest import mock

    import hub.ids

    nhs_like = bytes(10) + bytes.fromhex("a1234567890b")
    assert hub.ids._BARE_TEN.search(str(uuid.UUID(bytes=nhs_like, version=4)).rsplit("-", 1)[1])
    with mock.patch.object(hub.ids.os, "urandom", side_effect=[nhs_like, nhs_like, b"\xff" * 16]) as drawn:
        made = hub.ids.uuid4()
    assert drawn.call_count == 3 and made == str(uuid.UUID(bytes=b"\xff" * 16, version=4))


def test_uuid4_is_random_version_4():
    from hub.ids import uuid4

    made = {uuid4() for _ in range(1000)}
    assert len(made) == 1000
    assert all(uuid.UUID(u).version == 4 and uuid.UUID(u).variant == uuid.RFC_4122 and str(uuid.UUID(u)) == u
               for u in made)


@given(st.text(max_size=30))
def test_the_keyed_index_is_hmac_sha256_hexdigest(value):
    import hashlib
    import hmac

    from cryptography.fernet import Fernet

    from hub.crypto import DataProtector

    protector = DataProtector(Fernet.generate_key())
    assert protector.index(value) == hmac.new(protector._index_key, value.encode(), hashlib.sha256).hexdigest()


@given(st.binary(min_size=10, max_size=10), st.integers(0, 2**48 - 1))
def test_uuid7_is_the_time_in_milliseconds_then_random_bits_with_version_7(random_bytes, ms):
    from unittest import mock

    import hub.ids

    # Bytes whose id would hold ten digits in a row in its last group are drawn again (hub.ids `_BARE_TEN`):
    # the next draw (no digit in it) is taken then.
    with mock.patch.object(hub.ids.os, "urandom", side_effect=[random_bytes, b"\xff" * 10]) as drawn, \
            mock.patch.object(hub.ids.time, "time_ns", return_value=ms * 1_000_000 + 999_999):
        made = hub.ids.uuid7()
    u = uuid.UUID(made)
    assert str(u) == made and u.version == 7 and u.variant == uuid.RFC_4122
    assert u.int >> 80 == ms  # RFC 9562: unix_ts_ms in the first 48 bits
    assert not hub.ids._BARE_TEN.search(made.rsplit("-", 1)[1])
    # The 74 bits left are the random bytes' (less the version's 4 and the variant's 2).
    rand = int.from_bytes(random_bytes if drawn.call_count == 1 else b"\xff" * 10, "big")
    assert u.int & ((1 << 62) - 1) == rand & ((1 << 62) - 1)
    assert (u.int >> 64) & 0xFFF == (rand >> 64) & 0xFFF


def test_uuid7_ids_made_later_sort_after_and_are_unique():
    import time

    from hub.ids import uuid7

    first = [uuid7() for _ in range(500)]
    time.sleep(0.002)
    later = [uuid7() for _ in range(500)]
    assert len(set(first) | set(later)) == 1000
    assert max(first) < min(later)
    assert all(uuid.UUID(u).version == 7 for u in first + later)


def test_a_queued_delivery_has_a_time_ordered_id():
    """`deliveries.delivery_id` has a unique index: a random id put each delivery on a random
    leaf of it (a WAL frame a delivery), a time-ordered one on its right-hand edge."""
    import time
    from datetime import UTC, datetime

    from hub.delivery.queue import delivery_row

    def row() -> dict:
        return delivery_row(subscription_id="s", event_id="e", message_id="m", event_type="t", payload=b"",
                            correlation_id="c", event_number=1, now=datetime.now(UTC))

    first = row()["delivery_id"]
    time.sleep(0.002)
    later = row()["delivery_id"]
    assert uuid.UUID(first).version == 7 and uuid.UUID(later).version == 7
    assert first < later
