#!/usr/bin/env bash
# `make run`: PostgreSQL (DATABASE_URL, or the private cluster scripts/pg.sh starts),
# migrations, a demo user, authsvc and edgesvc. Ctrl-C stops everything it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p .run

. scripts/common.sh

export AUTHSVC_LISTEN=${AUTHSVC_LISTEN:-127.0.0.1:50051}
export EDGESVC_LISTEN=${EDGESVC_LISTEN:-127.0.0.1:8000}
export EDGESVC_AUTH_ADDR=${EDGESVC_AUTH_ADDR:-$AUTHSVC_LISTEN}
export EDGESVC_API_LISTEN=${EDGESVC_API_LISTEN:-127.0.0.1:50052}
export AUTHSVC_METRICS_LISTEN=${AUTHSVC_METRICS_LISTEN-127.0.0.1:9101}
export EDGESVC_METRICS_LISTEN=${EDGESVC_METRICS_LISTEN-127.0.0.1:9100}
require_free "$AUTHSVC_LISTEN" "$EDGESVC_LISTEN" "$EDGESVC_API_LISTEN" ${AUTHSVC_METRICS_LISTEN:+"$AUTHSVC_METRICS_LISTEN"} ${EDGESVC_METRICS_LISTEN:+"$EDGESVC_METRICS_LISTEN"}
prepare

# authsvc trusts as front ends (to name clients' addresses, to follow session ends)
# only those presenting the front-end token; the edge presents it.
export AUTHSVC_ADMIN_TOKEN=${AUTHSVC_ADMIN_TOKEN:-$(cat .run/admin-token)}
if [ -z "${AUTHSVC_FRONTEND_TOKEN:-}" ] && [ -z "${AUTHSVC_FRONTEND_TOKEN_FILE:-}" ]; then
  export AUTHSVC_FRONTEND_TOKEN_FILE=.run/frontend-token
  [ -n "${EDGESVC_AUTH_TOKEN:-}" ] || export EDGESVC_AUTH_TOKEN_FILE=${EDGESVC_AUTH_TOKEN_FILE:-.run/frontend-token}
fi
[ -n "${EDGESVC_API_TOKEN:-}" ] || export EDGESVC_API_TOKEN_FILE=${EDGESVC_API_TOKEN_FILE:-.run/api-token}

bin/authsvc > >(label authsvc) 2>&1 & pids+=($!)
# Start the edge once authsvc listens, so its first subscription succeeds.
waitport "$AUTHSVC_LISTEN" authsvc
bin/edgesvc > >(label edgesvc) 2>&1 & pids+=($!)

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
    grpcurl    $(grpcurl_hint -plaintext -H "\"authorization: Bearer \$(cat .run/admin-token)\"" "$AUTHSVC_LISTEN" list)
    edge API   $(grpcurl_hint -plaintext -H "\"authorization: Bearer \$(cat .run/api-token)\"" "$EDGESVC_API_LISTEN" list)
    metrics    ${EDGESVC_METRICS_LISTEN:+http://$EDGESVC_METRICS_LISTEN/metrics (edgesvc)}${AUTHSVC_METRICS_LISTEN:+, http://$AUTHSVC_METRICS_LISTEN/metrics (authsvc)}
    database   $DATABASE_URL${pgdir:+
               (the private cluster: its data and socket are in $pgdir)}

  Ctrl-C stops authsvc and edgesvc (the private PostgreSQL keeps running; 'make clean' stops it).

MSG
wait -n "${pids[@]}"
