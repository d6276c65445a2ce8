"""The log redactor's belt and braces (hub/observability/logging.py): a
ten-digit run is masked as an NHS number in any allowed value, however it is
spaced, but a UUID is kept whole when its digits only line up across a
hyphen (it used to be cut, and its correlation id could no longer be
traced); a bare run of ten digits is masked even inside a UUID, and the
correlation ids the hub mints never hold one."""

from __future__ import annotations

import uuid

from hypothesis import given, settings, strategies as st

from hub.observability.logging import _BARE_TEN, allowlist_redactor, new_correlation_id


def redact(**kw: object) -> dict:
    return allowlist_redactor(None, "info", dict(kw))


def test_ten_digit_runs_are_masked_however_spaced() -> None:
    for text in ("9434765919", "943 476 5919", "943-476-5919", "failed for 9434765919: no GP"):
        assert "[nhs-number]" in redact(event=text)["event"]
        assert "5919" not in redact(event=text)["event"]


def test_uuids_are_kept_whole_when_their_digits_line_up_only_across_hyphens() -> None:
    ids = ["1f196923-0154-4fd1-83b0-068213881018", "12345678-9012-4abc-8def-12345678901a",
           *(u for u in (str(uuid.uuid4()) for _ in range(2000)) if not _BARE_TEN.search(u))]
    for cid in ids:
        out = redact(correlation_id=cid, event=f"dispatch failed for {cid}")
        assert out["correlation_id"] == cid and out["event"] == f"dispatch failed for {cid}"


def test_an_nhs_number_beside_a_uuid_is_still_masked() -> None:
    cid = "1f196923-0154-4fd1-83b0-068213881018"
    out = redact(event=f"{cid} 9434765919")["event"]
    assert out == f"{cid} [nhs-number]"


def test_a_bare_ten_digit_run_inside_a_uuid_is_masked() -> None:
    out = redact(event="id 12345678-9012-4abc-8def-a9434765919b")["event"]
    assert "9434765919" not in out and out == "id 12345678-9012-4abc-8def-a[nhs-number]b"


def test_minted_correlation_ids_are_uuids_the_redactor_keeps() -> None:
    for _ in range(5000):
        cid = new_correlation_id()
        assert uuid.UUID(cid).version == 4 and not _BARE_TEN.search(cid)
        assert redact(correlation_id=cid)["correlation_id"] == cid


def test_each_log_line_is_one_write_so_processes_sharing_a_stream_never_tear_lines(
        monkeypatch, restore_logging) -> None:
    """The front and worker processes (S117_SEPARATE_WORKERS) write to one
    stream: a line written in two parts (`print`'s text, then its newline)
    let another process's line in between, and the JSON lines tore."""
    import io
    import sys

    import orjson

    from hub.observability.logging import configure_logging, get_logger

    writes: list[str] = []

    class Recording(io.StringIO):
        def write(self, s: str) -> int:
            writes.append(s)
            return len(s)

    monkeypatch.setattr(sys, "stdout", Recording())
    configure_logging("INFO")
    try:
        get_logger("hub.test").info("event queued for recipient", recipient="E06000060", count=1)
        get_logger("hub.test").warning("dispatch failed", attempt=2)
    finally:
        monkeypatch.undo()
    assert len(writes) == 2
    for w in writes:
        assert w.endswith("\n") and w.count("\n") == 1
        orjson.loads(w)


def test_a_list_is_masked_element_by_element_whatever_the_elements() -> None:
    """The dispatcher's line a batch carries lists (a hundred ids, types,
    counts): a ten-digit run in one element is masked, the rest kept, and
    digits are never joined across two elements."""
    cid = "1f196923-0154-4fd1-83b0-068213881018"
    out = redact(correlation_ids=[cid, "client-9434765919", "abc"], event_ids=(cid, cid),
                 event_types=["s117-moved-out-of-area"], queued=[1, 2], allowed=[["E06000060"], []])
    assert out["correlation_ids"] == [cid, "client-[nhs-number]", "abc"]
    assert out["event_ids"] == [cid, cid] and out["event_types"] == ["s117-moved-out-of-area"]
    assert out["queued"] == [1, 2]
    assert out["allowed"] == [["E06000060"], []]
    # Digits that line up only across two elements (or an element and the next) are two values, not one.
    assert redact(correlation_ids=["943 476", "5919", "943-476-", "5919x"])["correlation_ids"] == [
        "943 476", "5919", "943-476-", "5919x"]
    assert redact(correlation_ids=["a", "943 476 5919"])["correlation_ids"] == ["a", "[nhs-number]"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet="0123456789 -abcdef", max_size=24),
                          st.sampled_from(["1f196923-0154-4fd1-83b0-068213881018", "9434765919", "x"]),
                          st.integers(), st.lists(st.text(alphabet="0123456789 -", max_size=14), max_size=3)),
                max_size=12))
def test_a_list_gives_what_its_elements_give_one_by_one(values: list) -> None:
    def alone(v: object) -> object:
        if isinstance(v, list):
            return [alone(x) for x in v]
        return redact(correlation_ids=v)["correlation_ids"] if isinstance(v, str) else v
    assert redact(correlation_ids=values)["correlation_ids"] == [alone(v) for v in values]
    assert redact(correlation_ids=tuple(values))["correlation_ids"] == [alone(v) for v in values]


def test_every_field_the_hub_logs_by_name_is_on_the_allowlist() -> None:
    """A field not on the allowlist is printed `[redacted]`: safe, but the line loses what it was written
    for (a transfer case's former state, an export's id were logged that way). Every keyword a `log.*(...)`
    call in hub/ passes is on the list (each was checked to carry ids, codes, counts or states)."""
    import ast
    from pathlib import Path

    from hub.observability.logging import ALLOWED_KEYS

    root = Path(__file__).resolve().parents[2] / "hub"
    levels = {"debug", "info", "warning", "error", "exception", "critical"}
    unknown = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in levels
                    and isinstance(node.func.value, ast.Name) and node.func.value.id.endswith("log")):
                unknown |= {f"{path.relative_to(root.parent)}:{node.lineno} {k.arg}" for k in node.keywords
                            if k.arg is not None and k.arg not in ALLOWED_KEYS and k.arg != "exc_info"}
    assert not unknown, sorted(unknown)
