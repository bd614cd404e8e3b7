//! The freshness probe: how current the rollups are.
//!
//! About once a second it asks the broker for the high watermark of every
//! partition this consumer group has claimed and compares it with the
//! stored offset. The probe time is taken *before* asking, so when the
//! stored offset has reached the watermark, every record the broker held at
//! that time is counted: the partition is "complete through" it. A
//! partition never read yet (stored offset -1) counts from its low watermark. Live views
//! show the minimum over partitions, and the summed lag.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::PgPool;
use tokenusage_plumbing::KafkaArgs;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(pool: PgPool, kafka: KafkaArgs, group: String, shutdown: CancellationToken) {
    let client: BaseConsumer = match kafka.client_config().create() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "freshness probe not started: cannot create a Kafka client");
            return;
        }
    };
    let client = Arc::new(client);
    let mut tick = tokio::time::interval(EVERY);
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
    let partitions: Vec<i32> =
        sqlx::query_scalar("select partition from projector_offsets where consumer_group = $1 and topic = $2")
            .bind(group)
            .bind(topic)
            .fetch_all(pool)
            .await?;
    if partitions.is_empty() {
        return Ok(());
    }
    let probed_at = Utc::now();
    let (c, t) = (client.clone(), topic.to_owned());
    let marks: Vec<(i32, i64, i64)> = tokio::task::spawn_blocking(move || {
        partitions
            .into_iter()
            .filter_map(|p| c.fetch_watermarks(&t, p, Duration::from_secs(2)).ok().map(|(low, high)| (p, low, high)))
            .collect()
    })
    .await?;
    let parts: Vec<i32> = marks.iter().map(|m| m.0).collect();
    let lows: Vec<i64> = marks.iter().map(|m| m.1).collect();
    let highs: Vec<i64> = marks.iter().map(|m| m.2).collect();
    sqlx::query(
        r#"
        update projector_offsets o
        set high_watermark = h.high,
            lag = greatest(h.high - greatest(o.next_offset, h.low), 0),
            caught_up_at = case when greatest(o.next_offset, h.low) >= h.high then $5 else o.caught_up_at end,
            probed_at = $5
        from unnest($3::int4[], $4::int8[], $6::int8[]) as h(partition, high, low)
        where o.consumer_group = $1 and o.topic = $2 and o.partition = h.partition
        "#,
    )
    .bind(group)
    .bind(topic)
    .bind(&parts)
    .bind(&highs)
    .bind(probed_at)
    .bind(&lows)
    .execute(pool)
    .await?;
    Ok(())
}
