//! Bad requests of every kind: each gets a specific answer in the envelope,
//! on the record, and none makes anyone else's request fail.

use std::time::Duration;

use serde_json::json;
use tokenusage_api::Role;
use tokenusage_schema::keys;

use super::*;
use crate::common::{TEST_JWT_SECRET, TestApp, TestEnv, test_api_args, wait_for_totals};

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
        // A route whose credential is a publisher key: still 401, not a
        // complaint about the unknown parameter.
        format!("/api/v1/budgets/check?access_token={token}"),
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
    args.tls.behind_proxy = true;
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

/// One rule for every `limit`: a number in the route's range, or a 400
/// naming the range, never a silent clamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_out_of_range_is_a_400_naming_the_range() {
    let env = TestEnv::database_only().await;
    env.add_user("root", Role::Admin, "root-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let token = app.login("root", "root-password").await;
    for (path, max) in [
        ("/api/v1/admin/audit", 1000),
        ("/api/v1/audit/views", 1000),
        ("/api/v1/admin/dead-letters", 10_000),
        ("/api/v1/admin/webhooks/deliveries", 10_000),
    ] {
        for bad in ["0".to_owned(), "-1".to_owned(), (max + 1).to_string()] {
            let (status, body) = app.get(&token, &format!("{path}?limit={bad}")).await;
            assert_eq!(status, 400, "{path}?limit={bad}: {body}");
            assert_eq!(body["error"]["code"], "invalid_limit", "{path}?limit={bad}");
            assert!(body["error"]["message"].as_str().unwrap().contains(&format!("from 1 to {max}")), "{body}");
        }
        assert_eq!(app.get(&token, &format!("{path}?limit={max}")).await.0, 200, "{path}?limit={max}");
    }
    app.stop().await;
    env.cleanup().await;
}

/// Every refused field of a JSON body is named in the answer: enum values,
/// types, nested scopes, list items and price kinds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_error_names_its_field() {
    let env = TestEnv::database_only().await;
    env.add_user("root", Role::Admin, "root-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let token = app.login("root", "root-password").await;
    let budget = json!({"scope": {"kind": "user", "id": "root"}, "measure": "tokens", "amount": 10, "period": "day"});
    let with = |field: &str, v: serde_json::Value| {
        let mut b = budget.clone();
        let (outer, inner) = field.split_once('.').map_or((field, None), |(o, i)| (o, Some(i)));
        match inner {
            Some(i) => b[outer][i] = v,
            None => b[outer] = v,
        }
        b
    };
    for (body, field) in [
        (with("measure", json!("bogus")), "measure"),
        (with("period", json!(7)), "period"),
        (with("thresholds", json!([50, "80", 120])), "thresholds[1]"),
        (with("scope.kind", json!("galaxy")), "scope"),
        (with("webhooks", json!("ops")), "webhooks"),
    ] {
        let r = app.http.post(app.url("/api/v1/budgets")).bearer_auth(&token).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        let answer: serde_json::Value = r.json().await.unwrap();
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(message.contains(field), "{body}: {message:?} names no `{field}`");
    }
    // Values are taken as written: a padded key name or source is refused, not trimmed.
    for body in [json!({"name": " ops"}), json!({"name": "ops", "source": "svc "})] {
        let r = app.http.post(app.url("/api/v1/admin/keys")).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        assert!(r.text().await.unwrap().contains("whitespace"), "{body}");
    }
    let price =
        json!({"model": "m", "effective_from": "2026-01-01T00:00:00Z", "per_million": {"inptu": "1"}, "source": "s"});
    let r = app.http.post(app.url("/api/v1/admin/prices")).bearer_auth(&token).json(&price).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let message = r.json::<serde_json::Value>().await.unwrap()["error"]["message"].to_string();
    assert!(message.contains("per_million.inptu"), "{message}");
    app.stop().await;
    env.cleanup().await;
}
