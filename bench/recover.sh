#!/usr/bin/env bash
# bench/recover.sh — in one run, on the same tree:
#   1. `restic backup` into a local repository, then `restic restore` of it (timed), and
#   2. dibs: `store` to 3 peers, sneakernet carry rounds until every piece is acknowledged,
#      then the owner's disk and one peer are lost, and from `import_recovery_kit` on
#      (timed) `recover_all` + carry rounds (every node's export_messages / import_messages
#      / process_message) until the recovered tree is byte-identical.
# It prints both times, MB/s, and the ratio restic time / dibs time (>= 1.0 is the goal).
# Usage: bash bench/recover.sh                 (102 MiB tree: one 51 MiB file, 25 x 1 MiB, 1,280 small)
#        SIZE_MB=1024 bash bench/recover.sh    (the same shape scaled to ~1 GiB)
#        PROFILE=DIR bash bench/recover.sh     (a DIBS_CPUPROFILE per dibs command, in DIR)
#        ROUNDS=3 (default 1): repeat the timed parts and print the medians
# Needs: go, restic, python3, GNU time. Uses a temp dir under /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-102}
ROUNDS=${ROUNDS:-1}
work=$(mktemp -d /tmp/dibs-recbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [[ -n "${DIBS_BIN:-}" ]]; then cp "$DIBS_BIN" "$work/dibs"; else go build -o "$work/dibs" ./cmd/dibs; fi
prof_n=0
dibs() {
  local node=$1; shift
  if [[ -n "${PROFILE:-}" ]]; then
    prof_n=$((prof_n + 1)); mkdir -p "$PROFILE"
    DIBS_CPUPROFILE="$PROFILE/$(printf %04d $prof_n)-$node-$1.prof" DIBS_DIR="$work/$node" "$work/dibs" "$@"
  else
    DIBS_DIR="$work/$node" "$work/dibs" "$@"
  fi
}
secs() { python3 -c 'import sys,time; print("%.3f" % (time.time()-float(sys.argv[1])))' "$1"; }
rate() { python3 -c 'import sys; print("%.1f" % (int(sys.argv[1])/float(sys.argv[2])/2**20))' "$1" "$2"; }

echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== making the tree (scaled to ${SIZE_MB} MiB: half in one file, a quarter in 1 MiB files, the rest in small text files)"
tree="$work/tree"; mkdir -p "$tree/big" "$tree/mid" "$tree/small"
python3 - "$tree" "$SIZE_MB" <<'PY'
import os, random, sys
d, mb = sys.argv[1], int(sys.argv[2])
scale = mb / 102.0
with open(os.path.join(d, "big", "f51"), "wb") as f:
    for _ in range(int(51 * scale)): f.write(os.urandom(1 << 20))
for i in range(int(25 * scale)):
    with open(os.path.join(d, "mid", "m%03d" % i), "wb") as f: f.write(os.urandom(1 << 20))
r = random.Random(7)
words = [("w%d" % i) for i in range(5000)]
n = int(1280 * scale)
left = int((102 - 51 - 25) * scale * (1 << 20))
for i in range(n):
    sub = os.path.join(d, "small", "%02d" % (i % 40)); os.makedirs(sub, exist_ok=True)
    size = left // (n - i)
    text = []
    got = 0
    while got < size:
        w = r.choice(words); text.append(w); got += len(w) + 1
    with open(os.path.join(sub, "t%05d.txt" % i), "w") as f: f.write(" ".join(text)[:size])
    left -= size
PY
bytes=$(du -sb "$tree" | cut -f1)
echo "tree: $(find "$tree" -type f | wc -l) files, $bytes bytes"
cat $(find "$tree" -type f) > /dev/null

# ---------------------------------------------------------------- restic
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$work/restic-repo"
restic init --quiet >/dev/null
restic backup --quiet "$tree" >/dev/null

# ---------------------------------------------------------------- dibs
for n in alice bob carol dave; do
  dibs $n init --key "$n.dibs@bench.invalid" >/dev/null
  dibs $n export_key --out "$work/$n.asc"
done
for a in alice bob carol dave; do
  for b in alice bob carol dave; do
    [[ $a == "$b" ]] && continue
    dibs $a add_peer --peer $b --email $b@bench.invalid --local_quota 100g --remote_quota 100g \
      --talk carry --listen carry --key_file "$work/$b.asc" >/dev/null
  done
done
dibs alice set_option --name redundantPieces --value 1 >/dev/null   # RS 2+1 over 3 peers

carry="$work/stick"; mkdir -p "$carry"
# One carry round: every node exports, every node imports and processes.
carry_round() {
  local nodes=("$@")
  for n in "${nodes[@]}"; do dibs $n export_messages --dir "$carry" >/dev/null; done
  for n in "${nodes[@]}"; do
    dibs $n import_messages --dir "$carry" >/dev/null
    if [[ $n == alice ]]; then  # the owner's peak memory, as it rebuilds the files
      DIBS_DIR="$work/alice" DIBS_CPUPROFILE="${PROFILE:+$PROFILE/alice-process_message-$prof_n.prof}" \
        /usr/bin/time -a -f "%M" -o "$work/rss.alice" "$work/dibs" process_message >/dev/null
      prof_n=$((prof_n + 1))
    else
      dibs $n process_message >/dev/null
    fi
  done
}
echo "== dibs store + carry until every piece is acknowledged"
t0=$(date +%s.%N)
dibs alice store --name "$tree" --as /tree >/dev/null
for i in 1 2 3; do carry_round alice bob carol dave; done
echo "stored and carried in $(secs "$t0")s"
dibs alice export_recovery_kit --out "$work/kit.asc"
rm -rf "$work/carol" "$carry"/*   # carol is lost for good
for n in bob dave; do cp -a "$work/$n" "$work/$n.saved"; done

# The contenders take turns each round: both create and delete the tree's files, and on
# ext4 creating a file costs more while many inodes were deleted in the last minutes.
restic_all=(); dibs_all=()
for round in $(seq "$ROUNDS"); do
  rm -rf "$work/restic-out"
  sync
  t0=$(date +%s.%N)
  restic restore --quiet latest --target "$work/restic-out"
  sync -f "$work/restic-out"
  s=$(secs "$t0"); restic_all+=("$s")
  diff -r "$tree" "$work/restic-out$tree" >/dev/null || { echo "restic restore differs"; exit 1; }
  echo "restic restore (round $round): ${s}s = $(rate "$bytes" "$s") MiB/s"
  for n in bob dave; do rm -rf "$work/$n"; cp -a "$work/$n.saved" "$work/$n"; done
  rm -rf "$work/alice" "$carry"; mkdir -p "$carry"
  sync
  echo "== round $round: alice's disk is lost; import_recovery_kit, recover_all, carry until identical"
  t0=$(date +%s.%N)
  dibs alice import_recovery_kit --file "$work/kit.asc" >/dev/null
  dibs alice recover_all >/dev/null
  rm -f "$work/rss.alice"
  for i in $(seq 10); do
    carry_round alice bob dave
    if [[ -d "$work/alice/recovery/tree" ]] && diff -r "$tree" "$work/alice/recovery/tree" >/dev/null 2>&1; then break; fi
  done
  sync -f "$work/alice"
  s=$(secs "$t0")
  diff -r "$tree" "$work/alice/recovery/tree" >/dev/null || { echo "dibs recovery differs after $i rounds"; exit 1; }
  dibs_all+=("$s")
  echo "dibs recover_all (round $round): ${s}s = $(rate "$bytes" "$s") MiB/s after $i carry rounds; alice's peak RSS $(sort -n "$work/rss.alice" | tail -1) kB"
done
python3 - "$bytes" "${restic_all[*]}" "${dibs_all[*]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
r = statistics.median(float(x) for x in sys.argv[2].split())
d = statistics.median(float(x) for x in sys.argv[3].split())
print("== medians: restic restore %.3fs (%.1f MiB/s), dibs recover_all %.3fs (%.1f MiB/s); dibs / restic speed: %.2fx"
      % (r, n / r / 2**20, d, n / d / 2**20, r / d))
PY
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
