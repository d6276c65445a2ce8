"""Every hub process's metrics on the front's `/metrics` when the workers run
apart (`S117_SEPARATE_WORKERS`, hub/worker_process.py).

A Prometheus client library keeps its metrics in the process that made
them, so with the workers apart the dispatcher's, the deliverers' and the
consumers' figures (`s117_consumer_lag_messages`, `s117_events_dispatched_total`,
`s117_deliveries_total`, `s117_dead_letters_total`, the COMMIT timings of
those processes...) were on nobody's `/metrics`, and the alerts on them
(deploy/alerts.yml) could not fire. Here prometheus_client's multiprocess
mode is used: `s117hub serve` makes a directory of its own before any metric
exists and names it in `PROMETHEUS_MULTIPROC_DIR`, which the worker
processes inherit; each process writes its values into files there, and the
front's `/metrics` reads them all (`exposition`). Counters and histograms are
summed over the processes, those of a process that has gone included (what
it counted still happened); a gauge says how it is combined
(`multiprocess_mode` in hub/observability/metrics.py), and a gone process's
gauges are dropped (`process_gone`, called by the front's supervisor). One
process (the default) keeps the client's usual in-memory registry.

The library's process figures (`process_cpu_seconds_total`,
`process_resident_memory_bytes`, open file descriptors...) and Python's
(`python_gc_*`, `python_info`) are read live, not written to the shared
directory, so multiprocess mode would leave them out: the front serves its
own under their usual names (it is the process scraped), and each live
worker process's as `s117_worker_process_*{role="back"|"deliver"|"all"}`,
read from `/proc` at each scrape (`worker_started`, `process_gone`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hub.observability.logging import get_logger
from hub.settings import Settings

if TYPE_CHECKING:
    from prometheus_client import ProcessCollector
    from prometheus_client.metrics_core import Metric

log = get_logger("hub.observability.multiproc")
ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "s117hub-metrics-"
OWNER = "front.pid"  # the front's pid, in the directory it made: a killed front's is swept by the next
WORKER_NAMESPACE = "s117_worker"
# The live worker processes the front started: pid -> (role, the collector reading its /proc figures;
# made once, as it reads the boot time when made). The supervisor's, on the loop's thread.
_workers: dict[int, tuple[str, ProcessCollector]] = {}


def share_between_processes(settings: Settings) -> str | None:
    """In `s117hub serve`, before any metric is made: with the workers apart,
    a fresh directory for every process's metrics (removed when the front
    exits). A directory the operator named in the environment is used as it
    is. None (each process its own registry) for one process."""
    if not (settings.run_workers and settings.separate_workers):
        return None
    if os.environ.get(ENV):
        return os.environ[ENV]
    if "prometheus_client.values" in sys.modules:  # a metric may already hold its value in memory
        log.warning("worker processes' metrics not shared: the metrics library was loaded first")
        return None
    _sweep_left_behind()
    directory = tempfile.mkdtemp(prefix=PREFIX)
    Path(directory, OWNER).write_text(str(os.getpid()))
    os.environ[ENV] = directory
    atexit.register(shutil.rmtree, directory, True)
    return directory


def _sweep_left_behind() -> int:
    """The directories of fronts that were killed (SIGKILL, the OOM killer,
    a power cut: no exit handler ran) are removed when the next front starts,
    so the temporary folder does not fill with one a killed hub. Only this
    user's, and only those whose front is gone: a live hub's is kept, as is
    one without an owner file (not ours to judge). The number removed."""
    removed = 0
    for directory in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            if directory.stat().st_uid != os.getuid():
                continue
            pid = int((directory / OWNER).read_text())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed += 1
    # Not logged: this runs before `s117hub serve` has configured its logging (a line now would not be JSON).
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def exposition() -> bytes:
    """The text `/metrics` serves: every process's metrics if they share a
    directory, else this process's."""
    from prometheus_client import CollectorRegistry, generate_latest

    if not os.environ.get(ENV):
        return generate_latest()
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(_WorkerProcesses())
    return generate_latest(registry)


def worker_started(pid: int | None, role: str) -> None:
    """The front started a worker process: its process figures on /metrics
    (with the role as a label) until `process_gone`."""
    if pid is not None and os.environ.get(ENV):
        from prometheus_client import ProcessCollector

        _workers[pid] = (role, ProcessCollector(namespace=WORKER_NAMESPACE, pid=lambda: pid, registry=None))


class _WorkerProcesses:
    """Each live worker process's `/proc` figures, as prometheus_client's
    ProcessCollector reads them for one process, under
    `s117_worker_process_*` with the process's role as a label."""

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import Metric

        families: dict[str, Metric] = {}
        for role, collector in list(_workers.values()):
            # A process gone meanwhile gives nothing (the collector's own OSError handling).
            for family in collector.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, f"{family.documentation} (a worker process, by role)", family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "role": role}, sample.value)
        yield from families.values()


def process_gone(pid: int | None) -> None:
    """A worker process exited (stopped, crashed): its gauges no longer count
    (its counters and histograms still do)."""
    if pid is None or not os.environ.get(ENV):
        return
    _workers.pop(pid, None)
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid)
    except OSError:  # the directory gone with the hub
        pass
