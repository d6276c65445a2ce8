"""Debian tools the tests drive (chromium, promtool), installed by the
project's own script (scripts/debian-tool.sh) when missing; under CI a tool
that cannot be had fails the test, elsewhere it is skipped with the reason."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from tests.servers import one_at_a_time, unavailable

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "debian-tool.sh"


@functools.cache
def _find(command: str, package: str) -> tuple[str | None, str]:
    with one_at_a_time():
        r = subprocess.run(["bash", str(SCRIPT), command, package], capture_output=True, text=True, timeout=900)
    return (r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else None,
            r.stderr.strip()[-500:])


def debian_tool(command: str, package: str) -> str:
    path, why = _find(command, package)
    if path is None:
        unavailable(command, why or f"{package} could not be installed")
    return path
