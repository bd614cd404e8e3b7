//! `reconcile-bench`: importing a year of a provider's daily reports and
//! reconciling the year.
//!
//! Starts a synthetic OpenAI organisation report API in this process
//! (`--projects` projects × `--models` models a day, each project reached by
//! one of `--keys` API keys; usage and input/output cost lines), maps every
//! project to one of our projects, writes matching rollups of ours directly
//! in SQL (publishing a year of events is not what is measured here), then
//! times the import of `--days` days through the real importer (HTTP,
//! pages, one transaction a page) and the reconciliation of the whole range
//! (`--runs` times, each on a new connection). Needs DATABASE_URL of an
//! empty database.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Query;
use chrono::{NaiveDate, TimeDelta};
use clap::Parser;
use serde_json::{Value, json};
use tokenusage_providers::fetch::{Importer, Retry};
use tokenusage_providers::{Provider, reconcile, store};

#[derive(Debug, Parser)]
#[command(name = "reconcile-bench", about = "Provider report import and reconciliation at scale")]
struct Args {
    #[arg(long, default_value_t = 100)]
    projects: u32,
    #[arg(long, default_value_t = 20)]
    models: u32,
    #[arg(long, default_value_t = 50)]
    keys: u32,
    #[arg(long, default_value_t = 365)]
    days: i64,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Time the reads of a database an earlier run set up (after a
    /// PostgreSQL restart this is the cold figure); set up nothing.
    #[arg(long)]
    reuse: bool,
}

#[derive(Clone, Copy)]
struct Shape {
    projects: u32,
    models: u32,
    keys: u32,
    first: NaiveDate,
}

fn tokens(s: &Shape, day: NaiveDate, p: u32, m: u32) -> (i64, i64) {
    let d = (day - s.first).num_days();
    let input = 1000 + i64::from(p) * 7 + i64::from(m) * 13 + d;
    (input, input / 10)
}

fn day_param(p: &[(String, String)], name: &str) -> Option<NaiveDate> {
    let v = p.iter().find(|(k, _)| k == name)?.1.parse::<i64>().ok()?;
    chrono::DateTime::from_timestamp(v, 0).map(|t| t.date_naive())
}

fn page(s: &Shape, p: &[(String, String)], limit: i64, costs: bool) -> Value {
    let from = day_param(p, "start_time").unwrap_or(s.first);
    let to = day_param(p, "end_time").unwrap_or(from + TimeDelta::days(1));
    let first = p.iter().find(|(k, _)| k == "page").and_then(|(_, v)| v.parse::<NaiveDate>().ok()).unwrap_or(from);
    let last = (first + TimeDelta::days(limit)).min(to);
    let data: Vec<Value> = first
        .iter_days()
        .take_while(|d| *d < last)
        .map(|d| {
            let mut results = Vec::new();
            for pr in 0..s.projects {
                for m in 0..s.models {
                    let (input, output) = tokens(s, d, pr, m);
                    let (project, model) = (format!("proj_{pr}"), format!("model-{m}"));
                    if costs {
                        // $0.15 and $0.60 per million.
                        for (what, nanos) in [("input", input * 150), ("output", output * 600)] {
                            let value: serde_json::Number = format!("{}", nanos as f64 / 1e9).parse().unwrap_or(0.into());
                            results.push(json!({"object": "organization.costs.result", "amount": {"value": value, "currency": "usd"},
                                "line_item": format!("{model}, {what}"), "project_id": project}));
                        }
                    } else {
                        results.push(json!({"object": "organization.usage.completions.result", "input_tokens": input,
                            "output_tokens": output, "input_cached_tokens": 0, "num_model_requests": 1, "project_id": project,
                            "api_key_id": format!("key_{}", pr % s.keys), "model": model, "batch": false}));
                    }
                }
            }
            let start = d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp();
            json!({"object": "bucket", "start_time": start, "end_time": start + 86_400, "results": results})
        })
        .collect();
    json!({"object": "page", "data": data, "has_more": last < to, "next_page": (last < to).then(|| last.to_string())})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let first = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap_or_default();
    let s = Shape { projects: a.projects, models: a.models, keys: a.keys.max(1), first };
    let usage = move |Query(p): Query<Vec<(String, String)>>| async move { axum::Json(page(&s, &p, 31, false)) };
    let costs = move |Query(p): Query<Vec<(String, String)>>| async move { axum::Json(page(&s, &p, 31, true)) };
    let app = axum::Router::new()
        .route("/v1/organization/usage/completions", axum::routing::get(usage))
        .route("/v1/organization/costs", axum::routing::get(costs));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let url = std::env::var("DATABASE_URL")?;
    let to = first + TimeDelta::days(a.days);
    if !a.reuse {
        setup(&a, &base, &url, first, to).await?;
    }
    time_reads(&a, &url, first, to).await
}

/// Our side (hourly rollups, and the day rows and seals the sealer would
/// write), the mappings, and the import, timed.
async fn setup(a: &Args, base: &str, url: &str, first: NaiveDate, to: NaiveDate) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(url).await?;
    tokenusage_schema::migrations::migrate(&pool).await?;
    store::add(&pool, "bench", Provider::OpenAi, Some(base), &"sk-admin-bench".to_owned().into(), first, "bench")
        .await?;
    for p in 0..a.projects {
        let m = store::Mapping {
            connection: "bench".into(),
            kind: "scope".into(),
            external_id: format!("proj_{p}"),
            target_source: None,
            target_project: Some(format!("p{p}")),
        };
        store::map(&pool, &m).await?;
    }
    // Our side: one hourly rollup row per day, project and model, with the
    // provider's tokens (so every line reconciles).
    let t = Instant::now();
    sqlx::query(
        "insert into usage_hour (user_id, bucket, activity, model, source, project, input_tokens, output_tokens, events, \
         cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos, unpriced_tokens, supplied_events) \
         select 'u' || p, ($1::date + i + time '12:00') at time zone 'UTC', 'chat', 'model-' || m, 'svc', 'p' || p, \
                1000 + p * 7 + m * 13 + i, (1000 + p * 7 + m * 13 + i) / 10, 1, 0, 0, 0, \
                (1000 + p * 7 + m * 13 + i) * 150 + ((1000 + p * 7 + m * 13 + i) / 10) * 600, 0, 0 \
         from generate_series(0, $2 - 1) i, generate_series(0, $3 - 1) p, generate_series(0, $4 - 1) m",
    )
    .bind(first)
    .bind(a.days as i32)
    .bind(a.projects as i32)
    .bind(a.models as i32)
    .execute(&pool)
    .await?;
    // The day rows by project (grouping 14) and the seals the sealer would
    // leave: every day sealed.
    sqlx::query(
        "insert into usage_day (user_id, summed, day, activity, model, source, project, input_tokens, output_tokens, \
         events, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos, unpriced_tokens, supplied_events, \
         quarters, running) \
         select user_id, 14, (bucket at time zone 'UTC')::date, '', '', '', project, sum(input_tokens), sum(output_tokens), \
                sum(events), sum(cache_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens), sum(cost_nanos), \
                sum(unpriced_tokens), sum(supplied_events), array[48], \
                array[sum(input_tokens), sum(output_tokens), sum(events), sum(cache_read_tokens), sum(cache_write_tokens), \
                      sum(reasoning_tokens), sum(cost_nanos), sum(unpriced_tokens), sum(supplied_events)]::int8[] \
         from usage_hour group by user_id, 3, project",
    )
    .execute(&pool)
    .await?;
    sqlx::query(
        "insert into usage_day_seal (user_id, sealed_through) select distinct user_id, $1::date from usage_hour \
         on conflict (user_id) do update set sealed_through = excluded.sealed_through",
    )
    .bind(to)
    .execute(&pool)
    .await?;
    // As autovacuum would, before the plans below are made.
    sqlx::query("analyze usage_hour, usage_day, usage_day_seal").execute(&pool).await?;
    eprintln!("our rollups written in {:.1} s", t.elapsed().as_secs_f64());

    let policy = Arc::new(tokenusage_plumbing::outbound::Policy::allowing(vec!["127.0.0.0/8".parse()?]));
    let importer = Importer { client: policy.client()?, retry: Retry::default() };
    let t = Instant::now();
    let progress = |_: &'static str, _: NaiveDate| {};
    let sum = importer.import(&pool, "bench", first, to, "bench", &progress).await?;
    let import_secs = t.elapsed().as_secs_f64();
    sqlx::query("analyze provider_usage, provider_costs, provider_mappings, provider_usage_days, provider_cost_days")
        .execute(&pool)
        .await?;
    let (usage_rows, cost_rows): (i64, i64) =
        sqlx::query_as("select (select count(*) from provider_usage), (select count(*) from provider_costs)")
            .fetch_one(&pool)
            .await?;
    let size: String = sqlx::query_scalar(
        "select pg_size_pretty(pg_total_relation_size('provider_usage') + pg_total_relation_size('provider_costs'))",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "import: {} days × {} projects × {} models ({} keys): {:.1} s, {} pages, {usage_rows} usage rows, {cost_rows} cost rows, {size}",
        a.days, a.projects, a.models, a.keys, import_secs, sum.pages
    );
    pool.close().await;
    Ok(())
}

/// The day summary of the whole range (the first answer) and the lines,
/// each run on a new connection; the first run after a PostgreSQL restart
/// is the cold figure.
async fn time_reads(a: &Args, url: &str, first: NaiveDate, to: NaiveDate) -> anyhow::Result<()> {
    let mut times = Vec::new();
    let mut days = 0;
    for _ in 0..a.runs {
        // Two new connections, open before the clock starts (as in the
        // API's pool): the two ledgers are read on one each.
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(url).await?;
        drop((pool.acquire().await?, pool.acquire().await?));
        let t = Instant::now();
        let s = tokenusage_providers::summary::summary(&pool, first, to).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        days = s.days.len();
        let off = s.days.iter().filter(|d| d.token_difference != 0 || d.cost_difference_nanos != Some(0)).count();
        anyhow::ensure!(off == 0, "{off} days differ: the synthetic sides should agree");
        pool.close().await;
    }
    let first_ms = times[0];
    times.sort_by(f64::total_cmp);
    println!(
        "reconcile by day {} days ({days} rows, all agreeing): first {:.0} ms, median {:.0} ms, max {:.0} ms over {} runs (each on a new connection)",
        a.days,
        first_ms,
        times[times.len() / 2],
        times[times.len() - 1],
        a.runs
    );

    let mut times = Vec::new();
    let mut lines = 0;
    for _ in 0..a.runs {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?;
        let t = Instant::now();
        let r = reconcile::reconcile(&pool, first, to).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        lines = r.lines.len();
        let off = r.lines.iter().filter(|l| l.token_difference != 0 || l.cost_difference_nanos != Some(0)).count();
        anyhow::ensure!(off == 0, "{off} lines differ: the synthetic sides should agree");
        pool.close().await;
    }
    let first_ms = times[0];
    times.sort_by(f64::total_cmp);
    println!(
        "reconcile {} days ({lines} lines, all agreeing): first {:.0} ms, median {:.0} ms, max {:.0} ms over {} runs (each on a new connection)",
        a.days,
        first_ms,
        times[times.len() / 2],
        times[times.len() - 1],
        a.runs
    );
    Ok(())
}
