//! Identity, access control and audit, against the real database: the JWT
//! negative suite, the cross-user matrix (with one audit entry per
//! request), the hash chain under tampering, fail-closed auditing,
//! sessions, sign-in rate limiting, OIDC, and TLS.

use crate::common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{TEST_JWT_SECRET, TestApp, TestEnv, test_api_args};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokenusage_api::Role;

pub(crate) fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The `kid` the server derives from a secret (see api/src/tokens.rs).
pub(crate) fn kid_of(secret: &str) -> String {
    let d = Sha256::digest([b"tokenusage-kid:".as_slice(), secret.as_bytes()].concat());
    format!("tu-{}", hex::encode(&d[..8]))
}

pub(crate) fn good_claims(sub: &str) -> Value {
    let n = now();
    json!({"sub": sub, "iss": "tokenusage", "aud": "tokenusage-api", "exp": n + 300, "nbf": n - 1, "iat": n, "role": "viewer"})
}

pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, secret: &[u8]) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret)).unwrap()
}

pub(crate) fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, Some(&kid_of(TEST_JWT_SECRET)), claims, TEST_JWT_SECRET.as_bytes())
}

pub(crate) fn without(claim: &str) -> Value {
    let mut c = good_claims("alice");
    c.as_object_mut().unwrap().remove(claim);
    c
}

pub(crate) fn with(claim: &str, v: Value) -> Value {
    let mut c = good_claims("alice");
    c[claim] = v;
    c
}

/// A token with a hand-made header and a given signature part.
pub(crate) fn raw_token(header: Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", B64.encode(header.to_string()), B64.encode(claims.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_malformed_tokens_are_401_never_5xx() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let kid = kid_of(TEST_JWT_SECRET);

    // The suite means something only if a correctly forged token passes.
    let (status, body) = app.get(&hs256(&good_claims("alice")), "/api/v1/me").await;
    assert_eq!((status, body["user"].as_str()), (200, Some("alice")));

    let valid = hs256(&good_claims("alice"));
    let (h, rest) = valid.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let admin_claims = with("role", json!("admin"));
    let cases: Vec<(&str, String)> = vec![
        ("alg none", raw_token(json!({"alg": "none", "typ": "JWT", "kid": kid}), &good_claims("alice"), "")),
        ("alg none, signature kept", raw_token(json!({"alg": "none", "kid": kid}), &good_claims("alice"), sig)),
        (
            "HS512 instead of HS256",
            sign(Algorithm::HS512, Some(&kid), &good_claims("alice"), TEST_JWT_SECRET.as_bytes()),
        ),
        (
            "RS256 header over an HMAC signature",
            raw_token(json!({"alg": "RS256", "kid": kid}), &good_claims("alice"), sig),
        ),
        (
            "payload tampered (role admin), signature kept",
            format!("{h}.{}.{sig}", B64.encode(admin_claims.to_string())),
        ),
        (
            "signed with another secret",
            sign(Algorithm::HS256, Some(&kid), &good_claims("alice"), b"another-secret-another-secret-another!"),
        ),
        ("expired", hs256(&with("exp", json!(now() - 60)))),
        ("not yet valid", hs256(&with("nbf", json!(now() + 120)))),
        ("no exp", hs256(&without("exp"))),
        ("no nbf", hs256(&without("nbf"))),
        ("no iss", hs256(&without("iss"))),
        ("no aud", hs256(&without("aud"))),
        ("no sub", hs256(&without("sub"))),
        ("empty sub", hs256(&with("sub", json!("")))),
        ("wrong iss", hs256(&with("iss", json!("someone-else")))),
        ("wrong aud", hs256(&with("aud", json!("another-api")))),
        ("unknown user", hs256(&with("sub", json!("mallory")))),
        ("no kid", sign(Algorithm::HS256, None, &good_claims("alice"), TEST_JWT_SECRET.as_bytes())),
        (
            "unknown kid",
            sign(Algorithm::HS256, Some("tu-0000000000000000"), &good_claims("alice"), TEST_JWT_SECRET.as_bytes()),
        ),
        ("garbage", "not.a.jwt".into()),
        ("two parts", "eyJhbGciOiJIUzI1NiJ9.e30".into()),
        ("empty", String::new()),
        ("an API key", "tu_01234567_0123456789abcdef0123456789abcdef".into()),
    ];
    for (what, token) in &cases {
        let r = app
            .http
            .get(app.url("/api/v1/usage/series?from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{what}: expected 401");
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
    }
    // A token offered in the URL is not a credential.
    let r = app.http.get(app.url(&format!("/api/v1/me?access_token={valid}"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // A role claimed in the token does not beat the database's.
    let (status, body) = app.get(&hs256(&admin_claims), "/api/v1/me").await;
    assert_eq!((status, body["role"].as_str()), (200, Some("viewer")));

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_kid() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let old = "the-previous-secret-the-previous-secret!";
    let retired = "a-long-retired-secret-a-long-retired-secret";
    let mut args = test_api_args();
    args.jwt.previous_secrets = vec![SecretString::from(old)];
    let app = TestApp::spawn_api(&env, args).await;

    let by_old = sign(Algorithm::HS256, Some(&kid_of(old)), &good_claims("alice"), old.as_bytes());
    assert_eq!(app.get(&by_old, "/api/v1/me").await.0, 200, "a token of the previous key is still honoured");
    let by_retired = sign(Algorithm::HS256, Some(&kid_of(retired)), &good_claims("alice"), retired.as_bytes());
    assert_eq!(app.get(&by_retired, "/api/v1/me").await.0, 401, "a key no longer configured is not");
    // The previous key's kid with the current secret's signature: refused.
    let mixed = sign(Algorithm::HS256, Some(&kid_of(old)), &good_claims("alice"), TEST_JWT_SECRET.as_bytes());
    assert_eq!(app.get(&mixed, "/api/v1/me").await.0, 401);
    // New tokens are signed with the current key.
    let issued = app.login("alice", "alice-password").await;
    assert_eq!(jsonwebtoken::decode_header(&issued).unwrap().kid, Some(kid_of(TEST_JWT_SECRET)));

    app.stop().await;
    env.cleanup().await;
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Caller {
    Anonymous,
    Publisher,
    Alice,
    Admin,
}

pub(crate) async fn audit_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("select count(*) from audit_log").fetch_one(&env.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_by_every_role_sees_only_what_it_may_and_leaves_one_audit_entry() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    env.add_user("bob", Role::Viewer, "bob-password").await;
    env.add_user("root", Role::Admin, "root-password").await;
    // Bob has usage; Alice has some too.
    sqlx::query(
        "insert into usage_hour (user_id, activity, model, bucket, input_tokens, output_tokens, events) values
         ('alice', 'chat', 'm1', '2026-11-20T09:00:00Z', 10, 1, 1), ('bob', 'chat', 'm1', '2026-11-20T10:00:00Z', 500, 50, 2)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into usage_minute (user_id, activity, model, bucket, input_tokens, output_tokens, events) values
         ('alice', 'chat', 'm1', '2026-11-20T09:00:00Z', 10, 1, 1), ('bob', 'chat', 'm1', '2026-11-20T10:00:00Z', 500, 50, 2)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let alice = app.login("alice", "alice-password").await;
    let admin = app.login("root", "root-password").await;
    let publisher_key = tokenusage_schema::keys::create(&env.pool, "pub", "pub", 100).await.unwrap().key;

    const RANGE: &str = "from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z";
    let series_own = format!("/api/v1/usage/series?{RANGE}&granularity=hour");
    let series_bob = format!("/api/v1/usage/series?{RANGE}&granularity=hour&user=bob");
    let breakdown_own = format!("/api/v1/usage/breakdown?{RANGE}");
    let breakdown_bob = format!("/api/v1/usage/breakdown?{RANGE}&user=bob");
    // (method, path, body, expected for [anonymous, publisher, alice, admin])
    let matrix: Vec<(&str, String, Option<Value>, [u16; 4])> = vec![
        ("GET", "/api/v1/me".into(), None, [401, 401, 200, 200]),
        ("GET", series_own.clone(), None, [401, 401, 200, 200]),
        ("GET", series_bob.clone(), None, [401, 401, 403, 200]),
        ("GET", breakdown_own.clone(), None, [401, 401, 200, 200]),
        ("GET", breakdown_bob.clone(), None, [401, 401, 403, 200]),
        ("GET", format!("/api/v1/usage/summary?{RANGE}"), None, [401, 401, 200, 200]),
        ("GET", format!("/api/v1/usage/summary?{RANGE}&user=bob"), None, [401, 401, 403, 200]),
        ("GET", format!("/api/v1/usage/export.csv?{RANGE}"), None, [401, 401, 200, 200]),
        ("GET", format!("/api/v1/usage/export.csv?{RANGE}&user=bob"), None, [401, 401, 403, 200]),
        ("GET", format!("/api/v1/usage/dimensions?{RANGE}"), None, [401, 401, 200, 200]),
        ("GET", format!("/api/v1/usage/dimensions?{RANGE}&user=bob"), None, [401, 401, 403, 200]),
        ("GET", format!("/api/v1/usage/series?{RANGE}&user=*"), None, [401, 401, 403, 200]),
        ("GET", format!("/api/v1/admin/usage/top-users?{RANGE}"), None, [401, 401, 403, 200]),
        ("GET", "/api/v1/audit/views".into(), None, [401, 401, 200, 200]),
        ("GET", "/api/v1/admin/audit".into(), None, [401, 401, 403, 200]),
        ("GET", "/api/v1/admin/audit?subject=bob".into(), None, [401, 401, 403, 200]),
        ("GET", "/api/v1/admin/keys".into(), None, [401, 401, 403, 200]),
        ("POST", "/api/v1/admin/keys".into(), Some(json!({"name": "k"})), [401, 401, 403, 201]),
        ("DELETE", "/api/v1/admin/keys/tu_nope".into(), None, [401, 401, 403, 404]),
        ("GET", "/api/v1/admin/dead-letters".into(), None, [401, 401, 403, 200]),
        ("POST", "/api/v1/admin/dead-letters/999999/redrive".into(), None, [401, 401, 403, 404]),
        ("GET", "/api/v1/admin/prices".into(), None, [401, 401, 403, 200]),
        ("GET", "/api/v1/admin/providers".into(), None, [401, 401, 403, 200]),
        (
            "PUT",
            "/api/v1/admin/providers/nope/mappings".into(),
            Some(json!({"kind": "scope", "external_id": "proj_1", "target_project": "p"})),
            [401, 401, 403, 404],
        ),
        ("DELETE", "/api/v1/admin/providers/nope/mappings/scope/proj_1".into(), None, [401, 401, 403, 404]),
        ("GET", "/api/v1/admin/reconciliation?from=2026-11-20&to=2026-11-21".into(), None, [401, 401, 403, 200]),
        ("GET", "/api/v1/admin/reconciliation.csv?from=2026-11-20&to=2026-11-21".into(), None, [401, 401, 403, 200]),
        (
            "POST",
            "/api/v1/admin/prices".into(),
            Some(json!({"model": "m-sec", "effective_from": "2026-01-01T00:00:00Z",
                        "per_million": {"input": "1"}, "source": "test"})),
            [401, 401, 403, 201],
        ),
        ("DELETE", "/api/v1/admin/prices/999999".into(), None, [401, 401, 403, 404]),
        (
            "POST",
            "/api/v1/budgets".into(),
            Some(json!({"scope": {"kind": "user", "id": "bob"}, "measure": "tokens", "amount": 100, "period": "day"})),
            [401, 401, 403, 201],
        ),
        ("GET", "/api/v1/budgets".into(), None, [401, 401, 200, 200]),
        ("GET", "/api/v1/budgets/999999".into(), None, [401, 401, 404, 404]),
        ("DELETE", "/api/v1/budgets/999999".into(), None, [401, 401, 404, 404]),
        // The gateway check takes a publisher key and nothing else.
        ("GET", "/api/v1/budgets/check?user=bob".into(), None, [401, 200, 401, 401]),
        ("GET", "/api/v1/admin/webhooks".into(), None, [401, 401, 403, 200]),
        (
            "POST",
            "/api/v1/admin/webhooks".into(),
            Some(json!({"name": "w", "url": "http://127.0.0.1:9/hook"})),
            [401, 401, 403, 201],
        ),
        ("DELETE", "/api/v1/admin/webhooks/nope".into(), None, [401, 401, 403, 404]),
        ("GET", "/api/v1/admin/webhooks/deliveries".into(), None, [401, 401, 403, 200]),
        ("POST", "/api/v1/admin/webhooks/deliveries/999999/retry".into(), None, [401, 401, 403, 404]),
        ("GET", format!("/api/v1/usage/overview?{RANGE}"), None, [401, 401, 200, 200]),
        ("GET", format!("/api/v1/usage/overview?{RANGE}&user=bob"), None, [401, 401, 403, 200]),
        ("GET", "/api/v1/teams".into(), None, [401, 401, 200, 200]),
        ("GET", "/api/v1/admin/teams".into(), None, [401, 401, 403, 200]),
        ("POST", "/api/v1/admin/teams".into(), Some(json!({"name": "sec-team"})), [401, 401, 403, 201]),
        ("GET", "/api/v1/admin/teams/nope".into(), None, [401, 401, 403, 404]),
        ("PATCH", "/api/v1/admin/teams/nope".into(), Some(json!({"name": "nope2"})), [401, 401, 403, 404]),
        ("PUT", "/api/v1/admin/teams/nope/members/bob".into(), Some(json!({"role": "member"})), [401, 401, 403, 404]),
        ("DELETE", "/api/v1/admin/teams/nope/members/bob".into(), None, [401, 401, 403, 404]),
        ("DELETE", "/api/v1/admin/teams/nope".into(), None, [401, 401, 403, 404]),
    ];
    // Every route the OpenAPI document lists is in this matrix, but those
    // that take no bearer credential at all (sign-in, ingest, the socket's
    // own handshake, operations), which their own suites cover.
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    let elsewhere =
        ["/api/v1/auth/", "/api/v1/events", "/api/v1/live", "/v1/traces", "/healthz", "/readyz", "/metrics"];
    for (template, ops) in doc["paths"].as_object().unwrap() {
        if elsewhere.iter().any(|e| template.starts_with(e)) {
            continue;
        }
        let parts: Vec<&str> = template.split('/').collect();
        for method in ops.as_object().unwrap().keys() {
            let covered = matrix.iter().any(|(m, path, _, _)| {
                let p: Vec<&str> = path.split('?').next().unwrap().split('/').collect();
                m.eq_ignore_ascii_case(method)
                    && p.len() == parts.len()
                    && p.iter().zip(&parts).all(|(a, b)| b.starts_with('{') || a == b)
            });
            assert!(covered, "{} {template} is not in the role matrix", method.to_uppercase());
        }
    }
    for (method, path, body, expected) in &matrix {
        for (i, caller) in [Caller::Anonymous, Caller::Publisher, Caller::Alice, Caller::Admin].into_iter().enumerate()
        {
            let before = audit_count(&env).await;
            let mut req = app.http.request(method.parse().unwrap(), app.url(path));
            req = match caller {
                Caller::Anonymous => req,
                Caller::Publisher => req.bearer_auth(&publisher_key),
                Caller::Alice => req.bearer_auth(&alice),
                Caller::Admin => req.bearer_auth(&admin),
            };
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
            let text = resp.text().await.unwrap();
            assert_eq!(status, expected[i], "{caller:?} {method} {path}: {text}");
            // Whatever a viewer gets back is theirs alone.
            if matches!(caller, Caller::Alice) && status == 200 {
                assert!(!text.contains("bob"), "{method} {path} leaked Bob's data to Alice: {text}");
            }
            // Exactly one audit entry, for this very request, with its outcome.
            assert_eq!(audit_count(&env).await, before + 1, "{caller:?} {method} {path}: one audit entry");
            let (actor, outcome, st): (Option<String>, String, i32) =
                sqlx::query_as("select actor, outcome, status from audit_log where request_id = $1")
                    .bind(&request_id)
                    .fetch_one(&env.pool)
                    .await
                    .unwrap();
            assert_eq!(st as u16, status);
            let gateway = path.starts_with("/api/v1/budgets/check");
            let expected_actor = match caller {
                // The gateway check records the key that asked.
                Caller::Publisher if gateway => {
                    assert!(actor.as_deref().is_some_and(|a| a.starts_with("key:tu_")), "{actor:?}");
                    actor.as_deref()
                }
                Caller::Alice => Some("alice"),
                Caller::Admin => Some("root"),
                _ => None,
            };
            assert_eq!(actor.as_deref(), expected_actor, "{caller:?} {method} {path}");
            let expected_outcome = match status {
                200 | 201 | 202 | 204 => "ok",
                401 => "unauthenticated",
                403 => "denied",
                _ => "rejected",
            };
            assert_eq!(outcome, expected_outcome);
        }
    }

    // The numbers: Alice sees her 10 tokens, the admin sees Bob's 500.
    let (_, s) = app.get(&alice, &series_own).await;
    assert_eq!((s["user"].as_str(), s["total"]["input_tokens"].as_i64()), (Some("alice"), Some(10)));
    let (_, s) = app.get(&admin, &series_bob).await;
    assert_eq!((s["user"].as_str(), s["total"]["input_tokens"].as_i64()), (Some("bob"), Some(500)));
    // The data retrieval is on the record with whose data, what was asked and how many rows.
    let (subject, params, rows): (Option<String>, String, Option<i64>) = sqlx::query_as(
        "select subject, params, rows from audit_log where action = 'usage.series' and actor = 'root' order by seq desc limit 1",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(subject.as_deref(), Some("bob"));
    assert!(params.contains("\"granularity\":\"hour\""), "{params}");
    assert_eq!(rows, Some(24));
    // And Bob can see that the admin looked at his usage; Alice never did.
    let bob = app.login("bob", "bob-password").await;
    let (status, views) = app.get(&bob, "/api/v1/audit/views").await;
    assert_eq!(status, 200);
    let by = |outcome: &str| -> Vec<String> {
        views
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["outcome"] == outcome)
            .filter_map(|v| v["actor"].as_str().map(str::to_owned))
            .collect()
    };
    let (viewed, denied) = (by("ok"), by("denied"));
    assert!(viewed.contains(&"root".to_owned()) && !viewed.iter().any(|a| a == "alice" || a == "bob"), "{viewed:?}");
    assert!(
        denied.iter().all(|a| a == "alice") && !denied.is_empty(),
        "alice's refused attempts are listed: {denied:?}"
    );

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_detects_edits_deletions_and_reordering_and_rows_cannot_be_changed() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let token = app.login("alice", "alice-password").await;
    for _ in 0..9 {
        assert_eq!(app.get(&token, "/api/v1/me").await.0, 200);
    }
    let report = tokenusage_api::audit::verify(&env.pool).await.unwrap();
    assert_eq!(report.entries, 10);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let out = common::tokenusage(&env, &["audit", "verify"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the chain is intact"));

    // The application's connection cannot change or remove entries.
    for sql in [
        "update audit_log set actor = 'nobody' where seq = 3",
        "delete from audit_log where seq = 3",
        "truncate audit_log",
    ] {
        let err = sqlx::query(sql).execute(&env.pool).await.unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }

    // Someone with the power to switch the guard off edits, deletes and reorders.
    let tamper = |sql: &'static str| {
        let pool = env.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("alter table audit_log disable trigger user").execute(&mut *tx).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut *tx).await.unwrap();
            sqlx::query("alter table audit_log enable trigger user").execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    tamper("update audit_log set params = '{\"from\":\"elsewhere\"}' where seq = 3").await;
    let r = tokenusage_api::audit::verify(&env.pool).await.unwrap();
    assert!(r.problems.iter().any(|p| p.contains("entry 3: its contents were edited")), "{:?}", r.problems);

    tamper("delete from audit_log where seq = 6").await;
    let r = tokenusage_api::audit::verify(&env.pool).await.unwrap();
    assert!(r.problems.iter().any(|p| p.contains("entries 6..6 are missing")), "{:?}", r.problems);

    // Swap entries 8 and 9 (their seq numbers), keeping every row's own hash.
    tamper(
        "update audit_log set seq = -8 where seq = 8; update audit_log set seq = 8 where seq = 9;
         update audit_log set seq = 9 where seq = -8",
    )
    .await;
    let r = tokenusage_api::audit::verify(&env.pool).await.unwrap();
    assert!(r.problems.iter().any(|p| p.contains("entry 8: does not follow")), "{:?}", r.problems);
    let out = common::tokenusage(&env, &["audit", "verify"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN"));

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_not_served_when_the_audit_entry_cannot_be_written() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    sqlx::query(
        "insert into usage_hour (user_id, activity, model, bucket, input_tokens, output_tokens, events)
         values ('alice', 'chat', 'm1', '2026-11-20T09:00:00Z', 12345, 1, 1)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let token = app.login("alice", "alice-password").await;
    let path = "/api/v1/usage/series?from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z";
    assert_eq!(app.get(&token, path).await.0, 200);

    sqlx::query("alter table audit_log rename to audit_log_away").execute(&env.pool).await.unwrap();
    let r = app.http.get(app.url(path)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body = r.text().await.unwrap();
    assert!(body.contains("audit_unavailable") && !body.contains("12345"), "{body}");
    // Sign-in is audited too, so it fails closed as well.
    let r = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);

    sqlx::query("alter table audit_log_away rename to audit_log").execute(&env.pool).await.unwrap();
    let (status, body) = app.get(&token, path).await;
    assert_eq!((status, body["total"]["input_tokens"].as_i64()), (200, Some(12345)));
    assert!(tokenusage_api::audit::verify(&env.pool).await.unwrap().problems.is_empty());

    app.stop().await;
    env.cleanup().await;
}
