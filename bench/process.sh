#!/usr/bin/env bash
# bench/process.sh — message processing throughput (issue 2):
#   1. BenchmarkProcess10kHello: 10,000 small sealed HELLO files from two peers in
#      incoming/, one ProcessIncoming (verify, act, commit Message-Id and reply, seal the
#      replies into outgoing/), reported as files/s;
#   2. with SEAL=1, the pgpmsg seal/open benchmarks on a 256 MiB payload (slow: minutes).
# Usage: bash bench/process.sh            COUNT=3 bash bench/process.sh   SEAL=1 bash bench/process.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-2}

echo "== BenchmarkProcess10kHello (benchtime ${COUNT}x)"
go test -count=1 -run x -bench 'Process10kHello' -benchtime "${COUNT}x" ./agent/ |
  awk '/^Benchmark/ { for (i = 1; i <= NF; i++) if ($i == "files/s") print "   ", $1, $(i-1), "files/s" }'

if [[ "${SEAL:-0}" == 1 ]]; then
  echo "== pgpmsg Seal/Open, 256 MiB payload"
  go test -count=1 -run x -bench 'Seal|Open' -benchtime 3x ./pgpmsg/ |
    awk '/^Benchmark/ { for (i = 1; i <= NF; i++) if ($i == "MB/s") print "   ", $1, $(i-1), "MB/s" }'
fi
