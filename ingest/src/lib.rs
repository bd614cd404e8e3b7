//! Getting usage events into Kafka, durably.
//!
//! This crate owns the producer (idempotent, `acks=all`, bounded queue) and
//! the `publish` command's reading of NDJSON and CSV files. It never touches
//! PostgreSQL: an event is "accepted" here only when Kafka has acknowledged
//! it, and everything after that is the projector's job.

pub mod input;
pub mod producer;
pub mod publish;

pub use producer::{ProducerArgs, PublishError, Publisher};
