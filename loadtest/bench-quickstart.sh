#!/usr/bin/env bash
# Benchmark: the quick start's embedded broker, paced (docs/DECISIONS.md,
# "The embedded broker is paced by what has been counted"). Runs
# `tokenusage serve --demo` (release build) on a fresh database with the
# quick start's settings and reports how long the 28-day demo history took
# to publish and to be counted, how many events it had, how many were
# counted, and the records the broker lost (must be 0).
#   bash loadtest/bench-quickstart.sh [TOKENUSAGE_BINARY]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
BIN_TU="${1:-$ROOT/target/release/tokenusage}"
[ -x "$BIN_TU" ] || { say "building the release binary"; cargo build --release -q -p tokenusage; BIN_TU="$ROOT/target/release/tokenusage"; }
ensure_postgres
DB=tu_bench_quickstart
psql_admin -c "drop database if exists $DB with (force)" >/dev/null
psql_admin -c "create database $DB" >/dev/null
URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB"
LOG="$(mktemp -t tu-quickstart.XXXXXX)"
q() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$DB" -qtA -c "$1"; }
start=$(date +%s.%N)
env -u KAFKA_BOOTSTRAP_SERVERS -u TOKENUSAGE_KAFKA_FETCH_WAIT_MS DATABASE_URL="$URL" TOKENUSAGE_LOG_FORMAT=json \
  RUST_LOG="warn,tokenusage::commands::serve=info" "$BIN_TU" serve --demo --listen 127.0.0.1:0 >/dev/null 2>"$LOG" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; psql_admin -c "drop database if exists $DB with (force)" >/dev/null; rm -f "$LOG"' EXIT
until grep -q '"published the demo history"' "$LOG"; do
  kill -0 $pid 2>/dev/null || { tail -5 "$LOG"; die "serve exited"; }
  sleep 0.2
done
published=$(date +%s.%N)
line=$(grep '"published the demo history"' "$LOG" | head -1)
n=$(sed -E 's/.*"events":([0-9]+).*/\1/' <<<"$line")
at=$(sed -E 's/.*"timestamp":"([^"]+)".*/\1/' <<<"$line")
until [ "$(q "select count(*) from usage_events where source = 'demo-generator' and occurred_at < '$at'")" = "$n" ]; do
  kill -0 $pid 2>/dev/null || die "serve exited"
  sleep 0.2
done
counted=$(date +%s.%N)
lost=$(q "select coalesce(sum(to_offset - from_offset), 0) from lost_records")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
printf 'demo history: %s events\n' "$n"
printf 'published (every event acknowledged, paced): %.1f s after start\n' "$(echo "$published - $start" | bc)"
printf 'all counted: %.1f s after start\n' "$(echo "$counted - $start" | bc)"
printf 'records lost by the embedded broker: %s\n' "$lost"
printf 'peak RSS of serve: %s MiB\n' "$((rss / 1024))"
