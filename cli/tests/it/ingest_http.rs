//! HTTP ingest against the real broker and database: every bad-input class
//! with its exact error, keys, rate limits, and a broker outage.

use crate::common;

use std::time::Duration;

use common::{OwnBroker, TestApp, TestEnv, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokenusage_api::Role;
use tokenusage_schema::keys;

fn ev(id: &str) -> Value {
    json!({"event_id": id, "user_id": "alice", "occurred_at": "2026-11-20T10:00:00Z",
           "activity": "chat", "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5})
}

async fn post(
    app: &TestApp,
    key: Option<&str>,
    ct: &str,
    body: String,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app.http.post(app.url("/api/v1/events")).header("content-type", ct).body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_class_gets_its_specific_error() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let key = keys::create(&env.pool, "test", "svc-a", 100_000).await.unwrap().key;
    let k = Some(key.as_str());
    let j = "application/json";

    // One good event: 202 after Kafka acknowledged it.
    let (s, _, b) = post(&app, k, j, ev("a1").to_string()).await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::ACCEPTED, Some("accepted")), "{b}");

    // No key, unknown key, revoked key.
    assert_eq!(post(&app, None, j, ev("x").to_string()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(post(&app, Some("tu_00000000_nope"), j, ev("x").to_string()).await.0, StatusCode::UNAUTHORIZED);
    let revoked = keys::create(&env.pool, "old", "svc-old", 10).await.unwrap();
    assert!(keys::revoke(&env.pool, &revoked.info.key_prefix).await.unwrap());
    let (s, _, b) = post(&app, Some(&revoked.key), j, ev("x").to_string()).await;
    assert_eq!((s, b["error"]["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("unknown or revoked API key")));

    // Not JSON, wrong content type, empty batch.
    let (s, _, b) = post(&app, k, j, "{oops".into()).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_json")));
    let (s, _, b) = post(&app, k, "text/csv", "a,b".into()).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type")));
    let (s, _, b) = post(&app, k, j, "[]".into()).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("empty_batch")));

    // Batch length and body size limits.
    let many: Vec<Value> = (0..1001).map(|i| ev(&format!("m{i}"))).collect();
    let (s, _, b) = post(&app, k, j, Value::Array(many).to_string()).await;
    assert_eq!(
        (s, b["error"]["message"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("the batch holds 1001 events; the limit is 1000"))
    );
    let (s, _, b) = post(&app, k, j, format!("[\"{}\"]", "x".repeat(5 * 1024 * 1024))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")));

    // Field-level problems, each named in the per-item result of a batch.
    let mut neg = ev("f1");
    neg["input_tokens"] = json!(-1);
    let mut huge = ev("f2");
    huge["output_tokens"] = json!(2_000_000_000u64);
    let mut future = ev("f3");
    future["occurred_at"] = json!("2099-01-01T00:00:00Z");
    let mut long_model = ev("f4");
    long_model["model"] = json!("m".repeat(200));
    let mut meta = ev("f5");
    meta["metadata"] = json!({"blob": "x".repeat(300)});
    let mut old = ev("ok-late");
    old["occurred_at"] = json!("2021-03-04T05:06:07Z");
    let batch = json!([neg, huge, future, long_model, meta, old]);
    let (s, _, b) = post(&app, k, j, batch.to_string()).await;
    assert_eq!(s, StatusCode::MULTI_STATUS, "{b}");
    let r = b["results"].as_array().unwrap();
    let first = |i: usize| {
        (
            r[i]["status"].as_str().unwrap().to_owned(),
            r[i]["errors"][0]["field"].as_str().unwrap_or("").to_owned(),
            r[i]["errors"][0]["reason"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(first(0), ("rejected".into(), "input_tokens".into(), "must not be negative, got -1".into()));
    assert_eq!(
        first(1),
        ("rejected".into(), "output_tokens".into(), "must be at most 1000000000, got 2000000000".into())
    );
    assert_eq!(first(2).1, "occurred_at");
    assert!(first(2).2.contains("in the future"));
    assert_eq!(first(3), ("rejected".into(), "model".into(), "must be at most 128 characters, got 200".into()));
    assert_eq!(first(4), ("rejected".into(), "metadata.blob".into(), "must be at most 256 characters".into()));
    assert_eq!(r[5]["status"], "accepted", "old events are accepted as late");
    assert_eq!((b["accepted"].as_u64(), b["rejected"].as_u64()), (Some(1), Some(5)));

    // Nothing valid at all: 400 with the per-item reasons.
    let (s, _, b) = post(&app, k, j, json!([{"event_id": "only"}]).to_string()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["results"][0]["errors"][0]["field"], "user_id");

    // CloudEvents, structured and batch.
    let ce = tokenusage_contract::to_cloudevent(
        &tokenusage_contract::parse_native(ev("ce1").to_string().as_bytes(), "ignored", chrono::Utc::now()).unwrap(),
    );
    let (s, _, b) = post(&app, k, "application/cloudevents+json", ce.to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let (s, _, b) = post(&app, k, "application/cloudevents-batch+json", json!([ce]).to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let (s, _, b) = post(&app, k, "application/cloudevents-batch+json", ce.to_string()).await;
    assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_batch")));

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_decides_the_source_and_the_rate() {
    let env = TestEnv::new().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn(&env).await;
    let a = keys::create(&env.pool, "a", "svc-a", 5).await.unwrap().key;
    let b = keys::create(&env.pool, "b", "svc-b", 100).await.unwrap().key;

    // The same event id from two publishers is two events; a forged source
    // in the body is overridden by the key's.
    let mut forged = ev("same-id");
    forged["source"] = json!("svc-b");
    assert_eq!(post(&app, Some(&a), "application/json", forged.to_string()).await.0, StatusCode::ACCEPTED);
    assert_eq!(post(&app, Some(&b), "application/json", ev("same-id").to_string()).await.0, StatusCode::ACCEPTED);
    let sources = eventually(Duration::from_secs(60), || async {
        let rows: Vec<(String,)> =
            sqlx::query_as("select source from event_keys where event_id = 'same-id' order by source")
                .fetch_all(&env.pool)
                .await
                .unwrap();
        (rows.len() == 2).then_some(rows)
    })
    .await;
    assert_eq!(sources, Some(vec![("svc-a".into(),), ("svc-b".into(),)]));

    // Key a allows 5 events a second: the burst is spent, then 429.
    let four: Vec<Value> = (0..4).map(|i| ev(&format!("r{i}"))).collect();
    assert_eq!(post(&app, Some(&a), "application/json", Value::Array(four).to_string()).await.0, StatusCode::ACCEPTED);
    let (s, h, body) = post(&app, Some(&a), "application/json", json!([ev("r4"), ev("r5")]).to_string()).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    assert!(h.get("retry-after").is_some());
    let ten: Vec<Value> = (0..10).map(|i| ev(&format!("t{i}"))).collect();
    let (s, _, body) = post(&app, Some(&a), "application/json", Value::Array(ten).to_string()).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("batch_exceeds_rate")));

    app.stop().await;
    env.cleanup().await;
}

/// One OTLP export (protobuf) of one GenAI span of alice's.
fn otlp_export_of_alice() -> Vec<u8> {
    use tokenusage_ingest::otlp::proto::{self, KeyValue};
    let end = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z").unwrap().timestamp_nanos_opt().unwrap();
    let span = proto::Span {
        trace_id: [3; 16].to_vec(),
        span_id: [4; 8].to_vec(),
        name: "chat".into(),
        start_time_unix_nano: end as u64 - 1000,
        end_time_unix_nano: end as u64,
        attributes: vec![
            KeyValue::string("user.id", "alice"),
            KeyValue::string("gen_ai.request.model", "gpt-4o-mini"),
            KeyValue::int("gen_ai.usage.input_tokens", 10),
            KeyValue::int("gen_ai.usage.output_tokens", 5),
        ],
    };
    let export = proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: None,
            scope_spans: vec![proto::ScopeSpans { scope: None, spans: vec![span] }],
        }],
    };
    prost::Message::encode_to_vec(&export)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_gets_503_never_a_false_202_and_recovers() {
    let mut broker = OwnBroker::start();
    let env = TestEnv::with_brokers(broker.brokers()).await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    // Tansu 0.6.0's SQLite engine panics, and then stops serving, when a
    // consumer-group member or an idempotent producer carries on across a
    // broker restart (docs/DECISIONS.md). So this test runs the producer
    // non-idempotent (the projector's de-duplication keeps totals exact) and
    // starts the projector only after the outage.
    let app = TestApp::spawn_without_projector_non_idempotent(&env).await;
    let key = keys::create(&env.pool, "k", "svc", 100_000).await.unwrap().key;
    let mut acknowledged = Vec::new();

    let (s, _, _) = post(&app, Some(&key), "application/json", ev("before").to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    acknowledged.push("before".to_owned());

    broker.kill();
    let (s, h, b) = post(&app, Some(&key), "application/json", ev("during").to_string()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(h.get("retry-after").is_some());
    assert_eq!(b["status"], "failed");
    // OTLP the same: 503 with Retry-After (the exporter retries), never a 200.
    let otlp = || async {
        let r = app
            .http
            .post(app.url("/v1/traces"))
            .bearer_auth(&key)
            .header("content-type", "application/x-protobuf")
            .body(otlp_export_of_alice())
            .send()
            .await
            .unwrap();
        (r.status(), r.headers().get("retry-after").is_some(), r.bytes().await.unwrap())
    };
    let (s, retry_after, body) = otlp().await;
    assert_eq!((s, retry_after), (StatusCode::SERVICE_UNAVAILABLE, true));
    assert_eq!(<tokenusage_ingest::otlp::proto::Status as prost::Message>::decode(body).unwrap().code, 14);

    broker.restart();
    // Retrying the same id after the outage: accepted once the broker is back.
    let mut ok = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if post(&app, Some(&key), "application/json", ev("during").to_string()).await.0 == StatusCode::ACCEPTED {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ok, "ingest never recovered after the broker came back");
    acknowledged.push("during".to_owned());
    // The exporter's retry of the export: taken whole once Kafka has it.
    let mut answer = otlp().await;
    for _ in 0..30 {
        if answer.0 != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        answer = otlp().await;
    }
    assert_eq!((answer.0, answer.2.len()), (StatusCode::OK, 0), "the retried export is taken whole");
    acknowledged.push("otlp".to_owned());
    assert_eq!(post(&app, Some(&key), "application/json", ev("after").to_string()).await.0, StatusCode::ACCEPTED);
    acknowledged.push("after".to_owned());

    // Every acknowledged event reaches the rollups, exactly once.
    let projector = common::spawn_projector(&env, app.shutdown_token());
    let counted = eventually(Duration::from_secs(90), || async {
        let n: i64 =
            sqlx::query_scalar("select coalesce(sum(events), 0)::int8 from usage_minute where user_id = 'alice'")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        (n == acknowledged.len() as i64).then_some(n)
    })
    .await;
    assert_eq!(counted, Some(4), "before, during, the OTLP span and after: each once");
    app.stop().await;
    let _ = projector.await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_over_http_reports_server_rejections_and_the_docs_examples_work() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let key = keys::create(&env.pool, "cli", "cli-http", 100_000).await.unwrap().key;
    let base = app.url("");

    // A file over HTTP: good lines accepted, a locally invalid line reported
    // with its number, exit 2.
    let good = common::event_line("h1", "carol", "2026-11-20T10:00:00Z", "chat", "m", 3, 4);
    let bad = common::event_line("h2", "carol", "2026-11-20T10:00:00Z", "Chat", "m", 3, 4);
    let out =
        common::tokenusage(&env, &["publish", "-", "--http", &base, "--key", &key], Some(&format!("{good}\n{bad}\n")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 2: activity: may only contain lowercase letters"), "{stderr}");
    assert!(stderr.contains("1 accepted, 1 rejected"), "{stderr}");
    let out = common::tokenusage(&env, &["publish", "-", "--http", &base, "--key", "tu_bad_key"], Some(&good));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"), "{}", String::from_utf8_lossy(&out.stderr));

    // docs/examples/publish_http.py and .mjs, as a publisher would run them.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
    for (prog, file) in [("python3", "publish_http.py"), ("node", "publish_http.mjs")] {
        let out = std::process::Command::new(prog)
            .arg(examples.join(file))
            .env("TOKENUSAGE_URL", &base)
            .env("TOKENUSAGE_KEY", &key)
            .env("TOKENUSAGE_USER", "dave")
            .output()
            .unwrap_or_else(|e| panic!("{prog} is needed for the docs examples: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.starts_with("202 "), "{file}: {stdout}");
    }
    let counted = eventually(Duration::from_secs(60), || async {
        let n: i64 =
            sqlx::query_scalar("select count(*) from usage_events where user_id = 'dave' and source = 'cli-http'")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        (n == 4).then_some(n)
    })
    .await;
    assert_eq!(counted, Some(4), "the four example events reach the rollups under the key's source");
    app.stop().await;
    env.cleanup().await;
}

/// A revoked key stops working at once, not when its cache entry expires
/// (30 s by default): the revocation is notified to every process's cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_working_within_a_second() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let created = keys::create(&env.pool, "soon-gone", "svc-gone", 100_000).await.unwrap();
    let j = "application/json";
    let (s, _, b) = post(&app, Some(&created.key), j, ev("r1").to_string()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let r = app.http.get(app.url("/api/v1/budgets/check?user=u")).bearer_auth(&created.key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the gateway check takes the key (and caches it)");
    // Cached now; the listener is connected well before this (it starts
    // with the server).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(keys::revoke(&env.pool, &created.info.key_prefix).await.unwrap());
    let refused = eventually(Duration::from_secs(1), || async {
        let (s, _, _) = post(&app, Some(&created.key), j, ev("r2").to_string()).await;
        (s == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the revoked key still worked a second later");
    // The gateway check (the API's own key cache) too.
    let check = || async {
        app.http.get(app.url("/api/v1/budgets/check?user=u")).bearer_auth(&created.key).send().await.unwrap().status()
    };
    let refused =
        eventually(Duration::from_secs(1), || async { (check().await == StatusCode::UNAUTHORIZED).then_some(()) })
            .await;
    assert!(refused.is_some(), "the gateway check still took the revoked key a second later");
    app.stop().await;
    env.cleanup().await;
}
