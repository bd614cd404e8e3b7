//! Budgets and alerts against the real database, broker and a local webhook
//! receiver: one signed notification per crossing across kill -9 of the
//! sender and the projector, "resolved" after re-pricing, calendar windows
//! closing at local midnight, and who may set and read which budgets.

use crate::common;
use crate::live::{connect, next_of, send};
use crate::projector::projector_process;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use common::{TestApp, TestEnv, eventually, loopback_receivers, produce, test_api_args, tokenusage};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokenusage_api::Role;
use tokenusage_budgets::{self as budgets, Measure, NewBudget, Period, Scope, webhooks};

/// What the receiver was sent: headers and the exact body bytes.
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A webhook receiver on a free port. The first request whose threshold is
/// `hold` is answered only after 30 s (long enough for the test to kill the
/// sender while it waits); every other request at once.
pub(crate) struct Receiver {
    pub(crate) url: String,
    got: Received,
}

impl Receiver {
    pub(crate) async fn start(hold: Option<i64>) -> Receiver {
        let got: Received = Arc::default();
        let g = got.clone();
        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (g, held) = (g.clone(), held.clone());
                async move {
                    let threshold =
                        serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["threshold_percent"].as_i64());
                    g.lock().unwrap().push((headers, body));
                    if hold.is_some() && threshold == hold && !held.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got }
    }

    pub(crate) fn bodies(&self) -> Vec<(HeaderMap, Value)> {
        self.got.lock().unwrap().iter().map(|(h, b)| (h.clone(), serde_json::from_slice(b).unwrap())).collect()
    }

    /// Checks every received signature against `secret`, as a receiver
    /// would: HMAC-SHA256 over "<t>.<body>".
    pub(crate) fn assert_signed(&self, secret: &str) {
        for (h, body) in self.got.lock().unwrap().iter() {
            let sig = h.get("tokenusage-signature").expect("signed").to_str().unwrap();
            let (t, v1) = sig.split_once(",v1=").unwrap();
            let t = t.strip_prefix("t=").unwrap();
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(format!("{t}.").as_bytes());
            mac.update(body);
            mac.verify_slice(&hex::decode(v1).unwrap()).expect("a valid signature");
            let age = Utc::now().timestamp() - t.parse::<i64>().unwrap();
            assert!((0..120).contains(&age), "a current timestamp: {age} s");
        }
    }
}

fn event(
    id: &str,
    user: &str,
    at: DateTime<Utc>,
    model: &str,
    input: u64,
    project: Option<&str>,
) -> tokenusage_contract::UsageEvent {
    tokenusage_contract::UsageEvent {
        source: "budget-test".into(),
        event_id: id.into(),
        user_id: user.into(),
        occurred_at: at,
        activity: "chat".into(),
        model: model.into(),
        input_tokens: input,
        output_tokens: 0,
        kinds: Default::default(),
        billing: Default::default(),
        cost: None,
        project: project.map(str::to_owned),
        metadata: None,
    }
}

pub(crate) fn new_budget(
    scope: Scope,
    measure: Measure,
    amount: Value,
    period: Period,
    zone: &str,
    thresholds: &[i32],
    hooks: &[&str],
) -> NewBudget {
    NewBudget {
        name: None,
        scope,
        measure,
        amount,
        period,
        zone: Some(zone.into()),
        window: None,
        thresholds: Some(thresholds.to_vec()),
        webhooks: hooks.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// `tokenusage api` as a process of its own (the budget evaluator and the
/// webhook sender run in it), for kill -9.
fn api_process(env: &TestEnv, log: &str) -> std::process::Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::process::Command::new(env!("CARGO_BIN_EXE_tokenusage"))
        .args(["api", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", env.db.url.expose_secret())
        .env("TOKENUSAGE_JWT_SECRET", common::TEST_JWT_SECRET)
        .env("TOKENUSAGE_OUTBOUND_ALLOW", common::RECEIVERS)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(std::env::temp_dir().join(log)).unwrap())
        .spawn()
        .expect("start tokenusage api")
}

pub(crate) fn kill9(child: &mut std::process::Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

async fn deliveries(env: &TestEnv) -> Vec<(String, String, i32, String)> {
    sqlx::query_as("select event, state, attempts, idempotency_key from webhook_deliveries order by id")
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossing_sends_one_signed_notification_across_kill_9_of_the_sender_and_the_projector() {
    let env = TestEnv::new().await;
    let receiver = Receiver::start(Some(80)).await;
    let secret =
        webhooks::create(&env.pool, &loopback_receivers(), "ops", &receiver.url, "json", "test").await.unwrap();
    let b = budgets::check(&new_budget(
        Scope::User("alice".into()),
        Measure::Tokens,
        json!(10_000),
        Period::Month,
        "UTC",
        &[50, 80],
        &["ops"],
    ))
    .unwrap();
    let budget = budgets::create(&env.pool, &b, "test").await.unwrap();
    let mut projector = projector_process(&env, "budgets-projector-1.log");
    let mut api = api_process(&env, "budgets-api-1.log");
    let now = Utc::now();
    // 55 %: the 50 % threshold.
    let first: Vec<_> = (0..11).map(|i| event(&format!("a-{i}"), "alice", now, "m", 500, None)).collect();
    produce(&env, &first).await;
    eventually(Duration::from_secs(60), || async {
        deliveries(&env).await.iter().any(|d| d.1 == "delivered").then_some(())
    })
    .await
    .expect("the 50 % notification is delivered");
    // The projector dies mid-stream; events keep coming, some twice.
    kill9(&mut projector);
    let second: Vec<_> = (11..17).map(|i| event(&format!("a-{i}"), "alice", now, "m", 500, None)).collect();
    produce(&env, &second).await;
    produce(&env, &first[..5]).await; // duplicates: not counted again
    projector = projector_process(&env, "budgets-projector-2.log");
    // 85 %: the 80 % delivery is sent and held by the receiver; the sender
    // is killed while it waits for the answer.
    eventually(Duration::from_secs(60), || async {
        receiver.bodies().iter().any(|(_, b)| b["threshold_percent"] == 80).then_some(())
    })
    .await
    .expect("the 80 % notification is attempted");
    kill9(&mut api);
    assert_eq!(deliveries(&env).await.iter().filter(|d| d.1 == "pending").count(), 1, "still owed after the kill");
    let mut api = api_process(&env, "budgets-api-2.log");
    let done = eventually(Duration::from_secs(60), || async {
        let d = deliveries(&env).await;
        (d.len() == 2 && d.iter().all(|d| d.1 == "delivered")).then_some(d)
    })
    .await
    .expect("both notifications delivered after the restart");
    // Duplicates and a later sweep change nothing.
    produce(&env, &second).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(deliveries(&env).await, done, "no further notifications");

    receiver.assert_signed(&secret);
    let bodies = receiver.bodies();
    let keys: std::collections::BTreeSet<String> =
        bodies.iter().map(|(h, _)| h["idempotency-key"].to_str().unwrap().to_owned()).collect();
    assert_eq!(keys.len(), 2, "one notification per threshold: {keys:?}");
    let eighty: Vec<&(HeaderMap, Value)> = bodies.iter().filter(|(_, b)| b["threshold_percent"] == 80).collect();
    assert_eq!(eighty.len(), 2, "the interrupted attempt and the one after the restart");
    assert_eq!(eighty[0].1, eighty[1].1, "the same body both times");
    assert_eq!(eighty[0].0["idempotency-key"], eighty[1].0["idempotency-key"]);
    let b80 = &eighty[1].1;
    assert_eq!(
        (b80["type"].as_str(), b80["spent"].as_i64(), b80["budget"]["id"].as_i64()),
        (Some("budget.crossed"), Some(8500), Some(budget.id))
    );
    let crossings: Vec<(i32, i32)> =
        sqlx::query_as("select threshold, episode from budget_crossings order by threshold")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(crossings, vec![(50, 1), (80, 1)]);
    let spent: i64 = sqlx::query_scalar("select spent from budget_state").fetch_one(&env.pool).await.unwrap();
    assert_eq!(spent, 8500, "17 distinct events of 500 tokens");
    kill9(&mut api);
    kill9(&mut projector);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_pricing_a_crossing_away_sends_resolved_and_the_state_follows_it() {
    let env = TestEnv::new().await;
    let receiver = Receiver::start(None).await;
    webhooks::create(&env.pool, &loopback_receivers(), "slack", &receiver.url, "slack", "test").await.unwrap();
    let ok = |out: std::process::Output| assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ok(tokenusage(
        &env,
        &["prices", "set", "m-budget", "--from", "2026-01-01", "--input", "10", "--output", "10", "--source", "test"],
        None,
    ));
    let app = TestApp::spawn(&env).await;
    let b = budgets::check(&new_budget(
        Scope::Project("search".into()),
        Measure::Cost,
        json!("0.01"),
        Period::Month,
        "UTC",
        &[80],
        &["slack"],
    ))
    .unwrap();
    budgets::create(&env.pool, &b, "test").await.unwrap();
    // 900 tokens at $10 per million: $0.009, 90 % of $0.01.
    let now = Utc::now();
    produce(
        &env,
        &[event("p-1", "bob", now, "m-budget", 900, Some("search")), event("p-2", "bob", now, "m-budget", 50, None)],
    )
    .await;
    let crossed = eventually(Duration::from_secs(60), || async {
        let b = receiver.bodies();
        (!b.is_empty()).then_some(b)
    })
    .await
    .expect("the crossing is sent");
    assert_eq!(crossed[0].0["tokenusage-event"], "budget.crossed");
    assert_eq!(
        crossed[0].1["text"],
        "Budget `project:search cost per month (UTC)` (project:`search`) crossed 80 %: 0.009 of 0.01 USD (90.0 %)."
    );
    // A correction halves the price from the start of the window's day;
    // re-pricing (`--reprice`) moves the spend to $0.0045.
    let from = now.format("%Y-%m-%d").to_string();
    ok(tokenusage(
        &env,
        &[
            "prices",
            "set",
            "m-budget",
            "--from",
            &from,
            "--input",
            "5",
            "--output",
            "5",
            "--source",
            "fix",
            "--reprice",
        ],
        None,
    ));
    let both = eventually(Duration::from_secs(60), || async {
        let b = receiver.bodies();
        (b.len() >= 2).then_some(b)
    })
    .await
    .expect("the undoing is sent");
    assert_eq!(both.len(), 2);
    assert_eq!(both[1].0["tokenusage-event"], "budget.resolved");
    assert!(both[1].1["text"].as_str().unwrap().contains("is back under 80 %: 0.0045 of 0.01 USD"), "{}", both[1].1);
    assert_ne!(both[0].0["idempotency-key"], both[1].0["idempotency-key"]);
    let (spent, resolved): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("select s.spent, c.resolved_at from budget_state s join budget_crossings c using (budget_id)")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(spent, 4_500_000, "$0.0045 in nano-units");
    assert!(resolved.is_some());
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_windows_close_at_local_midnight_in_new_york_and_kathmandu() {
    let env = TestEnv::new().await;
    let mut api = test_api_args();
    api.budgets.off = true; // evaluated below at chosen instants
    let app = TestApp::spawn_with_api(&env, api).await;
    let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    // New York, 8 March 2026 (the day DST starts): 23:59 and 00:01 local.
    // Kathmandu (+05:45), 10/11 June: 23:59 and 00:01 local.
    let events = [
        event("ny-1", "ny", t("2026-03-09T03:59:00Z"), "m", 10, None),
        event("ny-2", "ny", t("2026-03-09T04:01:00Z"), "m", 20, None),
        event("ktm-1", "ktm", t("2026-06-10T18:14:00Z"), "m", 30, None),
        event("ktm-2", "ktm", t("2026-06-10T18:16:00Z"), "m", 40, None),
    ];
    produce(&env, &events).await;
    assert!(common::wait_for_totals(&env.pool, (100, 0, 4), Duration::from_secs(60)).await);
    let mut ids = Vec::new();
    for (user, zone) in [("ny", "America/New_York"), ("ktm", "Asia/Kathmandu")] {
        let b = budgets::check(&new_budget(
            Scope::User(user.into()),
            Measure::Tokens,
            json!(100),
            Period::Day,
            zone,
            &[10],
            &[],
        ))
        .unwrap();
        ids.push(budgets::create(&env.pool, &b, "test").await.unwrap().id);
    }
    let board = budgets::board::Board::default();
    let everything = budgets::board::Touched { everything: true, ..Default::default() };
    let spent_at = |now: &'static str| {
        let (board, everything, pool) = (&board, &everything, &env.pool);
        async move {
            let s = budgets::evaluate::pass(pool, board, everything, t(now)).await.unwrap();
            s.iter().map(|s| (s.budget.scope.id().to_owned(), s.spent, s.window_start)).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        spent_at("2026-03-09T03:59:30Z").await[0],
        ("ny".into(), 10, t("2026-03-08T05:00:00Z")),
        "a 23-hour day: from 00:00 EST to 24:00 EDT"
    );
    assert_eq!(spent_at("2026-03-09T04:00:30Z").await[0], ("ny".into(), 20, t("2026-03-09T04:00:00Z")));
    assert_eq!(spent_at("2026-06-10T18:14:30Z").await[1], ("ktm".into(), 30, t("2026-06-09T18:15:00Z")));
    assert_eq!(spent_at("2026-06-10T18:15:30Z").await[1], ("ktm".into(), 40, t("2026-06-10T18:15:00Z")));
    // Each window crossed its 10 % once: two windows, two crossings each.
    let crossings: Vec<(i64, DateTime<Utc>)> =
        sqlx::query_as("select budget_id, window_start from budget_crossings order by 1, 2")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        crossings,
        vec![
            (ids[0], t("2026-03-08T05:00:00Z")),
            (ids[0], t("2026-03-09T04:00:00Z")),
            (ids[1], t("2026-06-09T18:15:00Z")),
            (ids[1], t("2026-06-10T18:15:00Z")),
        ]
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_set_and_read_only_their_teams_budgets_and_gateways_check_with_a_publisher_key() {
    let env = TestEnv::new().await;
    for (u, role) in [("root", Role::Admin), ("ma", Role::Viewer), ("mb", Role::Viewer), ("u", Role::Viewer)] {
        env.add_user(u, role, &format!("{u}-password")).await;
    }
    for (team, manager, members) in [("a", "ma", vec!["u".to_owned()]), ("b", "mb", vec!["v".to_owned()])] {
        tokenusage_api::teams::create(&env.pool, team, "test").await.unwrap();
        tokenusage_api::teams::set_members(&env.pool, team, &members, tokenusage_api::teams::TeamRole::Member)
            .await
            .unwrap();
        tokenusage_api::teams::set_member(&env.pool, team, manager, tokenusage_api::teams::TeamRole::Manager)
            .await
            .unwrap();
    }
    let app = TestApp::spawn(&env).await;
    let token = |u: &'static str| {
        let app = &app;
        async move { app.login(u, &format!("{u}-password")).await }
    };
    let (root, ma, u) = (token("root").await, token("ma").await, token("u").await);
    let post = |tok: String, body: Value| {
        let app = &app;
        async move {
            let r = app.http.post(app.url("/api/v1/budgets")).bearer_auth(tok).json(&body).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let team_b = json!({"scope": {"kind": "team", "id": "b"}, "measure": "tokens", "amount": 1000, "period": "month"});
    let (s, b_budget) = post(root.clone(), team_b.clone()).await;
    assert_eq!(s, 201, "{b_budget}");
    let b_id = b_budget["id"].as_i64().unwrap();
    assert_eq!(post(ma.clone(), team_b).await.0, 403, "a manager of a cannot set b's budgets");
    let (s, a_budget) = post(
        ma.clone(),
        json!({"scope": {"kind": "team", "id": "a"}, "measure": "tokens", "amount": 100, "period": "day",
            "zone": "Asia/Kathmandu", "thresholds": [50]}),
    )
    .await;
    assert_eq!(s, 201, "{a_budget}");
    let team_a = json!({"scope": {"kind": "team", "id": "a"}, "measure": "tokens", "amount": 5, "period": "day"});
    assert_eq!(post(u.clone(), team_a).await.0, 403, "a member is not a manager");
    let personal = json!({"scope": {"kind": "user", "id": "u"}, "measure": "tokens", "amount": 10, "period": "rolling", "window": "24h"});
    let (s, u_budget) = post(u.clone(), personal.clone()).await;
    assert_eq!(s, 201, "{u_budget}");
    // Names are unique per scope, case aside: a name given twice is refused
    // (409, nothing stored), a made-up one gets a number, and another scope
    // may use the same name.
    let named = |name: &str, scope: Value| json!({"name": name, "scope": scope, "measure": "tokens", "amount": 10, "period": "day"});
    let (s, mine) = post(u.clone(), named("Mine", json!({"kind": "user", "id": "u"}))).await;
    assert_eq!((s, mine["name"].as_str()), (201, Some("Mine")), "{mine}");
    let (s, e) = post(u.clone(), named("  mINE ", json!({"kind": "user", "id": "u"}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("conflict")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("already exists for user:u"), "{e}");
    let (s, again) = post(u.clone(), personal).await;
    assert_eq!(s, 201, "{again}");
    assert_eq!(again["name"].as_str().unwrap(), format!("{} (2)", u_budget["name"].as_str().unwrap()));
    let (s, other) = post(ma.clone(), named("Mine", json!({"kind": "team", "id": "a"}))).await;
    assert_eq!(s, 201, "another scope may use the name: {other}");
    let stored: i64 = sqlx::query_scalar("select count(*) from budgets where lower(name) = 'mine'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored, 2, "one per scope");
    for (tok, b) in [(&u, &mine), (&u, &again), (&ma, &other)] {
        let url = app.url(&format!("/api/v1/budgets/{}", b["id"]));
        let r = app.http.delete(url).bearer_auth(tok).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 204, "the name checks' budgets are removed again");
    }
    let on_ma = json!({"scope": {"kind": "user", "id": "ma"}, "measure": "tokens", "amount": 10, "period": "day"});
    assert_eq!(post(u.clone(), on_ma).await.0, 403, "nobody sets budgets on someone else but admins");
    let project = json!({"scope": {"kind": "project", "id": "p"}, "measure": "tokens", "amount": 10, "period": "day"});
    assert_eq!(post(ma.clone(), project).await.0, 403, "project budgets are admins'");
    let bad = json!({"scope": {"kind": "user", "id": "u"}, "measure": "cost", "amount": 10, "period": "day"});
    let (s, e) = post(u.clone(), bad).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("invalid_amount")), "{e}");

    let ids = |v: &Value| -> Vec<i64> { v.as_array().unwrap().iter().map(|b| b["id"].as_i64().unwrap()).collect() };
    let (a_id, u_id) = (a_budget["id"].as_i64().unwrap(), u_budget["id"].as_i64().unwrap());
    assert_eq!(ids(&app.get(&ma, "/api/v1/budgets").await.1), vec![a_id, u_id], "a's budget and its member's");
    assert_eq!(ids(&app.get(&u, "/api/v1/budgets").await.1), vec![u_id]);
    assert_eq!(ids(&app.get(&root, "/api/v1/budgets").await.1), vec![b_id, a_id, u_id]);
    assert_eq!(app.get(&ma, &format!("/api/v1/budgets/{b_id}")).await.0, 404, "another team's budget is not there");
    assert_eq!(app.get(&ma, "/api/v1/budgets/999999").await.0, 404, "nor is a missing one");
    let del = app.http.delete(app.url(&format!("/api/v1/budgets/{b_id}"))).bearer_auth(&ma).send().await.unwrap();
    assert_eq!(del.status(), 404);

    // Usage in team a's Kathmandu day: u's 60 tokens are 60 % of 100 and
    // 600 % of u's personal 10.
    produce(&env, &[event("g-1", "u", Utc::now(), "m", 60, None)]).await;
    let state = eventually(Duration::from_secs(60), || async {
        let (_, v) = app.get(&ma, &format!("/api/v1/budgets/{a_id}")).await;
        (v["state"]["spent"] == 60).then_some(v)
    })
    .await
    .expect("the team budget is evaluated");
    assert_eq!(state["state"]["percent"], 60.0);
    assert_eq!(state["state"]["crossed"].as_array().unwrap().len(), 1);

    // The gateway check: a publisher key, never a user's token.
    let key = tokenusage_schema::keys::create(&env.pool, "gateway", "gateway", 100).await.unwrap().key;
    let check = |tok: String, q: &'static str| {
        let app = &app;
        async move {
            let r = app.http.get(app.url(&format!("/api/v1/budgets/check?{q}"))).bearer_auth(tok).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(check(u.clone(), "user=u").await.0, 401, "a user's token is not a publisher key");
    assert_eq!(check("tu_nope".into(), "user=u").await.0, 401);
    let (s, c) = check(key.clone(), "user=u").await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["over"], true, "u's personal budget is at 600 %");
    assert_eq!(ids(&c["budgets"]), vec![a_id, u_id], "u's own and u's team's");
    let (_, c) = check(key.clone(), "team=b").await;
    assert_eq!((c["over"].as_bool(), ids(&c["budgets"])), (Some(false), vec![b_id]));

    // Live: a manager's socket is pushed exactly what the manager may see.
    let mut ws = connect(&app, Some(&ma), None).await.unwrap();
    send(&mut ws, json!({"type": "watch_budgets"})).await;
    let pushed = next_of(&mut ws, &["budgets"], Duration::from_secs(10)).await.expect("budgets pushed");
    assert_eq!(ids(&pushed["budgets"]), vec![a_id, u_id]);
    produce(&env, &[event("g-2", "u", Utc::now(), "m", 10, None)]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let moved = next_of(&mut ws, &["budgets"], left).await.expect("the change is pushed");
        assert_eq!(ids(&moved["budgets"]), vec![a_id, u_id], "never anything else");
        let a = moved["budgets"].as_array().unwrap().iter().find(|b| b["id"] == a_id).unwrap().clone();
        if a["state"]["spent"] == 70 {
            break;
        }
    }
    // A second watch on the same socket is answered too (it used to get
    // nothing), and is on the record like the first.
    send(&mut ws, json!({"type": "watch_budgets"})).await;
    let again = next_of(&mut ws, &["budgets"], Duration::from_secs(10)).await.expect("a second watch is answered");
    assert_eq!(ids(&again["budgets"]), vec![a_id, u_id]);
    let watches: i64 = sqlx::query_scalar("select count(*) from audit_log where action = 'live.watch_budgets'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(watches >= 2, "both watches are audited: {watches}");

    // One audit entry per request, the check's with the key as actor.
    let audited: i64 = sqlx::query_scalar("select count(*) from audit_log where action = 'budgets.check'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(audited, 4, "every check, refused ones included");
    app.stop().await;
    env.cleanup().await;
}

/// Webhook URLs cannot be aimed at the server's own network (SSRF): every
/// inward form the issue tried is refused when the endpoint is added, by
/// name of what it is; and a delivery to an inward URL stored some other
/// way is refused as it connects, with nothing sent (a receiver on that
/// address sees no request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_cannot_reach_the_servers_own_network() {
    let env = TestEnv::new().await;
    let mut api = test_api_args();
    api.budgets.outbound.allow.clear();
    let app = TestApp::spawn_with_api(&env, api).await;
    env.add_user("root", tokenusage_api::Role::Admin, "pw-root-123456").await;
    let token = app.login("root", "pw-root-123456").await;
    for (i, url) in [
        "http://127.0.0.1:5432/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://[::1]/",
        "http://localhost/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
    ]
    .iter()
    .enumerate()
    {
        let r = app
            .http
            .post(app.url("/api/v1/admin/webhooks"))
            .bearer_auth(&token)
            .json(&json!({"name": format!("w{i}"), "url": url}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{url}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("outbound calls may not reach"), "{url}: {message}");
    }

    // An endpoint stored before the rule (or an allowance withdrawn): the
    // sender refuses it at connect time, and the receiver gets nothing.
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = receiver.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let endpoint: i64 = sqlx::query_scalar(
        "insert into webhook_endpoints (name, url, secret, format, created_by) values ('old', $1, 's', 'json', 't') returning id",
    )
    .bind(format!("http://localhost:{port}/hook"))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into webhook_deliveries (endpoint_id, event, idempotency_key, payload) values ($1, 'budget.crossed', 'k1', '{}')",
    )
    .bind(endpoint)
    .execute(&env.pool)
    .await
    .unwrap();
    let error = eventually(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, Option<String>>(
            "select last_error from webhook_deliveries where idempotency_key = 'k1'",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap()
    })
    .await
    .expect("the delivery was attempted");
    assert!(error.contains("loopback"), "{error}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing connected to the inward receiver");
    app.stop().await;
    env.cleanup().await;
}

/// Only admins route alerts to webhook endpoints (the admins' channels):
/// a viewer naming one, existing or not, gets the same 403, so the
/// endpoint list cannot be probed either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_send_budget_alerts_to_webhook_endpoints() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    webhooks::create(&env.pool, &loopback_receivers(), "admins", "http://127.0.0.1:9/hook", "slack", "t")
        .await
        .unwrap();
    env.add_user("eve", tokenusage_api::Role::Viewer, "pw-eve-1234567").await;
    env.add_user("root", tokenusage_api::Role::Admin, "pw-root-123456").await;
    let eve = app.login("eve", "pw-eve-1234567").await;
    let root = app.login("root", "pw-root-123456").await;
    let budget = |hook: &str| {
        json!({"scope": {"kind": "user", "id": "eve"}, "measure": "tokens", "amount": 1000, "period": "day",
               "name": "URGENT: admins must re-login", "webhooks": [hook]})
    };
    let mut answers = Vec::new();
    for hook in ["admins", "no-such-endpoint"] {
        let r = app.http.post(app.url("/api/v1/budgets")).bearer_auth(&eve).json(&budget(hook)).send().await.unwrap();
        let status = r.status().as_u16();
        answers.push((status, r.json::<Value>().await.unwrap()["error"]["message"].clone()));
    }
    assert_eq!(answers[0], answers[1], "an existing and an unknown endpoint look the same");
    assert_eq!(answers[0].0, 403, "{answers:?}");
    let r = app.http.post(app.url("/api/v1/budgets")).bearer_auth(&root).json(&budget("admins")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "an admin may");
    // Secrets inside an endpoint's URL never come back in a listing.
    webhooks::create(
        &env.pool,
        &loopback_receivers(),
        "basic",
        "http://bot:pw-in-url@127.0.0.1:9/h?token=tok-in-url",
        "json",
        "t",
    )
    .await
    .unwrap();
    let listed = app.get(&root, "/api/v1/admin/webhooks").await.1.to_string();
    assert!(listed.contains("bot:***@127.0.0.1:9/h?token=***"), "{listed}");
    assert!(!listed.contains("pw-in-url") && !listed.contains("tok-in-url"), "{listed}");
    app.stop().await;
    env.cleanup().await;
}

/// "Who viewed my usage" names every view that showed my budget or my
/// team's: a manager's list, an admin's, and a probe of my budget's id by
/// someone who may not see it (told 404, recorded as denied with me as its
/// subject).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_views_and_probes_are_in_who_viewed_my_usage() {
    let env = TestEnv::new().await;
    for (u, role) in [("root", Role::Admin), ("mia", Role::Viewer), ("ann", Role::Viewer), ("eve", Role::Viewer)] {
        env.add_user(u, role, &format!("{u}-password")).await;
    }
    tokenusage_api::teams::create(&env.pool, "t", "test").await.unwrap();
    tokenusage_api::teams::set_members(&env.pool, "t", &["ann".to_owned()], tokenusage_api::teams::TeamRole::Member)
        .await
        .unwrap();
    tokenusage_api::teams::set_member(&env.pool, "t", "mia", tokenusage_api::teams::TeamRole::Manager).await.unwrap();
    let app = TestApp::spawn(&env).await;
    let login = |u: &'static str| {
        let app = &app;
        async move { app.login(u, &format!("{u}-password")).await }
    };
    let (root, mia, ann, eve) = (login("root").await, login("mia").await, login("ann").await, login("eve").await);
    let r = app
        .http
        .post(app.url("/api/v1/budgets"))
        .bearer_auth(&ann)
        .json(&json!({"scope": {"kind": "user", "id": "ann"}, "measure": "tokens", "amount": 1000, "period": "day"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    assert_eq!(app.get(&mia, "/api/v1/budgets").await.0, 200);
    assert_eq!(app.get(&root, "/api/v1/budgets").await.0, 200);
    assert_eq!(app.get(&eve, &format!("/api/v1/budgets/{id}")).await.0, 404, "eve learns nothing");

    let (_, views) = app.get(&ann, "/api/v1/audit/views?limit=1000").await;
    let seen = |actor: &str, action: &str, outcome: &str| {
        views
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["actor"] == actor && v["action"] == action && v["outcome"] == outcome)
    };
    assert!(seen("mia", "budgets.list", "ok"), "the manager's list: {views}");
    assert!(seen("root", "budgets.list", "ok"), "the admin's list: {views}");
    assert!(seen("eve", "budgets.get", "denied"), "eve's probe: {views}");
    assert!(
        views.as_array().unwrap().iter().all(|v| v.get("covers").is_none_or(|c| c == &json!(["ann"]))),
        "a member sees only herself among the people an entry covered: {views}"
    );
    let (_, denied) = app.get(&root, "/api/v1/admin/audit?outcome=denied&limit=1000").await;
    assert!(
        denied.as_array().unwrap().iter().any(|v| v["actor"] == "eve" && v["subject"] == "ann"),
        "admins find the probe among denials: {denied}"
    );
    app.stop().await;
    env.cleanup().await;
}
