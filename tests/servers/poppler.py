"""Poppler's pdftoppm / pdftotext for the PDF tests: installed from Debian's
poppler-utils by scripts/debian-tool.sh when missing (as for chromium and
promtool); otherwise the test fails under CI and skips elsewhere, saying why."""

from __future__ import annotations

from tests.servers.tools import debian_tool


def require_poppler() -> None:
    debian_tool("pdftoppm", "poppler-utils")
    debian_tool("pdftotext", "poppler-utils")
