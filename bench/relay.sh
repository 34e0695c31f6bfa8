#!/usr/bin/env bash
# bench/relay.sh — deposits and collections per second, and MB/s, through a relay_server
# front (HTTP on loopback, sessions, signed requests) for the directory store (--dir) and
# for JetStream (--store): three real nats-server processes built from the module, as a
# cluster on loopback; deposits go through one relay instance, collections through another.
# Usage: bash bench/relay.sh             (3 rounds of each case)
#        ROUNDS=1 bash bench/relay.sh    (quicker)
# Needs: go, curl. Uses a temp dir in /tmp and ports 16401-16603 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d /tmp/dibs-bench-relay.XXXXXX)
go build -o "$work/nats-server" github.com/nats-io/nats-server/v2
routes=nats://127.0.0.1:16501,nats://127.0.0.1:16502,nats://127.0.0.1:16503
pids=()
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap stop EXIT
for i in 1 2 3; do
    "$work/nats-server" -n "bench$i" -a 127.0.0.1 -p "1640$i" -m "1660$i" -js -sd "$work/n$i" \
        --cluster_name dibs-bench --cluster "nats://127.0.0.1:1650$i" --routes "$routes" \
        >"$work/n$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:1660$i/healthz" >/dev/null && break
        sleep 0.2
    done
    curl -sf "http://127.0.0.1:1660$i/healthz" >/dev/null || { cat "$work/n$i.log"; exit 1; }
done
echo "== $(nproc) cores; nats-server $("$work/nats-server" --version); $ROUNDS rounds each"
DIBS_NATS_URLS=nats://127.0.0.1:16401,nats://127.0.0.1:16402,nats://127.0.0.1:16403 \
    go test -run XXX -bench BenchmarkRelayStore -benchtime "${ROUNDS}x" ./relay/jetstream/ |
    awk '/^BenchmarkRelayStore/ {
        name = $1; sub(/^BenchmarkRelayStore\//, "", name); sub(/-[0-9]+$/, "", name)
        for (i = 3; i < NF; i++) m[$(i+1)] = $i
        printf "%-28s %8.1f deposits/s %7.1f MB/s   %8.1f collections/s %7.1f MB/s\n", name,
            m["deposits/s"], m["depositMB/s"], m["collections/s"], m["collectMB/s"]
    }'
