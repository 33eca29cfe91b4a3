#!/usr/bin/env bash
# Prints a PostgreSQL admin URL for gatehouse to use, starting a private cluster if
# needed.
#   - DATABASE_URL set: printed as it is (nothing is started).
#   - otherwise: a cluster under .run/pg (created on first use with the local
#     PostgreSQL server binaries, kept until `make clean`), listening only on a Unix
#     socket inside .run/pg, so it never clashes with another PostgreSQL on the machine.
# Usage: scripts/pg.sh [start|stop|url]   (default: start, then print the URL)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.run/pg"
data="$dir/data"
cmd=${1:-start}

if [ -n "${DATABASE_URL:-}" ] && [ "$cmd" != stop ]; then
  printf '%s\n' "$DATABASE_URL"
  exit 0
fi

url="postgres://postgres@/gatehouse?host=$dir&sslmode=disable"

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  cat >&2 <<'MSG'
pg.sh: no PostgreSQL server binaries (initdb, pg_ctl) found.
Install them, e.g. on Debian/Ubuntu:  sudo apt-get install postgresql
or point DATABASE_URL at an existing PostgreSQL, e.g.
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres make test
MSG
  exit 1
}

# as_owner runs a command as the cluster's owner: initdb and postgres refuse root, so
# root runs them as the postgres user.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    bindir=$(find_bindir)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || { echo "pg.sh: running as root needs a 'postgres' user (apt-get install postgresql creates it)" >&2; exit 1; }
      chown postgres "$dir"
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
      as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if ! as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_owner "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off -c max_connections=300" >/dev/null \
        || { tail -20 "$dir/server.log" >&2; exit 1; }
    fi
    if [ -z "$("$bindir/psql" -h "$dir" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'gatehouse'")" ]; then
      "$bindir/psql" -q -h "$dir" -U postgres -d postgres -c "CREATE DATABASE gatehouse" >/dev/null
    fi
    printf '%s\n' "$url"
    ;;
  stop)
    [ -f "$data/PG_VERSION" ] || exit 0
    bindir=$(find_bindir)
    as_owner "$bindir/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true
    ;;
  url)
    printf '%s\n' "$url"
    ;;
  *)
    echo "usage: $0 [start|stop|url]" >&2; exit 2
    ;;
esac
