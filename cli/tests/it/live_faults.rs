//! Live views through faults: WebSocket = REST after a shuffled stream with
//! duplicates, late events and a server restart, and a disabled user cut off.

use std::time::Duration;

use serde_json::json;
use tokenusage_api::Role;

use tokenusage_contract::UsageEvent;

use crate::common::{self, TestApp, TestEnv};
use crate::live::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_equals_rest_after_shuffled_duplicated_and_late_events_and_after_a_restart() {
    let env = TestEnv::new().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn(&env).await;
    let token = app.login("alice", "alice-password").await;
    let view = json!({"from": "2026-11-20", "granularity": "hour", "tz": "Asia/Kathmandu", "group": "activity"});
    let mut ws = connect(&app, Some(&token), None).await.unwrap();
    send(&mut ws, json!({"type": "subscribe", "id": "v", "view": view})).await;
    let mut mirror = Mirror::default();
    let snap = next_of(&mut ws, &["snapshot"], Duration::from_secs(10)).await.unwrap();
    assert_eq!(snap["live"], true);
    mirror.apply(&snap);

    // 300 events over the first day, shuffled, a third of them sent twice,
    // and the earliest hours sent last ("late").
    let mut events: Vec<UsageEvent> = (0..300)
        .map(|i| {
            let at = t("2026-11-19T18:15:00Z") + chrono::Duration::minutes(i * 4);
            ev(&format!("w{i}"), "alice", &at.to_rfc3339(), if i % 2 == 0 { "chat" } else { "embed" }, 10 + i as u64)
        })
        .collect();
    let expected: i64 = events.iter().map(|e| (e.input_tokens + e.output_tokens) as i64).sum();
    let dups: Vec<UsageEvent> = events.iter().step_by(3).cloned().collect();
    let late: Vec<UsageEvent> = events.drain(..40).collect();
    use rand::seq::SliceRandom;
    events.extend(dups);
    events.shuffle(&mut rand::rng());
    common::produce(&env, &events).await;
    common::produce(&env, &late).await;

    assert!(
        follow(&mut ws, &mut mirror, expected, Duration::from_secs(60)).await,
        "live total {} never reached {expected}",
        mirror.sum()
    );
    let rest = rest_totals(&app, &token, &mirror.to).await;
    assert_eq!(mirror.starts, rest.0, "same buckets");
    assert_eq!(mirror.totals, rest.1, "WebSocket equals REST, bucket by bucket");

    // Restart the server: the socket is told (1001), and a new subscription
    // to the new process starts from the truth.
    let stopping = tokio::spawn(async move { close_code(&mut ws, Duration::from_secs(30)).await });
    app.stop().await;
    assert_eq!(stopping.await.unwrap(), Some(1001));
    let app = TestApp::spawn(&env).await;
    let token = app.login("alice", "alice-password").await;
    let mut ws = connect(&app, Some(&token), None).await.unwrap();
    send(&mut ws, json!({"type": "subscribe", "id": "v", "view": view})).await;
    let mut again = Mirror::default();
    again.apply(&next_of(&mut ws, &["snapshot"], Duration::from_secs(10)).await.unwrap());
    let rest = rest_totals(&app, &token, &again.to).await;
    assert_eq!(again.sum(), expected);
    assert_eq!(again.totals, rest.1);
    app.stop().await;
    env.cleanup().await;
}

async fn rest_totals(app: &TestApp, token: &str, to: &str) -> (Vec<String>, Vec<i64>) {
    let to = to.replace('+', "%2B");
    let (status, body) = app
        .get(
            token,
            &format!("/api/v1/usage/series?from=2026-11-20&to={to}&granularity=hour&tz=Asia/Kathmandu&group=activity"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let points = body["points"].as_array().unwrap();
    (
        points.iter().map(|p| p["start"].as_str().unwrap().to_owned()).collect(),
        points.iter().map(|p| p["total_tokens"].as_i64().unwrap()).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_is_disconnected_within_a_minute() {
    let env = TestEnv::database_only().await;
    let (app, alice, _) = setup(&env).await;
    let mut ws = connect(&app, Some(&alice), None).await.unwrap();
    send(&mut ws, json!({"type": "subscribe", "id": "s", "view": {"from": "2026-11-20"}})).await;
    assert!(next_of(&mut ws, &["snapshot"], Duration::from_secs(5)).await.is_some());
    let out = common::tokenusage(&env, &["users", "disable", "alice"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started = std::time::Instant::now();
    let code = close_code(&mut ws, Duration::from_secs(60)).await;
    assert_eq!(code, Some(4003), "closed as disabled after {:?}", started.elapsed());
    app.stop().await;
    env.cleanup().await;
}
