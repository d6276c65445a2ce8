#!/bin/sh
# Ensure PostgreSQL server binaries exist for the test suite and print their
# directory (e.g. /usr/lib/postgresql/15/bin). tests/servers/postgres.py calls
# this when it finds no initdb; the server itself is started, per test
# session, by that module (as an unprivileged user, in a temporary directory).
#
#   scripts/postgres-test-server.sh            ensure the binaries, print the bin dir
#
# Installing needs root and apt-get (Debian/Ubuntu); elsewhere install
# PostgreSQL yourself or point S117_TEST_POSTGRES_URL at a server you run.
set -eu

find_bin() {
    if [ -n "${S117_POSTGRES_BIN:-}" ] && [ -x "$S117_POSTGRES_BIN/initdb" ]; then
        echo "$S117_POSTGRES_BIN"; return 0
    fi
    # Newest installed major version first.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then echo "$d"; return 0; fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
        dirname "$(command -v initdb)"; return 0
    fi
    return 1
}

if bin=$(find_bin); then
    echo "$bin"; exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "postgres-test-server: no PostgreSQL server binaries, and not root to install them" >&2
    exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "postgres-test-server: no PostgreSQL server binaries and no apt-get to install them" >&2
    exit 2
fi
echo "postgres-test-server: installing PostgreSQL server packages (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends postgresql >&2
# The Debian package creates and starts a default cluster; the tests never use
# it (they run their own server on a free port), so it is left as the package made it.
if bin=$(find_bin); then
    echo "$bin"; exit 0
fi
echo "postgres-test-server: installed postgresql but found no initdb" >&2
exit 2
