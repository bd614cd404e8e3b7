//! `tokenusage providers ...` and `tokenusage reconcile`: connecting the
//! providers' organisation reports, mapping their scopes to ours, importing,
//! and setting their figures beside ours (`tokenusage-providers` does the
//! work). Every change is written to the audit trail, never with the key.

use std::io::BufRead;
use std::process::ExitCode;

use chrono::{NaiveDate, TimeDelta, Utc};
use secrecy::SecretString;
use tokenusage_plumbing::DatabaseArgs;
use tokenusage_plumbing::outbound::OutboundArgs;
use tokenusage_providers::fetch::{Importer, Retry};
use tokenusage_providers::reconcile;
use tokenusage_providers::{Provider, store};

use super::audit_cli as audit;

fn parse_provider(s: &str) -> Result<Provider, String> {
    Provider::parse(s).ok_or_else(|| format!("expected openai or anthropic, got {s:?}"))
}

fn parse_day(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| format!("expected a date like 2026-11-27, got {s:?}"))
}

fn parse_percent(s: &str) -> Result<rust_decimal::Decimal, String> {
    reconcile::parse_tolerance(s)
}

#[derive(Debug, clap::Subcommand)]
pub enum ProvidersCmd {
    /// Connect a provider's organisation usage and cost reports with an
    /// admin key, read from TOKENUSAGE_PROVIDER_ADMIN_KEY or else the first
    /// line of standard input (never a flag: it would show in the process
    /// list and shell history). The key is never shown again.
    Add {
        /// A name for the connection (a-z, 0-9, '_', '.', '-').
        name: String,
        /// openai or anthropic.
        #[arg(long, value_parser = parse_provider)]
        provider: Provider,
        /// The API's base URL (a regional endpoint or a proxy); the provider's own by default.
        #[arg(long)]
        base_url: Option<String>,
        /// The first day to import (UTC); 30 days ago by default.
        #[arg(long, value_parser = parse_day)]
        import_from: Option<NaiveDate>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List connections (never their keys) with their last import.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Remove a connection with everything imported through it.
    Remove {
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Import (or backfill) days FROM .. TO (TO exclusive) now, showing progress.
    Import {
        name: String,
        #[arg(long, value_parser = parse_day)]
        from: NaiveDate,
        /// Exclusive; tomorrow (UTC) by default, so today's partial figures are read too.
        #[arg(long, value_parser = parse_day)]
        to: Option<NaiveDate>,
        #[command(flatten)]
        outbound: OutboundArgs,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Map a provider project/workspace (`--scope`) or API key (`--api-key`)
    /// to our source and/or project. An API key's mapping wins over its
    /// scope's. Use `--scope default` for usage outside any project/workspace.
    Map {
        connection: String,
        #[arg(long, conflicts_with = "api_key", required_unless_present = "api_key")]
        scope: Option<String>,
        #[arg(long)]
        api_key: Option<String>,
        /// Our publisher (`source`) this usage was published by.
        #[arg(long = "to-source")]
        to_source: Option<String>,
        /// Our project.
        #[arg(long = "to-project")]
        to_project: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Remove a mapping.
    Unmap {
        connection: String,
        #[arg(long, conflicts_with = "api_key", required_unless_present = "api_key")]
        scope: Option<String>,
        #[arg(long)]
        api_key: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Notify webhook endpoints (`tokenusage webhooks add`) when a day of
    /// this connection differs from ours by more than PERCENT of the
    /// provider's tokens or bill; checked after each scheduled import, once
    /// per day. `--off` stops it.
    Alert {
        connection: String,
        #[arg(long, value_parser = parse_percent, required_unless_present = "off")]
        percent: Option<rust_decimal::Decimal>,
        /// An endpoint's name; repeat for several.
        #[arg(long = "webhook", required_unless_present = "off")]
        webhooks: Vec<String>,
        #[arg(long, conflicts_with_all = ["percent", "webhooks"])]
        off: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Count this connection's mapped usage as usage (`--on`) for the
    /// scopes and days where we counted no events of our own: for
    /// organisations, or parts of one, that publish nothing. It shows under
    /// the source and user `provider:<connection>` in every view and CSV,
    /// priced by the book; `--off` takes it out again.
    Usage {
        connection: String,
        #[arg(long, conflicts_with = "off", required_unless_present = "off")]
        on: bool,
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List mappings.
    Mappings {
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// Set the providers' reports beside what we counted, per day, model and
/// mapped scope; exits 1 if any difference exceeds the tolerance.
#[derive(Debug, clap::Args)]
pub struct ReconcileCmd {
    /// First day (UTC).
    #[arg(long, value_parser = parse_day)]
    from: NaiveDate,
    /// Last day (UTC), inclusive.
    #[arg(long, value_parser = parse_day)]
    to: NaiveDate,
    /// The difference allowed, as a percentage of the provider's figure (tokens and cost).
    #[arg(long, value_parser = parse_percent, default_value = "0")]
    tolerance: rust_decimal::Decimal,
    /// table (for people), csv or json.
    #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
    format: String,
    /// Show every line, not only those past the tolerance.
    #[arg(long)]
    all: bool,
    /// line: per day, connection, model and target; day: per day and
    /// connection (the quick overview of long ranges; table or json).
    #[arg(long, default_value = "line", value_parser = ["line", "day"])]
    by: String,
    #[command(flatten)]
    db: DatabaseArgs,
}

fn who() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

fn read_key() -> anyhow::Result<SecretString> {
    if let Ok(k) = std::env::var("TOKENUSAGE_PROVIDER_ADMIN_KEY") {
        return Ok(SecretString::from(k));
    }
    eprintln!("admin key (one line on standard input):");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(SecretString::from(line.trim_end_matches(['\r', '\n']).to_owned()))
}

pub async fn run(cmd: ProvidersCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ProvidersCmd::Add { name, provider, base_url, import_from, db } => {
            let key = read_key()?;
            let pool = super::database(&db, false).await?;
            let from = import_from.unwrap_or_else(|| Utc::now().date_naive() - TimeDelta::days(30));
            store::add(&pool, &name, provider, base_url.as_deref(), &key, from, &who()).await?;
            audit(
                &pool,
                "providers.add",
                "providers add",
                serde_json::json!({"name": name, "provider": provider, "import_from": from}),
            )
            .await?;
            println!(
                "connected {name} ({provider}); importing from {from}. Map its {}s: tokenusage providers map {name} --scope <id> --to-project <ours>",
                provider.scope_noun()
            );
        }
        ProvidersCmd::List { db } => {
            let pool = super::database(&db, false).await?;
            for c in store::list(&pool).await? {
                let last = match &c.last_import {
                    Some(r) => format!(
                        "last import {} .. {} {}{} ({} pages, {} usage rows, {} cost rows)",
                        r.range_from,
                        r.range_to,
                        r.outcome,
                        r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
                        r.pages,
                        r.usage_rows,
                        r.cost_rows
                    ),
                    None => "never imported".into(),
                };
                let through = c
                    .imported_through
                    .map(|d| format!("whole through {d}"))
                    .unwrap_or_else(|| "nothing whole yet".into());
                let usage = if c.as_usage { "\tcounted as usage" } else { "" };
                println!(
                    "{}\t{}\t{}\tfrom {}\t{through}\t{last}{usage}",
                    c.name, c.provider, c.base_url, c.import_from
                );
            }
        }
        ProvidersCmd::Remove { name, db } => {
            let pool = super::database(&db, false).await?;
            if !store::remove(&pool, &name).await? {
                anyhow::bail!("no provider connection named {name:?}");
            }
            audit(&pool, "providers.remove", "providers remove", serde_json::json!({"name": name})).await?;
            println!("removed {name} and everything imported through it");
        }
        ProvidersCmd::Import { name, from, to, outbound, db } => {
            let to = to.unwrap_or_else(|| Utc::now().date_naive() + TimeDelta::days(1));
            anyhow::ensure!(from < to, "--from must be before --to (exclusive)");
            let pool = super::database(&db, false).await?;
            let importer = Importer { client: outbound.policy().client()?, retry: Retry::default() };
            let owner = format!("cli-{}", std::process::id());
            let total = (to - from).num_days();
            let progress = move |what: &'static str, day: NaiveDate| {
                eprintln!("{what}: through {day} ({} of {total} days)", (day - from).num_days() + 1);
            };
            let result = importer.import(&pool, &name, from, to, &owner, &progress).await;
            let params = serde_json::json!({"name": name, "from": from, "to": to});
            let outcome = if result.is_ok() { "ok" } else { "failed" };
            super::audit_cli_outcome(&pool, "providers.import", "providers import", params, outcome).await?;
            let sum = result?;
            println!(
                "imported {name} {from} .. {to}: {} pages, {} usage rows, {} cost rows",
                sum.pages, sum.usage_rows, sum.cost_rows
            );
            if let Some(o) = &sum.as_usage {
                print_as_usage(&name, true, o);
            }
        }
        ProvidersCmd::Map { connection, scope, api_key, to_source, to_project, db } => {
            let pool = super::database(&db, false).await?;
            let (kind, external_id) = match (scope, api_key) {
                (Some(s), _) => ("scope", s),
                (None, Some(k)) => ("api_key", k),
                (None, None) => anyhow::bail!("--scope or --api-key is required"),
            };
            let m = store::Mapping {
                connection,
                kind: kind.into(),
                external_id,
                target_source: to_source,
                target_project: to_project,
            };
            store::map(&pool, &m).await?;
            if let Some(o) = tokenusage_providers::as_usage::after_mapping_change(&pool, &m.connection).await? {
                print_as_usage(&m.connection, true, &o);
            }
            audit(&pool, "providers.map", "providers map", serde_json::to_value(&m)?).await?;
            println!("{} {} {:?} → {}", m.connection, m.kind, m.external_id, m.target_label());
        }
        ProvidersCmd::Unmap { connection, scope, api_key, db } => {
            let pool = super::database(&db, false).await?;
            let (kind, id) = match (scope, api_key) {
                (Some(s), _) => ("scope", s),
                (None, Some(k)) => ("api_key", k),
                (None, None) => anyhow::bail!("--scope or --api-key is required"),
            };
            if !store::unmap(&pool, &connection, kind, &id).await? {
                anyhow::bail!("{connection} has no {kind} mapping for {id:?}");
            }
            if let Some(o) = tokenusage_providers::as_usage::after_mapping_change(&pool, &connection).await? {
                print_as_usage(&connection, true, &o);
            }
            audit(
                &pool,
                "providers.unmap",
                "providers unmap",
                serde_json::json!({"connection": connection, "kind": kind, "external_id": id}),
            )
            .await?;
        }
        ProvidersCmd::Alert { connection, percent, webhooks, off: _, db } => {
            let pool = super::database(&db, false).await?;
            tokenusage_providers::alerts::set(&pool, &connection, percent, &webhooks).await?;
            let params = serde_json::json!({"connection": connection, "percent": percent.map(|p| p.to_string()), "webhooks": webhooks});
            audit(&pool, "providers.alert", "providers alert", params).await?;
            match percent {
                Some(p) => println!("{connection}: days past {p}% notify {}", webhooks.join(", ")),
                None => println!("{connection}: no alerts"),
            }
        }
        ProvidersCmd::Usage { connection, on, off: _, db } => {
            let pool = super::database(&db, false).await?;
            let o = tokenusage_providers::as_usage::set(&pool, &connection, on).await?;
            let params = serde_json::json!({"connection": connection, "as_usage": on});
            audit(&pool, "providers.usage", "providers usage", params).await?;
            print_as_usage(&connection, on, &o);
        }
        ProvidersCmd::Mappings { db } => {
            let pool = super::database(&db, false).await?;
            for m in store::mappings(&pool).await? {
                println!("{}\t{}\t{}\t→ {}", m.connection, m.kind, m.external_id, m.target_label());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_as_usage(connection: &str, on: bool, o: &tokenusage_providers::as_usage::Outcome) {
    let source = tokenusage_providers::as_usage::source_of(connection);
    if on {
        println!(
            "{connection}: mapped usage counted as usage under {source}: {} days written, {} taken out, {} scope-days left to our own events{}",
            o.days_written,
            o.days_removed,
            o.covered_by_ours,
            if o.refused_rows > 0 { format!(", {} rows refused (see the log)", o.refused_rows) } else { String::new() }
        );
    } else {
        println!("{connection}: usage no longer counted from its reports ({} days taken out)", o.days_removed);
    }
}

pub async fn reconcile(a: ReconcileCmd) -> anyhow::Result<ExitCode> {
    let to = a.to + TimeDelta::days(1);
    reconcile::check_range(a.from, to).map_err(anyhow::Error::msg)?;
    let pool = super::database(&a.db, false).await?;
    if a.by == "day" {
        return reconcile_days(&pool, &a, to).await;
    }
    let report = reconcile::reconcile(&pool, a.from, to).await?;
    let past: Vec<&reconcile::Line> = report.lines.iter().filter(|l| l.exceeds(a.tolerance)).collect();
    let shown: Vec<&reconcile::Line> = if a.all { report.lines.iter().collect() } else { past.clone() };
    match a.format.as_str() {
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"report": report, "past_tolerance": past.len()}))?
        ),
        "csv" => {
            let mut w = csv::Writer::from_writer(std::io::stdout().lock());
            w.write_record(reconcile::CSV_HEADER)?;
            for l in &shown {
                w.write_record(reconcile::csv_record(l))?;
            }
            w.flush()?;
        }
        _ => {
            for (name, through) in &report.imported_through {
                match through {
                    Some(d) => println!("{name}: provider reports read whole through {d} (exclusive)"),
                    None => println!("{name}: no whole import yet"),
                }
            }
            for l in &shown {
                let target = l
                    .target
                    .as_ref()
                    .map(|t| t.label())
                    .unwrap_or_else(|| format!("unmapped {:?}", l.provider_scope.clone().unwrap_or_default()));
                let cost = l
                    .cost_difference_nanos
                    .map(|d| format!("{} {}", reconcile::signed_nanos(d), report.currency))
                    .unwrap_or_else(|| "?".into());
                let reasons: Vec<&str> = l.reasons.iter().map(|r| r.describe()).collect();
                println!(
                    "{}  {}  {}  {target}: tokens {:+}, cost {cost}{}",
                    l.day,
                    l.connection.as_deref().unwrap_or("-"),
                    if l.model.is_empty() { "(no model)" } else { &l.model },
                    l.token_difference,
                    if reasons.is_empty() { String::new() } else { format!(" — {}", reasons.join("; ")) }
                );
            }
            println!("{} lines, {} past the tolerance of {}%", report.lines.len(), past.len(), a.tolerance);
        }
    }
    Ok(if past.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `reconcile --by day`: one row per day and connection.
async fn reconcile_days(pool: &sqlx::PgPool, a: &ReconcileCmd, to: NaiveDate) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.format != "csv", "--by day prints a table or json; the CSV has one row per line");
    let s = tokenusage_providers::summary::summary(pool, a.from, to).await?;
    let past = s.days.iter().filter(|d| d.exceeds(a.tolerance)).count();
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"report": s, "past_tolerance": past}))?);
    } else {
        for d in s.days.iter().filter(|d| a.all || d.exceeds(a.tolerance)) {
            let cost = d
                .cost_difference_nanos
                .map(|n| format!("{} {}", reconcile::signed_nanos(n), s.currency))
                .unwrap_or_else(|| "?".into());
            let reasons: Vec<&str> = d.reasons.iter().map(|r| r.describe()).collect();
            println!(
                "{}  {}: reported {} tokens ({} unmapped), ours {}: tokens {:+}, cost {cost}{}",
                d.day,
                d.connection,
                d.reported.total(),
                d.unmapped_tokens,
                d.ours.tokens.total(),
                d.token_difference,
                if reasons.is_empty() { String::new() } else { format!(" — {}", reasons.join("; ")) }
            );
        }
        println!("{} days, {past} past the tolerance of {}%", s.days.len(), a.tolerance);
    }
    Ok(if past == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
