//! `tokenusage replay` and `tokenusage verify`.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use tokenusage_plumbing::DatabaseArgs;
use tokenusage_projector::rebuild::{self, Drift};

pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| format!("expected RFC 3339 (2026-11-27T00:00:00Z) or a date (2026-11-27), got {s:?}"))
}

/// Rebuild the rollups of a date range from the stored raw events.
#[derive(Debug, clap::Args)]
pub struct ReplayCmd {
    /// Start of the range (inclusive), RFC 3339 or YYYY-MM-DD (UTC). Widened to the hour.
    #[arg(long, value_parser = parse_time)]
    pub from: DateTime<Utc>,
    /// End of the range (exclusive). Widened to the hour.
    #[arg(long, value_parser = parse_time)]
    pub to: DateTime<Utc>,
    /// Only this user's rollups.
    #[arg(long)]
    pub user: Option<String>,
    /// Print what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// Compare rollups with the raw events and report any drift (exit 1 if any).
#[derive(Debug, clap::Args)]
pub struct VerifyCmd {
    /// Start of the range; defaults to the oldest stored raw event.
    #[arg(long, value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
    /// End of the range; defaults to just after the newest stored raw event.
    #[arg(long, value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Only this user.
    #[arg(long)]
    pub user: Option<String>,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

fn print(drifts: &[Drift]) {
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>16} {:>16} {:>10} {:>18} {:>14}",
        "rollup", "changed", "missing", "extra", "Δ input", "Δ output", "Δ events", "Δ cost", "Δ unpriced"
    );
    for d in drifts {
        println!(
            "{:<20} {:>9} {:>9} {:>9} {:>16} {:>16} {:>10} {:>18} {:>14}",
            d.grain,
            d.changed,
            d.missing,
            d.extra,
            d.input_tokens_delta,
            d.output_tokens_delta,
            d.events_delta,
            tokenusage_contract::money::format_nanos(d.cost_nanos_delta),
            d.unpriced_tokens_delta
        );
    }
}

pub(crate) fn progress(done: u64, total: u64) {
    eprint!("\r{done}/{total} days");
    if done == total {
        eprintln!();
    }
}

pub async fn replay(a: ReplayCmd) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.from < a.to, "--from must be before --to");
    let pool = super::database(&a.db, true).await?;
    let (from, to) = rebuild::align(a.from, a.to);
    eprintln!(
        "{} rollups for {from} .. {to}{}",
        if a.dry_run { "comparing" } else { "rebuilding" },
        a.user.as_deref().map(|u| format!(" (user {u})")).unwrap_or_default()
    );
    let drifts = rebuild::replay(&pool, from, to, a.user.as_deref(), a.dry_run, progress).await?;
    print(&drifts);
    let clean = drifts.iter().all(Drift::is_clean);
    println!(
        "{}",
        match (a.dry_run, clean) {
            (_, true) => "rollups already match the raw events; nothing to change",
            (true, false) => "dry run: the rows above would be rewritten (run without --dry-run to apply)",
            (false, false) => "rebuilt: the rows above were rewritten from the raw events",
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(a: VerifyCmd) -> anyhow::Result<ExitCode> {
    let pool = super::database(&a.db, true).await?;
    let span = rebuild::raw_span(&pool).await?;
    let (Some(from), Some(to)) = (a.from.or(span.map(|s| s.0)), a.to.or(span.map(|s| s.1))) else {
        println!("no raw events stored; nothing to verify");
        return Ok(ExitCode::SUCCESS);
    };
    let drifts = rebuild::replay(&pool, from, to, a.user.as_deref(), true, progress).await?;
    print(&drifts);
    if drifts.iter().all(Drift::is_clean) {
        println!("no drift: rollups match the raw events");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("DRIFT: rollups differ from the raw events (repair with `tokenusage replay` over the range)");
        Ok(ExitCode::from(1))
    }
}
