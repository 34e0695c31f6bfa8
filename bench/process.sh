#!/usr/bin/env bash
# bench/process.sh — message processing throughput (issue 2):
#   1. BenchmarkProcess10kHello: 10,000 small sealed HELLO files from two peers in
#      incoming/, one ProcessIncoming (verify, act, commit Message-Id and reply, seal the
#      replies into outgoing/), reported as files/s;
#   2. with SEAL=1, the pgpmsg seal/open benchmarks on a 256 MiB payload (slow: minutes).
#   The first round on a node is faster than later ones on ext4 (see the benchmark's
#   comment: inodes deleted minutes ago are skipped by the allocator), so both are shown:
#   COUNT fresh nodes of one round each, and one node doing ROUNDS rounds in a row.
# Usage: bash bench/process.sh     COUNT=5 ROUNDS=4 bash bench/process.sh     SEAL=1 bash bench/process.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-3}
ROUNDS=${ROUNDS:-3}
CPU=${CPU:-$((2 * $(nproc)))}   # the dibs binary runs with twice as many Ps as cores

files_s() { awk '/^Benchmark/ { for (i = 1; i <= NF; i++) if ($i == "files/s") print "   ", $(i-1), "files/s" }'; }
echo "== BenchmarkProcess10kHello: first round on a fresh node, ${COUNT} times"
go test -count="$COUNT" -cpu "$CPU" -run x -bench 'Process10kHello' -benchtime 1x ./agent/ | files_s
echo "== BenchmarkProcess10kHello: ${ROUNDS} rounds in a row on one node (steady state)"
go test -count=1 -cpu "$CPU" -run x -bench 'Process10kHello' -benchtime "${ROUNDS}x" ./agent/ | files_s

if [[ "${SEAL:-0}" == 1 ]]; then
  echo "== pgpmsg Seal/Open, 256 MiB payload"
  go test -count=1 -run x -bench 'Seal|Open' -benchtime 3x ./pgpmsg/ |
    awk '/^Benchmark/ { for (i = 1; i <= NF; i++) if ($i == "MB/s") print "   ", $1, $(i-1), "MB/s" }'
fi
