# Sourced by .ci/nats/test.sh and bench/relay.sh: start_nats_cluster WORK NAME BASE builds
# nats-server from the module's own version into WORK and starts three of them on loopback
# as the cluster NAME: client ports BASE+1..3, cluster ports BASE+101..103, monitoring
# BASE+201..203. It returns once each node's /healthz says JetStream is up, sets
# NATS_URLS to the three client URLs, and arranges for exactly those processes to be
# stopped (and WORK removed) on exit.
nats_pids=()
stop_nats_cluster() {
    for p in "${nats_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${nats_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$nats_work"
}
start_nats_cluster() {
    nats_work=$1
    local name=$2 base=$3 i routes="" urls=""
    trap stop_nats_cluster EXIT
    go build -o "$nats_work/nats-server" github.com/nats-io/nats-server/v2
    for i in 1 2 3; do
        routes+="${routes:+,}nats://127.0.0.1:$((base + 100 + i))"
        urls+="${urls:+,}nats://127.0.0.1:$((base + i))"
    done
    for i in 1 2 3; do
        "$nats_work/nats-server" -n "$name$i" -a 127.0.0.1 -p "$((base + i))" -m "$((base + 200 + i))" \
            -js -sd "$nats_work/n$i" --cluster_name "dibs-$name" \
            --cluster "nats://127.0.0.1:$((base + 100 + i))" --routes "$routes" \
            >"$nats_work/n$i.log" 2>&1 &
        nats_pids+=($!)
    done
    for i in 1 2 3; do # until each node says JetStream is up and current in the cluster
        for _ in $(seq 100); do
            curl -sf "http://127.0.0.1:$((base + 200 + i))/healthz" >/dev/null && break
            sleep 0.2
        done
        curl -sf "http://127.0.0.1:$((base + 200 + i))/healthz" >/dev/null || { cat "$nats_work/n$i.log"; return 1; }
    done
    NATS_URLS=$urls
}
