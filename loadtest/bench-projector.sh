#!/usr/bin/env bash
# Benchmark: sustained projector throughput vs a bare consume-and-discard
# loop over the same topic, in one run, broker and PostgreSQL on this box.
#   bash loadtest/bench-projector.sh [EVENTS]      (BENCH_PROJECTS=1: events carry one of 4 projects)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
EVENTS="${1:-500000}"
bench_setup tu_bench_projector 28400 bench.projector

say "producing $EVENTS events (1000 users, 5 activities x 6 models)"
"$BIN/tokenusage-loadtest" --events "$EVENTS" --users 1000 ${BENCH_PROJECTS:+--projects} kafka | grep -E "achieved|failed"

say "bare consume-and-discard of the same topic"
"$BIN/tokenusage-loadtest" --events "$EVENTS" consume | grep -E "acknowledged|elapsed|achieved"

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
