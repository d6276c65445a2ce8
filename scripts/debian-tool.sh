#!/usr/bin/env bash
# debian-tool.sh COMMAND PACKAGE: print the path of COMMAND, installing the
# Debian PACKAGE first (apt-get, as root) if it is missing. Used by the test
# suite for the tools it drives: chromium (the console in a real browser) and
# promtool (the alert rules). Exit 1 with the reason when it cannot.
set -euo pipefail
cmd="$1"; pkg="$2"
if path=$(command -v "$cmd"); then echo "$path"; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "debian-tool: no $cmd and no apt-get to install $pkg" >&2; exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "debian-tool: no $cmd; installing $pkg needs root (apt-get install $pkg)" >&2; exit 1
fi
echo "debian-tool: installing $pkg (apt-get)" >&2
# Another apt-get may hold the lock for a while (a parallel install): wait for it.
for _ in $(seq 1 60); do
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >&2; then break; fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || true
    sleep 5
done
command -v "$cmd" || { echo "debian-tool: $pkg installed but no $cmd" >&2; exit 1; }
