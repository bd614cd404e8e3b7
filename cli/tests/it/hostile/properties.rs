//! Property tests: arbitrary Unicode in every query parameter of every
//! route, and in every field of published events.

use std::time::Duration;

use serde_json::{Value, json};
use tokenusage_api::Role;
use tokenusage_schema::keys;

use super::*;
use crate::common::{TestApp, TestEnv, test_api_args, wait_for_totals};

/// The property suite for query parameters: arbitrary Unicode (NUL and
/// other controls, lone-surrogate escapes, 4-byte characters, RTL marks,
/// long runs) in any parameter of any route gets a 2xx or a specific 4xx
/// in the envelope, never a 5xx.
#[test]
fn any_unicode_in_any_query_parameter_gets_a_2xx_or_a_specific_4xx() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (env, app, token) = rt.block_on(async {
        let env = TestEnv::database_only().await;
        env.add_user("root", Role::Admin, "root-password").await;
        let app = TestApp::spawn_api(&env, test_api_args()).await;
        let token = app.login("root", "root-password").await;
        (env, app, token)
    });
    let routes = vec![
        "/api/v1/usage/series",
        "/api/v1/usage/summary",
        "/api/v1/usage/breakdown",
        "/api/v1/usage/dimensions",
        "/api/v1/usage/export.csv",
        "/api/v1/admin/usage/top-users",
        "/api/v1/admin/audit",
        "/api/v1/audit/views",
        "/api/v1/admin/dead-letters",
        "/api/v1/me",
        "/api/v1/usage/overview",
        "/api/v1/teams",
        "/api/v1/admin/teams",
        "/api/v1/admin/keys",
        "/api/v1/admin/prices",
        "/api/v1/budgets",
        "/api/v1/budgets/check",
        "/api/v1/admin/webhooks",
        "/api/v1/admin/webhooks/deliveries",
        "/api/v1/admin/providers",
        "/api/v1/admin/reconciliation",
        "/api/v1/admin/reconciliation.csv",
    ];
    // Every GET route of the OpenAPI document without path parameters is
    // here, but those that take no bearer credential (covered elsewhere).
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let elsewhere = ["/api/v1/live", "/healthz", "/readyz", "/metrics"].contains(&path.as_str());
        if ops.get("get").is_some() && !path.contains('{') && !elsewhere {
            assert!(routes.contains(&path.as_str()), "GET {path} is not in the property suite's routes");
        }
    }
    let names = vec![
        "from",
        "to",
        "tz",
        "granularity",
        "group",
        "activity",
        "model",
        "user",
        "week_start",
        "limit",
        "actor",
        "subject",
        "action",
        "outcome",
        "before",
        "all",
        "team",
        "project",
        "state",
        "x\u{202e}",
    ];
    let value = prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just('\0'),
                Just('\u{202e}'),
                Just('\u{1F600}'),
                Just('\n'),
                Just('%'),
                Just('&'),
                any::<char>()
            ],
            0..30
        )
        .prop_map(|c| c.into_iter().collect::<String>()),
        Just("\\ud800".to_owned()),
        (1usize..3000).prop_map(|n| "\u{1F600}".repeat(n)),
        Just("2026-11-20".to_owned()),
        Just("*".to_owned()),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 300, ..ProptestConfig::default() });
    let strategy = (proptest::sample::select(routes), proptest::sample::select(names), value, any::<bool>());
    let result = runner.run(&strategy, |(route, name, value, with_range)| {
        let mut url = reqwest::Url::parse(&app.url(route)).unwrap();
        {
            let mut q = url.query_pairs_mut();
            if with_range {
                q.append_pair("from", "2026-11-20T00:00:00Z").append_pair("to", "2026-11-21T00:00:00Z");
            }
            q.append_pair(name, &value);
        }
        let (status, ct, _, body) =
            rt.block_on(async { parts(app.http.get(url.clone()).bearer_auth(&token).send().await.unwrap()).await });
        prop_assert!(status < 500, "{url}: {status} {body}");
        if status >= 400 {
            prop_assert!(
                ct.starts_with("application/json") && body["error"]["code"].is_string(),
                "{url}: {status} {ct} {body}"
            );
            prop_assert!(body["error"]["code"] != "internal", "{url}: {body}");
        }
        Ok(())
    });
    rt.block_on(async {
        app.stop().await;
        env.cleanup().await;
    });
    result.unwrap();
}

/// The round trip: events with arbitrary Unicode in every string field go
/// through HTTP ingest, Kafka and the projector; every accepted event is
/// counted exactly once, nothing accepted is dead-lettered, and every
/// refused one got a field error.
#[test]
fn any_unicode_in_published_events_is_refused_by_field_or_counted_exactly() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let text = prop_oneof![
        "[a-z0-9._-]{1,12}",
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![Just('\0'), Just('\u{202e}'), Just('\u{1F600}'), Just('\u{FFFF}'), Just('\t'), any::<char>()],
            1..20
        )
        .prop_map(|c| c.into_iter().collect::<String>()),
        (100usize..300).prop_map(|n| "é".repeat(n)),
    ];
    let field =
        proptest::sample::select(vec!["user_id", "event_id", "activity", "model", "meta_key", "meta_value", "source"]);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let cases: Vec<(usize, &str, String)> = (0..400)
        .map(|i| {
            let f = field.new_tree(&mut runner).unwrap().current();
            let t = text.new_tree(&mut runner).unwrap().current();
            (i, f, t)
        })
        .collect();
    rt.block_on(async {
        let env = TestEnv::new().await;
        let app = TestApp::spawn(&env).await;
        let key = keys::create(&env.pool, "k", "prop", 1_000_000).await.unwrap().key;
        let mut accepted = Vec::new();
        for chunk in cases.chunks(100) {
            let items: Vec<Value> = chunk
                .iter()
                .map(|(i, f, t)| {
                    let mut e = event(&format!("p{i}"), &format!("user{}", i % 9));
                    match *f {
                        "meta_key" => e["metadata"] = Value::Object([(t.clone(), json!(*i))].into_iter().collect()),
                        "meta_value" => e["metadata"] = json!({"k": t}),
                        "event_id" => e[*f] = json!(format!("{t}-{i}")),
                        f => e[f] = json!(t),
                    }
                    e
                })
                .collect();
            let r = app.http.post(app.url("/api/v1/events")).bearer_auth(&key).json(&items).send().await.unwrap();
            let (status, _, _, body) = parts(r).await;
            assert!([202, 207, 400].contains(&status), "{status} {body}");
            for (item, result) in items.iter().zip(body["results"].as_array().unwrap()) {
                match result["status"].as_str() {
                    Some("accepted") => accepted.push(item.clone()),
                    Some("rejected") => assert!(result["errors"][0]["field"].is_string(), "{result}"),
                    other => panic!("{other:?}: {result}"),
                }
            }
        }
        assert!(accepted.len() > 100 && accepted.len() < cases.len(), "{} of {} accepted", accepted.len(), cases.len());
        let want = accepted.iter().fold((0i64, 0i64, 0i64), |t, e| {
            (t.0 + e["input_tokens"].as_i64().unwrap(), t.1 + e["output_tokens"].as_i64().unwrap(), t.2 + 1)
        });
        assert!(wait_for_totals(&env.pool, want, Duration::from_secs(60)).await, "every accepted event counted once");
        let dead: i64 = sqlx::query_scalar("select count(*) from dead_letters").fetch_one(&env.pool).await.unwrap();
        assert_eq!(dead, 0, "nothing accepted was refused downstream");
        // Per user, the stored ids and users are exactly the accepted ones.
        let users: Vec<String> = sqlx::query_scalar("select distinct user_id from usage_events order by 1")
            .fetch_all(&env.pool)
            .await
            .unwrap();
        let mut want_users: Vec<String> = accepted
            .iter()
            .map(|e| e["user_id"].as_str().unwrap().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        want_users.sort();
        let mut users_sorted = users.clone();
        users_sorted.sort();
        assert_eq!(users_sorted, want_users);
        app.stop().await;
        env.cleanup().await;
    });
}
