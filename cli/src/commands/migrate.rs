//! `tokenusage migrate`.

use std::process::ExitCode;

use tokenusage_plumbing::DatabaseArgs;

#[derive(Debug, clap::Args)]
pub struct MigrateCmd {
    #[command(flatten)]
    pub db: DatabaseArgs,
}

pub async fn run(a: MigrateCmd) -> anyhow::Result<ExitCode> {
    let pool = super::database(&a.db, true).await?;
    let timescale = tokenusage_schema::migrations::has_timescaledb(&pool).await?;
    println!(
        "database {} is migrated ({})",
        a.db.describe(),
        if timescale { "TimescaleDB hypertables" } else { "plain PostgreSQL tables; TimescaleDB not available" }
    );
    Ok(ExitCode::SUCCESS)
}
