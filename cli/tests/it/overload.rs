//! Overload is a 503 with `Retry-After`, never a 500: an API whose pool has
//! no connection free within its acquire timeout, or whose statement waits
//! on a lock past its timeout, tells the client to come back, the same way
//! on every route (the class is the database's "not now",
//! `plumbing::failure::is_overload`, wherever it surfaces).

use std::time::Duration;

use tokenusage_api::Role;
use tokenusage_plumbing::DatabaseArgs;

use crate::common::{TestApp, TestEnv, test_api_args};

const SUMMARY: &str = "/api/v1/usage/summary?from=2026-11-01&to=2026-11-02&granularity=hour";
const ROLLUPS: &str = "lock table usage_hour, usage_minute, usage_quarter_hour, usage_day in access exclusive mode";

/// (status, `Retry-After`, error code) of one summary request.
async fn summary(http: reqwest::Client, url: String, token: String) -> (u16, Option<String>, String) {
    let r = http.get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value = r.json().await.unwrap();
    (status, retry, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starved_pool_and_a_lock_timeout_answer_503_with_retry_after_and_then_recover() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    // The API's pool, shared with this test, which takes every connection
    // it has: the API waits at most a second for one.
    let mut small = env.shallow_clone();
    small.pool =
        DatabaseArgs { max_connections: 8, acquire_timeout_secs: 1, ..env.db.clone() }.connect().await.unwrap();
    let app = TestApp::spawn_api(&small, test_api_args()).await;
    let token = app.login("alice", "alice-password").await;
    assert_eq!(app.get(&token, SUMMARY).await.0, 200, "served while connections are free");
    let mut held = Vec::new();
    while let Ok(Ok(c)) = tokio::time::timeout(Duration::from_millis(500), small.pool.acquire()).await {
        held.push(c);
    }
    assert!(!held.is_empty() && small.pool.num_idle() == 0, "the pool is exhausted ({} held)", held.len());
    let answers: Vec<_> =
        futures::future::join_all((0..4).map(|_| summary(app.http.clone(), app.url(SUMMARY), token.clone()))).await;
    for (status, retry, code) in &answers {
        assert_eq!(*status, 503, "a starved pool is an overload, not a bug: {answers:?}");
        assert!(retry.is_some(), "every 503 says when to retry: {answers:?}");
        // The handler's query or, as the audit trail shares the pool and
        // also finds no connection, the audit's refusal: both "not now".
        assert!(["unavailable", "audit_unavailable"].contains(&code.as_str()), "{answers:?}");
    }
    drop(held);
    assert_eq!(app.get(&token, SUMMARY).await.0, 200, "and the API recovers by itself");
    app.stop().await;
    drop(small);

    // A statement that gives up waiting for a lock (55P03), on an API
    // with connections to spare: the handler's own error, 503 and
    // `unavailable`, and the refusal is on the record.
    sqlx::query(&format!("alter database {} set lock_timeout = '300ms'", env.db_name()))
        .execute(&env.pool)
        .await
        .unwrap();
    let mut fresh = env.shallow_clone();
    fresh.pool = env.db.connect().await.unwrap();
    let app = TestApp::spawn_api(&fresh, test_api_args()).await;
    let mut holder = env.pool.begin().await.unwrap();
    sqlx::query(ROLLUPS).execute(&mut *holder).await.unwrap();
    let (status, retry, code) = summary(app.http.clone(), app.url(SUMMARY), token.clone()).await;
    assert_eq!((status, retry.as_deref(), code.as_str()), (503, Some("2"), "unavailable"), "a lock timeout");
    holder.commit().await.unwrap();
    let recorded: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where status = 503 and endpoint like '/api/v1/usage/summary%'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert!(recorded >= 1, "the 503 is in the audit trail");
    assert_eq!(app.get(&token, SUMMARY).await.0, 200);
    app.stop().await;
    drop(fresh);
    env.cleanup().await;
}
