#!/bin/sh
# Ensure Debian's chromium exists for the browser tests (Playwright drives it)
# and print its path. tests/e2e/test_workflow_console.py calls this when it
# finds no chromium on PATH.
#
# Installing needs root and apt-get (Debian/Ubuntu); elsewhere install
# chromium yourself.
set -eu

if path=$(command -v chromium 2>/dev/null); then
    echo "$path"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "chromium-test-browser: no chromium, and not root to install it" >&2
    exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium-test-browser: no chromium and no apt-get to install it" >&2
    exit 2
fi
echo "chromium-test-browser: installing chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends chromium >&2
command -v chromium || { echo "chromium-test-browser: installed chromium but it is not on PATH" >&2; exit 2; }
