//! Hostile input and faults, against the real server, database and broker:
//! one test per finding of the hostile-input review (issue #14), each
//! written against the main of that day and failing there, plus the suites
//! that keep their classes closed (property tests over arbitrary Unicode,
//! poison records, a stalled projector, sign-in floods).

mod common;

use std::time::Duration;

use common::{
    TEST_JWT_SECRET, TestApp, TestEnv, eventually, expected_totals, produce, synthetic_events, test_api_args,
    wait_for_totals,
};
use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokenusage_api::Role;
use tokenusage_ingest::keys;

const RANGE: &str = "from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z";

async fn audit_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("select count(*) from audit_log").fetch_one(&env.pool).await.unwrap()
}

/// The audit entry of one request, by its request id.
async fn entry_of(env: &TestEnv, request_id: &str) -> (Option<String>, Option<String>, String, i32, String) {
    sqlx::query_as("select actor, subject, outcome, status, params from audit_log where request_id = $1")
        .bind(request_id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// Status, content type, request id and body of a response.
async fn parts(r: reqwest::Response) -> (u16, String, String, Value) {
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let rid = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let text = r.text().await.unwrap_or_default();
    (status, ct, rid, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn assert_envelope(what: &str, status: u16, ct: &str, body: &Value) {
    assert!(ct.starts_with("application/json"), "{what}: {status} answered with content type {ct:?}");
    assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "{what}: {status} {body}");
}

fn event(id: &str, user: &str) -> Value {
    json!({"event_id": id, "user_id": user, "occurred_at": "2026-11-20T10:00:00Z",
           "activity": "chat", "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5})
}

/// Finding 1, at the door: a NUL in a metadata value is refused with a
/// field error (it was answered 202, and then stopped the projector).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_a_nul_in_metadata_is_refused_at_ingest_with_a_field_error() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let key = keys::create(&env.pool, "k", "svc", 100_000).await.unwrap().key;
    let mut bad = event("n1", "alice");
    bad["metadata"] = json!({"a": "x\u{0}y"});
    let r = app.http.post(app.url("/api/v1/events")).bearer_auth(&key).json(&bad).send().await.unwrap();
    let (status, _, _, body) = parts(r).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "metadata.a", "{body}");
    assert!(body["errors"][0]["reason"].as_str().unwrap().contains("NUL"), "{body}");
    // In a batch, only the bad item is refused.
    let batch = json!([event("n2", "alice"), bad, event("n3", "bob")]);
    let r = app.http.post(app.url("/api/v1/events")).bearer_auth(&key).json(&batch).send().await.unwrap();
    let (status, _, _, body) = parts(r).await;
    assert_eq!((status, body["accepted"].as_u64(), body["rejected"].as_u64()), (207, Some(2), Some(1)), "{body}");
    assert!(wait_for_totals(&env.pool, (20, 10, 2), Duration::from_secs(30)).await);
    app.stop().await;
    env.cleanup().await;
}

/// Finding 1, behind the door: records published straight to Kafka with a
/// NUL anywhere go to the dead letters with their reason, the events around
/// them are counted, and the server stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_1_nul_records_on_kafka_are_dead_lettered_and_counting_goes_on() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let raw: FutureProducer = env.kafka.client_config().create().unwrap();
    let mut meta_value = event("p1", "u0");
    meta_value["metadata"] = json!({"a": "x\u{0}y"});
    let mut meta_key = event("p2", "u0");
    meta_key["metadata"] = json!({"k\u{0}": 1});
    let mut user = event("p3", "u0\u{0}");
    user["source"] = json!("direct");
    for (v, header) in [(meta_value, b"plain".as_slice()), (meta_key, b"x\x00y".as_slice()), (user, b"z".as_slice())] {
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header { key: "request-id", value: Some(header) });
        raw.send(
            FutureRecord::to(&env.kafka.topic).key("u0").payload(&v.to_string()).headers(headers),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    let good = synthetic_events("g", 300, 1);
    produce(&env, &good).await;
    assert!(wait_for_totals(&env.pool, expected_totals(&good), Duration::from_secs(60)).await, "the good events count");
    let dead: Vec<(String, sqlx::types::Json<Value>)> =
        sqlx::query_as("select error, headers from dead_letters order by kafka_offset")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert!(dead[0].0.contains("metadata.a") && dead[0].0.contains("NUL"), "{}", dead[0].0);
    assert!(dead[1].0.contains("metadata.k\\\\u{0000}"), "the field is named, escaped: {}", dead[1].0);
    assert!(dead[2].0.contains("user_id"), "{}", dead[2].0);
    assert!(dead[1].1.0.to_string().contains("x\\\\u{0000}y"), "headers are kept, escaped: {}", dead[1].1.0);
    let (status, body) = app.get("", "/readyz").await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
    env.cleanup().await;
}

/// The class of finding 1: anything the database refuses deterministically
/// (here a check constraint an operator added) is isolated, dead-lettered
/// with the database's own words, and everything else in its batches is
/// counted; once the cause is gone, a re-drive counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_database_refuses_is_isolated_and_the_rest_of_its_batch_counts() {
    let env = TestEnv::new().await;
    env.add_user("root", Role::Admin, "root-password").await;
    sqlx::query("alter table usage_events add constraint no_poison check (user_id <> 'poison')")
        .execute(&env.pool)
        .await
        .unwrap();
    let app = TestApp::spawn(&env).await;
    let mut events = synthetic_events("iso", 2000, 7);
    for i in [3usize, 900, 1999] {
        events[i].user_id = "poison".into();
    }
    produce(&env, &events).await;
    let good: Vec<_> = events.iter().filter(|e| e.user_id != "poison").cloned().collect();
    assert!(
        wait_for_totals(&env.pool, expected_totals(&good), Duration::from_secs(60)).await,
        "everything else counts"
    );
    let dead: Vec<(i64, String, Vec<u8>)> =
        sqlx::query_as("select id, error, payload from dead_letters order by id").fetch_all(&env.pool).await.unwrap();
    assert_eq!(dead.len(), 3, "{dead:?}");
    for (_, error, payload) in &dead {
        assert!(error.contains("no_poison") && error.contains("23514"), "{error}");
        let e = tokenusage_contract::parse_native(payload, "x", chrono::Utc::now()).unwrap();
        assert_eq!(e.user_id, "poison");
    }
    let (status, _) = app.get("", "/readyz").await;
    assert_eq!(status, 200);
    // The cause is fixed; an admin re-drives; the three are counted once.
    sqlx::query("alter table usage_events drop constraint no_poison").execute(&env.pool).await.unwrap();
    let admin = app.login("root", "root-password").await;
    for (id, _, _) in &dead {
        let r = app.http.post(app.url(&format!("/api/v1/admin/dead-letters/{id}/redrive"))).bearer_auth(&admin).send();
        assert_eq!(r.await.unwrap().status(), 202);
    }
    assert!(wait_for_totals(&env.pool, expected_totals(&events), Duration::from_secs(30)).await, "re-driven once");
    app.stop().await;
    env.cleanup().await;
}

/// A projector that cannot commit (here: a table renamed away, which no
/// retry fixes until someone acts) is not ready, says why, and the metric
/// says so; once the table is back it commits everything and is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_that_cannot_commit_is_not_ready_until_it_can_again() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let first = synthetic_events("s1", 100, 3);
    produce(&env, &first).await;
    assert!(wait_for_totals(&env.pool, expected_totals(&first), Duration::from_secs(60)).await);
    sqlx::query("alter table usage_hour rename to usage_hour_away").execute(&env.pool).await.unwrap();
    let second = synthetic_events("s2", 100, 3);
    produce(&env, &second).await;
    let stalled = eventually(Duration::from_secs(30), || async {
        let (status, body) = app.get("", "/readyz").await;
        (status == 503).then_some(body)
    })
    .await
    .expect("readiness reports the stalled projector");
    let why = stalled["checks"]["projector"].as_str().unwrap();
    assert!(why.contains("failing") && why.contains("usage_hour"), "{stalled}");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tokenusage_projector_stalled 1"), "{metrics}");
    sqlx::query("alter table usage_hour_away rename to usage_hour").execute(&env.pool).await.unwrap();
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert!(wait_for_totals(&env.pool, expected_totals(&all), Duration::from_secs(60)).await, "nothing was lost");
    let ready = eventually(Duration::from_secs(20), || async { (app.get("", "/readyz").await.0 == 200).then_some(()) });
    assert!(ready.await.is_some(), "ready again");
    app.stop().await;
    env.cleanup().await;
}

/// Finding 2: sign-ins with user names the database cannot store (NUL) or
/// other oddities, interleaved with legitimate requests, never make anyone
/// get a 503; the odd names are on the record, escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_bad_sign_ins_beside_legitimate_traffic_never_cause_a_503() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let token = app.login("alice", "alice-password").await;
    let names = ["alice\u{0}", "\u{0}", "a\u{0}b\u{202e}", "bob\u{1F600}", "x\\y", "\u{7f}\u{1b}[31m"];
    let mut statuses = Vec::new();
    for round in 0..4 {
        let mut calls = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let body = json!({"username": name, "password": format!("guess-{round}-{i}")});
            calls.push(app.http.post(app.url("/api/v1/auth/login")).json(&body).send());
            calls.push(app.http.get(app.url("/api/v1/me")).bearer_auth(&token).send());
        }
        for r in futures::future::join_all(calls).await {
            statuses.push(r.unwrap().status().as_u16());
        }
    }
    assert!(!statuses.contains(&503), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), names.len() * 4, "every legitimate request served");
    assert!(statuses.iter().all(|s| [200, 400, 401, 429].contains(s)), "{statuses:?}");
    // A body holding a NUL is refused as a whole (400), and that refusal is
    // on the record; the other odd names are recorded as actors, escaped.
    let refused: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where endpoint = '/api/v1/auth/login' and status = 400 and actor is null",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(refused >= 12, "each NUL sign-in is audited as rejected ({refused})");
    let escaped: i64 = sqlx::query_scalar("select count(*) from audit_log where actor = $1")
        .bind("\\u{007f}\\u{001b}[31m")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(escaped >= 1, "a name with control characters is recorded, escaped and printable");
    assert!(tokenusage_api::audit::verify(&env.pool).await.unwrap().problems.is_empty());
    app.stop().await;
    env.cleanup().await;
}

/// Finding 3: a NUL or another control character in any query parameter,
/// path segment or body field is a specific 400 in the envelope, audited,
/// for viewers and admins, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_3_control_characters_anywhere_in_a_request_are_a_400_never_a_500() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    env.add_user("root", Role::Admin, "root-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let alice = app.login("alice", "alice-password").await;
    let admin = app.login("root", "root-password").await;
    let routes = [
        "/api/v1/usage/series",
        "/api/v1/usage/summary",
        "/api/v1/usage/breakdown",
        "/api/v1/usage/dimensions",
        "/api/v1/usage/export.csv",
        "/api/v1/admin/usage/top-users",
        "/api/v1/admin/audit",
        "/api/v1/audit/views",
        "/api/v1/admin/dead-letters",
        "/api/v1/admin/keys",
        "/api/v1/me",
    ];
    let params = ["activity", "model", "user", "actor", "subject", "action", "outcome", "tz", "granularity", "group"];
    let mut checked = 0;
    for route in routes {
        for param in params {
            for value in ["%00", "x%00y", "%0A", "%FF"] {
                for token in [&alice, &admin] {
                    let before = audit_count(&env).await;
                    let r =
                        app.http.get(app.url(&format!("{route}?{RANGE}&{param}={value}"))).bearer_auth(token).send();
                    let (status, ct, _, body) = parts(r.await.unwrap()).await;
                    assert_eq!(status, 400, "{route} {param}={value}: {body}");
                    assert_envelope(route, status, &ct, &body);
                    assert_eq!(audit_count(&env).await, before + 1, "{route} {param}={value} is audited");
                    checked += 1;
                }
            }
        }
    }
    for (method, path) in [("DELETE", "/api/v1/admin/keys/%00"), ("POST", "/api/v1/admin/dead-letters/%00/redrive")] {
        let r = app.http.request(method.parse().unwrap(), app.url(path)).bearer_auth(&admin).send().await.unwrap();
        let (status, ct, _, body) = parts(r).await;
        assert_eq!(status, 400, "{method} {path}: {body}");
        assert_envelope(path, status, &ct, &body);
    }
    for name in ["a\u{0}b", "ok"] {
        let body = json!({"name": "k", "source": name});
        let r = app.http.post(app.url("/api/v1/admin/keys")).bearer_auth(&admin).json(&body).send().await.unwrap();
        let (status, ct, _, body) = parts(r).await;
        if name == "ok" {
            assert_eq!(status, 201, "{body}");
        } else {
            assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_body")), "{body}");
            assert_envelope("key with NUL", status, &ct, &body);
        }
    }
    assert!(checked > 800);
    app.stop().await;
    env.cleanup().await;
}

/// Finding 4: a token pasted into the query string is neither accepted
/// nor stored: the audit trail keeps parameter names, and values only as
/// the handler understood them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_credentials_in_the_query_string_are_never_recorded() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let token = app.login("alice", "alice-password").await;
    let paths = [
        format!("/api/v1/usage/series?{RANGE}&access_token={token}"),
        format!("/api/v1/me?access_token={token}"),
        format!("/api/v1/no-such-route?access_token={token}&password=hunter2"),
        format!("/api/v1/usage/series?from=bad&access_token={token}"),
    ];
    for p in &paths {
        let r = app.http.get(app.url(p)).send().await.unwrap();
        assert_eq!(
            r.status(),
            if p.contains("no-such") { 404 } else { 401 },
            "{p}: a token in a URL is not a credential"
        );
        let r = app.http.get(app.url(p)).bearer_auth(&token).send().await.unwrap();
        assert!(r.status().as_u16() < 500);
    }
    let leaked: i64 =
        sqlx::query_scalar("select count(*) from audit_log where params like $1 or params like '%hunter2%'")
            .bind(format!("%{}%", &token[token.len() - 20..]))
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(leaked, 0, "no credential in the audit trail");
    let named: i64 = sqlx::query_scalar("select count(*) from audit_log where params like '%access_token%'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(named >= 2, "the parameter's name is on the record, its value is not");
    app.stop().await;
    env.cleanup().await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, token: &str, origin: Option<&str>) -> Result<(Ws, String), u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/v1/live", app.addr).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", format!("tokenusage.v1, bearer.{token}").parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => Ok((ws, resp.headers()["x-request-id"].to_str().unwrap().to_owned())),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

async fn next_error(ws: &mut Ws) -> Value {
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    return v;
                }
            }
        }
        Value::Null
    })
    .await
    .unwrap()
}

/// Finding 5: every refused request and socket message is on the record,
/// with the caller and the user whose data was asked for; a 101 is a
/// success; "who viewed my usage" shows denied attempts and all-users reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_5_refusals_are_audited_with_who_and_whose_and_views_of_me_show_them() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    env.add_user("bob", Role::Viewer, "bob-password").await;
    env.add_user("root", Role::Admin, "root-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let alice = app.login("alice", "alice-password").await;
    let admin = app.login("root", "root-password").await;

    // 404 and 405 under /api/v1, with the caller named.
    let (status, ct, rid, body) =
        parts(app.http.get(app.url("/api/v1/nope")).bearer_auth(&alice).send().await.unwrap()).await;
    assert_envelope("404", status, &ct, &body);
    assert_eq!(entry_of(&env, &rid).await.0.as_deref(), Some("alice"), "404");
    let (status, ct, rid, body) =
        parts(app.http.put(app.url("/api/v1/me")).bearer_auth(&alice).send().await.unwrap()).await;
    assert_eq!(status, 405);
    assert_envelope("405", status, &ct, &body);
    let (actor, _, outcome, st, _) = entry_of(&env, &rid).await;
    assert_eq!((actor.as_deref(), outcome.as_str(), st), (Some("alice"), "rejected", 405));

    // 414 and 431: refused by us, in the envelope, on the record.
    let long = format!("/api/v1/usage/series?{RANGE}&model={}", "m".repeat(9000));
    let (status, ct, rid, body) = parts(app.http.get(app.url(&long)).bearer_auth(&alice).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (414, Some("uri_too_long")));
    assert_envelope("414", status, &ct, &body);
    assert_eq!(entry_of(&env, &rid).await.3, 414);
    let mut req = app.http.get(app.url("/api/v1/me")).bearer_auth(&alice);
    for i in 0..70 {
        req = req.header(format!("x-filler-{i}"), "1");
    }
    let (status, ct, rid, body) = parts(req.send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (431, Some("headers_too_large")));
    assert_envelope("431", status, &ct, &body);
    assert_eq!(entry_of(&env, &rid).await.3, 431);

    // A denied cross-user read names the user it was about, who sees it.
    let r = app.http.get(app.url(&format!("/api/v1/usage/series?{RANGE}&user=bob"))).bearer_auth(&alice).send();
    let (status, _, rid, _) = parts(r.await.unwrap()).await;
    assert_eq!(status, 403);
    let (_, subject, outcome, _, _) = entry_of(&env, &rid).await;
    assert_eq!((subject.as_deref(), outcome.as_str()), (Some("bob"), "denied"));
    // An admin's all-users read covers alice.
    assert_eq!(app.get(&admin, &format!("/api/v1/usage/series?{RANGE}&user=*")).await.0, 200);
    let bob = app.login("bob", "bob-password").await;
    let (_, views) = app.get(&bob, "/api/v1/audit/views").await;
    let seen: Vec<(String, String)> = views
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["actor"].as_str().unwrap_or("").to_owned(), v["outcome"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert!(seen.contains(&("alice".into(), "denied".into())), "bob sees alice's refused attempt: {seen:?}");
    assert!(seen.contains(&("root".into(), "ok".into())), "bob sees the admin's all-users read: {seen:?}");
    let (_, views) = app.get(&alice, "/api/v1/audit/views").await;
    assert!(views.as_array().unwrap().iter().any(|v| v["actor"] == "root" && v["subject"] == "*"), "{views}");

    // Sockets: a successful connect is `ok` (101); refused messages are on the record.
    let (mut ws, rid) = connect(&app, &alice, None).await.unwrap();
    let (actor, _, outcome, status, _) = entry_of(&env, &rid).await;
    assert_eq!((actor.as_deref(), outcome.as_str(), status), (Some("alice"), "ok", 101));
    let before = audit_count(&env).await;
    let sub = json!({"type": "subscribe", "id": "s1", "view": {"from": "2026-11-20T00:00:00Z", "user": "bob"}});
    ws.send(Message::Text(sub.to_string().into())).await.unwrap();
    assert_eq!(next_error(&mut ws).await["code"], "forbidden");
    ws.send(Message::Text(json!({"type": "auth", "token": "not-a-token"}).to_string().into())).await.unwrap();
    assert_eq!(next_error(&mut ws).await["code"], "unauthorized");
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(next_error(&mut ws).await["code"], "invalid_message");
    let rows: Vec<(String, Option<String>, String, i32)> = sqlx::query_as(
        "select action, subject, outcome, status from audit_log where seq > (select max(seq) from audit_log) - 3 order by seq",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(audit_count(&env).await, before + 3);
    assert_eq!(rows[0], ("live.subscribe".into(), Some("bob".into()), "denied".into(), 403));
    assert_eq!((rows[1].0.as_str(), rows[1].2.as_str()), ("live.auth", "unauthenticated"));
    assert_eq!((rows[2].0.as_str(), rows[2].2.as_str()), ("live.message", "rejected"));
    app.stop().await;
    env.cleanup().await;
}

/// Finding 6: the socket's Origin check compares scheme, host and port; an
/// access token over 8 KiB is refused even when validly signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_6_origins_compare_scheme_host_and_port_and_huge_tokens_are_refused() {
    use sha2::{Digest, Sha256};
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let token = app.login("alice", "alice-password").await;
    let host = app.addr.to_string();
    assert_eq!(connect(&app, &token, Some(&format!("https://{host}"))).await.err(), Some(403), "another scheme");
    assert_eq!(connect(&app, &token, Some(&format!("http://{}:1", app.addr.ip()))).await.err(), Some(403));
    assert!(connect(&app, &token, Some(&format!("http://{host}"))).await.is_ok(), "our own origin");
    // A validly signed token of 137 KB.
    let kid = format!(
        "tu-{}",
        hex::encode(&Sha256::digest([b"tokenusage-kid:".as_slice(), TEST_JWT_SECRET.as_bytes()].concat())[..8])
    );
    let n = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": "alice", "iss": "tokenusage", "aud": "tokenusage-api", "exp": n + 300, "nbf": n - 1,
        "iat": n, "role": "viewer", "pad": "p".repeat(137_000)});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid);
    let huge =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()))
            .unwrap();
    assert!(huge.len() > 137_000);
    let mut small = claims.clone();
    small.as_object_mut().unwrap().remove("pad");
    let fine =
        jsonwebtoken::encode(&header, &small, &jsonwebtoken::EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()))
            .unwrap();
    assert_eq!(app.get(&fine, "/api/v1/me").await.0, 200, "the same claims, small, pass");
    let r = app.http.get(app.url("/api/v1/me")).bearer_auth(&huge).send().await.unwrap();
    // Over the 32 KiB head limit the request is refused before the token
    // is even looked at; either way it is not accepted.
    assert!([401, 431].contains(&r.status().as_u16()), "{}", r.status());
    let mid = {
        let mut c = claims.clone();
        c["pad"] = json!("p".repeat(9000));
        jsonwebtoken::encode(&header, &c, &jsonwebtoken::EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes())).unwrap()
    };
    assert_eq!(app.get(&mid, "/api/v1/me").await.0, 401, "a 12 KB token is refused by size");
    app.stop().await;
    env.cleanup().await;
}

/// Finding 7: one range rule for every route; leap seconds refused in
/// queries and kept in their own second in events; ingest needs a
/// content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_7_every_route_takes_one_range_rule_leap_seconds_and_content_types() {
    let env = TestEnv::new().await;
    env.add_user("root", Role::Admin, "root-password").await;
    let app = TestApp::spawn(&env).await;
    let admin = app.login("root", "root-password").await;
    let routes = [
        "/api/v1/usage/series",
        "/api/v1/usage/summary",
        "/api/v1/usage/breakdown",
        "/api/v1/usage/dimensions",
        "/api/v1/usage/export.csv",
        "/api/v1/admin/usage/top-users",
    ];
    for route in routes {
        for (from, to) in [
            ("0000-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
            ("1969-12-31T00:00:00Z", "1970-01-02T00:00:00Z"),
            ("2026-01-01T00:00:00Z", "9999-01-01T00:00:00Z"),
            ("-0001-01-01", "2026-01-01"),
        ] {
            let (status, body) = app.get(&admin, &format!("{route}?from={from}&to={to}")).await;
            assert_eq!(status, 400, "{route} {from}..{to}: {body}");
            assert!(matches!(body["error"]["code"].as_str(), Some("out_of_range" | "invalid_time")), "{route}: {body}");
        }
        let (status, body) =
            app.get(&admin, &format!("{route}?from=2016-12-31T23:59:60Z&to=2017-01-02T00:00:00Z")).await;
        assert_eq!(status, 400, "{route}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("leap second"), "{body}");
    }
    // An event stamped in a leap second counts in that day's last minute.
    let key = keys::create(&env.pool, "k", "svc", 1000).await.unwrap().key;
    let mut e = event("leap", "alice");
    e["occurred_at"] = json!("2016-12-31T23:59:60Z");
    let r = app.http.post(app.url("/api/v1/events")).bearer_auth(&key).json(&e).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert!(wait_for_totals(&env.pool, (10, 5, 1), Duration::from_secs(30)).await);
    let bucket: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select bucket from usage_minute").fetch_one(&env.pool).await.unwrap();
    assert_eq!(bucket.to_rfc3339(), "2016-12-31T23:59:00+00:00");
    // No content type: 415, as documented.
    let r = app.http.post(app.url("/api/v1/events")).bearer_auth(&key).body(event("ct", "alice").to_string()).send();
    let (status, ct, _, body) = parts(r.await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (415, Some("unsupported_media_type")), "{body}");
    assert_envelope("ingest 415", status, &ct, &body);
    app.stop().await;
    env.cleanup().await;
}

/// Finding 8: every error the server sends is the JSON envelope:
/// extractor rejections, fallbacks, timeouts' kin and limits included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_8_every_error_is_the_json_envelope() {
    let env = TestEnv::database_only().await;
    env.add_user("root", Role::Admin, "root-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let admin = app.login("root", "root-password").await;
    let login = app.url("/api/v1/auth/login");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("login, not JSON", app.http.post(&login).header("content-type", "application/json").body("{oops"), 400),
        ("login, text/plain", app.http.post(&login).header("content-type", "text/plain").body("x"), 415),
        ("login, no body", app.http.post(&login), 415),
        ("login, wrong shape", app.http.post(&login).json(&json!({"username": 5})), 400),
        (
            "login, 2 MB",
            app.http.post(&login).header("content-type", "application/json").body("x".repeat(2 << 20)),
            413,
        ),
        ("key, wrong shape", app.http.post(app.url("/api/v1/admin/keys")).bearer_auth(&admin).json(&json!([])), 400),
        (
            "key, unknown field",
            app.http.post(app.url("/api/v1/admin/keys")).bearer_auth(&admin).json(&json!({"name": "a", "owner": "b"})),
            400,
        ),
        (
            "redrive, id not a number",
            app.http.post(app.url("/api/v1/admin/dead-letters/abc/redrive")).bearer_auth(&admin),
            400,
        ),
        ("unknown key", app.http.delete(app.url("/api/v1/admin/keys/tu_nope")).bearer_auth(&admin), 404),
        (
            "dead letters, limit not a number",
            app.http.get(app.url("/api/v1/admin/dead-letters?limit=x")).bearer_auth(&admin),
            400,
        ),
        ("audit, unknown parameter", app.http.get(app.url("/api/v1/admin/audit?nope=1")).bearer_auth(&admin), 400),
        ("live without upgrade", app.http.get(app.url("/api/v1/live")).bearer_auth(&admin), 400),
        ("static 404", app.http.get(app.url("/no/such/file.js")), 404),
        ("api 404", app.http.get(app.url("/api/v1/nope")), 404),
        ("405", app.http.delete(app.url("/api/v1/usage/series")), 405),
        ("healthz 405", app.http.post(app.url("/healthz")), 405),
    ];
    for (what, req, want) in cases {
        let (status, ct, _, body) = parts(req.send().await.unwrap()).await;
        assert_eq!(status, want, "{what}: {body}");
        assert_envelope(what, status, &ct, &body);
    }
    app.stop().await;
    env.cleanup().await;
}

/// Finding 9: a flood of wrong passwords for someone's name locks out the
/// flooder, not the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_9_a_flood_of_wrong_passwords_cannot_lock_the_owner_out() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let mut args = test_api_args();
    // Addresses come from X-Forwarded-For, as behind a TLS proxy.
    args.behind_tls_proxy = true;
    args.login_attempts_per_minute = 5;
    let app = TestApp::spawn_api(&env, args).await;
    let attempt = |from: String, password: &'static str| {
        app.http
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", from)
            .json(&json!({"username": "alice", "password": password}))
            .send()
    };
    // Alice has signed in from home before.
    assert_eq!(attempt("10.0.0.1".into(), "alice-password").await.unwrap().status(), 200);
    // One attacker hammers her name: they are stopped, she is not.
    let mut limited = 0;
    for _ in 0..20 {
        if attempt("10.6.6.6".into(), "wrong").await.unwrap().status() == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 15, "5 failures a minute for one name from one address");
    assert_eq!(attempt("10.0.0.2".into(), "alice-password").await.unwrap().status(), 200, "from a new address too");
    // Many attackers: the name's own budget (50 per 15 min) runs out...
    for i in 0..60 {
        let _ = attempt(format!("10.7.{}.{}", i / 200, i % 200 + 1), "wrong").await.unwrap();
    }
    assert_eq!(attempt("10.0.0.3".into(), "alice-password").await.unwrap().status(), 429, "a new address now waits");
    // ...except where she signed in before.
    assert_eq!(attempt("10.0.0.1".into(), "alice-password").await.unwrap().status(), 200);
    assert_eq!(attempt("10.0.0.2".into(), "alice-password").await.unwrap().status(), 200);
    app.stop().await;
    env.cleanup().await;
}

/// The property suite for query parameters: arbitrary Unicode (NUL and
/// other controls, lone-surrogate escapes, 4-byte characters, RTL marks,
/// long runs) in any parameter of any route gets a 2xx or a specific 4xx
/// in the envelope, never a 5xx.
#[test]
fn any_unicode_in_any_query_parameter_gets_a_2xx_or_a_specific_4xx() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (env, app, token) = rt.block_on(async {
        let env = TestEnv::database_only().await;
        env.add_user("root", Role::Admin, "root-password").await;
        let app = TestApp::spawn_api(&env, test_api_args()).await;
        let token = app.login("root", "root-password").await;
        (env, app, token)
    });
    let routes = vec![
        "/api/v1/usage/series",
        "/api/v1/usage/summary",
        "/api/v1/usage/breakdown",
        "/api/v1/usage/dimensions",
        "/api/v1/usage/export.csv",
        "/api/v1/admin/usage/top-users",
        "/api/v1/admin/audit",
        "/api/v1/audit/views",
        "/api/v1/admin/dead-letters",
        "/api/v1/me",
    ];
    let names = vec![
        "from",
        "to",
        "tz",
        "granularity",
        "group",
        "activity",
        "model",
        "user",
        "week_start",
        "limit",
        "actor",
        "subject",
        "action",
        "outcome",
        "before",
        "all",
        "x\u{202e}",
    ];
    let value = prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just('\0'),
                Just('\u{202e}'),
                Just('\u{1F600}'),
                Just('\n'),
                Just('%'),
                Just('&'),
                any::<char>()
            ],
            0..30
        )
        .prop_map(|c| c.into_iter().collect::<String>()),
        Just("\\ud800".to_owned()),
        (1usize..3000).prop_map(|n| "\u{1F600}".repeat(n)),
        Just("2026-11-20".to_owned()),
        Just("*".to_owned()),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 300, ..ProptestConfig::default() });
    let strategy = (proptest::sample::select(routes), proptest::sample::select(names), value, any::<bool>());
    let result = runner.run(&strategy, |(route, name, value, with_range)| {
        let mut url = reqwest::Url::parse(&app.url(route)).unwrap();
        {
            let mut q = url.query_pairs_mut();
            if with_range {
                q.append_pair("from", "2026-11-20T00:00:00Z").append_pair("to", "2026-11-21T00:00:00Z");
            }
            q.append_pair(name, &value);
        }
        let (status, ct, _, body) =
            rt.block_on(async { parts(app.http.get(url.clone()).bearer_auth(&token).send().await.unwrap()).await });
        prop_assert!(status < 500, "{url}: {status} {body}");
        if status >= 400 {
            prop_assert!(
                ct.starts_with("application/json") && body["error"]["code"].is_string(),
                "{url}: {status} {ct} {body}"
            );
            prop_assert!(body["error"]["code"] != "internal", "{url}: {body}");
        }
        Ok(())
    });
    rt.block_on(async {
        app.stop().await;
        env.cleanup().await;
    });
    result.unwrap();
}

/// The round trip: events with arbitrary Unicode in every string field go
/// through HTTP ingest, Kafka and the projector; every accepted event is
/// counted exactly once, nothing accepted is dead-lettered, and every
/// refused one got a field error.
#[test]
fn any_unicode_in_published_events_is_refused_by_field_or_counted_exactly() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let text = prop_oneof![
        "[a-z0-9._-]{1,12}",
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![Just('\0'), Just('\u{202e}'), Just('\u{1F600}'), Just('\u{FFFF}'), Just('\t'), any::<char>()],
            1..20
        )
        .prop_map(|c| c.into_iter().collect::<String>()),
        (100usize..300).prop_map(|n| "é".repeat(n)),
    ];
    let field =
        proptest::sample::select(vec!["user_id", "event_id", "activity", "model", "meta_key", "meta_value", "source"]);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let cases: Vec<(usize, &str, String)> = (0..400)
        .map(|i| {
            let f = field.new_tree(&mut runner).unwrap().current();
            let t = text.new_tree(&mut runner).unwrap().current();
            (i, f, t)
        })
        .collect();
    rt.block_on(async {
        let env = TestEnv::new().await;
        let app = TestApp::spawn(&env).await;
        let key = keys::create(&env.pool, "k", "prop", 1_000_000).await.unwrap().key;
        let mut accepted = Vec::new();
        for chunk in cases.chunks(100) {
            let items: Vec<Value> = chunk
                .iter()
                .map(|(i, f, t)| {
                    let mut e = event(&format!("p{i}"), &format!("user{}", i % 9));
                    match *f {
                        "meta_key" => e["metadata"] = Value::Object([(t.clone(), json!(*i))].into_iter().collect()),
                        "meta_value" => e["metadata"] = json!({"k": t}),
                        "event_id" => e[*f] = json!(format!("{t}-{i}")),
                        f => e[f] = json!(t),
                    }
                    e
                })
                .collect();
            let r = app.http.post(app.url("/api/v1/events")).bearer_auth(&key).json(&items).send().await.unwrap();
            let (status, _, _, body) = parts(r).await;
            assert!([202, 207, 400].contains(&status), "{status} {body}");
            for (item, result) in items.iter().zip(body["results"].as_array().unwrap()) {
                match result["status"].as_str() {
                    Some("accepted") => accepted.push(item.clone()),
                    Some("rejected") => assert!(result["errors"][0]["field"].is_string(), "{result}"),
                    other => panic!("{other:?}: {result}"),
                }
            }
        }
        assert!(accepted.len() > 100 && accepted.len() < cases.len(), "{} of {} accepted", accepted.len(), cases.len());
        let want = accepted.iter().fold((0i64, 0i64, 0i64), |t, e| {
            (t.0 + e["input_tokens"].as_i64().unwrap(), t.1 + e["output_tokens"].as_i64().unwrap(), t.2 + 1)
        });
        assert!(wait_for_totals(&env.pool, want, Duration::from_secs(60)).await, "every accepted event counted once");
        let dead: i64 = sqlx::query_scalar("select count(*) from dead_letters").fetch_one(&env.pool).await.unwrap();
        assert_eq!(dead, 0, "nothing accepted was refused downstream");
        // Per user, the stored ids and users are exactly the accepted ones.
        let users: Vec<String> = sqlx::query_scalar("select distinct user_id from usage_events order by 1")
            .fetch_all(&env.pool)
            .await
            .unwrap();
        let mut want_users: Vec<String> = accepted
            .iter()
            .map(|e| e["user_id"].as_str().unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        want_users.sort();
        let mut users_sorted = users.clone();
        users_sorted.sort();
        assert_eq!(users_sorted, want_users);
        app.stop().await;
        env.cleanup().await;
    });
}
