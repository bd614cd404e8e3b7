//! Getting usage events into Kafka, durably.
//!
//! This crate owns the producer (idempotent, `acks=all`, bounded queue),
//! HTTP ingest with publisher API keys, and the `publish` command's reading
//! of NDJSON and CSV files. An event is "accepted" here only once Kafka has
//! acknowledged it; everything after that is the projector's job. Of
//! PostgreSQL it touches only the `api_keys` table.

pub mod http;
pub mod input;
pub mod keys;
pub mod producer;
pub mod publish;

pub use producer::{ProducerArgs, PublishError, Publisher};
