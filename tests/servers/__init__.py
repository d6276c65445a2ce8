"""Real servers for the tests (PostgreSQL, Kafka), started by the suite itself
as pytest fixtures; see each module's docstring for how."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest


def servers_required() -> bool:
    return os.environ.get("S117_REQUIRE_SERVERS") == "1" or os.environ.get("CI") == "true"


def unavailable(server: str, reason: str) -> NoReturn:
    """Fail under CI (a missing server is a broken build), skip elsewhere."""
    if servers_required():
        pytest.fail(f"{server} unavailable: {reason}", pytrace=False)
    pytest.skip(f"{server} unavailable: {reason}")


@contextmanager
def one_at_a_time() -> Iterator[None]:
    """Around installing or fetching what the tests need (apt-get, Maven): the
    suite runs in several processes (pytest-xdist, tests/run.py), and two
    installing at once would meet on dpkg's lock or on Maven's local
    repository, or swap a jar folder out from under a broker starting. The
    second waits, then finds the work done."""
    with open(Path(tempfile.gettempdir()) / f"s117-tests-install-{os.getuid()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
