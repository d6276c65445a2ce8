"""Waking the deliverers of another process: a datagram naming a channel.

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


def wake_address(database_url: str) -> str:
    """The abstract socket address of the delivery process of the hub whose
    store is `database_url` (its processes are given the same settings). A
    SQLite file is named by its real path: two installations whose relative
    URLs read alike are still two hubs."""
    from hub.worker_process import sqlite_file

    path = sqlite_file(database_url)
    key = os.path.realpath(path) if path is not None else database_url
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return f"\0s117hub-wake-{digest}"


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
    """The delivery process's side: each datagram naming a channel in `wakes`
    calls its wake-up. None if the address is taken (another process of the
    same hub still closing): the deliverers then find their work by polling."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        log.warning("delivery wake-ups not received; deliverers poll", exc_type=type(exc).__name__)
        return None
    sock.setblocking(False)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Listener(wakes), sock=sock)
    return transport
