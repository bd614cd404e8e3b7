//! One module per subcommand. Each parses nothing itself (clap did), wires
//! the libraries together, and returns an exit code.

pub mod api;
pub mod audit;
pub mod budgets;
pub mod deadletters;
pub mod ingest;
pub mod keys;
pub mod migrate;
pub mod prices;
pub mod projector;
pub mod providers;
pub mod publish;
pub mod rebuild;
pub mod reprice;
pub mod serve;
pub mod teams;
pub mod users;

use tokenusage_plumbing::DatabaseArgs;

/// Connects and, unless told not to, migrates.
pub(crate) async fn database(db: &DatabaseArgs, migrate: bool) -> anyhow::Result<sqlx::PgPool> {
    let pool = db.connect().await?;
    if migrate {
        tokenusage_schema::migrations::migrate(&pool).await?;
        tracing::info!(database = %db.describe(), "database schema is current");
        let seeded = tokenusage_pricing::store::seed(&pool).await?;
        if seeded > 0 {
            tracing::info!(entries = seeded, "the price book was empty: loaded the default catalogue");
        }
    }
    Ok(pool)
}

/// Whether to apply migrations at start (shared by the long-running commands).
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateFlag {
    /// Do not apply migrations at start (run `tokenusage migrate` instead).
    #[arg(long = "no-migrate", env = "TOKENUSAGE_NO_MIGRATE")]
    pub no_migrate: bool,
}

/// One audit entry for a change made from the command line.
pub(crate) async fn audit_cli(
    pool: &sqlx::PgPool,
    action: &str,
    endpoint: &str,
    params: serde_json::Value,
) -> anyhow::Result<()> {
    audit_cli_outcome(pool, action, endpoint, params, "ok").await
}

/// As [`audit_cli`], for a change that may have failed (`outcome`: "ok", "failed").
pub(crate) async fn audit_cli_outcome(
    pool: &sqlx::PgPool,
    action: &str,
    endpoint: &str,
    params: serde_json::Value,
    outcome: &str,
) -> anyhow::Result<()> {
    let log = tokenusage_api::audit::AuditLog::spawn(pool.clone());
    let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    log.record(tokenusage_api::audit::Entry {
        at: chrono::Utc::now(),
        actor: Some(format!("cli:{who}")),
        actor_role: Some("operator".into()),
        action: action.into(),
        method: "CLI".into(),
        endpoint: endpoint.into(),
        params: params.to_string(),
        outcome: outcome.into(),
        status: 0,
        ..Default::default()
    })
    .await?;
    Ok(())
}
