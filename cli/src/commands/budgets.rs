//! `tokenusage budgets ...` and `tokenusage webhooks ...`: budgets and the
//! endpoints their crossings are sent to (`api::budgets` owns both; this is
//! their command line). Every change is written to the audit trail.
//! Budgets are evaluated by the API (`serve` or `api`), within seconds.

use std::process::ExitCode;

use serde_json::json;
use tokenusage_budgets::{self as budgets, Measure, NewBudget, Period, Scope, webhooks};
use tokenusage_plumbing::DatabaseArgs;

use super::audit_cli as audit;

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum BudgetsCmd {
    /// List budgets with their last evaluated state.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Set a budget on a user, a team or a project.
    ///
    /// Examples:
    ///   tokenusage budgets create --team ml --cost 500 --period month --zone Europe/Paris --webhook ops
    ///   tokenusage budgets create --user alice --tokens 2000000 --period rolling --window 24h
    #[command(verbatim_doc_comment)]
    Create {
        #[arg(long, group = "scope", required = true)]
        user: Option<String>,
        #[arg(long, group = "scope")]
        team: Option<String>,
        #[arg(long, group = "scope")]
        project: Option<String>,
        /// A token budget (input + output tokens).
        #[arg(long, group = "amount", required = true)]
        tokens: Option<i64>,
        /// A cost budget, in the price book's currency (e.g. 250.00).
        #[arg(long, group = "amount")]
        cost: Option<String>,
        #[arg(long, value_enum, default_value = "month")]
        period: Period,
        /// IANA zone of a calendar window.
        #[arg(long, default_value = "UTC")]
        zone: String,
        /// A rolling window's length (90m, 24h, 7d), with --period rolling.
        #[arg(long)]
        window: Option<String>,
        /// Percentages that notify, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "50,80,100")]
        thresholds: Vec<i32>,
        /// Webhook endpoints told of crossings (repeatable).
        #[arg(long = "webhook")]
        webhooks: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Remove a budget.
    Delete {
        id: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCmd {
    /// List endpoints, with pending and dead deliveries.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Add an endpoint; prints its signing secret (shown once).
    Add {
        name: String,
        /// Where notifications are POSTed (http:// or https://).
        #[arg(value_name = "URL")]
        endpoint: String,
        /// Send a Slack-compatible body ({"text": ...}) instead of ours.
        #[arg(long)]
        slack: bool,
        #[command(flatten)]
        outbound: tokenusage_plumbing::outbound::OutboundArgs,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Remove an endpoint and what it is still owed.
    Remove {
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Recent deliveries, newest first.
    Deliveries {
        /// Only those in this state: pending, delivered or dead.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Send a dead delivery again.
    Retry {
        id: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

fn who() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

pub async fn run(cmd: BudgetsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BudgetsCmd::List { db } => {
            let pool = super::database(&db, true).await?;
            let all = budgets::list(&pool).await?;
            if all.is_empty() {
                println!("no budgets yet: set one with `tokenusage budgets create`");
            }
            let states: Vec<(i64, i64, chrono::DateTime<chrono::Utc>)> =
                sqlx::query_as("select budget_id, spent, window_end from budget_state").fetch_all(&pool).await?;
            for b in all {
                let amount = match b.measure {
                    Measure::Tokens => format!("{} tokens", b.amount),
                    Measure::Cost => tokenusage_contract::money::format_nanos(b.amount),
                };
                let state = states.iter().find(|s| s.0 == b.id).map_or("not evaluated yet".to_owned(), |s| {
                    format!("{:.1} % spent, window ends {}", budgets::evaluate::percent(s.1, b.amount), s.2)
                });
                println!("{:>5}  {:<40} {:<24} {amount:<20} {state}", b.id, b.name, b.scope.label());
            }
        }
        BudgetsCmd::Create {
            user,
            team,
            project,
            tokens,
            cost,
            period,
            zone,
            window,
            thresholds,
            webhooks,
            name,
            db,
        } => {
            let scope = match (user, team, project) {
                (Some(u), _, _) => Scope::User(u),
                (_, Some(t), _) => Scope::Team(t),
                (_, _, Some(p)) => Scope::Project(p),
                _ => anyhow::bail!("name a --user, --team or --project"),
            };
            let (measure, amount) = match (tokens, cost) {
                (Some(t), _) => (Measure::Tokens, json!(t)),
                (_, Some(c)) => (Measure::Cost, json!(c)),
                _ => anyhow::bail!("give --tokens or --cost"),
            };
            let req = NewBudget {
                name,
                scope,
                measure,
                amount,
                period,
                zone: Some(zone),
                window,
                thresholds: Some(thresholds),
                webhooks,
            };
            let checked = budgets::check(&req)?;
            let pool = super::database(&db, true).await?;
            let b = budgets::create(&pool, &checked, &who()).await?;
            audit(&pool, "budgets.create", "tokenusage budgets create", json!({"id": b.id, "scope": b.scope})).await?;
            println!("budget {} created: {} (thresholds {:?} %)", b.id, b.name, b.thresholds);
        }
        BudgetsCmd::Delete { id, db } => {
            let pool = super::database(&db, true).await?;
            if !budgets::delete(&pool, id).await? {
                anyhow::bail!("no budget {id}");
            }
            audit(&pool, "budgets.delete", "tokenusage budgets delete", json!({"id": id})).await?;
            println!("budget {id} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_webhooks(cmd: WebhooksCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        WebhooksCmd::List { db } => {
            let pool = super::database(&db, true).await?;
            let all = webhooks::list(&pool).await?;
            if all.is_empty() {
                println!("no endpoints yet: add one with `tokenusage webhooks add <name> <url>`");
            }
            for e in all {
                println!("{:<24} {:<6} {}  ({} pending, {} dead)", e.name, e.format, e.url, e.pending, e.dead);
            }
        }
        WebhooksCmd::Add { name, endpoint: url, slack, outbound, db } => {
            let pool = super::database(&db, true).await?;
            let format = if slack { "slack" } else { "json" };
            let secret = webhooks::create(&pool, &outbound.policy(), &name, &url, format, &who()).await?;
            audit(&pool, "admin.webhooks.create", "tokenusage webhooks add", json!({"name": name, "format": format}))
                .await?;
            println!(
                "endpoint {name} added. Its signing secret (shown once; verify the {} header with it):",
                webhooks::SIGNATURE_HEADER
            );
            println!("{secret}");
        }
        WebhooksCmd::Remove { name, db } => {
            let pool = super::database(&db, true).await?;
            if !webhooks::delete(&pool, &name).await? {
                anyhow::bail!("no webhook endpoint {name:?}");
            }
            audit(&pool, "admin.webhooks.delete", "tokenusage webhooks remove", json!({"name": name})).await?;
            println!("endpoint {name} removed");
        }
        WebhooksCmd::Deliveries { state, limit, db } => {
            let pool = super::database(&db, true).await?;
            for d in webhooks::deliveries(&pool, state.as_deref(), limit).await? {
                println!(
                    "{:>6}  {:<10} {:<16} {:<9} attempts {:<3} {}  {}",
                    d.id,
                    d.endpoint,
                    d.event,
                    d.state,
                    d.attempts,
                    d.idempotency_key,
                    d.last_error.unwrap_or_default()
                );
            }
        }
        WebhooksCmd::Retry { id, db } => {
            let pool = super::database(&db, true).await?;
            if !webhooks::retry(&pool, id).await? {
                anyhow::bail!("no undelivered delivery {id}");
            }
            audit(&pool, "admin.webhooks.retry", "tokenusage webhooks retry", json!({"id": id})).await?;
            println!("delivery {id} is due again");
        }
    }
    Ok(ExitCode::SUCCESS)
}
