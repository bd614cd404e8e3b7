//! Creating the events topic when it is absent.

use std::time::Duration;

use crate::KafkaArgs;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Creates `kafka.topic` with the configured partitions unless it exists.
/// An existing topic is left as it is (its partition count is not changed).
pub async fn ensure_topic(kafka: &KafkaArgs) -> Result<(), KafkaError> {
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
                return Err(KafkaError::AdminOp(code))
                    .inspect_err(|_| tracing::error!(topic = %name, %code, "cannot create the events topic"));
            }
        }
    }
    Ok(())
}
