//! `tokenusage reprice`: price the stored raw events of a range again with
//! the book as it is now (`projector::rebuild` does it), on the record.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use tokenusage_contract::money;
use tokenusage_plumbing::DatabaseArgs;
use tokenusage_pricing::store;

use super::audit_cli as audit;
use super::rebuild::parse_time;

/// Price the stored raw events of a range again with the book as it is now,
/// and rebuild the affected rollups (live views see the corrected buckets).
#[derive(Debug, clap::Args)]
pub struct RepriceCmd {
    /// Start (inclusive), RFC 3339 or YYYY-MM-DD (UTC). Widened to the hour.
    #[arg(long, value_parser = parse_time)]
    pub from: DateTime<Utc>,
    /// End (exclusive). Widened to the hour.
    #[arg(long, value_parser = parse_time)]
    pub to: DateTime<Utc>,
    /// Only events of this model (the name as published).
    #[arg(long)]
    pub model: Option<String>,
    /// Print the cost before and after per day and model; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

pub async fn run(a: RepriceCmd) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.from < a.to, "--from must be before --to");
    let pool = super::database(&a.db, true).await?;
    run_range(&pool, a.from, a.to, a.model.as_deref(), a.dry_run).await
}

pub(super) async fn run_range(
    pool: &sqlx::PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    model: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let (currency, _) = store::state(pool).await?;
    // Raw events past retention are gone: their rollups keep the cost they had.
    let (raw_min, rollup_min): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        "select (select date_trunc('hour', min(occurred_at)) from usage_events), (select min(bucket) from usage_hour)",
    )
    .fetch_one(pool)
    .await?;
    if let Some(rollup_min) = rollup_min
        && rollup_min < raw_min.unwrap_or(to)
        && from < raw_min.unwrap_or(to)
    {
        eprintln!(
            "warning: usage before {} has no stored raw events (raw-event retention); those buckets keep the cost they were counted with",
            raw_min.map_or_else(|| to.to_string(), |t| t.to_string())
        );
    }
    eprintln!(
        "{} {from} .. {to}{}",
        if dry_run { "pricing (dry run)" } else { "re-pricing" },
        model.map(|m| format!(" ({m})")).unwrap_or_default()
    );
    let changes =
        tokenusage_projector::rebuild::reprice(pool, from, to, model, dry_run, super::rebuild::progress).await?;
    if changes.is_empty() {
        if !dry_run {
            // A run that changed nothing is still on the record.
            let params = serde_json::json!({ "from": from, "to": to, "model": model, "events": 0 });
            audit(pool, "reprice", "tokenusage reprice", params).await?;
        }
        println!("every event in the range is already priced with the current book; nothing to change");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10} {:<40} {:>8} {:>18} {:>18} {:>14} {:>14}",
        "day",
        "model",
        "events",
        format!("cost before {currency}"),
        format!("cost after {currency}"),
        "unpriced before",
        "unpriced after"
    );
    for c in &changes {
        println!(
            "{:<10} {:<40} {:>8} {:>18} {:>18} {:>14} {:>14}",
            c.day,
            c.model,
            c.events,
            money::format_nanos(c.cost_nanos_before),
            money::format_nanos(c.cost_nanos_after),
            c.unpriced_tokens_before,
            c.unpriced_tokens_after
        );
    }
    let before: i64 = changes.iter().map(|c| c.cost_nanos_before).sum();
    let after: i64 = changes.iter().map(|c| c.cost_nanos_after).sum();
    let events: i64 = changes.iter().map(|c| c.events).sum();
    if dry_run {
        println!(
            "dry run: {events} events would change from {} to {} {currency}",
            money::format_nanos(before),
            money::format_nanos(after)
        );
    } else {
        let params = serde_json::json!({
            "from": from, "to": to, "model": model, "events": events,
            "cost_nanos_before": before, "cost_nanos_after": after,
            "by_day_and_model": changes.iter().take(40).collect::<Vec<_>>(),
        });
        audit(pool, "reprice", "tokenusage reprice", params).await?;
        println!(
            "re-priced {events} events: {} → {} {currency}; their rollups were rebuilt",
            money::format_nanos(before),
            money::format_nanos(after)
        );
    }
    Ok(ExitCode::SUCCESS)
}
