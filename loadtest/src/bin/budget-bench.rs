//! `budget-bench`: what budgets cost and how fast their alerts arrive.
//!
//! - `load`: against a running `tokenusage serve` (projector + API with the
//!   budget evaluator) and its broker. Two phases of `--seconds` each at
//!   `--rate` events/s through Kafka: without budgets, then with
//!   `--budgets` of them on the loaded users. Reports the server's CPU and
//!   the projector's commit time in each phase, and, in the second, the time
//!   from producing an event that crosses a probe budget to its webhook
//!   arriving at a receiver in this process (p50/p99).
//! - `forecast`: the error of the budget forecast (pace so far × window
//!   length) on the demo generator's usage, for months and weeks, by how
//!   far into the window it is read. No server needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Parser, Subcommand};
use rand::Rng;
use tokenusage_contract::UsageEvent;
use tokenusage_ingest::synthetic::{Synthetic, rhythm};
use tokenusage_ingest::{ProducerArgs, Publisher};
use tokenusage_plumbing::KafkaArgs;

#[derive(Debug, Parser)]
#[command(name = "budget-bench", about = "Budget evaluation cost, alert latency and forecast error")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    Load(Load),
    Forecast {
        /// The demo's rate (events/s at the busiest hour; `serve --demo` uses 0.25).
        #[arg(long, default_value_t = 0.25)]
        rate: f64,
        /// The demo user's share of the events.
        #[arg(long, default_value_t = 0.30)]
        share: f64,
        /// Months simulated.
        #[arg(long, default_value_t = 24)]
        months: u32,
    },
}

#[derive(Debug, clap::Args)]
struct Load {
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// PID of the server, for its CPU time.
    #[arg(long)]
    server_pid: u32,
    #[arg(long, default_value_t = 10_000)]
    budgets: usize,
    /// Users the background load and the budgets spread over.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    #[command(flatten)]
    kafka: KafkaArgs,
}

fn cpu_secs(pid: u32) -> f64 {
    // Fields 14 and 15 of /proc/<pid>/stat (user and system time in
    // ticks); after the command's closing parenthesis the state is field 3.
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Busy and total jiffies of the whole machine (/proc/stat), so the
/// database's share of the work is seen too.
fn machine_jiffies() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> =
        s.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// A counter's value in the server's /metrics.
async fn counter(http: &reqwest::Client, addr: &str, name: &str) -> f64 {
    let text = match http.get(format!("http://{addr}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// `(sum, count)` of a histogram in the server's /metrics.
async fn histogram(http: &reqwest::Client, addr: &str, name: &str) -> (f64, f64) {
    let text = http.get(format!("http://{addr}/metrics")).send().await.ok();
    let text = match text {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    let get = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (get("sum"), get("count"))
}

/// Events at `rate`/s to `users` users for `secs`, in the background.
fn background(publisher: Publisher, users: usize, rate: u64, secs: u64) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let g = Synthetic::new("budget-bench");
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(secs) {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            let batch: Vec<UsageEvent> = {
                let mut rng = rand::rng();
                (sent..due).map(|i| g.event(&mut rng, &format!("bb-{}", i as usize % users), Utc::now())).collect()
            };
            sent = due;
            futures::future::join_all(batch.iter().map(|e| publisher.publish(e, None))).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sent
    })
}

/// One load phase: the server's CPU per second, the projector's mean
/// commit time, and the events sent. Also prints the machine's busy cores
/// (database included) and what the projector counted during the load.
async fn phase(a: &Load, publisher: &Publisher, http: &reqwest::Client) -> (f64, f64, u64) {
    let counted = "tokenusage_projector_events_counted_total";
    let commits = "tokenusage_projector_commit_seconds";
    let (c0, (s0, n0), t0) = (cpu_secs(a.server_pid), histogram(http, &a.addr, commits).await, Instant::now());
    let (m0, e0) = (machine_jiffies(), counter(http, &a.addr, counted).await);
    let sent = background(publisher.clone(), a.users, a.rate, a.seconds).await.unwrap_or(0);
    let (m_end, e_end) = (machine_jiffies(), counter(http, &a.addr, counted).await);
    // Let the projector and the evaluator finish what was sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (c1, (s1, n1)) = (cpu_secs(a.server_pid), histogram(http, &a.addr, commits).await);
    let cpu = (c1 - c0) / t0.elapsed().as_secs_f64();
    let commit_ms = if n1 > n0 { (s1 - s0) / (n1 - n0) * 1e3 } else { f64::NAN };
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    println!(
        "  machine busy {:.2} of {cores} cores during the load (database and load generator included); \
         projector counted {:.0} events during it ({:.0}/s)",
        (m_end.0 - m0.0) / (m_end.1 - m0.1) * cores,
        e_end - e0,
        (e_end - e0) / a.seconds as f64
    );
    (cpu, commit_ms, sent)
}

async fn load(a: Load) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(&a.database_url).await?;
    let http = reqwest::Client::new();
    let publisher = Publisher::new(&a.kafka, &ProducerArgs::default())?;
    // Warm-up: producer connections and the first commits are not measured.
    background(publisher.clone(), a.users, a.rate, 3).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (cpu0, commit0, sent0) = phase(&a, &publisher, &http).await;
    println!(
        "without budgets: {sent0} events in {} s; server CPU {:.2} cores; projector commit mean {commit0:.1} ms",
        a.seconds, cpu0
    );

    // The webhook receiver: arrival time per budget id.
    let arrivals: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    {
        let arrivals = arrivals.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let arrivals = arrivals.clone();
                async move {
                    let now = Instant::now();
                    if let Some(id) =
                        serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["budget"]["id"].as_i64())
                    {
                        arrivals.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_insert(now);
                    }
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    sqlx::query("insert into webhook_endpoints (name, url, secret, format, created_by) values ('bench', $1, 'bench-secret', 'json', 'bench')")
        .bind(&hook)
        .execute(&pool)
        .await?;
    // The budgets: per loaded user, token and cost budgets over every kind
    // of window, high enough that the load never crosses them.
    let periods = [("day", None), ("week", None), ("month", None), ("rolling", Some(60)), ("rolling", Some(1440))];
    let started = Instant::now();
    let (mut user, mut measure, mut period, mut zone, mut rolling) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..a.budgets {
        let (p, r) = periods[i % periods.len()];
        user.push(format!("bb-{}", (i / 10) % a.users));
        measure.push(if (i / periods.len()).is_multiple_of(2) { "tokens" } else { "cost" });
        period.push(p);
        zone.push(["UTC", "America/New_York", "Asia/Kathmandu", "Europe/Berlin"][i % 4]);
        rolling.push(r);
    }
    sqlx::query(
        "insert into budgets (name, scope_kind, scope, measure, amount, period, zone, rolling_minutes, thresholds, created_by) \
         select 'bench ' || u, 'user', u, m, 1000000000000000, p, case when p = 'rolling' then 'UTC' else z end, r, '{50,80,100}', 'bench' \
         from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[]) as t(u, m, p, z, r)",
    )
    .bind(&user)
    .bind(&measure)
    .bind(&period)
    .bind(&zone)
    .bind(&rolling)
    .execute(&pool)
    .await?;
    // Probe budgets: 1000 tokens a month each, alerting at 100 %.
    let probes: Vec<(i64, String)> = sqlx::query_as(
        "insert into budgets (name, scope_kind, scope, measure, amount, period, thresholds, webhooks, created_by) \
         select 'probe ' || g, 'user', 'bb-probe-' || g, 'tokens', 1000, 'month', '{100}', '{bench}', 'bench' \
         from generate_series(0, 199) g returning id, scope",
    )
    .fetch_all(&pool)
    .await?;
    println!(
        "{} budgets created in {:.1} s (+{} probe budgets)",
        a.budgets,
        started.elapsed().as_secs_f64(),
        probes.len()
    );
    // Wait for the first sweep to have evaluated them all.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n: i64 = sqlx::query_scalar("select count(*) from budget_state").fetch_one(&pool).await?;
        if n as usize >= a.budgets + probes.len() || Instant::now() > deadline {
            println!("evaluated: {n} budgets after {:.1} s", started.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Second phase, with a probe crossing a budget every 300 ms.
    let probe_publisher = Publisher::new(&a.kafka, &ProducerArgs { linger_ms: 5, ..ProducerArgs::default() })?;
    let probing = {
        let probes = probes.clone();
        tokio::spawn(async move {
            let mut sent: Vec<(i64, Instant, f64)> = Vec::new();
            tokio::time::sleep(Duration::from_secs(1)).await;
            for (id, user) in probes {
                let e = UsageEvent {
                    source: "budget-bench".into(),
                    event_id: uuid::Uuid::now_v7().to_string(),
                    user_id: user,
                    occurred_at: Utc::now(),
                    activity: "chat".into(),
                    model: "m".into(),
                    input_tokens: 1000,
                    output_tokens: 0,
                    kinds: Default::default(),
                    billing: Default::default(),
                    cost: None,
                    project: None,
                    metadata: None,
                };
                let t0 = Instant::now();
                if probe_publisher.publish(&e, None).await.is_ok() {
                    sent.push((id, t0, t0.elapsed().as_secs_f64() * 1e3));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            sent
        })
    };
    // A gateway checking a loaded user's 10 budgets, back to back, during the load.
    let key = tokenusage_schema::keys::create(&pool, "bench-gateway", "bench-gateway", 1000).await?.key;
    let checking = {
        let (http, addr, secs) = (http.clone(), a.addr.clone(), a.seconds);
        tokio::spawn(async move {
            let start = Instant::now();
            let mut times = Vec::new();
            while start.elapsed() < Duration::from_secs(secs) {
                let t = Instant::now();
                let ok = http
                    .get(format!("http://{addr}/api/v1/budgets/check?user=bb-5"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            times
        })
    };
    let evals0 = histogram(&http, &a.addr, "tokenusage_budget_evaluation_seconds").await;
    let (cpu1, commit1, sent1) = phase(&a, &publisher, &http).await;
    let evals1 = histogram(&http, &a.addr, "tokenusage_budget_evaluation_seconds").await;
    let sent = probing.await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "with {} budgets: {sent1} events in {} s; server CPU {:.2} cores ({:+.2}); projector commit mean {commit1:.1} ms ({:+.1})",
        a.budgets,
        a.seconds,
        cpu1,
        cpu1 - cpu0,
        commit1 - commit0
    );
    let mut checks = checking.await?;
    checks.sort_by(f64::total_cmp);
    println!(
        "  gateway check (10 budgets, during the load): {} answers, p50 {:.2} ms, p99 {:.2} ms",
        checks.len(),
        pct(&checks, 0.5),
        pct(&checks, 0.99)
    );
    let passes = evals1.1 - evals0.1;
    println!(
        "  evaluation passes: {passes:.0} ({:.1}/s), mean {:.0} ms",
        passes / a.seconds as f64,
        if passes > 0.0 { (evals1.0 - evals0.0) / passes * 1e3 } else { f64::NAN }
    );
    let got = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut lat: Vec<f64> =
        sent.iter().filter_map(|(id, t0, _)| got.get(id).map(|t| t.duration_since(*t0).as_secs_f64() * 1e3)).collect();
    lat.sort_by(f64::total_cmp);
    let mut acks: Vec<f64> = sent.iter().map(|s| s.2).collect();
    acks.sort_by(f64::total_cmp);
    println!(
        "produce -> webhook ({} crossings, {} without a webhook): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; of which produce -> broker ack p50 {:.1} ms",
        lat.len(),
        sent.len() - lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        pct(&acks, 0.5)
    );
    // Crossing commit -> webhook: the evaluation's commit is after
    // `crossed_at` (its clock), the arrival is measured here; both clocks
    // are this machine's.
    let crossed: Vec<(i64, DateTime<Utc>)> =
        sqlx::query_as("select budget_id, crossed_at from budget_crossings where budget_id = any($1)")
            .bind(probes.iter().map(|p| p.0).collect::<Vec<_>>())
            .fetch_all(&pool)
            .await?;
    let now_wall = Utc::now();
    let now_mono = Instant::now();
    let mut after: Vec<f64> = crossed
        .iter()
        .filter_map(|(id, at)| {
            let arrival = got.get(id)?;
            let arrival_wall = now_wall - TimeDelta::from_std(now_mono.duration_since(*arrival)).ok()?;
            Some((arrival_wall - *at).num_microseconds()? as f64 / 1e3)
        })
        .collect();
    after.sort_by(f64::total_cmp);
    println!("evaluation (crossed_at) -> webhook: p50 {:.1} ms, p99 {:.1} ms", pct(&after, 0.5), pct(&after, 0.99));
    Ok(())
}

/// The demo generator's expected tokens in one hour for one user, drawn
/// as the demo draws them (event count ± 20 %, Synthetic's token sizes).
fn forecast(rate: f64, share: f64, months: u32) {
    let g = Synthetic::new("forecast");
    let mut rng = rand::rng();
    let start: DateTime<Utc> = "2025-01-01T00:00:00Z".parse().unwrap_or_default();
    let end = start + TimeDelta::days(i64::from(months) * 31);
    // Hourly token totals of the demo user.
    let mut hours: Vec<(DateTime<Utc>, i64)> = Vec::new();
    let mut h = start;
    while h < end {
        let expected = rate * 3600.0 * rhythm(h + TimeDelta::minutes(30)) * share;
        let n = (expected * rng.random_range(0.8..1.2)).round() as i64;
        let tokens: i64 = (0..n)
            .map(|_| {
                let e = g.event(&mut rng, "demo", h);
                (e.input_tokens + e.output_tokens) as i64
            })
            .sum();
        hours.push((h, tokens));
        h += TimeDelta::hours(1);
    }
    let spent = |from: DateTime<Utc>, to: DateTime<Utc>| -> i64 {
        hours.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, v)| v).sum()
    };
    for (label, windows, points) in [
        ("month", month_windows(start, end), vec![0.1, 0.25, 0.5, 0.75, 0.9]),
        ("week (Mon-Sun)", week_windows(start, end), vec![1.0 / 7.0, 2.0 / 7.0, 3.5 / 7.0, 5.0 / 7.0, 6.0 / 7.0]),
    ] {
        println!("{label}: {} windows", windows.len());
        for p in points {
            let mut errs: Vec<f64> = windows
                .iter()
                .filter_map(|(ws, we)| {
                    let total = spent(*ws, *we) as f64;
                    let at = *ws + TimeDelta::seconds(((*we - *ws).num_seconds() as f64 * p) as i64);
                    // The dashboard's forecast, as the evaluator computes it.
                    let w = tokenusage_budgets::window::Window { start: *ws, end: *we, key: *ws };
                    let f = w.forecast(false, spent(*ws, at), at)? as f64;
                    (total > 0.0).then(|| (f - total) / total * 100.0)
                })
                .collect();
            errs.sort_by(f64::total_cmp);
            let mape = errs.iter().map(|e| e.abs()).sum::<f64>() / errs.len().max(1) as f64;
            println!(
                "  read at {:>3.0} % of the window: mean |error| {mape:.1} %, median {:+.1} %, worst {:+.1} % / {:+.1} %",
                p * 100.0,
                pct(&errs, 0.5),
                errs.first().copied().unwrap_or(f64::NAN),
                errs.last().copied().unwrap_or(f64::NAN)
            );
        }
    }
}

fn month_windows(start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let tz = chrono_tz::Tz::UTC;
    let mut out = Vec::new();
    let mut t = start;
    loop {
        let (s, e) = tokenusage_schema::calendar::bucket_of(
            tokenusage_schema::calendar::Granularity::Month,
            &tz,
            chrono::Weekday::Mon,
            t,
        );
        if e > end {
            return out;
        }
        out.push((s, e));
        t = e;
    }
}

fn week_windows(start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let tz = chrono_tz::Tz::UTC;
    let mut out = Vec::new();
    let (_, mut t) = tokenusage_schema::calendar::bucket_of(
        tokenusage_schema::calendar::Granularity::Week,
        &tz,
        chrono::Weekday::Mon,
        start,
    );
    loop {
        let e = t + TimeDelta::days(7);
        if e > end {
            return out;
        }
        out.push((t, e));
        t = e;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Load(a) => load(a).await,
        Cmd::Forecast { rate, share, months } => {
            forecast(rate, share, months);
            Ok(())
        }
    }
}
