#!/usr/bin/env bash
# Benchmark: live WebSockets. 10k authenticated sockets (RSS per socket),
# produce -> push latency while 10k events/s flow through Kafka, and the
# fan-out rate, against one `tokenusage serve` (projector + API) on this box.
#   bash loadtest/bench-live.sh [SOCKETS] [RATE] [SECONDS] [SUBSCRIPTIONS PER SOCKET] [PROBE LINGER MS]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
SOCKETS="${1:-10000}" RATE="${2:-10000}" SECONDS_="${3:-20}" SUBS="${4:-1}" PROBE_LINGER="${5:-5}"
bench_setup tu_bench_live 28600 bench.live
cargo build --release -q -p tokenusage-loadtest --bin live-bench --manifest-path "$ROOT/Cargo.toml" || die "build failed"
# Client and server are separate processes; each needs one descriptor per socket.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((SOCKETS + 1000)) ] || die "the open-file limit ($(ulimit -n)) is too low for $SOCKETS sockets"
export TOKENUSAGE_JWT_SECRET="bench-secret-bench-secret-bench-secret!" TOKENUSAGE_KAFKA_IDEMPOTENCE=false
PORT=28680
TOKENUSAGE_LISTEN="127.0.0.1:$PORT" TOKENUSAGE_LIVE_MAX_SOCKETS_PER_USER=100 TOKENUSAGE_TOPIC_PARTITIONS=6 \
  "$BIN/tokenusage" serve --no-migrate --assign-partitions all >"$WORK/serve.log" 2>&1 & echo $! >"$WORK/serve.pid"
for _ in $(seq 1 300); do port_open "$PORT" && break; sleep 0.1; done
sleep 2
"$BIN/live-bench" --addr "127.0.0.1:$PORT" --server-pid "$(cat "$WORK/serve.pid")" \
  --sockets "$SOCKETS" --users 1000 --rate "$RATE" --seconds "$SECONDS_" --subs-per-socket "$SUBS" --probe-linger-ms "$PROBE_LINGER"
# Where the time goes on the projector side (means over the run).
curl -s "http://127.0.0.1:$PORT/metrics" | awk '
  /^tokenusage_projector_(fetch_delay_seconds|batch_fill_seconds|commit_seconds|batch_records)_(sum|count) / {
    n = $1; sub(/_(sum|count)$/, "", n);
    if ($1 ~ /_sum$/) s[n] = $2; else c[n] = $2 }
  END { for (n in s) if (c[n] > 0) printf "projector: %s mean %.4g over %d\n", n, s[n] / c[n], c[n] }' | sort

