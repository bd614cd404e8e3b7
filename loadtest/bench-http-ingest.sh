#!/usr/bin/env bash
# Benchmark: HTTP ingest in batches of 500, acknowledged events per second.
# Starts a memory-engine Tansu broker and `tokenusage ingest` (release) on
# loopback, creates a key, runs the load generator, stops everything.
#   bash loadtest/bench-http-ingest.sh [EVENTS] [CONCURRENCY]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
EVENTS="${1:-500000}"; CONC="${2:-8}"
PORT=39300; HTTP=127.0.0.1:18181; DB=tu_bench_ingest
WORK="$(mktemp -d)"
cleanup() { stop_pidfile "$WORK/ingest.pid"; stop_pidfile "$WORK/broker.pid"; psql_admin -c "drop database if exists $DB with (force)" >/dev/null 2>&1; rm -rf "$WORK"; }
trap cleanup EXIT
ensure_postgres; ensure_tansu; ensure_web_assets
cargo build --release -q -p tokenusage -p tokenusage-loadtest --manifest-path "$ROOT/Cargo.toml"
psql_admin -c "drop database if exists $DB with (force)" >/dev/null; psql_admin -c "create database $DB" >/dev/null
start_broker "$PORT" "$WORK/tansu" "$WORK/broker.pid" memory
export DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB" KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$PORT" \
       KAFKA_OPTIONS=broker.address.family=v4 TOKENUSAGE_TOPIC=bench.ingest RUST_LOG=warn
BIN="$ROOT/target/release"
"$BIN/tokenusage" migrate >/dev/null
KEY="$("$BIN/tokenusage" keys create bench --rate-per-sec 10000000 2>/dev/null)"
"$BIN/tokenusage" ingest --ingest-listen "$HTTP" >"$WORK/ingest.log" 2>&1 & echo $! >"$WORK/ingest.pid"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://$HTTP/api/v1/events" && break; sleep 0.1; done
say "HTTP ingest: $EVENTS events, batches of 500, $CONC requests in flight"
TOKENUSAGE_LOADTEST_KEY="$KEY" "$BIN/tokenusage-loadtest" --events "$EVENTS" --users 1000 http --url "http://$HTTP" --batch 500 --concurrency "$CONC"
