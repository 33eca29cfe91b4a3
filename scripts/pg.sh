#!/usr/bin/env bash
# Prints a PostgreSQL admin URL for gatehouse to use, starting a private cluster if
# needed.
#   - DATABASE_URL set: printed as it is (nothing is started).
#   - otherwise: a private cluster, created on first use with the local PostgreSQL
#     server binaries and kept until `make clean`. It listens only on a Unix socket in
#     its own directory (mode 0700, owned by the cluster's owner), so it never clashes
#     with another PostgreSQL and no other local user can reach it.
#
# Where the cluster lives: .run/pg in the checkout, when its owner can use that. As
# root, initdb and postgres run as the `postgres` user (they refuse root), and that
# user cannot enter a checkout below a private directory (root's 0700 home, a
# `mktemp -d` folder); and a socket path must fit in 107 bytes. When .run/pg does not
# work, the cluster lives in a fresh directory under the system temporary folder
# (made by mktemp -d, so no other user can have prepared it, named after the checkout:
# gatehouse-pg.<checkout>.XXXXXXXX), recorded in .run/pg-dir so every later run of
# this script finds it. If that directory was cleared (a reboot empties /tmp), a new
# one is made and the cluster re-created.
#
# Usage: scripts/pg.sh [start|stop|clean|dir|url]
#   start (default)  start the cluster (creating it if needed) and print its URL
#   stop             stop the cluster, wherever it lives
#   clean            stop it and delete a cluster kept outside the checkout
#                    (`make clean` deletes .run/ itself)
#   dir              print the cluster's directory (nothing is started)
#   url              print the cluster's URL (nothing is started)
set -euo pipefail
export LC_ALL=C # ${#var} counts bytes

root=$(cd "$(dirname "$0")/.." && pwd)
run="$root/.run"
local_dir="$run/pg"
pointer="$run/pg-dir"
cmd=${1:-start}

if [ -n "${DATABASE_URL:-}" ] && [ "$cmd" != stop ] && [ "$cmd" != clean ]; then
  printf '%s\n' "$DATABASE_URL"
  exit 0
fi

# The cluster's owner: initdb and postgres refuse root, so root runs them as postgres.
if [ "$(id -u)" = 0 ]; then owner=postgres; else owner=$(id -un); fi

# as_owner runs a command as the cluster's owner, from / (which every user can enter;
# every path given is absolute).
as_owner() {
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# fail WHAT [WHY]: says what was tried and why it failed, then what to do, and exits.
fail() {
  {
    printf 'pg.sh: could not %s.\n' "$1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/    /'; fi
    cat <<'MSG'
gatehouse needs a PostgreSQL. To use one you already run instead of the private
cluster, set DATABASE_URL (tests create and drop their own databases in it), e.g.
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres make test
`make clean` deletes the private cluster, so the next run creates it afresh.
MSG
  } >&2
  exit 1
}

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  fail "find the PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin or on PATH" \
    "Install them, e.g. on Debian/Ubuntu: apt-get install postgresql"
}

# socket_fits DIR: the server's socket, DIR/.s.PGSQL.5432, fits in a Unix socket
# address (107 bytes).
socket_fits() { [ $((${#1} + 14)) -le 107 ]; }

# owned DIR: DIR is a real directory (not a symlink) that only the owner can enter:
# one this script made. Anything else at a recorded path is never used or deleted.
owned() {
  [ -d "$1" ] && [ ! -L "$1" ] && [ "$(stat -c '%U %a' "$1")" = "$owner 700" ]
}

# reachable DIR: the owner can create files in DIR (it can search every parent).
reachable() { as_owner test -w "$1" -a -x "$1"; }

# recorded prints the temporary directory recorded in .run/pg-dir, if it still exists
# and is this script's.
recorded() {
  local d
  [ -f "$pointer" ] || return 1
  d=$(cat "$pointer")
  owned "$d" || return 1
  printf '%s\n' "$d"
}

# current prints the directory of an existing cluster (nothing is created).
current() {
  recorded && return
  if [ -f "$local_dir/data/PG_VERSION" ]; then printf '%s\n' "$local_dir"; return; fi
  return 1
}

# choose prints the directory the cluster lives in, making it if needed.
choose() {
  local d why tmp name
  recorded && return
  mkdir -p "$run"
  why=
  if ! socket_fits "$local_dir"; then
    why="its socket path, $local_dir/.s.PGSQL.5432, is longer than 107 bytes"
  elif ! as_owner test -x "$run"; then
    why="the $owner user cannot enter $run (a parent directory is private to $(id -un))"
  else
    mkdir -p "$local_dir"
    [ "$(id -u)" = 0 ] && chown postgres "$local_dir"
    chmod 700 "$local_dir"
    if reachable "$local_dir"; then printf '%s\n' "$local_dir"; return; fi
    why="the $owner user cannot write to $local_dir"
  fi
  # .run/pg does not work: a fresh directory under the system temporary folder.
  tmp=${TMPDIR:-/tmp}
  name=$(printf '%s' "$(basename "$root")" | tr -c 'A-Za-z0-9._-' '_' | cut -c1-32)
  if [ -f "$pointer" ]; then
    echo "pg.sh: the private cluster's directory $(cat "$pointer") is gone; creating a new one" >&2
  fi
  d=$(mktemp -d "$tmp/gatehouse-pg.$name.XXXXXXXX") ||
    fail "make a directory for the private cluster in $tmp" "$why, so it cannot live in $local_dir"
  [ "$(id -u)" = 0 ] && chown postgres "$d"
  if ! reachable "$d" || ! socket_fits "$d"; then
    rmdir "$d"
    fail "find a directory for the private cluster" \
      "$why, so it cannot live in $local_dir; and the $owner user cannot use $tmp either (or its path is too long). Set TMPDIR to a directory it can enter."
  fi
  printf '%s\n' "$d" >"$pointer"
  printf '%s\n' "$d"
}

url_of() { printf 'postgres://postgres@/gatehouse?host=%s&sslmode=disable\n' "$1"; }

stop_in() {
  local bindir
  [ -f "$1/data/PG_VERSION" ] || return 0
  bindir=$(find_bindir)
  as_owner "$bindir/pg_ctl" -D "$1/data" -m fast stop >/dev/null 2>&1 || true
}

case "$cmd" in
  start)
    bindir=$(find_bindir)
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
      fail "start the private cluster as root" \
        "initdb and postgres refuse to run as root, and there is no 'postgres' user to run them as (apt-get install postgresql creates it)."
    fi
    dir=$(choose)
    data="$dir/data"
    if [ ! -f "$data/PG_VERSION" ]; then
      rm -rf "$data"
      as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
        fail "create the private cluster: ran $bindir/initdb -D $data as user $owner, which said" "$(tail -n 20 "$dir/initdb.log")"
    fi
    if ! as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_owner "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off -c max_connections=300" >/dev/null ||
        fail "start the private cluster: ran $bindir/pg_ctl start -D $data as user $owner; its log ($dir/server.log) ends" "$(tail -n 20 "$dir/server.log" 2>&1)"
    fi
    exists=$("$bindir/psql" -h "$dir" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'gatehouse'" 2>&1) ||
      fail "connect to the private cluster through its socket in $dir" "$exists"
    if [ -z "$exists" ]; then
      out=$("$bindir/psql" -q -h "$dir" -U postgres -d postgres -c "CREATE DATABASE gatehouse" 2>&1) ||
        fail "create the gatehouse database in the private cluster ($dir)" "$out"
    fi
    url_of "$dir"
    ;;
  stop)
    stop_in "$local_dir"
    if d=$(recorded); then stop_in "$d"; fi
    ;;
  clean)
    stop_in "$local_dir"
    if d=$(recorded); then
      stop_in "$d"
      rm -rf "$d"
    fi
    rm -f "$pointer"
    ;;
  dir)
    current || fail "find the private cluster" "it has not been created yet: scripts/pg.sh start creates it"
    ;;
  url)
    d=$(current) || fail "find the private cluster" "it has not been created yet: scripts/pg.sh start creates it"
    url_of "$d"
    ;;
  *)
    echo "usage: $0 [start|stop|clean|dir|url]" >&2
    exit 2
    ;;
esac
