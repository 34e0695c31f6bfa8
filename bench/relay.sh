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
source .ci/nats/cluster.sh
start_nats_cluster "$(mktemp -d /tmp/dibs-bench-relay.XXXXXX)" bench 16400
echo "== $(nproc) cores; nats-server $("$nats_work/nats-server" --version); $ROUNDS rounds each"
DIBS_NATS_URLS=$NATS_URLS \
    go test -run XXX -bench BenchmarkRelayStore -benchtime "${ROUNDS}x" ./relay/jetstream/ |
    awk '/^BenchmarkRelayStore/ {
        name = $1; sub(/^BenchmarkRelayStore\//, "", name); sub(/-[0-9]+$/, "", name)
        for (i = 3; i < NF; i++) m[$(i+1)] = $i
        printf "%-28s %8.1f deposits/s %7.1f MB/s   %8.1f collections/s %7.1f MB/s\n", name,
            m["deposits/s"], m["depositMB/s"], m["collections/s"], m["collectMB/s"]
    }'
