"""The MLLP listener's per-message small things: the ACK's time taken once a
second (MSH-7 shows seconds) and formatted once for it, and its control ids.
(The correlation id bound for a message's handling: tests/unit/test_correlation_var.py.)"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from adapters.hl7v2 import Header, build_ack
from adapters.hl7v2.ack import _timestamp
from hub import mllp


def test_the_acks_time_is_this_second() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    now = mllp._this_second()
    after = datetime.now(UTC)
    assert before <= now <= after and now.microsecond == 0 and now.tzinfo is UTC
    assert mllp._this_second() is now or mllp._this_second() > now  # one object a second
    time.sleep(1.05)
    assert mllp._this_second() > now


@given(st.lists(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                             timezones=st.just(UTC)), min_size=1, max_size=5))
def test_a_time_formatted_again_is_the_same_and_another_is_its_own(times: list[datetime]) -> None:
    for now in [*times, *times]:  # the same objects again, and others in between
        assert _timestamp(now) == now.strftime("%Y%m%d%H%M%S")
        assert _timestamp(now) == now.strftime("%Y%m%d%H%M%S")


def test_an_ack_made_in_one_second_after_another_shows_its_own_time() -> None:
    header = Header("RIO", "RNU", "C1", "ADT", "A01", "2.4")
    a = build_ack(header, "AA", "x", datetime(2025, 1, 6, 10, 15, 0, tzinfo=UTC), "ok")
    b = build_ack(header, "AA", "x", datetime(2025, 1, 6, 10, 15, 1, tzinfo=UTC), "ok")
    assert "|20250106101500|" in a and "|20250106101501|" in b


def test_ack_control_ids_are_20_hex_digits_and_never_repeat_in_a_process_or_its_forked_child() -> None:
    import os
    import re

    ids = [mllp._ack_control_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{20}", i) for i in ids) and len(set(ids)) == len(ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, mllp._ack_control_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    ours = mllp._ack_control_id()
    assert child[:8] != ours[:8] and child not in ids  # the child's own random prefix
