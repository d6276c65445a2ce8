"""The background workers in a second process (`S117_SEPARATE_WORKERS=true`;
unset, `s117hub serve` decides by the host's cores: `serving_layout`).

One Python process runs on one core. With the workers in their own process,
the HTTP and MLLP front door (ingest, the API, council files) has one core and
the dispatcher, deliverers, consumers and housekeeping the other; both work
on the same store (SQLite WAL: one writer at a time, readers never wait;
PostgreSQL as for several instances) and the same log.

- **Front** (`hub serve`): the API, MLLP, council files. It starts the worker
  process (`s117hub workers`) and supervises it: restarted after a crash
  (backoff 1 s doubling to 30 s), stopped with the hub (SIGTERM, then SIGKILL
  after `stop_grace_seconds`). `/health/ready` says `worker_process:
  starting` until the process writes to a pipe the front gave it
  (`READY_FD_ENV`) that its workers have started, `restarting` while it is
  down.
- **Workers** (`s117hub workers`): everything `Hub.start_workers(front=False)`
  starts. It exits if the front process goes away (checked every second), so
  a SIGKILLed front leaves no orphan writing to the store.
- **Deliverers apart** (`S117_SEPARATE_DELIVERY=true` as well): the front
  starts two worker processes, `back` (the dispatcher, consumers,
  housekeeping) and `deliver` (the deliverers), each supervised the same way.
  The dispatcher's process wakes the deliverers' with a datagram naming the
  channel (hub/delivery/wake.py).
- **Wake-ups across processes**: the front's commits cannot set the workers'
  in-process events. Once a commit that published is durable, the front
  sends a datagram to the back workers' process (`wake_workers_on_publish`,
  hub/delivery/wake.py), which wakes its log's readers at once. On a SQLite
  file `ChangeWatcher` reads `PRAGMA data_version` (it changes when another
  connection has committed) as well: every 10 ms if that process could not
  listen for the datagrams, else every 100 ms, for commits from elsewhere
  (a CLI) and a lost datagram. (It used to be every 10 ms always: about 2%
  of the back process's CPU under load, and about half of the hub's CPU at
  rest with the workers apart.) The deliverers are woken by the dispatcher beside
  them when it queues for their channel; what the front queues or puts back
  (an operator's redelivery) waits for their poll. On PostgreSQL with Kafka
  the consumers are woken by Kafka.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.periodic import pause
from hub.observability.logging import get_logger
from hub.observability.multiproc import process_gone, worker_started
from hub.settings import REPO_ROOT, Settings

log = get_logger("hub.worker_process")
SETTINGS_ENV = "S117_WORKER_SETTINGS"
# What a worker process runs: "all" (the dispatcher, deliverers, consumers and
# housekeeping), "back" (all but the deliverers) or "deliver" (the deliverers
# alone: S117_SEPARATE_DELIVERY).
ROLE_ENV = "S117_WORKER_ROLE"
ROLES = ("all", "back", "deliver")
# The write end of a pipe the worker process writes a byte to once its
# workers have started (`WorkerProcess.ready`; `/health/ready` says
# `starting` until then).
READY_FD_ENV = "S117_WORKER_READY_FD"


def worker_settings() -> Settings:
    """In the worker process: the front's settings as it passed them (else the environment's)."""
    from hub.settings import get_settings

    passed = os.environ.pop(SETTINGS_ENV, None)
    return Settings.model_validate_json(passed) if passed else get_settings()


class WorkerProcess:
    """The front process's handle on the worker process: start, restart, stop."""

    stop_grace_seconds = 15.0

    def __init__(self, settings: Settings | None = None, command: list[str] | None = None,
                 env: dict[str, str] | None = None, role: str = "all") -> None:
        self._command = command or [sys.executable, "-m", "hub.cli", "workers"]
        # The front's own settings (which may not all come from the environment), whole.
        self._env = {**(env or {}), **({SETTINGS_ENV: settings.model_dump_json()} if settings is not None else {}),
                     ROLE_ENV: role}
        self.role = role
        self._proc: asyncio.subprocess.Process | None = None
        self._ready = False
        self._told: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def ready(self) -> bool:
        """Running, and its workers started (it said so on its pipe)."""
        return self._ready and self.alive

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.alive and self._proc is not None else None

    async def _start(self) -> None:
        self._ready = False
        theirs, ours = os.pipe()[::-1]
        try:
            # Its stdout and stderr are the front's: one log stream, the same redactor.
            self._proc = await asyncio.create_subprocess_exec(
                *self._command, cwd=str(REPO_ROOT), pass_fds=(theirs,),
                env={**os.environ, **(self._env or {}), "S117_FRONT_PID": str(os.getpid()), READY_FD_ENV: str(theirs)})
        except BaseException:
            os.close(ours)
            raise
        finally:
            os.close(theirs)
        self._told = asyncio.create_task(self._await_ready(ours), name=f"{self.role}-worker-ready")
        worker_started(self._proc.pid, self.role)  # its process figures on /metrics
        log.info("worker process started", pid=self._proc.pid, mode=self.role)

    async def _await_ready(self, fd: int) -> None:
        """Ready once the process writes to its pipe; the pipe's end (it exited) without a byte is not."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    os.fdopen(fd, "rb", 0))
        try:
            self._ready = bool(await reader.read(1))
        finally:
            transport.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the worker process running until `stop` is set, then stop it."""
        backoff = 1.0
        try:
            while not stop.is_set():
                await self._start()
                assert self._proc is not None
                exited = asyncio.ensure_future(self._proc.wait())
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait([exited, stopped], return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                if stop.is_set():
                    exited.cancel()
                    break
                process_gone(self._proc.pid)  # its gauges no longer count on /metrics
                status = self._proc.returncode
                # A crash or a kill is said at once. A clean stop (SIGTERM) only after the wait: told
                # as the whole hub stops (systemd signals every process of the unit, not the front
                # alone), the front's own stop follows within it, and there is nothing to say.
                if status != 0:
                    self._restarting(status, backoff)
                if await pause(stop, backoff):
                    break
                if status == 0:
                    self._restarting(status, 0.0)
                backoff = min(30.0, backoff * 2)
        finally:
            await self.stop()

    def _restarting(self, status: int, next_attempt_in: float) -> None:
        self.restarts += 1
        log.warning("worker process exited; restarting", status_code=status, next_attempt_in=next_attempt_in,
                    count=self.restarts)

    async def stop(self) -> None:
        if self._told is not None:
            self._told.cancel()
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=self.stop_grace_seconds)
        except TimeoutError:
            log.warning("worker process did not stop in time; killed")
            proc.kill()
            await proc.wait()
        process_gone(proc.pid)


class ChangeWatcher:
    """Calls `on_change` soon after another connection commits to the SQLite
    file at `path` (`PRAGMA data_version`, read every `interval` seconds on a
    connection of its own)."""

    def __init__(self, path: str, on_change: Callable[[], None], interval: float = 0.01) -> None:
        self._path = path
        self._on_change = on_change
        self._interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        conn = sqlite3.connect(self._path, check_same_thread=False)
        try:
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            while not stop.is_set():
                await asyncio.sleep(self._interval)  # a stop is seen within one interval (no task a turn)
                now = conn.execute("PRAGMA data_version").fetchone()[0]
                if now != last:
                    last = now
                    self._on_change()
        finally:
            conn.close()


def wake_workers_on_publish(database_url: str) -> Callable[[], None]:
    """In the front, with the workers apart: each commit that published (once
    durable) sends the back workers' process a datagram that wakes its log's
    readers (hub/delivery/wake.py). Returns what stops it (the hub closing)."""
    from hub.bus.sql import tell_elsewhere
    from hub.delivery.wake import LOG, WakeSender, log_waker, wake_address

    sender = WakeSender(wake_address(database_url, LOG))
    untell = tell_elsewhere(log_waker(sender, asyncio.get_running_loop()))

    def stop() -> None:
        untell()
        sender.close()

    return stop


def share_write_lock(database_url: str, engine: Any, *, yields: bool) -> None:
    """SQLite: the front and worker processes take turns at the write lock,
    the front first (hub.store.db.WriterTurns)."""
    from hub.store.db import WriterTurns, inline_writer

    path, writer = sqlite_file(database_url), inline_writer(engine)
    if path is not None and writer is not None:
        writer.turns, writer.yields = WriterTurns(path), yields


def sqlite_file(database_url: str) -> str | None:
    """The file of a SQLite database URL (None for PostgreSQL and `:memory:`)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        return None
    return url.database


def usable_cores(cgroup_root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int:
    """The cores this process may use: those it may run on (its CPU affinity,
    as a container's cpuset limits it, else the machine's), fewer if a CPU
    quota is smaller (cgroup v2's `cpu.max` of this process's cgroup or any
    above it: a container's CPU limit, systemd's `CPUQuota=`), rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cores(cgroup_root, proc_cgroup)
    return min(cores, quota) if quota is not None else cores


def _cgroup_cores(root: str, proc_cgroup: str) -> int | None:
    """The smallest CPU quota (cgroup v2 `cpu.max`: "quota period", or "max"
    for none) on the way from this process's cgroup up to the root, in cores
    rounded up; None if there is none (or no cgroup v2 to read)."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    own = next((line[3:] for line in lines if line.startswith("0::")), "/")
    top = Path(root)
    here, least = top / own.strip().lstrip("/"), None
    while True:
        try:
            fields = (here / "cpu.max").read_text().split()
        except OSError:
            fields = []
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit() and int(fields[1]) > 0:
            cores = max(1, -(-int(fields[0]) // int(fields[1])))
            least = cores if least is None else min(least, cores)
        if here == top or top not in here.parents:
            return least
        here = here.parent


def shared_store(database_url: str) -> bool:
    """Whether several processes can work on the store: a SQLite file or a
    server (PostgreSQL), not an in-memory SQLite database (one per process)."""
    from sqlalchemy.engine import make_url

    return sqlite_file(database_url) is not None or not make_url(database_url).drivername.startswith("sqlite")


def serving_layout(settings: Settings, cores: int | None = None) -> Settings:
    """`s117hub serve`'s processes: the settings with `separate_workers` and
    `separate_delivery` decided where they were left unset.

    Unset, both follow the host: with two usable cores or more and a store
    several processes can share, the workers and the deliverers each run in
    a process of their own (three processes); else one. One process shares
    one core between ingest, the dispatcher and the deliverers: cheaper a
    change while the hub is lightly loaded (4-15% at one client),
    but at a steady 200 changes/s its POST -> webhook p99 was 260-1,194 ms
    against 279-305 ms with the deliverers apart, and at 32 clients its
    deliveries fell 3.4 s behind against 0.3 s (bench/JOURNAL.md, "Twentieth
    session" and "Twenty-first session"). A setting given is kept:
    `S117_SEPARATE_WORKERS=true` alone still means two processes, as before.
    """
    workers, delivery = settings.separate_workers, settings.separate_delivery
    if workers is not None and delivery is not None:
        return settings
    apart = (usable_cores() if cores is None else cores) >= 2 and shared_store(settings.database_url)
    if workers is None:
        workers = bool(delivery) or apart
        if delivery is None:
            delivery = apart
    elif delivery is None:
        delivery = False
    return settings.model_copy(update={"separate_workers": workers, "separate_delivery": delivery})


def processes(settings: Settings) -> int:
    """How many processes the hub runs with these settings (1, 2 or 3)."""
    if not (settings.run_workers and settings.separate_workers):
        return 1
    return 3 if settings.separate_delivery else 2


async def _front_gone(front_pid: int | None, stop: asyncio.Event) -> None:
    """Set `stop` if the front process that started this one has gone (its
    parent is then another process: init, or a subreaper)."""
    if not front_pid:
        return
    while not stop.is_set():
        if os.getppid() != front_pid:
            log.warning("front process gone; worker process stopping")
            stop.set()
            return
        await pause(stop, 1.0)


def _tell_front_ready() -> None:
    """Write a byte to the front's pipe (`READY_FD_ENV`), once; nothing if started without one."""
    fd = os.environ.pop(READY_FD_ENV, "")
    if not fd.isdigit():
        return
    try:
        os.write(int(fd), b"1")
        os.close(int(fd))
    except OSError:  # the front has gone: _front_gone stops this process
        pass


async def run_workers(settings: Settings) -> None:
    """`s117hub workers`: the hub's background workers, without HTTP or MLLP."""
    from hub.bootstrap import build_hub
    from hub.bus.sql import _tell_readers
    from hub.server import tune_gc

    started_by_front = ROLE_ENV in os.environ  # not an operator's own `s117hub workers`
    role = os.environ.pop(ROLE_ENV, "all")
    if role not in ROLES:
        raise SystemExit(f"{ROLE_ENV}: must be one of {', '.join(ROLES)}")
    hub = await build_hub(settings, start_warnings=not started_by_front)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    share_write_lock(settings.database_url, hub.engine, yields=True)
    path = sqlite_file(settings.database_url)
    closing: list[Callable[[], None]] = []
    if role == "back":
        from hub.delivery.wake import WakeSender, wake_address

        sender = WakeSender(wake_address(settings.database_url))
        hub.dispatcher.on_queued = {d.channel: sender.waker(d.channel) for d in hub.deliverers()}
        closing.append(sender.close)
    if role == "deliver":
        from hub.delivery.wake import listen, wake_address

        listener = await listen(wake_address(settings.database_url), {d.channel: d.wake for d in hub.deliverers()})
        if listener is not None:
            closing.append(listener.close)
    hub.start_workers(front=False, back=role != "deliver", deliver=role != "back")
    # Each process watches the agreements file (its own object to swap); the back workers' one audits.
    hub.watch_agreements(audit=role != "deliver")
    hub.watch_store_writes()  # a write failed for a store fault: probed until one succeeds
    extra: list[asyncio.Task[Any]] = [asyncio.create_task(
        _front_gone(int(os.environ.get("S117_FRONT_PID") or 0) or None, stop), name="front-watch")]
    if role != "deliver":
        # The log's readers only: the deliverers are woken by this process's
        # dispatcher when it queues for their channel (`on_queued`); woken on
        # every commit seen (this process's own included), each ran a query
        # for its due heads up to 100 times a second.
        from hub.delivery.wake import LOG, listen, wake_address

        told = await listen(wake_address(settings.database_url, LOG), {LOG: _tell_readers})
        if told is not None:
            closing.append(told.close)
        if path is not None:  # the front's datagrams, with data_version as a fallback (slower if they come)
            watcher = ChangeWatcher(path, _tell_readers, interval=0.01 if told is None else 0.1)
            extra.append(asyncio.create_task(watcher.run(stop), name="change-watcher"))
    tune_gc()
    log.info("worker process ready", mode=role, database=settings.database_url.split(":")[0])
    _tell_front_ready()
    try:
        await stop.wait()
    finally:
        for t in extra:
            t.cancel()
        await asyncio.gather(*extra, return_exceptions=True)
        await hub.close()
        for close in closing:
            close()
