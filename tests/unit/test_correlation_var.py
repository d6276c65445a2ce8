"""The correlation id of what is being handled (hub/observability/logging.py):
a context variable of the hub's own, bound by the HTTP middleware, the MLLP
listener and the council-file jobs, read by ingest (`bound_correlation_id`)
and put on every log line made meanwhile (`add_correlation_id`)."""

from __future__ import annotations

import asyncio
import contextvars

import orjson
from hypothesis import given
from hypothesis import strategies as st

from hub.observability.logging import (
    add_correlation_id,
    bind_correlation_id,
    bound_correlation_id,
    configure_logging,
    correlation_bound,
    get_logger,
    unbind_correlation_id,
)


@given(st.lists(st.text(min_size=1, max_size=40), max_size=6))
def test_nested_bindings_give_back_what_was_bound_before(values: list[str]) -> None:
    def run() -> None:
        assert bound_correlation_id() is None
        tokens = []
        for value in values:
            tokens.append(bind_correlation_id(value))
            assert bound_correlation_id() == value
            inner = contextvars.copy_context()  # bound in another context: not seen here, and the reverse
            inner.run(bind_correlation_id, "elsewhere")
            assert inner.run(bound_correlation_id) == "elsewhere" and bound_correlation_id() == value
        for i in reversed(range(len(values))):
            unbind_correlation_id(tokens[i])
            assert bound_correlation_id() == (values[i - 1] if i else None)

    contextvars.copy_context().run(run)


async def test_each_task_sees_its_own() -> None:
    async def one(cid: str) -> object:
        with correlation_bound(cid):
            await asyncio.sleep(0)
            return bound_correlation_id()

    assert await asyncio.gather(*(one(f"c{n}") for n in range(5))) == [f"c{n}" for n in range(5)]
    assert bound_correlation_id() is None


def test_unbound_when_the_block_fails() -> None:
    def run() -> None:
        try:
            with correlation_bound("file-1"):
                raise ValueError("x")
        except ValueError:
            pass
        assert bound_correlation_id() is None

    contextvars.copy_context().run(run)


def test_log_lines_carry_the_bound_id_and_one_the_call_names_wins(capsys, restore_logging) -> None:  # noqa: ANN001
    assert add_correlation_id(None, "info", {"event": "x"}) == {"event": "x"}  # nothing bound: nothing added
    configure_logging("INFO")
    log = get_logger("test")

    def run() -> None:
        with correlation_bound("c-bound"):
            log.info("bound")
            log.info("named", correlation_id="c-named")
        log.info("after")

    contextvars.copy_context().run(run)
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    got = {line["event"]: line.get("correlation_id") for line in lines}
    assert got == {"bound": "c-bound", "named": "c-named", "after": None}


def test_the_variable_outlives_a_reload_of_the_logging_module() -> None:
    """The tests' logging reset reloads the module; the middleware, MLLP and
    file jobs keep the helpers they imported: they must still bind what the
    reloaded processor reads."""
    import importlib

    import hub.observability.logging as hub_logging

    importlib.reload(hub_logging)

    def run() -> None:
        with correlation_bound("kept"):  # the helper imported before the reload
            assert hub_logging.bound_correlation_id() == "kept"
            assert hub_logging.add_correlation_id(None, "info", {})["correlation_id"] == "kept"

    contextvars.copy_context().run(run)


def test_binding_none_hides_the_id_around_it_until_unbound() -> None:
    """The dispatcher binds each event's correlation id, None for an event
    that came with none: its lines must not carry an id bound around it."""
    def run() -> None:
        with correlation_bound("outer"):
            token = bind_correlation_id(None)
            assert bound_correlation_id() is None
            assert "correlation_id" not in add_correlation_id(None, "info", {"event": "x"})
            unbind_correlation_id(token)
            assert bound_correlation_id() == "outer"

    contextvars.copy_context().run(run)
