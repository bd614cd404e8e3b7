#!/usr/bin/env bash
# The quick start: build, provision, and run `tokenusage serve --demo`.
# Installs what is missing (Tansu broker, PostgreSQL, npm assets), starts the
# broker in the background (data in .dev/, kept between runs), and runs the
# service in the foreground. Ctrl-C stops the service; `scripts/run.sh stop`
# also stops the broker.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEV="$ROOT/.dev"
BROKER_PORT="${TOKENUSAGE_DEV_BROKER_PORT:-19092}"

if [ "${1:-}" = "stop" ]; then
  stop_pidfile "$DEV/broker.pid"; say "stopped the dev broker"; exit 0
fi

ensure_rust
ensure_postgres
ensure_database tokenusage
ensure_web_assets
ensure_tansu
mkdir -p "$DEV"
start_broker "$BROKER_PORT" "$DEV/tansu" "$DEV/broker.pid"

say "building tokenusage (release)"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p tokenusage || die "the build failed"

export DATABASE_URL="${DATABASE_URL:-postgres://$PG_USER@$PG_HOST:$PG_PORT/tokenusage}"
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$BROKER_PORT}"
# Tansu speaks IPv4 only.
export KAFKA_OPTIONS="${KAFKA_OPTIONS:-broker.address.family=v4}"
# Tansu 0.6.0 panics when an idempotent producer outlives a broker restart;
# de-duplication by event id keeps totals exact without it (docs/DECISIONS.md).
export TOKENUSAGE_KAFKA_IDEMPOTENCE="${TOKENUSAGE_KAFKA_IDEMPOTENCE:-false}"
export TOKENUSAGE_LISTEN="${TOKENUSAGE_LISTEN:-127.0.0.1:8080}"
say "starting tokenusage (the broker keeps running; 'scripts/run.sh stop' stops it)"
exec "$ROOT/target/release/tokenusage" serve --demo "$@"
