#!/usr/bin/env bash
# bench/fuzz.sh — run every fuzzer of the module, one after the other, for FUZZTIME each
# (default 10m), with one worker (-parallel 1) and a bounded minimisation, as recorded in
# bench/README.md. Not part of CI: it takes FUZZTIME × 4. A failure leaves its input in
# the package's testdata/fuzz/ and stops the script (set -e); add it to the commit that fixes it.
# Usage: bash bench/fuzz.sh      FUZZTIME=30s bash bench/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10m}
for target in erasure:FuzzRoundTrip pgpmsg:FuzzOpen pgpmsg:FuzzReadHeader pgpmsg:FuzzChunkScanner; do
	pkg=${target%%:*} name=${target#*:}
	echo "== $pkg $name for $FUZZTIME"
	go test "./$pkg/" -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" \
		-fuzzminimizetime 100x -parallel 1 2>&1 | grep -E '^(fuzz: elapsed|ok|FAIL|---)' | tail -2
done
