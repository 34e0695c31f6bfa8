#!/usr/bin/env bash
# bench/attack.sh — what a hostile peer, a stalled client and a full disk can still do
# (issue 17), against a real `dibs relay_server` and a real `dibs start_daemon` on loopback:
#   - SLOW slow session bodies (a byte every 2 s) against each server, more than its 64
#     slots for unauthenticated requests, and SLOW_DEPOSITS stalled authenticated deposits
#     from mallory, a real peer of the daemon's node allowed at the relay;
#   - mallory pushing FLOOD signed 3 MB messages of an unknown type, and 200 MB files;
#   - meanwhile bob and carol, legitimate nodes, doing send_hello / poll_passives /
#     process_message / send_message rounds through the daemon and the relay;
#   - then a full disk: a node on a small tmpfs (if mount works; root) gets valid STOREs.
# It prints connections held and for how long, the legitimate commands served and their
# latency, and what mallory made the node keep. About DURATION + 30 s in all.
# Usage: bash bench/attack.sh     DURATION=120s SLOW=100 bash bench/attack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/dibs" ./cmd/dibs
go build -o "$bin/attack" ./bench/attack
"$bin/attack" -dibs "$bin/dibs" -duration "${DURATION:-60s}" -slow "${SLOW:-80}" \
  -slow_deposits "${SLOW_DEPOSITS:-8}" -flood "${FLOOD:-40}" -tmpfs "${TMPFS_MB:-32}"
