//! Sign-in sessions: refresh-token rotation, logout, reuse detection,
//! disabling, and password guessing limited and audited.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokenusage_api::Role;

use crate::common::{self, TestApp, TestEnv, eventually, test_api_args};

/// The session cookie's value from a response.
pub(crate) fn session_cookie(resp: &reqwest::Response) -> Option<(String, String)> {
    resp.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let value = c.strip_prefix("tu_refresh=")?.split(';').next()?.to_owned();
        Some((value, c.to_owned()))
    })
}

pub(crate) async fn refresh(app: &TestApp, cookie: &str) -> reqwest::Response {
    refresh_at(&app.http, app.addr, cookie).await
}

/// A refresh at the API listening on `addr` (another process's).
pub(crate) async fn refresh_at(http: &reqwest::Client, addr: std::net::SocketAddr, cookie: &str) -> reqwest::Response {
    http.post(format!("http://{addr}/api/v1/auth/refresh"))
        .header("cookie", format!("tu_refresh={cookie}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_rotate_end_on_logout_and_reuse_and_disabling_locks_out() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;

    let login = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let (first, raw) = session_cookie(&login).expect("a session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/v1/auth"] {
        assert!(raw.contains(attr), "cookie lacks {attr}: {raw}");
    }
    let body: Value = login.json().await.unwrap();
    assert!(body["expires_in"].as_u64().unwrap() <= 3600, "access tokens are short-lived");
    // Only a hash of the refresh token is stored.
    let stored: i64 = sqlx::query_scalar("select count(*) from refresh_tokens where token_hash = $1")
        .bind(Sha256::digest(first.as_bytes()).to_vec())
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);

    // Refresh: a new access token and a rotated cookie.
    let r = refresh(&app, &first).await;
    assert_eq!(r.status(), 200);
    let (second, _) = session_cookie(&r).unwrap();
    assert_ne!(first, second);
    let token: Value = r.json().await.unwrap();
    assert_eq!(app.get(token["access_token"].as_str().unwrap(), "/api/v1/me").await.0, 200);

    // Another site cannot drive the refresh.
    let r = app
        .http
        .post(app.url("/api/v1/auth/refresh"))
        .header("cookie", format!("tu_refresh={second}"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The first cookie comes back well after it was rotated: a copy is in
    // someone else's hands, so the whole session ends.
    sqlx::query("update refresh_tokens set rotated_at = now() - interval '1 minute' where rotated_at is not null")
        .execute(&env.pool)
        .await
        .unwrap();
    assert_eq!(refresh(&app, &first).await.status(), 401);
    assert_eq!(refresh(&app, &second).await.status(), 401, "the session was revoked");

    // Logout ends a session.
    let again = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    let (third, _) = session_cookie(&again).unwrap();
    let access: Value = again.json().await.unwrap();
    let access = access["access_token"].as_str().unwrap().to_owned();
    let r = app
        .http
        .post(app.url("/api/v1/auth/logout"))
        .header("cookie", format!("tu_refresh={third}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(refresh(&app, &third).await.status(), 401);

    // Disabling the user locks out a still-valid access token within seconds.
    assert_eq!(app.get(&access, "/api/v1/me").await.0, 200);
    let out = common::tokenusage(&env, &["users", "disable", "alice"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let locked =
        eventually(Duration::from_secs(20), || async { (app.get(&access, "/api/v1/me").await.0 == 401).then_some(()) })
            .await;
    assert!(locked.is_some(), "a disabled user's token kept working");
    let r = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"username": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_rate_limited_and_audited() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let mut args = test_api_args();
    args.login_attempts_per_minute = 5;
    let app = TestApp::spawn_api(&env, args).await;
    let attempt = |pw: &'static str| {
        app.http.post(app.url("/api/v1/auth/login")).json(&json!({"username": "alice", "password": pw})).send()
    };
    for _ in 0..5 {
        assert_eq!(attempt("wrong").await.unwrap().status(), 401);
    }
    let r = attempt("alice-password").await.unwrap();
    assert_eq!(r.status(), 429, "the right password does not help once the budget is spent");
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let (failures, limited): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where outcome = 'unauthenticated'), count(*) filter (where outcome = 'rate_limited')
         from audit_log where action = 'auth.login' and actor = 'alice'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!((failures, limited), (5, 1));
    // The password is never on the record.
    let leaked: i64 =
        sqlx::query_scalar("select count(*) from audit_log where params like '%password%' or params like '%wrong%'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(leaked, 0);

    app.stop().await;
    env.cleanup().await;
}
