//! `tokenusage api`.

use std::process::ExitCode;

use tokenusage_api::{ApiArgs, Application};
use tokenusage_plumbing::DatabaseArgs;

#[derive(Debug, clap::Args)]
pub struct ApiCmd {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub migrate: super::MigrateFlag,
}

pub async fn run(a: ApiCmd) -> anyhow::Result<ExitCode> {
    a.api.check_transport()?;
    tokenusage_plumbing::metrics::recorder();
    let pool = super::database(&a.db, !a.migrate.no_migrate).await?;
    let shutdown = tokenusage_plumbing::shutdown::on_signal();
    let app = Application::build(a.api, pool, tokenusage_api::Mounted::default()).await?;
    tracing::info!(addr = %app.local_addr(), "API listening");
    app.run_until_stopped(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
