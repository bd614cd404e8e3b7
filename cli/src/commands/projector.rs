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
    /// Serve Prometheus metrics at this address (e.g. 127.0.0.1:9464).
    #[arg(long = "metrics-listen", env = "TOKENUSAGE_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

pub async fn run(a: ProjectorCmd) -> anyhow::Result<ExitCode> {
    if let Some(addr) = a.metrics_listen {
        tokenusage_plumbing::metrics::serve_on(addr).map_err(anyhow::Error::msg)?;
    }
    let pool = super::database(&a.db, !a.migrate.no_migrate).await?;
    let shutdown = tokenusage_plumbing::shutdown::on_signal();
    let health = std::sync::Arc::new(tokenusage_projector::Health::new("projector"));
    tokenusage_projector::run(&a.projector, &a.kafka, pool, shutdown, health).await?;
    Ok(ExitCode::SUCCESS)
}
