#!/usr/bin/env bash
# Benchmark: history API latency over a year of minute-level traffic
# (525,600 events, 30 activity x model series, one user), day/week/month
# series for the whole year at 50 concurrent requests, against aggregating
# the raw events on read for the same views, in the same run.
#   bash loadtest/bench-history.sh
# Cold reads (issue #19): every view cache-off in four zones, from day rows,
# from the fine rollups and from the raw events:
#   bash loadtest/bench-history.sh --cold [--group activity]
#   bash loadtest/bench-history.sh --cold --large     # 1,000 users, 10M events
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
bench_setup tu_bench_history 28500 bench.history
cargo build --release -q -p tokenusage-loadtest --bin history-bench --manifest-path "$ROOT/Cargo.toml" || die "build failed"
export BENCH_PASSWORD=bench-password-123 TOKENUSAGE_NEW_PASSWORD=bench-password-123
# --large reads everyone's usage (user=*): an admin's view.
role=viewer; [[ " $* " == *" --large "* ]] && role=admin
"$BIN/tokenusage" users add bench-user --role "$role" >/dev/null
export TOKENUSAGE_LOGIN_ATTEMPTS_PER_MINUTE=1000 TOKENUSAGE_ACCESS_TOKEN_TTL_SECS=3600
# Both processes verify the same tokens.
export TOKENUSAGE_JWT_SECRET="bench-secret-bench-secret-bench-secret!"
# Two API processes on the same database: the normal one, and one with the
# series cache off (every request reads the rollups).
PORT=28580 COLD_PORT=28581
TOKENUSAGE_LISTEN="127.0.0.1:$PORT" "$BIN/tokenusage" api --no-migrate >"$WORK/api.log" 2>&1 & echo $! >"$WORK/api.pid"
TOKENUSAGE_LISTEN="127.0.0.1:$COLD_PORT" TOKENUSAGE_SERIES_CACHE_ENTRIES=0 \
  "$BIN/tokenusage" api --no-migrate >"$WORK/api-cold.log" 2>&1 & echo $! >"$WORK/api-cold.pid"
for _ in $(seq 1 100); do port_open "$PORT" && port_open "$COLD_PORT" && break; sleep 0.1; done
"$BIN/history-bench" --seed --url "http://127.0.0.1:$PORT" --cold-url "http://127.0.0.1:$COLD_PORT" "$@"
