"""Poppler's pdftoppm / pdftotext for the PDF tests: installed by
scripts/ensure-poppler.sh when missing (Debian, as root); otherwise the test
fails under CI and skips elsewhere, saying why."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache

from tests.servers import unavailable
from tests.support import REPO


@cache
def _ensure() -> str | None:
    if shutil.which("pdftoppm") and shutil.which("pdftotext"):
        return None
    done = subprocess.run(["sh", str(REPO / "scripts" / "ensure-poppler.sh")], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0 or not shutil.which("pdftoppm"):
        return (done.stderr.strip().splitlines() or ["install poppler-utils"])[-1]
    return None


def require_poppler() -> None:
    reason = _ensure()
    if reason:
        unavailable("pdftoppm (poppler-utils)", reason)
