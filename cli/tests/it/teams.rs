//! Teams, managers and projects against the real server and database: the
//! cross-user matrix (viewer, manager of team A, manager of team B, member
//! of both, admin × every usage route, CSV and socket subscription), team
//! totals equal to their members' sums for random ranges and zones, a
//! removed member leaving the team's views, and grouping and filtering by
//! project and source equal to the raw events.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{TestApp, TestEnv, test_api_args};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokenusage_api::Role;
use tokenusage_api::teams::{self, TeamRole};
use tokenusage_contract::UsageEvent;

use crate::live::{connect, next_of, send};
use crate::security::audit_count;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Each user's input tokens: distinct digits, so any sum says who is in it.
const USAGE: [(&str, i64); 7] = [
    ("u-vera", 1),
    ("u-mia", 20),
    ("u-max", 300),
    ("u-bea", 4_000),
    ("u-ann", 50_000),
    ("u-ben", 600_000),
    ("u-otto", 7_000_000),
];
const TEAM_A: [&str; 3] = ["u-ann", "u-bea", "u-mia"];
const TEAM_B: [&str; 3] = ["u-bea", "u-ben", "u-max"];

fn usage_of(users: &[&str]) -> i64 {
    USAGE.iter().filter(|(u, _)| users.contains(u)).map(|(_, n)| n).sum()
}

#[derive(Debug, Clone, Copy)]
enum Caller {
    Viewer,
    ManagerA,
    ManagerB,
    MemberOfBoth,
    Admin,
}

impl Caller {
    const ALL: [Caller; 5] = [Caller::Viewer, Caller::ManagerA, Caller::ManagerB, Caller::MemberOfBoth, Caller::Admin];

    fn id(self) -> &'static str {
        match self {
            Caller::Viewer => "u-vera",
            Caller::ManagerA => "u-mia",
            Caller::ManagerB => "u-max",
            Caller::MemberOfBoth => "u-bea",
            Caller::Admin => "root",
        }
    }

    /// Whose usage this caller may see.
    fn reach(self) -> Vec<&'static str> {
        match self {
            Caller::ManagerA => TEAM_A.to_vec(),
            Caller::ManagerB => TEAM_B.to_vec(),
            Caller::Admin => USAGE.iter().map(|(u, _)| *u).collect(),
            c => vec![c.id()],
        }
    }
}

/// What a request asks to see.
#[derive(Debug, Clone, Copy)]
enum Asked {
    Own,
    User(&'static str),
    Team(&'static str),
    Everyone,
}

impl Asked {
    fn query(self) -> String {
        match self {
            Asked::Own => String::new(),
            Asked::User(u) => format!("&user={u}"),
            Asked::Team(t) => format!("&team={t}"),
            Asked::Everyone => "&user=*".into(),
        }
    }

    /// The users in the answer if `caller` may ask, or the status refusing it.
    fn expect(self, caller: Caller) -> Result<Vec<&'static str>, u16> {
        let admin = matches!(caller, Caller::Admin);
        match self {
            Asked::Own => Ok(if admin { vec![] } else { vec![caller.id()] }),
            Asked::User(u) if admin || caller.reach().contains(&u) => Ok(vec![u]),
            Asked::User(_) => Err(403),
            Asked::Team("team-a") if admin || matches!(caller, Caller::ManagerA) => Ok(TEAM_A.to_vec()),
            Asked::Team("team-b") if admin || matches!(caller, Caller::ManagerB) => Ok(TEAM_B.to_vec()),
            Asked::Team(_) if admin => Err(404),
            Asked::Team(_) => Err(403),
            Asked::Everyone if admin => Ok(USAGE.iter().map(|(u, _)| *u).collect()),
            Asked::Everyone => Err(403),
        }
    }
}

async fn seed_matrix(env: &TestEnv) {
    for (u, _) in USAGE {
        env.add_user(u, Role::Viewer, "password-123").await;
    }
    env.add_user("root", Role::Admin, "password-123").await;
    for table in ["usage_minute", "usage_quarter_hour", "usage_hour"] {
        for (u, n) in USAGE {
            sqlx::query(&format!(
                "insert into {table} (user_id, activity, model, source, project, bucket, input_tokens, output_tokens, events) \
                 values ($1, 'chat', 'm1', 'src-1', 'proj-x', '2026-11-20T10:00:00Z', $2, 0, 1)"
            ))
            .bind(u)
            .bind(n)
            .execute(&env.pool)
            .await
            .unwrap();
        }
    }
    teams::create(&env.pool, "team-a", "test").await.unwrap();
    teams::create(&env.pool, "team-b", "test").await.unwrap();
    for (team, members, manager) in [("team-a", TEAM_A, "u-mia"), ("team-b", TEAM_B, "u-max")] {
        for m in members {
            let role = if m == manager { TeamRole::Manager } else { TeamRole::Member };
            teams::set_member(&env.pool, team, m, role).await.unwrap();
        }
    }
}

/// Names of users outside `allowed` that appear in `text`.
fn leaked(text: &str, allowed: &[&str]) -> Vec<&'static str> {
    USAGE.iter().map(|(u, _)| *u).filter(|u| !allowed.contains(u) && text.contains(u)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_managers_members_and_admins_see_exactly_their_reach_on_every_route() {
    let env = TestEnv::database_only().await;
    seed_matrix(&env).await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let mut tokens = BTreeMap::new();
    for c in Caller::ALL {
        tokens.insert(c.id(), app.login(c.id(), "password-123").await);
    }
    const RANGE: &str = "from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z";
    let routes = [
        ("series", format!("/api/v1/usage/series?{RANGE}&granularity=hour&group=user")),
        ("summary", format!("/api/v1/usage/summary?{RANGE}&granularity=hour")),
        ("breakdown", format!("/api/v1/usage/breakdown?{RANGE}")),
        ("dimensions", format!("/api/v1/usage/dimensions?{RANGE}")),
        ("csv", format!("/api/v1/usage/export.csv?{RANGE}&granularity=day&group=user")),
        ("overview", format!("/api/v1/usage/overview?{RANGE}")),
    ];
    let asks = [
        Asked::Own,
        Asked::User("u-ann"),
        Asked::User("u-ben"),
        Asked::User("u-bea"),
        Asked::User("u-otto"),
        Asked::User("u-mia"),
        Asked::Team("team-a"),
        Asked::Team("team-b"),
        Asked::Team("team-nope"),
        Asked::Everyone,
    ];
    for caller in Caller::ALL {
        let token = &tokens[caller.id()];
        for (route, base) in &routes {
            for ask in asks {
                let path = format!("{base}{}", ask.query());
                let before = audit_count(&env).await;
                let resp = app.http.get(app.url(&path)).bearer_auth(token).send().await.unwrap();
                let status = resp.status().as_u16();
                let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
                let text = resp.text().await.unwrap();
                let want = ask.expect(caller);
                match &want {
                    Ok(_) => assert_eq!(status, 200, "{caller:?} {path}: {text}"),
                    Err(code) => assert_eq!(status, *code, "{caller:?} {path}: {text}"),
                }
                assert_eq!(audit_count(&env).await, before + 1, "{caller:?} {path}: one audit entry");
                if status != 200 {
                    assert!(leaked(&text, &[]).is_empty(), "{caller:?} {path}: a refusal names nobody: {text}");
                    continue;
                }
                let users = want.unwrap();
                // Nothing of anyone outside the caller's reach, on any route.
                let leaks = leaked(&text, &caller.reach());
                assert!(leaks.is_empty(), "{caller:?} {path} leaked {leaks:?}: {text}");
                // And the numbers are exactly the users asked for.
                if !users.is_empty() && *route != "csv" && *route != "dimensions" {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    let total = v["total"]["input_tokens"].as_i64().or(v["totals"]["input_tokens"].as_i64());
                    assert_eq!(total, Some(usage_of(&users)), "{caller:?} {path}: {text}");
                }
                if *route == "series" && users.len() > 1 {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    let keys: BTreeSet<&str> =
                        v["series"].as_array().unwrap().iter().map(|s| s["key"].as_str().unwrap()).collect();
                    assert_eq!(keys, users.iter().copied().collect(), "{caller:?} {path}: one series per member");
                }
                // The entry names the team and whom the view covered.
                let (subject, covers): (Option<String>, Option<Vec<String>>) =
                    sqlx::query_as("select subject, covers from audit_log where request_id = $1")
                        .bind(&request_id)
                        .fetch_one(&env.pool)
                        .await
                        .unwrap();
                if let Asked::Team(team) = ask {
                    assert_eq!(subject, Some(format!("team:{team}")), "{path}");
                    assert_eq!(covers.unwrap_or_default(), users, "{path}: covered members");
                } else {
                    assert_eq!(covers, None, "{path}");
                }
            }
        }
    }

    // `/api/v1/me` tells each caller the same reach, so the dashboard never
    // works it out: whom they see (themselves, their teams and members; an
    // admin everything) and what they may set budgets on.
    for caller in Caller::ALL {
        let (status, me) = app.get(&tokens[caller.id()], "/api/v1/me").await;
        assert_eq!(status, 200, "{me}");
        let names = |v: &Value, kind: &str| -> BTreeSet<String> {
            v["scopes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["kind"] == kind)
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let (see, set) = (&me["access"]["see"], &me["access"]["set"]);
        let admin = matches!(caller, Caller::Admin);
        assert_eq!(see["everything"], admin, "{caller:?}: {me}");
        assert_eq!(set["everything"], admin, "{caller:?}: {me}");
        let teams: BTreeSet<String> = match caller {
            Caller::ManagerA => ["team-a".to_owned()].into(),
            Caller::ManagerB => ["team-b".to_owned()].into(),
            Caller::Admin => ["team-a".to_owned(), "team-b".to_owned()].into(),
            _ => BTreeSet::new(),
        };
        assert_eq!(names(see, "team"), teams, "{caller:?}: {me}");
        assert_eq!(names(set, "team"), teams, "{caller:?}: {me}");
        assert_eq!(
            names(set, "user"),
            [caller.id().to_owned()].into(),
            "{caller:?} sets budgets on themselves only: {me}"
        );
        if !admin {
            let reach: BTreeSet<String> = caller.reach().into_iter().chain([caller.id()]).map(str::to_owned).collect();
            assert_eq!(names(see, "user"), reach, "{caller:?}: {me}");
        }
    }

    // Socket subscriptions follow the same rules, with the same numbers.
    for caller in Caller::ALL {
        let mut ws = connect(&app, Some(&tokens[caller.id()]), None).await.unwrap();
        for (i, ask) in asks.iter().enumerate() {
            let mut view = json!({"from": "2026-11-20", "to": "2026-11-21", "granularity": "hour"});
            match ask {
                Asked::Own => {}
                Asked::User(u) => view["user"] = json!(u),
                Asked::Team(t) => view["team"] = json!(t),
                Asked::Everyone => view["user"] = json!("*"),
            }
            let id = format!("s{i}");
            send(&mut ws, json!({"type": "subscribe", "id": id, "view": view})).await;
            let msg = next_of(&mut ws, &["snapshot", "error"], Duration::from_secs(5)).await.unwrap();
            match ask.expect(caller) {
                Ok(users) => {
                    assert_eq!(msg["type"], "snapshot", "{caller:?} {ask:?}: {msg}");
                    if !users.is_empty() {
                        assert_eq!(msg["series"]["total"]["input_tokens"].as_i64(), Some(usage_of(&users)));
                    }
                    let leaks = leaked(&msg.to_string(), &caller.reach());
                    assert!(leaks.is_empty(), "{caller:?} {ask:?} leaked {leaks:?}");
                }
                Err(code) => {
                    assert_eq!(msg["type"], "error", "{caller:?} {ask:?}: {msg}");
                    assert_eq!(msg["code"], if code == 404 { "not_found" } else { "forbidden" }, "{msg}");
                }
            }
        }
    }

    // A manager's live team view moves with each member's commits, and
    // only theirs.
    let mut ws = connect(&app, Some(&tokens["u-mia"]), None).await.unwrap();
    let view =
        json!({"from": "2026-11-20", "to": "2026-11-21", "granularity": "hour", "team": "team-a", "group": "user"});
    send(&mut ws, json!({"type": "subscribe", "id": "team", "view": view})).await;
    let snap = next_of(&mut ws, &["snapshot"], Duration::from_secs(5)).await.unwrap();
    assert_eq!(snap["series"]["total"]["input_tokens"].as_i64(), Some(usage_of(&TEAM_A)));
    let live_ev = |id: &str, user: &str, n: u64| crate::live::ev(id, user, "2026-11-20T12:30:00Z", "chat", n);
    tokenusage_projector::count_events(&env.pool, vec![live_ev("x1", "u-otto", 5)]).await.unwrap();
    tokenusage_projector::count_events(&env.pool, vec![live_ev("x2", "u-ann", 9)]).await.unwrap();
    let d =
        next_of(&mut ws, &["delta"], Duration::from_secs(5)).await.expect("a member's commit reaches the team view");
    assert_eq!(d["total"]["input_tokens"].as_i64(), Some(usage_of(&TEAM_A) + 9), "Otto's 5 tokens are not in it: {d}");
    assert!(d["buckets"][0]["groups"].as_object().unwrap().keys().all(|k| TEAM_A.contains(&k.as_str())), "{d}");
    // Demoted, the manager loses the live view at the next token renewal
    // (a socket that renews forever keeps no reach it has lost).
    let admin = &tokens["root"];
    let set_role = |role: &'static str| {
        app.http
            .put(app.url("/api/v1/admin/teams/team-a/members/u-mia"))
            .bearer_auth(admin)
            .json(&json!({"role": role}))
            .send()
    };
    assert_eq!(set_role("member").await.unwrap().status(), 200);
    let renewed = app.login("u-mia", "password-123").await;
    send(&mut ws, json!({"type": "auth", "token": renewed})).await;
    let err = next_of(&mut ws, &["error"], Duration::from_secs(5)).await.expect("the team view is withdrawn");
    assert_eq!((err["id"].as_str(), err["code"].as_str()), (Some("team"), Some("forbidden")), "{err}");
    tokenusage_projector::count_events(&env.pool, vec![live_ev("x3", "u-ann", 4)]).await.unwrap();
    assert!(next_of(&mut ws, &["delta", "snapshot"], Duration::from_secs(2)).await.is_none(), "nothing after it");
    assert_eq!(set_role("manager").await.unwrap().status(), 200);
    drop(ws);

    // Managing teams is for admins; everyone may list the teams they can see.
    let admin_routes: [(&str, &str, Option<Value>); 7] = [
        ("GET", "/api/v1/admin/teams", None),
        ("POST", "/api/v1/admin/teams", Some(json!({"name": "team-c", "members": ["u-otto"]}))),
        ("GET", "/api/v1/admin/teams/team-a", None),
        ("PATCH", "/api/v1/admin/teams/team-c", Some(json!({"name": "team-d"}))),
        ("PUT", "/api/v1/admin/teams/team-d/members/u-vera", Some(json!({"role": "manager"}))),
        ("DELETE", "/api/v1/admin/teams/team-d/members/u-vera", None),
        ("DELETE", "/api/v1/admin/teams/team-d", None),
    ];
    for caller in Caller::ALL {
        for (method, path, body) in &admin_routes {
            let mut req = app.http.request(method.parse().unwrap(), app.url(path)).bearer_auth(&tokens[caller.id()]);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let want = match (caller, *method) {
                (Caller::Admin, "POST") => 201,
                (Caller::Admin, "DELETE") => 204,
                (Caller::Admin, _) => 200,
                _ => 403,
            };
            assert_eq!(status, want, "{caller:?} {method} {path}: {}", resp.text().await.unwrap());
        }
        let (status, mine) = app.get(&tokens[caller.id()], "/api/v1/teams").await;
        assert_eq!(status, 200);
        let visible: Vec<&str> =
            mine["visible"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        let want: Vec<&str> = match caller {
            Caller::ManagerA => vec!["team-a"],
            Caller::ManagerB => vec!["team-b"],
            Caller::Admin => vec!["team-a", "team-b"],
            _ => vec![],
        };
        assert_eq!(visible, want, "{caller:?}");
        let leaks = leaked(&mine.to_string(), &caller.reach());
        assert!(leaks.is_empty(), "{caller:?} /teams leaked {leaks:?}");
    }
    // Bad team requests get specific answers.
    let post = |body: Value| app.http.post(app.url("/api/v1/admin/teams")).bearer_auth(admin).json(&body).send();
    let r = post(json!({"name": "Bad Name"})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("lowercase letters"));
    assert_eq!(post(json!({"name": "team-a"})).await.unwrap().status(), 409);
    let r = app.http.get(app.url(&format!("/api/v1/usage/series?{RANGE}&team=team-a&user=u-ann"))).bearer_auth(admin);
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("conflicting_parameters"));

    // Who viewed my usage: Ann sees the manager's team views and the
    // admin's, never the other team's manager.
    let ann = app.login("u-ann", "password-123").await;
    let (_, views) = app.get(&ann, "/api/v1/audit/views?limit=1000").await;
    let ok_actors: BTreeSet<&str> =
        views.as_array().unwrap().iter().filter(|v| v["outcome"] == "ok").filter_map(|v| v["actor"].as_str()).collect();
    assert!(ok_actors.contains("u-mia") && ok_actors.contains("root"), "{ok_actors:?}");
    assert!(!ok_actors.contains("u-max") && !ok_actors.contains("u-vera"), "{ok_actors:?}");
    assert!(
        views.as_array().unwrap().iter().any(|v| v["actor"] == "u-mia" && v["subject"] == "team:team-a"),
        "the team view itself is listed"
    );

    // A removed member leaves the team's views (whole history) and the
    // manager's reach, at once in this process.
    let mia = &tokens["u-mia"];
    let team_a = format!("/api/v1/usage/series?{RANGE}&granularity=day&team=team-a");
    assert_eq!(app.get(mia, &team_a).await.1["total"]["input_tokens"], usage_of(&TEAM_A) + 9 + 4);
    let r = app.http.delete(app.url("/api/v1/admin/teams/team-a/members/u-ann")).bearer_auth(admin).send().await;
    assert_eq!(r.unwrap().status(), 204);
    assert_eq!(app.get(mia, &team_a).await.1["total"]["input_tokens"], usage_of(&["u-bea", "u-mia"]));
    assert_eq!(app.get(mia, &format!("/api/v1/usage/series?{RANGE}&user=u-ann")).await.0, 403);

    app.stop().await;
    env.cleanup().await;
}

fn ev(i: usize, user: &str, at: DateTime<Utc>, source: &str, project: Option<&str>, input: u64) -> UsageEvent {
    let mut e = tokenusage_contract::parse_native(
        common::event_line(&format!("e{i}"), user, &at.to_rfc3339(), "chat", "m1", input as i64, 1).as_bytes(),
        source,
        t("2027-06-01T00:00:00Z"),
    )
    .unwrap();
    e.project = project.map(str::to_owned);
    e
}

fn enc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_totals_are_their_members_sums_and_projects_and_sources_match_the_raw_events() {
    let env = TestEnv::database_only().await;
    env.add_user("root", Role::Admin, "password-123").await;
    let users: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
    let mut rng = StdRng::seed_from_u64(20261203);
    let base = t("2026-01-01T00:00:00Z");
    let span = 300 * 86_400;
    let projects = [None, Some("search"), Some("bots"), Some("ml.eval")];
    let sources = ["gateway", "batch-jobs"];
    let events: Vec<UsageEvent> = (0..4000)
        .map(|i| {
            let at = base + chrono::Duration::seconds(rng.random_range(0..span));
            let user = &users[rng.random_range(0..users.len())];
            let p = projects[rng.random_range(0..projects.len())];
            ev(i, user, at, sources[rng.random_range(0..2)], p, rng.random_range(1..5000))
        })
        .collect();
    tokenusage_projector::count_events(&env.pool, events.clone()).await.unwrap();
    // Three teams of four; p00 is in two of them.
    let team_members: [(&str, Vec<&str>); 3] = [
        ("alpha", vec!["p00", "p01", "p02", "p03"]),
        ("beta", vec!["p00", "p04", "p05", "p06"]),
        ("gamma", vec!["p07", "p08", "p09", "p10"]),
    ];
    for (team, members) in &team_members {
        teams::create(&env.pool, team, "test").await.unwrap();
        for m in members {
            teams::set_member(&env.pool, team, m, TeamRole::Member).await.unwrap();
        }
    }
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let admin = app.login("root", "password-123").await;
    let series = |params: String| {
        let (app, admin) = (&app, &admin);
        async move {
            let (status, body) = app.get(admin, &format!("/api/v1/usage/series?{params}")).await;
            assert_eq!(status, 200, "{params}: {body}");
            body
        }
    };
    let per_bucket = |body: &Value| -> Vec<i64> {
        body["points"].as_array().unwrap().iter().map(|p| p["input_tokens"].as_i64().unwrap()).collect()
    };
    let zones = ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe"];
    let grans = ["hour", "day", "week", "month"];
    for case in 0..12 {
        let zone = zones[rng.random_range(0..zones.len())];
        let gran = grans[rng.random_range(0..grans.len())];
        let from = base + chrono::Duration::seconds(rng.random_range(0..span));
        let max_len = if gran == "hour" { 600 * 3600 } else { span };
        let to = from + chrono::Duration::seconds(rng.random_range(3600..max_len));
        let range =
            format!("from={}&to={}&granularity={gran}&tz={zone}", enc(&from.to_rfc3339()), enc(&to.to_rfc3339()));
        let (team, members) = &team_members[case % 3];
        let team_view = series(format!("{range}&team={team}")).await;
        let mut sum = vec![0i64; per_bucket(&team_view).len()];
        for m in members {
            for (s, v) in sum.iter_mut().zip(per_bucket(&series(format!("{range}&user={m}")).await)) {
                *s += v;
            }
        }
        assert_eq!(per_bucket(&team_view), sum, "case {case}: team {team} = Σ members, bucket by bucket ({range})");
        // Grouped by user, the team's series are its members.
        let by_user = series(format!("{range}&team={team}&group=user")).await;
        for s in by_user["series"].as_array().unwrap() {
            assert!(members.contains(&s["key"].as_str().unwrap()), "case {case}: {s}");
        }
    }

    // Group and filter by project and by source = the raw events.
    let range = "from=2026-01-01&to=2027-01-01&granularity=month&user=*";
    let truth = |keep: &dyn Fn(&UsageEvent) -> bool| -> i64 {
        events.iter().filter(|e| keep(e)).map(|e| e.input_tokens as i64).sum()
    };
    let grouped = series(format!("{range}&group=project")).await;
    let groups: BTreeMap<String, i64> = grouped["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_owned(),
                s["input_tokens"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).sum(),
            )
        })
        .collect();
    for p in projects {
        let key = p.unwrap_or("");
        assert_eq!(groups.get(key).copied(), Some(truth(&|e| e.project.as_deref() == p)), "group project {key:?}");
    }
    let filtered = series(format!("{range}&project=search,-")).await;
    assert_eq!(
        filtered["total"]["input_tokens"].as_i64().unwrap(),
        truth(&|e| matches!(e.project.as_deref(), None | Some("search"))),
        "project filter, `-` = none"
    );
    let grouped = series(format!("{range}&group=source&project=bots")).await;
    for s in grouped["series"].as_array().unwrap() {
        let src = s["key"].as_str().unwrap().to_owned();
        let got: i64 = s["input_tokens"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).sum();
        assert_eq!(got, truth(&|e| e.source == src && e.project.as_deref() == Some("bots")), "source {src}");
    }
    let one_source = series(format!("{range}&source=gateway")).await;
    assert_eq!(one_source["total"]["input_tokens"].as_i64().unwrap(), truth(&|e| e.source == "gateway"));
    // The pickers list every project and source; the CSV carries the group key.
    let (_, dims) = app.get(&admin, "/api/v1/usage/dimensions?from=2026-01-01&to=2027-01-01&user=*").await;
    assert_eq!(dims["projects"], json!(["", "bots", "ml.eval", "search"]));
    assert_eq!(dims["sources"], json!(["batch-jobs", "gateway"]));
    let csv = app.get_text(&admin, &format!("/api/v1/usage/export.csv?{range}&group=project")).await;
    assert!(csv.lines().next().unwrap().starts_with("start,end,project,input_tokens"), "{csv}");
    // Overview: teams in an admin's view of everyone (p00 counts in two).
    let (_, ov) = app.get(&admin, "/api/v1/usage/overview?from=2026-01-01&to=2027-01-01&user=*&limit=50").await;
    let team_total = |name: &str| {
        ov["teams"].as_array().unwrap().iter().find(|t| t["key"] == name).unwrap()["total"]["input_tokens"]
            .as_i64()
            .unwrap()
    };
    for (team, members) in &team_members {
        assert_eq!(team_total(team), truth(&|e| members.contains(&e.user_id.as_str())), "overview team {team}");
    }
    assert_eq!(ov["projects"].as_array().unwrap().len(), 4);

    // `replay` recomputes the new dimensions from raw events exactly.
    let out =
        common::tokenusage(&env, &["verify", "--from", "2026-01-01T00:00:00Z", "--to", "2027-01-01T00:00:00Z"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    app.stop().await;
    env.cleanup().await;
}
