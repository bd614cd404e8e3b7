//! Plumbing shared by every part of tokenusage: the typed configuration of
//! PostgreSQL and Kafka connections, the connection pool, logging, and the
//! shutdown signal.
//!
//! It also owns what every HTTP surface shares (`http`: the error envelope,
//! common layers) and how failures are told apart (`failure`, `health`).
//!
//! It owns *how we connect*, never *what we store*: no table is read or
//! written here (the `schema` crate owns the tables). Each service crate keeps its
//! own queries beside their callers.

// Settings and process first, then the broker's side, the database's,
// the HTTP surfaces', and the helpers they share.
pub mod config;
pub mod telemetry;
pub mod shutdown;
pub mod kafka;
pub mod topic;
pub mod headroom;
pub mod db;
pub mod replica;
pub mod failure;
pub mod health;
pub mod http;
pub mod outbound;
pub mod cache;
pub mod metrics;

pub use db::{DatabaseArgs, DbError};
pub use kafka::KafkaArgs;
