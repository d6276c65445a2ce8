#!/bin/sh
# Make sure poppler's pdftoppm / pdftotext are installed (the tests render
# recharge statement PDFs to PNG with them). Installing needs root and
# apt-get (Debian/Ubuntu); elsewhere install poppler-utils yourself.
set -eu
if command -v pdftoppm >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-poppler: no pdftoppm, and not root with apt-get to install poppler-utils" >&2
    exit 2
fi
echo "ensure-poppler: installing poppler-utils (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends poppler-utils >&2 || {
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends poppler-utils >&2
}
