#!/usr/bin/env bash
# CI: the JetStream store's tests against three real nats-server processes, built from the
# module's own nats-server version, as a cluster on loopback; then stop exactly those.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .ci/nats/cluster.sh
start_nats_cluster "$(mktemp -d /tmp/dibs-nats.XXXXXX)" ci 16100
DIBS_NATS_URLS=$NATS_URLS \
    go test -count=1 -run 'TestConformance|TestReplicas|TestTwoRelays' -v ./relay/jetstream/ | grep -E '^(--- |ok|FAIL)'
# Last, as it leaves the cluster one node short: SIGKILL the first node in the middle of 200
# deposits and collections (a crash, not a shutdown that hands its leadership over).
DIBS_NATS_URLS=$NATS_URLS DIBS_NATS_KILL_PID=${nats_pids[0]} \
    go test -count=1 -run 'TestKillOneNode' -v ./relay/jetstream/ | grep -E '^(--- |ok|FAIL|\s+store_test)'
