#!/usr/bin/env bash
# Fetch wait against a broker that holds fetches: produce -> push latency and
# idle CPU of `serve --demo` (and of the broker), for docs/BENCHMARKS.md.
#   bash loadtest/fetch-wait.sh FETCH_WAIT_MS [embedded|sqlite|memory]
# Needs the release build of tokenusage and live-bench.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
W="$1" BROKER="${2:-embedded}"
WORK="$(mktemp -d)"; BP=""
trap '[ -n "$BP" ] && kill "$BP" 2>/dev/null; kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
psql_admin -c "drop database if exists tu_fetch_wait with (force)" >/dev/null
psql_admin -c "create database tu_fetch_wait" >/dev/null
export DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/tu_fetch_wait" TOKENUSAGE_JWT_SECRET="bench-secret-bench-secret-bench-secret!"
if [ "$BROKER" != embedded ]; then
  ensure_tansu
  TOKENUSAGE_KAFKA_FETCH_WAIT_MS="$W" start_broker 28992 "$WORK/tansu" "$WORK/broker.pid" "$BROKER"
  BP="$(cat "$WORK/broker.pid")"
  export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:28992 KAFKA_OPTIONS=broker.address.family=v4 TOKENUSAGE_KAFKA_IDEMPOTENCE=false
fi
TOKENUSAGE_KAFKA_FETCH_WAIT_MS="$W" TOKENUSAGE_LISTEN=127.0.0.1:18700 TOKENUSAGE_DEMO_DAYS=1 \
  "$ROOT/target/release/tokenusage" serve --demo >"$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do grep -q "running at" "$WORK/serve.log" && break; sleep 0.2; done
if [ "$BROKER" = embedded ]; then
  KAFKA_BOOTSTRAP_SERVERS="$(grep -o "broker at [^:]*:[0-9]*" "$WORK/serve.log" | sed 's/broker at //')"; export KAFKA_BOOTSTRAP_SERVERS
fi
sleep 20   # the demo history is published and counted
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
T0=$(cpu "$PID"); B0=$([ -n "$BP" ] && cpu "$BP" || echo 0); sleep 20
T1=$(cpu "$PID"); B1=$([ -n "$BP" ] && cpu "$BP" || echo 0); HZ=$(getconf CLK_TCK)
echo "$BROKER fetch_wait=${W}ms idle CPU: serve $(( (T1-T0) * 100 / (20*HZ) ))% broker $(( (B1-B0) * 100 / (20*HZ) ))% of a core"
"$ROOT/target/release/live-bench" --addr 127.0.0.1:18700 --server-pid "$PID" --sockets 10 --users 10 --rate 10 --seconds 20 2>&1 | grep p50
