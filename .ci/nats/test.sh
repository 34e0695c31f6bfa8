#!/usr/bin/env bash
# CI: the JetStream store's tests against three real nats-server processes, built from the
# module's own nats-server version, as a cluster on loopback; then stop exactly those.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d /tmp/dibs-nats.XXXXXX)
go build -o "$work/nats-server" github.com/nats-io/nats-server/v2
routes=nats://127.0.0.1:16201,nats://127.0.0.1:16202,nats://127.0.0.1:16203
pids=()
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap stop EXIT
for i in 1 2 3; do
    "$work/nats-server" -n "ci$i" -a 127.0.0.1 -p "1610$i" -m "1630$i" -js -sd "$work/n$i" \
        --cluster_name dibs-ci --cluster "nats://127.0.0.1:1620$i" --routes "$routes" \
        >"$work/n$i.log" 2>&1 &
    pids+=($!)
done
# Until each node says JetStream is up and current in the cluster.
for i in 1 2 3; do
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:1630$i/healthz" >/dev/null && break
        sleep 0.2
    done
    curl -sf "http://127.0.0.1:1630$i/healthz" >/dev/null || { cat "$work/n$i.log"; exit 1; }
done
DIBS_NATS_URLS=nats://127.0.0.1:16101,nats://127.0.0.1:16102,nats://127.0.0.1:16103 \
    go test -count=1 -run 'TestConformance|TestReplicas|TestTwoRelays' -v ./relay/jetstream/ | grep -E '^(--- |ok|FAIL)'
