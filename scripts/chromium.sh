#!/usr/bin/env bash
# The headless browser the inspector's browser test drives (packages/cli/test/inspector-browser.test.ts).
#
#   scripts/chromium.sh ensure       install Debian's chromium when /usr/bin/chromium is missing
#   scripts/chromium.sh path         print the browser's path (fails when it is missing)
#   scripts/chromium.sh ensure-path  both: install when missing, then print the path
#
# Like scripts/postgres.sh: the tests never download a browser of their own; as root the harness installs Debian's
# package, otherwise it says what to install and fails.
set -euo pipefail

bin=/usr/bin/chromium

ensure() {
  if [ -x "$bin" ]; then return 0; fi
  if [ "$(id -u)" != "0" ]; then
    echo "chromium.sh: $bin not found and not root to install it; install Debian's chromium package" >&2
    exit 1
  fi
  echo "chromium.sh: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run (the PostgreSQL install, say) may hold the lock: wait for it rather than fail.
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
  [ -x "$bin" ] || { echo "chromium.sh: chromium installed but $bin is missing" >&2; exit 1; }
}

case "${1:-}" in
  ensure) ensure ;;
  ensure-path)
    ensure
    echo "$bin"
    ;;
  path)
    [ -x "$bin" ] || { echo "chromium.sh: $bin not found; run scripts/chromium.sh ensure" >&2; exit 1; }
    echo "$bin"
    ;;
  *)
    echo "usage: scripts/chromium.sh ensure|path|ensure-path" >&2
    exit 2
    ;;
esac
