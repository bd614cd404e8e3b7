#!/usr/bin/env bash
# Benchmark: sustained projector throughput vs a bare consume-and-discard
# loop over the same topic, in one run, broker and PostgreSQL on this box.
#   bash loadtest/bench-projector.sh [EVENTS]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
EVENTS="${1:-500000}"
PORT=39400; DB=tu_bench_projector; TOPIC=bench.projector
WORK="$(mktemp -d)"
cleanup() { stop_pidfile "$WORK/projector.pid"; stop_pidfile "$WORK/broker.pid"; psql_admin -c "drop database if exists $DB with (force)" >/dev/null 2>&1; rm -rf "$WORK"; }
trap cleanup EXIT
ensure_postgres; ensure_tansu; ensure_web_assets
cargo build --release -q -p tokenusage -p tokenusage-loadtest --manifest-path "$ROOT/Cargo.toml"
psql_admin -c "drop database if exists $DB with (force)" >/dev/null; psql_admin -c "create database $DB" >/dev/null
start_broker "$PORT" "$WORK/tansu" "$WORK/broker.pid" memory
export DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB" KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$PORT" \
       KAFKA_OPTIONS=broker.address.family=v4 TOKENUSAGE_TOPIC="$TOPIC" RUST_LOG=warn
BIN="$ROOT/target/release"
"$BIN/tokenusage" migrate >/dev/null

say "producing $EVENTS events (1000 users, 5 activities x 6 models)"
"$BIN/tokenusage-loadtest" --events "$EVENTS" --users 1000 kafka | grep -E "achieved|failed"

say "bare consume-and-discard of the same topic"
"$BIN/tokenusage-loadtest" --events "$EVENTS" consume | grep -E "acknowledged|elapsed|achieved"

say "projector: $EVENTS events into PostgreSQL (de-dup, raw events, 3 rollup grains, offsets), one process"
start=$(date +%s.%N); first=""; first_n=0
"$BIN/tokenusage" projector --assign-partitions all >"$WORK/projector.log" 2>&1 & echo $! >"$WORK/projector.pid"
while :; do
  n=$(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$DB" -qtA -c "select coalesce(sum(events),0) from usage_hour")
  if [ -z "$first" ] && [ "$n" -gt 0 ]; then first=$(date +%s.%N); first_n=$n; fi
  [ "$n" -ge "$EVENTS" ] && break
  kill -0 "$(cat "$WORK/projector.pid")" || { tail "$WORK/projector.log"; die "projector exited"; }
  sleep 0.1
done
end=$(date +%s.%N)
python3 -c "
s=$end-$start; t=$end-$first
print(f'projected:           $EVENTS events in {s:.2f} s = {$EVENTS/s:.0f} events/s including start-up')
print(f'sustained:           {($EVENTS-$first_n)/t:.0f} events/s from the first commit to the last')"
