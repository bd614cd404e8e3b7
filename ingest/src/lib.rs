//! Getting usage events into Kafka, durably.
//!
//! This crate owns the producer (idempotent, `acks=all`, bounded queue),
//! HTTP ingest with publisher API keys, the `publish` command's reading of
//! NDJSON and CSV files, and the synthetic usage the demo and the
//! benchmarks publish. An event is "accepted" here only once Kafka has
//! acknowledged it; everything after that is the projector's job. Of
//! PostgreSQL it reads only publisher keys (`schema::keys`).

// In the order an event passes through them: where it comes from (HTTP,
// OTLP spans, a file, the generator), what admits it, what sends it.
pub mod http;
pub mod otlp;
pub mod input;
pub mod publish;
pub mod synthetic;
pub mod keys;
mod admission;
pub mod producer;

pub use producer::{ProducerArgs, PublishError, Publisher};
