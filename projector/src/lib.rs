//! The projector: Kafka in, exact per-user rollups in PostgreSQL out.
//!
//! It owns the consumer group membership, the batching of records, the
//! de-duplication by (source, event id), the rollup tables, the stored
//! offsets and the post-commit notification. Offsets live in PostgreSQL, in
//! the same transaction as the rows they account for, and a projector that
//! lost a partition is fenced by an epoch so it cannot commit stale work.
//! It never serves HTTP and never reads rollups for display.

pub mod batch;
mod consumer;
pub mod deadletters;
mod gapguard;
pub mod grain;
pub mod maintenance;
pub mod rebuild;
mod store;

pub use consumer::{ProjectorArgs, ProjectorError, run};
pub use store::NOTIFY_CHANNEL;
