"""Waking another process's workers: a datagram naming what to wake.

With `S117_SEPARATE_DELIVERY` the deliverers run in a process of their own
(hub/worker_process.py), so the dispatcher's `on_queued` cannot set their
in-process events. Instead it sends the channel's name ("webhook", "file",
...) as one datagram to a Unix socket that the delivery process listens on;
that process wakes the channel's deliverer, which looks for due heads at once
rather than at its next poll.

- The socket is in Linux's abstract namespace (no file to clean up, no path
  length limit), named after the hub's database, so two hubs on one machine
  never wake each other's deliverers.
- A wake-up carries nothing but a channel name; anything else is ignored,
  and so is one not sent by the hub's own user (the kernel's credentials on
  each datagram: an abstract socket has no file permissions). It is only a
  hint: a lost one (the delivery process restarting, a full socket buffer)
  costs that channel its next poll, never a delivery.
- The same for the event log's readers (the dispatcher and the consumers) in
  the back workers' process (`S117_SEPARATE_WORKERS`): the front sends `LOG`
  to that process's own address (`wake_address(url, LOG)`) once a commit
  that published is durable, at most once an event-loop turn
  (`log_waker`). Without it the back process found the front's commits by
  reading `PRAGMA data_version` every 10 ms, at rest too
  (hub/worker_process.py, `ChangeWatcher`, now a slower fallback).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
from collections.abc import Callable, Mapping

from hub.observability.logging import get_logger

log = get_logger("hub.delivery.wake")
_MAX_NAME = 32  # a channel name: "webhook", "file", "kafka", "fhir-rest-hook"
LOG = "log"  # the back process's event-log readers (not a delivery channel)


def wake_address(database_url: str, to: str = "deliver") -> str:
    """The abstract socket address of the delivery process (`to="deliver"`)
    or of the back workers' process (`to=LOG`) of the hub whose store is
    `database_url` (its processes are given the same settings). A SQLite file
    is named by its real path: two installations whose relative URLs read
    alike are still two hubs."""
    from hub.worker_process import sqlite_file

    path = sqlite_file(database_url)
    key = os.path.realpath(path) if path is not None else database_url
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return f"\0s117hub-wake-{digest}" if to == "deliver" else f"\0s117hub-wake-{to}-{digest}"


class WakeSender:
    """The dispatcher's side: `send(channel)` never blocks and never raises."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.lost = 0  # wake-ups nobody received (no listener yet, or its buffer full): those channels poll

    def send(self, channel: str) -> None:
        try:
            self._sock.sendto(channel.encode(), self._address)
        except OSError:  # no listener (starting, restarting) or its buffer is full: it polls
            self.lost += 1

    def waker(self, channel: str) -> Callable[[], None]:
        return lambda: self.send(channel)

    def close(self) -> None:
        self._sock.close()


def log_waker(sender: WakeSender, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """A callable that sends `LOG` once, at the end of the loop's turn, however
    often it is called in that turn (a group commit tells the readers once a
    message it published)."""
    pending = False

    def sent() -> None:
        nonlocal pending
        pending = False
        sender.send(LOG)

    def wake() -> None:
        nonlocal pending
        if not pending:
            pending = True
            loop.call_soon(sent)

    return wake


_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_CREDENTIALS_SPACE = socket.CMSG_SPACE(_CREDENTIALS.size)


def sent_by(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The uid the kernel gives as a datagram's sender (SCM_CREDENTIALS, with
    SO_PASSCRED on the receiving socket); None if it gives none."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= _CREDENTIALS.size:
            return _CREDENTIALS.unpack_from(data)[1]
    return None


class Listening:
    """A bound wake-up socket read on the event loop. Only datagrams the
    kernel says come from this process's own user wake anyone: an abstract
    socket has no file permissions, so any local user could reach it, and a
    stranger's flood would make the workers look for work as fast as their
    loop turns. Others are counted (`refused`) and dropped."""

    def __init__(self, sock: socket.socket, wakes: Mapping[str, Callable[[], None]],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._sock, self._wakes, self._loop = sock, wakes, loop
        self._uid = os.getuid()
        self.refused = 0
        self._open = True
        loop.add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        while True:  # every datagram waiting (one readiness, many wake-ups)
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(_MAX_NAME + 1, _CREDENTIALS_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # closed under us: nothing more to read
                return
            if sent_by(ancdata) != self._uid:
                self.refused += 1
                continue
            if len(data) > _MAX_NAME:  # longer than any name (read cut short)
                continue
            wake = self._wakes.get(data.decode("ascii", "replace"))
            if wake is not None:
                wake()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


async def listen(address: str, wakes: Mapping[str, Callable[[], None]]) -> Listening | None:
    """The receiving process's side: each datagram from this user naming a
    key of `wakes` (a channel, or `LOG`) calls its wake-up. None if the
    address is taken (another process of the same hub still closing): the
    workers then find their work by polling."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        log.warning("wake-ups not received; workers poll", channel=",".join(sorted(wakes)),
                    exc_type=type(exc).__name__)
        return None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the kernel names each datagram's sender
    sock.setblocking(False)
    return Listening(sock, wakes, asyncio.get_running_loop())
