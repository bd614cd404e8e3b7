//! `tokenusage projector`.

use std::process::ExitCode;

use tokenusage_plumbing::{DatabaseArgs, KafkaArgs};
use tokenusage_projector::ProjectorArgs;

#[derive(Debug, clap::Args)]
pub struct ProjectorCmd {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub projector: ProjectorArgs,
    #[command(flatten)]
    pub migrate: super::MigrateFlag,
}

pub async fn run(a: ProjectorCmd) -> anyhow::Result<ExitCode> {
    let pool = super::database(&a.db, !a.migrate.no_migrate).await?;
    let shutdown = tokenusage_plumbing::shutdown::on_signal();
    tokenusage_projector::run(&a.projector, &a.kafka, pool, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
