"""Waking another process's deliverers (hub/delivery/wake.py): a datagram
naming a channel wakes that channel's deliverer; anything else wakes nobody;
a sender with no listener neither blocks nor raises (the deliverers poll)."""

from __future__ import annotations

import asyncio
import socket
import uuid

from hub.delivery.wake import WakeSender, listen, wake_address


def _address() -> str:
    return wake_address(f"sqlite+aiosqlite:///{uuid.uuid4()}.db")


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.005)


async def test_a_datagram_naming_a_channel_wakes_its_deliverer_alone() -> None:
    woken: list[str] = []
    address = _address()
    transport = await listen(address, {"webhook": lambda: woken.append("webhook"),
                                       "file": lambda: woken.append("file")})
    sender = WakeSender(address)
    try:
        sender.waker("webhook")()
        sender.send("file")
        sender.send("webhook")
        await _settle()
        assert woken == ["webhook", "file", "webhook"]
        assert sender.lost == 0
    finally:
        sender.close()
        transport.close()


async def test_unknown_and_oversized_datagrams_wake_nobody() -> None:
    woken: list[str] = []
    address = _address()
    transport = await listen(address, {"webhook": lambda: woken.append("webhook")})
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        raw.sendto(b"kafka", address)  # a channel this process has no deliverer for
        raw.sendto(b"webhook" * 10, address)  # longer than any channel name
        raw.sendto(b"\xff\xfe", address)  # not text
        raw.sendto(b"webhook", address)
        await _settle()
        assert woken == ["webhook"]
    finally:
        raw.close()
        transport.close()


async def test_a_sender_without_a_listener_counts_the_wake_up_lost_and_goes_on() -> None:
    sender = WakeSender(_address())  # the delivery process not started yet, or restarting
    try:
        sender.send("webhook")
        sender.send("webhook")
        assert sender.lost == 2
    finally:
        sender.close()


def test_two_hubs_on_one_machine_have_different_addresses() -> None:
    a = wake_address("sqlite+aiosqlite:////srv/a/hub.db")
    assert a == wake_address("sqlite+aiosqlite:////srv/a/hub.db")
    assert a != wake_address("sqlite+aiosqlite:////srv/b/hub.db")
    assert a.startswith("\0")  # the abstract namespace: no file left behind


def test_a_sqlite_file_is_named_by_its_real_path(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Two installations with the same relative URL are two hubs; one file reached two ways is one."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    in_a = wake_address("sqlite+aiosqlite:///var/hub.db")
    assert in_a == wake_address(f"sqlite+aiosqlite:///{tmp_path / 'a' / 'var' / 'hub.db'}")
    monkeypatch.chdir(tmp_path / "b")
    assert wake_address("sqlite+aiosqlite:///var/hub.db") != in_a


async def test_an_address_already_taken_leaves_the_deliverers_polling_rather_than_failing() -> None:
    address = _address()
    first = await listen(address, {})
    try:
        assert first is not None
        assert await listen(address, {}) is None
    finally:
        assert first is not None
        first.close()


async def test_the_log_wake_is_sent_once_a_loop_turn_however_often_it_is_asked() -> None:
    from hub.delivery.wake import LOG, log_waker

    address = wake_address(f"sqlite+aiosqlite:///{uuid.uuid4()}.db", LOG)
    woken: list[str] = []
    transport = await listen(address, {LOG: lambda: woken.append(LOG)})
    sender = WakeSender(address)
    try:
        wake = log_waker(sender, asyncio.get_running_loop())
        for _ in range(5):  # a group commit telling the readers once a message it published
            wake()
        await _settle()
        assert woken == [LOG]
        wake()  # a later commit: told again
        await _settle()
        assert woken == [LOG, LOG]
    finally:
        sender.close()
        transport.close()


async def test_a_commit_that_published_in_the_front_wakes_the_back_process_readers() -> None:
    """The front (workers apart) tells the back workers' log readers through
    its own address, not the deliverers'; once stopped, it tells nobody."""
    from hub.bus import sql
    from hub.delivery.wake import LOG
    from hub.worker_process import wake_workers_on_publish

    url = f"sqlite+aiosqlite:///{uuid.uuid4()}.db"
    back: list[str] = []
    deliver: list[str] = []
    to_back = await listen(wake_address(url, LOG), {LOG: lambda: back.append(LOG)})
    to_deliver = await listen(wake_address(url), {LOG: lambda: deliver.append(LOG),
                                                  "webhook": lambda: deliver.append("webhook")})
    stop = wake_workers_on_publish(url)
    try:
        sql._tell_readers()  # what a publishing transaction's commit calls
        sql._tell_readers()
        await _settle()
        assert back == [LOG] and deliver == []
        stop()
        sql._tell_readers()
        await _settle()
        assert back == [LOG]
    finally:
        stop()
        to_back.close()
        to_deliver.close()


async def test_a_datagram_from_another_user_wakes_nobody(monkeypatch) -> None:  # noqa: ANN001
    """An abstract socket has no file permissions: any local user can send to
    it. The kernel names each datagram's sender (SO_PASSCRED), and one from
    a user other than the hub's is counted and dropped, never a wake-up."""
    import os

    from hub.delivery import wake

    woken: list[str] = []
    address = _address()
    hub_user = os.getuid()
    monkeypatch.setattr(wake.os, "getuid", lambda: hub_user + 1)  # the hub runs as another user than this sender
    listening = await listen(address, {"webhook": lambda: woken.append("webhook")})
    assert listening is not None
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        raw.sendto(b"webhook", address)
        raw.sendto(b"webhook", address)
        await _settle()
        assert woken == [] and listening.refused == 2
    finally:
        raw.close()
        listening.close()
    monkeypatch.undo()
    listening = await listen(address, {"webhook": lambda: woken.append("webhook")})  # the same user: woken
    assert listening is not None
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        raw.sendto(b"webhook", address)
        await _settle()
        assert woken == ["webhook"] and listening.refused == 0
    finally:
        raw.close()
        listening.close()


def test_the_sender_is_read_from_the_kernels_credentials() -> None:
    import struct

    from hub.delivery.wake import sent_by

    creds = struct.pack("iII", 4242, 1000, 1000)
    assert sent_by([(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)]) == 1000
    assert sent_by([]) is None  # none given: not the hub's user
    assert sent_by([(socket.SOL_SOCKET, socket.SCM_RIGHTS, creds)]) is None
