//! `tokenusage publish`.

use std::process::ExitCode;
use std::time::Duration;

use tokenusage_ingest::publish::{PublishArgs, Sink};
use tokenusage_ingest::{ProducerArgs, Publisher};
use tokenusage_plumbing::KafkaArgs;

#[derive(Debug, clap::Args)]
pub struct PublishCmd {
    #[command(flatten)]
    pub publish: PublishArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
}

/// Exit code when some input was rejected or not published.
const EXIT_INCOMPLETE: u8 = 2;

pub async fn run(a: PublishCmd) -> anyhow::Result<ExitCode> {
    let sink = match (&a.publish.http, &a.publish.key) {
        (Some(url), Some(key)) => Sink::Http { client: reqwest::Client::new(), url: url.clone(), key: key.clone() },
        _ => {
            // Fails fast with a clear message when the broker is unreachable,
            // and spares direct publishers a topic that silently times out.
            tokenusage_plumbing::topic::ensure_topic(&a.kafka).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot reach Kafka at {} to check topic {}: {e}",
                    a.kafka.bootstrap_servers,
                    a.kafka.topic
                )
            })?;
            Sink::Kafka(Publisher::new(&a.kafka, &a.producer)?)
        }
    };
    let summary = tokenusage_ingest::publish::run(&a.publish, &sink, |line| eprintln!("{line}")).await?;
    if let Sink::Kafka(p) = &sink {
        p.flush(Duration::from_secs(10))?;
    }
    Ok(if summary.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_INCOMPLETE) })
}
