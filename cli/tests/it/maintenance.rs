//! Operating on counted data: replay and verify, dead letters and their
//! re-drive, raw-event retention, fencing, and the post-commit notices.

use std::time::Duration;

use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::common::{
    self, TestEnv, expected_totals, produce, rollup_totals, spawn_projector, synthetic_events, wait_for_totals,
};
use crate::projector::RollupRow;

async fn snapshot(pool: &sqlx::PgPool, table: &str) -> Vec<RollupRow> {
    let sql = format!(
        "select user_id, bucket, activity, model, input_tokens, output_tokens, events from {table} order by 1, 2, 3, 4"
    );
    sqlx::query_as(&sql).fetch_all(pool).await.unwrap()
}

fn cli(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenusage"))
        .args(args)
        .env("DATABASE_URL", env.db.url.expose_secret())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_range_gives_exactly_the_live_rollups_and_verify_finds_drift() {
    let env = TestEnv::new().await;
    let stop = CancellationToken::new();
    let projector = spawn_projector(&env, stop.clone());
    let events = synthetic_events("rp", 8000, 5);
    produce(&env, &events).await;
    assert!(wait_for_totals(&env.pool, expected_totals(&events), Duration::from_secs(60)).await);
    stop.cancel();
    projector.await.unwrap();
    let live: Vec<_> =
        futures::future::join_all(["usage_minute", "usage_quarter_hour", "usage_hour"].map(|t| snapshot(&env.pool, t)))
            .await;

    let (code, out) = cli(&env, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no drift"), "{out}");

    // Damage the rollups: change a row, delete a row, add a row.
    sqlx::query(
        // Rows are named by their key, never by ctid (on a TimescaleDB
        // hypertable a ctid is unique only within one chunk).
        "update usage_minute set input_tokens = input_tokens + 5 \
         where (user_id, bucket, activity, model, source, project) = \
               (select user_id, bucket, activity, model, source, project from usage_minute limit 1)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "delete from usage_hour where (user_id, bucket, activity, model, source, project) = \
         (select user_id, bucket, activity, model, source, project from usage_hour where user_id = 'u1' limit 1)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query("insert into usage_quarter_hour values ('u2', '2026-11-20T05:00:00Z', 'ghost', 'm', 1, 1, 1)")
        .execute(&env.pool)
        .await
        .unwrap();
    let (code, out) = cli(&env, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DRIFT"), "{out}");

    // A dry run reports and changes nothing.
    let (code, out) = cli(&env, &["replay", "--from", "2026-11-20", "--to", "2026-11-21", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("would be rewritten"), "{out}");
    assert_ne!(snapshot(&env.pool, "usage_minute").await, live[0]);

    // The replay repairs exactly; a second one finds nothing to do.
    let (code, out) = cli(&env, &["replay", "--from", "2026-11-20T00:00:00Z", "--to", "2026-11-21T00:00:00Z"]);
    assert_eq!(code, 0, "{out}");
    for (i, t) in ["usage_minute", "usage_quarter_hour", "usage_hour"].iter().enumerate() {
        assert_eq!(snapshot(&env.pool, t).await, live[i], "{t} after replay differs from the live rollups");
    }
    let (_, out) = cli(&env, &["replay", "--from", "2026-11-20", "--to", "2026-11-21"]);
    assert!(out.contains("already match"), "{out}");

    // Replaying one user touches only that user.
    sqlx::query("update usage_hour set events = events + 1 where user_id in ('u3', 'u4')")
        .execute(&env.pool)
        .await
        .unwrap();
    cli(&env, &["replay", "--from", "2026-11-20", "--to", "2026-11-21", "--user", "u3"]);
    let (code, out) = cli(&env, &["verify", "--user", "u3"]);
    assert_eq!(code, 0, "{out}");
    let (code, _) = cli(&env, &["verify", "--user", "u4"]);
    assert_eq!(code, 1, "u4 was not part of the replay");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_for_admins_and_redriven_once_fixed() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use tokenusage_api::Role;
    let env = TestEnv::new().await;
    env.add_user("root", Role::Admin, "root-password").await;
    env.add_user("viewer", Role::Viewer, "viewer-password").await;
    let app = common::TestApp::spawn(&env).await;
    let raw: FutureProducer = env.kafka.client_config().create().unwrap();
    let mut e = synthetic_events("dl", 2, 1);
    e[0].occurred_at = "2026-11-20T10:00:00Z".parse().unwrap();
    let mut late = serde_json::to_value(&e[0]).unwrap();
    late["activity"] = serde_json::json!("Chat!"); // invalid: fixable by editing
    let garbage = b"\xff\xfe not even utf-8";
    raw.send(FutureRecord::to(&env.kafka.topic).key("u0").payload(&late.to_string()), Duration::from_secs(5))
        .await
        .unwrap();
    raw.send(FutureRecord::to(&env.kafka.topic).key("u0").payload(&garbage[..]), Duration::from_secs(5)).await.unwrap();
    let got = common::eventually(Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from dead_letters").fetch_one(&env.pool).await.unwrap();
        (n == 2).then_some(n)
    })
    .await;
    assert_eq!(got, Some(2));

    // Admins list them over the API; viewers may not.
    let admin = app.login("root", "root-password").await;
    let (status, list) = app.get(&admin, "/api/v1/admin/dead-letters").await;
    assert_eq!(status, 200);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let viewer = app.login("viewer", "viewer-password").await;
    assert_eq!(app.get(&viewer, "/api/v1/admin/dead-letters").await.0, 403);

    // Fix the first one's payload and re-drive it from the CLI: counted.
    let id_late: i64 = sqlx::query_scalar("select id from dead_letters order by kafka_offset limit 1")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let fixed = std::env::temp_dir().join(format!("{}.json", env.kafka.topic));
    std::fs::write(&fixed, serde_json::to_vec(&e[0]).unwrap()).unwrap();
    let (code, out) =
        cli(&env, &["dead-letters", "redrive", &id_late.to_string(), "--payload", fixed.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 counted, 0 still invalid"), "{out}");
    assert_eq!(
        rollup_totals(&env.pool, "usage_minute", Some("u0")).await,
        (e[0].input_tokens as i64, e[0].output_tokens as i64, 1)
    );

    // The garbage one, re-driven over the API as it is, stays a dead letter
    // with the reason; the projector picks the request up by itself.
    let id_garbage: i64 =
        sqlx::query_scalar("select id from dead_letters where redriven_at is null").fetch_one(&env.pool).await.unwrap();
    let r = app
        .http
        .post(app.url(&format!("/api/v1/admin/dead-letters/{id_garbage}/redrive")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let reason = common::eventually(Duration::from_secs(30), || async {
        let r: (Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
            sqlx::query_as("select redrive_error, redrive_requested_at from dead_letters where id = $1")
                .bind(id_garbage)
                .fetch_one(&env.pool)
                .await
                .unwrap();
        r.1.is_none().then_some(r.0)
    })
    .await
    .flatten();
    assert!(reason.unwrap_or_default().contains("not valid JSON"));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_raw_events_but_keeps_rollups() {
    let env = TestEnv::new().await;
    sqlx::query(
        "insert into usage_events (occurred_at, source, event_id, user_id, activity, model, input_tokens, output_tokens, kafka_partition, kafka_offset) \
         values (now() - interval '500 days', 's', 'old', 'u', 'chat', 'm', 1, 1, 0, 0), (now() - interval '1 day', 's', 'new', 'u', 'chat', 'm', 1, 1, 0, 1)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into usage_hour values ('u', date_trunc('hour', now() - interval '500 days'), 'chat', 'm', 1, 1, 1)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let removed = tokenusage_projector::maintenance::apply_retention(&env.pool, 400).await.unwrap();
    assert_eq!(removed, 1);
    let left: Vec<(String,)> = sqlx::query_as("select event_id from usage_events").fetch_all(&env.pool).await.unwrap();
    assert_eq!(left, vec![("new".to_owned(),)]);
    assert_eq!(rollup_totals(&env.pool, "usage_hour", None).await, (1, 1, 1), "rollups are kept");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_whose_claim_was_superseded_can_no_longer_commit() {
    let env = TestEnv::new().await;
    let mut fixed = env.projector_args();
    fixed.assign_partitions = Some("all".into());
    let spawn = |stop: CancellationToken| {
        let (args, kafka, pool) = (fixed.clone(), env.kafka.clone(), env.pool.clone());
        let health = std::sync::Arc::new(tokenusage_projector::Health::new("projector"));
        tokio::spawn(async move { tokenusage_projector::run(&args, &kafka, pool, stop, health).await.unwrap() })
    };
    let first = synthetic_events("f1", 3000, 10);
    let (a_stop, b_stop) = (CancellationToken::new(), CancellationToken::new());
    let a = spawn(a_stop.clone());
    produce(&env, &first).await;
    assert!(wait_for_totals(&env.pool, expected_totals(&first), Duration::from_secs(60)).await);

    // B claims the same partitions: every epoch moves on, A is fenced.
    let b = spawn(b_stop.clone());
    let epochs = common::eventually(Duration::from_secs(30), || async {
        let e: Vec<i64> = sqlx::query_scalar("select epoch from projector_offsets").fetch_all(&env.pool).await.unwrap();
        (e.len() == 3 && e.iter().all(|x| *x == 2)).then_some(e)
    })
    .await;
    assert!(epochs.is_some(), "B's claim did not bump every epoch");
    let second = synthetic_events("f2", 3000, 10);
    produce(&env, &second).await;
    let both: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert!(wait_for_totals(&env.pool, expected_totals(&both), Duration::from_secs(60)).await);

    // With B gone, A still reads but every commit it tries is refused.
    b_stop.cancel();
    b.await.unwrap();
    let third = synthetic_events("f3", 1000, 10);
    produce(&env, &third).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        rollup_totals(&env.pool, "usage_minute", None).await,
        expected_totals(&both),
        "a fenced projector committed"
    );
    a_stop.cancel();
    a.await.unwrap();
    env.cleanup().await;
}

/// The notices PostgreSQL sends (assembled by `tokenusage_notify_rollups`)
/// decode, are numbered one per commit in commit order, carry exactly the
/// increments committed, and are not sent when nothing new was counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_commit_notifies_its_increments_under_the_next_number() {
    use tokenusage_projector::count_events;
    use tokenusage_schema::notice::Notice;
    let env = TestEnv::database_only().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&env.pool).await.unwrap();
    listener.listen(tokenusage_schema::notice::NOTIFY_CHANNEL).await.unwrap();
    let events = synthetic_events("n", 40, 3);
    let (first, second) = events.split_at(25);
    assert_eq!(count_events(&env.pool, first.to_vec()).await.unwrap(), 25);
    let overlapping: Vec<_> = second.iter().chain(&first[..5]).cloned().collect();
    assert_eq!(count_events(&env.pool, overlapping).await.unwrap(), 15, "only the new events count");
    assert_eq!(count_events(&env.pool, first[..3].to_vec()).await.unwrap(), 0);

    let mut seqs = Vec::new();
    type Minute = (String, String, String, i64); // user, activity, model, minute
    let mut sums: std::collections::BTreeMap<Minute, (i64, i64, i64)> = Default::default();
    // Until two quiet seconds pass.
    while let Ok(received) = tokio::time::timeout(Duration::from_secs(2), listener.try_recv()).await {
        let n = received.unwrap().expect("the listener's connection stays up");
        let notice = Notice::decode(n.payload()).unwrap_or_else(|| panic!("undecodable notice {}", n.payload()));
        assert!(!notice.all && notice.users.is_none(), "small commits carry their increments");
        seqs.push(notice.seq);
        for d in notice.rows {
            let s = sums.entry((d.0.clone(), d.1.clone(), d.2.clone(), d.minute())).or_default();
            let d = d.sums();
            *s = (s.0 + d.input_tokens, s.1 + d.output_tokens, s.2 + d.events);
        }
    }
    seqs.dedup();
    let last: i64 = sqlx::query_scalar("select seq from rollup_sequence").fetch_one(&env.pool).await.unwrap();
    assert_eq!(seqs, vec![last - 1, last], "two commits counted something; the third sent nothing");
    let stored: Vec<(String, String, String, i64, i64, i64, i64)> = sqlx::query_as(
        "select user_id, activity, model, extract(epoch from bucket)::int8, input_tokens, output_tokens, events \
         from usage_minute order by 1, 2, 3, 4",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let notified: Vec<_> = sums.into_iter().map(|((u, a, m, t), (i, o, e))| (u, a, m, t, i, o, e)).collect();
    assert_eq!(notified, stored, "the notices add up to the minute rollups");
    assert_eq!(rollup_totals(&env.pool, "usage_hour", None).await, expected_totals(&events));
    // The listener holds one of the pool's connections: give it back first.
    drop(listener);
    env.cleanup().await;
}
