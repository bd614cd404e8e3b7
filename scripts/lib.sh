# Shared by scripts/run.sh and scripts/test.sh: install what is missing,
# start what is needed, and say clearly what failed. Sourced, not run.
# Every step is idempotent and quick when things are already in place.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${TOKENUSAGE_CACHE:-$HOME/.cache/tokenusage}"
TANSU_VERSION="0.6.0"
TANSU_BIN="$CACHE/tansu-$TANSU_VERSION/bin/tansu"
PG_HOST="${TOKENUSAGE_PG_HOST:-127.0.0.1}"
PG_PORT="${TOKENUSAGE_PG_PORT:-5432}"
PG_USER="${TOKENUSAGE_PG_USER:-postgres}"

say()  { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

need_apt_update=1
apt_install() {
  command -v apt-get >/dev/null || die "cannot install $*: no apt-get on this machine; install it by hand"
  if [ "$need_apt_update" = 1 ]; then
    apt-get update -qq >/dev/null || die "apt-get update failed"
    need_apt_update=0
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

ensure_rust() {
  command -v cargo >/dev/null || die "cargo is missing: install Rust 1.95+ (rustup) first"
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    say "adding rustfmt and clippy"
    rustup component add rustfmt clippy >/dev/null || die "cannot add rustfmt/clippy with rustup"
  fi
  # librdkafka is built with OpenSSL (Kafka TLS and SASL): it needs the
  # headers and pkg-config, plus a C toolchain.
  local missing=()
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v cc >/dev/null || missing+=(build-essential)
  command -v make >/dev/null || missing+=(make)
  pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing build dependencies: ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

# Tansu: a Kafka-protocol broker from crates.io. A cold build takes ~15 min
# on 2 cores, so it is cached outside the checkout and reused.
ensure_tansu() {
  if [ -x "$TANSU_BIN" ]; then return; fi
  say "installing the Tansu $TANSU_VERSION Kafka broker into $CACHE (first time only, ~15 min)"
  mkdir -p "$CACHE"
  cargo install "tansu@$TANSU_VERSION" --locked --features dynostore,libsql \
      --root "$CACHE/tansu-$TANSU_VERSION" >"$CACHE/tansu-install.log" 2>&1 \
    || { tail -20 "$CACHE/tansu-install.log" >&2; die "installing tansu failed (full log: $CACHE/tansu-install.log)"; }
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_broker PORT DATA_DIR PIDFILE [ENGINE]: starts Tansu unless something
# already answers on PORT. ENGINE is `sqlite` (durable, the default) or
# `memory` (several times faster; loses everything on restart).
#
# Tansu holds every fetch for the full wait (it does not answer early when
# records arrive, as Apache Kafka does), so processes run against it get a
# short fetch wait instead of the product's Kafka default (500 ms). The
# value and its latency/idle-CPU trade are measured in docs/BENCHMARKS.md
# ("Fetch wait"); benchmarks choose their own.
TANSU_FETCH_WAIT_MS=20
start_broker() {
  local port="$1" dir="$2" pidfile="$3" engine="${4:-sqlite}"
  export TOKENUSAGE_KAFKA_FETCH_WAIT_MS="${TOKENUSAGE_KAFKA_FETCH_WAIT_MS:-$TANSU_FETCH_WAIT_MS}"
  if port_open "$port"; then say "a Kafka broker already answers on 127.0.0.1:$port"; return; fi
  mkdir -p "$dir"
  say "starting the Tansu broker on 127.0.0.1:$port (data in $dir)"
  ( cd "$dir" && exec "$TANSU_BIN" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$([ "$engine" = memory ] && echo memory://tansu/ || echo sqlite://tansu.db)" ) >"$dir/broker.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    port_open "$port" && return
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$dir/broker.log" >&2; die "the broker exited at start (log: $dir/broker.log)"; }
    sleep 0.1
  done
  die "the broker did not open 127.0.0.1:$port within 10 s (log: $dir/broker.log)"
}

stop_pidfile() {
  local pidfile="$1"
  [ -f "$pidfile" ] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# start_replica_pair DIR PRIMARY_PORT REPLICA_PORT: a PostgreSQL primary of
# our own (initdb, trust on 127.0.0.1, replication allowed) and a hot
# standby streaming from it, made with pg_basebackup, for the read-replica
# tests. Our own pair rather than a standby of the machine's cluster: that
# one's pg_hba need not allow replication and is not ours to change. Data
# and logs in DIR; stop_replica_pair DIR stops both.
start_replica_pair() {
  local dir="$1" p1="$2" p2="$3" bin
  bin="$(pg_config --bindir 2>/dev/null || true)"
  [ -x "$bin/initdb" ] || bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$bin/initdb" ] && [ -x "$bin/pg_basebackup" ] || die "initdb/pg_basebackup not found (PostgreSQL server binaries)"
  # initdb refuses root: the clusters belong to the postgres account then.
  local as=()
  if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
  for p in "$p1" "$p2"; do port_open "$p" && die "port $p is taken: set TOKENUSAGE_TEST_REPLICA_PORT to a free pair"; done
  mkdir -p "$dir"
  [ "${#as[@]}" = 0 ] || chown postgres "$dir"
  chmod 755 "$dir"
  # The servers' account may not enter the caller's directory.
  cd "$dir"
  say "starting a PostgreSQL primary on 127.0.0.1:$p1 and a streaming standby on 127.0.0.1:$p2 (in $dir)"
  "${as[@]}" "$bin/initdb" -D "$dir/primary" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { tail -5 "$dir/initdb.log" >&2; die "initdb failed (log: $dir/initdb.log)"; }
  printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nwal_level = replica\nmax_wal_senders = 4\nhot_standby_feedback = on\nmax_connections = 60\n" \
    "$p1" "$dir" | "${as[@]}" tee -a "$dir/primary/postgresql.conf" >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$dir/primary" -l "$dir/primary.log" -w -t 30 start >/dev/null \
    || { tail -5 "$dir/primary.log" >&2; die "the primary did not start (log: $dir/primary.log)"; }
  "${as[@]}" "$bin/pg_basebackup" -h 127.0.0.1 -p "$p1" -U postgres -D "$dir/replica" -R -X stream --checkpoint=fast \
    >"$dir/basebackup.log" 2>&1 || { tail -5 "$dir/basebackup.log" >&2; die "pg_basebackup failed (log: $dir/basebackup.log)"; }
  printf "port = %s\n" "$p2" | "${as[@]}" tee -a "$dir/replica/postgresql.conf" >/dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$dir/replica" -l "$dir/replica.log" -w -t 30 start >/dev/null \
    || { tail -5 "$dir/replica.log" >&2; die "the standby did not start (log: $dir/replica.log)"; }
  [ "$(psql -h 127.0.0.1 -p "$p2" -U postgres -d postgres -qtAc 'select pg_is_in_recovery()')" = t ] \
    || die "the server on $p2 is not a standby"
  cd - >/dev/null
}

stop_replica_pair() {
  local dir="$1" bin as=()
  [ -d "$dir" ] || return 0
  bin="$(pg_config --bindir 2>/dev/null || true)"
  [ -x "$bin/pg_ctl" ] || bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
  for c in replica primary; do
    [ -f "$dir/$c/postmaster.pid" ] && (cd / && "${as[@]}" "$bin/pg_ctl" -D "$dir/$c" -m immediate stop >/dev/null 2>&1) || true
  done
}

psql_admin() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

ensure_postgres() {
  if ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null; then
    say "installing PostgreSQL"
    apt_install postgresql
  fi
  if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
    say "starting PostgreSQL"
    local v; v="$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)"
    [ -n "$v" ] || die "PostgreSQL is installed but has no cluster in /etc/postgresql"
    pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || pg_ctlcluster "$v" main start \
      || die "cannot start PostgreSQL $v (try: pg_ctlcluster $v main start)"
    for _ in $(seq 1 50); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 0.2; done
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || die "PostgreSQL did not come up on $PG_HOST:$PG_PORT"
  fi
  psql_admin -c 'select 1' >/dev/null 2>&1 \
    || die "cannot connect to PostgreSQL as $PG_USER on $PG_HOST:$PG_PORT (trust or a ~/.pgpass entry is needed)"
}

ensure_database() {
  local name="$1"
  if [ "$(psql_admin -c "select 1 from pg_database where datname = '$name'")" != "1" ]; then
    say "creating database $name"
    psql_admin -c "create database \"$name\"" >/dev/null || die "cannot create database $name"
  fi
}

ensure_web_assets() {
  command -v npm >/dev/null || apt_install nodejs npm
  if [ ! -f "$ROOT/web/node_modules/uplot/dist/uPlot.iife.min.js" ] \
     || [ "$ROOT/web/package-lock.json" -nt "$ROOT/web/node_modules/.package-lock.json" ]; then
    say "installing front-end assets (npm ci)"
    npm ci --prefix "$ROOT/web" --no-audit --no-fund --loglevel=error >/dev/null || die "npm ci in web/ failed"
  fi
}

# The browser tests drive Debian's Chromium (playwright cannot download one here).
ensure_chromium() {
  [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && return
  say "installing Chromium for the browser tests"
  apt_install chromium
}

# ensure_venv NAME REQUIREMENTS PROBE: a virtualenv in the cache holding
# exactly REQUIREMENTS (pinned with hashes, no resolution), reinstalled when
# they change; PROBE is a file inside it that shows it is complete. Sets VENV.
ensure_venv() {
  local name="$1" req="$2" probe="$3"
  local sum; sum="$(sha256sum "$req" | cut -c1-16)"
  VENV="$CACHE/$name-$sum"
  [ -e "$VENV/$probe" ] && return
  command -v python3 >/dev/null || apt_install python3 python3-venv
  say "installing $name (pinned in ${req#"$ROOT"/}) into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; } \
    || die "cannot create a Python virtualenv"
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r "$req" \
    || { rm -rf "$VENV"; die "installing $name failed"; }
}

# The OpenAPI fuzzer (schemathesis from PyPI, pinned with hashes). Sets
# API_FUZZ_VENV.
ensure_api_fuzzer() {
  ensure_venv api-fuzz "$ROOT/scripts/api-fuzz/requirements.txt" bin/st
  API_FUZZ_VENV="$VENV"
}

# The OpenTelemetry Python SDK and its OTLP/HTTP exporter (PyPI, pinned with
# hashes) and the JS SDK with its exporter (npm, pinned in a lock file), for
# the tests that export real spans to the server. Sets and exports
# TOKENUSAGE_TEST_OTEL_PYTHON (that virtualenv's python) and
# TOKENUSAGE_TEST_OTEL_NODE_DIR (where the JS SDK is installed).
ensure_otel_sdk() {
  ensure_venv otel-sdk "$ROOT/scripts/otel/requirements.txt" bin/python
  "$VENV/bin/python" -c 'import opentelemetry.exporter.otlp.proto.http.trace_exporter' 2>/dev/null \
    || { rm -rf "$VENV"; die "the OpenTelemetry SDK virtualenv is incomplete; run again"; }
  export TOKENUSAGE_TEST_OTEL_PYTHON="$VENV/bin/python"
  # The JS SDK and its OTLP/HTTP exporter, pinned in scripts/otel/package-lock.json.
  local node_dir="$ROOT/scripts/otel"
  command -v npm >/dev/null || apt_install nodejs npm
  if [ ! -f "$node_dir/node_modules/@opentelemetry/exporter-trace-otlp-proto/package.json" ] \
     || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
    say "installing the OpenTelemetry JS SDK (npm ci in scripts/otel)"
    npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error >/dev/null || die "npm ci in scripts/otel failed"
  fi
  export TOKENUSAGE_TEST_OTEL_NODE_DIR="$node_dir"
}

# The providers' SDKs and the OpenAI instrumentation (PyPI, pinned with
# hashes in scripts/provider-sdks/requirements.txt), for the tests that read
# the SDKs' usage types and run the instrumentation. Sets and exports
# TOKENUSAGE_TEST_PROVIDER_SDK_PYTHON.
ensure_provider_sdks() {
  ensure_venv provider-sdks "$ROOT/scripts/provider-sdks/requirements.txt" bin/python
  "$VENV/bin/python" -c 'import openai, anthropic, opentelemetry.instrumentation.openai_v2, opentelemetry.processor.baggage' 2>/dev/null \
    || { rm -rf "$VENV"; die "the provider SDK virtualenv is incomplete; run again"; }
  export TOKENUSAGE_TEST_PROVIDER_SDK_PYTHON="$VENV/bin/python"
}

# LiteLLM's model_prices_and_context_window.json, out of the pinned wheel
# (scripts/fixtures/litellm.txt), for the price-import tests. Sets and
# exports TOKENUSAGE_TEST_LITELLM_JSON.
ensure_litellm_fixture() {
  local req="$ROOT/scripts/fixtures/litellm.txt"
  local sum; sum="$(sha256sum "$req" | cut -c1-16)"
  local dir="$CACHE/litellm-fixture-$sum"
  export TOKENUSAGE_TEST_LITELLM_JSON="$dir/model_prices_and_context_window.json"
  [ -s "$TOKENUSAGE_TEST_LITELLM_JSON" ] && return
  command -v python3 >/dev/null || apt_install python3 python3-venv
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  say "downloading the LiteLLM price catalogue (pinned wheel, not installed) into $dir"
  rm -rf "$dir"; mkdir -p "$dir/wheel"
  python3 -m pip download -q --disable-pip-version-check --no-deps --require-hashes -r "$req" -d "$dir/wheel" \
    || die "downloading the pinned litellm wheel failed"
  python3 - "$dir/wheel" "$TOKENUSAGE_TEST_LITELLM_JSON" <<'PY' || die "the litellm wheel holds no price catalogue"
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("litellm/model_prices_and_context_window_backup.json"))
PY
  rm -rf "$dir/wheel"
}

# bench_setup DB PORT TOPIC: everything a benchmark in loadtest/ needs: a
# release build, an empty database DB, a memory-engine broker on PORT, the
# environment pointing at both, and a trap that removes it all on exit
# (plus any pid files the caller adds to $WORK). Sets WORK and BIN.
bench_setup() {
  local db="$1" port="$2" topic="$3"
  WORK="$(mktemp -d)"; BIN="$ROOT/target/release"; BENCH_DB="$db"
  trap 'for p in "$WORK"/*.pid; do stop_pidfile "$p"; done; psql_admin -c "drop database if exists $BENCH_DB with (force)" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
  ensure_postgres; ensure_tansu; ensure_web_assets
  cargo build --release -q -p tokenusage -p tokenusage-loadtest --manifest-path "$ROOT/Cargo.toml" || die "the release build failed"
  psql_admin -c "drop database if exists $db with (force)" >/dev/null; psql_admin -c "create database $db" >/dev/null
  # Latency benchmarks want the shortest useful wait (2 ms: docs/BENCHMARKS.md).
  export TOKENUSAGE_KAFKA_FETCH_WAIT_MS="${TOKENUSAGE_KAFKA_FETCH_WAIT_MS:-2}"
  start_broker "$port" "$WORK/tansu" "$WORK/broker.pid" memory
  export DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db" KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$port" \
         KAFKA_OPTIONS=broker.address.family=v4 TOKENUSAGE_TOPIC="$topic" RUST_LOG=warn
  "$BIN/tokenusage" migrate >/dev/null
}
