"""event_id_for (built without the UUID object) is uuid5 of the change, index and type, exactly."""

import uuid

from hypothesis import given, strategies as st

from hub.ingest.service import EVENT_NAMESPACE, event_id_for


@given(st.text(max_size=60), st.integers(0, 20), st.text(max_size=40))
def test_event_ids_are_uuid5_of_change_index_and_type(change_id, index, event_type):
    assert event_id_for(change_id, index, event_type) == str(uuid.uuid5(EVENT_NAMESPACE, f"{change_id}/{index}/{event_type}"))
