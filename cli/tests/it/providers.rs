//! The providers' own reports as a second ledger: import from a stub of
//! their documented APIs, mapping, and reconciliation against what the
//! projector counted (docs/RECONCILIATION.md).

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, TimeDelta};
use tokenusage_contract::{TokenKinds, UsageEvent};
use tokenusage_providers::fetch::{Importer, Retry};
use tokenusage_providers::reconcile::{self, Line, Reason};
use tokenusage_providers::{Provider, store};

use crate::common::{self, TestEnv};
use crate::provider_stub::{self as stub, Fault, Stub};

const KEY: &str = "sk-admin-STUBKEY-4f1e2d3c";

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn event(
    id: &str,
    at: NaiveDate,
    model: &str,
    project: &str,
    input: u64,
    output: u64,
    kinds: TokenKinds,
) -> UsageEvent {
    UsageEvent {
        source: "billing-svc".into(),
        event_id: id.into(),
        user_id: "u1".into(),
        occurred_at: at.and_hms_opt(12, 0, 0).unwrap().and_utc(),
        activity: "chat".into(),
        model: model.into(),
        input_tokens: input,
        output_tokens: output,
        kinds,
        billing: Default::default(),
        cost: None,
        project: Some(project.into()),
        metadata: None,
    }
}

fn importer() -> Importer {
    let policy = Arc::new(common::loopback_receivers());
    Importer {
        client: policy.client().unwrap(),
        retry: Retry { attempts: 4, first_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) },
    }
}

/// Counts `events` with the shipped price catalogue in the book.
async fn count_events(env: &TestEnv, events: &[UsageEvent]) {
    tokenusage_pricing::store::seed(&env.pool).await.unwrap();
    common::produce(env, events).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let projector = common::spawn_projector(env, shutdown.clone());
    assert!(common::wait_for_totals(&env.pool, common::expected_totals(events), Duration::from_secs(60)).await);
    shutdown.cancel();
    let _ = projector.await;
}

fn no_progress(_: &'static str, _: NaiveDate) {}

fn find<'a>(r: &'a reconcile::Report, d: NaiveDate, model: &str) -> &'a Line {
    r.lines.iter().find(|l| l.day == d && l.model == model).unwrap_or_else(|| panic!("no line for {d} {model}"))
}

const MINI: &str = "gpt-4o-mini-2024-07-18";

/// Events published for the first half of October; the provider reports
/// the whole month. The reconciliation shows exactly the unpublished half
/// as the difference, day by day; a revised bucket changes exactly its
/// line; importing again changes nothing; an unpriced model is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_reconciles_to_exactly_the_unpublished_share_and_revisions_change_only_their_line() {
    let env = TestEnv::new().await;
    let oct = |d: u32| NaiveDate::from_ymd_opt(2026, 10, d).unwrap();
    let mut events: Vec<UsageEvent> = (1..=15)
        .map(|d| {
            let kinds = TokenKinds { cache_read_input_tokens: 100 * d as u64, ..TokenKinds::default() };
            event(&format!("e{d}"), oct(d), MINI, "p", 1000 * d as u64, 100 * d as u64, kinds)
        })
        .collect();
    events.push(event("mystery", oct(3), "mystery-model", "p", 500, 50, TokenKinds::default()));
    count_events(&env, &events).await;

    // Our cost of each day, as the projector priced it.
    let ours: Vec<(NaiveDate, i64)> = sqlx::query_as(
        "select (bucket at time zone 'UTC')::date, sum(cost_nanos)::int8 from usage_hour where model = $1 group by 1 order by 1",
    )
    .bind(MINI)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(ours.len(), 15);
    assert!(ours.iter().all(|(_, c)| *c > 0), "the default catalogue prices {MINI}");

    let stub = Stub::start(KEY).await;
    stub.with(|l| {
        for d in 1..=31 {
            let (input, output) = (1000 * d as i64, 100 * d as i64);
            l.usage.insert(
                oct(d),
                vec![stub::openai_usage_result("proj_abc", "key_1", MINI, input, 100 * d as i64, output, 1)],
            );
            let billed = match ours.iter().find(|(x, _)| *x == oct(d)) {
                Some((_, nanos)) => tokenusage_contract::money::format_nanos(*nanos),
                None => "0.5".into(),
            };
            l.costs.insert(oct(d), vec![stub::openai_cost_result("proj_abc", MINI, "input", &billed)]);
        }
        l.usage.get_mut(&oct(3)).unwrap().push(stub::openai_usage_result(
            "proj_abc",
            "key_1",
            "mystery-model",
            500,
            0,
            50,
            1,
        ));
        l.costs.get_mut(&oct(3)).unwrap().push(stub::openai_cost_result("proj_abc", "mystery-model", "input", "0.001"));
        // The importer backs off and resumes.
        l.faults.extend([Fault::TooMany, Fault::Unavailable]);
    });
    store::add(&env.pool, "oai", Provider::OpenAi, Some(&stub.base_url), &KEY.to_owned().into(), oct(1), "test")
        .await
        .unwrap();
    let map = |scope: &str, project: &str| store::Mapping {
        connection: "oai".into(),
        kind: "scope".into(),
        external_id: scope.into(),
        target_source: None,
        target_project: Some(project.into()),
    };
    store::map(&env.pool, &map("proj_abc", "p")).await.unwrap();
    // Overlapping targets are refused: one event would reconcile twice.
    let overlap =
        store::Mapping { target_source: Some("billing-svc".into()), target_project: None, ..map("proj_x", "") };
    let err = store::map(&env.pool, &overlap).await.unwrap_err().to_string();
    assert!(err.contains("overlaps"), "{err}");

    let (from, to) = (oct(1), day("2026-11-01"));
    let imp = importer();
    let sum = imp.import(&env.pool, "oai", from, to, "test", &no_progress).await.unwrap();
    assert_eq!(sum.usage_rows, 32);
    assert_eq!(sum.cost_rows, 32);
    assert_eq!(sum.pages, 10, "31 days at 7 a page, both reports");

    let report = reconcile::reconcile(&env.pool, from, to).await.unwrap();
    assert_eq!(report.lines.len(), 32, "{:#?}", report.lines);
    for d in 1..=31u32 {
        let l = find(&report, oct(d), MINI);
        assert_eq!(l.connection.as_deref(), Some("oai"));
        if d <= 15 {
            assert_eq!((l.token_difference, l.cost_difference_nanos), (0, Some(0)), "{l:#?}");
            assert!(l.reasons.is_empty(), "{l:#?}");
            assert_eq!(l.ours.unwrap().tokens.cache_read_tokens, l.reported.unwrap().tokens.cache_read_tokens);
        } else {
            assert!(l.ours.is_none());
            assert_eq!(l.token_difference, 1100 * d as i64, "exactly the unpublished tokens");
            assert_eq!(l.cost_difference_nanos, Some(500_000_000), "exactly the unpublished cost");
            assert_eq!(l.reasons, vec![Reason::NotPublished]);
        }
    }
    let mystery = find(&report, oct(3), "mystery-model");
    assert_eq!(mystery.token_difference, 0);
    assert!(mystery.reasons.contains(&Reason::UnpricedModel), "{mystery:#?}");
    assert_eq!(mystery.cost_difference_nanos, Some(1_000_000), "the unpriced tokens' cost is the difference");

    // The day summary is the lines summed per day, read from the day sums
    // and our day rows: the same before the days are sealed and after.
    let summed = |r: &reconcile::Report| -> Vec<(NaiveDate, i64, i64, i64, i64)> {
        let mut by: std::collections::BTreeMap<NaiveDate, (i64, i64, i64, i64)> = Default::default();
        for l in r.lines.iter().filter(|l| l.connection.as_deref() == Some("oai")) {
            let e = by.entry(l.day).or_default();
            e.0 += l.reported.map(|x| x.tokens.total()).unwrap_or(0);
            e.1 += l.ours.map(|x| x.tokens.total()).unwrap_or(0);
            e.2 += l.billed.as_ref().map(|b| b.amount_nanos).unwrap_or(0);
            e.3 += l.ours.map(|x| x.cost_nanos).unwrap_or(0);
        }
        by.into_iter().map(|(d, (a, b, c, e))| (d, a, b, c, e)).collect()
    };
    let days = |s: &tokenusage_providers::summary::Summary| -> Vec<(NaiveDate, i64, i64, i64, i64)> {
        s.days
            .iter()
            .map(|d| (d.day, d.reported.total(), d.ours.tokens.total(), d.billed_nanos.unwrap_or(0), d.ours.cost_nanos))
            .collect()
    };
    let before = tokenusage_providers::summary::summary(&env.pool, from, to).await.unwrap();
    assert_eq!(days(&before), summed(&report));
    assert_eq!(before.days.len(), 31);
    let d16 = before.days.iter().find(|d| d.day == oct(16)).unwrap();
    assert_eq!((d16.token_difference, d16.cost_difference_nanos), (17_600, Some(500_000_000)));
    assert_eq!(d16.reasons, vec![Reason::NotPublished]);
    let d3 = before.days.iter().find(|d| d.day == oct(3)).unwrap();
    assert!(d3.reasons.contains(&Reason::UnpricedModel), "{d3:#?}");
    let (sealed,): (i64,) = sqlx::query_as("select count(*) from usage_day").fetch_one(&env.pool).await.unwrap();
    tokenusage_projector::seal::seal(&env.pool, tokenusage_projector::seal::target(chrono::Utc::now()), |_| {})
        .await
        .unwrap();
    let (now_sealed,): (i64,) = sqlx::query_as("select count(*) from usage_day").fetch_one(&env.pool).await.unwrap();
    assert!(now_sealed > sealed, "the days are now read from day rows");
    let after = tokenusage_providers::summary::summary(&env.pool, from, to).await.unwrap();
    assert_eq!(after.days, before.days);

    // An alert past 1 % of a day: once per day past it, through the
    // budgets' webhook outbox.
    let out = common::tokenusage(
        &env,
        &["webhooks", "add", "ops", "http://127.0.0.1:9/hook", "--outbound-allow", "127.0.0.0/8"],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = common::tokenusage(&env, &["providers", "alert", "oai", "--percent", "1", "--webhook", "nope"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no webhook endpoint named \"nope\""));
    let out = common::tokenusage(&env, &["providers", "alert", "oai", "--percent", "1", "--webhook", "ops"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queued = tokenusage_providers::alerts::check(&env.pool, "oai", from, to).await.unwrap();
    assert_eq!(queued, 17, "days 16-31 (not published) and day 3 (the unpriced model's bill)");
    assert_eq!(tokenusage_providers::alerts::check(&env.pool, "oai", from, to).await.unwrap(), 0, "once per day");
    let (payload,): (serde_json::Value,) = sqlx::query_as(
        "select payload from webhook_deliveries where idempotency_key = 'reconciliation:oai:2026-10-16'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(payload["tokens"]["difference"], 17_600);
    assert_eq!(
        (payload["cost"]["billed"].as_str(), payload["cost"]["difference"].as_str()),
        (Some("0.5"), Some("0.5"))
    );
    assert_eq!(payload["reasons"], serde_json::json!(["not_published"]));

    // Importing again changes nothing and records no revision.
    imp.import(&env.pool, "oai", from, to, "test", &no_progress).await.unwrap();
    let again = reconcile::reconcile(&env.pool, from, to).await.unwrap();
    assert_eq!(again.lines, report.lines);
    let revisions = |pool| async move {
        sqlx::query_as::<_, (String, NaiveDate, bool)>(
            "select report, day, after is null from provider_revisions order by id",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    };
    assert!(revisions(&env.pool).await.is_empty());

    // The provider revises day 20 and stops reporting day 25's cost.
    stub.with(|l| {
        l.usage.insert(oct(20), vec![stub::openai_usage_result("proj_abc", "key_1", MINI, 20_007, 2000, 2000, 1)]);
        l.costs.remove(&oct(25));
    });
    imp.import(&env.pool, "oai", from, to, "test", &no_progress).await.unwrap();
    let revised = reconcile::reconcile(&env.pool, from, to).await.unwrap();
    let changed: Vec<(NaiveDate, &str)> = revised
        .lines
        .iter()
        .zip(&report.lines)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| (a.day, a.model.as_str()))
        .collect();
    assert_eq!(changed, vec![(oct(20), MINI), (oct(25), MINI)]);
    let l20 = find(&revised, oct(20), MINI);
    assert_eq!(l20.token_difference, 22_007);
    assert!(l20.reasons.contains(&Reason::Revised));
    let l25 = find(&revised, oct(25), MINI);
    assert!(l25.billed.is_none() && l25.reasons.contains(&Reason::NoCostReport), "{l25:#?}");
    assert_eq!(revisions(&env.pool).await, vec![("usage".into(), oct(20), false), ("costs".into(), oct(25), true)]);

    // The command line: exit 1 past the tolerance, 0 within it.
    let out = common::tokenusage(&env, &["reconcile", "--from", "2026-10-01", "--to", "2026-10-31"], None);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("events were not published"), "{text}");
    let out = common::tokenusage(&env, &["reconcile", "--from", "2026-10-01", "--to", "2026-10-02"], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let out =
        common::tokenusage(&env, &["reconcile", "--from", "2026-10-15", "--to", "2026-10-16", "--by", "day"], None);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2026-10-16  oai: reported 17600 tokens (0 unmapped), ours 0: tokens +17600, cost 0.5 USD"),
        "{text}"
    );
    assert!(text.contains("2 days, 1 past the tolerance"), "{text}");
    let csv =
        common::tokenusage(&env, &["reconcile", "--from", "2026-10-16", "--to", "2026-10-16", "--format", "csv"], None);
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(csv.starts_with("day,provider,connection,model"), "{csv}");
    assert!(
        csv.contains(
            "2026-10-16,openai,oai,gpt-4o-mini-2024-07-18,,p,,,,,,,,16000,1600,1600,0,0.5,USD,17600,0.5,not_published"
        ),
        "{csv}"
    );
    env.cleanup().await;
}

/// Anthropic's report: uncached, cache-read and 5-minute / 1-hour cache
/// writes in our kinds, the default workspace mapped by name, and a bill
/// in cents that equals our price to the nano-unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_reports_match_our_cache_kinds_and_cost_to_the_nano() {
    let env = TestEnv::new().await;
    let d = day("2026-10-05");
    let model = "claude-sonnet-4-5-20250929";
    let kinds = TokenKinds {
        cache_read_input_tokens: 2000,
        cache_write_input_tokens: 1000,
        cache_write_1h_input_tokens: 1000,
        ..TokenKinds::default()
    };
    count_events(&env, &[event("a1", d, model, "research", 10_000, 500, kinds)]).await;
    let stub = Stub::start(KEY).await;
    stub.with(|l| {
        l.usage.insert(d, vec![stub::anthropic_usage_result(None, model, 6000, 1000, 1000, 2000, 500)]);
        // $3, $0.30, $3.75, $6 and $15 per million: 3.585 cents in all.
        l.costs.insert(
            d,
            [
                ("uncached_input_tokens", "1.8"),
                ("cache_read_input_tokens", "0.06"),
                ("cache_creation.ephemeral_5m_input_tokens", "0.375"),
                ("cache_creation.ephemeral_1h_input_tokens", "0.6"),
                ("output_tokens", "0.75"),
            ]
            .into_iter()
            .map(|(t, c)| stub::anthropic_cost_result(None, model, t, c))
            .collect(),
        );
    });
    store::add(&env.pool, "ant", Provider::Anthropic, Some(&stub.base_url), &KEY.to_owned().into(), d, "test")
        .await
        .unwrap();
    let m = store::Mapping {
        connection: "ant".into(),
        kind: "scope".into(),
        external_id: "default".into(),
        target_source: None,
        target_project: Some("research".into()),
    };
    store::map(&env.pool, &m).await.unwrap();
    importer().import(&env.pool, "ant", d, d + TimeDelta::days(1), "test", &no_progress).await.unwrap();
    let report = reconcile::reconcile(&env.pool, d, d + TimeDelta::days(1)).await.unwrap();
    assert_eq!(report.lines.len(), 1, "{:#?}", report.lines);
    let l = &report.lines[0];
    assert_eq!(l.ours.unwrap().tokens, l.reported.unwrap().tokens, "every kind agrees");
    assert_eq!(l.ours.unwrap().cost_nanos, 35_850_000);
    assert_eq!(l.billed.as_ref().unwrap().amount_nanos, 35_850_000);
    assert_eq!((l.token_difference, l.cost_difference_nanos), (0, Some(0)));
    assert!(l.reasons.is_empty(), "{l:#?}");
    // The documented headers and group-by parameters were sent.
    stub.with(|l| {
        let (url, key, version) = &l.requests[0];
        assert!(url.contains("group_by%5B%5D=workspace_id") && url.contains("bucket_width=1d"), "{url}");
        assert_eq!((key.as_deref(), version.as_deref()), (Some(KEY), Some("2023-06-01")));
    });

    // The admin API answers the same, as JSON and CSV, and never shows the key.
    env.add_user("root", tokenusage_api::Role::Admin, "root-password").await;
    env.add_user("alice", tokenusage_api::Role::Viewer, "alice-password").await;
    let app = common::TestApp::spawn_api(&env, common::test_api_args()).await;
    let (admin, alice) = (app.login("root", "root-password").await, app.login("alice", "alice-password").await);
    let (status, body) = app.get(&admin, "/api/v1/admin/reconciliation?from=2026-10-05&to=2026-10-05").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["report"]["lines"], serde_json::to_value(&report.lines).unwrap());
    assert_eq!(body["past_tolerance"], 0);
    // By day: the same figures, one row per day and connection.
    let (status, days) = app.get(&admin, "/api/v1/admin/reconciliation?from=2026-10-05&to=2026-10-05&by=day").await;
    assert_eq!(status, 200, "{days}");
    let summary =
        tokenusage_providers::summary::summary(&env.pool, day("2026-10-05"), day("2026-10-06")).await.unwrap();
    assert_eq!(days["report"]["days"], serde_json::to_value(&summary.days).unwrap());
    assert_eq!(summary.days.len(), 1);
    assert_eq!(
        summary.days[0].ours.cost_nanos,
        report.lines.iter().map(|l| l.ours.map_or(0, |o| o.cost_nanos)).sum::<i64>()
    );
    assert_eq!((days["past_tolerance"].as_i64(), summary.days[0].token_difference), (Some(0), 0));
    let (status, bad) = app.get(&admin, "/api/v1/admin/reconciliation?from=2026-10-05&to=2026-10-05&by=week").await;
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("invalid_by")), "{bad}");
    let csv = app.get_text(&admin, "/api/v1/admin/reconciliation.csv?from=2026-10-05&to=2026-10-05").await;
    assert!(csv.contains("2026-10-05,anthropic,ant,claude-sonnet-4-5-20250929,,research,,10000,500,2000,2000,0.03585,0,10000,500,2000,2000,0.03585,USD,0,0,"), "{csv}");
    let (status, body) = app.get(&admin, "/api/v1/admin/providers").await;
    assert_eq!(status, 200);
    assert_eq!(body["connections"][0]["name"], "ant");
    assert!(!body.to_string().contains("STUBKEY"), "{body}");
    assert_eq!(app.get(&alice, "/api/v1/admin/reconciliation?from=2026-10-05&to=2026-10-05").await.0, 403);
    // Mappings over the API: the same rules as the command line.
    let put = |body: serde_json::Value| {
        app.http.put(app.url("/api/v1/admin/providers/ant/mappings")).bearer_auth(&admin).json(&body).send()
    };
    let r = put(serde_json::json!({"kind": "api_key", "external_id": "apikey_01", "target_source": "billing-svc"}))
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_mapping", "overlaps project research: {body}");
    let r = put(serde_json::json!({"kind": "api_key", "external_id": "apikey_01", "target_project": "research"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r =
        app.http.delete(app.url("/api/v1/admin/providers/ant/mappings/api_key/apikey_01")).bearer_auth(&admin).send();
    assert_eq!(r.await.unwrap().status(), 204);
    let r =
        app.http.delete(app.url("/api/v1/admin/providers/ant/mappings/api_key/apikey_01")).bearer_auth(&admin).send();
    assert_eq!(r.await.unwrap().status(), 404);
    let (status, body) = app.get(&admin, "/api/v1/admin/reconciliation?from=2026-10-05&to=2026-10-04").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_range")), "{body}");
    let actions: Vec<String> = sqlx::query_scalar("select action from audit_log where action like 'admin.reconciliation%' or action = 'admin.providers.list' order by seq")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(
        actions,
        [
            "admin.reconciliation",
            "admin.reconciliation",
            "admin.reconciliation",
            "admin.reconciliation_csv",
            "admin.providers.list",
            "admin.reconciliation",
            "admin.reconciliation"
        ]
    );
    app.stop().await;
    env.cleanup().await;
}

/// From the command line: the key is read from standard input and never
/// shown again (not in a listing, an error, a log line or the audit
/// trail); a malformed page fails the import loudly and keeps the pages
/// stored before it; a refused key says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_fail_loudly_keep_what_was_stored_and_never_show_the_key() {
    let env = TestEnv::database_only().await;
    let stub = Stub::start(KEY).await;
    let oct = |d: u32| NaiveDate::from_ymd_opt(2026, 10, d).unwrap();
    stub.with(|l| {
        for d in 1..=14 {
            l.usage.insert(oct(d), vec![stub::openai_usage_result("proj_abc", "key_1", MINI, 1000, 0, 100, 1)]);
        }
    });
    let run = |args: &[&str], stdin: Option<&str>| {
        let out = common::tokenusage(&env, args, stdin);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains("STUBKEY"), "the key was shown: {text}");
        (out.status.code(), text)
    };
    let (code, text) = run(
        &[
            "providers",
            "add",
            "oai",
            "--provider",
            "openai",
            "--base-url",
            &stub.base_url,
            "--import-from",
            "2026-10-01",
        ],
        Some(&format!("{KEY}\n")),
    );
    assert_eq!(code, Some(0), "{text}");
    // Without --outbound-allow the loopback stub is refused by the address rules.
    let (code, text) = run(&["providers", "import", "oai", "--from", "2026-10-01", "--to", "2026-10-15"], None);
    assert_ne!(code, Some(0));
    assert!(text.contains("outbound address rules refused"), "{text}");

    // The second usage page is malformed.
    stub.with(|l| l.faults.extend([Fault::TooMany, Fault::Pass, Fault::Malformed]));
    let import =
        ["providers", "import", "oai", "--from", "2026-10-01", "--to", "2026-10-15", "--outbound-allow", "127.0.0.0/8"];
    let (code, text) = run(&import, None);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("data[0].results[0].output_tokens"), "the error names the field: {text}");
    let stored: i64 = sqlx::query_scalar("select count(*) from provider_usage").fetch_one(&env.pool).await.unwrap();
    assert_eq!(stored, 7, "the first page is kept");
    let (outcome, error): (String, Option<String>) =
        sqlx::query_as("select outcome, error from provider_imports order by id desc limit 1")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(outcome, "failed");
    assert!(error.unwrap_or_default().contains("output_tokens"));

    // Resumed, it completes.
    let (code, text) = run(&import, None);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("14 usage rows"), "{text}");
    let (code, text) = run(&["providers", "list"], None);
    assert_eq!(code, Some(0));
    assert!(text.contains("whole through 2026-10-15") && text.contains(" ok"), "{text}");

    // A key the provider no longer accepts.
    stub.with(|l| l.key = "sk-admin-rotated".into());
    let (code, text) = run(&import, None);
    assert_ne!(code, Some(0));
    assert!(text.contains("refused the admin key"), "{text}");

    // Nothing in the audit trail carries the key.
    let audit: Vec<String> =
        sqlx::query_scalar("select row_to_json(a)::text from audit_log a").fetch_all(&env.pool).await.unwrap();
    assert!(audit.len() >= 3 && audit.iter().all(|a| !a.contains("STUBKEY")), "{audit:?}");
    env.cleanup().await;
}

/// Usage without instrumentation: with `providers usage --on`, mapped
/// provider usage becomes events of `provider:oai` for the scope-days where
/// we counted none of our own, exactly the reported tokens; our own events
/// arriving later take it out of their day, a revision restates its day,
/// re-importing changes nothing, the reconciliation never takes it for
/// ours, rollups always equal the raw events, and `--off` removes it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_usage_counts_as_usage_once_where_nothing_was_published() {
    let env = TestEnv::database_only().await;
    tokenusage_pricing::store::seed(&env.pool).await.unwrap();
    let oct = |d: u32| NaiveDate::from_ymd_opt(2026, 10, d).unwrap();
    // We counted project p's first two days ourselves.
    let ours: Vec<UsageEvent> =
        (1..=2).map(|d| event(&format!("own{d}"), oct(d), MINI, "p", 1000, 100, TokenKinds::default())).collect();
    tokenusage_projector::count_events(&env.pool, ours).await.unwrap();

    let stub = Stub::start(KEY).await;
    stub.with(|l| {
        for d in 1..=4 {
            l.usage.insert(
                oct(d),
                vec![
                    stub::openai_usage_result("proj_p", "key_1", MINI, 1000, 0, 100, 1),
                    stub::openai_usage_result("proj_quiet", "key_2", MINI, 5000 + d as i64, 2000, 700, 3),
                    stub::openai_usage_result("proj_unmapped", "key_3", MINI, 9, 0, 9, 1),
                ],
            );
        }
    });
    store::add(&env.pool, "oai", Provider::OpenAi, Some(&stub.base_url), &KEY.to_owned().into(), oct(1), "test")
        .await
        .unwrap();
    for (scope, project) in [("proj_p", "p"), ("proj_quiet", "quiet")] {
        let m = store::Mapping {
            connection: "oai".into(),
            kind: "scope".into(),
            external_id: scope.into(),
            target_source: None,
            target_project: Some(project.into()),
        };
        store::map(&env.pool, &m).await.unwrap();
    }
    let out = common::tokenusage(&env, &["providers", "usage", "oai", "--on"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (from, to) = (oct(1), oct(5));
    let imp = importer();
    let sum = imp.import(&env.pool, "oai", from, to, "test", &no_progress).await.unwrap();
    let o = sum.as_usage.expect("the connection counts usage");
    assert_eq!((o.days_written, o.covered_by_ours, o.refused_rows), (4, 2, 0), "{o:?}");

    // Provider-reported usage per (project, day), from the rollups, and the
    // rollups against the raw events.
    let reported = |pool: sqlx::PgPool| async move {
        let rows: Vec<(String, NaiveDate, i64, i64, i64)> = sqlx::query_as(
            "select project, (bucket at time zone 'UTC')::date, sum(input_tokens)::int8, sum(cache_read_tokens)::int8, \
                    sum(output_tokens)::int8 from usage_hour where source = 'provider:oai' and user_id = 'provider:oai' \
             group by 1, 2 having sum(events) > 0 order by 1, 2",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let drift = tokenusage_projector::rebuild::replay(
            &pool,
            oct(1).and_hms_opt(0, 0, 0).unwrap().and_utc(),
            oct(6).and_hms_opt(0, 0, 0).unwrap().and_utc(),
            None,
            true,
            |_, _| {},
        )
        .await
        .unwrap();
        assert!(drift.iter().all(|d| d.is_clean()), "rollups equal the raw events: {drift:?}");
        rows
    };
    let quiet = |d: u32, input: i64| ("quiet".to_owned(), oct(d), input, 2000, 700);
    let p = |d: u32| ("p".to_owned(), oct(d), 1000, 0, 100);
    assert_eq!(
        reported(env.pool.clone()).await,
        vec![p(3), p(4), quiet(1, 5001), quiet(2, 5002), quiet(3, 5003), quiet(4, 5004)]
    );
    // Priced by the book like any event.
    let (cost,): (i64,) =
        sqlx::query_as("select sum(cost_nanos)::int8 from usage_events where source = 'provider:oai'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(cost > 0);
    // The reconciliation still sees p's days 3-4 as not published by us.
    let report = reconcile::reconcile(&env.pool, from, to).await.unwrap();
    let l = report
        .lines
        .iter()
        .find(|l| l.day == oct(3) && l.target.as_ref().and_then(|t| t.project.as_deref()) == Some("p"))
        .unwrap();
    assert!(l.ours.is_none(), "{l:#?}");
    assert!(l.reasons.contains(&Reason::NotPublished), "{l:#?}");

    // Again: nothing changes.
    let o = imp.import(&env.pool, "oai", from, to, "test", &no_progress).await.unwrap().as_usage.unwrap();
    assert_eq!((o.days_written, o.days_removed), (0, 0));

    // A revision of quiet's day 4 restates that day only; our own events
    // for quiet's day 3 take the provider's figures out of it.
    stub.with(|l| {
        l.usage.get_mut(&oct(4)).unwrap()[1] =
            stub::openai_usage_result("proj_quiet", "key_2", MINI, 7777, 2000, 700, 3);
    });
    tokenusage_projector::count_events(
        &env.pool,
        vec![event("own-quiet", oct(3), MINI, "quiet", 10, 1, TokenKinds::default())],
    )
    .await
    .unwrap();
    let o = imp.import(&env.pool, "oai", from, to, "test", &no_progress).await.unwrap().as_usage.unwrap();
    assert_eq!((o.days_written, o.covered_by_ours), (2, 3), "{o:?}");
    assert_eq!(reported(env.pool.clone()).await, vec![p(3), p(4), quiet(1, 5001), quiet(2, 5002), quiet(4, 7777)]);

    // No publisher may pass for the provider.
    let spoof = r#"{"source": "provider:oai", "event_id": "x", "user_id": "u", "occurred_at": "2026-10-03T12:00:00Z",
                    "activity": "chat", "model": "m", "input_tokens": 1, "output_tokens": 1}"#;
    let err = tokenusage_contract::parse_native(spoof.as_bytes(), "kafka", chrono::Utc::now()).unwrap_err();
    assert!(err.to_string().contains("reserved for usage imported from providers"), "{err}");

    // Off: every provider-reported event is gone, the rest untouched.
    let out = common::tokenusage(&env, &["providers", "usage", "oai", "--off"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 days taken out"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(reported(env.pool.clone()).await, vec![]);
    let (own,): (i64,) = sqlx::query_as("select count(*) from usage_events where source = 'billing-svc'")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(own, 3);
    env.cleanup().await;
}

/// Reconciliation alerts reach admins live: an admin's socket that asked
/// receives each alert once, as soon as it is queued; anyone else is
/// refused (and the refusal audited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_alerts_are_pushed_live_to_admins_only() {
    use crate::live::{connect, next_of, send};
    use serde_json::json;
    let env = TestEnv::database_only().await;
    let oct = |d: u32| NaiveDate::from_ymd_opt(2026, 10, d).unwrap();
    let stub = Stub::start(KEY).await;
    stub.with(|l| {
        l.usage.insert(oct(7), vec![stub::openai_usage_result("proj_abc", "key_1", MINI, 4000, 0, 400, 2)]);
    });
    store::add(&env.pool, "oai", Provider::OpenAi, Some(&stub.base_url), &KEY.to_owned().into(), oct(1), "test")
        .await
        .unwrap();
    let out = common::tokenusage(
        &env,
        &["webhooks", "add", "ops", "http://127.0.0.1:9/hook", "--outbound-allow", "127.0.0.0/8"],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = common::tokenusage(&env, &["providers", "alert", "oai", "--percent", "1", "--webhook", "ops"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    importer().import(&env.pool, "oai", oct(1), oct(10), "test", &no_progress).await.unwrap();

    env.add_user("root", tokenusage_api::Role::Admin, "root-password").await;
    env.add_user("alice", tokenusage_api::Role::Viewer, "alice-password").await;
    let app = common::TestApp::spawn_api(&env, common::test_api_args()).await;
    let (root, alice) = (app.login("root", "root-password").await, app.login("alice", "alice-password").await);
    let mut viewer = connect(&app, Some(&alice), None).await.unwrap();
    send(&mut viewer, json!({"type": "watch_reconciliation"})).await;
    let refused = next_of(&mut viewer, &["error"], Duration::from_secs(5)).await.unwrap();
    assert_eq!(refused["code"], "forbidden");
    let mut admin = connect(&app, Some(&root), None).await.unwrap();
    send(&mut admin, json!({"type": "watch_reconciliation"})).await;
    let first = next_of(&mut admin, &["reconciliation"], Duration::from_secs(5)).await.unwrap();
    assert_eq!(first["alerts"], json!([]));

    // Nothing of ours was published for the 7th: past 1 %.
    assert_eq!(tokenusage_providers::alerts::check(&env.pool, "oai", oct(1), oct(10)).await.unwrap(), 1);
    let pushed = next_of(&mut admin, &["reconciliation"], Duration::from_secs(10)).await.expect("the alert is pushed");
    let alerts = pushed["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{pushed}");
    assert_eq!((alerts[0]["connection"].as_str(), alerts[0]["day"].as_str()), (Some("oai"), Some("2026-10-07")));
    assert_eq!(alerts[0]["tokens"]["difference"], 4400);
    // Once: checking again queues nothing and pushes nothing.
    assert_eq!(tokenusage_providers::alerts::check(&env.pool, "oai", oct(1), oct(10)).await.unwrap(), 0);
    assert!(next_of(&mut admin, &["reconciliation"], Duration::from_millis(800)).await.is_none());
    let (audited,): (i64,) = sqlx::query_as(
        "select count(*) from audit_log where action = 'live.watch_reconciliation' and outcome = 'denied'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    app.stop().await;
    env.cleanup().await;
}
