"""Review (console security headers): the console pages took an operator's
hub:admin key yet were sent `Content-Security-Policy: default-src 'self'
'unsafe-inline'` (any injected inline script would run), with no
frame-ancestors, X-Frame-Options or nosniff (any site could frame the page).
Now the pages run no inline script: their scripts are the hub's own files
(/console/console.js, /console/workflows.js), and the pages and the scripts
carry a policy that allows nothing else, may not be framed, are never sniffed
and send no referrer. (A real browser loads the console under that policy with
no violation: tests/e2e/test_console_browser.py.)"""

from __future__ import annotations

import re

import pytest

CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"content-security-policy": CSP, "x-frame-options": "DENY", "x-content-type-options": "nosniff",
           "referrer-policy": "no-referrer", "cache-control": "no-store"}
PAGES = {"/console": "/console/console.js", "/console/workflows": "/console/workflows.js"}


def _policy(headers) -> dict[str, str]:  # noqa: ANN001
    return {k: headers.get(k) for k in HEADERS}


@pytest.mark.parametrize("page", sorted(PAGES))
async def test_a_console_page_runs_only_the_hubs_own_script_files(app_hub, page):
    r = await app_hub.http.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert _policy(r.headers) == HEADERS
    html = r.text
    # Every script is a file of the hub's, named by src; no inline script, handler or javascript: URL.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I)
    assert [re.search(r'src="([^"]+)"', attrs).group(1) for attrs, _ in scripts] == [PAGES[page]]
    assert all(not body.strip() for _, body in scripts)
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", html, re.I), "an inline on...= handler"
    assert "javascript:" not in html.lower()


@pytest.mark.parametrize("script", sorted(PAGES.values()))
async def test_the_console_scripts_are_served_as_javascript_with_the_same_headers(app_hub, script):
    r = await app_hub.http.get(script)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"  # nosniff: the type must be right
    assert _policy(r.headers) == HEADERS
    assert "document.getElementById" in r.text and "<script" not in r.text
