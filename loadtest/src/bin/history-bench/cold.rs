//! `history-bench --cold`: whole-year series read cold (the series cache
//! off), in several zones, from the day rows (`usage_day`, issue #19),
//! against the same views read from the fine rollups (the read before day
//! rows: the subject's seals lowered for the run) and against aggregating
//! the raw events on read. Every view's total is checked against the raw
//! events first.

use std::time::Instant;

use chrono::NaiveDate;

use super::{Args, FROM, TO, pct, run, t};
use tokenusage_api::history::plan::{self, Granularity};

/// One subject of the cold matrix: its query parameter, the users whose
/// raw events it sums (empty: everyone) and how it is named in the table.
pub(crate) struct Subject {
    pub label: String,
    pub param: String,
    pub users: Vec<String>,
}

/// Builds the day rows of the seeded data and says what it cost.
pub(crate) async fn seal(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    let target = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default();
    let done = tokenusage_projector::seal::seal(pool, target, |s| eprint!("\rsealing: {} day rows", s.rows)).await?;
    let (rows, size): (i64, String) =
        sqlx::query_as("select count(*), pg_size_pretty(pg_total_relation_size('usage_day')) from usage_day")
            .fetch_one(pool)
            .await?;
    let hour: String =
        sqlx::query_scalar("select pg_size_pretty(pg_total_relation_size('usage_hour'))").fetch_one(pool).await?;
    eprintln!();
    println!(
        "sealed in {:.1} s: {} day rows ({rows} in the table, {size}; usage_hour is {hour}), {} transactions",
        started.elapsed().as_secs_f64(),
        done.rows,
        done.transactions
    );
    Ok(())
}

/// The raw events' sums per bucket of the view (tokens, events, cost and
/// unpriced tokens: the columns a raw read can sum without parsing JSON).
async fn raw_read(pool: &sqlx::PgPool, s: &Subject, p: &plan::Plan) -> anyhow::Result<i64> {
    let rows: Vec<(i32, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "select width_bucket(occurred_at, $1)::int4, sum(input_tokens)::int8, sum(output_tokens)::int8, \
         count(*)::int8, sum(cost_nanos)::int8, sum(unpriced_tokens)::int8 \
         from usage_events where (cardinality($2::text[]) = 0 or user_id = any($2)) \
         and occurred_at >= $3 and occurred_at < $4 group by 1",
    )
    .bind(&p.edges)
    .bind(&s.users)
    .bind(p.start())
    .bind(p.end)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| r.1 + r.2).sum())
}

/// Seals of `users` (everyone if empty) as they are now.
async fn seals(pool: &sqlx::PgPool, users: &[String]) -> anyhow::Result<Vec<(String, NaiveDate)>> {
    Ok(sqlx::query_as(
        "select user_id, sealed_through from usage_day_seal where cardinality($1::text[]) = 0 or user_id = any($1)",
    )
    .bind(users)
    .fetch_all(pool)
    .await?)
}

async fn set_seals(pool: &sqlx::PgPool, seals: &[(String, Option<NaiveDate>)]) -> anyhow::Result<()> {
    let (users, days): (Vec<&str>, Vec<Option<NaiveDate>>) = seals.iter().map(|(u, d)| (u.as_str(), *d)).unzip();
    sqlx::query(
        "update usage_day_seal s set sealed_through = coalesce(w.d, '-infinity') \
         from unnest($1::text[], $2::date[]) as w(u, d) where s.user_id = w.u",
    )
    .bind(&users)
    .bind(&days)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) fn print_header() {
    println!(
        "| subject | zone | view | buckets | day rows, 1 client p50 / p99 (ms) | day rows, {c} clients p50 / p99 (ms), req/s \
         | fine rollups, {c} clients p50 / p99 (ms) | raw on read, 1 client p50 (ms) | raw on read, {c} clients p50 / p99 (ms) \
         | raw / day rows, 1 client p50 |",
        c = "N"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
}

/// The cold matrix: every subject x zone x day/week/month.
pub(crate) async fn bench(
    a: &Args,
    pool: &sqlx::PgPool,
    http: &reqwest::Client,
    token: &str,
    subjects: &[Subject],
) -> anyhow::Result<()> {
    let root = a.cold_url.as_deref().ok_or_else(|| anyhow::anyhow!("--cold needs --cold-url"))?;
    let root = root.trim_end_matches('/');
    println!("concurrency N = {}, group = {}", a.concurrency, a.group);
    print_header();
    for s in subjects {
        for zone in a.zones.split(',') {
            let tz: chrono_tz::Tz = zone.parse().map_err(|e| anyhow::anyhow!("{zone}: {e}"))?;
            for g in [Granularity::Day, Granularity::Week, Granularity::Month] {
                let name = serde_json::to_value(g)?.as_str().unwrap_or_default().to_owned();
                let url = format!(
                    "{root}/api/v1/usage/series?from={FROM}&to={TO}&granularity={name}&tz={zone}&group={}{}",
                    a.group, s.param
                );
                let p = plan::plan(Some(g), &tz, chrono::Weekday::Mon, t(FROM), t(TO), 10_000)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let get = || {
                    let req = http.get(&url).bearer_auth(token);
                    async move {
                        req.send().await?.error_for_status()?.bytes().await?;
                        Ok(())
                    }
                };
                let body: serde_json::Value =
                    http.get(&url).bearer_auth(token).send().await?.error_for_status()?.json().await?;
                let api_total = body["total"]["total_tokens"].as_i64().unwrap_or(-1);
                let raw = raw_read(pool, s, &p).await?;
                anyhow::ensure!(
                    api_total == raw,
                    "{} {zone} {name}: the API says {api_total}, the raw events {raw}",
                    s.label
                );
                let buckets = body["points"].as_array().map_or(0, Vec::len);
                let one = run(a.single_requests, 1, get).await?;
                let started = Instant::now();
                let many = run(a.requests, a.concurrency, get).await?;
                let rate = a.requests as f64 / started.elapsed().as_secs_f64();
                // The read before day rows: the same views with the seals
                // lowered (every day read from the fine rollups).
                let saved = seals(pool, &s.users).await?;
                set_seals(pool, &saved.iter().map(|(u, _)| (u.clone(), None)).collect::<Vec<_>>()).await?;
                let fine = run(a.fine_requests, a.concurrency, get).await;
                set_seals(pool, &saved.iter().map(|(u, d)| (u.clone(), Some(*d))).collect::<Vec<_>>()).await?;
                let fine = fine?;
                let raw_one =
                    run(a.raw_single_requests, 1, || async { raw_read(pool, s, &p).await.map(|_| ()) }).await?;
                let raw_many =
                    run(a.raw_requests, a.concurrency, || async { raw_read(pool, s, &p).await.map(|_| ()) }).await?;
                println!(
                    "| {} | {zone} | {name} | {buckets} | {:.1} / {:.1} | {:.1} / {:.1}, {rate:.0} | {:.0} / {:.0} | {:.0} | {} | {:.0}x |",
                    s.label,
                    pct(&one, 0.5),
                    pct(&one, 0.99),
                    pct(&many, 0.5),
                    pct(&many, 0.99),
                    pct(&fine, 0.5),
                    pct(&fine, 0.99),
                    pct(&raw_one, 0.5),
                    if raw_many.is_empty() {
                        "—".to_owned()
                    } else {
                        format!("{:.0} / {:.0}", pct(&raw_many, 0.5), pct(&raw_many, 0.99))
                    },
                    pct(&raw_one, 0.5) / pct(&one, 0.5).max(1e-9)
                );
            }
        }
    }
    Ok(())
}
