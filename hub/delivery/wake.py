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
- A wake-up carries nothing but a channel name; anything else is ignored. It
  is only a hint: a lost one (the delivery process restarting, a full socket
  buffer) costs that channel its next poll, never a delivery.
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


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, wakes: Mapping[str, Callable[[], None]]) -> None:
        self._wakes = wakes

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) > _MAX_NAME:
            return
        wake = self._wakes.get(data.decode("ascii", "replace"))
        if wake is not None:
            wake()


async def listen(address: str, wakes: Mapping[str, Callable[[], None]]) -> asyncio.DatagramTransport | None:
    """The receiving process's side: each datagram naming a key of `wakes`
    (a channel, or `LOG`) calls its wake-up. None if the address is taken
    (another process of the same hub still closing): the workers then find
    their work by polling."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        log.warning("wake-ups not received; workers poll", channel=",".join(sorted(wakes)),
                    exc_type=type(exc).__name__)
        return None
    sock.setblocking(False)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Listener(wakes), sock=sock)
    return transport
