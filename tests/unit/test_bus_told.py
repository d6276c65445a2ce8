"""The SQL log's readers and signals told of a commit that published
(hub/bus/sql.py `_Told`): held weakly, told in the order added, each once."""

from __future__ import annotations

import asyncio
import gc

from hub.bus import sql
from hub.bus.sql import _Told, publish_signal


class _Thing:
    pass


def test_told_holds_weakly_in_order_and_once() -> None:
    told = _Told()
    a, b = _Thing(), _Thing()
    told.add(a)
    told.add(b)
    told.add(a)  # added again: still once, in its first place
    assert told.alive() == [a, b]
    del a
    gc.collect()
    assert told.alive() == [b] and len(told) == 1


def test_a_new_object_at_a_dead_ones_address_is_not_dropped_by_its_end() -> None:
    told = _Told()
    for _ in range(200):  # a freed object's id is often reused at once
        told.add(_Thing())
    keep = [_Thing() for _ in range(5)]
    for k in keep:
        told.add(k)
    gc.collect()
    assert told.alive() == keep


async def test_a_commit_that_published_tells_every_live_reader_and_signal() -> None:
    signal = publish_signal()

    class Reader:
        def __init__(self) -> None:
            self._new = asyncio.Event()

    reader = Reader()
    sql._READERS.add(reader)
    sql._tell_readers()
    assert reader._new.is_set() and signal.is_set()
