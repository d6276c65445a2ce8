"""The MLLP listener's per-message small things: the correlation id bound for
a message's handling (structlog's own variable set and reset, as
`bind_contextvars` and `unbind_contextvars` would), and the ACK's time taken
once a second (MSH-7 shows seconds) and formatted once for it."""

from __future__ import annotations

import contextvars
import time
from datetime import UTC, datetime

import structlog
from hypothesis import given
from hypothesis import strategies as st

from adapters.hl7v2 import Header, build_ack
from adapters.hl7v2.ack import _timestamp
from hub import mllp
from hub.ingest.service import bound_correlation_id


def _public() -> object:
    return structlog.contextvars.get_contextvars().get("correlation_id")


@given(st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=4), st.text(min_size=1, max_size=20))
def test_a_messages_correlation_id_is_bound_while_handled_and_what_was_there_before_comes_back(
        before: list[str | None], cid: str) -> None:
    def run() -> None:
        for value in before:
            if value is None:
                structlog.contextvars.unbind_contextvars("correlation_id")
            else:
                structlog.contextvars.bind_contextvars(correlation_id=value)
        was = _public()
        token = mllp._bind_correlation_id(cid)
        assert _public() == bound_correlation_id() == cid
        inner = contextvars.copy_context()  # another context (another connection's task) does not see it
        inner.run(structlog.contextvars.unbind_contextvars, "correlation_id")
        assert inner.run(_public) is None and _public() == cid
        mllp._unbind_correlation_id(token)
        assert _public() == bound_correlation_id() == was

    contextvars.copy_context().run(run)


def test_the_first_binding_in_a_process_makes_structlogs_variable(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(structlog.contextvars, "_CONTEXT_VARS", {})

    def run() -> None:
        token = mllp._bind_correlation_id("first")
        assert _public() == "first"
        mllp._unbind_correlation_id(token)
        assert _public() is None
        token = mllp._bind_correlation_id("second")  # the variable made by the first is set and reset
        assert isinstance(token, tuple) and _public() == "second"
        mllp._unbind_correlation_id(token)
        assert _public() is None

    contextvars.copy_context().run(run)


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
