#!/usr/bin/env bash
# Benchmark: sustained projector throughput vs a bare consume-and-discard
# loop over the same topic, in one run, broker and PostgreSQL on this box.
#   bash loadtest/bench-projector.sh [EVENTS]      (BENCH_PROJECTS=1: events carry one of 4 projects)
# BENCH_DAYS_AGO=N dates the events N days back (a backfill below every
# user's day-row seal, which makes each commit lock its users' seal rows).
# BENCH_NO_SEALS=1 replaces the counting's seal rule with a no-op, to
# measure what it costs (A/B on one binary; the day rows are then wrong).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
EVENTS="${1:-500000}"
bench_setup tu_bench_projector 28400 bench.projector
if [ -n "${BENCH_NO_SEALS:-}" ]; then
  psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$BENCH_DB" -qc \
    "create or replace function tokenusage_lower_day_seals(users text[], buckets timestamptz[]) returns void language sql as 'select'"
  say "the seal rule is OFF for this run (BENCH_NO_SEALS)"
fi
if [ -n "${BENCH_DAYS_AGO:-}" ]; then
  # Every user sealed through today: all the backfilled rows are below it.
  psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$BENCH_DB" -qc \
    "insert into usage_day_seal select 'user-' || i, current_date from generate_series(0, 999) i"
fi

say "producing $EVENTS events (1000 users, 5 activities x 6 models${BENCH_DAYS_AGO:+, $BENCH_DAYS_AGO days ago})"
"$BIN/tokenusage-loadtest" --events "$EVENTS" --users 1000 ${BENCH_PROJECTS:+--projects} --days-ago "${BENCH_DAYS_AGO:-0}" kafka | grep -E "achieved|failed"

say "bare consumer of the same topic (librdkafka's queue polled in a tight loop, the projector's fetch settings)"
"$BIN/tokenusage-loadtest" --events "$EVENTS" consume | grep -E "acknowledged|elapsed|achieved"
say "the old bare loop (an async stream, one record at a time), for the earlier rows"
"$BIN/tokenusage-loadtest" --events "$EVENTS" consume --stream | grep -E "achieved"

say "projector: $EVENTS events into PostgreSQL (de-dup, raw events, 3 rollup grains, offsets), one process"
start=$(date +%s.%N); first=""; first_n=0
"$BIN/tokenusage" projector --assign-partitions all >"$WORK/projector.log" 2>&1 & echo $! >"$WORK/projector.pid"
while :; do
  n=$(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$BENCH_DB" -qtA -c "select coalesce(sum(events),0) from usage_hour")
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

# PostgreSQL alone, on the same database after the run: the two writes
# every event needs (its de-duplication key, then its raw row), inserted
# server-side by one backend (no client, no Kafka, no rollups). The
# projector's ceiling short of changing what it stores.
say "PostgreSQL alone: $EVENTS keys, then $EVENTS raw events, server-side, one backend"
pg_seconds() {
  local t0 t1; t0=$(date +%s.%N)
  psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$BENCH_DB" -qc "$1" >/dev/null || die "baseline insert failed"
  t1=$(date +%s.%N); python3 -c "print($t1 - $t0)"
}
keys_s=$(pg_seconds "insert into event_keys (source, event_id, occurred_at) select 'baseline', 'b-' || g, now() from generate_series(1, $EVENTS) g")
raw_s=$(pg_seconds "insert into usage_events (occurred_at, source, event_id, user_id, activity, model, project, input_tokens, output_tokens, kafka_partition, kafka_offset, cost_nanos, unpriced_tokens)
  select now() - (g % 86400) * interval '1 second', 'baseline', 'b-' || g, 'user-' || (g % 1000), 'chat', 'gpt-4o-mini', '', 100, 10, g % 6, g, 0, 0
  from generate_series(1, $EVENTS) g")
python3 -c "
k=$keys_s; r=$raw_s; both=$EVENTS/(k+r); t=$end-$first
print(f'keys:                {k:.2f} s ({$EVENTS/k:.0f} rows/s)')
print(f'raw events:          {r:.2f} s ({$EVENTS/r:.0f} rows/s)')
print(f'both writes:         {both:.0f} events/s')
print(f'projector / both:    {(($EVENTS-$first_n)/t)/both:.2f}')"
