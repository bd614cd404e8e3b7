//! Creating the events topic when it is absent.

use std::time::Duration;

use crate::KafkaArgs;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Attempts at creating the topic when the broker times out.
const ATTEMPTS: u32 = 4;

/// Creates `kafka.topic` with the configured partitions unless it exists.
/// An existing topic is left as it is (its partition count is not changed).
/// Timeouts are retried: creation is idempotent, and a busy broker (or one
/// still electing a controller) can miss the first deadline.
pub async fn ensure_topic(kafka: &KafkaArgs) -> Result<(), KafkaError> {
    if kafka.topic_exists {
        return Ok(());
    }
    let mut attempt = 1;
    loop {
        match create_once(kafka).await {
            Err(
                KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut)
                | KafkaError::AdminOp(RDKafkaErrorCode::RequestTimedOut),
            ) if attempt < ATTEMPTS => {
                tracing::warn!(topic = %kafka.topic, attempt, "creating the events topic timed out; retrying");
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn create_once(kafka: &KafkaArgs) -> Result<(), KafkaError> {
    let (partitions, replication) = (kafka.topic_partitions, kafka.topic_replication);
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let topic = NewTopic::new(&kafka.topic, partitions, TopicReplication::Fixed(replication));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&topic], &opts).await?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, partitions, "created the events topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::error!(topic = %name, %code, "cannot create the events topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}
