#!/usr/bin/env bash
# `make run`: PostgreSQL (DATABASE_URL, or the private cluster scripts/pg.sh starts),
# migrations, a demo user, authsvc and edgesvc. Ctrl-C stops everything it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p .run

pgdir=
if [ -z "${DATABASE_URL:-}" ]; then
  DATABASE_URL=$(scripts/pg.sh)
  pgdir=$(scripts/pg.sh dir)
fi
export DATABASE_URL

# The tokens (admin, front-end, edge API) and the demo password are made once and kept
# in .run/ (git-ignored), so they stay the same from run to run until `make clean`.
newsecret() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
[ -s .run/admin-token ] || { newsecret >.run/admin-token; chmod 600 .run/admin-token; }
[ -s .run/api-token ] || { newsecret >.run/api-token; chmod 600 .run/api-token; }
[ -s .run/frontend-token ] || { newsecret >.run/frontend-token; chmod 600 .run/frontend-token; }
export AUTHSVC_ADMIN_TOKEN=${AUTHSVC_ADMIN_TOKEN:-$(cat .run/admin-token)}
# authsvc trusts as front ends (to name clients' addresses, to follow session ends)
# only those presenting the front-end token; the edge presents it.
if [ -z "${AUTHSVC_FRONTEND_TOKEN:-}" ] && [ -z "${AUTHSVC_FRONTEND_TOKEN_FILE:-}" ]; then
  export AUTHSVC_FRONTEND_TOKEN_FILE=.run/frontend-token
  [ -n "${EDGESVC_AUTH_TOKEN:-}" ] || export EDGESVC_AUTH_TOKEN_FILE=${EDGESVC_AUTH_TOKEN_FILE:-.run/frontend-token}
fi
export AUTHSVC_LISTEN=${AUTHSVC_LISTEN:-127.0.0.1:50051}
export EDGESVC_LISTEN=${EDGESVC_LISTEN:-127.0.0.1:8000}
export EDGESVC_AUTH_ADDR=${EDGESVC_AUTH_ADDR:-$AUTHSVC_LISTEN}
export EDGESVC_API_LISTEN=${EDGESVC_API_LISTEN:-127.0.0.1:50052}
[ -n "${EDGESVC_API_TOKEN:-}" ] || export EDGESVC_API_TOKEN_FILE=${EDGESVC_API_TOKEN_FILE:-.run/api-token}

bin/authsvc migrate 2>/dev/null
[ -s .run/demo-password ] || { newsecret | head -c 16 >.run/demo-password; chmod 600 .run/demo-password; }
case "$(bin/authsvc demo-user demo <.run/demo-password)" in
  created) demo="user demo, password $(cat .run/demo-password) (created now)" ;;
  *)       demo="user demo, password $(cat .run/demo-password) (if you have not changed it; users already existed)" ;;
esac

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  # The edge first (its sockets get 1001), then authsvc.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap stop INT TERM EXIT

bin/authsvc & pids+=($!)
# Start the edge once authsvc listens, so its first subscription succeeds.
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/${AUTHSVC_LISTEN%:*}/${AUTHSVC_LISTEN##*:}") 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "authsvc exited; see its log above" >&2; exit 1; }
  sleep 0.1
done
bin/edgesvc & pids+=($!)

host=${EDGESVC_LISTEN%:*}; port=${EDGESVC_LISTEN##*:}
for _ in $(seq 100); do
  if curl -fs "http://$EDGESVC_LISTEN/readyz" >/dev/null 2>&1; then break; fi
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a service exited; see its log above" >&2; exit 1; }; done
  sleep 0.1
done

cat <<MSG

  gatehouse is running.

    open       http://$host:$port/
    sign in as $demo
    admin      AUTHSVC_ADMIN_TOKEN=$AUTHSVC_ADMIN_TOKEN
    tokens     .run/admin-token (AdminService), .run/frontend-token (the edge's, to authsvc),
               .run/api-token (the edge API)
    grpcurl    grpcurl -plaintext -H "authorization: Bearer \$(cat .run/admin-token)" $AUTHSVC_LISTEN list
    edge API   grpcurl -plaintext -H "authorization: Bearer \$(cat .run/api-token)" $EDGESVC_API_LISTEN list
    database   $DATABASE_URL${pgdir:+
               (the private cluster: its data and socket are in $pgdir)}

  Ctrl-C stops authsvc and edgesvc (the private PostgreSQL keeps running; 'make clean' stops it).

MSG
wait -n "${pids[@]}"
