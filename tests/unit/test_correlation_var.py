"""Ingest reads the correlation id bound for the message (MLLP, a request)
from structlog's context variable itself (`hub.ingest.service.bound_correlation_id`):
the same answer as `structlog.contextvars.get_contextvars().get("correlation_id")`
whatever is bound, unbound or bound in another context."""

from __future__ import annotations

import asyncio
import contextvars

import structlog
from hypothesis import given
from hypothesis import strategies as st

from hub.ingest import service
from hub.ingest.service import bound_correlation_id


def _public() -> object:
    return structlog.contextvars.get_contextvars().get("correlation_id")


@given(st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=6))
def test_the_bound_correlation_id_is_structlogs(values: list[str | None]) -> None:
    def run() -> None:
        assert bound_correlation_id() == _public()
        for value in values:
            if value is None:
                structlog.contextvars.unbind_contextvars("correlation_id")
            else:
                structlog.contextvars.bind_contextvars(correlation_id=value, other="x")
            assert bound_correlation_id() == _public()
            inner = contextvars.copy_context()  # bound in another context: not seen here, and the reverse
            inner.run(structlog.contextvars.bind_contextvars, correlation_id="elsewhere")
            assert bound_correlation_id() == _public()
            assert inner.run(bound_correlation_id) == inner.run(_public) == "elsewhere"

    contextvars.copy_context().run(run)


async def test_each_task_sees_its_own_and_the_fallback_agrees(monkeypatch) -> None:  # noqa: ANN001
    async def one(cid: str) -> tuple[object, object]:
        structlog.contextvars.bind_contextvars(correlation_id=cid)
        await asyncio.sleep(0)
        return bound_correlation_id(), _public()

    got = await asyncio.gather(*(one(f"c{n}") for n in range(5)))
    assert got == [(f"c{n}", f"c{n}") for n in range(5)]
    monkeypatch.setattr(service, "_STRUCTLOG_VARS", None)  # structlog keeping its variables otherwise
    structlog.contextvars.bind_contextvars(correlation_id="fallback")
    try:
        assert bound_correlation_id() == "fallback"
    finally:
        structlog.contextvars.unbind_contextvars("correlation_id")
