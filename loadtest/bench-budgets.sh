#!/usr/bin/env bash
# Benchmark: budgets. Against one `tokenusage serve` (projector + API with the
# budget evaluator and webhook sender) on this box: RATE events/s through
# Kafka for SECONDS without budgets, then with BUDGETS budgets on the loaded
# users (five kinds of window, tokens and cost) while probe budgets are
# crossed every 300 ms; prints the server's CPU and the projector's commit
# time in both phases and produce -> webhook latency. Then the forecast's
# error on the demo generator's usage.
#   bash loadtest/bench-budgets.sh [BUDGETS] [RATE] [SECONDS]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
BUDGETS="${1:-10000}" RATE="${2:-10000}" SECONDS_="${3:-30}"
bench_setup tu_bench_budgets 28700 bench.budgets
export TOKENUSAGE_JWT_SECRET="bench-secret-bench-secret-bench-secret!" TOKENUSAGE_KAFKA_IDEMPOTENCE=false
PORT=28780
TOKENUSAGE_LISTEN="127.0.0.1:$PORT" TOKENUSAGE_TOPIC_PARTITIONS=6 RUST_LOG="${SERVE_RUST_LOG:-warn}" \
  "$BIN/tokenusage" serve --no-migrate --assign-partitions all >"$WORK/serve.log" 2>&1 & echo $! >"$WORK/serve.pid"
for _ in $(seq 1 300); do port_open "$PORT" && break; sleep 0.1; done
sleep 2
"$BIN/budget-bench" load --addr "127.0.0.1:$PORT" --server-pid "$(cat "$WORK/serve.pid")" \
  --budgets "$BUDGETS" --users 1000 --rate "$RATE" --seconds "$SECONDS_"
"$BIN/budget-bench" forecast
[ -z "${SERVE_RUST_LOG:-}" ] || cp "$WORK/serve.log" /tmp/bench-budgets-serve.log
