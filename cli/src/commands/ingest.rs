//! `tokenusage ingest`: HTTP ingest alone (HTTP to Kafka).

use std::process::ExitCode;

use tokenusage_ingest::http::IngestArgs;
use tokenusage_ingest::{ProducerArgs, Publisher};
use tokenusage_plumbing::{DatabaseArgs, KafkaArgs};

#[derive(Debug, clap::Args)]
pub struct IngestCmd {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub migrate: super::MigrateFlag,
}

pub async fn run(a: IngestCmd) -> anyhow::Result<ExitCode> {
    let pool = super::database(&a.db, !a.migrate.no_migrate).await?;
    let shutdown = tokenusage_plumbing::shutdown::on_signal();
    tokenusage_plumbing::topic::ensure_topic(&a.kafka).await?;
    let publisher = Publisher::new(&a.kafka, &a.producer)?;
    let app = tokenusage_plumbing::http::with_common_layers(
        tokenusage_ingest::http::router(&a.ingest, publisher.clone(), pool)
            .layer(axum::middleware::from_fn(tokenusage_plumbing::http::limit_heads)),
    );
    let listener = tokio::net::TcpListener::bind(a.ingest.ingest_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.ingest.ingest_listen))?;
    tracing::info!(addr = %listener.local_addr()?, "ingest listening");
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await?;
    // Everything answered 202 is already acknowledged; this only waits for
    // requests cut short by shutdown.
    publisher.flush(std::time::Duration::from_secs(10))?;
    Ok(ExitCode::SUCCESS)
}
