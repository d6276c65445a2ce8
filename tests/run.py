"""`make test`: the whole suite. Starts the servers the tests need (the hub
itself is started by the tests as a real process), and fails rather than
skips under CI=true.

The suite runs in as many processes as the machine has cores, up to four
(pytest-xdist; `S117_TEST_WORKERS=1` for one): most of an end-to-end test
is waiting on a hub process, a broker or a subscriber, so two processes on
two cores finish in well under the time of one. A test file stays in one
process (`--dist loadfile`: its module fixtures are made once), and each
process starts the Kafka and PostgreSQL servers its tests ask for (free
ports, folders of their own)."""

from __future__ import annotations

import os
import sys

import pytest

MAX_WORKERS = 4


def workers() -> int:
    given = os.environ.get("S117_TEST_WORKERS", "").strip()
    if given:
        return max(1, int(given))
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


def main() -> int:
    chosen = sys.argv[1:]
    args = ["-q", "-p", "no:cacheprovider"]
    if (n := workers()) > 1 and not any(a == "-n" or a.startswith(("-n", "--numprocesses", "--dist"))
                                        or a == "no:xdist" for a in chosen):
        args += ["-n", str(n), "--dist", "loadfile"]
    args += chosen
    if os.environ.get("CI") == "true":
        # In CI nothing may be skipped for want of a server: a skip is a failure.
        # The slowest tests named at the end: the suite must stay under 20 minutes on 2 cores.
        args += ["-rs", "-W", "error::pytest.PytestUnknownMarkWarning", "--durations=30"]
        os.environ["S117_REQUIRE_SERVERS"] = "1"
    code = pytest.main(args)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
