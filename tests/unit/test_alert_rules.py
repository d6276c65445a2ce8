"""The Prometheus alert rules in deploy/ are valid and fire when they should
(promtool, Debian's prometheus package, installed by scripts/debian-tool.sh),
and every metric they use is one the hub exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.servers.tools import debian_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_promtool_checks_and_tests_the_rules() -> None:
    promtool = debian_tool("promtool", "prometheus")
    check = subprocess.run([promtool, "check", "rules", str(DEPLOY / "alerts.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", str(DEPLOY / "alerts.test.yml")], capture_output=True,
                          text=True, cwd=DEPLOY)
    assert test.returncode == 0, test.stdout + test.stderr


def test_the_rules_use_only_metrics_the_hub_exports() -> None:
    from hub.observability import metrics

    exported = {m._name for m in vars(metrics).values() if hasattr(m, "_name")}
    exported |= {n + suffix for n in exported for suffix in ("_total", "_bucket", "_count", "_sum")}
    # Each worker process's figures, as hub/observability/multiproc.py names them.
    from prometheus_client import ProcessCollector

    from hub.observability.multiproc import WORKER_NAMESPACE

    exported |= {s.name for f in ProcessCollector(namespace=WORKER_NAMESPACE, registry=None).collect()
                 for s in f.samples}
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"][0]["rules"]
    used = {name for r in rules for name in re.findall(r"\b(s117_[a-z0-9_]+)", r["expr"])}
    assert used and used <= exported, used - exported
