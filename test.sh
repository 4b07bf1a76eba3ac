#!/usr/bin/env bash
# The test command: installs what the tests need and is missing, then runs every test.
#   ./test.sh [cargo test args...]      e.g. ./test.sh -p dirigo-engine --test service
# The dashboard test drives Debian's `chromium` headless. A missing package is installed with
# apt-get when we are root; otherwise this fails with what to install (never skips the test).
set -euo pipefail
cd "$(dirname "$0")"

# ensure_pkg PACKAGE BINARY: BINARY on PATH, else install the Debian PACKAGE that provides it.
ensure_pkg() {
    local pkg=$1 bin=$2
    command -v "$bin" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: the tests need \`$bin\` (Debian package \`$pkg\`); install it with:" >&2
        echo "    sudo apt-get install -y $pkg" >&2
        exit 1
    fi
    echo "test.sh: installing $pkg (for \`$bin\`)" >&2
    apt-get install -y "$pkg" >/dev/null || { apt-get update >/dev/null && apt-get install -y "$pkg" >/dev/null; }
    command -v "$bin" >/dev/null 2>&1 || { echo "error: installed $pkg but \`$bin\` is still missing" >&2; exit 1; }
}

ensure_pkg chromium chromium
ensure_pkg redis-server redis-server

if [ $# -eq 0 ]; then
    set -- --workspace
fi
exec cargo test "$@"
