#!/usr/bin/env bash
# The quick start: build, provision, and run `tokenusage serve --demo`.
#
#   scripts/run.sh            events go through an embedded, in-memory broker
#                             (nothing else to install; not durable)
#   scripts/run.sh --durable  a Tansu broker with SQLite storage in .dev/,
#                             kept between runs (first run compiles Tansu,
#                             ~15 min); `scripts/run.sh stop` stops it
#
# Installs what is missing (Rust, PostgreSQL, npm assets), then runs the
# service in the foreground; Ctrl-C stops it. Any other arguments are
# passed to `tokenusage serve`. A broker of your own: set
# KAFKA_BOOTSTRAP_SERVERS and the embedded one is not started.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEV="$ROOT/.dev"
BROKER_PORT="${TOKENUSAGE_DEV_BROKER_PORT:-19092}"

if [ "${1:-}" = "stop" ]; then
  stop_pidfile "$DEV/broker.pid"; say "stopped the dev broker"; exit 0
fi
durable=false
if [ "${1:-}" = "--durable" ]; then durable=true; shift; fi

ensure_rust
ensure_postgres
ensure_database tokenusage
ensure_web_assets
if $durable; then
  ensure_tansu
  mkdir -p "$DEV"
  start_broker "$BROKER_PORT" "$DEV/tansu" "$DEV/broker.pid"
  export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$BROKER_PORT}"
  # Tansu speaks IPv4 only.
  export KAFKA_OPTIONS="${KAFKA_OPTIONS:-broker.address.family=v4}"
  # Tansu 0.6.0 panics when an idempotent producer outlives a broker restart;
  # de-duplication by event id keeps totals exact without it (docs/DECISIONS.md).
  export TOKENUSAGE_KAFKA_IDEMPOTENCE="${TOKENUSAGE_KAFKA_IDEMPOTENCE:-false}"
fi

say "building tokenusage (release; the first build takes a few minutes)"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p tokenusage || die "the build failed"

export DATABASE_URL="${DATABASE_URL:-postgres://$PG_USER@$PG_HOST:$PG_PORT/tokenusage}"
export TOKENUSAGE_LISTEN="${TOKENUSAGE_LISTEN:-127.0.0.1:8080}"
if $durable; then say "starting tokenusage (the broker keeps running; 'scripts/run.sh stop' stops it)"; fi
exec "$ROOT/target/release/tokenusage" serve --demo "$@"
