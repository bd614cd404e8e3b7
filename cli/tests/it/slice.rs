//! The thin vertical slice, end to end: `tokenusage publish` -> Kafka ->
//! projector -> PostgreSQL rollups -> authenticated `GET` on the API.

use crate::common;

use std::time::Duration;

use common::{TestApp, TestEnv, event_line, eventually, tokenusage};
use tokenusage_api::Role;

const FROM: &str = "2026-11-20T00:00:00Z";
const TO: &str = "2026-11-21T00:00:00Z";

async fn alice_total(app: &TestApp, token: &str) -> Option<(i64, i64, i64)> {
    let (status, body) = app.get(token, &format!("/api/v1/usage/series?from={FROM}&to={TO}&granularity=hour")).await;
    assert_eq!(status, 200, "{body}");
    let t = &body["total"];
    Some((t["input_tokens"].as_i64()?, t["output_tokens"].as_i64()?, t["events"].as_i64()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_reach_the_api_as_per_user_rollups() {
    let env = TestEnv::new().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn(&env).await;

    let input = [
        event_line("e1", "alice", "2026-11-20T09:05:00Z", "chat", "gpt-4o-mini", 100, 10),
        event_line("e2", "alice", "2026-11-20T09:59:59Z", "embedding", "text-embed-3", 1000, 0),
        event_line("e3", "alice", "2026-11-20T13:30:00+01:00", "chat", "gpt-4o-mini", 7, 3),
        event_line("e4", "bob", "2026-11-20T09:10:00Z", "chat", "gpt-4o-mini", 50_000, 50_000),
    ]
    .join("\n");
    let out = tokenusage(&env, &["publish", "-", "--source", "slice-test"], Some(&input));
    assert!(out.status.success(), "publish failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 accepted, 0 rejected"));

    let token = app.login("alice", "alice-password").await;
    let total = eventually(Duration::from_secs(60), || async {
        alice_total(&app, &token).await.filter(|t| *t == (1107, 13, 3))
    })
    .await;
    assert_eq!(total, Some((1107, 13, 3)), "alice's rollup never matched the published events");

    // The hourly series puts e1 and e2 in 09:00 and e3 (12:30 UTC) in 12:00.
    let (_, body) = app.get(&token, &format!("/api/v1/usage/series?from={FROM}&to={TO}&granularity=hour")).await;
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 24);
    assert_eq!(points[9]["input_tokens"], 1100);
    assert_eq!(points[12]["input_tokens"], 7);
    assert_eq!(points[12]["start"], "2026-11-20T12:00:00Z");

    // The breakdown splits by activity and model, heaviest first.
    let (_, b) = app.get(&token, &format!("/api/v1/usage/breakdown?from={FROM}&to={TO}")).await;
    let rows = b["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["activity"].as_str(), rows[0]["input_tokens"].as_i64()), (Some("embedding"), Some(1000)));
    assert_eq!((rows[1]["activity"].as_str(), rows[1]["input_tokens"].as_i64()), (Some("chat"), Some(107)));

    // Alice cannot read Bob's usage, and nobody reads anything without a token.
    let (status, _) = app.get(&token, &format!("/api/v1/usage/series?from={FROM}&to={TO}&user=bob")).await;
    assert_eq!(status, 403);
    let (status, _) = app.get("not-a-token", &format!("/api/v1/usage/series?from={FROM}&to={TO}")).await;
    assert_eq!(status, 401);

    // The projector's work shows in /metrics, with no user ids as labels.
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tokenusage_projector_events_counted_total"), "{metrics}");
    assert!(metrics.contains("tokenusage_projector_commit_seconds"), "{metrics}");
    assert!(!metrics.contains("alice"), "user ids must never be metric labels");

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_published_twice_is_counted_once() {
    let env = TestEnv::new().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn(&env).await;
    let token = app.login("alice", "alice-password").await;

    let first = event_line("dup-1", "alice", "2026-11-20T10:00:00Z", "chat", "m", 40, 2);
    let out = tokenusage(&env, &["publish", "-", "--source", "dup-test"], Some(&first));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen =
        eventually(Duration::from_secs(60), || async { alice_total(&app, &token).await.filter(|t| t.2 == 1) }).await;
    assert_eq!(seen, Some((40, 2, 1)));

    // Re-publish the same event in a new run, followed by a new one: once the
    // new one is counted, the duplicate has certainly been processed too.
    let second = format!("{first}\n{}", event_line("dup-2", "alice", "2026-11-20T11:00:00Z", "chat", "m", 5, 1));
    let out = tokenusage(&env, &["publish", "-", "--source", "dup-test"], Some(&second));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let total =
        eventually(Duration::from_secs(60), || async { alice_total(&app, &token).await.filter(|t| t.2 >= 2) }).await;
    assert_eq!(total, Some((45, 3, 2)), "the duplicate was counted twice");

    let keys: i64 = sqlx::query_scalar("select count(*) from event_keys").fetch_one(&env.pool).await.unwrap();
    assert_eq!(keys, 2);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reports_each_bad_line_with_number_field_and_reason() {
    let env = TestEnv::new().await;
    let good = event_line("ok-1", "alice", "2026-11-20T10:00:00Z", "chat", "m", 1, 1);
    let bad_tokens = event_line("bad-1", "alice", "2026-11-20T10:00:00Z", "chat", "m", -3, 1);
    let input = format!("{good}\nnot json at all\n{bad_tokens}\n");

    // Default policy: publish the good lines, report every bad one, exit 2.
    let out = tokenusage(&env, &["publish", "-"], Some(&input));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 2: (event): not valid JSON"), "{stderr}");
    assert!(stderr.contains("line 3: input_tokens: must not be negative, got -3"), "{stderr}");
    assert!(stderr.contains("1 accepted, 2 rejected"), "{stderr}");

    // --all-or-nothing: the same input publishes nothing.
    let out = tokenusage(&env, &["publish", "-", "--all-or-nothing"], Some(&input));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing was published"), "{stderr}");
    assert!(stderr.contains("0 accepted, 2 rejected"), "{stderr}");
    env.cleanup().await;
}
