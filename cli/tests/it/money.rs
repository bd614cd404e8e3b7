//! Money against the real database and broker: prices in force at event
//! time, unpriced tokens, supplied cost, re-pricing a past range (REST = WS
//! = CSV afterwards), the real LiteLLM catalogue to the cent, and the
//! subset rule at the HTTP door.

use crate::common;
use crate::live::{connect, next_of, send};

use std::time::Duration;

use common::{TestApp, TestEnv, eventually, test_api_args, tokenusage};
use serde_json::{Value, json};
use tokenusage_api::Role;

fn line(id: &str, at: &str, model: &str, input: i64, output: i64, extra: Value) -> String {
    let mut v: Value =
        serde_json::from_str(&common::event_line(id, "alice", at, "chat", model, input, output)).unwrap();
    if let (Some(o), Value::Object(x)) = (v.as_object_mut(), extra) {
        o.extend(x);
    }
    v.to_string()
}

fn event(id: &str, at: &str, model: &str, input: i64, output: i64, extra: Value) -> tokenusage_contract::UsageEvent {
    tokenusage_contract::parse_native(
        line(id, at, model, input, output, extra).as_bytes(),
        "money-test",
        chrono::Utc::now(),
    )
    .unwrap()
}

fn ok(out: std::process::Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    stdout.into_owned()
}

const YEAR: &str = "from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z&granularity=month&tz=UTC";

/// Cost per monthly bucket: (cost text or null, cost nanos, unpriced tokens, supplied events).
fn months(series: &Value) -> Vec<(Value, i64, i64, i64)> {
    series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["cost"].clone(),
                p["cost_nanos"].as_i64().unwrap(),
                p["unpriced_tokens"].as_i64().unwrap(),
                p["supplied_events"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_apply_at_event_time_unpriced_is_never_zero_and_repricing_changes_exactly_the_past_it_corrects() {
    let env = TestEnv::new().await;
    env.add_user("alice", Role::Viewer, "alice-password").await;
    // $2 / $8 per million from January; $1 / $4 from June (a price cut).
    ok(tokenusage(
        &env,
        &[
            "prices",
            "set",
            "m-priced",
            "--from",
            "2026-01-01",
            "--input",
            "2",
            "--output",
            "8",
            "--cache-read",
            "0.5",
            "--source",
            "https://example.test/prices",
        ],
        None,
    ));
    ok(tokenusage(
        &env,
        &[
            "prices",
            "set",
            "m-priced",
            "--from",
            "2026-06-01",
            "--input",
            "1",
            "--output",
            "4",
            "--cache-read",
            "0.25",
            "--source",
            "https://example.test/prices",
        ],
        None,
    ));
    let events = vec![
        // March: 1M input of which 400k cached, 100k output.
        event(
            "mar",
            "2026-03-10T12:00:00Z",
            "m-priced",
            1_000_000,
            100_000,
            json!({"cache_read_input_tokens": 400_000}),
        ),
        // July, the same usage at the new price, named with a provider prefix and a date.
        event(
            "jul",
            "2026-07-10T12:00:00Z",
            "vendor/m-priced-2026-07-01",
            1_000_000,
            100_000,
            json!({"cache_read_input_tokens": 400_000}),
        ),
        // May: a model nobody priced.
        event("may", "2026-05-05T12:00:00Z", "m-nobody-priced", 3_000, 1_000, json!({})),
        // August: a gateway that knows its bill.
        event(
            "aug",
            "2026-08-08T12:00:00Z",
            "m-nobody-priced",
            10,
            10,
            json!({"cost": {"amount": "0.123456789", "currency": "USD"}}),
        ),
    ];
    common::produce(&env, &events).await;
    let app = TestApp::spawn_with_api(&env, test_api_args()).await;
    let alice = app.login("alice", "alice-password").await;
    assert!(common::wait_for_totals(&env.pool, common::expected_totals(&events), Duration::from_secs(30)).await);

    let (status, before) = app.get(&alice, &format!("/api/v1/usage/series?{YEAR}")).await;
    assert_eq!(status, 200, "{before}");
    let m = months(&before);
    // 600k × $2/M + 400k × $0.5/M + 100k × $8/M = 1.2 + 0.2 + 0.8 = $2.2
    assert_eq!(m[2], (json!("2.2"), 2_200_000_000, 0, 0), "March at the January price");
    // 600k × $1/M + 400k × $0.25/M + 100k × $4/M = 0.6 + 0.1 + 0.4 = $1.1
    assert_eq!(m[6], (json!("1.1"), 1_100_000_000, 0, 0), "July at the June price");
    assert_eq!(m[4], (Value::Null, 0, 4_000, 0), "an unpriced model's cost is unknown, not 0");
    assert_eq!(m[7], (json!("0.123456789"), 123_456_789, 0, 1), "a supplied cost wins and is marked");
    assert_eq!(m[0], (json!("0"), 0, 0, 0), "no usage costs nothing");
    assert_eq!(before["total"]["cost_nanos"], 3_423_456_789i64);
    assert_eq!(before["total"]["unpriced_tokens"], 4_000);

    // A live view of the same range, open while the past is corrected.
    let mut ws = connect(&app, Some(&alice), None).await.unwrap();
    let view =
        json!({"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z", "granularity": "month", "tz": "UTC"});
    send(&mut ws, json!({"type": "subscribe", "id": "y", "view": view})).await;
    let snap = next_of(&mut ws, &["snapshot"], Duration::from_secs(5)).await.unwrap();
    assert_eq!(months(&snap["series"]), m, "the socket's snapshot is the REST series");

    // The March price was wrong: $3 input from March 1st (until the June cut).
    let out = ok(tokenusage(
        &env,
        &[
            "prices",
            "set",
            "m-priced",
            "--from",
            "2026-03-01",
            "--to",
            "2026-06-01",
            "--input",
            "3",
            "--output",
            "8",
            "--cache-read",
            "0.5",
            "--source",
            "correction",
        ],
        None,
    ));
    assert!(out.contains("tokenusage reprice --from 2026-03-01T00:00:00Z"), "{out}");
    // Counted events keep their cost until re-priced; a dry run shows the diff and changes nothing.
    let dry = ok(tokenusage(&env, &["reprice", "--from", "2026-01-01", "--to", "2027-01-01", "--dry-run"], None));
    assert!(dry.contains("2026-03-10") && dry.contains("2.2") && dry.contains("2.8"), "{dry}");
    assert!(!dry.contains("2026-07-10"), "July's price did not change: {dry}");
    let (_, still) = app.get(&alice, &format!("/api/v1/usage/series?{YEAR}")).await;
    assert_eq!(months(&still), m, "a dry run changes nothing");

    let done = ok(tokenusage(&env, &["reprice", "--from", "2026-01-01", "--to", "2027-01-01"], None));
    assert!(done.contains("re-priced 1 events"), "{done}");
    let again = ok(tokenusage(&env, &["reprice", "--from", "2026-01-01", "--to", "2027-01-01"], None));
    assert!(again.contains("nothing to change"), "re-pricing is idempotent: {again}");

    let (_, after) = app.get(&alice, &format!("/api/v1/usage/series?{YEAR}")).await;
    let a = months(&after);
    // 600k × $3/M + 0.2 + 0.8 = $2.8; every other bucket is as it was.
    assert_eq!(a[2], (json!("2.8"), 2_800_000_000, 0, 0));
    for i in (0..12).filter(|i| *i != 2) {
        assert_eq!(a[i], m[i], "month {} changed", i + 1);
    }

    // The socket re-read: its numbers are REST's.
    let s = next_of(&mut ws, &["snapshot"], Duration::from_secs(10))
        .await
        .expect("the live view re-reads after a re-price");
    let fresh = months(&s["series"]);
    assert_eq!(fresh, a, "WS = REST after re-pricing");

    // The CSV carries the same cost, exactly.
    let csv = app.get_text(&alice, &format!("/api/v1/usage/export.csv?{YEAR}")).await;
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let head: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let col = |name: &str| head.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    for (i, row) in rows.iter().enumerate() {
        let want = a[i].0.as_str().unwrap_or("");
        assert_eq!(&row[col("cost")], want, "CSV month {}", i + 1);
        assert_eq!(row[col("unpriced_tokens")].parse::<i64>().unwrap(), a[i].2);
    }

    // The running projector priced its batches with the book it loaded
    // before the correction: its next commit is refused as stale (TU001),
    // it reloads, and the new event is priced with the corrected book.
    common::produce(&env, &[event("apr", "2026-04-10T12:00:00Z", "m-priced", 1_000_000, 0, json!({}))]).await;
    let april = eventually(Duration::from_secs(30), || async {
        let (_, s) = app.get(&alice, &format!("/api/v1/usage/series?{YEAR}")).await;
        let m = months(&s);
        (m[3].1 > 0).then(|| m[3].clone())
    })
    .await
    .expect("the April event is counted");
    assert_eq!(april, (json!("3"), 3_000_000_000, 0, 0), "priced at the corrected $3/M");

    // verify checks cost as well as tokens; every change is on the audit trail.
    ok(tokenusage(&env, &["verify"], None));
    let audited: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where action like 'prices.%' or action = 'reprice' order by seq",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(audited, ["prices.set", "prices.set", "prices.set", "reprice", "reprice"].map(String::from));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_litellm_catalogue_prices_reference_events_to_the_cent() {
    let file = std::env::var("TOKENUSAGE_TEST_LITELLM_JSON")
        .expect("TOKENUSAGE_TEST_LITELLM_JSON: run scripts/test.sh, which downloads the pinned LiteLLM catalogue");
    let env = TestEnv::database_only().await;
    // Dated after every entry of the default catalogue the command seeds
    // first, so the LiteLLM prices are the ones in force for these events.
    let out = ok(tokenusage(&env, &["prices", "import", &file, "--effective-from", "2026-01-01"], None));
    assert!(out.contains("imported:"), "{out}");
    let at = "2026-02-02T10:00:00Z";
    let events = vec![
        // 800k × $2.5/M + 200k cached × $1.25/M + 100k × $10/M = 2.00 + 0.25 + 1.00 = $3.25
        event("a", at, "gpt-4o", 1_000_000, 100_000, json!({"cache_read_input_tokens": 200_000})),
        // 13k × $3/M + 30k × $0.30/M + 5k × $3.75/M + 4k × $15/M = 0.039 + 0.009 + 0.01875 + 0.06 = $0.12675;
        // LiteLLM has no 1-hour write price for this model: those 2k tokens are unpriced.
        event(
            "b",
            at,
            "claude-sonnet-4-5",
            50_000,
            4_000,
            json!({"cache_read_input_tokens": 30_000,
            "cache_write_input_tokens": 5_000, "cache_write_1h_input_tokens": 2_000}),
        ),
        // 6k × $0.30/M + 4k audio × $1/M + 1k × $2.5/M + 2k reasoning × $2.5/M = 0.0018 + 0.004 + 0.0025 + 0.005 = $0.0133
        event(
            "c",
            at,
            "gemini-2.5-flash",
            10_000,
            3_000,
            json!({"audio_input_tokens": 4_000,
            "reasoning_output_tokens": 2_000}),
        ),
        // A provider prefix and a dated name find gpt-4o-2024-08-06: 1k × $2.5/M + 500 × $10/M = $0.0075
        event("d", at, "openai/gpt-4o-2024-08-06", 1_000, 500, json!({})),
        // Not in any catalogue.
        event("e", at, "my-own-finetune", 700, 77, json!({})),
        // Over 200k input: the whole request at the long-context prices
        // (LiteLLM's *_above_200k_tokens, which imports used to drop):
        // 190k × $6/M + 50k read × $0.60/M + 10k write × $7.50/M + 2k × $22.50/M
        // = 1.14 + 0.03 + 0.075 + 0.045 = $1.29 (base prices would give $0.645).
        event(
            "f",
            at,
            "claude-sonnet-4-5-20250929",
            250_000,
            2_000,
            json!({"cache_read_input_tokens": 50_000, "cache_write_input_tokens": 10_000}),
        ),
        // Service tiers at LiteLLM's *_batches / *_flex / *_priority prices;
        // a kind the tier has no price for (batch cache reads) at the base:
        // batch 80k × $0.075/M + 20k read × $0.075/M + 10k × $0.30/M = 0.006 + 0.0015 + 0.003 = $0.0105
        event(
            "g",
            at,
            "gpt-4o-mini",
            100_000,
            10_000,
            json!({"cache_read_input_tokens": 20_000, "service_tier": "batch"}),
        ),
        // flex 32k × $0.625/M + 8k read × $0.0625/M + 5k × $5/M = 0.02 + 0.0005 + 0.025 = $0.0455
        event("h", at, "gpt-5", 40_000, 5_000, json!({"cache_read_input_tokens": 8_000, "service_tier": "flex"})),
        // priority 10k × $3.50/M + 2k × $14/M = 0.035 + 0.028 = $0.063
        event("i", at, "o3", 10_000, 2_000, json!({"service_tier": "priority"})),
        // Anthropic's usage object with three web searches at $0.01 (its
        // search_context_cost_per_query): 1k × $15/M + 200 × $75/M + 3 × $0.01 = $0.06
        event(
            "j",
            at,
            "claude-opus-4-1",
            0,
            0,
            json!({"input_tokens": null, "output_tokens": null,
            "usage": {"input_tokens": 1_000, "output_tokens": 200, "server_tool_use": {"web_search_requests": 3}, "service_tier": "standard"}}),
        ),
        // A search LiteLLM has no price for: the whole event is unpriced, never understated.
        event("k", at, "claude-haiku-4-5", 500, 50, json!({"web_search_requests": 1})),
    ];
    tokenusage_projector::count_events(&env.pool, events).await.unwrap();
    env.add_user("alice", Role::Viewer, "alice-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let alice = app.login("alice", "alice-password").await;
    let (status, b) =
        app.get(&alice, "/api/v1/usage/breakdown?from=2026-02-02T00:00:00Z&to=2026-02-03T00:00:00Z&tz=UTC").await;
    assert_eq!(status, 200, "{b}");
    let rows = b["rows"].as_array().unwrap_or_else(|| panic!("{b}"));
    let cost = |model: &str| {
        let r = rows.iter().find(|r| r["model"] == model).unwrap_or_else(|| panic!("{model} in {b}"));
        (r["cost"].clone(), r["unpriced_tokens"].as_i64().unwrap())
    };
    assert_eq!(cost("gpt-4o"), (json!("3.25"), 0));
    assert_eq!(cost("claude-sonnet-4-5"), (json!("0.12675"), 2_000));
    assert_eq!(cost("gemini-2.5-flash"), (json!("0.0133"), 0));
    assert_eq!(cost("openai/gpt-4o-2024-08-06"), (json!("0.0075"), 0));
    assert_eq!(cost("my-own-finetune"), (Value::Null, 777));
    assert_eq!(cost("claude-sonnet-4-5-20250929"), (json!("1.29"), 0));
    assert_eq!(cost("gpt-4o-mini"), (json!("0.0105"), 0));
    assert_eq!(cost("gpt-5"), (json!("0.0455"), 0));
    assert_eq!(cost("o3"), (json!("0.063"), 0));
    assert_eq!(cost("claude-opus-4-1"), (json!("0.06"), 0));
    assert_eq!(cost("claude-haiku-4-5"), (Value::Null, 550));
    let summary = || async {
        let (_, s) =
            app.get(&alice, "/api/v1/usage/summary?from=2026-02-02T00:00:00Z&to=2026-02-03T00:00:00Z&tz=UTC").await;
        (s["total"]["cost"].clone(), s["total"]["unpriced_tokens"].clone())
    };
    assert_eq!(summary().await, (json!("4.86655"), json!(3_327)));
    // The raw events keep the tier and the searches: pricing them again
    // from storage changes nothing.
    let out = ok(tokenusage(&env, &["reprice", "--from", "2026-02-02", "--to", "2026-02-03", "--dry-run"], None));
    assert!(out.contains("already priced with the current book"), "{out}");
    ok(tokenusage(&env, &["reprice", "--from", "2026-02-02", "--to", "2026-02-03"], None));
    assert_eq!(summary().await, (json!("4.86655"), json!(3_327)));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_break_the_subset_rule_are_refused_with_the_field_named() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let key = tokenusage_schema::keys::create(&env.pool, "test", "svc", 1000).await.unwrap().key;
    let at = "2026-11-20T10:00:00Z";
    let batch = format!(
        "[{},{},{},{}]",
        line("ok", at, "m", 100, 10, json!({"cache_read_input_tokens": 100, "reasoning_output_tokens": 10})),
        line("cache", at, "m", 100, 10, json!({"cache_read_input_tokens": 101})),
        line("reason", at, "m", 100, 10, json!({"reasoning_output_tokens": 11})),
        line("cost", at, "m", 100, 10, json!({"cost": {"amount": "0.1", "currency": "dollars"}})),
    );
    let r = app
        .http
        .post(app.url("/api/v1/events"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    let b: Value = r.json().await.unwrap();
    let field = |i: usize| b["results"][i]["errors"][0]["field"].as_str().unwrap_or("").to_owned();
    assert_eq!(b["results"][0]["status"], "accepted", "{b}");
    assert_eq!(field(1), "cache_read_input_tokens");
    assert!(b["results"][1]["errors"][0]["reason"].as_str().unwrap().contains("more than input_tokens (100)"));
    assert_eq!(field(2), "reasoning_output_tokens");
    assert_eq!(field(3), "cost.currency");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_the_price_book_over_the_api_and_bad_prices_are_named() {
    let env = TestEnv::database_only().await;
    env.add_user("root", Role::Admin, "root-password").await;
    let app = TestApp::spawn_api(&env, test_api_args()).await;
    let admin = app.login("root", "root-password").await;
    let post = |body: Value| app.http.post(app.url("/api/v1/admin/prices")).bearer_auth(&admin).json(&body).send();
    let r = post(json!({"model": "m-api", "effective_from": "2026-01-01T00:00:00Z",
        "per_million": {"input": "1.25", "cache_read": "0.125"}, "source": "https://example.test"}))
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["per_million"], json!({"input": "1.25", "cache_read": "0.125"}));
    for (body, needle) in [
        (
            json!({"model": "m", "effective_from": "2026-01-01T00:00:00Z", "per_million": {"inptu": "1"}, "source": "s"}),
            "inptu",
        ),
        (
            json!({"model": "m", "effective_from": "2026-01-01T00:00:00Z", "per_million": {"input": "0.0000000001"}, "source": "s"}),
            "9 decimal places",
        ),
        (
            json!({"model": "m", "effective_from": "2026-01-01T00:00:00Z", "per_million": {"input": "-1"}, "source": "s"}),
            "negative",
        ),
        (
            json!({"model": "m m", "effective_from": "2026-01-01T00:00:00Z", "per_million": {"input": "1"}, "source": "s"}),
            "model",
        ),
        (
            json!({"model": "m", "effective_from": "yesterday", "per_million": {"input": "1"}, "source": "s"}),
            "effective_from",
        ),
        (
            json!({"model": "m", "effective_from": "2026-01-01T00:00:00Z", "per_million": {}, "source": "s"}),
            "at least one",
        ),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"]["message"].as_str().unwrap().contains(needle), "{body}: {e}");
    }
    let (status, book) = app.get(&admin, "/api/v1/admin/prices").await;
    assert_eq!(status, 200);
    let entry = book["entries"].as_array().unwrap().iter().find(|e| e["model"] == "m-api").unwrap().clone();
    let id = entry["id"].as_i64().unwrap();
    let r = app.http.delete(app.url(&format!("/api/v1/admin/prices/{id}"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (_, after) = app.get(&admin, "/api/v1/admin/prices").await;
    assert!(after["version"].as_i64() > book["version"].as_i64(), "every change bumps the version");
    assert!(!after["entries"].as_array().unwrap().iter().any(|e| e["model"] == "m-api"));
    let actions: Vec<String> =
        sqlx::query_scalar("select action from audit_log where action like 'admin.prices.%' order by seq")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(actions.iter().filter(|a| *a == "admin.prices.set").count(), 7, "{actions:?}");
    assert!(actions.contains(&"admin.prices.remove".to_owned()));
    app.stop().await;
    env.cleanup().await;
}

/// A catalogue with an invalid entry imports nothing (exit 1, every
/// invalid entry named), unless told to skip them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_invalid_catalogue_imports_all_or_nothing() {
    let env = TestEnv::database_only().await;
    let dir = std::env::temp_dir().join(format!("tu-prices-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("book.json");
    std::fs::write(
        &file,
        json!({"format": "tokenusage.prices.v1", "currency": "USD", "entries": [
            {"model": "good-model", "effective_from": "2026-01-01T00:00:00Z", "per_million": {"input": "1", "output": "2"}},
            {"model": "typo-model", "effective_from": "2026-01-01T00:00:00Z", "per_million": {"inptu": "1"}}
        ]})
        .to_string(),
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    let count = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from price_book where model = 'good-model'")
            .fetch_one(&env.pool)
            .await
            .unwrap()
    };
    let out = tokenusage(&env, &["prices", "import", &file], None);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("invalid typo-model") && said.contains("nothing imported"), "{said}");
    assert_eq!(count().await, 0, "nothing of it was imported");
    ok(tokenusage(&env, &["prices", "import", &file, "--skip-invalid"], None));
    assert_eq!(count().await, 1, "with --skip-invalid the valid entry is in");
    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}

/// A long-context price set from the command line: listed, exported, and
/// applied to a request over the threshold (and not to one at it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_context_price_set_by_hand_prices_requests_over_its_threshold() {
    let env = TestEnv::database_only().await;
    let set = |extra: &[&str]| {
        let mut args = vec!["prices", "set", "m-long", "--from", "2026-01-01", "--input", "3", "--output", "15"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--source", "https://example.test/prices"]);
        tokenusage(&env, &args, None)
    };
    let bad = set(&["--long-context-above", "200000", "--long-context", "input=6,input=7"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("input is given twice"));
    let bad = set(&["--long-context-above", "200000"]);
    assert!(!bad.status.success(), "a threshold without prices is refused");
    ok(set(&["--long-context-above", "200000", "--long-context", "input=6, output=22.5"]));
    let listed = ok(tokenusage(&env, &["prices", "list", "--model", "m-long"], None));
    assert!(listed.contains("requests over 200000 input tokens: input 6, output 22.5"), "{listed}");
    let exported: Value = serde_json::from_str(&ok(tokenusage(&env, &["prices", "export"], None))).unwrap();
    let entry = exported["entries"].as_array().unwrap().iter().find(|e| e["model"] == "m-long").unwrap().clone();
    assert_eq!(
        entry["long_context"],
        json!({"above_input_tokens": 200_000, "per_million": {"input": "6", "output": "22.5"}})
    );
    let at = "2026-02-02T10:00:00Z";
    tokenusage_projector::count_events(
        &env.pool,
        vec![
            event("over", at, "m-long", 200_001, 1_000, json!({})),
            event("at", at, "m-long", 200_000, 1_000, json!({})),
        ],
    )
    .await
    .unwrap();
    let (cost,): (i64,) =
        sqlx::query_as("select sum(cost_nanos)::int8 from usage_hour").fetch_one(&env.pool).await.unwrap();
    // over: 200,001 × $6/M + 1,000 × $22.50/M = 1.200006 + 0.0225; at: 200,000 × $3/M + 1,000 × $15/M = 0.6 + 0.015.
    assert_eq!(cost, 1_222_506_000 + 615_000_000);
    env.cleanup().await;
}

/// Service-tier and per-search prices set from the command line: bad
/// specifications are refused by name, the prices are listed and
/// exported, and events of each tier are charged by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_tier_and_search_prices_set_by_hand_price_the_events_that_name_them() {
    let env = TestEnv::database_only().await;
    let set = |extra: &[&str]| {
        let mut args = vec!["prices", "set", "m-tier", "--from", "2026-01-01", "--input", "2", "--output", "8"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--source", "https://example.test/prices"]);
        tokenusage(&env, &args, None)
    };
    for (extra, why) in [
        (&["--service-tier", "standard:input=1"][..], "the tier is batch, flex or priority"),
        (&["--service-tier", "batch"][..], "not TIER:KIND=PRICE"),
        (&["--service-tier", "batch:input=1", "--service-tier", "batch:output=2"][..], "batch is given twice"),
        (&["--web-search", "0.0000000001"][..], "--web-search"),
    ] {
        let out = set(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(why), "{extra:?}: {stderr}");
    }
    ok(set(&[
        "--service-tier",
        "batch:input=1,output=4",
        "--service-tier",
        "priority:input=3.5",
        "--web-search",
        "0.025",
    ]));
    let listed = ok(tokenusage(&env, &["prices", "list", "--model", "m-tier"], None));
    assert!(listed.contains("batch tier: input 1, output 4"), "{listed}");
    assert!(listed.contains("priority tier: input 3.5"), "{listed}");
    assert!(listed.contains("web search: 0.025 per request"), "{listed}");
    let exported: Value = serde_json::from_str(&ok(tokenusage(&env, &["prices", "export"], None))).unwrap();
    let entry = exported["entries"].as_array().unwrap().iter().find(|e| e["model"] == "m-tier").unwrap().clone();
    assert_eq!(entry["service_tiers"], json!({"batch": {"input": "1", "output": "4"}, "priority": {"input": "3.5"}}));
    assert_eq!(entry["per_request"], json!({"web_search": "0.025"}));
    let at = "2026-02-02T10:00:00Z";
    tokenusage_projector::count_events(
        &env.pool,
        vec![
            event("std", at, "m-tier", 1_000_000, 100_000, json!({})),
            event("batch", at, "m-tier", 1_000_000, 100_000, json!({"service_tier": "batch"})),
            event(
                "prio",
                at,
                "m-tier",
                1_000_000,
                100_000,
                json!({"service_tier": "priority", "web_search_requests": 4}),
            ),
        ],
    )
    .await
    .unwrap();
    let costs: Vec<(String, i64)> = sqlx::query_as("select event_id, cost_nanos from usage_events order by event_id")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    // standard 2 + 0.8; batch 1 + 0.4; priority 3.5 + 0.8 (output keeps the base) + 4 × 0.025.
    assert_eq!(
        costs,
        vec![("batch".into(), 1_400_000_000), ("prio".into(), 4_400_000_000), ("std".into(), 2_800_000_000)]
    );
    env.cleanup().await;
}
