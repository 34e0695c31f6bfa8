#!/usr/bin/env bash
# bench/killloop.sh — crash safety under kill -9 (issue 11 item 13, issue 17 items 5, 6):
#   the TestKill9_* loops of cmd/dibs with KILLS kills each (CI runs 10 and 8):
#   1. store, SIGKILLed at random moments while its tree changes: after each kill, every
#      STORE file in outgoing/ must be known to the books and every piece the books count
#      as sent must exist; a last store must leave nothing staged and nothing to do;
#   2. process_message, SIGKILLed in a batch of STOREs and then in the batch of their
#      ACKs: each piece held once, counted once against the quota, acknowledged once, and
#      counted stored once by its owner.
#   Each prints one "kill9:" line with its counts; any disagreement fails the test.
# Usage: bash bench/killloop.sh     KILLS=20 bash bench/killloop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${KILLS:-100}
DIBS_KILLS="$KILLS" go test -count=1 -timeout 60m -run 'TestKill9' -v ./cmd/dibs/ |
  awk '/kill9:/ { sub(/^.*kill9: /, "    "); print } /^(--- |FAIL|ok)/ { print }'
