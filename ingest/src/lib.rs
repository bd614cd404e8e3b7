//! Getting usage events into Kafka, durably.
//!
//! This crate owns the producer (idempotent, `acks=all`, bounded queue),
//! HTTP ingest with publisher API keys, the `publish` command's reading of
//! NDJSON and CSV files, and the synthetic usage the demo and the
//! benchmarks publish. An event is "accepted" here only once Kafka has
//! acknowledged it; everything after that is the projector's job. Of
//! PostgreSQL it reads only publisher keys (`schema::keys`).

pub mod http;
pub mod input;
pub mod keys;
pub mod otlp;
pub mod producer;
pub mod publish;
pub mod synthetic;

pub use producer::{ProducerArgs, PublishError, Publisher};
