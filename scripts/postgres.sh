#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and benchmarks, so nobody ever has to start one by hand.
#
#   scripts/postgres.sh ensure            install Debian's postgresql when its server binaries are missing
#   scripts/postgres.sh start DIR [fsync] initdb a cluster in DIR, start it on a free loopback port, print its URL
#   scripts/postgres.sh stop DIR          stop the cluster in DIR and remove DIR
#
# initdb and postgres refuse to run as root, so as root the cluster belongs to the `postgres` user.
set -euo pipefail

find_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

ensure() {
  if find_bin >/dev/null; then return 0; fi
  if [ "$(id -u)" != "0" ]; then
    echo "postgres.sh: PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin and not root to install them; install Debian's postgresql package" >&2
    exit 1
  fi
  echo "postgres.sh: installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  find_bin >/dev/null || { echo "postgres.sh: postgresql installed but no server binaries found" >&2; exit 1; }
}

as_owner() {
  if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  # Ask the kernel for a free loopback port.
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

start() {
  local dir="$1" fsync="${2:-off}"
  ensure
  local bin
  bin="$(find_bin)"
  mkdir -p "$dir"
  if [ "$(id -u)" = "0" ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$dir"
    chmod 700 "$dir"
  fi
  as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  local port attempt
  for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=$fsync -c max_connections=200 -c shared_buffers=256MB" \
      start >/dev/null 2>&1; then
      echo "postgres://postgres@127.0.0.1:$port/postgres"
      return 0
    fi
  done
  echo "postgres.sh: the server did not start; its log:" >&2
  cat "$dir/server.log" >&2 || true
  exit 1
}

stop() {
  local dir="$1" bin
  bin="$(find_bin)" || true
  if [ -n "${bin:-}" ] && [ -d "$dir/data" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  ensure) ensure ;;
  start) start "${2:?usage: postgres.sh start DIR [fsync]}" "${3:-off}" ;;
  stop) stop "${2:?usage: postgres.sh stop DIR}" ;;
  *) echo "usage: postgres.sh ensure | start DIR [on|off] | stop DIR" >&2; exit 2 ;;
esac
