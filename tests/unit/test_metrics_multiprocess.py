"""Which registry `/metrics` reads (hub/observability/multiproc.py): every
process's metrics through a shared directory only with the workers apart;
the end-to-end test with real processes is tests/e2e/test_separate_workers.py."""

from __future__ import annotations

from pathlib import Path

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


def test_the_process_figures_of_the_front_and_of_each_live_worker(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    """Multiprocess mode reads only the shared files, so the process and
    Python figures (read live) would be missing: the front's are served under
    their usual names, each live worker process's by role until it is gone."""
    import subprocess
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    monkeypatch.setenv(multiproc.ENV, str(tmp_path))
    monkeypatch.setattr(multiproc, "_workers", {})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        multiproc.worker_started(child.pid, "back")

        def samples() -> dict[tuple[str, tuple], float]:
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for f in text_string_to_metric_families(multiproc.exposition().decode()) for s in f.samples}

        got = samples()
        assert got[("process_resident_memory_bytes", ())] > 0  # this process's (the front's)
        assert any(name.startswith("python_gc_") for name, _ in got)
        rss = got[("s117_worker_process_resident_memory_bytes", (("role", "back"),))]
        assert rss > 0 and rss != got[("process_resident_memory_bytes", ())]
        assert ("s117_worker_process_cpu_seconds_total", (("role", "back"),)) in got
        multiproc.process_gone(child.pid)
        assert not any(name.startswith("s117_worker_process_") for name, _ in samples())
    finally:
        child.kill()
        child.wait()


def test_a_worker_gone_unnoticed_gives_no_figures_and_no_error(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    import subprocess
    import sys

    monkeypatch.setenv(multiproc.ENV, str(tmp_path))
    monkeypatch.setattr(multiproc, "_workers", {})
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    multiproc.worker_started(child.pid, "deliver")  # exited before a scrape, not yet reported gone
    assert b"s117_worker_process_cpu_seconds_total{" not in multiproc.exposition()


def test_a_killed_fronts_directory_is_swept_by_the_next_and_a_live_ones_kept(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    """A front killed outright runs no exit handler, so its directory stayed
    behind in the temporary folder (thousands of them after a test suite's
    SIGKILL tests); the next front to start removes those whose front is gone."""
    import os
    import subprocess
    import sys
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(multiproc.ENV, raising=False)
    monkeypatch.delitem(sys.modules, "prometheus_client.values", raising=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    killed = tmp_path / f"{multiproc.PREFIX}killed"
    live = tmp_path / f"{multiproc.PREFIX}live"
    unowned = tmp_path / f"{multiproc.PREFIX}unowned"
    for folder, owner in ((killed, gone.pid), (live, os.getpid()), (unowned, None)):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"\0" * 8)
        if owner is not None:
            (folder / multiproc.OWNER).write_text(str(owner))
    made = multiproc.share_between_processes(Settings(separate_workers=True))
    try:
        assert made is not None and made.startswith(str(tmp_path))
        assert (Path(made) / multiproc.OWNER).read_text() == str(os.getpid())
        assert not killed.exists() and live.exists() and unowned.exists()
    finally:
        os.environ.pop(multiproc.ENV, None)
