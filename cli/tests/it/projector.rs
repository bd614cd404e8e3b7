//! The projector under faults, against the real broker and database: totals
//! equal the sum over distinct produced events whatever happens.

use crate::common;

use std::time::Duration;

use common::{TestEnv, expected_totals, produce, rollup_totals, spawn_projector, synthetic_events, wait_for_totals};
use rand::seq::SliceRandom;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

/// Starts `tokenusage projector` as a separate process, for kill -9.
pub(crate) fn projector_process(env: &TestEnv, log: &str) -> std::process::Child {
    let args = env.projector_args();
    std::process::Command::new(env!("CARGO_BIN_EXE_tokenusage"))
        .arg("projector")
        .env("DATABASE_URL", env.db.url.expose_secret())
        .env("KAFKA_BOOTSTRAP_SERVERS", &env.kafka.bootstrap_servers)
        .env("KAFKA_OPTIONS", "broker.address.family=v4")
        .env("TOKENUSAGE_TOPIC", &env.kafka.topic)
        .env("TOKENUSAGE_CONSUMER_GROUP", &args.group)
        .env("TOKENUSAGE_KAFKA_SESSION_TIMEOUT_MS", "6000")
        // Tansu 0.6.0 never evicts a kill -9'd group member, so its
        // partitions would stay assigned to a ghost; fixed assignment
        // exercises the same crash-and-resume path (docs/DECISIONS.md).
        .env("TOKENUSAGE_ASSIGN_PARTITIONS", "all")
        .env("TOKENUSAGE_BATCH_MAX_EVENTS", "500")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(std::env::temp_dir().join(log)).unwrap())
        .spawn()
        .expect("start tokenusage projector")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_batch_repeatedly_loses_and_doubles_nothing() {
    let env = TestEnv::new().await;
    let mut events = synthetic_events("k9", 30_000, 50);
    // Re-sent duplicates mixed in, as retrying publishers produce them.
    let dups: Vec<_> = events.iter().step_by(7).cloned().collect();
    events.extend(dups);
    let want = expected_totals(&events);

    // Publish in the background while projectors are started and killed.
    let producer_env = env.shallow_clone();
    let evs = events.clone();
    let publishing = tokio::spawn(async move {
        for part in evs.chunks(3000) {
            produce(&producer_env, part).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    let mut kills = 0;
    for round in 0..5u64 {
        let mut child = projector_process(&env, &format!("tu-projector-{round}.log"));
        // Long enough to join the group and commit some batches, short
        // enough to die with a batch in flight.
        tokio::time::sleep(Duration::from_millis(2500 + round * 700)).await;
        child.kill().expect("kill -9");
        child.wait().unwrap();
        kills += 1;
    }
    publishing.await.unwrap();
    let progress = rollup_totals(&env.pool, "usage_minute", None).await;
    assert!(progress.2 > 0, "the killed projectors committed nothing; the test did not exercise restarts");

    let mut last = projector_process(&env, "tu-projector-last.log");
    let ok = wait_for_totals(&env.pool, want, Duration::from_secs(120)).await;
    last.kill().unwrap();
    last.wait().unwrap();
    if !ok {
        diagnose(&env).await;
    }
    assert!(
        ok,
        "after {kills} kills: minute rollups {:?}, want {want:?}",
        rollup_totals(&env.pool, "usage_minute", None).await
    );
    let keys: i64 = sqlx::query_scalar("select count(*) from event_keys").fetch_one(&env.pool).await.unwrap();
    assert_eq!(keys, want.2);
    env.cleanup().await;
}

/// On failure: which produced events are missing from the rollups, and
/// where they sit in the topic relative to the stored offsets.
pub(crate) async fn diagnose(env: &TestEnv) {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let mut cfg = env.kafka.client_config();
    cfg.set("group.id", "diagnose").set("enable.auto.commit", "false");
    let c: StreamConsumer = cfg.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&env.kafka.topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let counted: std::collections::HashSet<String> =
        sqlx::query_scalar("select event_id from event_keys").fetch_all(&env.pool).await.unwrap().into_iter().collect();
    let mut missing = Vec::new();
    let mut total = 0;
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), c.recv()).await {
        total += 1;
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
        let id = v["event_id"].as_str().unwrap_or("").to_owned();
        if !counted.contains(&id) {
            missing.push((m.partition(), m.offset(), id));
        }
    }
    let offsets: Vec<(i32, i64, i64)> =
        sqlx::query_as("select partition, next_offset, epoch from projector_offsets order by 1")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    eprintln!(
        "DIAG topic records {total}, missing {} (first: {:?}), stored offsets {offsets:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_rebalancing_never_double_count() {
    let env = TestEnv::new().await;
    let events = synthetic_events("rb", 20_000, 40);
    let want = expected_totals(&events);
    let (a_stop, b_stop) = (CancellationToken::new(), CancellationToken::new());
    let a = spawn_projector(&env, a_stop.clone());
    produce(&env, &events[..6000]).await;
    // B joins: the partitions are split, A's unfinished work is fenced.
    let b = spawn_projector(&env, b_stop.clone());
    produce(&env, &events[6000..13_000]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A leaves: B takes everything over from the stored offsets.
    a_stop.cancel();
    a.await.unwrap();
    produce(&env, &events[13_000..]).await;
    assert!(
        wait_for_totals(&env.pool, want, Duration::from_secs(120)).await,
        "{:?} != {want:?}",
        rollup_totals(&env.pool, "usage_minute", None).await
    );
    let epochs: i64 =
        sqlx::query_scalar("select coalesce(max(epoch), 0) from projector_offsets").fetch_one(&env.pool).await.unwrap();
    assert!(epochs >= 2, "partitions were claimed more than once (epoch {epochs})");
    b_stop.cancel();
    b.await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_dead_letters_and_does_not_stall_its_partition() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let env = TestEnv::new().await;
    let stop = CancellationToken::new();
    let projector = spawn_projector(&env, stop.clone());
    let raw: FutureProducer = env.kafka.client_config().create().unwrap();
    let poison = b"{\"event_id\": 42, this is not json";
    // Same key as the good events after it, so the same partition.
    raw.send(FutureRecord::to(&env.kafka.topic).key("u0").payload(&poison[..]), Duration::from_secs(5)).await.unwrap();
    let mut bad_field = synthetic_events("pz", 1, 1)[0].clone();
    bad_field.event_id = "bad".into();
    let mut v = serde_json::to_value(&bad_field).unwrap();
    v["input_tokens"] = serde_json::json!(-1);
    raw.send(FutureRecord::to(&env.kafka.topic).key("u0").payload(&v.to_string()), Duration::from_secs(5))
        .await
        .unwrap();
    let good = synthetic_events("ok", 100, 1);
    produce(&env, &good).await;
    assert!(wait_for_totals(&env.pool, expected_totals(&good), Duration::from_secs(60)).await);
    let dead: Vec<(Vec<u8>, String)> = sqlx::query_as("select payload, error from dead_letters order by kafka_offset")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].0, poison.to_vec(), "the raw bytes are kept unmodified");
    assert!(dead[0].1.contains("not valid JSON"), "{}", dead[0].1);
    assert_eq!(dead[1].1, "input_tokens: must not be negative, got -1");
    stop.cancel();
    projector.await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_late_and_duplicated_input_gives_the_same_rollups_as_sorted_input() {
    let env = TestEnv::new().await;
    let stop = CancellationToken::new();
    let projector = spawn_projector(&env, stop.clone());
    let base = synthetic_events("sh", 5000, 1);
    let mut sorted: Vec<_> = base
        .iter()
        .cloned()
        .map(|mut e| {
            e.user_id = "sorted".into();
            e.source = "s1".into();
            e
        })
        .collect();
    sorted.sort_by_key(|e| e.occurred_at);
    let mut shuffled: Vec<_> = base
        .iter()
        .cloned()
        .map(|mut e| {
            e.user_id = "shuffled".into();
            e.source = "s2".into();
            e
        })
        .collect();
    let extra: Vec<_> = shuffled.iter().step_by(5).cloned().collect();
    shuffled.extend(extra);
    shuffled.shuffle(&mut rand::rng());
    produce(&env, &sorted).await;
    produce(&env, &shuffled).await;
    let want = expected_totals(&sorted);
    let both = (want.0 * 2, want.1 * 2, want.2 * 2);
    assert!(wait_for_totals(&env.pool, both, Duration::from_secs(60)).await);
    for table in ["usage_minute", "usage_quarter_hour", "usage_hour"] {
        let sql = format!(
            "select bucket, activity, model, input_tokens, output_tokens, events from {table} where user_id = $1 order by 1, 2, 3"
        );
        let a: Vec<(chrono::DateTime<chrono::Utc>, String, String, i64, i64, i64)> =
            sqlx::query_as(&sql).bind("sorted").fetch_all(&env.pool).await.unwrap();
        let b: Vec<(chrono::DateTime<chrono::Utc>, String, String, i64, i64, i64)> =
            sqlx::query_as(&sql).bind("shuffled").fetch_all(&env.pool).await.unwrap();
        assert!(!a.is_empty());
        assert_eq!(a, b, "{table} differs between sorted and shuffled input");
    }
    stop.cancel();
    projector.await.unwrap();
    env.cleanup().await;
}

pub(crate) type RollupRow = (String, chrono::DateTime<chrono::Utc>, String, String, i64, i64, i64);
