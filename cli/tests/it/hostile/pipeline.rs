//! Bad records on the way in and a database that refuses or stalls: the
//! pipeline keeps counting everything it can and says when it cannot.

use std::time::Duration;

use serde_json::{Value, json};
use tokenusage_api::Role;
use tokenusage_schema::keys;

use super::*;
use crate::common::{TestApp, TestEnv, eventually, expected_totals, produce, synthetic_events, wait_for_totals};

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
