# Sourced by run.sh (make run) and cluster.sh (make cluster), from the checkout's root:
# checking ports, labelling logs, the database, the secrets kept in .run/, the
# migrations and the demo user (prepare), and stopping what was started.

# label prefixes each line of a process's log with its name, so that the services
# sharing one terminal can be told apart.
label() { sed -u "s/^/$(printf '%-9s' "$1")| /"; }

# holder names the process listening on host:port, if ss can tell.
holder() {
  command -v ss >/dev/null || return 0
  { ss -Hltnp "sport = :${1##*:}" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -1 |
    sed 's/users:(("\([^"]*\)",pid=\([0-9]*\)/\1, pid \2/'; } || true # another user's process: unnamed
}

# require_free exits, saying what holds them, unless every host:port given is free: a
# process left on one would answer in a new one's place.
require_free() {
  local busy=0 a who
  for a in "$@"; do
    if (exec 3<>"/dev/tcp/${a%:*}/${a##*:}") 2>/dev/null; then
      who=$(holder "$a" || true)
      echo "$a is already in use${who:+ ($who)}" >&2
      busy=1
    fi
  done
  if ((busy)); then
    echo "Is 'make run' or 'make cluster' running already? Stop it (Ctrl-C in its terminal) or what holds the port," >&2
    echo "or choose other addresses (make run: AUTHSVC_LISTEN, EDGESVC_LISTEN, EDGESVC_API_LISTEN, AUTHSVC_METRICS_LISTEN, EDGESVC_METRICS_LISTEN)." >&2
    exit 1
  fi
}

# waitport waits until host:port takes connections, or the last process started
# exits (named $2).
waitport() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "$2 exited; see its log above" >&2; exit 1; }
    sleep 0.1
  done
  echo "$2 did not listen on $1" >&2
  exit 1
}

# prepare gets everything the services need: PostgreSQL (DATABASE_URL, or the private
# cluster scripts/pg.sh starts; pgdir is then where it lives), the secrets, the
# migrations and the demo user (demo says how to sign in).
pgdir=
prepare() {
  if [ -z "${DATABASE_URL:-}" ]; then
    DATABASE_URL=$(scripts/pg.sh)
    pgdir=$(scripts/pg.sh dir)
  fi
  export DATABASE_URL

  # The tokens (admin, front-end, edge API), the layer key and the demo password are made once and
  # kept in .run/ (git-ignored), so they stay the same from run to run until `make clean`.
  newsecret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
  for f in admin-token api-token frontend-token layer-key; do
    [ -s ".run/$f" ] || { newsecret >".run/$f"; chmod 600 ".run/$f"; }
  done
  [ -s .run/demo-password ] || { newsecret | head -c 16 >.run/demo-password; chmod 600 .run/demo-password; }

  local out
  if ! out=$(bin/authsvc migrate 2>&1); then
    echo "$out" | label authsvc >&2
    echo >&2
    echo "authsvc could not prepare the database at DATABASE_URL=$DATABASE_URL (above: why)." >&2
    echo "The database must exist and the URL's user must be able to create tables in it" >&2
    echo "(createdb NAME, or CREATE DATABASE NAME); or unset DATABASE_URL for a private cluster." >&2
    exit 1
  fi
  case "$(bin/authsvc demo-user demo <.run/demo-password)" in
    created) demo="user demo, password $(cat .run/demo-password) (created now)" ;;
    *)       demo="user demo, password $(cat .run/demo-password) (if you have not changed it; users already existed)" ;;
  esac
}

# grpcurl_hint is the banner's grpcurl line for the arguments given: as it can be run.
grpcurl_hint() {
  if [ -x bin/grpcurl ]; then
    echo "bin/grpcurl $*"
  else
    echo "(grpcurl is not installed: 'make grpcurl' puts the pinned one in bin/, in about a minute) bin/grpcurl $*"
  fi
}

# pids are what was started, in order; stop ends them last first (the edges before
# authsvc, so that sockets get 1001 from a live edge), at Ctrl-C or any exit.
pids=()
stop() {
  trap - INT TERM EXIT
  ((${#pids[@]})) || return 0
  echo; echo "stopping..."
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap stop INT TERM EXIT
