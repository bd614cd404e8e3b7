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
}

impl Demo {
    fn start(env: &TestEnv) -> Self {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenusage"))
            .args(["serve", "--demo", "--demo-days", "1", "--demo-rate", "0.02", "--listen", "127.0.0.1:0"])
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env_remove("TOKENUSAGE_KAFKA_FETCH_WAIT_MS")
            .env("DATABASE_URL", secrecy::ExposeSecret::expose_secret(&env.db.url))
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run tokenusage serve --demo");
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
        Self { child, base }
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
