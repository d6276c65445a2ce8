"""Real servers for the tests (PostgreSQL, Kafka), started by the suite itself
as pytest fixtures; see each module's docstring for how."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def servers_required() -> bool:
    return os.environ.get("S117_REQUIRE_SERVERS") == "1" or os.environ.get("CI") == "true"


def unavailable(server: str, reason: str) -> NoReturn:
    """Fail under CI (a missing server is a broken build), skip elsewhere."""
    if servers_required():
        pytest.fail(f"{server} unavailable: {reason}", pytrace=False)
    pytest.skip(f"{server} unavailable: {reason}")
