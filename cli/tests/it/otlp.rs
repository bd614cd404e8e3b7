//! OTLP/HTTP trace ingest against the real server, broker and database:
//! the OpenTelemetry Python SDK's own exporter, retries included, and every
//! bad-input class in protobuf and JSON.

use crate::common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestApp, TestEnv, eventually};
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokenusage_ingest::otlp::proto;
use tokenusage_schema::keys;

/// What the raw events of `user` add up to: (events, input, output,
/// cache read, reasoning).
async fn raw_totals(env: &TestEnv, user: &str) -> (i64, i64, i64, i64, i64) {
    sqlx::query_as(
        "select count(*), coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint,
                coalesce(sum((detail->>'cache_read_input_tokens')::bigint), 0)::bigint,
                coalesce(sum((detail->>'reasoning_output_tokens')::bigint), 0)::bigint
           from usage_events where user_id = $1",
    )
    .bind(user)
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

/// A proxy in front of the server's `/v1/traces` that forwards the first
/// export and then answers it 503, as a load balancer that lost the
/// answer would: the exporter must retry a batch the server already has.
async fn losing_proxy(target: String) -> (String, Arc<AtomicUsize>) {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let client = reqwest::Client::new();
    let handler = move |headers: HeaderMap, body: Bytes| {
        let (client, target, counter) = (client.clone(), target.clone(), counter.clone());
        async move {
            let mut req = client.post(&target).body(body);
            for (k, v) in &headers {
                if k != "host" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap();
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                assert_eq!(status, 200, "the server took the first export");
                return (axum::http::StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], Bytes::new())
                    .into_response();
            }
            (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response()
        }
    };
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// Runs an SDK example (`program script`) against the real server through
/// [`losing_proxy`], as user `user`, and checks that every span it reports
/// sending is counted exactly once, with its kinds, model and project.
async fn sdk_export_counts_once_across_a_retry(program: &str, script: &std::path::Path, user: &str, model: &str) {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let key = keys::create(&env.pool, "otel", "support-bot", 100_000).await.unwrap().key;
    let (proxy, exports) = losing_proxy(app.url("/v1/traces")).await;
    let mut cmd = std::process::Command::new(program);
    cmd.arg(script)
        .env("TOKENUSAGE_URL", &proxy)
        .env("TOKENUSAGE_KEY", &key)
        .env("TOKENUSAGE_USER", user)
        .env("TOKENUSAGE_CALLS", "40");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let sent: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(sent["spans"], 40);
    assert!(exports.load(Ordering::SeqCst) >= 2, "the exporter retried the export the proxy answered 503");
    let want = (
        40,
        sent["input_tokens"].as_i64().unwrap(),
        sent["output_tokens"].as_i64().unwrap(),
        sent["cache_read_input_tokens"].as_i64().unwrap(),
        sent["reasoning_output_tokens"].as_i64().unwrap(),
    );
    let got = eventually(Duration::from_secs(60), || async {
        let t = raw_totals(&env, user).await;
        (t == want).then_some(t)
    })
    .await;
    assert_eq!(got, Some(want), "every span counted exactly once, with its kinds");
    // Settled: nothing more arrives from the retried export.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(raw_totals(&env, user).await, want);
    let (source, activity, stored_model, project): (String, String, String, Option<String>) =
        sqlx::query_as("select distinct source, activity, model, project from usage_events where user_id = $1")
            .bind(user)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        (source.as_str(), activity.as_str(), stored_model.as_str(), project.as_deref()),
        ("support-bot", "chat", model, Some("support"))
    );
    // The rollups agree with the raw events.
    let rolled: (i64, i64) = sqlx::query_as(
        "select sum(input_tokens)::bigint, sum(output_tokens)::bigint from usage_hour where user_id = $1",
    )
    .bind(user)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(rolled, (want.1, want.2));
    app.stop().await;
    env.cleanup().await;
}

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_exports_genai_spans_counted_once_across_a_retry() {
    let python = std::env::var("TOKENUSAGE_TEST_OTEL_PYTHON")
        .expect("TOKENUSAGE_TEST_OTEL_PYTHON: run scripts/test.sh, which installs the pinned OpenTelemetry SDK");
    sdk_export_counts_once_across_a_retry(&python, &example("otel_genai.py"), "otel-alice", "gpt-4o-mini-2024-07-18")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_exports_genai_spans_counted_once_across_a_retry() {
    let dir = std::env::var("TOKENUSAGE_TEST_OTEL_NODE_DIR")
        .expect("TOKENUSAGE_TEST_OTEL_NODE_DIR: run scripts/test.sh, which installs the pinned OpenTelemetry JS SDK");
    // ES modules resolve packages from the script's own folder: the docs
    // example runs, unchanged, as a copy beside the pinned node_modules.
    let copy = std::path::Path::new(&dir).join(format!("otel_genai-{}.mjs", uuid::Uuid::new_v4().simple()));
    std::fs::copy(example("otel_genai.mjs"), &copy).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(copy.clone());
    sdk_export_counts_once_across_a_retry("node", &copy, "otel-node", "claude-sonnet-4-5-20250929").await;
}

fn span(n: u8, user: Option<&str>, input: i64, output: i64) -> proto::Span {
    let mut attributes = vec![
        proto::KeyValue::string("gen_ai.operation.name", "chat"),
        proto::KeyValue::string("gen_ai.request.model", "claude-sonnet-4"),
        proto::KeyValue::int("gen_ai.usage.input_tokens", input),
        proto::KeyValue::int("gen_ai.usage.output_tokens", output),
    ];
    if let Some(u) = user {
        attributes.push(proto::KeyValue::string("user.id", u));
    }
    let end = chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64;
    proto::Span {
        trace_id: [7u8; 16].to_vec(),
        span_id: [1, 2, 3, 4, 5, 6, 7, n].to_vec(),
        name: "chat".into(),
        start_time_unix_nano: end - 1_000_000,
        end_time_unix_nano: end,
        attributes,
    }
}

fn export(spans: Vec<proto::Span>) -> proto::ExportTraceServiceRequest {
    proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(proto::Resource { attributes: vec![proto::KeyValue::string("service.name", "t")] }),
            scope_spans: vec![proto::ScopeSpans { scope: None, spans }],
        }],
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

struct Answer {
    status: StatusCode,
    content_type: String,
    retry_after: Option<String>,
    www_authenticate: Option<String>,
    body: Vec<u8>,
}

async fn post(app: &TestApp, key: Option<&str>, ct: &str, encoding: Option<&str>, body: Vec<u8>) -> Answer {
    let mut req = app.http.post(app.url("/v1/traces")).header("content-type", ct).body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let r = req.send().await.unwrap();
    let header = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (content_type, retry_after) = (header("content-type").unwrap_or_default(), header("retry-after"));
    let www_authenticate = header("www-authenticate");
    Answer { status: r.status(), content_type, retry_after, www_authenticate, body: r.bytes().await.unwrap().to_vec() }
}

/// The `Status` of a protobuf error answer: (gRPC code, message).
fn status(a: &Answer) -> (i32, String) {
    assert_eq!(a.content_type, "application/x-protobuf");
    let s = proto::Status::decode(a.body.as_slice()).unwrap();
    (s.code, s.message)
}

const PB: &str = "application/x-protobuf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_export_gets_an_otlp_answer_and_good_spans_beside_bad_ones_count() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let key = keys::create(&env.pool, "otel", "otel-svc", 100_000).await.unwrap().key;
    let k = Some(key.as_str());
    let good = export(vec![span(1, Some("otel-bob"), 10, 5)]).encode_to_vec();

    // Authentication first, answered as a Status in the request's encoding.
    let a = post(&app, None, PB, None, good.clone()).await;
    assert_eq!((a.status, status(&a).0), (StatusCode::UNAUTHORIZED, 16));
    assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"), "every auth failure says how to authenticate");
    let a = post(&app, Some("tu_00000000_nope"), "application/json", None, b"{}".to_vec()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"));
    let s: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(s, json!({"code": 16, "message": "unauthorized: unknown or revoked API key"}));

    // Encodings and types that are not OTLP's.
    let a = post(&app, k, "text/plain", None, good.clone()).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let a = post(&app, k, PB, Some("br"), good.clone()).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(status(&a).1.contains("content encoding `br` is not supported"));
    let a = post(&app, k, PB, None, vec![0xff; 64]).await;
    assert_eq!((a.status, status(&a).0), (StatusCode::BAD_REQUEST, 3));
    assert!(status(&a).1.starts_with("invalid_otlp: the body is not an OTLP ExportTraceServiceRequest"));
    let a = post(&app, k, PB, Some("gzip"), b"not gzip at all".to_vec()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(status(&a).1.starts_with("invalid_gzip"));
    // A gzip bomb: 64 KiB on the wire, 64 MiB inflated; refused at the limit.
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024);
    let a = post(&app, k, PB, Some("gzip"), bomb).await;
    assert_eq!((a.status, status(&a).0), (StatusCode::PAYLOAD_TOO_LARGE, 8));
    // Invalid UTF-8 in a protobuf string field: refused by the decoder.
    let mut bad_utf8 = export(vec![span(1, Some("zzzz"), 10, 5)]).encode_to_vec();
    let at = bad_utf8.windows(4).position(|w| w == b"zzzz").unwrap();
    bad_utf8[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xfd, 0xfc]);
    let a = post(&app, k, PB, None, bad_utf8).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // OTLP/JSON that is not shaped like an export.
    for (body, says) in [
        ("[1]", "the body: must be an object"),
        ("{\"resourceSpans\": 5}", "resourceSpans: must be an array"),
        ("{\"resourceSpans\": [{\"scopeSpans\": [{\"spans\": [{\"spanId\": 7}]}]}]}", "spanId: must be a string"),
        ("{\"resourceSpans\": [", "not valid JSON"),
    ] {
        let a = post(&app, k, "application/json", None, body.as_bytes().to_vec()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        let s: Value = serde_json::from_slice(&a.body).unwrap();
        assert!(s["message"].as_str().unwrap().contains(says), "{body}: {s}");
    }
    // More spans with usage than a batch may hold.
    let many: Vec<proto::Span> = (0..1001u32)
        .map(|i| {
            let mut s = span(0, Some("otel-many"), 1, 1);
            s.span_id = [&[9u8, 9, 9, 9][..], &i.to_be_bytes()].concat();
            s
        })
        .collect();
    let a = post(&app, k, PB, None, export(many).encode_to_vec()).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(status(&a).1.contains("the export holds 1001 spans with usage; the limit is 1000"));

    // A mixed export: the good span counts, the bad ones are named in the
    // partial success, the span without usage is ignored.
    let mut no_usage = span(9, Some("otel-bob"), 0, 0);
    no_usage.attributes.retain(|kv| !kv.key.starts_with("gen_ai.usage"));
    let mixed = export(vec![
        span(2, Some("otel-bob"), 100, 50),
        span(3, Some("otel-bob"), -1, 5),
        span(4, None, 3, 3),
        no_usage,
    ]);
    let a = post(&app, k, PB, Some("gzip"), gzip(&mixed.encode_to_vec())).await;
    assert_eq!(a.status, StatusCode::OK);
    let r = proto::ExportTraceServiceResponse::decode(a.body.as_slice()).unwrap();
    let p = r.partial_success.expect("rejected spans are reported");
    assert_eq!(p.rejected_spans, 2);
    assert!(p.error_message.contains("gen_ai.usage.input_tokens: must not be negative, got -1"), "{}", p.error_message);
    assert!(
        p.error_message.contains("user: no string or integer attribute user.id or enduser.id"),
        "{}",
        p.error_message
    );
    assert!(p.error_message.contains(&format!("span {}/0102030405060703", "07".repeat(16))), "{}", p.error_message);

    // The same spans again, as JSON: nothing is counted twice, and a
    // fully accepted export answers `{}`.
    let json_export = |n: u8, input: i64| {
        let s = span(n, Some("otel-bob"), input, 50);
        json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": hex::encode(&s.trace_id), "spanId": hex::encode(&s.span_id),
            "endTimeUnixNano": s.end_time_unix_nano.to_string(),
            "attributes": [
                {"key": "gen_ai.request.model", "value": {"stringValue": "claude-sonnet-4"}},
                {"key": "user.id", "value": {"stringValue": "otel-bob"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": input.to_string()}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 50}}]}]}]}]})
        .to_string()
        .into_bytes()
    };
    let a = post(&app, k, "application/json", None, json_export(2, 100)).await;
    assert_eq!(
        (a.status, a.body.as_slice(), a.content_type.as_str()),
        (StatusCode::OK, &b"{}"[..], "application/json")
    );
    let a = post(&app, k, "application/json", Some("gzip"), gzip(&json_export(5, 7))).await;
    assert_eq!(a.status, StatusCode::OK);
    let a = post(&app, k, PB, None, good.clone()).await;
    assert_eq!((a.status, a.body.len()), (StatusCode::OK, 0), "an empty response message for a full success");
    let a = post(&app, k, PB, None, good).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.retry_after.is_none());

    // Spans 1 (twice), 2 (twice) and 5 count once each.
    let want = (3, 10 + 100 + 7, 5 + 50 + 50, 0, 0);
    let got = eventually(Duration::from_secs(60), || async {
        let t = raw_totals(&env, "otel-bob").await;
        (t == want).then_some(t)
    })
    .await;
    assert_eq!(got, Some(want));
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tokenusage_otlp_spans_total{outcome=\"ignored\"}"), "ignored spans are counted");
    app.stop().await;
    env.cleanup().await;
}
