#!/usr/bin/env bash
# Prints an HAProxy configuration that balances pages and WebSockets over edges:
#   scripts/haproxy.cfg.sh <listen host:port> <edge host:port>...
# make cluster and the load-balancer test use it; deploy/haproxy.cfg is the same with
# production settings. Each edge is checked on /readyz; a socket stays on the edge it
# was opened on (HAProxy tunnels it) for up to an hour of silence (the edge pings
# every 30 s, so only a dead client is cut); X-Forwarded-For names the client, which
# the edges trust from the balancer (EDGESVC_TRUSTED_PROXIES); the response header
# Gatehouse-Edge names the edge that answered.
set -euo pipefail
listen=$1
shift
cat <<CFG
global
    maxconn 8000

defaults
    mode http
    option http-server-close
    timeout connect 5s
    timeout client  60s
    timeout server  60s
    timeout tunnel  1h
    timeout client-fin 5s

frontend gatehouse
    bind $listen
    # No rule keeps /metrics from the world: the edges serve it on an internal port
    # only (EDGESVC_METRICS_LISTEN), which Prometheus scrapes directly.
    option forwardfor
    default_backend edges

backend edges
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    http-response set-header Gatehouse-Edge %s
CFG
i=0
for edge in "$@"; do
  i=$((i + 1))
  echo "    server edge-$i $edge check inter 1s fall 2 rise 1"
done
