"""Which registry `/metrics` reads (hub/observability/multiproc.py): every
process's metrics through a shared directory only with the workers apart;
the end-to-end test with real processes is tests/e2e/test_separate_workers.py."""

from __future__ import annotations

from hub.observability import multiproc
from hub.settings import Settings


def test_one_process_keeps_its_own_registry(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv(multiproc.ENV, raising=False)
    assert multiproc.share_between_processes(Settings(separate_workers=False)) is None
    assert multiproc.share_between_processes(Settings(separate_workers=True, run_workers=False)) is None
    assert multiproc.ENV not in __import__("os").environ
    assert b"s117_ingest_total" in multiproc.exposition()  # this process's registry, as before
    multiproc.process_gone(12345)  # nothing shared: nothing to drop


def test_a_directory_the_operator_named_is_used_as_it_is(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setenv(multiproc.ENV, str(tmp_path))
    assert multiproc.share_between_processes(Settings(separate_workers=True)) == str(tmp_path)
    assert tmp_path.exists()


def test_metrics_already_loaded_are_not_shared_half_way(monkeypatch) -> None:  # noqa: ANN001
    """The library chooses in-memory or shared values when first loaded: if
    it was loaded before `s117hub serve` could name a directory, sharing one
    now would show the worker processes' figures and lose this one's."""
    monkeypatch.delenv(multiproc.ENV, raising=False)
    import prometheus_client.values  # noqa: F401 - loaded, as in this test process

    assert multiproc.share_between_processes(Settings(separate_workers=True)) is None
    assert multiproc.ENV not in __import__("os").environ
