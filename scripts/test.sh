#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests
# against real PostgreSQL and a real Kafka-protocol broker (Tansu).
# Starts its own broker on a private port with throwaway storage and stops
# it on exit, whatever happens; leaves nothing running.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BROKER_PORT="${TOKENUSAGE_TEST_BROKER_PORT:-29092}"
WORK="$(mktemp -d -t tokenusage-test.XXXXXX)"
# Apart from WORK (private to this account): the replica pair's servers run
# as the postgres account when this runs as root.
REPLICA_DIR="$(mktemp -d -t tokenusage-replica.XXXXXX)"
cleanup() {
  stop_pidfile "$WORK/broker.pid"
  stop_replica_pair "$REPLICA_DIR"
  rm -rf "$REPLICA_DIR"
  # Test databases are dropped by the tests; sweep any a crash left behind.
  for db in $(psql_admin -c "select datname from pg_database where datname like 'tu\_test\_%'" 2>/dev/null); do
    psql_admin -c "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
  done
  psql_admin -c "drop database if exists tu_e2e with (force)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ensure_rust
ensure_postgres
ensure_web_assets
ensure_chromium
ensure_tansu
ensure_litellm_fixture
ensure_otel_sdk
ensure_provider_sdks
# The shared test broker never restarts, so the fast memory engine serves;
# tests that restart a broker start their own with SQLite storage.
start_broker "$BROKER_PORT" "$WORK/tansu" "$WORK/broker.pid" memory
# A primary and a streaming standby of our own, for the read-replica tests.
REPLICA_PORT="${TOKENUSAGE_TEST_REPLICA_PORT:-25432}"
start_replica_pair "$REPLICA_DIR" "$REPLICA_PORT" "$((REPLICA_PORT + 1))"

cd "$ROOT"
say "cargo fmt --check"
cargo fmt --all --check || die "formatting differs: run cargo fmt --all"
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings || die "clippy found problems"

export TOKENUSAGE_TEST_KAFKA="127.0.0.1:$BROKER_PORT"
export TOKENUSAGE_TEST_PG="postgres://$PG_USER@$PG_HOST:$PG_PORT"
export TOKENUSAGE_TANSU_BIN="$TANSU_BIN"
export TOKENUSAGE_TEST_PG_PRIMARY="postgres://postgres@127.0.0.1:$REPLICA_PORT"
export TOKENUSAGE_TEST_PG_STANDBY="postgres://postgres@127.0.0.1:$((REPLICA_PORT + 1))"
say "cargo test"
# Failures are counted and reported at the end, not fatal here.
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$WORK/test.log" || status=$?

# The dashboard's pure logic (formatting, deltas, the chart's model and
# text, budgets and the audit in words), without a browser.
say "dashboard unit tests (node --test)"
node --test "$ROOT/web/tests/unit/" 2>&1 | tee "$WORK/unit.log" && unit_status=0 || unit_status=$?
[ "$unit_status" = 0 ] || status=1

# Browser end-to-end tests: the real binary (built by cargo test above)
# serving a fresh database and topic, driven through Chromium.
say "browser end-to-end tests (playwright-core + Chromium + axe-core)"
psql_admin -c "drop database if exists tu_e2e with (force)" >/dev/null
psql_admin -c "create database tu_e2e" >/dev/null
DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/tu_e2e" KAFKA_BOOTSTRAP_SERVERS="$TOKENUSAGE_TEST_KAFKA" \
  KAFKA_OPTIONS=broker.address.family=v4 TOKENUSAGE_TOPIC="e2e-$(date +%s)" TOKENUSAGE_KAFKA_IDEMPOTENCE=false \
  "$ROOT/target/debug/tokenusage" migrate >/dev/null
DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/tu_e2e" KAFKA_BOOTSTRAP_SERVERS="$TOKENUSAGE_TEST_KAFKA" \
  KAFKA_OPTIONS=broker.address.family=v4 TOKENUSAGE_TOPIC="e2e-$(date +%s)" TOKENUSAGE_KAFKA_IDEMPOTENCE=false \
  node "$ROOT/web/tests/e2e.mjs" 2>&1 | tee "$WORK/e2e.log" && e2e_status=0 || e2e_status=$?
[ "$e2e_status" = 0 ] || status=1

# The OpenAPI fuzzer against the real server, from docs/openapi.json.
say "OpenAPI fuzzing (schemathesis) against the real server"
bash "$ROOT/scripts/api-fuzz/run.sh" 2>&1 | tee "$WORK/fuzz.log" && fuzz_status=0 || fuzz_status=$?
[ "$fuzz_status" = 0 ] || status=1

# Sum the per-binary "test result:" lines (and the browser tests) into one closing line.
passed=$(grep -E '^test result: ' "$WORK/test.log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result: ' "$WORK/test.log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
unit_passed=$(sed -nE 's/^# pass ([0-9]+)$/\1/p' "$WORK/unit.log" | tail -1); unit_passed=${unit_passed:-0}
unit_failed=$(sed -nE 's/^# fail ([0-9]+)$/\1/p' "$WORK/unit.log" | tail -1); unit_failed=${unit_failed:-0}
[ "$unit_status" = 0 ] || [ "$unit_failed" -gt 0 ] || unit_failed=1
e2e_passed=$(grep -cE '^ok   ' "$WORK/e2e.log" || true)
e2e_failed=$(grep -cE '^FAIL ' "$WORK/e2e.log" || true)
[ "$e2e_status" = 0 ] || [ "$e2e_failed" -gt 0 ] || e2e_failed=1
fuzz_passed=$(grep -cE '^ok   ' "$WORK/fuzz.log" || true)
fuzz_failed=$(grep -cE '^FAIL ' "$WORK/fuzz.log" || true)
[ "$fuzz_status" = 0 ] || [ "$fuzz_failed" -gt 0 ] || fuzz_failed=1
echo "tests: $((passed + unit_passed + e2e_passed + fuzz_passed)) passed, $((failed + unit_failed + e2e_failed + fuzz_failed)) failed" \
  "(dashboard unit: $unit_passed passed, $unit_failed failed; browser: $e2e_passed passed, $e2e_failed failed; screenshots in target/e2e-artifacts;" \
  "OpenAPI fuzz: $fuzz_passed passed, $fuzz_failed failed, reports in target/api-fuzz)"
exit "$status"
