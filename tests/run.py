"""`make test`: the whole suite. Starts the servers the tests need (the hub
itself is started by the tests as a real process), and fails rather than
skips under CI=true."""

from __future__ import annotations

import os
import sys

import pytest


def main() -> int:
    args = ["-q", "-p", "no:cacheprovider", *sys.argv[1:]]
    if os.environ.get("CI") == "true":
        # In CI nothing may be skipped for want of a server: a skip is a failure.
        # The slowest tests named at the end: the suite must stay under 20 minutes on 2 cores.
        args += ["-rs", "-W", "error::pytest.PytestUnknownMarkWarning", "--durations=30"]
        os.environ["S117_REQUIRE_SERVERS"] = "1"
    code = pytest.main(args)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
