//! `history-bench`: latency of the history API over a year of minute-level
//! traffic, against aggregating the raw events on read for the same views.
//!
//! 1. `--seed`: one user, one event per minute for a year (525,600 events)
//!    across 30 activity x model series, counted through the projector's
//!    own write path (de-dup, raw events, rollups).
//! 2. Day, week and month series for the whole year through the running
//!    API (`--url`), `--concurrency` requests in flight, `--requests` each.
//! 3. The same views computed from `usage_events` on read, in the same run.
//!
//! Totals of both paths are compared before any timing counts.
//!
//! With `--teams`: 1,000 users in 50 teams of 20 (`--seed` seeds a year of
//! one event per user every 2 hours, 4.4M events, and the teams, with the
//! benchmark user managing all of them); the same views for a team's year,
//! rotating over the 50 teams, and for one member's year, against the raw
//! events of the team's members.
//!
//! With `--cold` (issue #19, `cold.rs`): after seeding, the day rows are
//! sealed (timed), then every view is read cold in each of `--zones`, from
//! day rows and from the fine rollups, against the raw events. `--large`
//! seeds 1,000 users x 10,000 events (10M, in 50 teams) instead of the one
//! heavy user, and reads one member, one team and everyone.

mod cold;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use futures::StreamExt;
use tokenusage_api::history::plan::{self, Granularity};
use tokenusage_contract::UsageEvent;

#[derive(Debug, Parser)]
#[command(name = "history-bench", about = "History API latency vs raw aggregation on read")]
struct Args {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Base URL of the running API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value = "bench-user")]
    user: String,
    #[arg(long, env = "BENCH_PASSWORD", hide_env_values = true)]
    password: String,
    /// Seed the year of events first.
    #[arg(long)]
    seed: bool,
    /// Base URL of an API with the series cache off (`TOKENUSAGE_SERIES_CACHE_ENTRIES=0`).
    #[arg(long)]
    cold_url: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Requests per granularity through the API.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Requests per granularity for raw aggregation (it is slow).
    #[arg(long, default_value_t = 100)]
    raw_requests: usize,
    /// The teams data set instead of the one-user year.
    #[arg(long)]
    teams: bool,
    /// The cold-read matrix (issue #19) against `--cold-url`.
    #[arg(long)]
    cold: bool,
    /// With `--cold`: 1,000 users x 10,000 events in 50 teams.
    #[arg(long)]
    large: bool,
    /// With `--cold`: the zones to read in.
    #[arg(long, default_value = "UTC,America/New_York,Asia/Kolkata,Asia/Kathmandu")]
    zones: String,
    /// With `--cold`: the views' `group` (none, activity, model, ...).
    #[arg(long, default_value = "none")]
    group: String,
    /// With `--cold`: requests per view from one client.
    #[arg(long, default_value_t = 30)]
    single_requests: usize,
    /// With `--cold`: requests per view from the fine rollups.
    #[arg(long, default_value_t = 100)]
    fine_requests: usize,
    /// With `--cold`: raw reads per view from one client.
    #[arg(long, default_value_t = 3)]
    raw_single_requests: usize,
}

const TEAM_USERS: usize = 1_000;
const TEAMS: usize = 50;

fn member(i: usize) -> String {
    format!("bench-member-{i:04}")
}

fn team(i: usize) -> String {
    format!("bench-team-{i:02}")
}

/// One event per user every `spacing_secs` of the year (the second
/// varies), over 6 activity x model series and 3 projects; then the teams.
async fn seed_teams(pool: &sqlx::PgPool, manager: &str, spacing_secs: i64) -> anyhow::Result<()> {
    let (from, to) = (t(FROM), t(TO));
    let slots = (to - from).num_seconds() / spacing_secs;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(20_000);
    let total = slots as usize * TEAM_USERS;
    let mut n = 0usize;
    for slot in 0..slots {
        for u in 0..TEAM_USERS {
            let k = slot as usize * TEAM_USERS + u;
            let series = k % 6;
            batch.push(UsageEvent {
                source: "history-bench".into(),
                event_id: format!("t{k}"),
                user_id: member(u),
                occurred_at: from + chrono::Duration::seconds(slot * spacing_secs + (k as i64 % (spacing_secs - 7))),
                activity: ACTIVITIES[series / 3].into(),
                model: MODELS[series % 3].into(),
                input_tokens: 100 + (k % 997) as u64,
                output_tokens: (k % 331) as u64,
                kinds: Default::default(),
                billing: Default::default(),
                cost: None,
                project: Some(["search", "support-bot", "code-review"][k % 3].into()),
                metadata: None,
            });
            n += 1;
            if batch.len() == 20_000 || n == total {
                tokenusage_projector::count_events(pool, std::mem::take(&mut batch)).await?;
                eprint!("\rseeded {n}/{total} events");
            }
        }
    }
    eprintln!(" in {:.1} s", started.elapsed().as_secs_f64());
    for i in 0..TEAMS {
        tokenusage_api::teams::create(pool, &team(i), "history-bench").await?;
        let members: Vec<String> = (i * (TEAM_USERS / TEAMS)..(i + 1) * (TEAM_USERS / TEAMS)).map(member).collect();
        tokenusage_api::teams::set_members(pool, &team(i), &members, tokenusage_api::teams::TeamRole::Member).await?;
        tokenusage_api::teams::set_member(pool, &team(i), manager, tokenusage_api::teams::TeamRole::Manager).await?;
    }
    Ok(())
}

/// The raw-event total of a team's members over the year.
async fn raw_team_total(pool: &sqlx::PgPool, team_index: usize, g: Granularity) -> anyhow::Result<i64> {
    let p = plan::plan(Some(g), &chrono_tz::UTC, chrono::Weekday::Mon, t(FROM), t(TO), 10_000)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let members: Vec<String> =
        (team_index * (TEAM_USERS / TEAMS)..(team_index + 1) * (TEAM_USERS / TEAMS)).map(member).collect();
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "select width_bucket(occurred_at, $1)::int4, sum(input_tokens + output_tokens)::int8 \
         from usage_events where user_id = any($2) and occurred_at >= $3 and occurred_at < $4 group by 1",
    )
    .bind(&p.edges)
    .bind(&members)
    .bind(p.start())
    .bind(p.end)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.1).sum())
}

/// Team views against one member's, cached and cold, and raw on read.
async fn bench_teams(a: &Args, pool: &sqlx::PgPool, http: &reqwest::Client, token: &str) -> anyhow::Result<()> {
    let base = a.url.trim_end_matches('/');
    print_header();
    for g in [Granularity::Day, Granularity::Week, Granularity::Month] {
        let name = serde_json::to_value(g)?.as_str().unwrap_or_default().to_owned();
        let path = |subject: &str| format!("/api/v1/usage/series?from={FROM}&to={TO}&granularity={name}&{subject}");
        // Totals first: the team's view equals its members' raw events.
        let body: serde_json::Value = http
            .get(format!("{base}{}", path(&format!("team={}", team(7)))))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let (api_total, raw) =
            (body["total"]["total_tokens"].as_i64().unwrap_or(-1), raw_team_total(pool, 7, g).await?);
        anyhow::ensure!(
            api_total == raw,
            "{name}: the team view says {api_total} tokens, its members' raw events {raw}"
        );
        let buckets = body["points"].as_array().map_or(0, Vec::len);
        for (label, subject) in
            [("a team's (20 members)", None), ("one member's", Some(format!("user={}", member(140))))]
        {
            let i = std::sync::atomic::AtomicUsize::new(0);
            let url_for = |root: &str| {
                let s = subject.clone().unwrap_or_else(|| {
                    format!("team={}", team(i.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % TEAMS))
                });
                format!("{root}{}", path(&s))
            };
            let get = |url: String| {
                let req = http.get(url).bearer_auth(token);
                async move {
                    req.send().await?.error_for_status()?.bytes().await?;
                    Ok(())
                }
            };
            let cached = run(a.requests, a.concurrency, || get(url_for(base))).await?;
            let cold = match &a.cold_url {
                Some(c) => {
                    run(a.raw_requests.max(200), a.concurrency, || get(url_for(c.trim_end_matches('/')))).await?
                }
                None => Vec::new(),
            };
            let rawl = if subject.is_none() {
                let j = std::sync::atomic::AtomicUsize::new(0);
                run(a.raw_requests, a.concurrency, || {
                    let k = j.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % TEAMS;
                    async move { raw_team_total(pool, k, g).await.map(|_| ()) }
                })
                .await?
            } else {
                Vec::new()
            };
            print_row(&format!("{label} {name}"), buckets, &cached, &cold, &rawl);
        }
    }
    Ok(())
}

const ACTIVITIES: [&str; 5] = ["chat", "embedding", "agent-run", "summarize", "classify"];
const MODELS: [&str; 6] =
    ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "claude-haiku-4", "llama-3.1-70b", "mistral-large"];
const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2026-01-01T00:00:00Z";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

async fn seed(pool: &sqlx::PgPool, user: &str) -> anyhow::Result<()> {
    let (from, to) = (t(FROM), t(TO));
    let minutes = (to - from).num_minutes();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(20_000);
    for m in 0..minutes {
        let series = (m % 30) as usize;
        batch.push(UsageEvent {
            source: "history-bench".into(),
            event_id: format!("m{m}"),
            user_id: user.into(),
            occurred_at: from + chrono::Duration::minutes(m) + chrono::Duration::seconds(m % 60),
            activity: ACTIVITIES[series / 6].into(),
            model: MODELS[series % 6].into(),
            input_tokens: 100 + (m % 997) as u64,
            output_tokens: (m % 331) as u64,
            kinds: Default::default(),
            billing: Default::default(),
            cost: None,
            project: None,
            metadata: None,
        });
        if batch.len() == 20_000 || m == minutes - 1 {
            tokenusage_projector::count_events(pool, std::mem::take(&mut batch)).await?;
            eprint!("\rseeded {}/{minutes} events", m + 1);
        }
    }
    eprintln!(" in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn print_header() {
    println!(
        "| view | buckets | API, cached p50 / p99 (ms) | API, cache off p50 / p99 (ms) | raw on read p50 / p99 (ms) | raw / cache-off p50 |"
    );
    println!("|---|---|---|---|---|---|");
}

/// One table row: the view, its buckets, and p50 / p99 of each path.
fn print_row(view: &str, buckets: usize, cached: &[Duration], cold: &[Duration], raw: &[Duration]) {
    println!(
        "| {view} series, whole year | {buckets} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1}x |",
        pct(cached, 0.5),
        pct(cached, 0.99),
        pct(cold, 0.5),
        pct(cold, 0.99),
        pct(raw, 0.5),
        pct(raw, 0.99),
        pct(raw, 0.5) / pct(cold, 0.5).max(1e-9)
    );
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted.get(((sorted.len().max(1) - 1) as f64 * p).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Runs `n` calls of `f` with `concurrency` in flight; returns sorted latencies.
async fn run<F, Fut>(n: usize, concurrency: usize, f: F) -> anyhow::Result<Vec<Duration>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut lat: Vec<Duration> = futures::stream::iter(0..n)
        .map(|_| {
            let fut = f();
            async move {
                let s = Instant::now();
                fut.await.map(|()| s.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    lat.sort();
    Ok(lat)
}

async fn raw_total(pool: &sqlx::PgPool, user: &str, g: Granularity) -> anyhow::Result<i64> {
    let p = plan::plan(Some(g), &chrono_tz::UTC, chrono::Weekday::Mon, t(FROM), t(TO), 10_000)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let rows: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
        "select width_bucket(occurred_at, $1)::int4, sum(input_tokens)::int8, sum(output_tokens)::int8, count(*)::int8 \
         from usage_events where user_id = $2 and occurred_at >= $3 and occurred_at < $4 group by 1",
    )
    .bind(&p.edges)
    .bind(user)
    .bind(p.start())
    .bind(p.end)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.1 + r.2).sum())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let pool =
        sqlx::postgres::PgPoolOptions::new().max_connections(a.concurrency as u32).connect(&a.database_url).await?;
    if a.seed && a.large {
        // 10,000 events per user: one every 3,153 s.
        seed_teams(&pool, &a.user, 3_153).await?;
    } else if a.seed && a.teams {
        seed_teams(&pool, &a.user, 7_200).await?;
    } else if a.seed {
        seed(&pool, &a.user).await?;
    }
    if a.seed && a.cold {
        cold::seal(&pool).await?;
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).build()?;
    let base = a.url.trim_end_matches('/').to_owned();
    let login: serde_json::Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": a.user, "password": a.password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = login["access_token"].as_str().unwrap_or_default().to_owned();
    if a.cold {
        let subjects = if a.large {
            let members = |i: usize| (i * (TEAM_USERS / TEAMS)..(i + 1) * (TEAM_USERS / TEAMS)).map(member).collect();
            vec![
                cold::Subject {
                    label: "one user of 1,000".into(),
                    param: format!("&user={}", member(140)),
                    users: vec![member(140)],
                },
                cold::Subject { label: "a team of 20".into(), param: format!("&team={}", team(7)), users: members(7) },
                cold::Subject {
                    label: "everyone (1,000 users, 10M events)".into(),
                    param: "&user=*".into(),
                    users: vec![],
                },
            ]
        } else {
            vec![cold::Subject {
                label: "one user (525,600 events)".into(),
                param: String::new(),
                users: vec![a.user.clone()],
            }]
        };
        return cold::bench(&a, &pool, &http, &token, &subjects).await;
    }
    if a.teams {
        return bench_teams(&a, &pool, &http, &token).await;
    }
    print_header();
    for g in [Granularity::Day, Granularity::Week, Granularity::Month] {
        let name = serde_json::to_value(g)?.as_str().unwrap_or_default().to_owned();
        let url = format!("{base}/api/v1/usage/series?from={FROM}&to={TO}&granularity={name}");
        let body: serde_json::Value =
            http.get(&url).bearer_auth(&token).send().await?.error_for_status()?.json().await?;
        let api_total = body["total"]["total_tokens"].as_i64().unwrap_or(-1);
        let raw = raw_total(&pool, &a.user, g).await?;
        anyhow::ensure!(api_total == raw, "{name}: the API says {api_total} tokens, the raw events {raw}");
        let buckets = body["points"].as_array().map_or(0, Vec::len);
        let api = run(a.requests, a.concurrency, || {
            let req = http.get(&url).bearer_auth(&token);
            async move {
                req.send().await?.error_for_status()?.bytes().await?;
                Ok(())
            }
        })
        .await?;
        let cold = match &a.cold_url {
            Some(cold) => {
                let url = url.replace(&base, cold.trim_end_matches('/'));
                run(a.raw_requests.max(200), a.concurrency, || {
                    let req = http.get(&url).bearer_auth(&token);
                    async move {
                        req.send().await?.error_for_status()?.bytes().await?;
                        Ok(())
                    }
                })
                .await?
            }
            None => Vec::new(),
        };
        let rawl = run(a.raw_requests, a.concurrency, || {
            let (pool, user) = (&pool, &a.user);
            async move { raw_total(pool, user, g).await.map(|_| ()) }
        })
        .await?;
        print_row(&name, buckets, &api, &cold, &rawl);
    }
    Ok(())
}
