"""The README's first command: the demo runs, data flows, signatures verify."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO, free_port

pytestmark = pytest.mark.e2e


def test_demo_runs_with_sample_data_flowing(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "hub.cli", "demo", "--duration", "4", "--interval", "1",
         "--port", str(free_port()), "--receiver-port", str(free_port()), "--data-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "Traceback" not in text + out.stderr
    assert "trust -> hub: left-hospital    202" in text
    assert "[Buckinghamshire Council] s117-entitlement-started" in text
    assert "[Worcestershire County Council] s117-moved-out-of-area" in text
    assert "(quarantined)" in text and "422" in text
    assert "REJECTED" not in text  # every webhook signature verified
