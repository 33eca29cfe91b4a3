#!/usr/bin/env bash
# `make cluster`: the whole system as it is deployed, on this machine: PostgreSQL
# (DATABASE_URL, or the private cluster scripts/pg.sh starts), the pinned nats-server,
# two authsvc replicas, two edges sharing the layer over NATS, and HAProxy in front,
# balancing pages and WebSockets over the edges. Ctrl-C stops everything it started.
#
# Ports (all on 127.0.0.1; override with the variables): the balancer LB_PORT (8000);
# edges 8001 and 8002, their APIs 50052 and 50062; authsvc 50051 and 50061; NATS
# NATS_PORT (4223: 4222 is often taken by a system NATS).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p .run/cluster

command -v haproxy >/dev/null || {
  echo "make cluster needs HAProxy (Debian: apt-get install haproxy)" >&2
  exit 1
}

. scripts/common.sh

lb_port=${LB_PORT:-8000}
nats_port=${NATS_PORT:-4223}
auth_addrs=(127.0.0.1:50051 127.0.0.1:50061)
edge_addrs=(127.0.0.1:8001 127.0.0.1:8002)
api_addrs=(127.0.0.1:50052 127.0.0.1:50062)
metrics_addrs=(127.0.0.1:9101 127.0.0.1:9102)
edge_metrics_addrs=(127.0.0.1:9111 127.0.0.1:9112)

require_free "127.0.0.1:$lb_port" "127.0.0.1:$nats_port" "${auth_addrs[@]}" "${edge_addrs[@]}" "${api_addrs[@]}" "${metrics_addrs[@]}" "${edge_metrics_addrs[@]}"
prepare

# NATS, with room for the largest message an edge takes (1 MiB) and its header.
cat >.run/cluster/nats.conf <<CONF
listen: 127.0.0.1:$nats_port
max_payload: 2MB
CONF
bin/nats-server -c .run/cluster/nats.conf > >(label nats) 2>&1 & pids+=($!)
waitport "127.0.0.1:$nats_port" nats-server

for i in 0 1; do
  AUTHSVC_LISTEN=${auth_addrs[i]} AUTHSVC_METRICS_LISTEN=${metrics_addrs[i]} AUTHSVC_ADMIN_TOKEN_FILE=.run/admin-token \
    AUTHSVC_FRONTEND_TOKEN_FILE=.run/frontend-token \
    bin/authsvc > >(label "authsvc-$((i + 1))") 2>&1 & pids+=($!)
  waitport "${auth_addrs[i]}" "authsvc-$((i + 1))"
done

for i in 0 1; do
  EDGESVC_LISTEN=${edge_addrs[i]} EDGESVC_API_LISTEN=${api_addrs[i]} EDGESVC_METRICS_LISTEN=${edge_metrics_addrs[i]} \
    EDGESVC_AUTH_ADDR=${auth_addrs[i]} EDGESVC_AUTH_TOKEN_FILE=.run/frontend-token \
    EDGESVC_API_TOKEN_FILE=.run/api-token EDGESVC_NODE_ID=edge-$((i + 1)) \
    EDGESVC_NATS_URL=nats://127.0.0.1:$nats_port EDGESVC_LAYER_KEY_FILE=.run/layer-key \
    EDGESVC_PUBLIC_URL=http://127.0.0.1:$lb_port EDGESVC_TRUSTED_PROXIES=127.0.0.1 \
    bin/edgesvc > >(label "edge-$((i + 1))") 2>&1 & pids+=($!)
done
for a in "${edge_addrs[@]}"; do
  for _ in $(seq 100); do
    curl -fs "http://$a/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
done

scripts/haproxy.cfg.sh "127.0.0.1:$lb_port" "${edge_addrs[@]}" >.run/cluster/haproxy.cfg
haproxy -W -db -f .run/cluster/haproxy.cfg > >(label haproxy) 2>&1 & pids+=($!)
waitport "127.0.0.1:$lb_port" haproxy

cat <<MSG

  gatehouse is running: two edges behind HAProxy, over NATS.

    open       http://127.0.0.1:$lb_port/  (HAProxy: each new page or socket goes to the next edge;
               the response header Gatehouse-Edge names it) — try /chat/lobby/ in two browsers
    sign in as $demo
    edges      http://${edge_addrs[0]}/ (edge-1, API ${api_addrs[0]}), http://${edge_addrs[1]}/ (edge-2, API ${api_addrs[1]})
    authsvc    ${auth_addrs[0]}, ${auth_addrs[1]} (one PostgreSQL)
    NATS       nats://127.0.0.1:$nats_port
    metrics    http://${edge_metrics_addrs[0]}/metrics, http://${edge_metrics_addrs[1]}/metrics (edges), http://${metrics_addrs[0]}/metrics, http://${metrics_addrs[1]}/metrics (authsvc)
    edge API   $(grpcurl_hint -plaintext -H "\"authorization: Bearer \$(cat .run/api-token)\"" "${api_addrs[0]}" gatehouse.edge.v1.EdgeService/ListConnections)
    admin      $(grpcurl_hint -plaintext -H "\"authorization: Bearer \$(cat .run/admin-token)\"" "${auth_addrs[0]}" list)
    database   $DATABASE_URL${pgdir:+
               (the private cluster: its data and socket are in $pgdir)}

  Ctrl-C stops them all (the private PostgreSQL keeps running; 'make clean' stops it).

MSG
wait -n "${pids[@]}"
