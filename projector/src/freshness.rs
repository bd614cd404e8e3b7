//! The freshness probe: about once a second (`--freshness-probe-ms`) it asks
//! the broker for the watermarks of every partition this consumer group has
//! claimed and records them (`schema::freshness`, which says what the
//! numbers mean). Live views show the minimum over partitions, and the
//! summed lag.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::PgPool;
use tokenusage_plumbing::KafkaArgs;
use tokenusage_schema::freshness::{self, Watermarks};
use tokio_util::sync::CancellationToken;

/// Probes every `every` until `shutdown`; a zero `every` probes never.
pub(crate) async fn run(pool: PgPool, kafka: KafkaArgs, group: String, every: Duration, shutdown: CancellationToken) {
    if every.is_zero() {
        return;
    }
    let client: BaseConsumer = match kafka.client_config().create() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "freshness probe not started: cannot create a Kafka client");
            return;
        }
    };
    let client = Arc::new(client);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = probe(&pool, &client, &kafka.topic, &group).await {
            tracing::debug!(error = %e, "freshness probe failed; retrying");
        }
    }
}

type ProbeResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn probe(pool: &PgPool, client: &Arc<BaseConsumer>, topic: &str, group: &str) -> ProbeResult {
    let partitions = freshness::claimed_partitions(pool, group, topic).await?;
    if partitions.is_empty() {
        return Ok(());
    }
    let probed_at = Utc::now();
    let (c, t) = (client.clone(), topic.to_owned());
    let marks: Vec<Watermarks> = tokio::task::spawn_blocking(move || {
        partitions
            .into_iter()
            .filter_map(|p| {
                c.fetch_watermarks(&t, p, Duration::from_secs(2)).ok().map(|(low, high)| Watermarks {
                    partition: p,
                    low,
                    high,
                })
            })
            .collect()
    })
    .await?;
    freshness::record(pool, group, topic, probed_at, &marks).await?;
    Ok(())
}
