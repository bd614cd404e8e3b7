//! Day rows (migration 0013) against the raw events: with part of the
//! history sealed into day rows and the rest read from the fine rollups,
//! every view in every zone, grouping and filter sums exactly what the raw
//! events of its buckets hold, in all nine measures; a late event, a
//! replay and counting that races the sealer leave nothing stale.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokenusage_api::Role;
// The nine measures, in `Sums::to_array` order, as the API names them.
use tokenusage_api::history::days::MEASURES;
use tokenusage_api::teams::{self, TeamRole};
use tokenusage_contract::UsageEvent;
use tokenusage_projector::seal;

use crate::common::{TestApp, TestEnv, test_api_args};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn enc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// A v2 event with every kind a day row sums: cache reads and writes,
/// reasoning, a project, and (one in five) a supplied cost.
fn ev(rng: &mut StdRng, id: &str, user: &str, at: DateTime<Utc>) -> UsageEvent {
    let input: i64 = rng.random_range(100..5000);
    let output: i64 = rng.random_range(1..800);
    let activity = ["chat", "embedding", "agent"][rng.random_range(0..3)];
    let model = ["gpt-4o", "claude-sonnet-4-5", "m-unpriced"][rng.random_range(0..3)];
    let mut body = json!({
        "schema_version": 2, "event_id": id, "user_id": user, "occurred_at": at.to_rfc3339(),
        "activity": activity, "model": model,
        "input_tokens": input, "output_tokens": output,
        "cache_read_input_tokens": rng.random_range(0..input / 2),
        "cache_write_input_tokens": rng.random_range(0..input / 4),
        "reasoning_output_tokens": rng.random_range(0..output),
    });
    if rng.random_range(0..3) > 0 {
        body["project"] = json!(["search", "bots"][rng.random_range(0..2)]);
    }
    if rng.random_range(0..5) == 0 {
        body["cost"] = json!({"amount": format!("0.{:06}", rng.random_range(1..999_999)), "currency": "USD"});
    }
    let source = ["gateway", "batch"][rng.random_range(0..2)];
    tokenusage_contract::parse_native(body.to_string().as_bytes(), source, t("2027-06-01T00:00:00Z")).unwrap()
}

/// The truth: the nine sums of the raw events per bucket (1-based, as
/// `width_bucket` numbers `edges`) and group key, for `users` (all if
/// empty), computed from `usage_events` as `tokenusage verify` does.
async fn raw_sums(
    pool: &PgPool,
    users: &[&str],
    edges: &[DateTime<Utc>],
    end: DateTime<Utc>,
    group: &str,
    activity: Option<&str>,
) -> BTreeMap<(i32, String), [i64; 9]> {
    let key = match group {
        "none" => "''".to_owned(),
        "project" => "coalesce(project, '')".to_owned(),
        "user" => "user_id".to_owned(),
        g => g.to_owned(),
    };
    let sql = format!(
        r#"
        select width_bucket(occurred_at, $1)::int4, {key},
               sum(input_tokens)::int8, sum(output_tokens)::int8, count(*)::int8,
               coalesce(sum((detail->>'cache_read_input_tokens')::int8), 0)::int8,
               coalesce(sum(coalesce((detail->>'cache_write_input_tokens')::int8, 0)
                            + coalesce((detail->>'cache_write_1h_input_tokens')::int8, 0)), 0)::int8,
               coalesce(sum((detail->>'reasoning_output_tokens')::int8), 0)::int8,
               sum(cost_nanos)::int8, sum(unpriced_tokens)::int8,
               count(*) filter (where detail->'cost'->>'currency' = (select currency from price_book_state))::int8
          from usage_events
         where occurred_at >= $1[1] and occurred_at < $2 and (cardinality($3::text[]) = 0 or user_id = any($3))
           and ($4::text is null or activity = $4)
         group by 1, 2
        "#
    );
    let rows = sqlx::query(&sql).bind(edges).bind(end).bind(users).bind(activity).fetch_all(pool).await.unwrap();
    rows.iter()
        .map(|r| {
            use sqlx::Row;
            let sums: [i64; 9] = std::array::from_fn(|m| r.get(m + 2));
            ((r.get(0), r.get(1)), sums)
        })
        .collect()
}

fn point_edges(body: &Value) -> (Vec<DateTime<Utc>>, DateTime<Utc>) {
    let points = body["points"].as_array().unwrap();
    let edges = points.iter().map(|p| t(p["start"].as_str().unwrap())).collect();
    (edges, t(points.last().unwrap()["end"].as_str().unwrap()))
}

/// Checks a series response, every bucket and every measure (and each
/// group's five per-bucket arrays), against the raw events.
async fn check_series(pool: &PgPool, body: &Value, users: &[&str], group: &str, activity: Option<&str>, what: &str) {
    let (edges, end) = point_edges(body);
    let truth = raw_sums(pool, users, &edges, end, group, activity).await;
    let mut totals = vec![[0i64; 9]; edges.len()];
    for ((i, _), sums) in &truth {
        for (m, v) in sums.iter().enumerate() {
            totals[(*i - 1) as usize][m] += v;
        }
    }
    for (i, p) in body["points"].as_array().unwrap().iter().enumerate() {
        for (m, name) in MEASURES.iter().enumerate() {
            assert_eq!(p[name].as_i64().unwrap(), totals[i][m], "{what}: bucket {} {name}", p["start"]);
        }
    }
    if group == "none" {
        return;
    }
    let series = body["series"].as_array().unwrap();
    let keys: std::collections::BTreeSet<&String> = truth.keys().map(|(_, k)| k).collect();
    assert_eq!(series.len(), keys.len(), "{what}: groups");
    for s in series {
        let key = s["key"].as_str().unwrap().to_owned();
        for (m, name) in
            [(0, "input_tokens"), (1, "output_tokens"), (2, "events"), (6, "cost_nanos"), (7, "unpriced_tokens")]
        {
            for (i, v) in s[name].as_array().unwrap().iter().enumerate() {
                let want = truth.get(&(i as i32 + 1, key.clone())).map_or(0, |a| a[m]);
                assert_eq!(v.as_i64().unwrap(), want, "{what}: group {key} bucket {i} {name}");
            }
        }
    }
}

/// Seeds two users over 400 days, seals the first ~200, lowers bob's
/// seal with a late event, and returns the events and the seal day.
async fn seed(env: &TestEnv, rng: &mut StdRng) -> (Vec<UsageEvent>, NaiveDate) {
    let base = t("2026-01-01T00:00:00Z");
    let events: Vec<UsageEvent> = (0..3000)
        .map(|i| {
            let at = base + Duration::seconds(rng.random_range(0..400 * 86_400));
            ev(rng, &format!("e{i}"), if i % 5 == 0 { "bob" } else { "alice" }, at)
        })
        .collect();
    tokenusage_projector::count_events(&env.pool, events.clone()).await.unwrap();
    let sealed = day("2026-07-15");
    let done = seal::seal(&env.pool, sealed, |_| {}).await.unwrap();
    // Both users, from their first event on, 31 days per transaction.
    assert!(done.users >= 14 && done.rows > 0 && done.transactions >= 7, "{done:?}");
    // A late event for bob, well below the seal: his seal drops to its day.
    let late = ev(rng, "late-bob", "bob", t("2026-03-03T10:20:00Z"));
    tokenusage_projector::count_events(&env.pool, vec![late]).await.unwrap();
    let seals: Vec<(String, NaiveDate)> =
        sqlx::query_as("select user_id, sealed_through from usage_day_seal order by 1")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(seals, vec![("alice".into(), sealed), ("bob".into(), day("2026-03-03"))]);
    (events, sealed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_across_the_seal_sum_the_raw_events_in_every_zone_grouping_and_measure() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    env.add_user("root", Role::Admin, "root-password").await;
    let mut rng = StdRng::seed_from_u64(20261205);
    seed(&env, &mut rng).await;
    let drift = seal::verify(&env.pool, day("2025-01-01"), day("2028-01-01")).await.unwrap();
    assert!(drift.rows_checked > 1000 && drift.differing == 0, "{drift:?}");
    teams::create(&env.pool, "both", "test").await.unwrap();
    for m in ["alice", "bob"] {
        teams::set_member(&env.pool, "both", m, TeamRole::Member).await.unwrap();
    }
    // The cache off: every request reads the tables.
    let mut args = test_api_args();
    args.history.series_cache_entries = 0;
    let app = TestApp::spawn_api(&env, args).await;
    let alice = app.login("alice", "alice-password").await;
    let admin = app.login("root", "root-password").await;
    let base = t("2026-01-01T00:00:00Z");
    let zones = [
        "UTC",
        "America/New_York",
        "Europe/London",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "America/St_Johns",
    ];
    let grans = ["day", "week", "month", "auto"];
    let groups = ["none", "activity", "model", "project", "source"];
    for case in 0..40 {
        let zone = zones[rng.random_range(0..zones.len())];
        let gran = grans[rng.random_range(0..grans.len())];
        let from = base + Duration::seconds(rng.random_range(0..380 * 86_400));
        let to = from + Duration::seconds(rng.random_range(86_400..400 * 86_400));
        let group = groups[rng.random_range(0..groups.len())];
        let filter = (rng.random_range(0..4) == 0).then_some("chat");
        let (subject, users, token): (&str, &[&str], &str) = match case % 4 {
            0 | 1 => ("", &["alice"], &alice),
            2 => ("&team=both", &["alice", "bob"], &admin),
            _ => ("&user=*", &[], &admin),
        };
        let params = format!(
            "from={}&to={}&granularity={gran}&tz={zone}&group={group}{subject}{}",
            enc(&from.to_rfc3339()),
            enc(&to.to_rfc3339()),
            filter.map(|a| format!("&activity={a}")).unwrap_or_default()
        );
        let (status, body) = app.get(token, &format!("/api/v1/usage/series?{params}")).await;
        assert_eq!(status, 200, "{params}: {body}");
        check_series(&env.pool, &body, users, group, filter, &format!("case {case} ({params})")).await;
    }
    // Ranges: summary (and its previous period), breakdown, dimensions and
    // the overview over ranges with whole days on both sides of the seal
    // and ragged ends.
    let (from, to) = (t("2026-05-02T07:15:00Z"), t("2026-09-20T13:45:00Z"));
    let range = format!("from={}&to={}", enc(&from.to_rfc3339()), enc(&to.to_rfc3339()));
    let whole = raw_sums(&env.pool, &["alice"], &[from], to, "none", None).await;
    let want = whole.values().next().copied().unwrap_or_default();
    let (status, b) = app.get(&alice, &format!("/api/v1/usage/breakdown?{range}")).await;
    assert_eq!(status, 200, "{b}");
    for (m, name) in MEASURES.iter().enumerate() {
        assert_eq!(b["total"][name].as_i64().unwrap(), want[m], "breakdown total {name}");
    }
    let by_model = raw_sums(&env.pool, &["alice"], &[from], to, "model", None).await;
    let (_, o) = app.get(&alice, &format!("/api/v1/usage/overview?{range}")).await;
    for m in o["models"].as_array().unwrap() {
        let key = m["key"].as_str().unwrap().to_owned();
        assert_eq!(m["total"]["cost_nanos"].as_i64(), Some(by_model[&(1, key.clone())][6]), "overview model {key}");
    }
    assert_eq!(o["total"]["total_tokens"].as_i64(), Some(want[0] + want[1]), "overview total");
    let (_, all) = app.get(&admin, &format!("/api/v1/usage/overview?{range}&user=*")).await;
    let everyone = raw_sums(&env.pool, &[], &[from], to, "user", None).await;
    for u in all["users"].as_array().unwrap() {
        let key = u["key"].as_str().unwrap().to_owned();
        assert_eq!(u["total"]["events"].as_i64(), Some(everyone[&(1, key.clone())][2]), "overview user {key}");
    }
    assert_eq!(all["teams"][0]["key"], "both");
    let (_, d) = app.get(&alice, &format!("/api/v1/usage/dimensions?{range}")).await;
    assert_eq!(d["models"], json!(["claude-sonnet-4-5", "gpt-4o", "m-unpriced"]));
    assert_eq!(d["projects"], json!(["", "bots", "search"]));
    let (status, s) = app
        .get(&alice, "/api/v1/usage/summary?from=2026-06-01&to=2026-09-01&granularity=month&tz=Asia/Kathmandu")
        .await;
    assert_eq!(status, 200, "{s}");
    let prev = &s["previous"];
    let prev_truth = raw_sums(
        &env.pool,
        &["alice"],
        &[t(prev["from"].as_str().unwrap())],
        t(prev["to"].as_str().unwrap()),
        "none",
        None,
    )
    .await;
    assert_eq!(prev["total"]["input_tokens"].as_i64(), Some(prev_truth.values().next().unwrap()[0]), "{s}");

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_replays_and_counting_during_sealing_leave_no_stale_day_row() {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let mut rng = StdRng::seed_from_u64(7);
    let (_, sealed) = seed(&env, &mut rng).await;
    let mut args = test_api_args();
    args.history.series_cache_entries = 0;
    let app = TestApp::spawn_api(&env, args).await;
    let alice = app.login("alice", "alice-password").await;
    let year = "from=2026-01-01&to=2027-01-01&granularity=month&tz=America/New_York";
    let total = |body: &Value| body["total"]["total_tokens"].as_i64().unwrap();
    let (_, before) = app.get(&alice, &format!("/api/v1/usage/series?{year}")).await;

    // A late event on a sealed day counts at once (the seal drops), and
    // sealing again builds its day back.
    let late = ev(&mut rng, "late-alice", "alice", t("2026-02-10T23:59:00Z"));
    let added = (late.input_tokens + late.output_tokens) as i64;
    tokenusage_projector::count_events(&env.pool, vec![late]).await.unwrap();
    let (_, after) = app.get(&alice, &format!("/api/v1/usage/series?{year}")).await;
    assert_eq!(total(&after), total(&before) + added);
    check_series(&env.pool, &after, &["alice"], "none", None, "after a late event").await;
    seal::seal(&env.pool, sealed, |_| {}).await.unwrap();
    let seal_of = |u: &'static str| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, NaiveDate>("select sealed_through from usage_day_seal where user_id = $1")
                .bind(u)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(seal_of("alice").await, sealed);
    let (_, resealed) = app.get(&alice, &format!("/api/v1/usage/series?{year}")).await;
    assert_eq!(resealed["points"], after["points"]);

    // A replay that rewrites a sealed day drops the seals to it.
    // The row is named by its key, never by ctid: on a TimescaleDB hypertable
    // a ctid is unique only within a chunk, and this deleted a row of every month.
    sqlx::query(
        "delete from usage_quarter_hour where (user_id, bucket, activity, model, source, project) = \
                 (select user_id, bucket, activity, model, source, project from usage_quarter_hour \
                  where user_id = 'alice' and bucket >= '2026-04-01' and bucket < '2026-04-02' limit 1)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    tokenusage_projector::rebuild::replay(
        &env.pool,
        t("2026-04-01T00:00:00Z"),
        t("2026-04-02T00:00:00Z"),
        None,
        false,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(seal_of("alice").await, day("2026-04-01"));
    seal::seal(&env.pool, sealed, |_| {}).await.unwrap();

    // Late events for sealed days, counted while the sealer runs over and
    // over: whatever the interleaving, the seals end where the day rows
    // are right.
    sqlx::query("update usage_day_seal set sealed_through = '-infinity'").execute(&env.pool).await.unwrap();
    let writer = {
        let pool = env.pool.clone();
        let mut rng = StdRng::seed_from_u64(99);
        tokio::spawn(async move {
            for i in 0..60 {
                let batch: Vec<UsageEvent> = (0..20)
                    .map(|j| {
                        let at = t("2026-01-01T00:00:00Z") + Duration::seconds(rng.random_range(0..190 * 86_400));
                        ev(&mut rng, &format!("race-{i}-{j}"), ["alice", "bob", "carol"][j % 3], at)
                    })
                    .collect();
                tokenusage_projector::count_events(&pool, batch).await.unwrap();
            }
        })
    };
    while !writer.is_finished() {
        seal::seal(&env.pool, sealed, |_| {}).await.unwrap();
    }
    writer.await.unwrap();
    let drift = seal::verify(&env.pool, day("2025-01-01"), day("2028-01-01")).await.unwrap();
    assert_eq!(drift.differing, 0, "{drift:?}");
    seal::seal(&env.pool, sealed, |_| {}).await.unwrap();
    let drift = seal::verify(&env.pool, day("2025-01-01"), day("2028-01-01")).await.unwrap();
    assert_eq!(drift.differing, 0, "{drift:?}");
    let lowest: NaiveDate =
        sqlx::query_scalar("select min(sealed_through) from usage_day_seal").fetch_one(&env.pool).await.unwrap();
    assert_eq!(lowest, sealed, "everyone, carol included, sealed again");
    let (_, last) = app.get(&alice, &format!("/api/v1/usage/series?{year}")).await;
    check_series(&env.pool, &last, &["alice"], "none", None, "after the race").await;

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_row_committed_while_the_sealer_builds_its_day_lowers_the_seal_after_it() {
    let env = TestEnv::database_only().await;
    // A month of a busy user: 60 series in every quarter-hour, so building
    // it takes the sealer a while (one transaction: 31 days).
    sqlx::query(
        "insert into usage_quarter_hour (user_id, bucket, activity, model, source, project, input_tokens, output_tokens, \
         events, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos, unpriced_tokens, supplied_events) \
         select 'dense', b, 'a' || (s % 6), 'm' || (s / 6), 'src', '', 10, 1, 1, 0, 0, 0, 5, 0, 0 \
         from generate_series(timestamptz '2026-01-01', timestamptz '2026-01-31 23:45Z', interval '15 minutes') b, \
              generate_series(0, 59) s",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query("insert into usage_day_seal values ('dense', '2026-01-01')").execute(&env.pool).await.unwrap();
    let sealer = {
        let pool = env.pool.clone();
        tokio::spawn(async move { seal::seal(&pool, day("2026-02-01"), |_| {}).await.unwrap() })
    };
    // While the sealer builds (its read of the rollups already taken), a
    // counting transaction writes a row on a day it is sealing and applies
    // the seal rule. It must not slip under the seal the sealer is about
    // to raise.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut tx = env.pool.begin().await.unwrap();
    sqlx::query(
        "insert into usage_quarter_hour (user_id, bucket, activity, model, source, project, input_tokens, output_tokens, \
         events, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos, unpriced_tokens, supplied_events) \
         values ('dense', '2026-01-15T10:00:00Z', 'late', 'm', 'src', '', 7, 7, 1, 0, 0, 0, 0, 0, 0)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("select tokenusage_lower_day_seals(array['dense'], array[timestamptz '2026-01-15T10:00:00Z'])")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let built = sealer.await.unwrap();
    assert!(built.rows > 0, "{built:?}");
    // Either the seal stays below the late row's day or the sealer's next
    // pass built the day again with it; never a sealed day without it.
    let drift = seal::verify(&env.pool, day("2026-01-01"), day("2026-02-01")).await.unwrap();
    assert_eq!(drift.differing, 0, "{drift:?}");
    assert!(drift.rows_checked > 0, "{drift:?}");
    let late: i64 = sqlx::query_scalar(
        "select count(*) from usage_day d join usage_day_seal s using (user_id) \
         where d.activity = 'late' and d.day < s.sealed_through",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let through: NaiveDate = sqlx::query_scalar("select sealed_through from usage_day_seal where user_id = 'dense'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(through <= day("2026-01-15") || late > 0, "sealed through {through} without the late row");
    env.cleanup().await;
}
