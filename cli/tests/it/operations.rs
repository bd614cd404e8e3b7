//! The operator's kit: usage counters in `/metrics` are exact (duplicates
//! and invalid events never count), and every metric and label the Grafana
//! dashboard queries is exported.
//!
//! The server runs as the real binary, a process of its own: counters are
//! per process, and this test's process shares its recorder with every
//! other test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::time::Duration;

use crate::common::*;

/// One Prometheus text exposition: (metric name, sorted labels) → value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

fn parse_exposition(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut labels: Vec<(String, String)> = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("label=value");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        labels.sort();
        out.insert((name.to_owned(), labels), value.parse().expect("a number"));
    }
    out
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    want.sort();
    samples.get(&(name.to_owned(), want)).copied()
}

/// The metric names an expression reads (`tokenusage_…`), and the labels it
/// groups or matches by.
fn names_and_labels(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let word = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let names = expr.match_indices("tokenusage_").map(|(i, _)| word(&expr[i..])).collect();
    let mut labels = BTreeSet::new();
    for (i, _) in expr.match_indices("by (") {
        let inner = &expr[i + 4..];
        let inner = &inner[..inner.find(')').expect("by (…)")];
        labels.extend(inner.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
    }
    for (i, _) in expr.match_indices('{') {
        let inner = &expr[i + 1..];
        let inner = &inner[..inner.find('}').expect("{…}")];
        labels.extend(inner.split(',').filter_map(|m| m.split_once('=')).map(|(k, _)| k.trim().to_owned()));
    }
    (names, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_metrics_are_exact_and_the_dashboard_queries_only_exported_metrics() {
    let env = TestEnv::new().await;
    let out = tokenusage(&env, &["keys", "create", "ops"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenusage"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KAFKA_BOOTSTRAP_SERVERS", &env.kafka.bootstrap_servers)
        .env("TOKENUSAGE_TOPIC", &env.kafka.topic)
        .env("KAFKA_OPTIONS", "broker.address.family=v4")
        .env("TOKENUSAGE_KAFKA_FETCH_WAIT_MS", "20")
        .env("DATABASE_URL", secrecy::ExposeSecret::expose_secret(&env.db.url))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run tokenusage serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("serve printed its URL").unwrap();
        if let Some(rest) = line.split("running at ").nth(1) {
            break rest.trim().trim_end_matches('/').to_owned();
        }
    };

    // Straight onto Kafka: two events of ops-a and one duplicate of the
    // first, one event of ops-b.
    let at = chrono::Utc::now().to_rfc3339();
    let lines_in = [
        event_line("o-1", "olga", &at, "chat", "ops-a", 100, 10),
        event_line("o-2", "olga", &at, "chat", "ops-a", 200, 20),
        event_line("o-1", "olga", &at, "chat", "ops-a", 100, 10),
        event_line("o-3", "olga", &at, "chat", "ops-b", 5, 1),
    ]
    .join("\n");
    let out = tokenusage(&env, &["publish", "-", "--source", "ops"], Some(&lines_in));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Over HTTP: one valid event, one invalid.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(&key)
        .json(&serde_json::json!([
            {"event_id": "o-4", "user_id": "olga", "occurred_at": at, "activity": "chat", "model": "ops-b",
             "input_tokens": 7, "output_tokens": 3},
            {"event_id": "o-5", "user_id": "olga", "occurred_at": at, "activity": "chat", "model": "ops-b",
             "input_tokens": -1, "output_tokens": 3}
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);

    let scrape = || async {
        let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        parse_exposition(&text)
    };
    let samples = eventually(Duration::from_secs(30), || async {
        let s = scrape().await;
        (value(&s, "tokenusage_usage_events_total", &[("model", "ops-b")]) == Some(2.0)
            && value(&s, "tokenusage_usage_events_total", &[("model", "ops-a")]) == Some(2.0))
        .then_some(s)
    })
    .await
    .expect("the four new events are counted");
    let tokens = |model, kind| value(&samples, "tokenusage_usage_tokens_total", &[("model", model), ("kind", kind)]);
    assert_eq!(
        (tokens("ops-a", "input"), tokens("ops-a", "output")),
        (Some(300.0), Some(30.0)),
        "the duplicate is not counted"
    );
    assert_eq!((tokens("ops-b", "input"), tokens("ops-b", "output")), (Some(12.0), Some(4.0)));
    let ingest = |outcome| value(&samples, "tokenusage_ingest_events_total", &[("outcome", outcome)]);
    assert_eq!((ingest("accepted"), ingest("rejected"), ingest("failed")), (Some(1.0), Some(1.0), Some(0.0)));
    assert!(!samples.keys().any(|(_, labels)| labels.iter().any(|(_, v)| v == "olga")), "no user id as a label");

    // Every metric the dashboard reads is exported, with the labels it
    // groups or filters by (gauges fed by broker statistics may take a
    // few seconds to appear).
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../docs/operations/grafana/dashboards/tokenusage.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no queries", p["title"]));
            assert!(!targets.is_empty(), "panel {} has no queries", p["title"]);
            targets.iter().map(|t| t["expr"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        })
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    let missing = |s: &Samples| -> Vec<String> {
        let mut missing = Vec::new();
        for expr in &exprs {
            let (names, labels) = names_and_labels(expr);
            assert!(!names.is_empty(), "a query that reads no tokenusage metric: {expr}");
            for name in &names {
                let exported: Vec<&Vec<(String, String)>> =
                    s.keys().filter(|(n, _)| n == name).map(|(_, l)| l).collect();
                if exported.is_empty() {
                    missing.push(format!("{name} (in {expr})"));
                    continue;
                }
                for label in labels.iter().filter(|l| *l != "le") {
                    if !exported.iter().any(|ls| ls.iter().any(|(k, _)| k == label)) {
                        missing.push(format!("label {label} of {name} (in {expr})"));
                    }
                }
            }
        }
        missing
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = missing(&samples);
    while !last.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = missing(&scrape().await);
    }
    assert!(last.is_empty(), "the dashboard queries what /metrics does not export: {last:#?}");

    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    env.cleanup().await;
}
