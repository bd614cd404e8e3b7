//! Reads from a hot standby (`--database-read-url`): history, overview and
//! CSV come from the standby while it keeps up, with the freshness of what
//! it holds; a standby paused behind the bound hands the reads back to the
//! primary (and what it answered while behind is not cached past that);
//! a read URL that names a primary is refused at start.
//!
//! Needs the primary and streaming standby that `scripts/test.sh` creates
//! with pg_basebackup (`start_replica_pair`):
//! TOKENUSAGE_TEST_PG_PRIMARY and TOKENUSAGE_TEST_PG_STANDBY.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokenusage_api::{Application, Role};

use crate::common::{
    TestApp, TestEnv, eventually, expected_totals, produce, synthetic_events, test_api_args, wait_for_totals,
};

fn server(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test.sh (it starts the replica pair)"))
}

const RANGE: &str = "from=2026-11-20&to=2026-11-21&granularity=day&user=*";
/// How far behind the standby may be before reads go to the primary.
const BOUND_SECS: u64 = 8;

/// Everyone's total tokens of the day, from the series, the overview and the CSV.
async fn totals(app: &TestApp, token: &str) -> (i64, i64, i64, serde_json::Value) {
    let (status, series) = app.get(token, &format!("/api/v1/usage/series?{RANGE}")).await;
    assert_eq!(status, 200, "{series}");
    let (status, overview) = app.get(token, "/api/v1/usage/overview?from=2026-11-20&to=2026-11-21&user=*").await;
    assert_eq!(status, 200, "{overview}");
    let csv = app.get_text(token, &format!("/api/v1/usage/export.csv?{RANGE}")).await;
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "total_tokens").unwrap();
    let csv_total: i64 = csv.lines().skip(1).map(|l| l.split(',').nth(col).unwrap().parse::<i64>().unwrap()).sum();
    (
        series["total"]["total_tokens"].as_i64().unwrap(),
        overview["total"]["total_tokens"].as_i64().unwrap(),
        csv_total,
        series["freshness"].clone(),
    )
}

fn tokens(t: (i64, i64, i64)) -> i64 {
    t.0 + t.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_standby_while_it_keeps_up_and_to_the_primary_when_it_falls_behind() {
    let (primary, standby) = (server("TOKENUSAGE_TEST_PG_PRIMARY"), server("TOKENUSAGE_TEST_PG_STANDBY"));
    // A run stopped while the standby was paused leaves it paused.
    let standby_admin = sqlx::PgPool::connect(&format!("{standby}/postgres")).await.expect("the standby");
    sqlx::query("select pg_wal_replay_resume() where pg_is_wal_replay_paused()").execute(&standby_admin).await.unwrap();
    standby_admin.close().await;
    let env = TestEnv::on_server(&primary).await;
    env.add_user("root", Role::Admin, "root-password").await;
    let standby_db = format!("{standby}/{}", env.db_name());
    let standby_pool = eventually(Duration::from_secs(30), || async {
        let pool = sqlx::PgPool::connect(&standby_db).await.ok()?;
        // The schema has reached the standby.
        sqlx::query("select 1 from usage_day limit 1").execute(&pool).await.ok()?;
        Some(pool)
    })
    .await
    .expect("the test database reaches the standby");

    // A read URL naming a primary is refused, with the reason.
    let mut wrong = test_api_args();
    wrong.history.read_url = Some(SecretString::from(format!("{primary}/{}", env.db_name())));
    let Err(refused) = Application::build(wrong, env.pool.clone(), Default::default()).await else {
        panic!("a read URL naming a primary was accepted")
    };
    assert!(refused.to_string().contains("not a hot standby"), "{refused}");

    let mut api = test_api_args();
    api.history.read_url = Some(SecretString::from(standby_db.clone()));
    api.history.read_max_lag_secs = BOUND_SECS;
    let app = TestApp::spawn_with_api(&env, api).await;
    let root = app.login("root", "root-password").await;

    let first = synthetic_events("replica-a", 300, 7);
    produce(&env, &first).await;
    assert!(wait_for_totals(&env.pool, expected_totals(&first), Duration::from_secs(60)).await, "counted");
    let want_a = tokens(expected_totals(&first));
    let seen = eventually(Duration::from_secs(20), || async {
        let t = totals(&app, &root).await;
        (t.0 == want_a && t.1 == want_a && t.2 == want_a).then_some(t)
    })
    .await
    .expect("series, overview and CSV agree on the first events");
    assert!(seen.3.is_object(), "a REST series says how fresh it is: {:?}", seen.3);

    // The standby stops replaying: what the primary counts next, it lacks.
    sqlx::query("select pg_wal_replay_pause()").execute(&standby_pool).await.unwrap();
    let paused_at = chrono::Utc::now();
    let paused = Instant::now();
    let second = synthetic_events("replica-b", 200, 5);
    produce(&env, &second).await;
    let both = [first.clone(), second.clone()].concat();
    assert!(wait_for_totals(&env.pool, expected_totals(&both), Duration::from_secs(60)).await, "counted");
    let want_both = tokens(expected_totals(&both));

    let stale = totals(&app, &root).await;
    let read_within = paused.elapsed();
    assert!(
        read_within < Duration::from_secs(BOUND_SECS - 2),
        "the events were counted {read_within:?} after the pause: too slow a machine to see the standby within its bound"
    );
    assert_eq!(
        (stale.0, stale.1, stale.2),
        (want_a, want_a, want_a),
        "within the bound, every read comes from the standby, which lacks the second events"
    );
    if let Some(through) = stale.3["complete_through"].as_str() {
        let through: chrono::DateTime<chrono::Utc> = through.parse().unwrap();
        assert!(through <= paused_at, "the standby promises no more than it holds: {through} > pause {paused_at}");
    }

    // Past the bound, reads go to the primary, though the standby is still
    // paused; and the standby's older answer, read after the primary's
    // notifications, was not cached.
    let fresh = eventually(Duration::from_secs(BOUND_SECS + 20), || async {
        let t = totals(&app, &root).await;
        (t.0 == want_both && t.1 == want_both && t.2 == want_both).then_some(t)
    })
    .await
    .expect("reads move to the primary once the standby is behind the bound");
    assert!(paused.elapsed() >= Duration::from_secs(BOUND_SECS - 1), "not before the bound: {:?}", paused.elapsed());
    let still_paused: bool =
        sqlx::query_scalar("select pg_is_wal_replay_paused()").fetch_one(&standby_pool).await.unwrap();
    assert!(still_paused, "the primary answered because the standby was behind, not because it caught up");
    assert!(fresh.3.is_object());

    sqlx::query("select pg_wal_replay_resume()").execute(&standby_pool).await.unwrap();
    let caught_up = eventually(Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("select coalesce(sum(events), 0)::int8 from usage_hour")
            .fetch_one(&standby_pool)
            .await
            .ok()?;
        (n == expected_totals(&both).2).then_some(())
    })
    .await;
    assert!(caught_up.is_some(), "the standby catches up once resumed");
    let again = totals(&app, &root).await;
    assert_eq!((again.0, again.1, again.2), (want_both, want_both, want_both));

    app.stop().await;
    standby_pool.close().await;
    env.cleanup().await;
}
