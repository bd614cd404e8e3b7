//! The database schema the parts of tokenusage share: the migrations, and
//! the Rust side of every table that one part writes and another reads.
//!
//! - `grain`, `rows`: the rollup tables (which grains, how instants floor
//!   to buckets, what a row holds and how events fold into rows);
//! - `days`: the day rows built from them for cold reads, and their
//!   groupings;
//! - `sequence`, `notice`: the commit order of rollup changes and the
//!   post-commit notification that carries them to live views;
//! - `freshness`: how current the rollups are, written by the projector's
//!   probe, read by the API;
//! - `dead_letters`: what the projector could not count, re-driven by admins;
//! - `lost`: records the broker no longer held when the projector got to
//!   them, on record until an operator acknowledges them;
//! - `keys`: publisher API keys, managed by admins, checked by ingest;
//! - `teams`: who is in which team (the API's directory and budgets read it);
//! - `migrations`: the schema itself, embedded.
//!
//! The projector, ingest and the API depend on this crate and not on each
//! other. It holds data shapes and the queries on them that more than one
//! part runs; queries with a single caller stay beside that caller.

// In the order a batch writes them: the layout, the grains and rows it
// counts into, what it records beside them, the commit's number and
// notice; then the sealed day rows and what readers check.
pub mod migrations;
pub mod grain;
pub mod calendar;
pub mod rows;
pub mod keys;
pub mod lost;
pub mod dead_letters;
pub mod sequence;
pub mod notice;
pub mod days;
pub mod freshness;
pub mod locks;
pub mod teams;

pub use grain::Grain;
pub use rows::{RollupKey, Sums};
