//! The history API against the real database: random events, zones and
//! ranges (sums match to the token), DST and odd offsets, calendar
//! boundaries, CSV = JSON, summaries, admin views and validation.

use crate::common;

use chrono::{DateTime, Duration, Utc};
use common::{TestApp, TestEnv, test_api_args};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokenusage_api::Role;
use tokenusage_contract::UsageEvent;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn ev(id: &str, user: &str, at: DateTime<Utc>, activity: &str, model: &str, input: u64, output: u64) -> UsageEvent {
    let line = common::event_line(id, user, &at.to_rfc3339(), activity, model, input as i64, output as i64);
    tokenusage_contract::parse_native(line.as_bytes(), "history-test", t("2027-06-01T00:00:00Z")).unwrap()
}

async fn setup() -> (TestEnv, TestApp, String, String) {
    let env = TestEnv::database_only().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    env.add_user("root", Role::Admin, "root-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let alice = app.login("alice", "alice-password").await;
    let admin = app.login("root", "root-password").await;
    (env, app, alice, admin)
}

fn enc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

async fn series(app: &TestApp, token: &str, params: &str) -> Value {
    let (status, body) = app.get(token, &format!("/api/v1/usage/series?{params}")).await;
    assert_eq!(status, 200, "{params}: {body}");
    body
}

fn totals(body: &Value) -> Vec<i64> {
    body["points"].as_array().unwrap().iter().map(|p| p["total_tokens"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_events_zones_and_ranges_sum_exactly_and_groups_add_up() {
    let (env, app, alice, _) = setup().await;
    let mut rng = StdRng::seed_from_u64(20261127);
    let base = t("2026-01-01T00:00:00Z");
    let span_secs = 400 * 86_400;
    let activities = ["chat", "embedding", "agent"];
    let models = ["m-small", "m-large", "m-vision"];
    let mut events = Vec::new();
    for i in 0..3000 {
        let at = base + Duration::seconds(rng.random_range(0..span_secs));
        let user = if i % 7 == 0 { "bob" } else { "alice" };
        events.push(ev(
            &format!("e{i}"),
            user,
            at,
            activities[rng.random_range(0..3)],
            models[rng.random_range(0..3)],
            rng.random_range(0..5000),
            rng.random_range(0..500),
        ));
    }
    tokenusage_projector::count_events(&env.pool, events.clone()).await.unwrap();
    let alice_events: Vec<&UsageEvent> = events.iter().filter(|e| e.user_id == "alice").collect();

    let zones = ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe"];
    let grans = ["hour", "day", "week", "month", "auto"];
    for case in 0..40 {
        let zone = zones[rng.random_range(0..zones.len())];
        let gran = grans[rng.random_range(0..grans.len())];
        let from = base + Duration::seconds(rng.random_range(0..span_secs));
        let max_len = if gran == "hour" { 9000 * 3600 } else { span_secs };
        let to = from + Duration::seconds(rng.random_range(3600..max_len));
        let params =
            format!("from={}&to={}&granularity={gran}&tz={zone}", enc(&from.to_rfc3339()), enc(&to.to_rfc3339()));
        let body = series(&app, &alice, &params).await;
        // The buckets cover [aligned from, aligned to): the events in it are the truth.
        let (af, at) = (t(body["from"].as_str().unwrap()), t(body["to"].as_str().unwrap()));
        assert!(af <= from && at >= to, "case {case}: {params}");
        let expected: i64 = alice_events
            .iter()
            .filter(|e| e.occurred_at >= af && e.occurred_at < at)
            .map(|e| (e.input_tokens + e.output_tokens) as i64)
            .sum();
        let sum: i64 = totals(&body).iter().sum();
        assert_eq!(sum, expected, "case {case}: sum over buckets ({params})");
        assert_eq!(body["total"]["total_tokens"].as_i64().unwrap(), expected, "case {case}: total");
        // Every bucket holds exactly its own events.
        for p in body["points"].as_array().unwrap() {
            let (s, e) = (t(p["start"].as_str().unwrap()), t(p["end"].as_str().unwrap()));
            let want: i64 = alice_events
                .iter()
                .filter(|ev| ev.occurred_at >= s && ev.occurred_at < e)
                .map(|ev| ev.input_tokens as i64)
                .sum();
            assert_eq!(p["input_tokens"].as_i64().unwrap(), want, "case {case}: bucket {s}..{e} ({params})");
        }
        // Grouped totals add up to the ungrouped ones, bucket by bucket.
        for group in ["activity", "model"] {
            let g = series(&app, &alice, &format!("{params}&group={group}")).await;
            let per_bucket = totals(&body);
            for (i, want) in per_bucket.iter().enumerate() {
                let got: i64 = g["series"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["input_tokens"][i].as_i64().unwrap() + s["output_tokens"][i].as_i64().unwrap())
                    .sum();
                assert_eq!(got, *want, "case {case}: group {group} bucket {i}");
            }
        }
    }
    // A filter keeps only its dimension.
    let params = "from=2026-01-01&to=2027-02-01&granularity=month&activity=chat";
    let body = series(&app, &alice, params).await;
    let want: i64 = alice_events
        .iter()
        .filter(|e| e.activity == "chat" && e.occurred_at < t("2027-02-01T00:00:00Z"))
        .map(|e| (e.input_tokens + e.output_tokens) as i64)
        .sum();
    assert_eq!(body["total"]["total_tokens"].as_i64().unwrap(), want);

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_follow_dst_and_half_and_quarter_hour_offsets() {
    let (env, app, alice, _) = setup().await;
    let events = vec![
        // New York, spring forward 2026-03-08: local day 8 is 05:00Z..04:00Z (23 h).
        ev("ny1", "alice", t("2026-03-08T04:59:00Z"), "chat", "m", 1, 0), // still the 7th
        ev("ny2", "alice", t("2026-03-09T03:59:00Z"), "chat", "m", 10, 0), // the 8th
        ev("ny3", "alice", t("2026-03-09T04:00:00Z"), "chat", "m", 100, 0), // the 9th
        // Berlin, fall back 2026-10-25: local day 25 is 22:00Z..23:00Z next day (25 h).
        ev("be1", "alice", t("2026-10-24T21:59:00Z"), "chat", "m", 1000, 0),
        ev("be2", "alice", t("2026-10-25T22:59:00Z"), "chat", "m", 10_000, 0),
        // Kolkata (+05:30) and Kathmandu (+05:45) midnights.
        ev("in1", "alice", t("2026-11-19T18:29:00Z"), "chat", "m", 100_000, 0),
        ev("in2", "alice", t("2026-11-19T18:30:00Z"), "chat", "m", 1_000_000, 0),
        ev("np1", "alice", t("2026-11-19T18:14:00Z"), "chat", "m", 10_000_000, 0),
        ev("np2", "alice", t("2026-11-19T18:15:00Z"), "chat", "m", 100_000_000, 0),
    ];
    tokenusage_projector::count_events(&env.pool, events).await.unwrap();

    let b = series(&app, &alice, "from=2026-03-07&to=2026-03-10&granularity=day&tz=America/New_York").await;
    assert_eq!(totals(&b), vec![1, 10, 100]);
    let starts: Vec<&str> = b["points"].as_array().unwrap().iter().map(|p| p["start"].as_str().unwrap()).collect();
    assert_eq!(starts, vec!["2026-03-07T00:00:00-05:00", "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"]);

    let b = series(&app, &alice, "from=2026-10-24&to=2026-10-27&granularity=day&tz=Europe/Berlin").await;
    assert_eq!(totals(&b), vec![1000, 10_000, 0]);
    assert_eq!(b["points"][1]["end"], "2026-10-26T00:00:00+01:00");
    let hours = series(&app, &alice, "from=2026-10-25&to=2026-10-26&granularity=hour&tz=Europe/Berlin").await;
    assert_eq!(hours["points"].as_array().unwrap().len(), 25, "the fall-back day has 25 hourly buckets");

    let b = series(&app, &alice, "from=2026-11-19&to=2026-11-21&granularity=day&tz=Asia/Kolkata").await;
    assert_eq!(b["rollup"], "usage_quarter_hour");
    assert_eq!(totals(&b), vec![100_000 + 10_000_000 + 100_000_000, 1_000_000]);
    let b = series(&app, &alice, "from=2026-11-19&to=2026-11-21&granularity=day&tz=Asia/Kathmandu").await;
    assert_eq!(totals(&b), vec![10_000_000, 100_000_000 + 100_000 + 1_000_000]);
    assert_eq!(b["points"][1]["start"], "2026-11-20T00:00:00+05:45");

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weeks_months_and_years_turn_over_where_the_calendar_says() {
    let (env, app, alice, _) = setup().await;
    tokenusage_projector::count_events(
        &env.pool,
        vec![
            ev("y1", "alice", t("2026-12-31T23:59:59Z"), "chat", "m", 1, 0),
            ev("y2", "alice", t("2027-01-01T00:00:00Z"), "chat", "m", 10, 0),
            ev("w1", "alice", t("2027-01-03T23:59:00Z"), "chat", "m", 100, 0), // Sunday
            ev("w2", "alice", t("2027-01-04T00:00:00Z"), "chat", "m", 1000, 0), // Monday
            ev("m1", "alice", t("2027-01-31T23:59:00Z"), "chat", "m", 10_000, 0),
            ev("m2", "alice", t("2027-02-01T00:00:00Z"), "chat", "m", 100_000, 0),
        ],
    )
    .await
    .unwrap();
    let b = series(&app, &alice, "from=2026-12-01&to=2027-03-01&granularity=month").await;
    assert_eq!(totals(&b), vec![1, 10 + 100 + 1000 + 10_000, 100_000]);
    let b = series(&app, &alice, "from=2026-12-28&to=2027-01-11&granularity=week").await;
    assert_eq!(totals(&b), vec![1 + 10 + 100, 1000]);
    let b = series(&app, &alice, "from=2026-12-27&to=2027-01-10&granularity=week&week_start=sunday").await;
    assert_eq!(totals(&b), vec![1 + 10, 100 + 1000]);
    assert_eq!(b["points"][1]["start"], "2027-01-03T00:00:00Z");

    app.stop().await;
    env.cleanup().await;
}

fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = r.records().map(|rec| rec.unwrap().iter().map(str::to_owned).collect()).collect();
    (header, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_matches_the_json_series_and_defuses_formulas() {
    let (env, app, alice, _) = setup().await;
    tokenusage_projector::count_events(
        &env.pool,
        vec![
            ev("c1", "alice", t("2026-11-20T01:00:00Z"), "chat", "m1", 5, 1),
            // Activities cannot hold `=` or `+`, but can start with `-`.
            ev("c2", "alice", t("2026-11-21T01:00:00Z"), "-2-3", "m2", 7, 2),
            ev("c3", "alice", t("2026-11-22T23:00:00Z"), "chat", "m1", 11, 3),
        ],
    )
    .await
    .unwrap();
    let params = "from=2026-11-20&to=2026-11-24&granularity=day&tz=Asia/Kolkata";
    let json = series(&app, &alice, params).await;
    let r =
        app.http.get(app.url(&format!("/api/v1/usage/export.csv?{params}"))).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("attachment; filename="));
    let text = r.text().await.unwrap();
    assert!(text.contains("\r\n"), "RFC 4180 line endings");
    let (header, rows) = parse_csv(&text);
    assert_eq!(
        header,
        [
            "start",
            "end",
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "events",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "cost",
            "unpriced_tokens",
            "supplied_events"
        ]
    );
    let points = json["points"].as_array().unwrap();
    assert_eq!(rows.len(), points.len());
    for (row, p) in rows.iter().zip(points) {
        assert_eq!(row[0], p["start"].as_str().unwrap());
        assert_eq!(row[1], p["end"].as_str().unwrap());
        assert_eq!(row[2], p["input_tokens"].to_string());
        assert_eq!(row[4], p["total_tokens"].to_string());
        assert_eq!(row[5], p["events"].to_string());
        // No price book here: every token is unpriced and the cost cell is empty, never 0.
        assert_eq!(row[9], p["cost"].as_str().unwrap_or(""));
        assert_eq!(row[10], p["unpriced_tokens"].to_string());
        if p["total_tokens"].as_i64() > Some(0) {
            assert_eq!((row[9].as_str(), p["unpriced_tokens"].as_i64()), ("", p["total_tokens"].as_i64()));
        }
    }
    // Grouped: one row per bucket and key; a formula-like key is defused.
    let r = app
        .http
        .get(app.url(&format!("/api/v1/usage/export.csv?{params}&group=activity")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let (header, rows) = parse_csv(&r.text().await.unwrap());
    assert_eq!(header[2], "activity");
    assert_eq!(rows.len(), points.len() * 2);
    assert!(rows.iter().any(|r| r[2] == "'-2-3"), "{rows:?}");
    assert!(rows.iter().all(|r| !r[2].starts_with('-')));
    let grouped_total: i64 = rows.iter().map(|r| r[5].parse::<i64>().unwrap()).sum();
    assert_eq!(grouped_total, json["total"]["total_tokens"].as_i64().unwrap());

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_breakdown_dimensions_and_admin_views() {
    let (env, app, alice, admin) = setup().await;
    tokenusage_projector::count_events(
        &env.pool,
        vec![
            ev("p1", "alice", t("2026-11-10T10:00:00Z"), "chat", "m1", 100, 0), // previous week
            ev("s1", "alice", t("2026-11-17T10:00:00Z"), "chat", "m1", 100, 50),
            ev("s2", "alice", t("2026-11-18T10:07:00Z"), "embed", "m2", 300, 0),
            ev("s3", "alice", t("2026-11-18T10:30:00Z"), "chat", "m1", 20, 0),
            ev("b1", "bob", t("2026-11-18T10:00:00Z"), "chat", "m1", 9000, 0),
        ],
    )
    .await
    .unwrap();
    let range = "from=2026-11-17&to=2026-11-24&granularity=day";
    let (status, s) = app.get(&alice, &format!("/api/v1/usage/summary?{range}")).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["total"]["total_tokens"], 470);
    assert_eq!(s["total"]["input_tokens"], 420);
    assert_eq!(s["peak"]["start"], "2026-11-18T00:00:00Z");
    assert_eq!(s["peak"]["total_tokens"], 320);
    assert_eq!(s["buckets"], 7);
    assert!((s["average_per_bucket"].as_f64().unwrap() - 470.0 / 7.0).abs() < 1e-9);
    assert_eq!(s["previous"]["total"]["total_tokens"], 100);
    assert_eq!(s["change"]["total_tokens"]["absolute"], 370);
    assert!((s["change"]["total_tokens"]["ratio"].as_f64().unwrap() - 3.7).abs() < 1e-9);

    // The breakdown of one hourly bucket.
    let (status, b) =
        app.get(&alice, "/api/v1/usage/breakdown?from=2026-11-18T10:00:00Z&to=2026-11-18T11:00:00Z").await;
    assert_eq!(status, 200, "{b}");
    let rows = b["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["activity"].as_str(), rows[0]["total_tokens"].as_i64()), (Some("embed"), Some(300)));
    assert_eq!(b["total"]["total_tokens"], 320);

    let (_, d) = app.get(&alice, "/api/v1/usage/dimensions?from=2026-11-17&to=2026-11-24").await;
    assert_eq!(d["activities"], serde_json::json!(["chat", "embed"]));
    assert_eq!(d["models"], serde_json::json!(["m1", "m2"]));

    // Admins: any user, all users, the top users. Viewers: none of it.
    let (_, all) = app.get(&admin, &format!("/api/v1/usage/series?{range}&user=*")).await;
    assert_eq!(all["user"], "*");
    assert_eq!(all["total"]["total_tokens"], 9470);
    let (_, bob) = app.get(&admin, &format!("/api/v1/usage/series?{range}&user=bob")).await;
    assert_eq!(bob["total"]["total_tokens"], 9000);
    let (_, top) = app.get(&admin, "/api/v1/admin/usage/top-users?from=2026-11-17&to=2026-11-24&limit=5").await;
    let users: Vec<&str> = top["users"].as_array().unwrap().iter().map(|u| u["user"].as_str().unwrap()).collect();
    assert_eq!(users, vec!["bob", "alice"]);
    assert_eq!(app.get(&alice, &format!("/api/v1/usage/series?{range}&user=*")).await.0, 403);
    assert_eq!(app.get(&alice, "/api/v1/admin/usage/top-users?from=2026-11-17&to=2026-11-24").await.0, 403);
    assert_eq!(app.get(&alice, &format!("/api/v1/usage/summary?{range}&user=bob")).await.0, 403);
    assert_eq!(app.get(&alice, "/api/v1/usage/dimensions?from=2026-11-17&to=2026-11-24&user=bob").await.0, 403);
    let r = app
        .http
        .get(app.url(&format!("/api/v1/usage/export.csv?{range}&user=bob")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_parameter_gets_a_specific_400() {
    let (env, app, alice, _) = setup().await;
    let cases = [
        ("from=2026-11-01&to=2026-11-02&tz=Mars/Olympus", "unknown_timezone"),
        ("from=2026-11-02&to=2026-11-01", "empty_range"),
        ("from=2026-11-02&to=2026-11-02", "empty_range"),
        ("from=2020-01-01&to=2026-01-01&granularity=minute", "too_many_points"),
        ("from=2026-11-01&to=2026-11-02&group=colour", "unknown_group"),
        ("from=2026-11-01&to=2026-11-02&colour=red", "unknown_parameter"),
        ("from=2026-11-01&to=2026-11-02&filter=x", "unknown_filter"),
        ("from=2026-11-01&to=2026-11-02&granularity=fortnight", "unknown_granularity"),
        ("from=yesterday&to=2026-11-02", "invalid_time"),
        ("to=2026-11-02", "missing_parameter"),
        ("from=1900-01-01&to=1900-02-01&granularity=day", "out_of_range"),
        ("from=2026-11-01&to=2026-11-02&week_start=friday", "invalid_week_start"),
    ];
    for (params, code) in cases {
        let (status, body) = app.get(&alice, &format!("/api/v1/usage/series?{params}")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{params}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (_, body) = app.get(&alice, "/api/v1/usage/series?from=2020-01-01&to=2026-01-01&granularity=minute").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("limit of 10000"), "{body}");
    // `auto` picks a granularity that fits instead.
    let (status, body) = app.get(&alice, "/api/v1/usage/series?from=2020-01-01&to=2026-01-01&granularity=auto").await;
    assert_eq!((status, body["granularity"].as_str()), (200, Some("week")));

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_docs_and_readiness_are_served() {
    let (env, app, _, _) = setup().await;
    let served: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(served, stored, "the served document is the reviewed snapshot");
    let r = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("swagger"), "Swagger UI comes from the binary");

    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["migrations"], "current");
    // A schema behind the binary is not ready.
    sqlx::query("delete from _sqlx_migrations where version = (select max(version) from _sqlx_migrations)")
        .execute(&env.pool)
        .await
        .unwrap();
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(body["checks"]["migrations"].as_str().unwrap().starts_with("at "), "{body}");
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200, "still alive");

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_view_is_never_served_after_a_newer_commit_is_notified() {
    let (env, app, alice, admin) = setup().await;
    let params = "from=2026-11-20&to=2026-11-21&granularity=hour";
    let all = format!("{params}&user=*");
    for round in 1..=5u64 {
        // Read twice (the second comes from the cache), then commit more.
        for _ in 0..2 {
            series(&app, &alice, params).await;
            series(&app, &admin, &all).await;
        }
        tokenusage_projector::count_events(
            &env.pool,
            vec![ev(&format!("k{round}"), "alice", t("2026-11-20T05:00:00Z"), "chat", "m", 10, 0)],
        )
        .await
        .unwrap();
        let want = 10 * round as i64;
        let fresh = common::eventually(std::time::Duration::from_secs(5), || async {
            let own = series(&app, &alice, params).await["total"]["total_tokens"].as_i64();
            let everyone = series(&app, &admin, &all).await["total"]["total_tokens"].as_i64();
            (own == Some(want) && everyone == Some(want)).then_some(())
        })
        .await;
        assert!(fresh.is_some(), "round {round}: the cache kept serving the old total");
    }
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tokenusage_api_series_cache_total{result=\"hit\"}"), "the cache is used");
    app.stop().await;
    env.cleanup().await;
}
