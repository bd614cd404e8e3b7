#!/usr/bin/env bash
# Experiment (issue: fast without the cache): cold whole-year series in four
# zones from today's rollup layout and from day rows of quarter-hour prefix
# sums, in PostgreSQL alone (no API, no cache), 50 clients at once. Builds
# the data set in a throwaway database (loadtest/cold-layouts.sql), checks
# that every layout gives the same buckets, then times each with pgbench.
#   [CLIENTS=50] bash loadtest/bench-cold-layouts.sh [SECONDS_PER_RUN]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
SECS="${1:-8}"; DB=tu_bench_layouts
WORK="$(mktemp -d)"
trap 'psql_admin -c "drop database if exists $DB with (force)" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
ensure_postgres
psql_admin -c "drop database if exists $DB with (force)" >/dev/null; psql_admin -c "create database $DB" >/dev/null
q() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$DB" -v ON_ERROR_STOP=1 -qtA "$@"; }
say "building the data set (525,600 events, 30 series, 2025)"
q -f "$ROOT/loadtest/cold-layouts.sql"
q -c "select 'rows: quarter ' || (select count(*) from exp_quarter) || ', hour ' || (select count(*) from exp_hour)
       || ', day arrays ' || (select count(*) from exp_dayq) || '; table sizes (MB): quarter '
       || pg_total_relation_size('exp_quarter') / 1048576 || ', hour ' || pg_total_relation_size('exp_hour') / 1048576
       || ', day arrays ' || pg_total_relation_size('exp_dayq') / 1048576"
ZONES="UTC America/New_York Asia/Kolkata Asia/Kathmandu"
for z in $ZONES; do for g in day week month; do
  diff="$(q -c "select count(*) from ((select * from exp_fine('$z:$g', 'exp_quarter') except select * from exp_dayq_read('$z:$g'))
                 union all (select * from exp_dayq_read('$z:$g') except select * from exp_fine('$z:$g', 'exp_quarter'))) d")"
  [ "$diff" = 0 ] || die "$z $g: the day-array layout differs from the quarter-hour rollup in $diff rows"
done; done
say "every layout gives the same buckets in every zone and granularity"
CLIENTS="${CLIENTS:-50}"
say "$CLIENTS clients at once, $SECS s per layout and view"
run() { # NAME SQL
  echo "select count(*) from ($2) x;" >"$WORK/q.sql"
  pgbench -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -n -c "$CLIENTS" -j "$(( CLIENTS < 2 ? 1 : 2 ))" -T "$SECS" -f "$WORK/q.sql" \
    -l --log-prefix="$WORK/log" "$DB" >/dev/null 2>&1 || die "pgbench failed for $1"
  cat "$WORK"/log.* | awk '{print $3 / 1000}' | sort -n >"$WORK/lat"; rm -f "$WORK"/log.*
  awk -v name="$1" '{a[NR] = $1} END { printf "%-44s %6d requests  p50 %8.1f ms  p99 %8.1f ms\n", name, NR, a[int(NR * 0.5) + 1], a[int(NR * 0.99) + 1] }' "$WORK/lat"
}
for z in $ZONES; do for g in day week month; do
  case "$z" in UTC|America/New_York) fine=exp_hour ;; *) fine=exp_quarter ;; esac
  run "$z $g, today ($fine)" "select * from exp_fine('$z:$g', '$fine')"
  run "$z $g, day rows of prefix sums" "select * from exp_dayq_read('$z:$g')"
done; done
