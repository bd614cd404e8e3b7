//! Test harness: a fresh database and a fresh topic per test, against the
//! real PostgreSQL and the real broker that `scripts/test.sh` starts, and the
//! real services started in-process on port 0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use sqlx::PgPool;
use tokenusage_api::{ApiArgs, Application, Role};
use tokenusage_plumbing::{DatabaseArgs, KafkaArgs};
use tokenusage_projector::ProjectorArgs;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn kafka_brokers() -> String {
    std::env::var("TOKENUSAGE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:29092".into())
}

fn pg_base() -> String {
    std::env::var("TOKENUSAGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database and a topic of this test's own.
pub struct TestEnv {
    pub db: DatabaseArgs,
    pub kafka: KafkaArgs,
    pub pool: PgPool,
    db_name: String,
    /// The server's URL without a database.
    base: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with_brokers(kafka_brokers()).await
    }

    /// A database of its own; the topic is named but not created (for
    /// tests that never touch Kafka).
    pub async fn database_only() -> Self {
        Self::create(kafka_brokers(), false).await
    }

    pub async fn with_brokers(brokers: String) -> Self {
        Self::create(brokers, true).await
    }

    /// A database of its own on the PostgreSQL server at `base` (a URL
    /// without a database), and a topic.
    pub async fn on_server(base: &str) -> Self {
        Self::create_on(base, kafka_brokers(), true).await
    }

    async fn create(brokers: String, with_topic: bool) -> Self {
        Self::create_on(&pg_base(), brokers, with_topic).await
    }

    async fn create_on(base: &str, brokers: String, with_topic: bool) -> Self {
        // Logs show with --nocapture; RUST_LOG filters.
        tokenusage_plumbing::telemetry::init(tokenusage_plumbing::telemetry::LogFormat::Pretty);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("tu_test_{}", &id[..16]);
        let admin =
            PgPool::connect(&format!("{base}/postgres")).await.expect("PostgreSQL for tests (run scripts/test.sh)");
        sqlx::query(&format!("create database {db_name}")).execute(&admin).await.unwrap();
        admin.close().await;
        let db = DatabaseArgs {
            url: SecretString::from(format!("{base}/{db_name}")),
            max_connections: 8,
            acquire_timeout_secs: 10,
        };
        let pool = db.connect().await.unwrap();
        tokenusage_schema::migrations::migrate(&pool).await.unwrap();
        let kafka = KafkaArgs {
            bootstrap_servers: brokers,
            topic: format!("tu-test-{}", &id[..12]),
            options: vec![("broker.address.family".into(), "v4".into())],
            topic_partitions: 3,
            topic_replication: 1,
            topic_exists: false,
        };
        let env = Self { db, kafka, pool, db_name, base: base.to_owned() };
        if with_topic {
            tokenusage_plumbing::topic::ensure_topic(&env.kafka).await.expect("create the test topic");
        }
        env
    }

    /// Another handle on the same database and topic (the pool is shared);
    /// `cleanup` must be called on the original only.
    pub fn shallow_clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            kafka: self.kafka.clone(),
            pool: self.pool.clone(),
            db_name: String::new(),
            base: self.base.clone(),
        }
    }

    /// The projector's declared defaults, with this test's group and the
    /// shorter waits tests want.
    pub fn projector_args(&self) -> ProjectorArgs {
        let mut args: ProjectorArgs = tokenusage_plumbing::config::defaults();
        args.group = format!("{}-projector", self.kafka.topic);
        args.batch_max_events = 1000;
        args.batch_max_wait_ms = 20;
        args.session_timeout_ms = 6000;
        // Tansu holds every fetch for the full wait: the dev scripts' value
        // (scripts/lib.sh, TANSU_FETCH_WAIT_MS), not Kafka's 500 ms.
        args.fetch_wait_ms = 20;
        args
    }

    pub async fn add_user(&self, id: &str, role: Role, password: &str) {
        tokenusage_api::accounts::upsert(&self.pool, id, id, role, password).await.unwrap();
    }

    /// Drops the database. Call at the end of a test; `scripts/test.sh`
    /// sweeps any left by a failed test.
    /// This test's database.
    pub fn db_name(&self) -> &str {
        &self.db_name
    }

    pub async fn cleanup(self) {
        // `close` waits for every checked-out connection to come back; a
        // test that still holds one (a listener, a transaction) must not
        // hang the run: the database is dropped with `force` below anyway.
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.pool.close()).await.is_err() {
            eprintln!("cleanup: a connection of {} was still checked out after 10 s", self.db_name);
        }
        if let Ok(admin) = PgPool::connect(&format!("{}/postgres", self.base)).await {
            let _ =
                sqlx::query(&format!("drop database if exists {} with (force)", self.db_name)).execute(&admin).await;
        }
    }
}

/// The projector and the API running in this process.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl TestApp {
    pub async fn spawn(env: &TestEnv) -> Self {
        Self::spawn_with(env, true, true).await
    }

    /// The API and ingest only, with a non-idempotent producer (see the
    /// broker-outage test); start a projector later with [`spawn_projector`].
    pub async fn spawn_without_projector_non_idempotent(env: &TestEnv) -> Self {
        Self::spawn_with(env, false, false).await
    }

    /// The API and ingest with these API settings, and no projector.
    pub async fn spawn_api(env: &TestEnv, api: ApiArgs) -> Self {
        Self::spawn_full(env, false, true, api).await
    }

    /// The API, ingest and the projector, with these API settings.
    pub async fn spawn_with_api(env: &TestEnv, api: ApiArgs) -> Self {
        Self::spawn_full(env, true, true, api).await
    }

    async fn spawn_with(env: &TestEnv, projector: bool, idempotence: bool) -> Self {
        Self::spawn_full(env, projector, idempotence, test_api_args()).await
    }

    async fn spawn_full(env: &TestEnv, projector: bool, idempotence: bool, api: ApiArgs) -> Self {
        tokenusage_plumbing::metrics::recorder();
        let shutdown = CancellationToken::new();
        let publisher = tokenusage_ingest::Publisher::new(
            &env.kafka,
            &tokenusage_ingest::ProducerArgs { idempotence, ..test_producer() },
        )
        .unwrap();
        let ingest = tokenusage_ingest::http::router(
            &tokenusage_ingest::http::IngestArgs::default(),
            publisher,
            env.pool.clone(),
        );
        let mounted = tokenusage_api::Mounted { router: ingest, doc: Some(tokenusage_ingest::http::openapi()) };
        let app = Application::build(api, env.pool.clone(), mounted).await.unwrap();
        let addr = app.local_addr();
        let readiness = app.readiness();
        let s = shutdown.clone();
        let mut tasks = vec![tokio::spawn(async move {
            app.run_until_stopped(s).await.unwrap();
        })];
        if projector {
            // As under `serve`, but with a short patience so a test sees
            // a stalled projector reported within seconds.
            let health = std::sync::Arc::new(tokenusage_projector::Health::new("projector"));
            readiness.watch_projector(health.clone(), TEST_STALL_PATIENCE);
            tasks.push(spawn_projector_with(env, shutdown.clone(), health));
        }
        Self { addr, http: reqwest::Client::new(), shutdown, tasks }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        let r = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({"username": user, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login as {user}");
        r.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let r = self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The body of a successful GET as text (CSV exports).
    pub async fn get_text(&self, token: &str, path: &str) -> String {
        let r = self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.text().await.unwrap()
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    }
}

/// The signing secret of test servers (tests forge tokens with it).
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret!!";

/// Where the tests' webhook receivers listen: outbound calls may reach it
/// only because the test servers allow it, as an operator would with
/// `--outbound-allow 127.0.0.0/8` for an in-house receiver.
pub const RECEIVERS: &str = "127.0.0.0/8";

/// The outbound policy of test servers.
pub fn loopback_receivers() -> tokenusage_plumbing::outbound::Policy {
    tokenusage_plumbing::outbound::Policy::allowing(vec![RECEIVERS.parse().unwrap()])
}

/// API settings of test servers.
pub fn test_api_args() -> ApiArgs {
    let mut api = ApiArgs::for_tests();
    api.jwt.secret = Some(SecretString::from(TEST_JWT_SECRET));
    api.budgets.outbound.allow = vec![RECEIVERS.parse().unwrap()];
    api
}

pub fn spawn_projector(env: &TestEnv, shutdown: CancellationToken) -> JoinHandle<()> {
    spawn_projector_with(env, shutdown, std::sync::Arc::new(tokenusage_projector::Health::new("projector")))
}

/// How long the test app's projector may fail to commit before `/readyz`
/// says so (`serve` uses `tokenusage_projector::STALL_PATIENCE`).
pub const TEST_STALL_PATIENCE: Duration = Duration::from_secs(2);

pub fn spawn_projector_with(
    env: &TestEnv,
    shutdown: CancellationToken,
    health: std::sync::Arc<tokenusage_projector::Health>,
) -> JoinHandle<()> {
    let (args, kafka, pool) = (env.projector_args(), env.kafka.clone(), env.pool.clone());
    tokio::spawn(async move {
        tokenusage_projector::run(&args, &kafka, pool, shutdown, health).await.unwrap();
    })
}

/// Polls `check` until it returns Some or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the real `tokenusage` binary with the test's Kafka settings.
pub fn tokenusage(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tokenusage"));
    cmd.args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", &env.kafka.bootstrap_servers)
        .env("TOKENUSAGE_TOPIC", &env.kafka.topic)
        .env("KAFKA_OPTIONS", "broker.address.family=v4")
        .env("DATABASE_URL", secrecy::ExposeSecret::expose_secret(&env.db.url))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run tokenusage");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

/// One native-JSON event line.
pub fn event_line(id: &str, user: &str, at: &str, activity: &str, model: &str, input: i64, output: i64) -> String {
    serde_json::json!({
        "event_id": id, "user_id": user, "occurred_at": at, "activity": activity,
        "model": model, "input_tokens": input, "output_tokens": output
    })
    .to_string()
}

/// Producer settings for tests: a short delivery timeout so "broker down"
/// shows up in seconds.
pub fn test_producer() -> tokenusage_ingest::ProducerArgs {
    tokenusage_ingest::ProducerArgs { delivery_timeout_ms: 5000, ..Default::default() }
}

/// A Tansu broker of the test's own (durable SQLite storage), for tests
/// that stop and restart the broker. The binary comes from `scripts/test.sh`.
pub struct OwnBroker {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnBroker {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("tu-broker-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = Self { port, dir, child: None };
        b.restart();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and storage; waits until it listens.
    pub fn restart(&mut self) {
        let bin = std::env::var("TOKENUSAGE_TANSU_BIN").expect("TOKENUSAGE_TANSU_BIN (set by scripts/test.sh)");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = std::process::Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("broker.log")).unwrap())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tansu did not listen on {}", self.port);
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("TU_KEEP_BROKER").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Makes `n` distinct events for `users` users spread over a day, with
/// deterministic token counts (so expected totals are easy to compute).
pub fn synthetic_events(prefix: &str, n: usize, users: usize) -> Vec<tokenusage_contract::UsageEvent> {
    let base: chrono::DateTime<chrono::Utc> = "2026-11-20T00:00:00Z".parse().unwrap();
    (0..n)
        .map(|i| tokenusage_contract::UsageEvent {
            source: "synthetic".into(),
            event_id: format!("{prefix}-{i}"),
            user_id: format!("u{}", i % users.max(1)),
            occurred_at: base + chrono::TimeDelta::seconds(((i * 7919) % 86_400) as i64),
            activity: ["chat", "embedding", "agent-run"][i % 3].into(),
            model: ["m-a", "m-b"][i % 2].into(),
            input_tokens: (i % 97) as u64 + 1,
            output_tokens: (i % 13) as u64,
            kinds: Default::default(),
            billing: Default::default(),
            cost: None,
            project: None,
            metadata: None,
        })
        .collect()
}

/// Publishes events straight to Kafka and waits for every acknowledgement.
pub async fn produce(env: &TestEnv, events: &[tokenusage_contract::UsageEvent]) {
    let args = tokenusage_ingest::ProducerArgs { delivery_timeout_ms: 60_000, ..Default::default() };
    let p = tokenusage_ingest::Publisher::new(&env.kafka, &args).unwrap();
    for chunk in events.chunks(2000) {
        let rs = futures::future::join_all(chunk.iter().map(|e| p.publish_patiently(e, None, Duration::from_secs(30))))
            .await;
        for r in rs {
            r.expect("event acknowledged");
        }
    }
}

/// (input, output, events) summed over one rollup table, optionally one user.
pub async fn rollup_totals(pool: &PgPool, table: &str, user: Option<&str>) -> (i64, i64, i64) {
    let sql = format!(
        "select coalesce(sum(input_tokens),0)::int8, coalesce(sum(output_tokens),0)::int8, coalesce(sum(events),0)::int8 \
         from {table} where ($1::text is null or user_id = $1)"
    );
    sqlx::query_as(&sql).bind(user).fetch_one(pool).await.unwrap()
}

pub fn expected_totals(events: &[tokenusage_contract::UsageEvent]) -> (i64, i64, i64) {
    let mut seen = std::collections::HashSet::new();
    let mut t = (0i64, 0i64, 0i64);
    for e in events {
        if seen.insert((&e.source, &e.event_id)) {
            t.0 += e.input_tokens as i64;
            t.1 += e.output_tokens as i64;
            t.2 += 1;
        }
    }
    t
}

/// Waits until every rollup grain holds `want`, or `within` passes.
pub async fn wait_for_totals(pool: &PgPool, want: (i64, i64, i64), within: Duration) -> bool {
    eventually(within, || async {
        for t in ["usage_minute", "usage_quarter_hour", "usage_hour"] {
            if rollup_totals(pool, t, None).await != want {
                return None;
            }
        }
        Some(())
    })
    .await
    .is_some()
}
