//! `tokenusage replay`, `tokenusage verify` and `tokenusage seal`.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use tokenusage_plumbing::DatabaseArgs;
use tokenusage_projector::rebuild::{self, Drift};
use tokenusage_projector::seal;

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

/// Records a partition's log no longer held when the projector reached
/// them (Kafka retention, or a broker that trims its log): they were
/// published and can never be counted. `verify` fails while any is open.
#[derive(Debug, clap::Args)]
pub struct LostCmd {
    /// Mark every open loss as known (it stays listed with --all, and
    /// `verify` and `/readyz` stop reporting it).
    #[arg(long)]
    pub acknowledge: bool,
    /// Also list acknowledged losses.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// Prints the open (or all) losses; returns how many records are open.
async fn print_lost(pool: &sqlx::PgPool, all: bool) -> anyhow::Result<i64> {
    let ranges = tokenusage_schema::lost::list(pool, all, 1000).await?;
    for r in &ranges {
        println!(
            "LOST: {} records of {} partition {} (offsets {}..{}), found {}{}",
            r.records(),
            r.topic,
            r.partition,
            r.from_offset,
            r.to_offset - 1,
            r.detected_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.acknowledged_at
                .map(|a| format!(", acknowledged {}", a.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                .unwrap_or_default()
        );
    }
    Ok(tokenusage_schema::lost::open_total(pool).await?)
}

pub async fn lost(a: LostCmd) -> anyhow::Result<ExitCode> {
    let pool = super::database(&a.db, true).await?;
    let open = print_lost(&pool, a.all).await?;
    if a.acknowledge {
        let n = tokenusage_schema::lost::acknowledge_all(&pool).await?;
        println!("{n} loss ranges ({open} records) acknowledged");
        return Ok(ExitCode::SUCCESS);
    }
    if open > 0 {
        println!(
            "{open} records were lost before they were counted (acknowledge with `tokenusage lost --acknowledge`)"
        );
        return Ok(ExitCode::from(1));
    }
    println!("no open losses: every record the broker was asked for was counted");
    Ok(ExitCode::SUCCESS)
}

/// Build the day rows cold reads use (`usage_day`) for every ended UTC
/// day not yet built, or rebuild them from `--from` on.
#[derive(Debug, clap::Args)]
pub struct SealCmd {
    /// Rebuild the day rows of every user from this UTC day on (they are
    /// read from the fine rollups until rebuilt). Without it, only days not
    /// built yet are built.
    #[arg(long, value_parser = parse_time)]
    pub from: Option<DateTime<Utc>>,
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
    // What never reached the rollups first: no comparison can see it.
    let lost = print_lost(&pool, false).await?;
    if lost > 0 {
        println!(
            "LOSS: {lost} published records were gone from the broker before they were counted (see `tokenusage lost`)"
        );
    }
    let lost_code = if lost > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS };
    let span = rebuild::raw_span(&pool).await?;
    let (Some(from), Some(to)) = (a.from.or(span.map(|s| s.0)), a.to.or(span.map(|s| s.1))) else {
        println!("no raw events stored; nothing to verify");
        return Ok(lost_code);
    };
    let drifts = rebuild::replay(&pool, from, to, a.user.as_deref(), true, progress).await?;
    print(&drifts);
    // The day rows below each seal against the quarter-hour rollup.
    let days = seal::verify(&pool, from.date_naive(), to.date_naive() + chrono::TimeDelta::days(1)).await?;
    println!(
        "usage_day: {} sealed rows checked, {} differ from the quarter-hour rollup",
        days.rows_checked, days.differing
    );
    if drifts.iter().all(Drift::is_clean) && days.differing == 0 {
        println!("no drift: rollups match the raw events, day rows match the rollups");
        Ok(lost_code)
    } else if days.differing > 0 {
        println!("DRIFT: day rows differ from the rollups (repair with `tokenusage seal --from <the range's start>`)");
        Ok(ExitCode::from(1))
    } else {
        println!("DRIFT: rollups differ from the raw events (repair with `tokenusage replay` over the range)");
        Ok(ExitCode::from(1))
    }
}

pub async fn seal(a: SealCmd) -> anyhow::Result<ExitCode> {
    let pool = super::database(&a.db, true).await?;
    if let Some(from) = a.from {
        let lowered = sqlx::query("update usage_day_seal set sealed_through = $1 where sealed_through > $1")
            .bind(from.date_naive())
            .execute(&pool)
            .await?
            .rows_affected();
        eprintln!("{lowered} users' day rows will be rebuilt from {}", from.date_naive());
    }
    let target = seal::target(Utc::now());
    eprintln!("building day rows up to {target} (days that ended over {} h ago)", seal::GRACE.num_hours());
    let started = std::time::Instant::now();
    let done = seal::seal(&pool, target, |s| {
        eprint!("\r{} transactions, {} day rows written", s.transactions, s.rows);
    })
    .await?;
    if done.transactions > 0 {
        eprintln!();
    }
    println!(
        "sealed: {} day rows written in {} transactions, {:.1} s",
        done.rows,
        done.transactions,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
