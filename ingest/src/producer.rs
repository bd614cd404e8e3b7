//! The Kafka producer. An event counts as published only once the broker
//! has acknowledged it with `acks=all`; until then nothing may tell the
//! publisher "accepted".

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokenusage_contract::UsageEvent;
use tokenusage_contract::wire::{SCHEMA_V1, content_type, header};
use tokenusage_plumbing::KafkaArgs;
use tokenusage_plumbing::headroom::Headroom;

/// Producer tuning. The defaults favour durability over latency.
#[derive(Debug, Clone, clap::Args)]
pub struct ProducerArgs {
    /// How long the producer keeps retrying one event before reporting it
    /// failed, in milliseconds (librdkafka `message.timeout.ms`).
    #[arg(long = "kafka-delivery-timeout-ms", env = "TOKENUSAGE_KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = 15_000)]
    pub delivery_timeout_ms: u64,
    /// Most events waiting in the local producer queue. A full queue is
    /// back-pressure: callers wait or are told to retry, nothing is dropped.
    #[arg(long = "kafka-queue-max-events", env = "TOKENUSAGE_KAFKA_QUEUE_MAX_EVENTS", default_value_t = 100_000)]
    pub queue_max_events: u32,
    /// How long to batch events before sending, in milliseconds.
    #[arg(long = "kafka-linger-ms", env = "TOKENUSAGE_KAFKA_LINGER_MS", default_value_t = 5)]
    pub linger_ms: u32,
    /// Use Kafka's idempotent producer (no duplicates or reordering from
    /// producer retries). Keep it on with Apache Kafka. Tansu 0.6.0's SQLite
    /// engine panics when an idempotent producer resumes after a broker
    /// restart, so the dev stack turns it off; totals stay exact either way
    /// because the projector de-duplicates by (source, event id).
    #[arg(long = "kafka-idempotence", env = "TOKENUSAGE_KAFKA_IDEMPOTENCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub idempotence: bool,
}

impl Default for ProducerArgs {
    /// The declared defaults (`plumbing::config::defaults`).
    fn default() -> Self {
        tokenusage_plumbing::config::defaults()
    }
}

/// Why an event was not published. Every variant means "not in Kafka"; the
/// caller may retry the same event id safely.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The local queue is full: back off and retry.
    #[error("the producer queue is full; retry shortly")]
    QueueFull,
    /// The broker did not acknowledge in time (down, unreachable, or no
    /// leader for the partition).
    #[error("Kafka did not acknowledge the event: {0}")]
    Unavailable(#[source] KafkaError),
    /// Kafka refused the record for good (too large, unknown topic, ...).
    #[error("Kafka refused the event: {0}")]
    Refused(#[source] KafkaError),
    /// The broker keeps a bounded log (the embedded broker) and holds as
    /// much not-yet-counted data as it can keep: retry once the projector
    /// has caught up. Nothing was sent.
    #[error(transparent)]
    Backlogged(#[from] tokenusage_plumbing::headroom::Full),
}

impl PublishError {
    /// Whether retrying the same event later can succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, PublishError::Refused(_))
    }
}

/// A cheap-to-clone handle on one idempotent producer.
///
/// The producer is replaced when it gets stuck: after a message times out
/// while the broker is down, librdkafka's idempotent producer must bump its
/// epoch, and a broker that does not support that answers every later
/// produce with an error (seen with Tansu). A fresh producer recovers; the
/// event ids make any resend harmless downstream.
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<RwLock<(Arc<FutureProducer>, Instant)>>,
    config: ClientConfig,
    topic: String,
    /// Set for a broker that trims its log silently (the embedded one):
    /// every record waits for room that only counting frees.
    headroom: Option<Arc<Headroom>>,
}

/// How long one publish waits for room in a paced broker before it is
/// refused as [`PublishError::Backlogged`]: long enough to ride out a
/// projector batch, short enough for an HTTP client's timeout.
const PACING_PATIENCE: Duration = Duration::from_secs(10);

/// The least time between two producer replacements.
const RECYCLE_EVERY: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(kafka: &KafkaArgs, args: &ProducerArgs) -> Result<Self, KafkaError> {
        // `acks` and idempotence carry the durability promise: their own
        // flags set them, pass-through options cannot.
        let cfg = kafka.client_config_for(
            &[
                ("enable.idempotence", args.idempotence.to_string()),
                ("acks", "all".into()),
                ("linger.ms", args.linger_ms.to_string()),
                ("message.timeout.ms", args.delivery_timeout_ms.to_string()),
                ("queue.buffering.max.messages", args.queue_max_events.to_string()),
            ],
            &["acks", "enable.idempotence"],
        );
        let producer: FutureProducer = cfg.create()?;
        Ok(Self {
            producer: Arc::new(RwLock::new((Arc::new(producer), Instant::now()))),
            config: cfg,
            topic: kafka.topic.clone(),
            headroom: None,
        })
    }

    /// Paces this publisher by what has been counted (see
    /// `plumbing::headroom`): for a broker that trims its log silently.
    #[must_use]
    pub fn paced_by(mut self, headroom: Arc<Headroom>) -> Self {
        self.headroom = Some(headroom);
        self
    }

    fn current(&self) -> Arc<FutureProducer> {
        self.producer.read().unwrap_or_else(PoisonError::into_inner).0.clone()
    }

    /// Replaces a producer that answers with broker errors it should not get
    /// (see the type's docs). Rate-limited; in-flight sends on the old one
    /// finish on their own.
    fn recycle(&self, why: &KafkaError) {
        let mut guard = self.producer.write().unwrap_or_else(PoisonError::into_inner);
        if guard.1.elapsed() < RECYCLE_EVERY {
            return;
        }
        match self.config.create::<FutureProducer>() {
            Ok(p) => {
                tracing::warn!(error = %why, "replacing the Kafka producer after a broker error");
                *guard = (Arc::new(p), Instant::now());
            }
            Err(e) => tracing::error!(error = %e, "cannot create a new Kafka producer"),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes one event (native JSON, keyed by user) and waits for the
    /// broker's acknowledgement. Returns (partition, offset).
    pub async fn publish(&self, event: &UsageEvent, request_id: Option<&str>) -> Result<(i32, i64), PublishError> {
        let payload = event.to_native_json();
        let mut headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header { key: header::CONTENT_TYPE, value: Some(content_type::NATIVE) })
            .insert(Header { key: header::SCHEMA, value: Some(SCHEMA_V1) });
        if let Some(id) = request_id {
            headers = headers.insert(Header { key: header::REQUEST_ID, value: Some(id) });
        }
        let reservation = match &self.headroom {
            None => None,
            Some(h) => {
                let head_bytes: usize = headers.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)).sum();
                let cost = Headroom::cost(event.user_id.len(), payload.len(), head_bytes);
                Some(h.reserve(cost, PACING_PATIENCE).await?)
            }
        };
        let record = FutureRecord::to(&self.topic).key(event.user_id.as_bytes()).payload(&payload).headers(headers);
        // Zero queue timeout: a full queue is reported at once as
        // back-pressure instead of parking the caller.
        let producer = self.current();
        match producer.send(record, Duration::ZERO).await {
            Ok(delivery) => {
                if let (Some(h), Some(r)) = (&self.headroom, reservation) {
                    h.produced(delivery.partition, delivery.offset, r);
                }
                Ok((delivery.partition, delivery.offset))
            }
            Err((e, _)) => {
                if needs_new_producer(&e, &producer) {
                    self.recycle(&e);
                }
                Err(classify(e))
            }
        }
    }

    /// Publishes and, on a full queue (or a paced broker without room),
    /// waits and retries until `patience` runs out. For bulk callers (the CLI, the demo) that prefer waiting to
    /// failing.
    pub async fn publish_patiently(
        &self,
        event: &UsageEvent,
        request_id: Option<&str>,
        patience: Duration,
    ) -> Result<(i32, i64), PublishError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match self.publish(event, request_id).await {
                Err(PublishError::QueueFull | PublishError::Backlogged(_))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => return other,
            }
        }
    }

    /// Waits until everything queued has been acknowledged or `timeout`
    /// passes. Call before exiting.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().flush(timeout)
    }
}

/// Errors that a healthy producer talking to a healthy broker does not
/// get: a fatal producer state, or a broker error code librdkafka does not
/// know. Timeouts and transport errors are ordinary outages, not this.
fn needs_new_producer(e: &KafkaError, producer: &FutureProducer) -> bool {
    producer.client().fatal_error().is_some()
        || matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Unknown
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::Fatal
            )
        )
}

fn classify(e: KafkaError) -> PublishError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => PublishError::QueueFull,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidMessage,
        ) => PublishError::Refused(e),
        _ => PublishError::Unavailable(e),
    }
}
