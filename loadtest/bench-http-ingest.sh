#!/usr/bin/env bash
# Benchmark: HTTP ingest, acknowledged events per second. Starts a
# memory-engine Tansu broker and `tokenusage ingest` (release) on loopback,
# creates a key, runs the load generator, stops everything.
#   bash loadtest/bench-http-ingest.sh [EVENTS] [CONCURRENCY] [native|otlp|otlp-gzip] [BATCH]
# native: JSON batches to POST /api/v1/events; otlp: the same events as
# OpenTelemetry GenAI spans (protobuf) to POST /v1/traces; otlp-gzip: gzipped.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
EVENTS="${1:-500000}"; CONC="${2:-8}"; MODE="${3:-native}"; BATCH="${4:-500}"
case "$MODE" in
  native) FLAGS=() ;;
  otlp) FLAGS=(--otlp) ;;
  otlp-gzip) FLAGS=(--otlp --gzip) ;;
  *) die "mode must be native, otlp or otlp-gzip, not $MODE" ;;
esac
HTTP=127.0.0.1:18181
bench_setup tu_bench_ingest 28300 bench.ingest
KEY="$("$BIN/tokenusage" keys create bench --rate-per-sec 10000000 2>/dev/null)"
"$BIN/tokenusage" ingest --ingest-listen "$HTTP" >"$WORK/ingest.log" 2>&1 & echo $! >"$WORK/ingest.pid"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://$HTTP/api/v1/events" && break; sleep 0.1; done
say "HTTP ingest ($MODE): $EVENTS events, batches of $BATCH, $CONC requests in flight"
TOKENUSAGE_LOADTEST_KEY="$KEY" "$BIN/tokenusage-loadtest" --events "$EVENTS" --users 1000 \
  http --url "http://$HTTP" --batch "$BATCH" --concurrency "$CONC" "${FLAGS[@]}"
# The server's own CPU time (the load generator shares the machine, and
# encodes and compresses on it): what one event costs the ingest process.
ticks="$(awk '{print $14 + $15}' "/proc/$(cat "$WORK/ingest.pid")/stat")"
awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$EVENTS" \
  'BEGIN { s = t / hz; printf "ingest server CPU:   %.2f s (%.1f µs per event)\n", s, s * 1e6 / n }'
