//! The quick start: `serve --demo` with no Kafka configured runs the
//! embedded broker, and counts what is published to it, on the first run
//! and on every run after it (each starts with a new, empty log while the
//! database remembers the last one's positions).

use std::io::{BufRead, BufReader};
use std::time::Duration;

use crate::common::*;

/// A running `serve --demo` without brokers, and its base URL.
struct Demo {
    child: std::process::Child,
    base: String,
    /// Its log lines (JSON), as they come.
    log: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Demo {
    fn start(env: &TestEnv) -> Self {
        Self::start_with(env, &["--demo-days", "1", "--demo-rate", "0.02"])
    }

    fn start_with(env: &TestEnv, demo: &[&str]) -> Self {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenusage"))
            .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
            .args(demo)
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env_remove("TOKENUSAGE_KAFKA_FETCH_WAIT_MS")
            .env("DATABASE_URL", secrecy::ExposeSecret::expose_secret(&env.db.url))
            .env("RUST_LOG", "warn,tokenusage::commands::serve=info")
            .env("TOKENUSAGE_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run tokenusage serve --demo");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sink, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut embedded = false;
        let base = loop {
            let line = lines.next().expect("serve printed its URL").unwrap();
            embedded |= line.contains("embedded, in-memory Kafka-protocol broker");
            if let Some(rest) = line.split("running at ").nth(1) {
                break rest.trim().trim_end_matches('/').to_owned();
            }
        };
        // The broker line follows the URL.
        for line in lines.by_ref().take(3) {
            embedded |= line.unwrap().contains("embedded, in-memory Kafka-protocol broker");
        }
        assert!(embedded, "serve says the broker is embedded and not durable");
        Self { child, base, log }
    }

    /// The first log line whose message is `message`, waiting up to `within`.
    async fn logged(&self, message: &str, within: Duration) -> Option<serde_json::Value> {
        eventually(within, || async { self.log.lock().unwrap().iter().find(|l| l["message"] == message).cloned() })
            .await
    }

    fn stop(self) {}
}

/// Stopped on every path, a failed assertion's too.
impl Drop for Demo {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

async fn publish_and_see_it_counted(env: &TestEnv, demo: &Demo, key: &str, id: &str) {
    let at = chrono::Utc::now().to_rfc3339();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/events", demo.base))
        .bearer_auth(key)
        .json(&serde_json::json!({"event_id": id, "user_id": "newcomer", "occurred_at": at,
            "activity": "chat", "model": "m", "input_tokens": 3, "output_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    let counted = eventually(Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from usage_events where event_id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    assert!(counted.is_some(), "event {id} published to the embedded broker is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_counts_on_the_first_run_and_on_every_run_after() {
    let env = TestEnv::database_only().await;
    let out = tokenusage(&env, &["keys", "create", "newcomer"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let first = Demo::start(&env);
    publish_and_see_it_counted(&env, &first, &key, "run-1").await;
    first.stop();
    let stored: i64 = sqlx::query_scalar("select coalesce(max(next_offset), -1) from projector_offsets")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(stored > 0, "the first run stored positions in its log");

    let second = Demo::start(&env);
    publish_and_see_it_counted(&env, &second, &key, "run-2").await;
    second.stop();
    env.cleanup().await;
}

/// One native event line of about `pad + 250` bytes.
fn padded_line(source: &str, id: usize, at: &str, pad: usize) -> String {
    serde_json::json!({"source": source, "event_id": format!("{source}-{id}"), "user_id": format!("u{}", id % 97),
        "occurred_at": at, "activity": "chat", "model": "m", "input_tokens": 3 + id % 11, "output_tokens": 4,
        "metadata": (0..pad.div_ceil(200)).map(|k| (format!("p{k}"), serde_json::Value::from("x".repeat(200.min(pad - k * 200))))).collect::<serde_json::Map<_, _>>()})
    .to_string()
}

/// A broker that trimmed records before the projector read them (the mock
/// cluster past 5 MiB a partition, as Kafka retention would): the loss is
/// recorded in the commit that passes over it, and said by /readyz, the
/// live freshness, `verify` (non-zero) and `tokenusage lost`, until an
/// operator acknowledges it. Fails on the code before the gap guard owed
/// every record from offset 0: the projector took the first offset it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_broker_trimmed_before_they_were_counted_are_a_recorded_loss() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut env = TestEnv::database_only().await;
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic(&env.kafka.topic, 1, 1).unwrap();
    env.kafka.bootstrap_servers = cluster.bootstrap_servers();
    env.kafka.topic_exists = true;

    // ~12 MiB into one partition, nobody reading: the mock keeps ~5 MiB.
    let producer: FutureProducer = env.kafka.client_config().create().unwrap();
    let at = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
    let sends: Vec<_> = (0..12_000)
        .map(|i| {
            let line = padded_line("trimmed", i, &at, 800);
            let topic = env.kafka.topic.clone();
            let p = producer.clone();
            async move {
                p.send(FutureRecord::to(&topic).key("k").payload(&line), Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)
            }
        })
        .collect();
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    let (low, high) = producer_watermarks(&env, 0);
    assert!(low > 0 && high == 12_000, "the mock trimmed its log: [{low}, {high})");

    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let projector = spawn_projector(&env, stop.clone());
    let done = eventually(Duration::from_secs(120), || async {
        let next: Option<i64> = sqlx::query_scalar("select next_offset from projector_offsets where partition = 0")
            .fetch_optional(&env.pool)
            .await
            .unwrap();
        (next == Some(high)).then_some(())
    })
    .await;
    assert!(done.is_some(), "the projector read to the end");
    let counted: i64 = sqlx::query_scalar("select count(*) from usage_events").fetch_one(&env.pool).await.unwrap();
    assert_eq!(counted, high - low, "everything the broker still held is counted");
    let lost: Vec<(i32, i64, i64)> = sqlx::query_as("select partition, from_offset, to_offset from lost_records")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(lost, vec![(0, 0, low)], "the trimmed records are on record as lost, exactly");
    let fresh = tokenusage_schema::freshness::read(&env.pool).await.unwrap();
    assert_eq!(fresh.lost_records, low, "live views say so");
    let ready: serde_json::Value = app.http.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["lost_records"], low, "/readyz says so: {ready}");

    let verify = tokenusage(&env, &["verify"], None);
    let said = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "verify fails while a loss is open: {said}");
    assert!(said.contains(&format!("LOST: {low} records")), "{said}");
    assert_eq!(tokenusage(&env, &["lost", "--acknowledge"], None).status.code(), Some(0));
    let verify = tokenusage(&env, &["verify"], None);
    assert_eq!(verify.status.code(), Some(0), "{}", String::from_utf8_lossy(&verify.stdout));
    assert_eq!(tokenusage_schema::freshness::read(&env.pool).await.unwrap().lost_records, 0);

    stop.cancel();
    let _ = projector.await;
    app.stop().await;
    drop(cluster);
    env.cleanup().await;
}

fn producer_watermarks(env: &TestEnv, partition: i32) -> (i64, i64) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = env.kafka.client_config().create().unwrap();
    c.fetch_watermarks(&env.kafka.topic, partition, Duration::from_secs(10)).unwrap()
}

/// The quick start as a new user runs it, then half a million events
/// (about 165 MB of JSON) published into it over HTTP as fast as the
/// server takes them: every one counted, exactly once, and the demo's 28
/// days all there. Fails on the code before the embedded broker was paced:
/// its log keeps ~5 MiB a partition, and most of the demo history alone
/// (77 % in the run) was trimmed before it was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_counts_every_event_published_into_it() {
    const N: usize = 500_000;
    let env = TestEnv::database_only().await;
    let out = tokenusage(&env, &["keys", "create", "bulk", "--rate-per-sec", "1000000"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let dir = std::env::temp_dir().join(format!("tu-bulk-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.ndjson");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let at = (chrono::Utc::now() - chrono::TimeDelta::hours(2)).to_rfc3339();
        for i in 0..N {
            writeln!(w, "{}", padded_line("bulk", i, &at, 120)).unwrap();
        }
    }
    let bytes = std::fs::metadata(&file).unwrap().len();
    assert!(bytes >= 150_000_000, "the input is {bytes} bytes");

    // The quick start's own settings: 28 days of history at the default rate.
    let demo = Demo::start_with(&env, &[]);
    let publish = std::process::Command::new(env!("CARGO_BIN_EXE_tokenusage"))
        .args(["publish", "--http", &demo.base, "--http-batch", "1000"])
        .arg(&file)
        .env("TOKENUSAGE_KEY", &key)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tokenusage publish");
    let said = String::from_utf8_lossy(&publish.stderr);
    assert!(publish.status.success(), "{}", said.lines().rev().take(5).collect::<Vec<_>>().join("\n"));

    let counted = eventually(Duration::from_secs(600), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from event_keys where source = 'bulk'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        (n == N as i64).then_some(())
    })
    .await;
    let n: i64 = sqlx::query_scalar("select count(*) from usage_events where source = 'bulk'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(counted.is_some(), "{n} of {N} events counted");
    assert_eq!(n, N as i64, "every event counted once");
    let lost: i64 = tokenusage_schema::lost::open_total(&env.pool).await.unwrap();
    assert_eq!(lost, 0, "nothing was lost by the embedded broker");

    // The demo's history, exactly: the events it says it published (all
    // before the line saying so; the live stream starts after it), on every
    // day from 28 days back to today.
    let line =
        demo.logged("published the demo history", Duration::from_secs(300)).await.expect("the history was published");
    let published = line["events"].as_i64().unwrap();
    let at: chrono::DateTime<chrono::Utc> = line["timestamp"].as_str().unwrap().parse().unwrap();
    let history = eventually(Duration::from_secs(120), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from usage_events where source = $2 and occurred_at < $1")
            .bind(at)
            .bind(tokenusage::demo::SOURCE)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        (n == published).then_some(n)
    })
    .await;
    assert!(published > 150_000 && history == Some(published), "the demo published {published}, {history:?} counted");
    let days: Vec<(chrono::NaiveDate,)> = sqlx::query_as(
        "select distinct (occurred_at at time zone 'UTC')::date from usage_events where source = $2 and occurred_at < $1 order by 1",
    )
    .bind(at)
    .bind(tokenusage::demo::SOURCE)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let first = (at - chrono::TimeDelta::days(28)).date_naive();
    let span = (at.date_naive() - first).num_days() + 1;
    assert_eq!(days.first().map(|d| d.0), Some(first), "the history starts 28 days back");
    assert_eq!(days.len() as i64, span, "every day of the demo history is there: {days:?}");
    let dead: i64 = sqlx::query_scalar("select count(*) from dead_letters").fetch_one(&env.pool).await.unwrap();
    assert_eq!(dead, 0);
    demo.stop();
    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}
