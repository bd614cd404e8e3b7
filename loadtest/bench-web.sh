#!/usr/bin/env bash
# Benchmark: the dashboard in Debian's Chromium: first contentful paint on
# localhost (cold cache), sign-in to the first chart, a year of hourly
# points, a year of daily bars and a day of minutes (x 5 series) drawn, and
# their live redraws. Needs Chromium (scripts/lib.sh installs it) and `npm ci`.
#   bash loadtest/bench-web.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
bench_setup tu_bench_web 28700 bench.web
ensure_chromium
export BENCH_USER=bench-user BENCH_PASSWORD=bench-password-123 TOKENUSAGE_NEW_PASSWORD=bench-password-123
"$BIN/tokenusage" users add "$BENCH_USER" >/dev/null
PORT=28780
TOKENUSAGE_LISTEN="127.0.0.1:$PORT" TOKENUSAGE_KAFKA_IDEMPOTENCE=false \
  "$BIN/tokenusage" serve --no-migrate >"$WORK/serve.log" 2>&1 & echo $! >"$WORK/serve.pid"
for _ in $(seq 1 300); do port_open "$PORT" && break; sleep 0.1; done
node "$ROOT/web/tests/bench.mjs" "http://127.0.0.1:$PORT"
