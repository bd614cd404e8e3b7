#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests
# against real PostgreSQL and a real Kafka-protocol broker (Tansu).
# Starts its own broker on a private port with throwaway storage and stops
# it on exit, whatever happens; leaves nothing running.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BROKER_PORT="${TOKENUSAGE_TEST_BROKER_PORT:-29092}"
WORK="$(mktemp -d -t tokenusage-test.XXXXXX)"
cleanup() {
  stop_pidfile "$WORK/broker.pid"
  # Test databases are dropped by the tests; sweep any a crash left behind.
  for db in $(psql_admin -c "select datname from pg_database where datname like 'tu\_test\_%'" 2>/dev/null); do
    psql_admin -c "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ensure_rust
ensure_postgres
ensure_web_assets
ensure_tansu
# The shared test broker never restarts, so the fast memory engine serves;
# tests that restart a broker start their own with SQLite storage.
start_broker "$BROKER_PORT" "$WORK/tansu" "$WORK/broker.pid" memory

cd "$ROOT"
say "cargo fmt --check"
cargo fmt --all --check || die "formatting differs: run cargo fmt --all"
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings || die "clippy found problems"

export TOKENUSAGE_TEST_KAFKA="127.0.0.1:$BROKER_PORT"
export TOKENUSAGE_TEST_PG="postgres://$PG_USER@$PG_HOST:$PG_PORT"
export TOKENUSAGE_TANSU_BIN="$TANSU_BIN"
say "cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee "$WORK/test.log"
status=${PIPESTATUS[0]}
# Sum the per-binary "test result:" lines into one closing line.
passed=$(grep -E '^test result: ' "$WORK/test.log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result: ' "$WORK/test.log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
echo "tests: $passed passed, $failed failed"
exit "$status"
