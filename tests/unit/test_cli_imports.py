"""`s117hub` loads no metric before `serve` has said where the worker processes' metrics go.

prometheus_client chooses in-memory or shared values when it is first loaded, so `s117hub serve` names
the shared directory (hub/observability/multiproc.py) before anything imports it. Every subcommand's
parser is built first (hub/cli.py `main`): a parser module importing the store or the audit chain loaded
the library, and with the workers apart their figures (the relay's backlog, the dispatcher's lag, the
deliveries) vanished from `/metrics` and the alerts on them could not fire. Found by
tests/e2e/test_production_faults.py (the relay's backlog read 0 while 111 events waited)."""

from __future__ import annotations

import subprocess
import sys

from hub.audit import GENESIS
from hub.restore_cli import GENESIS as RESTORE_GENESIS


def test_building_every_subcommand_loads_no_metric() -> None:
    code = ("import sys\n"
            "import hub.cli\n"
            "try:\n"
            "    hub.cli.main(['--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('prometheus_client'))\n"
            "print('LOADED', loaded)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "LOADED []" in out.stdout, out.stdout[-2000:]


def test_the_restore_writes_the_chains_own_genesis() -> None:
    assert RESTORE_GENESIS == GENESIS
