#!/usr/bin/env bash
# bench/status-screenshot.sh — screenshots of start_daemon's status page, for a person to
# look at: a daemon holding two stored files, a degraded one and a HELLO queued for a
# peer (the fixture of agent's TestStatus_RealBrowser), shot by headless chromium as a
# phone (412 px wide) and a desktop (1400 px) show it.
# Usage: bash bench/status-screenshot.sh [OUT.png]   (default /tmp/dibs-status.png;
#        writes OUT-phone.png and OUT-desktop.png)
# Needs: go, chromium (apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-/tmp/dibs-status.png}")
command -v chromium >/dev/null || { echo "status-screenshot: chromium is not installed (apt-get install chromium)" >&2; exit 1; }
DIBS_STATUS_SCREENSHOT="$out" go test -count=1 -run '^TestStatus_RealBrowser$' -v ./agent/ | grep -E 'screenshot:|^(--- |ok|FAIL)'
