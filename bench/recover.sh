#!/usr/bin/env bash
# bench/recover.sh — in one run, on the same tree:
#   1. `restic backup` into a local repository, then `restic restore` of it (timed), and
#   2. dibs: `store` to 3 peers, sneakernet carry rounds until every piece is acknowledged,
#      then the owner's disk and one peer are lost, and from `import_recovery_kit` on
#      (timed) `recover_all` + carry rounds (every node's export_messages / import_messages
#      / process_message) until the recovered tree is byte-identical.
# It prints both times, MB/s, and the ratio restic time / dibs time (>= 1.0 is the goal).
# TRANSPORT=carry (the default) is the above. TRANSPORT=direct and TRANSPORT=relay run every
# node's `start_daemon` on loopback instead of carry rounds (ports 16701-16704, the relay on
# 16710): direct, the daemons push to one another (talk and listen active); relay, they
# deposit at one `relay_server` and collect from it every second (pollInterval 1). Then the
# timed part is import_recovery_kit, recover_all and alice's daemon started again, until
# her recovered tree is byte-identical (WAIT_TIMEOUT seconds at most, default 300).
# Usage: bash bench/recover.sh                 (102 MiB tree: one 51 MiB file, 25 x 1 MiB, 1,280 small)
#        SIZE_MB=1024 bash bench/recover.sh    (the same shape scaled to ~1 GiB)
#        PROFILE=DIR bash bench/recover.sh     (a DIBS_CPUPROFILE per dibs command, in DIR)
#        ROUNDS=3 (default 1): repeat the timed parts and print the medians
#        TRANSPORT=direct|relay bash bench/recover.sh   (daemons instead of carry rounds)
#        TREE=DIR bash bench/recover.sh     (recover DIR instead of a made tree; SIZE_MB unused)
#        RESTIC=0 bash bench/recover.sh     (dibs alone: for the owner's peak RSS of a large tree)
# Needs: go, restic, python3, GNU time. Uses a temp dir under /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-102}
ROUNDS=${ROUNDS:-1}
RESTIC=${RESTIC:-1}
TRANSPORT=${TRANSPORT:-carry}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-300}
case $TRANSPORT in
  carry | direct | relay) ;;
  *) echo "TRANSPORT must be carry, direct or relay, not \"$TRANSPORT\"" >&2; exit 2 ;;
esac
work=$(mktemp -d /tmp/dibs-recbench.XXXXXX)
declare -A port=([alice]=16701 [bob]=16702 [carol]=16703 [dave]=16704)
relay_port=16710
declare -A dpid=()   # the daemons (and the relay, as "relay") running now, by node
# stop_proc NAME: SIGTERM to a daemon or the relay, and wait until it exited (SIGKILL after 40 s).
stop_proc() {
  local pid=${dpid[$1]:-} rc=0 wd
  [[ -n $pid ]] || return 0
  unset "dpid[$1]"
  kill -TERM "$pid" 2>/dev/null || true
  (sleep 40; kill -KILL "$pid" 2>/dev/null) & wd=$!
  wait "$pid" || rc=$?
  kill "$wd" 2>/dev/null || true; wait "$wd" 2>/dev/null || true
  [[ $rc == 0 ]] || echo "warning: $1's $( [[ $1 == relay ]] && echo relay_server || echo daemon) exited with status $rc" >&2
}
cleanup() {
  local n
  for n in "${!dpid[@]}"; do stop_proc "$n"; done
  rm -rf "$work"
}
trap cleanup EXIT
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
logs="$work/logs"; mkdir -p "$logs"; log_n=0
# fail MESSAGE: say so, with the end of every daemon's and the relay's stderr, and exit 1.
fail() {
  echo "$1"
  local f
  for f in "$logs"/*.err; do
    [[ -s $f ]] || continue
    echo "--- last lines of $(basename "$f" .err)'s stderr:"; tail -n 15 "$f"
  done
  exit 1
}
# wait_serving NAME OUT: wait until the process dpid[NAME] prints on OUT that it serves.
wait_serving() {
  local i
  for i in $(seq 300); do
    grep -q ' serving ' "$2" 2>/dev/null && return 0
    kill -0 "${dpid[$1]}" 2>/dev/null || break
    sleep 0.1
  done
  fail "$1 did not start serving (see $2)"
}
# start_daemon NODE: the node's `dibs start_daemon` in the background, once it serves daemonPort.
start_daemon() {
  local n=$1 prof=
  log_n=$((log_n + 1))
  local out="$logs/$(printf %02d $log_n)-$n-daemon"
  if [[ -n "${PROFILE:-}" ]]; then
    prof_n=$((prof_n + 1)); mkdir -p "$PROFILE"
    prof="$PROFILE/$(printf %04d $prof_n)-$n-start_daemon.prof"
  fi
  DIBS_DIR="$work/$n" DIBS_CPUPROFILE="$prof" "$work/dibs" start_daemon >"$out.out" 2>"$out.err" &
  dpid[$n]=$!
  wait_serving "$n" "$out.out"
}
# start_relay: `dibs relay_server` on relay_port, its spool emptied but for the allow file.
start_relay() {
  find "$work/relay" -mindepth 1 -maxdepth 1 ! -name allow.asc -exec rm -rf {} +
  log_n=$((log_n + 1))
  local out="$logs/$(printf %02d $log_n)-relay"
  "$work/dibs" relay_server --listen "127.0.0.1:$relay_port" --dir "$work/relay" >"$out.out" 2>"$out.err" &
  dpid[relay]=$!
  wait_serving relay "$out.out"
}
# daemons_alive NODE...: fail if one of their daemons (or the relay) has exited.
daemons_alive() {
  local n
  for n in "$@"; do kill -0 "${dpid[$n]}" 2>/dev/null || fail "$n's daemon exited"; done
  if [[ $TRANSPORT == relay ]]; then kill -0 "${dpid[relay]}" 2>/dev/null || fail "the relay exited"; fi
}
# all_acked: alice's books have every piece acknowledged: every file version is stored,
# and for each peer the bytes it acknowledged (remote_used) are the bytes of the pieces
# it holds for us (bytes_there, which counts the pieces sent and not yet acknowledged too).
all_acked() {
  dibs alice show_database --json 2>/dev/null | python3 -c '
import json, sys
db = json.load(sys.stdin)
files = db.get("files") or []
there = {s["peer"]: s["bytes_there"] for s in db.get("stats") or []}
peers = db.get("peers") or []
ok = bool(files) and all(f["status"] == "stored" for f in files) and \
    sum(there.values()) > 0 and all(p["remote_used"] == there.get(p["peer"], 0) for p in peers)
sys.exit(0 if ok else 1)'
}
secs() { python3 -c 'import sys,time; print("%.3f" % (time.time()-float(sys.argv[1])))' "$1"; }
rate() { python3 -c 'import sys; print("%.1f" % (int(sys.argv[1])/float(sys.argv[2])/2**20))' "$1" "$2"; }

echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n "${TREE:-}" ]]; then
  tree=$(cd "$TREE" && pwd)
else
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
fi
bytes=$(du -sb "$tree" | cut -f1)
echo "tree: $(find "$tree" -type f | wc -l) files, $bytes bytes"
find "$tree" -type f -exec cat {} + > /dev/null

# ---------------------------------------------------------------- restic
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$work/restic-repo"
if [[ $RESTIC == 1 ]]; then
  restic init --quiet >/dev/null
  restic backup --quiet "$tree" >/dev/null
fi

# ---------------------------------------------------------------- dibs
for n in alice bob carol dave; do
  dibs $n init --key "$n.dibs@bench.invalid" >/dev/null
  dibs $n export_key --out "$work/$n.asc"
done
if [[ $TRANSPORT == carry ]]; then
for a in alice bob carol dave; do
  for b in alice bob carol dave; do
    [[ $a == "$b" ]] && continue
    dibs $a add_peer --peer $b --email $b@bench.invalid --local_quota 100g --remote_quota 100g \
      --talk carry --listen carry --key_file "$work/$b.asc" >/dev/null
  done
done
else
  if [[ $TRANSPORT == relay ]]; then
    mkdir -p "$work/relay"
    cat "$work"/{alice,bob,carol,dave}.asc > "$work/relay/allow.asc"
  fi
  for a in alice bob carol dave; do
    # As cmd/dibs's tests set their daemons up: loopback, no status page (the four would
    # take the same default port), no wait before a next talk method; and no restore drill
    # (one would start a pollInterval after the daemon).
    dibs $a set_option --name daemonPort --value "${port[$a]}" >/dev/null
    dibs $a set_option --name daemonAddress --value 127.0.0.1 >/dev/null
    dibs $a set_option --name statusAddress --value "" >/dev/null
    dibs $a set_option --name talkRetryDelay --value 0 >/dev/null
    dibs $a set_option --name drillPeriod --value 0 >/dev/null
    if [[ $TRANSPORT == relay ]]; then
      dibs $a set_option --name relayURL --value "http://127.0.0.1:$relay_port" >/dev/null
      dibs $a set_option --name pollInterval --value 1 >/dev/null   # the daemon collects every second
    fi
    for b in alice bob carol dave; do
      [[ $a == "$b" ]] && continue
      if [[ $TRANSPORT == direct ]]; then
        dibs $a add_peer --peer $b --email $b@bench.invalid --local_quota 100g --remote_quota 100g \
          --talk active --listen active --host 127.0.0.1 --port "${port[$b]}" --key_file "$work/$b.asc" >/dev/null
      else
        dibs $a add_peer --peer $b --email $b@bench.invalid --local_quota 100g --remote_quota 100g \
          --talk relay --listen relay --key_file "$work/$b.asc" >/dev/null
      fi
    done
  done
fi
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
if [[ $TRANSPORT == carry ]]; then
echo "== dibs store + carry until every piece is acknowledged"
t0=$(date +%s.%N)
dibs alice store --name "$tree" --as /tree >/dev/null
for i in 1 2 3; do carry_round alice bob carol dave; done
echo "stored and carried in $(secs "$t0")s"
else
  echo "== dibs store + daemons ($TRANSPORT) until every piece is acknowledged"
  [[ $TRANSPORT == relay ]] && start_relay
  for n in alice bob carol dave; do start_daemon $n; done
  t0=$(date +%s.%N)
  dibs alice store --name "$tree" --as /tree >/dev/null
  deadline=$(( $(date +%s) + WAIT_TIMEOUT ))
  until all_acked; do
    daemons_alive alice bob carol dave
    (( $(date +%s) < deadline )) || fail "not every piece was acknowledged within ${WAIT_TIMEOUT}s"
    sleep 0.2
  done
  echo "stored and acknowledged in $(secs "$t0")s"
  for n in alice bob carol dave relay; do stop_proc $n; done
fi
dibs alice export_recovery_kit --out "$work/kit.asc"
rm -rf "$work/carol" "$carry"/*   # carol is lost for good
for n in bob dave; do cp -a "$work/$n" "$work/$n.saved"; done

# The contenders take turns each round: both create and delete the tree's files, and on
# ext4 creating a file costs more while many inodes were deleted in the last minutes.
restic_all=(); dibs_all=()
for round in $(seq "$ROUNDS"); do
  if [[ $RESTIC == 1 ]]; then
    rm -rf "$work/restic-out"
    sync
    t0=$(date +%s.%N)
    restic restore --quiet latest --target "$work/restic-out"
    sync -f "$work/restic-out"
    s=$(secs "$t0"); restic_all+=("$s")
    diff -r "$tree" "$work/restic-out$tree" >/dev/null || { echo "restic restore differs"; exit 1; }
    echo "restic restore (round $round): ${s}s = $(rate "$bytes" "$s") MiB/s"
  fi
  for n in bob dave; do rm -rf "$work/$n"; cp -a "$work/$n.saved" "$work/$n"; done
  rm -rf "$work/alice" "$carry"; mkdir -p "$carry"
  if [[ $TRANSPORT != carry ]]; then
    [[ $TRANSPORT == relay ]] && start_relay
    for n in bob dave; do start_daemon $n; done
    sync
    echo "== round $round: alice's disk is lost; import_recovery_kit, recover_all, alice's daemon ($TRANSPORT) until identical"
    t0=$(date +%s.%N)
    dibs alice import_recovery_kit --file "$work/kit.asc" >/dev/null
    dibs alice recover_all >/dev/null
    start_daemon alice
    deadline=$(( $(date +%s) + WAIT_TIMEOUT ))
    until [[ -d "$work/alice/recovery/tree" ]] && diff -rq "$tree" "$work/alice/recovery/tree" >/dev/null 2>&1; do
      daemons_alive alice bob dave
      (( $(date +%s) < deadline )) || fail "dibs recovery ($TRANSPORT) not identical after ${WAIT_TIMEOUT}s"
      sleep 0.2
    done
    sync -f "$work/alice"
    s=$(secs "$t0")
    diff -r "$tree" "$work/alice/recovery/tree" >/dev/null || fail "dibs recovery differs"
    rss=$(awk '/^VmHWM:/ {print $2}' "/proc/${dpid[alice]}/status")
    for n in alice bob dave relay; do stop_proc $n; done
    dibs_all+=("$s")
    echo "dibs recover_all (round $round): ${s}s = $(rate "$bytes" "$s") MiB/s ($TRANSPORT); alice's daemon peak RSS $rss kB"
    continue
  fi
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
[[ $RESTIC == 1 ]] && python3 - "$bytes" "${restic_all[*]}" "${dibs_all[*]}" "$( [[ $TRANSPORT == carry ]] || echo " ($TRANSPORT)")" <<'PY'
import statistics, sys
n = int(sys.argv[1])
r = statistics.median(float(x) for x in sys.argv[2].split())
d = statistics.median(float(x) for x in sys.argv[3].split())
print("== medians%s: restic restore %.3fs (%.1f MiB/s), dibs recover_all %.3fs (%.1f MiB/s); dibs / restic speed: %.2fx"
      % (sys.argv[4], r, n / r / 2**20, d, n / d / 2**20, r / d))
PY
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
